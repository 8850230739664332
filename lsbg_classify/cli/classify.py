"""``lsbg-classify classify``: score a candidate catalog."""

import collections
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .. import status
from .common import (
    CATALOG_FLAGS,
    HelpFormatter,
    LibraryDefault,
    UsageError,
    add_catalog_options,
    add_source_options,
    backend_from_args,
    fetch_options,
    name_flags,
    read_input,
)

__all__ = ["add_parser", "run", "EXIT_NOTHING_SCORED"]

#: Exit status of ``classify`` when the output was written but no row has a score.
EXIT_NOTHING_SCORED = 3

# Rows of the input written to a trial file before any fetch, to learn whether
# the output format can hold the catalog and the result columns.
_TRIAL_ROWS = 1000
# Distinct reasons shown in the summary, and the length each is cut to.
_SHOWN_REASONS = 5
_REASON_WIDTH = 240


def add_parser(subparsers):
    """Add ``classify`` to ``subparsers``."""
    p = subparsers.add_parser("classify", help="score a candidate catalog",
                              formatter_class=HelpFormatter)
    p.add_argument("input", help="catalog with RA/Dec (FITS, CSV, ECSV, Parquet, VOTable, ...)")
    p.add_argument("-o", "--output", required=True, help="scored catalog to write")
    p.add_argument("--output-format", metavar="FORMAT",
                   help="astropy table format of the output, e.g. fits, ecsv, parquet, votable "
                        "(default: from the file name ending)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--model", help="des, hsc or a weights file (default: the bundled model of "
                                   "--survey)")
    p.add_argument("--threshold", type=float,
                   help="class threshold (default: the model card's decision_threshold, chosen "
                        "on real cutouts for the bundled DES model)")
    p.add_argument("--tta", action="store_true",
                   help="average each probability over the 8 flips and rotations of the cutout "
                        "(8 network passes per image)")
    p.add_argument("--on-invalid", choices=["raise", "flag"], default="raise",
                   help="invalid positions: stop with an error (raise) or flag the rows")
    p.add_argument("--batch-size", type=int,
                   help="images per model call (default: the model's fastest, 256 with ONNX "
                        "Runtime)")
    p.add_argument("--chunk-size", type=int, default=LibraryDefault("..pipeline.options", "DEFAULT_CHUNK_SIZE"),
                   help="rows per checkpointed chunk; finished chunks are kept in "
                        "OUTPUT.checkpoint/ until the output is written, so an interrupted "
                        "run resumes when started again with the same arguments")
    p.add_argument("--mc-samples", type=int, default=0, metavar="N",
                   help="also score each image N times with dropout on and add the spread as "
                        "lsbg_prob_std (Monte-Carlo dropout; 0: off)")
    p.add_argument("--temperature", type=float, metavar="T",
                   help="divide every logit by T before thresholding (a calibration fitted by "
                        "evaluate --fit-temperature; default: none)")
    p.add_argument("--overwrite-columns", action="store_true",
                   help="replace result columns the input already has (re-scoring a scored "
                        "catalog)")
    p.add_argument("--messages", action="store_true",
                   help="add a column lsbg_message saying why each unscored row has no score")
    add_catalog_options(p)
    add_source_options(p)
    p.set_defaults(run=run)
    return p


def _output_format(args):
    from ..pipeline.catalog.read import format_from_path

    return args.output_format or format_from_path(Path(args.output))


def _check_output(out, args):
    """Refuse an output that cannot be written before any work is done."""
    if out.is_dir():
        raise UsageError(f"{out} is a directory; give a file name")
    if not out.parent.is_dir():
        raise UsageError(f"the output directory {out.parent} does not exist")
    if _output_format(args) is None:
        raise UsageError(f"cannot tell the table format from {out.name!r}; use an ending such as "
                         ".fits, .csv, .ecsv, .parquet or .vot, or give --output-format")
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")


