"""``lsbg-classify explain``: Grad-CAM maps of some catalog rows."""

import sys
from pathlib import Path

from .common import (
    HelpFormatter,
    UsageError,
    add_catalog_options,
    add_option,
    add_source_options,
    backend_from_args,
    fetch_options,
    read_input,
)

__all__ = ["add_parser", "run", "parse_row_indices"]


def add_parser(subparsers):
    """Add ``explain`` to ``subparsers``."""
    p = subparsers.add_parser("explain", help="Grad-CAM maps: which part of a cutout drove its score",
                              formatter_class=HelpFormatter)
    p.add_argument("input", help="catalog with RA/Dec")
    add_option(p, "--row-indices", aliases=("--rows",), required=True, metavar="I,J,...",
               help="comma-separated row numbers of the catalog, counted from 0 (e.g. 0,5,7)")
    p.add_argument("-o", "--output", required=True, help="figure to write (.png, .pdf or .svg)")
    p.add_argument("--model", help="des, hsc or a weights file (default: the bundled model of "
                                   "--survey)")
    add_catalog_options(p)
    add_source_options(p)
    p.set_defaults(run=run)
    return p


def parse_row_indices(text):
    """Row numbers of ``--row-indices`` (e.g. ``"0,5,7"``)."""
    rows = []
    for item in text.split(","):
        try:
            rows.append(int(item.strip()))
        except ValueError:
            raise UsageError("--row-indices expects comma-separated row numbers, got "
                             f"{item.strip()!r}") from None
    return rows


def run(args):
    """Draw the maps of ``args.row_indices`` into ``args.output``."""
    from ..diagnostics.explain import explain_rows

    rows = parse_row_indices(args.row_indices)
    table = read_input(args)
    with backend_from_args(args) as backend:
        drawn = explain_rows(table, rows, args.output, backend, args.model or args.survey,
                             label=Path(args.input).name, **fetch_options(args))
    for row, why in drawn.skipped.items():
        print(f"row {row}: {why}; left out", file=sys.stderr)
    print(f"wrote {drawn.path}: Grad-CAM maps of row(s) {', '.join(map(str, drawn.rows))}")
    return 0
