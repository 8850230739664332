"""Tests of the simulated sky, its survey backend and the calibration tools."""

import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from lsbg_classify.diagnostics import sim_vs_real as calibration
from lsbg_classify.simulation import training_set
from lsbg_classify.simulation.conditions import (
    ARTIFACT_KINDS,
    LSBG_KINDS,
    SIMULATOR_VERSION,
    truth_label,
)
from lsbg_classify.simulation.render import render_bands, render_fits, render_jpeg
from lsbg_classify.simulation.training_set import make_training_set
from lsbg_classify.surveys import FITS, JPEG, NoCoverageError, Payload, get_backend, get_survey

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
REAL_10 = SHARED_DATA / "des_real" / "des_real_10.npz"
DEV_119 = SHARED_DATA / "des_real" / "des_dev_119.npz"

# Small cutouts keep the tests fast where the full 256 px is not the point.
SMALL = 96


def _positions(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 360, n), rng.uniform(-60, 0, n)


def test_truth_label_deterministic_and_balanced():
    ra, dec = _positions(400)
    labels = np.array([truth_label(r, d, seed=3) for r, d in zip(ra, dec)])
    again = np.array([truth_label(r, d, seed=3) for r, d in zip(ra, dec)])
    other = np.array([truth_label(r, d, seed=4) for r, d in zip(ra, dec)])
    assert np.array_equal(labels, again)
    assert set(np.unique(labels)) == {0, 1}
    # Binomial(400, 0.5): 5 sigma is +-50.
    assert 150 < labels.sum() < 250
    # A different seed is a different sky.
    assert np.mean(labels != other) > 0.3


def test_truth_label_ignores_sub_mas_rounding():
    assert truth_label(150.1, -2.2) == truth_label(150.1 + 1e-9, -2.2 - 1e-9)


def test_render_bands_shape_units_and_determinism():
    cube, info = render_bands(35.0, -5.0, "des", seed=1, label=1)
    assert cube.shape == (3, 256, 256)
    assert cube.dtype == np.float32
    assert np.all(np.isfinite(cube))
    assert info["label"] == 1
    assert info["kind"] in LSBG_KINDS
    cube2, info2 = render_bands(35.0, -5.0, "des", seed=1, label=1)
    assert np.array_equal(cube, cube2)
    assert info == info2
    # Another seed changes the pixels.
    cube3, _ = render_bands(35.0, -5.0, "des", seed=2, label=1)
    assert not np.array_equal(cube, cube3)
    # Sky noise in nanomaggies per 0.131" pixel: a few 1e-3, z noisiest
    # (DES z is about 1.5 mag shallower than g and r).
    border = np.concatenate([cube[:, :20].reshape(3, -1), cube[:, -20:].reshape(3, -1)], axis=1)
    mad = 1.4826 * np.median(np.abs(border - np.median(border, axis=1, keepdims=True)), axis=1)
    assert np.all((mad > 2e-4) & (mad < 3e-2)), mad
    assert mad[2] > mad[0] and mad[2] > mad[1]


def test_depth_scales_only_the_noise():
    cubes = {d: render_bands(35.0, -5.0, "des", seed=1, label=1, depth=d) for d in (1.0, 0.75, 0.5)}
    # The same draws at every depth: the pixels are linear in it, through the noise alone.
    step = cubes[1.0][0] - cubes[0.75][0]
    assert np.abs(step).max() > 0
    assert np.allclose(step, cubes[0.75][0] - cubes[0.5][0], atol=1e-6)
    noise = {d: np.array(info["noise_nmgy_per_native_pix"]) for d, (_, info) in cubes.items()}
    assert np.allclose(noise[0.5], 0.5 * noise[1.0])
    assert cubes[0.5][1]["kind"] == cubes[1.0][1]["kind"]
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="depth must be a positive number"):
            render_bands(35.0, -5.0, "des", seed=1, label=1, depth=bad)


def test_render_bands_default_label_is_truth_label():
    for ra in (10.0, 11.0, 12.0, 13.0):
        _, info = render_bands(ra, -30.0, "des", seed=5, size=SMALL)
        assert info["label"] == truth_label(ra, -30.0, seed=5)


def test_both_labels_render_with_their_own_kinds():
    kinds = {0: set(), 1: set()}
    for i in range(12):
        for label in (0, 1):
            _, info = render_bands(20.0 + i, -10.0, "des", label=label, size=SMALL)
            assert info["label"] == label
            kinds[label].add(info["kind"])
    assert kinds[1] <= set(LSBG_KINDS)
    assert kinds[0] <= set(ARTIFACT_KINDS)
    assert len(kinds[0]) >= 3


