"""``lsbg-classify bench``: throughput figures."""

from .common import HelpFormatter, LibraryDefault, add_option

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``bench`` to ``subparsers``."""
    p = subparsers.add_parser("bench", help="throughput figures, each a ratio measured in one run",
                              formatter_class=HelpFormatter)
    add_option(p, "-n", "--count", aliases=("--rows",), type=int, default=100,
               help="cutouts per measurement")
    p.add_argument("--latency", type=float, default=0.1, help="loopback server latency (s)")
    add_option(p, "--threads", aliases=("--workers",), type=int,
               default=LibraryDefault("..pipeline.options", "DEFAULT_WORKERS"),
               help="concurrent cutout requests")
    p.add_argument("--coords", action="append", default=[], metavar="PATH",
                   help="catalog with ra,dec whose positions the end-to-end figure uses, e.g. "
                        "the DeepShadows Baseline_*.csv (repeat per file; default: simulated "
                        "positions)")
    p.add_argument("--e2e-rows", type=int, default=LibraryDefault("..testing.benchmark", "E2E_ROWS"),
                   metavar="N", help="rows of the end-to-end figure (0: leave it out)")
    p.add_argument("--cache", help="cutout cache to warm and read (default: a temporary "
                                   "directory, removed afterwards)")
    p.add_argument("--memory-rows", type=int, nargs="+", default=[], metavar="N",
                   help="catalog sizes of peak-memory runs of lsbg-classify classify "
                        "(e.g. 2000 8000 1000000; default: none)")
    p.add_argument("--memory-scored", type=int,
                   default=LibraryDefault("..testing.benchmark", "MEMORY_SCORED_ROWS"), metavar="N",
                   help="rows of each memory-run catalog that are scored")
    p.add_argument("--train-steps", type=int, default=LibraryDefault("..testing.benchmark", "TRAIN_STEPS"),
                   metavar="N",
                   help="timed training steps per installed Keras backend (0: leave training out)")
    p.set_defaults(run=run)
    return p


def run(args):
    """Measure and print the figures."""
    from ..testing.benchmark import run_benchmarks

    run_benchmarks(rows=args.count, latency=args.latency, workers=args.threads,
                   coords=args.coords, e2e_rows=args.e2e_rows, cache=args.cache,
                   memory_rows=args.memory_rows, memory_scored=args.memory_scored,
                   train_steps=args.train_steps)
    return 0
