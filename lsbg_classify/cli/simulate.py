"""``lsbg-classify simulate``: a labelled data set from the simulated sky."""

from .common import HelpFormatter, add_option

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``simulate`` to ``subparsers``."""
    p = subparsers.add_parser("simulate", help="simulated labelled data set (.npz) for training",
                              formatter_class=HelpFormatter)
    p.add_argument("-o", "--output", required=True, help="data set file (.npz)")
    add_option(p, "-n", "--count", aliases=("--rows",), type=int, required=True,
               help="cutouts (balanced classes)")
    p.add_argument("--survey", default="des", choices=["des", "hsc"],
                   help="survey whose sky is simulated")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated sky")
    p.add_argument("--no-randomize", action="store_true", help="no domain randomisation")
    add_option(p, "--processes", aliases=("--workers",), type=int, default=1,
               help="worker processes drawing the cutouts")
    p.set_defaults(run=run)
    return p


def run(args):
    """Write ``args.count`` simulated cutouts to ``args.output``."""
    from ..simulation.training_set import make_training_set
    from ..training.train import save_dataset

    X, y = make_training_set(args.count, survey=args.survey, seed=args.seed,
                             randomize=not args.no_randomize, workers=args.processes)
    save_dataset(args.output, X, y)
    print(f"wrote {args.output}: {len(y)} simulated cutouts ({int(y.sum())} LSBGs)")
    return 0
