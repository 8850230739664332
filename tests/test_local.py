"""Tests of the local FITS image backend."""

import io
import os
import pickle
import threading

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from lsbg_classify.surveys import NoCoverageError, Payload, get_backend, get_survey
from lsbg_classify.surveys.local import LocalFitsBackend

RA0, DEC0 = 150.0, 2.0
DES_FLUXES = {"g": 10.0, "r": 20.0, "z": 30.0}  # nanomaggies


def make_image(path, crval=(RA0, DEC0), n=300, scale=0.262, sources=((RA0, DEC0, 1.0),),
               sigma_arcsec=1.0, flip_x=False, header=None, dtype=np.float32):
    """Write an n×n TAN image with Gaussian sources.

    ``sources`` holds (ra, dec, total flux in image units); ``scale`` is in
    arcsec / pix.  Pixel values are flux per pixel.
    """
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    s = scale / 3600.0
    w.wcs.cd = [[s if flip_x else -s, 0.0], [0.0, s]]
    y, x = np.mgrid[:n, :n]
    sig = sigma_arcsec / scale
    img = np.zeros((n, n))
    for ra, dec, flux in sources:
        sx, sy = w.world_to_pixel_values(ra, dec)
        img += flux * np.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (2 * sig**2)) / (2 * np.pi * sig**2)
    hdr = w.to_header()
    if header:
        hdr.update(header)
    fits.PrimaryHDU(img.astype(dtype), hdr).writeto(path, overwrite=True)
    return path


def des_images(tmp_path, **kw):
    return {
        band: make_image(tmp_path / f"{band}.fits", sources=((RA0, DEC0, flux),), **kw)
        for band, flux in DES_FLUXES.items()
    }


def cube_of(payload):
    assert isinstance(payload, Payload)
    assert payload.format == "fits"
    with fits.open(io.BytesIO(payload.data)) as hdul:
        return np.array(hdul[0].data, dtype=np.float64), hdul[0].header.copy()


def centroid(img):
    y, x = np.mgrid[: img.shape[0], : img.shape[1]]
    return (img * x).sum() / img.sum(), (img * y).sum() / img.sum()


@pytest.fixture
def backend(tmp_path):
    with get_backend("local", survey="des", images=des_images(tmp_path)) as be:
        yield be


def test_centred_and_flux_conserved_when_upsampling(backend):
    # Images at 0.262"/pix, cutouts at 0.131"/pix: 2x upsampling.
    assert isinstance(backend, LocalFitsBackend)
    assert backend.layer == "local"
    cube, header = cube_of(backend.download(RA0, DEC0))
    assert cube.shape == (3, 256, 256)
    assert header["BANDS"] == "grz"
    assert [header[f"BAND{i}"] for i in range(3)] == ["g", "r", "z"]
    for i, band in enumerate("grz"):
        assert cube[i].sum() == pytest.approx(DES_FLUXES[band], rel=0.02)
        cx, cy = centroid(cube[i])
        # Position at the grid centre, between the two middle pixels.
        assert cx == pytest.approx(127.5, abs=0.05)
        assert cy == pytest.approx(127.5, abs=0.05)


def test_offset_source_lands_east_left_north_up(tmp_path):
    # A source 3" east and 2" north of the position: left of and above
    # the centre (x smaller, FITS y larger), whatever the image orientation.
    ra_src = RA0 + 3.0 / 3600 / np.cos(np.radians(DEC0))
    dec_src = DEC0 + 2.0 / 3600
    for flip in (False, True):
        images = {
            b: make_image(tmp_path / f"{b}{flip}.fits", sources=((ra_src, dec_src, 5.0),), flip_x=flip)
            for b in "grz"
        }
        with LocalFitsBackend("des", images=images) as be:
            cube, _ = cube_of(be.download(RA0, DEC0))
        cx, cy = centroid(cube[1])
        assert cx == pytest.approx(127.5 - 3.0 / 0.131, abs=0.1)
        assert cy == pytest.approx(127.5 + 2.0 / 0.131, abs=0.1)


