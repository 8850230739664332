"""``lsbg-classify baselines``: the paper's SVM and random-forest baselines."""

from .common import HelpFormatter, LibraryDefault, add_outdir_option

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``baselines`` to ``subparsers``."""
    p = subparsers.add_parser("baselines", help="SVM and random-forest baselines on a labelled "
                                                "feature catalog", formatter_class=HelpFormatter)
    p.add_argument("data_dir", help="folder with hsc_LSBGs.dat and hsc_artifacts.csv "
                                    "(Greco et al. 2018; downloaded by the user)")
    add_outdir_option(p, default="baselines_output", what="where the tables and ROC figure go")
    p.add_argument("--folds", type=int, default=10, help="cross-validation folds")
    p.add_argument("--seed", type=int, default=0, help="folds and bootstrap seed")
    p.add_argument("--bootstrap", type=int, default=LibraryDefault("..training.evaluate", "N_BOOTSTRAP"),
                   help="bootstrap draws for intervals")
    p.set_defaults(run=run)
    return p


def run(args):
    """Run the baselines on ``args.data_dir``."""
    from ..reproduction.baselines import run_greco_benchmark

    table = run_greco_benchmark(args.data_dir, args.outdir, folds=args.folds, seed=args.seed,
                                n_boot=args.bootstrap)
    table.pprint(max_lines=-1, max_width=-1)
    print(f"wrote tables and figures to {args.outdir}")
    return 0
