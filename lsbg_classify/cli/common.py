"""What several commands share: option groups, defaults read from the library, input reading.

Each option name has one meaning across the commands: ``-o/--output`` is
always a file to write, ``--outdir`` a folder of outputs, ``--work-dir`` a
folder a command works in (and can resume from), ``--threads`` concurrent
requests, ``--processes`` worker processes, ``-n/--count`` how many
objects to make, ``--image-format`` the cutout format and
``--input-format``/``--output-format`` the table format.  The spellings
these replaced are kept for a release, hidden from ``--help``
(:func:`add_option`).
"""

import argparse
import copy
import importlib
import re

__all__ = [
    "UsageError",
    "LibraryDefault",
    "HelpFormatter",
    "add_option",
    "resolve_defaults",
    "add_source_options",
    "add_catalog_options",
    "add_outdir_option",
    "parse_images",
    "backend_from_args",
    "cache_from_args",
    "fetch_options",
    "read_input",
    "name_flags",
    "CATALOG_FLAGS",
]


class UsageError(Exception):
    """A problem with the command line or its inputs, shown without a traceback."""


class LibraryDefault:
    """A default taken from a library constant, imported only when it is used.

    Building the parser must stay cheap (``lsbg-classify --help`` answers
    in a tenth of a second), while the modules holding the constants import
    numpy, astropy or scikit-learn.  The value is looked up when the help
    shows it or when :func:`resolve_defaults` fills in an option left out.

    Parameters
    ----------
    module : str
        Module relative to this package (e.g. ``"..pipeline"``).
    name : str
        The constant's name in that module.
    """

    def __init__(self, module, name):
        self.module = module
        self.name = name

    def value(self):
        """The constant's value."""
        return getattr(importlib.import_module(self.module, __package__), self.name)

    def __str__(self):
        return str(self.value())

    def __repr__(self):
        return f"LibraryDefault({self.module!r}, {self.name!r})"


def resolve_defaults(args):
    """Replace every :class:`LibraryDefault` left in ``args`` by its value (in place)."""
    for key, value in vars(args).items():
        if isinstance(value, LibraryDefault):
            setattr(args, key, value.value())
    return args


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: ...)`` to an option whose default says something.

    ``None``, ``False`` and empty lists say nothing; a help text that
    already speaks of its default (e.g. "default: the user cache
    directory") is left as written.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        says_nothing = default is None or default is False or default == [] or (
            default == argparse.SUPPRESS)
        if not action.option_strings or says_nothing or "default" in text:
            return text
        return text + " (default: %(default)s)"

    def _format_action_invocation(self, action):
        hidden = getattr(action, "hidden_aliases", ())
        if hidden:
            action = copy.copy(action)
            action.option_strings = [s for s in action.option_strings if s not in hidden]
        return super()._format_action_invocation(action)


def add_option(parser, *names, aliases=(), **options):
    """``parser.add_argument(*names, **options)``, also accepting the old spellings ``aliases``.

    The aliases are option strings of the same action, so they fill the
    same value, with the same type, and satisfy ``required``;
    :class:`HelpFormatter` leaves them out of ``--help``.  The first of
    ``names`` is the one usage lines show.
    """
    action = parser.add_argument(*names, *aliases, **options)
    action.hidden_aliases = tuple(aliases)
    return action


def add_outdir_option(parser, required=False, default=None, what="where the results are written"):
    """``--outdir``, with the ``-o``/``--output-dir`` spelling of earlier releases hidden."""
    add_option(parser, "--outdir", aliases=("-o", "--output-dir"), required=required,
               default=default, help=what)