def test_lsbg_centre_is_brighter_than_sky():
    """A simulated LSBG puts diffuse g-band light at the centre of the cutout."""
    excess = []
    for i in range(6):
        cube, info = render_bands(50.0 + i, -20.0, "des", label=1)
        if info["kind"] == "lsbg_clumpy":
            continue
        centre = np.median(cube[0, 118:138, 118:138])
        sky = np.median(np.concatenate([cube[0, :16].ravel(), cube[0, -16:].ravel()]))
        excess.append(centre - sky)
    assert np.median(excess) > 0.002  # nanomaggies per pixel, ~mu_g 26.5 or brighter


def test_pixel_scale_and_size_are_honoured():
    cube, info = render_bands(1.0, 1.0, "des", size=64, pixel_scale=0.262)
    assert cube.shape == (3, 64, 64)
    assert info["pixel_scale"] == pytest.approx(0.262)


def test_hsc_cube_is_gri_in_counts():
    cube, info = render_bands(140.0, 1.0, "hsc", seed=0, label=1, size=SMALL)
    assert cube.shape == (3, SMALL, SMALL)
    assert info["survey"] == "hsc"
    # HSC counts (zero point 27) are 63.1 x nanomaggies: the noise is larger
    # in those units than DES noise in nanomaggies despite the deeper data.
    des, _ = render_bands(140.0, 1.0, "des", seed=0, label=1, size=SMALL)
    assert np.std(cube[0, :10]) > np.std(des[0, :10])