def test_flux_conserved_when_downsampling(tmp_path):
    # Images finer (0.1"/pix) than the cutout (0.131"/pix): anti-aliased.
    images = {b: make_image(tmp_path / f"{b}.fits", n=500, scale=0.1,
                            sources=((RA0, DEC0, DES_FLUXES[b]),)) for b in "grz"}
    with get_backend("local", survey="des", images=images) as be:
        cube, _ = cube_of(be.download(RA0, DEC0))
    for i, band in enumerate("grz"):
        assert cube[i].sum() == pytest.approx(DES_FLUXES[band], rel=0.02)
        cx, cy = centroid(cube[i])
        assert (cx, cy) == pytest.approx((127.5, 127.5), abs=0.05)


def test_no_coverage_outside(backend):
    with pytest.raises(NoCoverageError, match="no g-band image"):
        backend.download(RA0 + 1.0, DEC0)
    outcome = backend.fetch_one(RA0 + 1.0, DEC0)
    assert outcome.status == "no_coverage"
    assert backend.fetch_one(np.nan, DEC0).status == "no_coverage"


def test_partial_overlap(backend):
    # Image is 300 pix of 0.262" = 78.6" wide; the cutout is 33.5" wide.
    half_image = 150 * 0.262 / 3600
    # Position 10" inside the east edge: ~23% of the cutout off the image.
    ra = RA0 + (half_image - 10.0 / 3600) / np.cos(np.radians(DEC0))
    cube, header = cube_of(backend.download(ra, DEC0))
    assert np.isfinite(cube).all()
    off = cube[0][:, :40]  # east = left, beyond the image edge
    assert np.all(off == 0)
    assert 0.7 < header["COVER0"] < 0.85
    # Position 3" inside a corner: most of the cutout has no data.
    ra = RA0 + (half_image - 3.0 / 3600) / np.cos(np.radians(DEC0))
    dec = DEC0 + half_image - 3.0 / 3600
    with pytest.raises(NoCoverageError, match="no data"):
        backend.download(ra, dec)


def test_adjacent_tiles_fill_each_other(tmp_path):
    # Two tiles per band meeting at RA0; the cutout straddles the seam.
    off = 150 * 0.262 / 3600 / np.cos(np.radians(DEC0))
    images = {}
    for b in "grz":
        src = ((RA0, DEC0, DES_FLUXES[b]),)
        images[b] = [
            make_image(tmp_path / f"{b}_e.fits", crval=(RA0 + off, DEC0), sources=src),
            make_image(tmp_path / f"{b}_w.fits", crval=(RA0 - off, DEC0), sources=src),
        ]
    with get_backend("local", survey="des", images=images) as be:
        cube, header = cube_of(be.download(RA0 + 2 / 3600, DEC0))
    assert header["COVER0"] == pytest.approx(1.0)
    assert header["FILE0"] in ("g_e.fits,g_w.fits", "g_w.fits,g_e.fits")
    for i, band in enumerate("grz"):
        assert cube[i].sum() == pytest.approx(DES_FLUXES[band], rel=0.03)


def test_missing_band_and_bad_arguments(tmp_path):
    images = des_images(tmp_path)
    del images["r"]
    with pytest.raises(ValueError, match="'r'"):
        get_backend("local", survey="des", images=images)
    with pytest.raises(ValueError, match="needs images"):
        get_backend("local", survey="des")
    images["r"] = tmp_path / "nope.fits"
    with pytest.raises(FileNotFoundError):
        get_backend("local", survey="des", images=images)
    with pytest.raises(ValueError, match="formats"):
        get_backend("local", survey="des", image_format="jpeg", images=des_images(tmp_path))
    nowcs = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(np.zeros((10, 10), np.float32)).writeto(nowcs)
    images["r"] = nowcs
    with pytest.raises(ValueError, match="celestial WCS"):
        get_backend("local", survey="des", images=images)


def test_flux_units_from_header(tmp_path):
    # Same sky in three encodings: counts with a zero point of 30, nJy, and
    # counts with no unit information plus a zero point given by the user.
    factor = 10 ** (0.4 * (30 - 22.5))
    images = {
        "g": make_image(tmp_path / "g.fits", sources=((RA0, DEC0, 10.0 * factor),),
                        header={"MAGZERO": 30.0, "BUNIT": "ADU"}),
        "r": make_image(tmp_path / "r.fits", sources=((RA0, DEC0, 20.0 * 3631),),
                        header={"BUNIT": "nJy"}),
        "z": make_image(tmp_path / "z.fits", sources=((RA0, DEC0, 30.0 * factor),)),
    }
    with LocalFitsBackend("des", images=images, zero_points={"z": 30.0}) as be:
        cube, header = cube_of(be.download(RA0, DEC0))
    assert header["BUNIT"] == "nanomaggy"
    assert cube.sum(axis=(1, 2)) == pytest.approx([10.0, 20.0, 30.0], rel=0.02)
    # Counts without any zero point cannot be converted.
    images["z"] = make_image(tmp_path / "z2.fits", header={"BUNIT": "electron/s"})
    with pytest.raises(ValueError, match="zero point"):
        LocalFitsBackend("des", images=images)


