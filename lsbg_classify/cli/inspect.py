"""``lsbg-classify inspect``: inspection sheets of a scored catalog."""

import sys

from .common import (
    HelpFormatter,
    LibraryDefault,
    add_catalog_options,
    add_outdir_option,
    add_source_options,
    backend_from_args,
    fetch_options,
    read_input,
)

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``inspect`` to ``subparsers``."""
    p = subparsers.add_parser("inspect", help="inspection sheets (PNG and HTML) of a scored "
                                              "catalog: top candidates, most uncertain, "
                                              "disagreements", formatter_class=HelpFormatter)
    p.add_argument("input", help="scored catalog (the output of classify)")
    add_outdir_option(p, required=True, what="where the sheets are written")
    p.add_argument("--top", type=int, default=LibraryDefault("..diagnostics.inspection", "DEFAULT_ROWS"),
                   metavar="N", help="rows per sheet")
    p.add_argument("--prob-col", default=LibraryDefault("..diagnostics.inspection", "PROB_COL"),
                   help="probability column of the model")
    p.add_argument("--compare-col", metavar="COL",
                   help="probability column of a second model: adds the disagreement sheet")
    p.add_argument("--threshold", type=float, default=LibraryDefault("..pipeline.options", "DEFAULT_THRESHOLD"),
                   help="class threshold")
    add_catalog_options(p)
    add_source_options(p)
    p.set_defaults(run=run)
    return p


def run(args):
    """Write the sheets of ``args.input`` into ``args.outdir``."""
    from ..diagnostics.inspection import inspect_catalog

    table = read_input(args)
    with backend_from_args(args) as backend:
        sheets = inspect_catalog(table, args.outdir, backend, n=args.top, prob_col=args.prob_col,
                                 second_prob_col=args.compare_col, threshold=args.threshold,
                                 survey=args.survey, **fetch_options(args))
    if sheets.missing:
        print(f"warning: {sheets.missing} cutouts could not be fetched and are shown blank",
              file=sys.stderr)
    for kind, paths in sheets.written.items():
        print(f"{kind}: {sheets.rows[kind]} rows -> {paths['png']}, {paths['html']}")
    return 0