def test_render_jpeg_is_viewer_like():
    data = render_jpeg(35.0, -5.0, "des", seed=1)
    assert data[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG"
        assert img.size == (256, 256)
        assert img.mode == "RGB"
        rgb = np.asarray(img)
    # The asinh stretch with m = 0.03 puts the empty sky near 32/255.
    border = np.concatenate([rgb[:16].reshape(-1, 3), rgb[-16:].reshape(-1, 3)])
    assert 20 < np.median(border) < 50
    assert render_jpeg(35.0, -5.0, "des", seed=1) == data


def test_render_fits_header_and_cube():
    data = render_fits(35.0, -5.0, "des", seed=1, size=SMALL)
    with fits.open(io.BytesIO(data)) as hdul:
        hdr = hdul[0].header
        cube = hdul[0].data
    assert cube.shape == (3, SMALL, SMALL)
    assert hdr["BANDS"] == "grz"
    assert hdr["BUNIT"].lower().startswith("nanomaggy")
    assert hdr["PIXSCALE"] == pytest.approx(0.131)
    assert hdr["SIMVER"] == SIMULATOR_VERSION
    ref, _ = render_bands(35.0, -5.0, "des", seed=1, size=SMALL)
    np.testing.assert_allclose(cube, ref)


def test_hsc_fits_bands():
    data = render_fits(140.0, 1.0, "hsc", size=48)
    with fits.open(io.BytesIO(data)) as hdul:
        assert hdul[0].header["BANDS"] == "gri"
        assert hdul[0].header["PIXSCALE"] == pytest.approx(0.084)


def test_make_training_set_balanced_and_deterministic():
    X, y = make_training_set(12, seed=7, randomize=True)
    assert X.shape == (12, 64, 64, 3) and X.dtype == np.uint8
    assert y.shape == (12,) and y.dtype == np.int8
    assert y.sum() == 6
    X2, y2 = make_training_set(12, seed=7, randomize=True)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    X3, _ = make_training_set(12, seed=8, randomize=True)
    assert not np.array_equal(X, X3)
    # Real-looking range: dark sky, not saturated everywhere.
    assert 15 < np.median(X) < 60
    assert np.mean(X == 255) < 0.02


def test_make_training_set_matches_render_jpeg_pipeline():
    from lsbg_classify.pipeline.preprocess import jpeg_to_rgb, to_model_input

    X, y = make_training_set(2, seed=9, randomize=False)
    ra, dec, labels = training_set._training_positions(2, 9)
    data = render_jpeg(ra[0], dec[0], "des", seed=9, label=int(labels[0]))
    expected = np.round(to_model_input(jpeg_to_rgb(data)) * 255).astype(np.uint8)
    assert np.array_equal(X[0], expected)
    assert y[0] == labels[0]


def test_simulated_backend_payloads_and_coverage():
    backend = get_backend("simulated", survey="des")
    assert backend.name == "simulated"
    assert backend.layer == "simulated-des"
    assert not backend.remote
    assert backend.request_url(10.0, -20.0).startswith("simulated://des?")
    assert backend.cache_salt() == f"seed=0;v={SIMULATOR_VERSION}"
    payload = backend.download(10.0, -20.0)
    assert isinstance(payload, Payload) and payload.format == JPEG
    assert payload.data == render_jpeg(10.0, -20.0, "des", seed=0)
    with pytest.raises(NoCoverageError):
        backend.download(10.0, 89.5)
    outcome = backend.fetch_one(10.0, -89.5)
    assert outcome.status == "no_coverage" and outcome.payload is None
    results = dict(backend.fetch([10.0, 10.0], [-20.0, 89.5]))
    assert results[0].status == "ok" and results[1].status == "no_coverage"
    # Different seeds are different skies and different cache keys.
    other = get_backend("simulated", survey="des", seed=1)
    assert other.cache_key(10.0, -20.0) != backend.cache_key(10.0, -20.0)


def test_simulated_backend_fits():
    backend = get_backend("simulated", survey=get_survey("des"), image_format="fits", seed=2)
    payload = backend.download(5.0, 5.0)
    assert payload.format == FITS
    with fits.open(io.BytesIO(payload.data)) as hdul:
        assert hdul[0].data.shape == (3, 256, 256)
        assert hdul[0].header["BANDS"] == "grz"
        assert hdul[0].header["LABEL"] == backend.truth_label(5.0, 5.0)


def test_compare_real_vs_simulated_columns():
    X, _ = make_training_set(8, seed=1, randomize=False)
    table = calibration.compare_real_vs_simulated(X[:4], X[4:])
    for col in ("statistic", "real_median", "real_scatter", "sim_median", "sim_scatter", "z"):
        assert col in table.colnames
    stats = set(table["statistic"])
    for name in ("bkg_R", "noise_G", "sky_B-G", "frac_saturated", "centre_gray", "ps_slope"):
        assert name in stats
    row = table[list(table["statistic"]).index("bkg_G")]
    # The sky sits near 32/255 after the asinh stretch.
    assert 20 < row["sim_median"] < 50
    # Identical sets compare as identical.
    same = calibration.compare_real_vs_simulated(X, X)
    assert np.allclose(same["real_median"], same["sim_median"])


def test_contact_sheet(tmp_path):
    X, _ = make_training_set(4, seed=1, randomize=False)
    path = calibration.real_vs_simulated_sheet(X[:2], X[2:], tmp_path / "sheet.png", ncols=2,
                                               scale=1)
    with Image.open(path) as img:
        # Two rows (real, simulated) of 66 px plus an 8 px separator.
        assert img.size == (2 * 66, 2 * 66 + 8)


def test_discriminator_separates_different_images():
    rng = np.random.default_rng(0)
    a = rng.normal(32, 5, (24, 64, 64, 3)).clip(0, 255).astype(np.uint8)
    b = rng.normal(40, 9, (24, 64, 64, 3)).clip(0, 255).astype(np.uint8)
    assert calibration.discriminator_test(a, b, model="logistic", folds=3)["auc"] > 0.95
    c = rng.normal(32, 5, (24, 64, 64, 3)).clip(0, 255).astype(np.uint8)
    assert calibration.discriminator_test(a, c, model="logistic", folds=3)["auc"] < 0.75


@pytest.mark.skipif(not (REAL_10.exists() and DEV_119.exists()), reason="real cutouts not available")
def test_simulated_background_matches_real_des():
    real = np.concatenate([np.load(REAL_10)["X"], np.load(DEV_119)["X"]])
    sim, _ = make_training_set(16, seed=2, randomize=False, resample="bilinear")
    table = calibration.compare_real_vs_simulated(real, sim)
    rows = {r["statistic"]: r for r in table}
    for name in ("bkg_R", "bkg_G", "bkg_B", "q50_gray"):
        r = rows[name]
        assert abs(r["sim_median"] - r["real_median"]) < 3 * max(r["real_scatter"], 1.0), name


def test_resample_options():
    from lsbg_classify.pipeline.preprocess import jpeg_to_rgb

    Xb, y = make_training_set(2, seed=4, randomize=False, resample="bilinear")
    ra, dec, labels = training_set._training_positions(2, 4)
    rgb = jpeg_to_rgb(render_jpeg(ra[1], dec[1], "des", seed=4, label=int(labels[1])))
    # Bilinear without anti-aliasing samples the mean of the central 2x2 of every 4x4 block.
    block = 0.25 * (rgb[1::4, 1::4] + rgb[2::4, 1::4] + rgb[1::4, 2::4] + rgb[2::4, 2::4])
    assert np.abs(Xb[1].astype(int) - np.round(block * 255)).max() <= 1
    Xa, _ = make_training_set(2, seed=4, randomize=False)
    # Anti-aliasing smooths the noise: lower pixel-to-pixel differences.

    def rough(X):
        return np.abs(np.diff(X.astype(float), axis=1)).mean()

    assert rough(Xa) < rough(Xb)
    with pytest.raises(ValueError):
        make_training_set(2, resample="cubic")


@pytest.mark.slow
def test_make_training_set_workers_do_not_change_result():
    X1, y1 = make_training_set(8, seed=12, randomize=True, workers=1)
    X2, y2 = make_training_set(8, seed=12, randomize=True, workers=2)
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
