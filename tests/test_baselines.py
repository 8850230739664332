"""The paper's feature baselines (lsbg_classify.reproduction.baselines)."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.table import MaskedColumn, Table

from lsbg_classify.reproduction.baselines import (
    FEATURE_SETS,
    IMAGE_FEATURES,
    baseline_models,
    catalog_features,
    cross_validate_baselines,
    load_greco2018,
    measure_features,
    run_greco_benchmark,
    sky_groups,
)
from lsbg_classify.training.evaluate import METRIC_NAMES

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GRECO = DATA / "hsc_greco2018"
needs_greco = pytest.mark.skipif(not (GRECO / "hsc_LSBGs.dat").is_file(),
                                 reason="real Greco et al. 2018 catalogue not available (../shared/data)")


def _b_n(n):
    """b_n by bisection of P(2n, b) = 1/2, for n = 0.5 and 1 (closed forms of P)."""
    if n == 0.5:
        return math.log(2.0)
    assert n == 1.0
    lo, hi = 0.0, 10.0
    for _ in range(200):  # P(2, b) = 1 - (1 + b) exp(-b)
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if 1 - (1 + mid) * math.exp(-mid) < 0.5 else (lo, mid)
    return 0.5 * (lo + hi)


# -- catalogue features --------------------------------------------------------


def _made_up_table():
    return Table({
        "MU0": [25.0, 24.0],            # unbanded: taken as g
        "M_TOT": [20.0, 19.5],
        "Re": [4.0, 6.0] * u.arcsec,
        "Sersic_N": [1.0, 0.5],
        "Ellipticity": [0.2, 0.5],
        "g-i": [0.8, 0.6],
        "g_r": [0.5, 0.4],
    })


def test_catalog_features_derive_the_papers_set_by_hand():
    t = _made_up_table()
    X, names = catalog_features(t, "paper")
    assert names == list(FEATURE_SETS["paper"])
    f = {name: X[:, k] for k, name in enumerate(names)}
    for row in range(2):
        mu0, m, re, n, ell = 25.0 - row, 20.0 - 0.5 * row, (4.0, 6.0)[row], (1.0, 0.5)[row], (0.2, 0.5)[row]
        gi, gr = (0.8, 0.6)[row], (0.5, 0.4)[row]
        ri = gi - gr
        q = 1 - ell
        expect = {
            "ell": ell, "g-i": gi, "g-r": gr, "r-i": ri,
            "m_g": m, "m_r": m - gr, "m_i": m - gi,
            "mu_0_g": mu0, "mu_0_r": mu0 - gr, "mu_0_i": mu0 - gi,
            "mu_mean_e_g": m + 2.5 * math.log10(2 * math.pi * q * re**2),
            "mu_mean_e_i": m - gi + 2.5 * math.log10(2 * math.pi * q * re**2),
            "mu_e_g": mu0 + 2.5 * _b_n(n) / math.log(10),
            "mu_e_r": mu0 - gr + 2.5 * _b_n(n) / math.log(10),
        }
        for name, value in expect.items():
            assert f[name][row] == pytest.approx(value, abs=1e-6), name


def test_catalog_features_central_sb_from_magnitude_and_units():
    # No mu_0 column: the Sérsic model gives it.  n = 0.5: total flux =
    # I_0 * pi q r_e^2 / ln 2.  r_e given in arcmin is converted.
    t = Table({"m_g": [21.0], "r_eff": [5.0 / 60] * u.arcmin, "n": [0.5], "b/a": [0.6]})
    X, names = catalog_features(t, ["mu_0_g", "ell", "r_e"], strict=True)
    area = math.pi * 0.6 * 5.0**2 / math.log(2)
    assert X[0, 0] == pytest.approx(21.0 + 2.5 * math.log10(area), abs=1e-6)
    assert X[0, 1] == pytest.approx(0.4, abs=1e-12)
    assert X[0, 2] == pytest.approx(5.0, abs=1e-9)


def test_catalog_features_missing_and_masked_values():
    t = Table({"mag_g": MaskedColumn([20.0, 21.0], mask=[False, True]), "g-r": [0.5, 0.4]})
    with pytest.warns(UserWarning, match="cannot derive"):
        X, names = catalog_features(t, "paper")
    assert names == ["m_g", "m_r", "g-r"]
    assert np.isnan(X[1, names.index("m_g")])
    with pytest.raises(ValueError, match="cannot derive"):
        catalog_features(t, "paper", strict=True)
    with pytest.raises(ValueError):
        catalog_features(Table({"ra": [1.0]}), "paper")
    with pytest.raises(ValueError, match="pixel_scale"):
        catalog_features(Table({"flux_radius": [3.0] * u.pix}), ["r_e"])
    X, _ = catalog_features(Table({"flux_radius": [3.0] * u.pix}), ["r_e"], pixel_scale=0.25)
    assert X[0, 0] == pytest.approx(0.75)


# -- image features -----------------------------------------------------------


def _blob(sx, sy, theta=0.0, amp=0.3, colour=(1.0, 0.8, 0.6), size=64, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    c, s = math.cos(theta), math.sin(theta)
    xr, yr = c * x + s * y, -s * x + c * y
    g = amp * np.exp(-0.5 * ((xr / sx) ** 2 + (yr / sy) ** 2))
    return np.stack([0.1 + k * g + rng.normal(0, noise, g.shape) for k in colour], axis=-1)


@pytest.mark.parametrize("sigma", [3.0, 5.0])
def test_measure_features_half_light_radius_of_a_gaussian(sigma):
    pytest.importorskip("sep")
    X, names = measure_features(_blob(sigma, sigma))
    assert names == list(IMAGE_FEATURES) and X.shape == (1, len(IMAGE_FEATURES))
    f = dict(zip(names, X[0]))
    truth = sigma * math.sqrt(2 * math.log(2))  # half-light radius of a circular Gaussian
    assert f["r_half"] == pytest.approx(truth, rel=0.10)
    assert f["ell"] < 0.1
    assert f["flag"] == 0 and f["offset"] < 1.0
    # B/R flux ratio 0.6 → B-R = 0.555 mag
    assert f["B-R"] == pytest.approx(-2.5 * math.log10(0.6), abs=0.08)
    # pixel_scale turns pixels into arcsec and per-pixel into per-arcsec^2
    Xs, _ = measure_features(_blob(sigma, sigma), pixel_scale=0.5)
    fs = dict(zip(names, Xs[0]))
    assert fs["r_half"] == pytest.approx(0.5 * f["r_half"], rel=1e-9)
    assert fs["mu_0"] == pytest.approx(f["mu_0"] + 2.5 * math.log10(0.25), abs=1e-9)


def test_measure_features_ellipticity_and_input_types():
    pytest.importorskip("sep")
    images = np.stack([_blob(6, 3, theta=0.7, seed=1), _blob(8, 2, theta=-1.2, seed=2)])
    X, names = measure_features(images)
    ell = X[:, names.index("ell")]
    assert ell[0] == pytest.approx(0.5, abs=0.05)
    assert ell[1] == pytest.approx(0.75, abs=0.05)
    # uint8 model inputs (0-255) give the same geometry as floats in [0, 1]
    as_uint8 = np.clip(np.round(images * 255), 0, 255).astype(np.uint8)
    X8, _ = measure_features(as_uint8)
    assert X8[:, names.index("ell")] == pytest.approx(ell, abs=0.03)
    assert X8[:, names.index("r_half")] == pytest.approx(X[:, names.index("r_half")], rel=0.05)


def test_measure_features_falls_back_when_nothing_is_detected():
    pytest.importorskip("sep")
    X, names = measure_features(_blob(4, 4, amp=0.0)[None])
    f = dict(zip(names, X[0]))
    assert f["flag"] == 2 and f["n_sources"] == 0
    assert np.all(np.isfinite(X))


# -- cross-validation ---------------------------------------------------------


def test_cross_validation_on_a_separable_set():
    rng = np.random.default_rng(0)
    n = 160
    y = np.repeat([0, 1], n // 2)
    X = rng.normal(size=(n, 4)) + 4.0 * y[:, None] * np.array([1.0, 0.5, 0.0, 0.0])
    X[::17, 3] = np.nan  # imputed inside the folds
    table, probs = cross_validate_baselines(X, y, folds=5, seed=0, n_boot=50, return_predictions=True)
    assert set(table["model"]) == {"svm", "random_forest"}
    for model in ("svm", "random_forest"):
        rows = table[table["model"] == model]
        assert list(rows["metric"]) == list(METRIC_NAMES)
        acc = rows[rows["metric"] == "accuracy"][0]
        assert acc["value"] > 0.95
        assert np.all(rows["ci_low"] <= rows["value"] + 1e-12)
        assert np.all(rows["value"] <= rows["ci_high"] + 1e-12)
        assert probs[model].shape == (n,) and np.all((probs[model] >= 0) & (probs[model] <= 1))
        assert table.meta[f"{model}_tp"] + table.meta[f"{model}_fn"] == n // 2
    assert table.meta["folds"] == 5 and table.meta["protocol"] == "stratified k-fold"
    # same seed, same answer
    _, again = cross_validate_baselines(X, y, folds=5, seed=0, n_boot=5, return_predictions=True,
                                        models={"random_forest": baseline_models()["random_forest"]})
    assert np.array_equal(again["random_forest"], probs["random_forest"])


def test_cross_validation_with_groups_and_bad_input():
    rng = np.random.default_rng(1)
    y = np.tile([0, 1], 40)
    X = rng.normal(size=(80, 2)) + 3.0 * y[:, None]
    groups = np.arange(80) // 4  # pairs of each class in every group
    table = cross_validate_baselines(X, y, folds=4, n_boot=20, groups=groups,
                                     models={"rf": baseline_models()["random_forest"]})
    assert set(table["model"]) == {"rf"} and table.meta["protocol"] == "stratified group k-fold"
    with pytest.raises(ValueError):
        cross_validate_baselines(X, np.zeros(80, int))
    with pytest.raises(ValueError):
        cross_validate_baselines(X[:10], y)


def test_sky_groups_link_close_positions():
    ra = [10.0, 10.0 + 20 / 3600, 10.0 + 40 / 3600, 50.0, 50.0]
    dec = [0.0, 0.0, 0.0, 0.0, 1.0]
    g = sky_groups(ra, dec, radius_arcsec=30)
    assert g[0] == g[1] == g[2]  # friends of friends: 0-1 and 1-2 within 30"
    assert len({g[0], g[3], g[4]}) == 3


# -- the real Greco et al. (2018) catalogue -----------------------------------


@needs_greco
def test_load_greco2018_columns_are_physically_plausible():
    t = load_greco2018(DATA)
    assert len(t) == 781 + 641
    assert (t["label"] == 1).sum() == 781 and (t["label"] == 0).sum() == 641
    assert set(t["source"][t["label"] == 1]) == {"lsbg"}
    assert 2.4 < np.min(t["r_e"]) and np.max(t["r_e"]) < 20  # arcsec
    assert np.all((t["ell"] >= 0) & (t["ell"] < 1))
    lsbg = t[t["label"] == 1]
    assert 0.3 < np.median(lsbg["n"]) < 1.5
    assert np.mean(lsbg["g-r"] < lsbg["g-i"]) > 0.95  # r - i > 0: the colours are not swapped
    assert 0.3 < np.median(lsbg["g-i"]) < 1.2
    # The .dat surface brightness is i-band: adding g-i gives Greco et al.'s
    # published g-band numbers (median mu_0(g) 24.3; mean g-band surface
    # brightness within r_e above the 24.3 selection cut for every galaxy).
    mu0_g = np.asarray(lsbg["mu_0_i"] + lsbg["g-i"])
    assert np.median(mu0_g) == pytest.approx(24.3, abs=0.15)
    X, names = catalog_features(lsbg, ["mu_mean_e_g"], strict=True)
    assert np.min(X) > 24.3
    # Sérsic consistency of mu_0, m, r_e, n, ell (rounded to 0.01 in the file)
    X, _ = catalog_features(Table({k: lsbg[k] for k in ("m_i", "r_e", "n", "ell")}), ["mu_0_i"], strict=True)
    assert np.max(np.abs(X[:, 0] - lsbg["mu_0_i"])) < 0.03


@needs_greco
@pytest.mark.slow
def test_greco_benchmark_reproduces_both_baselines(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # The protocol of docs/baselines.rst (10 folds, seed 0), so the point
        # values are the documented ones; fewer bootstrap draws for speed.
        table = run_greco_benchmark(DATA, tmp_path, folds=10, seed=0, n_boot=50,
                                    feature_sets=("paper",), grid_search=False, grouped=False,
                                    importances=False)
    assert (tmp_path / "baselines_greco2018.ecsv").is_file()
    assert (tmp_path / "roc_baselines_greco2018.png").stat().st_size > 1000
    assert set(table["model"]) == {"svm", "random_forest"}
    assert table.meta["n_lsbg"] == 781 and table.meta["n_artifact"] == 641
    for model in ("svm", "random_forest"):
        rows = table[table["model"] == model]
        acc = rows[rows["metric"] == "accuracy"][0]
        # better than always answering "LSBG" (781 / 1422 = 0.549)
        assert acc["value"] > 0.5 and acc["ci_low"] > 781 / 1422
        assert np.all(rows["ci_low"] <= rows["value"] + 1e-12)
        assert np.all(rows["value"] <= rows["ci_high"] + 1e-12)
    back = Table.read(tmp_path / "baselines_greco2018.ecsv")
    assert len(back) == len(table)
