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
    p.add_argument("--threshold", type=float, default=LibraryDefault("..pipeline", "DEFAULT_THRESHOLD"),
                   help="class threshold")
    p.add_argument("--fit-temperature", metavar="VALIDATION",
                   help="labelled data set (.npz) to fit a temperature on; report the "
                        "calibration error before and after scaling")
    p.set_defaults(run=run)
    return p


def run(args):
    """Print (and with ``--outdir`` write) the metrics of ``args.model`` on ``args.data``."""
    import numpy as np

    from ..evaluate import evaluate_model
    from ..model import load_model
    from ..training import load_dataset

    X, y, extra = load_dataset(args.data)
    model = load_model(args.model)
    temperature = (_fitted_temperature(model, args.fit_temperature, args.data)
                   if args.fit_temperature else None)
    subsets = {"all": np.ones(len(y), bool)}
    # Sets such as the real development set mark how each cutout was chosen.
    for name in np.unique(extra["selection"]) if "selection" in extra else ():
        subsets[str(name)] = extra["selection"] == name
    for label, rows in subsets.items():
        table, prob = evaluate_model(model, X[rows], y[rows], args.outdir, args.threshold,
                                     label=label if len(subsets) > 1 else "test")
        m = table.meta
        print(f"{Path(args.data).name} [{label}]: n = {m['n']}; confusion TN {m['tn']} FP {m['fp']} "
              f"FN {m['fn']} TP {m['tp']}")
        table.pprint(max_lines=-1)
        _report_calibration(y[rows], prob, temperature, args.outdir,
                            label if len(subsets) > 1 else "test", f"{model.name}: {label}")
    return 0


def _fitted_temperature(model, validation, evaluated):
    from ..reliability import fit_temperature
    from ..training import load_dataset

    X_val, y_val, _ = load_dataset(validation)
    temperature = fit_temperature(y_val, model.predict(X_val))
    print(f"temperature fitted on {Path(validation).name} (n = {len(y_val)}): T = {temperature:.3f}")
    if Path(validation).resolve() == Path(evaluated).resolve():
        print("note: T was fitted on the evaluated set itself, so the calibration error after "
              "scaling is optimistic", file=sys.stderr)
    return temperature


def _report_calibration(y, prob, temperature, output_dir, label, title):
    from ..reliability import N_BINS, apply_temperature, calibration_summary, plot_reliability

    summary = calibration_summary(y, prob, temperature)
    text = f"expected calibration error ({N_BINS} bins): {summary['ece']:.3f}"
    if temperature is not None:
        text += f"; after temperature scaling (T = {temperature:.3f}): {summary['ece_scaled']:.3f}"
    print(text)
    if output_dir:
        curves = {"model": prob}
        if temperature is not None:
            curves[f"T = {temperature:.2f}"] = apply_temperature(prob, temperature)
        plot_reliability(y, curves, Path(output_dir) / f"reliability_{label}.png", title=title)
