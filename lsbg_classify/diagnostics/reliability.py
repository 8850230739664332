"""Are the probabilities calibrated?  Reliability diagram, ECE, temperature scaling.

A classifier is *calibrated* when, of the objects given probability ``p``,
a fraction ``p`` are LSBGs.  :func:`reliability_curve` bins the predictions
and compares the mean probability with the observed fraction in each bin;
:func:`expected_calibration_error` summarises the gaps (Naeini et al.
2015); :func:`fit_temperature` fits the one-parameter correction of Guo et
al. (2017, "On Calibration of Modern Neural Networks").  This module sits
beside the pipeline (it needs labels); applying a fitted temperature is
:func:`lsbg_classify.pipeline.uncertainty.apply_temperature`, re-exported here.
"""

import numpy as np
from astropy.table import Table

from ..figures import new_figure, save_figure
from ..pipeline.uncertainty import PROB_EPSILON, apply_temperature

__all__ = ["N_BINS", "reliability_curve", "expected_calibration_error", "fit_temperature",
           "apply_temperature", "calibration_summary", "plot_reliability"]

#: Equal-width probability bins of the diagram and of the ECE.
N_BINS = 10
# Search range of the temperature: far beyond any useful correction, so an
# answer at the edge means the data cannot constrain T.
LOG_T_BOUNDS = (np.log(1e-2), np.log(1e2))


def _labels_and_probs(y, prob):
    """Validated float arrays; NaN probabilities (unscored rows) are dropped."""
    y = np.asarray(y, dtype=float).ravel()
    prob = np.asarray(np.ma.filled(prob, np.nan) if np.ma.isMaskedArray(prob) else prob,
                      dtype=float).ravel()
    if y.shape != prob.shape:
        raise ValueError(f"y has {len(y)} values but prob has {len(prob)}")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("y must hold 0 (artifact) or 1 (LSBG) labels")
    scored = np.isfinite(prob)
    y, prob = y[scored], prob[scored]
    if np.any((prob < 0) | (prob > 1)):
        raise ValueError("prob must lie in [0, 1]")
    if len(y) == 0:
        raise ValueError("no scored rows: every probability is NaN or masked")
    return y, prob


def _bin_index(prob, n_bins):
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    # Bins are [lo, hi) except the last, which also holds p = 1.
    return np.minimum((prob * n_bins).astype(int), n_bins - 1)


def reliability_curve(y, prob, n_bins=N_BINS):
    """Mean predicted probability against observed LSBG fraction, per bin.

    Parameters
    ----------
    y : array_like of {0, 1}
        True labels, 1 = LSBG.
    prob : array_like of float
        Predicted LSBG probabilities in [0, 1]; NaN or masked ones are left
        out.
    n_bins : int
        Equal-width bins on [0, 1].

    Returns
    -------
    `~astropy.table.Table`
        One row per bin: ``bin_low``, ``bin_high``, ``mean_prob`` (mean
        predicted probability), ``observed_fraction`` (fraction of LSBGs)
        and ``count``; the two means are NaN in empty bins.
    """
    y, prob = _labels_and_probs(y, prob)
    index = _bin_index(prob, n_bins)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(index, weights=prob, minlength=n_bins) / count
        observed = np.bincount(index, weights=y, minlength=n_bins) / count
    edges = np.linspace(0, 1, n_bins + 1)
    table = Table({"bin_low": edges[:-1], "bin_high": edges[1:], "mean_prob": mean_prob,
                   "observed_fraction": observed, "count": count})
    for name in ("bin_low", "bin_high", "mean_prob", "observed_fraction"):
        table[name].format = ".3f"
    return table


def expected_calibration_error(y, prob, n_bins=N_BINS):
    """Expected calibration error, ``sum_b (n_b / N) |observed_b - mean_prob_b|``.

    Parameters are those of :func:`reliability_curve`.

    Returns
    -------
    float
        In [0, 1]; 0 for perfectly calibrated probabilities (up to the
        binning and the sampling noise, about ``sqrt(n_bins / N) / 3`` for
        ``N`` objects).
    """
    curve = reliability_curve(y, prob, n_bins)
    filled = curve["count"] > 0
    gaps = np.abs(curve["observed_fraction"][filled] - curve["mean_prob"][filled])
    return float(np.sum(curve["count"][filled] * gaps) / np.sum(curve["count"]))


