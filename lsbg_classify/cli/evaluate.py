"""``lsbg-classify evaluate``: metrics of a model on a labelled data set."""

import sys
from pathlib import Path

from .common import HelpFormatter, LibraryDefault, add_outdir_option

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``evaluate`` to ``subparsers``."""
    p = subparsers.add_parser("evaluate", help="metrics, confusion matrix and ROC of a model on "
                                               "a data set", formatter_class=HelpFormatter)
    p.add_argument("data", help="labelled data set (.npz)")
    p.add_argument("--model", default="des", help="des, hsc or a weights file")
    add_outdir_option(p, what="write the metrics table and PNG figures here (default: print only)")
    p.add_argument("--threshold", type=float, default=LibraryDefault("..pipeline.options", "DEFAULT_THRESHOLD"),
                   help="class threshold")
    p.add_argument("--fit-temperature", metavar="VALIDATION",
                   help="labelled data set (.npz) to fit a temperature on; report the "
                        "calibration error before and after scaling")
    p.set_defaults(run=run)
    return p


def run(args):
    """Print (and with ``--outdir`` write) the metrics of ``args.model`` on ``args.data``."""
    from ..diagnostics.reliability import N_BINS
    from ..pipeline.model import load_model
    from ..training.evaluate import evaluate_subsets
    from ..training.train import load_dataset

    X, y, extra = load_dataset(args.data)
    model = load_model(args.model)
    temperature = (_fitted_temperature(model, args.fit_temperature, args.data)
                   if args.fit_temperature else None)
    results = evaluate_subsets(model, X, y, selection=extra.get("selection"),
                               output_dir=args.outdir, threshold=args.threshold,
                               temperature=temperature)
    for label, result in results.items():
        m = result.table.meta
        print(f"{Path(args.data).name} [{label}]: n = {m['n']}; confusion TN {m['tn']} FP {m['fp']} "
              f"FN {m['fn']} TP {m['tp']}")
        result.table.pprint(max_lines=-1)
        text = f"expected calibration error ({N_BINS} bins): {result.calibration['ece']:.3f}"
        if temperature is not None:
            text += (f"; after temperature scaling (T = {temperature:.3f}): "
                     f"{result.calibration['ece_scaled']:.3f}")
        print(text)
    return 0


def _fitted_temperature(model, validation, evaluated):
    from ..diagnostics.reliability import fit_temperature
    from ..training.train import load_dataset

    X_val, y_val, _ = load_dataset(validation)
    temperature = fit_temperature(y_val, model.predict(X_val))
    print(f"temperature fitted on {Path(validation).name} (n = {len(y_val)}): T = {temperature:.3f}")
    if Path(validation).resolve() == Path(evaluated).resolve():
        print("note: T was fitted on the evaluated set itself, so the calibration error after "
              "scaling is optimistic", file=sys.stderr)
    return temperature
