"""Classifier metrics with bootstrap intervals, and the paper's figures.

The paper reports accuracy, precision, recall, F1 and ROC AUC with
bootstrap 95% intervals, confusion matrices and ROC curves; so does this.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table
from sklearn import metrics as skm

from ..diagnostics.reliability import calibration_summary, plot_reliability
from ..figures import contact_sheet, new_figure, save_figure
from ..pipeline.catalog.write import write_catalog
from ..pipeline.model import DEFAULT_DECISION_THRESHOLD
from ..pipeline.uncertainty import apply_temperature

__all__ = ["evaluate_subsets", "SubsetEvaluation", "binary_metrics", "bootstrap_intervals",
           "metrics_table", "plot_confusion", "plot_roc", "plot_history", "evaluate_model", "best_threshold",
           "crossvalidated_threshold"]

# recall is the LSBG class's recall; specificity is the artifact class's.
METRIC_NAMES = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc")
N_BOOTSTRAP = 1000
CONFIDENCE = 0.95


def binary_metrics(y_true, prob, threshold=DEFAULT_DECISION_THRESHOLD):
    """Accuracy, precision, recall, F1, ROC AUC and the confusion matrix.

    Parameters
    ----------
    y_true : array_like of {0, 1}
        Labels, 1 = LSBG.
    prob : array_like of float
        Predicted LSBG probabilities.
    threshold : float
        Probability at or above which an object is called an LSBG.

    Returns
    -------
    dict
        The metrics, plus ``tn``, ``fp``, ``fn``, ``tp`` counts.  ROC AUC
        is NaN when only one class is present.
    """
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=float)
    pred = (prob >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, pred, labels=[0, 1]).ravel()
    both = len(np.unique(y_true)) == 2
    return {
        "accuracy": skm.accuracy_score(y_true, pred),
        "precision": skm.precision_score(y_true, pred, zero_division=0),
        "recall": skm.recall_score(y_true, pred, zero_division=0),
        "specificity": tn / (tn + fp) if tn + fp else np.nan,
        "f1": skm.f1_score(y_true, pred, zero_division=0),
        "roc_auc": skm.roc_auc_score(y_true, prob) if both else np.nan,
        "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp),
    }


def best_threshold(y_true, prob):
    """The class threshold with the highest accuracy on labelled scores.

    Accuracy is flat between neighbouring scores, so the best thresholds
    form intervals; the middle of the widest best interval is returned, the
    choice least sensitive to where the next scores fall.

    Parameters
    ----------
    y_true : array_like of {0, 1}
        Labels, 1 = LSBG.
    prob : array_like of float
        LSBG probabilities.

    Returns
    -------
    float
        A threshold in (0, 1): ``prob >= threshold`` is called an LSBG.
    """
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=float)
    edges = np.concatenate([[0.0], np.unique(prob), [1.0 + 1e-9]])
    # Candidate t_i = edges[i]: calls prob >= t_i an LSBG.
    correct = np.array([np.sum((prob >= t) == (y_true == 1)) for t in edges])
    best = np.flatnonzero(correct == correct.max())
    # Threshold interval of candidate i: (edges[i-1], edges[i]].
    lows = edges[np.maximum(best - 1, 0)]
    highs = edges[best]
    widest = int(np.argmax(highs - lows))
    return float(np.clip(0.5 * (lows[widest] + highs[widest]), 1e-6, 1.0))


def crossvalidated_threshold(y_true, prob, folds=5, repeats=20, seed=0):
    """Choose a class threshold and estimate honestly what it gives.

    Each of ``repeats`` random stratified ``folds``-fold splits picks the
    threshold on all folds but one (:func:`best_threshold`) and applies it
    to the one left out, so every estimate is made on scores that did not
    choose its threshold.

    Parameters
    ----------
    y_true, prob : array_like
        Labels (1 = LSBG) and the model's LSBG probabilities.
    folds, repeats : int
        Stratified folds per split, number of splits.
    seed : int
        Seed of the splits.

    Returns
    -------
    dict
        ``threshold`` (chosen on all scores, the one to use), and
        ``cv_accuracy`` (mean out-of-fold accuracy over the repeats),
        ``cv_accuracy_std`` (its spread between repeats), ``fold_thresholds``
        (median and range of the per-fold choices), ``oof_pred`` (the
        out-of-fold class calls of the first repeat), ``folds``,
        ``repeats``.
    """
    from sklearn.model_selection import StratifiedKFold

    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=float)
    accuracies, chosen, first = [], [], None
    for r in range(repeats):
        pred = np.zeros(len(y_true), int)
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed + r)
        for fit_rows, held_rows in splitter.split(prob, y_true):
            t = best_threshold(y_true[fit_rows], prob[fit_rows])
            chosen.append(t)
            pred[held_rows] = prob[held_rows] >= t
        accuracies.append(np.mean(pred == y_true))
        first = pred if first is None else first
    return {
        "threshold": best_threshold(y_true, prob),
        "cv_accuracy": float(np.mean(accuracies)),
        "cv_accuracy_std": float(np.std(accuracies)),
        "fold_thresholds": [float(np.min(chosen)), float(np.median(chosen)), float(np.max(chosen))],
        "oof_pred": first,
        "folds": int(folds),
        "repeats": int(repeats),
    }


def _resample_metrics(y_true, prob, threshold):
    """:data:`METRIC_NAMES` of one sample, with plain numpy (bootstrap hot path)."""
    from scipy.stats import rankdata

    pred = prob >= threshold
    positive = y_true == 1
    tp = np.count_nonzero(pred & positive)
    fp = np.count_nonzero(pred & ~positive)
    fn = np.count_nonzero(~pred & positive)
    tn = len(y_true) - tp - fp - fn
    n_pos, n_neg = tp + fn, tn + fp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_pos if n_pos else 0.0
    # Mann-Whitney form of the ROC AUC; average ranks handle ties as sklearn does.
    auc = ((rankdata(prob)[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
           if n_pos and n_neg else np.nan)
    return {
        "accuracy": (tp + tn) / len(y_true),
        "precision": precision,
        "recall": recall,
        "specificity": tn / n_neg if n_neg else np.nan,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "roc_auc": auc,
    }


def bootstrap_intervals(y_true, prob, threshold=DEFAULT_DECISION_THRESHOLD, n_boot=N_BOOTSTRAP,
                        level=CONFIDENCE, seed=0):
    """Percentile bootstrap intervals of :data:`METRIC_NAMES`.

    Returns
    -------
    dict
        Metric name → (low, high).
    """
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=float)
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in METRIC_NAMES}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y_true), len(y_true))
        m = _resample_metrics(y_true[idx], prob[idx], threshold)
        for name in METRIC_NAMES:
            draws[name].append(m[name])
    tail = 100 * (1 - level) / 2
    return {
        name: tuple(np.nanpercentile(values, [tail, 100 - tail]))
        for name, values in draws.items()
    }


def metrics_table(y_true, prob, threshold=DEFAULT_DECISION_THRESHOLD, n_boot=N_BOOTSTRAP, seed=0):
    """Metrics with their intervals as an astropy Table (one row per metric)."""
    point = binary_metrics(y_true, prob, threshold)
    ci = bootstrap_intervals(y_true, prob, threshold, n_boot=n_boot, seed=seed)
    table = Table(
        {
            "metric": list(METRIC_NAMES),
            "value": [point[m] for m in METRIC_NAMES],
            "ci_low": [ci[m][0] for m in METRIC_NAMES],
            "ci_high": [ci[m][1] for m in METRIC_NAMES],
        }
    )
    for col in ("value", "ci_low", "ci_high"):
        table[col].format = ".3f"
    table.meta.update({k: point[k] for k in ("tn", "fp", "fn", "tp")})
    table.meta["n"] = int(len(y_true))
    table.meta["confidence"] = CONFIDENCE
    return table


def plot_confusion(counts, path, title="Confusion matrix"):
    """Save a 2×2 confusion-matrix figure; ``counts`` has tn, fp, fn, tp."""
    matrix = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
    fig = new_figure((4, 3.6))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks([0, 1], ["artifact", "LSBG"])
    ax.set_yticks([0, 1], ["artifact", "LSBG"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def plot_roc(curves, path, title="ROC"):
    """Save ROC curves; ``curves`` maps a label to (y_true, prob)."""
    fig = new_figure((4.2, 4))
    ax = fig.subplots()
    for label, (y_true, prob) in curves.items():
        fpr, tpr, _ = skm.roc_curve(y_true, prob)
        ax.plot(fpr, tpr, label=f"{label} (AUC {skm.auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="gray")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def plot_history(history, path):
    """Save accuracy and loss curves from a Keras history dict."""
    fig = new_figure((8, 3.2))
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("accuracy", "loss")):
        ax.plot(history[key], label="train")
        ax.plot(history[f"val_{key}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def evaluate_model(model, X, y, output_dir=None, threshold=DEFAULT_DECISION_THRESHOLD,
                   label="test", seed=0):
    """Score a labelled data set and write the metrics table and figures.

    Parameters
    ----------
    model : LSBGModel
    X, y : numpy.ndarray
        Images (n, 64, 64, 3), uint8 or float in [0, 1], and 0/1 labels.
    output_dir : path-like, optional
        Receives ``metrics_<label>.ecsv``, ``confusion_<label>.png`` and
        ``roc_<label>.png`` and ``misclassified_<label>.png`` (a sheet of
        the wrongly classified cutouts, frame = true class).

    Returns
    -------
    table : `~astropy.table.Table`
        From :func:`metrics_table`.
    prob : numpy.ndarray
        The predicted probabilities.
    """
    prob = model.predict(X)
    table = metrics_table(y, prob, threshold, seed=seed)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_catalog(table, out / f"metrics_{label}.ecsv", overwrite=True)
        plot_confusion(table.meta, out / f"confusion_{label}.png", title=f"{model.name}: {label}")
        if len(np.unique(y)) == 2:
            plot_roc({model.name: (y, prob)}, out / f"roc_{label}.png", title=f"{model.name}: {label}")
        wrong = np.flatnonzero((prob >= threshold).astype(int) != np.asarray(y))
        if len(wrong):
            contact_sheet(np.asarray(X)[wrong], out / f"misclassified_{label}.png",
                          captions=[f"#{i} p={prob[i]:.2f}" for i in wrong],
                          labels=np.asarray(y)[wrong],
                          title=f"{model.name}: misclassified in {label} (frame = true class: green LSBG, red artifact)")
    return table, prob


@dataclass(frozen=True)
class SubsetEvaluation:
    """The evaluation of one subset of a data set (see :func:`evaluate_subsets`).

    Attributes
    ----------
    table : `~astropy.table.Table`
        From :func:`metrics_table`.
    calibration : dict
        From :func:`~lsbg_classify.diagnostics.reliability.calibration_summary`.
    """

    table: Table
    calibration: dict


def evaluate_subsets(model, X, y, selection=None, output_dir=None,
                     threshold=DEFAULT_DECISION_THRESHOLD, temperature=None):
    """Evaluate a model on a labelled data set, whole and by how its cutouts were chosen.

    Parameters
    ----------
    model : LSBGModel
    X, y : numpy.ndarray
        Images (n, 64, 64, 3) and 0/1 labels.
    selection : array_like of str, optional
        How each cutout was chosen (e.g. ``"random"``), as the real
        development set records it; each value is evaluated on its own too.
    output_dir : path-like, optional
        Receives what :func:`evaluate_model` writes and
        ``reliability_<label>.png`` per subset, labelled ``test`` without
        ``selection``, else ``all`` and the selection values.
    threshold : float
        Class threshold.
    temperature : float, optional
        A fitted temperature whose calibration is reported beside the model's.

    Returns
    -------
    dict
        Subset label (``"all"`` and each selection value) → :class:`SubsetEvaluation`.
    """
    subsets = {"all": np.ones(len(y), bool)}
    for name in np.unique(selection) if selection is not None else ():
        subsets[str(name)] = np.asarray(selection) == name
    results = {}
    for label, rows in subsets.items():
        tag = label if len(subsets) > 1 else "test"
        table, prob = evaluate_model(model, X[rows], y[rows], output_dir, threshold, label=tag)
        if output_dir is not None:
            curves = {"model": prob}
            if temperature is not None:
                curves[f"T = {temperature:.2f}"] = apply_temperature(prob, temperature)
            plot_reliability(y[rows], curves, Path(output_dir) / f"reliability_{tag}.png",
                             title=f"{model.name}: {label}")
        results[label] = SubsetEvaluation(table, calibration_summary(y[rows], prob, temperature))
    return results
