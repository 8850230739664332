"""Calibration checks on synthetic probabilities whose calibration is known."""

import numpy as np
import pytest

from lsbg_classify.cli import main
from lsbg_classify.diagnostics.reliability import (
    apply_temperature,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    plot_reliability,
    reliability_curve,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N = 20000


def _logit(p):
    return np.log(p) - np.log1p(-p)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.fixture(scope="module")
def calibrated():
    """Labels drawn with exactly the stated probabilities."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0.001, 0.999, N)
    return (rng.uniform(size=N) < p).astype(int), p


def test_calibrated_probabilities_have_ece_near_zero(calibrated):
    y, p = calibrated
    # Sampling noise alone: about sqrt(n_bins / N) / 3 = 0.007.
    assert expected_calibration_error(y, p) < 0.015


def test_over_confident_probabilities_give_temperature_two_back(calibrated):
    y, p = calibrated
    over = _sigmoid(2 * _logit(p))
    assert expected_calibration_error(y, over) > 0.05
    temperature = fit_temperature(y, over)
    assert temperature == pytest.approx(2.0, abs=0.1)
    assert expected_calibration_error(y, apply_temperature(over, temperature)) < 0.015
    under = _sigmoid(0.5 * _logit(p))
    assert fit_temperature(y, under) == pytest.approx(0.5, abs=0.03)


def test_apply_temperature():
    p = np.array([0.0, 0.1, 0.5, 0.9, 1.0, np.nan], np.float32)
    same = apply_temperature(p, 1)
    assert same.dtype == np.float32 and np.array_equal(same, p, equal_nan=True)
    assert same is not p
    hot = apply_temperature(p, 3.0)
    assert hot.dtype == np.float32 and np.isnan(hot[-1]) and hot[2] == 0.5
    assert np.all(np.diff(hot[:-1]) > 0)  # order kept
    off_centre = [0, 1, 3, 4]
    assert np.all(np.abs(hot[off_centre] - 0.5) < np.abs(p[off_centre] - 0.5))  # towards 0.5
    assert apply_temperature(0.9, 0.5) == pytest.approx(_sigmoid(2 * _logit(0.9)))
    for bad in (0, -1, np.inf, np.nan):
        with pytest.raises(ValueError, match="temperature"):
            apply_temperature(p, bad)


def test_reliability_curve_by_hand():
    y = [0, 1, 1, 0, 1]
    prob = np.ma.array([0.05, 0.95, 1.0, 0.15, 0.5], mask=[0, 0, 0, 0, 1])
    curve = reliability_curve(y, prob, n_bins=4)
    assert curve.colnames == ["bin_low", "bin_high", "mean_prob", "observed_fraction", "count"]
    assert list(curve["count"]) == [2, 0, 0, 2]  # the masked row is left out; 1.0 in the last bin
    assert curve["mean_prob"][0] == pytest.approx(0.1) and curve["observed_fraction"][0] == 0
    assert curve["mean_prob"][3] == pytest.approx(0.975) and curve["observed_fraction"][3] == 1
    assert np.isnan(curve["mean_prob"][1]) and np.isnan(curve["observed_fraction"][2])
    assert list(curve["bin_high"]) == [0.25, 0.5, 0.75, 1.0]
    # ECE = (2/4) * 0.1 + (2/4) * 0.025
    assert expected_calibration_error(y, prob, n_bins=4) == pytest.approx(0.0625)
    assert expected_calibration_error([0, 1, 0, 1], [0.8] * 4) == pytest.approx(0.3)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="y has 2 values but prob has 3"):
        reliability_curve([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0 .artifact. or 1"):
        reliability_curve([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability_curve([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="both classes"):
        fit_temperature([1, 1, 1], [0.2, 0.6, 0.9])
    with pytest.raises(ValueError, match="every object correctly"):
        fit_temperature([0, 1, 0, 1], [0.2, 0.6, 0.1, 0.9])
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="upper bound"):
        fit_temperature(rng.integers(0, 2, 4000), rng.uniform(0, 1, 4000))


def test_summary_and_plot(calibrated, tmp_path):
    y, p = calibrated
    over = _sigmoid(2 * _logit(p))
    summary = calibration_summary(y, over, temperature=2.0)
    assert summary["n"] == N and summary["ece_scaled"] < 0.015 < summary["ece"]
    assert set(calibration_summary(y, p)) == {"n", "ece"}
    path = tmp_path / "reliability.png"
    plot_reliability(y, {"raw": over, "T = 2": apply_temperature(over, 2.0)}, path)
    assert path.read_bytes()[:8] == PNG_MAGIC


def _brightness_model(path, gain):
    """A whole .keras model: p = sigmoid(gain * (mean brightness - 0.5))."""
    import keras

    inputs = keras.Input((64, 64, 3))
    mean = keras.layers.GlobalAveragePooling2D()(inputs)
    network = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(mean))
    network.layers[-1].set_weights([np.full((3, 1), gain / 3, np.float32),
                                    np.full(1, -gain / 2, np.float32)])
    network.save(path)
    return str(path)


def _brightness_set(path, n, seed):
    """LSBGs slightly brighter than artifacts, with overlapping classes."""
    from lsbg_classify.training.train import save_dataset

    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    level = 0.5 + 0.04 * (2 * y - 1) + rng.normal(0, 0.04, n)
    X = np.clip(np.round(level[:, None, None, None] * 255 * np.ones((1, 64, 64, 3))), 0, 255)
    save_dataset(path, X.astype(np.uint8), y)
    return str(path)


def test_cli_evaluate_reports_calibration_and_fits_a_temperature(tmp_path, capsys):
    model = _brightness_model(tmp_path / "over.keras", gain=200.0)  # far too confident
    test = _brightness_set(tmp_path / "test.npz", 400, seed=0)
    val = _brightness_set(tmp_path / "val.npz", 400, seed=1)
    assert main(["evaluate", test, "--model", model, "--outdir", str(tmp_path / "eval"),
                 "--fit-temperature", val]) == 0
    out = capsys.readouterr().out
    line = next(text for text in out.splitlines() if text.startswith("expected calibration"))
    before, after = (float(part.rsplit(":", 1)[1]) for part in line.split(";"))
    assert after < before / 2
    fitted = float(next(text for text in out.splitlines() if "T = " in text).rsplit("=", 1)[1])
    assert fitted > 2  # the model was over-confident
    assert (tmp_path / "eval" / "reliability_test.png").read_bytes()[:8] == PNG_MAGIC
    assert main(["evaluate", test, "--model", model]) == 0
    assert "expected calibration error" in capsys.readouterr().out