def _negative_log_likelihood(log_t, y, logit):
    z = logit / np.exp(log_t)
    # log(1 + e^z) - y z, written to stay finite for large |z|.
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(y, prob):
    """The temperature that makes ``sigmoid(logit(p) / T)`` best match the labels.

    Minimises the mean negative log-likelihood (binary cross-entropy) over
    ``log T``, so that ``T`` stays positive; fit it on a labelled set that
    the model was not trained on, and apply it with
    :func:`apply_temperature`.

    Parameters
    ----------
    y : array_like of {0, 1}
        True labels, both classes present.
    prob : array_like of float
        The model's probabilities; clipped :data:`~lsbg_classify.pipeline.uncertainty.PROB_EPSILON`
        away from 0 and 1.

    Returns
    -------
    float
        ``T > 0``: above 1 the model was over-confident, below 1
        under-confident.

    Raises
    ------
    ValueError
        Only one class in ``y``; every object classified correctly at 0.5
        (no finite best ``T``); or a fit that runs into the search bounds
        (1/100 to 100).
    """
    from scipy.optimize import minimize_scalar  # scipy comes with scikit-learn

    y, prob = _labels_and_probs(y, prob)
    if len(np.unique(y)) < 2:
        raise ValueError("fit_temperature needs labels of both classes")
    p = np.clip(prob, PROB_EPSILON, 1 - PROB_EPSILON)
    logit = np.log(p) - np.log1p(-p)
    if np.all((logit > 0) == (y == 1)):
        # Every object on the right side of 0.5: the likelihood keeps rising as T -> 0.
        raise ValueError("the probabilities classify every object correctly at 0.5, so the "
                         "likelihood has no finite best temperature; use a larger or harder "
                         "validation set")
    result = minimize_scalar(_negative_log_likelihood, bounds=LOG_T_BOUNDS, args=(y, logit),
                             method="bounded", options={"xatol": 1e-6})
    low, high = LOG_T_BOUNDS
    if result.x - low < 1e-3:
        raise ValueError(f"the fitted temperature ran into its lower bound ({np.exp(low):.3g}): "
                         "the probabilities separate the classes perfectly, so no finite T "
                         "is best")
    if high - result.x < 1e-3:
        raise ValueError(f"the fitted temperature ran into its upper bound ({np.exp(high):.3g}): "
                         "the probabilities carry no information about the labels")
    return float(np.exp(result.x))


def calibration_summary(y, prob, temperature=None, n_bins=N_BINS):
    """ECE before and, given a temperature, after scaling.

    Returns
    -------
    dict
        ``n``, ``ece`` and, with ``temperature``, ``temperature`` and
        ``ece_scaled``.
    """
    y_ok, prob_ok = _labels_and_probs(y, prob)
    summary = {"n": len(y_ok), "ece": expected_calibration_error(y_ok, prob_ok, n_bins)}
    if temperature is not None:
        summary["temperature"] = float(temperature)
        summary["ece_scaled"] = expected_calibration_error(
            y_ok, apply_temperature(prob_ok, temperature), n_bins)
    return summary


def plot_reliability(y, prob, path, n_bins=N_BINS, title="Reliability"):
    """Save a reliability diagram above a histogram of the probabilities.

    Parameters
    ----------
    y : array_like of {0, 1}
        True labels.
    prob : array_like or dict
        Predicted probabilities, or a dict label → probabilities to draw
        several (e.g. before and after temperature scaling) together.
    path : path-like
        Figure to write (PNG, PDF, SVG by the ending).
    n_bins : int
        Equal-width bins.
    title : str
        Start of the title; the ECE of each curve is appended.
    """
    curves = prob if isinstance(prob, dict) else {"model": prob}
    fig = new_figure((4.4, 5.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], ls=":", color="gray", label="calibrated")
    eces = []
    for label, p in curves.items():
        curve = reliability_curve(y, p, n_bins)
        ece = expected_calibration_error(y, p, n_bins)
        eces.append(f"{label} {ece:.3f}" if len(curves) > 1 else f"{ece:.3f}")
        filled = curve["count"] > 0
        top.plot(curve["mean_prob"][filled], curve["observed_fraction"][filled], marker="o",
                 label=f"{label} (ECE {ece:.3f})")
        edges = np.append(curve["bin_low"], curve["bin_high"][-1])
        bottom.stairs(curve["count"], edges, label=label)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("observed LSBG fraction")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"{title}: ECE {', '.join(eces)}", fontsize=9)
    bottom.set_xlabel("predicted LSBG probability")
    bottom.set_ylabel("count")
    bottom.set_yscale("symlog")
    save_figure(fig, path, dpi=120)