def _check_output_holds(table, out, args):
    """Write the head of what classify will write beside ``out``, then remove it.

    A format that cannot hold a column (its name or its type) fails here,
    before anything is fetched, instead of after the last row is scored.
    """
    from ..pipeline.catalog.read import CatalogError
    from ..pipeline.catalog.write import write_catalog
    from ..pipeline.options import result_template

    template = result_template(table[:_TRIAL_ROWS], args.mc_samples, args.messages,
                               args.overwrite_columns)
    try:
        fd, trial = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as exc:
        raise UsageError(f"cannot write in {out.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        write_catalog(template, trial, format=_output_format(args), overwrite=True)
    except CatalogError as exc:
        raise UsageError(_output_flags(str(exc).replace(trial, str(out)))) from None
    finally:
        Path(trial).unlink(missing_ok=True)


def _output_flags(message):
    return name_flags(message, {"format": "--output-format", **CATALOG_FLAGS})


def _check_checkpoint(checkpoint):
    if checkpoint.exists() and not checkpoint.is_dir():
        raise UsageError(f"{checkpoint} exists and is not a checkpoint folder; remove or rename "
                         "it (classify keeps its finished chunks there)")


def run(args):
    """Score ``args.input`` into ``args.output``; returns the exit status."""
    from ..pipeline.catalog.write import same_file, write_catalog
    from ..pipeline.classify import classify_catalog
    from ..pipeline.options import MESSAGE_COLUMN, check_options

    check_options(args.threshold, args.chunk_size, args.threads, args.batch_size,
                  args.mc_samples, args.temperature)
    out = Path(args.output)
    _check_output(out, args)
    if same_file(args.input, out):
        raise UsageError("the output file must differ from the input file")
    checkpoint = out.with_name(out.name + ".checkpoint")
    _check_checkpoint(checkpoint)
    table = read_input(args)
    _check_output_holds(table, out, args)
    with backend_from_args(args) as backend:
        scored = classify_catalog(
            table, survey=args.survey, backend=backend, model=args.model,
            threshold=args.threshold, on_invalid=args.on_invalid, batch_size=args.batch_size,
            checkpoint_dir=checkpoint, chunk_size=args.chunk_size,
            mc_samples=args.mc_samples, temperature=args.temperature,
            overwrite_columns=args.overwrite_columns, messages=True, tta=args.tta,
            **fetch_options(args),
        )
    reasons = scored[MESSAGE_COLUMN]
    if not args.messages:
        scored.remove_column(MESSAGE_COLUMN)
    write_catalog(scored, out, format=_output_format(args), overwrite=args.overwrite)
    shutil.rmtree(checkpoint, ignore_errors=True)
    _print_summary(scored, out)
    _print_reasons(scored["lsbg_status"], reasons)
    if not (scored["lsbg_status"] == status.OK).any():
        print(f"lsbg-classify classify: no row could be scored (exit status "
              f"{EXIT_NOTHING_SCORED})", file=sys.stderr)
        return EXIT_NOTHING_SCORED
    return 0


def _print_summary(scored, out):
    import numpy as np

    values, counts = np.unique(np.asarray(scored["lsbg_status"]), return_counts=True)
    by_status = ", ".join(f"{v}: {c}" for v, c in zip(values, counts))
    n_lsbg = int(np.sum(np.asarray(scored["lsbg_class"].filled(0)) == 1)) if hasattr(
        scored["lsbg_class"], "filled") else int(np.sum(scored["lsbg_class"] == 1))
    print(f"wrote {out}: {len(scored)} rows ({by_status}); {n_lsbg} classified as LSBG")


def _print_reasons(row_status, reasons):
    """On stderr: rows per status, and the first few distinct reasons rows were not scored."""
    statuses = [str(s) for s in row_status]
    counts = collections.Counter(statuses)
    print("rows by status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
          file=sys.stderr)
    distinct = collections.Counter((st, str(why)) for st, why in zip(statuses, reasons)
                                   if st != status.OK)
    for (st, why), n in list(distinct.items())[:_SHOWN_REASONS]:
        why = " ".join(why.split()) or "no reason recorded"
        if len(why) > _REASON_WIDTH:
            why = why[: _REASON_WIDTH - 3] + "..."
        print(f"  {st} ({n} row{'s' if n != 1 else ''}): {why}", file=sys.stderr)
    if len(distinct) > _SHOWN_REASONS:
        print(f"  ... {len(distinct) - _SHOWN_REASONS} other reason(s); --messages writes "
              "each row's reason to the output", file=sys.stderr)
