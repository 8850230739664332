"""``lsbg-classify fetch``: a labelled catalog's cutouts as a training data set."""

from .common import (
    HelpFormatter,
    add_catalog_options,
    add_source_options,
    backend_from_args,
    fetch_options,
    read_input,
)

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``fetch`` to ``subparsers``."""
    p = subparsers.add_parser("fetch", help="labelled catalog -> cutout data set (.npz) for training",
                              formatter_class=HelpFormatter)
    p.add_argument("input", help="catalog with RA/Dec and a 0/1 label column")
    p.add_argument("-o", "--output", required=True, help="data set file (.npz)")
    p.add_argument("--label-col", default="label", help="label column, 1 = LSBG")
    add_catalog_options(p)
    add_source_options(p)
    p.set_defaults(run=run)
    return p


def run(args):
    """Write the data set of ``args.input`` to ``args.output``."""
    from ..training.train import fetch_dataset

    table = read_input(args)
    with backend_from_args(args) as backend:
        kept = fetch_dataset(table, args.output, backend, label_col=args.label_col,
                             **fetch_options(args))
    print(f"wrote {args.output}: {kept.sum()} of {len(kept)} rows have cutouts")
    return 0