def add_source_options(p):
    """Where the cutouts come from, and how they are fetched and cached."""
    p.add_argument("--survey", default="des", choices=["des", "hsc"],
                   help="survey whose images and bundled model are used")
    p.add_argument("--backend", default="legacysurvey",
                   help="image source: legacysurvey, hips, local, simulated, or an installed "
                        "plug-in")
    p.add_argument("--base-url", help="server of the legacysurvey or hips backend (default: the "
                                      "public service, or $LSBG_CLASSIFY_LEGACYSURVEY_URL)")
    add_option(p, "--image-format", aliases=("--format",), choices=["jpeg", "fits"],
               help="cutout format where the backend offers both (default: the backend's first)")
    p.add_argument("--image", action="append", default=[], metavar="BAND=PATH",
                   help="local backend: FITS image with WCS for one band (repeat per band)")
    p.add_argument("--seed", type=int, default=0, help="simulated backend: sky seed")
    p.add_argument("--cache", help="cutout cache directory (default: the user cache directory)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cutout cache")
    p.add_argument("--refresh", action="store_true", help="fetch cutouts again even if cached")
    add_option(p, "--threads", aliases=("--workers",), type=int,
               default=LibraryDefault("..pipeline.options", "DEFAULT_WORKERS"),
               help="concurrent cutout requests")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_catalog_options(p):
    """How the input catalog is read and where its positions are."""
    p.add_argument("--input-format", metavar="FORMAT",
                   help="astropy table format of the input, e.g. fits, csv, ecsv, parquet, "
                        "votable, ipac, ascii.commented_header (default: from the file name "
                        "ending, else guessed by astropy)")
    p.add_argument("--ra-col", help="RA column (default: found by name)")
    p.add_argument("--dec-col", help="Dec column (default: found by name)")
    p.add_argument("--hdu", help="FITS input: the table HDU to read, by number or name "
                                 "(default: the first table)")


#: Library keyword arguments and the flags that set them, for messages
#: raised by the library but read by a command-line user.
CATALOG_FLAGS = {"ra_col": "--ra-col", "dec_col": "--dec-col", "overwrite": "--overwrite",
                 "hdu": "--hdu"}


def name_flags(message, flags):
    """``message`` with each ``keyword=`` of ``flags`` spelled as its command-line flag.

    "pass ra_col= to name it" becomes "pass --ra-col to name it",
    "ra_col='x' is not a column" becomes "--ra-col 'x' is not a column"
    and "pass overwrite=True" becomes "pass --overwrite".
    """
    if not flags:
        return message
    keywords = "|".join(re.escape(k) for k in flags)

    def flag(match):
        name = flags[match.group(1)]
        follows = match.string[match.end():match.end() + 1]
        return name if match.group(2) or follows in ("", " ", ",", ";", ")") else name + " "

    return re.sub(rf"(?<![\w.-])({keywords})=(True\b)?", flag, message)


def read_input(args):
    """The catalog ``args.input``, read as ``--input-format`` and ``--hdu`` say."""
    from ..pipeline.catalog.read import CatalogError, read_catalog

    options = {}
    if args.hdu is not None:
        options["hdu"] = int(args.hdu) if args.hdu.strip().isdigit() else args.hdu
    try:
        return read_catalog(args.input, format=args.input_format, **options)
    except CatalogError as exc:
        raise UsageError(name_flags(str(exc), {"format": "--input-format", **CATALOG_FLAGS})
                         ) from exc


def parse_images(items):
    """``--image BAND=PATH`` values as the local backend's ``images`` mapping."""
    images = {}
    for item in items:
        band, sep_, path = item.partition("=")
        if not sep_:
            raise UsageError(f"--image expects BAND=PATH, got {item!r}")
        images.setdefault(band, []).append(path)
    return images


def backend_from_args(args):
    """The survey backend the source options describe."""
    from ..surveys import get_backend

    options = {}
    if args.base_url:
        options["base_url"] = args.base_url
    if args.image_format:
        options["image_format"] = args.image_format
    if args.backend == "local":
        options["images"] = parse_images(args.image)
    if args.backend == "simulated":
        options["seed"] = args.seed
    try:
        return get_backend(args.backend, survey=args.survey, **options)
    except ValueError as exc:
        if str(exc).startswith("base_url:"):  # the remote backends' URL check
            raise UsageError("--base-url" + str(exc)[len("base_url"):]) from None
        raise


def fetch_options(args):
    """Keyword arguments of the library's fetching functions that the catalog
    and source options set: position columns, cache, refresh, threads, progress."""
    return dict(ra_col=args.ra_col, dec_col=args.dec_col, cache=cache_from_args(args),
                refresh=args.refresh, workers=args.threads,
                progress=False if args.quiet else None)


def cache_from_args(args):
    """The cutout cache of ``--cache``, or False with ``--no-cache``."""
    from ..pipeline.cache import CutoutCache

    if getattr(args, "no_cache", False):
        return False
    return CutoutCache(args.cache) if args.cache else CutoutCache()
