"""The ``lsbg-classify`` command: its parser, and ``main``, which runs one command.

Each command lives in a module of this package (its parser, then one call
into the library, then what it prints); this module puts them together and
turns the package's own errors into one-line messages.
"""

import argparse
import sys

from ..version import __version__
from . import (
    baselines,
    bench,
    build_models,
    cache,
    calibrate,
    classify,
    demo,
    evaluate,
    explain,
    fetch,
    inject,
    inspect,
    reproduce,
    simulate,
    train,
)
from .common import CATALOG_FLAGS, HelpFormatter, UsageError, name_flags, resolve_defaults

__all__ = ["main", "build_parser", "EXIT_ERROR", "EXIT_INTERRUPTED"]

#: Exit status of a run stopped by an error of the user's inputs or options.
EXIT_ERROR = 2
#: Exit status of a run stopped by Ctrl-C.
EXIT_INTERRUPTED = 130

# Keyword arguments of the pipeline whose flag is not the keyword spelled
# with dashes.
_OPTION_FLAGS = {"workers": "--threads"}

# In the order ``--help`` lists them.
_COMMAND_MODULES = (classify, explain, demo, cache, fetch, simulate, train, evaluate, calibrate,
                    baselines, bench, build_models, reproduce, inspect, inject)


def build_parser():
    """The argument parser of ``lsbg-classify``, with every command's subparser."""
    parser = argparse.ArgumentParser(
        prog="lsbg-classify",
        description="Separate real low-surface-brightness galaxies from artifacts with DeepShadows.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do; lsbg-classify COMMAND --help lists its options")
    for module in _COMMAND_MODULES:
        module.add_parser(sub)
    return parser


def _one_line(text):
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] + (" [...]" if len(lines) > 1 else "")) if lines else ""


def _package_error(exc):
    """Whether ``exc`` is the package's word on the user's inputs rather than a bug.

    That is an exception of a class the package defines, or a ValueError
    the package raised itself (a check of an argument or a file).  A
    ValueError from deeper down (numpy, astropy) that the package did not
    expect is a bug and keeps its traceback.
    """
    if any(cls.__module__.split(".")[0] == "lsbg_classify" for cls in type(exc).__mro__):
        return True
    if not isinstance(exc, ValueError):
        return False
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_globals.get("__name__", "").split(".")[0] == "lsbg_classify"


def main(argv=None):
    """Run the command line; returns the exit status.

    0: done; 2: an error, reported on one line of standard error (bad
    arguments or input, an option the run cannot work with, a file that
    cannot be read or written); 3 (``classify``): the output was written
    but no row could be scored; 130: interrupted.  An unexpected exception
    (a bug) shows its traceback.
    """
    args = resolve_defaults(build_parser().parse_args(argv))
    from ..pipeline.options import OptionError

    def fail(message):
        print(f"lsbg-classify {args.command}: error: {_one_line(message)}", file=sys.stderr)
        return EXIT_ERROR

    try:
        return args.run(args) or 0
    except OptionError as exc:
        return fail(exc.naming(_OPTION_FLAGS.get(exc.option, "--" + exc.option.replace("_", "-"))))
    except UsageError as exc:
        return fail(exc)
    except OSError as exc:  # the file system's word: permissions, a full disk, ...
        return fail(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if not _package_error(exc):
            raise
        return fail(name_flags(str(exc), CATALOG_FLAGS))