def test_hsc_output_in_native_units(tmp_path):
    # HSC cubes are in the coadd unit (zero point 27): nanomaggies * 63.1.
    images = {b: make_image(tmp_path / f"{b}.fits", scale=0.168, n=400,
                            sources=((RA0, DEC0, 1.0),)) for b in "gri"}
    with get_backend("local", survey="hsc", images=images) as be:
        cube, header = cube_of(be.download(RA0, DEC0))
    divisor = get_survey("hsc").colour.flux_divisor
    assert header["BANDS"] == "gri"
    assert header["MAGZERO"] == pytest.approx(27.0, abs=0.01)
    assert cube.sum(axis=(1, 2)) == pytest.approx([divisor] * 3, rel=0.02)


def test_request_url_and_cache_salt(tmp_path):
    images = des_images(tmp_path)
    be = get_backend("local", survey="des", images=images)
    url = be.request_url(RA0, DEC0)
    assert url.startswith("file://") and url.endswith("g.fits#ra=150.000000,dec=2.000000")
    key = be.cache_key(RA0, DEC0)
    assert key.startswith("local-des-")
    assert str(images["g"].resolve()) in be.cache_salt()
    assert be.describe()["backend"] == "local"
    be.close()
    # Touching an image changes the key: cached cutouts are not reused.
    st = os.stat(images["r"])
    os.utime(images["r"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    be2 = get_backend("local", survey="des", images=images)
    assert be2.cache_key(RA0, DEC0) != key
    be2.close()


def test_threads_and_reopen(backend):
    first = backend.download(RA0, DEC0).data
    results = []

    def work():
        results.append(backend.download(RA0 + 1 / 3600, DEC0).data)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len(set(results)) == 1
    backend.close()
    # Files are reopened transparently after close().
    assert backend.download(RA0, DEC0).data == first
    outcomes = dict(backend.fetch([RA0, RA0 + 2.0], [DEC0, DEC0]))
    assert outcomes[0].status == "ok" and outcomes[1].status == "no_coverage"
    # A backend can be sent to another process (open files are not).
    clone = pickle.loads(pickle.dumps(backend))
    assert clone.download(RA0, DEC0).data == first
    clone.close()


def test_blank_pixels_and_extension_hdu(tmp_path):
    # Image in HDU 1 with its zero point in the primary header, and a blank
    # (NaN) strip covering the east part of the cutout.
    images = {}
    factor = 10 ** (0.4 * (27.0 - 22.5))
    for b in "grz":
        path = make_image(tmp_path / f"{b}.tmp.fits", sources=((RA0, DEC0, DES_FLUXES[b] * factor),))
        with fits.open(path) as hdul:
            data = hdul[0].data.copy()
            header = hdul[0].header.copy()
        data[:, :110] = np.nan  # x < 110 is east of the centre (x = 149.5)
        primary = fits.PrimaryHDU(header=fits.Header([("MAGZERO", 27.0)]))
        images[b] = tmp_path / f"{b}.fits"
        fits.HDUList([primary, fits.ImageHDU(data, header)]).writeto(images[b])
    with LocalFitsBackend("des", images=images) as be:
        cube, header = cube_of(be.download(RA0, DEC0))
    assert np.isfinite(cube).all()
    # Data start 40 image pixels (80 cutout pixels) east of the centre, so
    # cutout columns x >= 127.5 - 80 have data.
    assert header["COVER0"] == pytest.approx((256 - 47.5) / 256, abs=0.01)
    assert np.all(cube[:, :, :45] == 0)
    assert cube.sum(axis=(1, 2)) == pytest.approx([10.0, 20.0, 30.0], rel=0.02)
