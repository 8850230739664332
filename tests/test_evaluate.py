import numpy as np
import pytest

from lsbg_classify.training.evaluate import (
    binary_metrics,
    bootstrap_intervals,
    metrics_table,
    plot_confusion,
    plot_roc,
)


def test_metrics_on_a_known_confusion_matrix():
    # 3 TP, 1 FN, 2 TN, 2 FP
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.6, 0.2, 0.1, 0.3, 0.7, 0.55])
    m = binary_metrics(y, p)
    assert (m["tp"], m["fn"], m["tn"], m["fp"]) == (3, 1, 2, 2)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    # AUC from the rank statistic: pairs (pos > neg) / 16
    pairs = sum(a > b for a in p[:4] for b in p[4:])
    assert m["roc_auc"] == pytest.approx(pairs / 16)


def test_threshold_moves_the_class_boundary():
    y = np.array([1, 0])
    p = np.array([0.6, 0.4])
    assert binary_metrics(y, p, threshold=0.5)["accuracy"] == 1
    assert binary_metrics(y, p, threshold=0.7)["accuracy"] == 0.5


def test_bootstrap_interval_brackets_the_value_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 1600):
        y = rng.integers(0, 2, n)
        p = np.clip(y * 0.3 + rng.uniform(0, 0.6, n), 0, 1)
        value = binary_metrics(y, p)["accuracy"]
        lo, hi = bootstrap_intervals(y, p, n_boot=300)["accuracy"]
        assert lo <= value <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_metrics_table_and_figures(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.5 + rng.uniform(0, 0.6, 200), 0, 1)
    table = metrics_table(y, p, n_boot=100)
    assert list(table["metric"]) == ["accuracy", "precision", "recall", "specificity", "f1", "roc_auc"]
    assert np.all(table["ci_low"] <= table["value"]) and np.all(table["value"] <= table["ci_high"])
    assert table.meta["tn"] + table.meta["fp"] + table.meta["fn"] + table.meta["tp"] == 200
    plot_confusion(table.meta, tmp_path / "cm.png")
    plot_roc({"cnn": (y, p)}, tmp_path / "roc.png")
    for name in ("cm.png", "roc.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fast_resample_metrics_equal_sklearn():
    from lsbg_classify.training.evaluate import METRIC_NAMES, _resample_metrics

    rng = np.random.default_rng(4)
    for n in (7, 50, 400):
        y = rng.integers(0, 2, n)
        p = np.round(rng.uniform(0, 1, n), 1)  # rounded: ties exercise the rank averaging
        fast = _resample_metrics(y, p, 0.5)
        slow = binary_metrics(y, p, 0.5)
        for name in METRIC_NAMES:
            np.testing.assert_allclose(fast[name], slow[name], atol=1e-12, equal_nan=True, err_msg=name)


def test_best_threshold_sits_in_the_middle_of_the_widest_best_gap():
    from lsbg_classify.training.evaluate import best_threshold

    y = np.array([0, 0, 0, 1, 1, 1])
    prob = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert best_threshold(y, prob) == pytest.approx(0.5)
    # Shifted scores move the threshold with them.
    assert best_threshold(y, prob * 0.5) == pytest.approx(0.25)
    # Accuracy is maximal for any t in (0.3, 0.7]: every candidate beats 0.9.
    y2 = np.array([0, 0, 1, 0, 1, 1])
    t = best_threshold(y2, np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9]))
    acc = np.mean((np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9]) >= t) == (y2 == 1))
    assert acc == pytest.approx(5 / 6)


def test_crossvalidated_threshold_scores_each_cutout_with_a_threshold_it_did_not_choose():
    from lsbg_classify.training.evaluate import crossvalidated_threshold

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    # Separable scores whose boundary is at 0.8, not 0.5.
    prob = np.where(y == 1, rng.uniform(0.82, 1.0, 100), rng.uniform(0.0, 0.78, 100))
    result = crossvalidated_threshold(y, prob, folds=5, repeats=3)
    assert 0.78 < result["threshold"] < 0.82
    assert result["cv_accuracy"] == pytest.approx(1.0)
    assert np.mean((prob >= 0.5) == (y == 1)) < 1.0
    # Pure noise: the chosen threshold cannot generalise, and the honest
    # estimate says so.
    noise = crossvalidated_threshold(y, rng.uniform(0, 1, 100), folds=5, repeats=5)
    assert noise["cv_accuracy"] < 0.65
