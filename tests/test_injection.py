"""Injection-recovery: injected fluxes, image handling, the completeness table and ``inject``."""

import hashlib
import math

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy.special import gamma, gammaincinv

from lsbg_classify.cli import main
from lsbg_classify.diagnostics.injection import (
    InjectedLSBG,
    draw_lsbg,
    inject_into_image,
    injection_recovery,
    parse_grid,
    plot_completeness,
    wilson_interval,
)
from lsbg_classify.pipeline.model import bundled_weights_path, load_model
from lsbg_classify.surveys import get_backend

RA0, DEC0 = 150.0, 2.0
COLUMNS = ["mu0", "r_e", "n", "n_recovered", "completeness", "ci_low", "ci_high", "mean_prob"]


def sersic_total_flux(mu0, r_e, n, q, zero_point=22.5):
    """Total flux from the central surface brightness, with the exact b_n."""
    b = gammaincinv(2 * n, 0.5)
    central = 10 ** (-0.4 * (mu0 - zero_point))  # per arcsec^2
    return 2 * math.pi * q * r_e**2 * central * n * gamma(2 * n) / b ** (2 * n)


def make_image(path, n=300, scale=0.262, sigma=0.01, seed=0):
    """An n x n TAN image of Gaussian noise (nanomaggies) around (RA0, DEC0)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA0, DEC0]
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    w.wcs.cd = [[-scale / 3600, 0.0], [0.0, scale / 3600]]
    data = sigma * np.random.default_rng(seed).standard_normal((n, n))
    fits.PrimaryHDU(data.astype(np.float32), w.to_header()).writeto(path)
    return path


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model(weights):
    return load_model(weights)


@pytest.fixture
def local_images(tmp_path):
    return {band: make_image(tmp_path / f"{band}.fits", seed=i) for i, band in enumerate("grz")}


# -- physics of the injected profile ------------------------------------------------------------


@pytest.mark.parametrize("n, ell", [(1.0, 0.0), (1.0, 0.4), (0.7, 0.2)])
def test_injected_flux_is_the_one_mu0_and_r_e_imply(n, ell):
    source = InjectedLSBG(mu0_g=24.5, r_e=4.0, n=n, ell=ell, pa=30.0)
    expected = sersic_total_flux(24.5, 4.0, n, 1 - ell)
    assert source.fluxes("des")[0] == pytest.approx(expected, rel=2e-3)
    # Drawn without a PSF on a grid holding the whole profile.
    scale = 0.2
    img = draw_lsbg(source, (401, 401), scale, 200.0, 200.0, [expected])[0]
    assert img.sum() == pytest.approx(expected, rel=0.02)
    central_sb = img[200, 200] / scale**2
    assert -2.5 * math.log10(central_sb) + 22.5 == pytest.approx(24.5, abs=0.03)
    # The PSF moves light around but keeps it.
    blurred = draw_lsbg(source, (401, 401), scale, 200.0, 200.0, [expected], psf_fwhm=1.2)[0]
    assert blurred.sum() == pytest.approx(expected, rel=0.02)


def test_brighter_mu0_gives_a_brighter_centre_in_every_band():
    kw = dict(shape=(128, 128), pixel_scale=0.262, x=63.5, y=63.5, psf_fwhm=1.0)
    bright, faint = InjectedLSBG(23.0, 5.0), InjectedLSBG(25.0, 5.0)
    a = draw_lsbg(bright, fluxes=bright.fluxes("des"), **kw)
    b = draw_lsbg(faint, fluxes=faint.fluxes("des"), **kw)
    ratio = a[:, 63:65, 63:65].sum(axis=(1, 2)) / b[:, 63:65, 63:65].sum(axis=(1, 2))
    assert ratio == pytest.approx(np.full(3, 10 ** 0.8), rel=1e-6)
    # Colours: g - r = 0.38 and g - z = 0.63 by default.
    mags = bright.magnitudes("des")
    assert mags[0] - mags[1] == pytest.approx(0.38) and mags[0] - mags[2] == pytest.approx(0.63)


def test_injection_changes_a_fits_image_only_around_the_galaxy(tmp_path):
    path = make_image(tmp_path / "g.fits", n=400)
    with fits.open(path) as hdul:
        data = hdul[0].data.astype(np.float64)
        wcs = WCS(hdul[0].header)
    before = data.copy()
    source = InjectedLSBG(24.0, 3.0)
    ra, dec = wcs.pixel_to_world_values(150.3, 220.7)
    out = inject_into_image(data, wcs, ra, dec, source, "g", "des", psf_fwhm=1.0, zero_point=27.0)
    assert np.array_equal(data, before)  # the input is not modified
    y, x = np.mgrid[:400, :400]
    # The galaxy is drawn in a square: 6 r_e plus the PSF's 6 FWHM, plus a pixel.
    box = np.maximum(np.abs(x - 150.3), np.abs(y - 220.7)) * 0.262  # arcsec
    outside = box > 6 * 3.0 + 6 * 1.0 + 0.6
    assert outside.sum() > 100_000
    assert np.array_equal(out[outside], before[outside])
    added = out - before
    assert np.all(added[np.hypot(x - 150.3, y - 220.7) * 0.262 < 5] > 0)
    # In image units of zero point 27 the flux is 10**(0.4 * 4.5) times the nanomaggies.
    assert added.sum() == pytest.approx(source.fluxes("des", zero_point=27.0)[0], rel=0.02)
    assert np.unravel_index(np.argmax(added), added.shape) in {(220, 150), (221, 150),
                                                                (220, 151), (221, 151)}
    with pytest.raises(ValueError, match="band 'i'"):
        inject_into_image(data, wcs, ra, dec, source, "i", "des")


# -- completeness -------------------------------------------------------------------------------


def test_wilson_interval_known_values():
    low, high = wilson_interval([0, 10, 20, 0], [20, 20, 20, 0])
    assert low[0] == 0 and high[0] == pytest.approx(0.1611, abs=1e-4)
    assert (low[1], high[1]) == pytest.approx((0.2993, 0.7007), abs=1e-4)
    assert high[2] == 1 and low[2] == pytest.approx(0.8389, abs=1e-4)
    assert np.isnan(low[3]) and np.isnan(high[3])


def test_parse_grid():
    assert list(parse_grid("23,27,0.5")) == [23.0 + 0.5 * i for i in range(9)]
    assert list(parse_grid("2.5,12,5")) == [2.5, 7.5]
    assert list(parse_grid("4")) == [4.0]
    for bad in ("23,27", "a,b,c", "27,23,0.5", "23,27,0"):
        with pytest.raises(ValueError, match="--mu0"):
            parse_grid(bad, "--mu0")


def test_simulated_injection_recovery_table(model, tmp_path):
    table = injection_recovery(model, [23.0, 26.0], [3.0, 8.0], n_per_cell=2, seed=3)
    assert table.colnames == COLUMNS
    assert table["mu0"].unit == u.mag / u.arcsec**2 and table["r_e"].unit == u.arcsec
    assert list(table["mu0"]) == [23.0, 23.0, 26.0, 26.0] and list(table["r_e"]) == [3, 8, 3, 8]
    assert list(table["n"]) == [2] * 4
    assert np.all((table["n_recovered"] >= 0) & (table["n_recovered"] <= 2))
    assert np.allclose(table["completeness"], table["n_recovered"] / 2)
    assert np.all(table["ci_low"] <= table["completeness"])
    assert np.all(table["completeness"] <= table["ci_high"])
    assert np.all((table["mean_prob"] >= 0) & (table["mean_prob"] <= 1))
    assert table.meta["background"] == "simulated" and table.meta["n_per_cell"] == 2
    table.write(tmp_path / "c.ecsv")
    back = Table.read(tmp_path / "c.ecsv")
    assert back["mu0"].unit == u.mag / u.arcsec**2
    plot_completeness(back, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The same seed gives the same galaxies on the same skies.
    again = injection_recovery(model, [23.0, 26.0], [3.0, 8.0], n_per_cell=2, seed=3)
    assert np.allclose(again["mean_prob"], table["mean_prob"], atol=1e-6)


def test_artifact_backgrounds_and_bad_arguments(model):
    table = injection_recovery(model, [24.0], [5.0], n_per_cell=2, background="simulated-artifacts")
    assert table.meta["background"] == "simulated-artifacts"
    assert all(k.startswith("art_") for k in table.meta["background_kinds"])
    with pytest.raises(ValueError, match="background"):
        injection_recovery(model, [24.0], [5.0], n_per_cell=1, background="moon")
    with pytest.raises(ValueError, match="re_grid"):
        injection_recovery(model, [24.0], [0.0], n_per_cell=1)
    with pytest.raises(ValueError, match="n_per_cell"):
        injection_recovery(model, [24.0], [5.0], n_per_cell=0)


@pytest.mark.skipif(not bundled_weights_path("des").exists(), reason="no bundled DES weights")
def test_the_bundled_model_recovers_bright_lsbgs_and_loses_faint_ones():
    table = injection_recovery("des", [23.5, 27.0], [5.0], n_per_cell=6, seed=0)
    bright, faint = table["completeness"]
    assert bright > faint
    assert table["mean_prob"][0] > table["mean_prob"][1]


def test_local_injection_recovery_leaves_the_files_alone(model, local_images):
    hashes = {band: sha(p) for band, p in local_images.items()}
    with get_backend("local", survey="des", images=local_images) as backend:
        table = injection_recovery(model, [23.0, 25.0], [4.0], n_per_cell=2, background=backend,
                                   psf_fwhm={"g": 1.1, "r": 1.0, "z": 0.9})
    assert list(table["n"]) == [2, 2]
    assert table.meta["background"] == "local"
    assert table.meta["psf_fwhm_arcsec"] == {"g": 1.1, "r": 1.0, "z": 0.9}
    assert {band: sha(p) for band, p in local_images.items()} == hashes
    with get_backend("local", survey="des", images=local_images) as backend:
        with pytest.raises(ValueError, match="band.*z"):
            injection_recovery(model, [23.0], [4.0], n_per_cell=1, background=backend,
                               psf_fwhm={"g": 1.0, "r": 1.0})
    # An image smaller than a cutout's footprint has no room for any injection.
    small = {band: make_image(path.with_name(f"small_{band}.fits"), n=150)
             for band, path in local_images.items()}
    with get_backend("local", survey="des", images=small) as backend:
        with pytest.raises(ValueError, match="room for only 0"):
            injection_recovery(model, [23.0], [4.0], n_per_cell=1, background=backend)


def test_inject_command(weights, tmp_path, local_images, capsys):
    out = tmp_path / "out"
    assert main(["inject", "--outdir", str(out), "--model", weights, "--mu0", "23,25,2", "--re", "4",
                 "--per-cell", "1", "--seed", "1"]) == 0
    table = Table.read(out / "completeness.ecsv")
    assert len(table) == 2 and list(table["mu0"]) == [23.0, 25.0]
    assert (out / "completeness.png").stat().st_size > 0
    images = [f"--image={band}={path}" for band, path in local_images.items()]
    assert main(["inject", "--outdir", str(tmp_path / "local"), "--model", weights, "--mu0", "24",
                 "--re", "4", "--per-cell", "1", "--psf-fwhm", "1.2", "--zero-point", "22.5",
                 *images]) == 0
    assert Table.read(tmp_path / "local" / "completeness.ecsv").meta["background"] == "local"
    capsys.readouterr()
    assert main(["inject", "-o", str(out), "--model", weights, "--re", "4,2,1"]) == 2
    assert "--re" in capsys.readouterr().err
