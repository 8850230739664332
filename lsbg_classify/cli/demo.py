"""``lsbg-classify demo``: classify a simulated candidate catalog offline."""

from .common import HelpFormatter, LibraryDefault, add_option, add_outdir_option

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``demo`` to ``subparsers``."""
    p = subparsers.add_parser("demo", help="classify a simulated candidate catalog offline",
                              formatter_class=HelpFormatter)
    add_outdir_option(p, default="lsbg_demo_output", what="where the results are written")
    add_option(p, "-n", "--count", aliases=("--rows",), type=int,
               default=LibraryDefault("..simulation.demo", "DEFAULT_ROWS"),
               help="candidates to simulate")
    p.add_argument("--survey", default="des", choices=["des", "hsc"],
                   help="survey whose sky is simulated and whose bundled model scores it")
    p.add_argument("--seed", type=int, default=0, help="seed of the positions and the sky")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)
    return p


def run(args):
    """Run the demo into ``args.outdir``."""
    from ..simulation.demo import run_demo

    run_demo(args.outdir, n_rows=args.count, survey=args.survey, seed=args.seed,
             progress=False if args.quiet else None)
    return 0
