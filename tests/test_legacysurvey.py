"""LegacySurveyBackend against the loopback viewer (and, with --remote-data, the real one)."""

import dataclasses
import io
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from lsbg_classify import status
from lsbg_classify.surveys import SURVEYS, FetchError, NoCoverageError, get_backend
from lsbg_classify.surveys.legacysurvey import (
    ENV_URL,
    LegacySurveyBackend,
    conf,
    normalise_fits_cube,
)
from lsbg_classify.testing.loopback import Fault, LoopbackViewer

RA, DEC = 150.0, 2.5


def query(url):
    split = urlsplit(url)
    return split.path, {k: v[0] for k, v in parse_qs(split.query).items()}


@pytest.fixture
def backend_for(viewer):
    made = []

    def make(survey="des", image_format=None, **options):
        options.setdefault("backoff", 0.005)
        backend = LegacySurveyBackend(survey, image_format, base_url=viewer.url, **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


# -- request description -------------------------------------------------------


@pytest.mark.parametrize(
    "survey, layer, pixscale", [("des", "des-dr1", "0.131"), ("hsc", "hsc2", "0.084")]
)
def test_request_url_jpeg(no_service_env, survey, layer, pixscale):
    url = LegacySurveyBackend(survey).request_url(RA, DEC)
    assert url == (
        f"https://www.legacysurvey.org/viewer/cutout.jpg?ra=150.000000&dec=2.500000"
        f"&layer={layer}&pixscale={pixscale}&size=256"
    )


@pytest.mark.parametrize("survey, bands", [("des", "grz"), ("hsc", "gri")])
def test_request_url_fits(no_service_env, survey, bands):
    path, params = query(LegacySurveyBackend(survey, "fits").request_url(12.3456789, -0.5))
    assert path == "/viewer/cutout.fits"
    assert params["bands"] == bands
    assert params["ra"] == "12.345679"
    assert params["dec"] == "-0.500000"
    assert params["size"] == "256"
    assert params["layer"] == SURVEYS[survey].legacysurvey_layer


def test_pixscale_is_half_native_zoom15(no_service_env):
    for survey in ("des", "hsc"):
        info = SURVEYS[survey]
        _, params = query(LegacySurveyBackend(survey).request_url(RA, DEC))
        # zoom=15 in the viewer: native * 2**(14 - 15).
        assert float(params["pixscale"]) == pytest.approx(info.native_pixel_scale.value / 2)


def test_unknown_format_rejected():
    with pytest.raises(ValueError):
        LegacySurveyBackend("des", "png")


def test_base_url_precedence(monkeypatch):
    monkeypatch.delenv(ENV_URL, raising=False)
    with conf.set_temp("server", "https://conf.example/viewer/"):
        assert LegacySurveyBackend().base_url == "https://conf.example/viewer"
        monkeypatch.setenv(ENV_URL, "https://env.example/viewer")
        assert LegacySurveyBackend().base_url == "https://env.example/viewer"
        backend = LegacySurveyBackend(base_url="https://arg.example/viewer")
        assert backend.base_url == "https://arg.example/viewer"
        assert backend.request_url(1, 2).startswith("https://arg.example/viewer/cutout.jpg?")


def test_timeout_from_conf(no_service_env):
    with conf.set_temp("timeout", 7.5):
        assert LegacySurveyBackend().http.timeout == 7.5
    assert LegacySurveyBackend(timeout=3).http.timeout == 3


def test_viewer_url(no_service_env):
    url = LegacySurveyBackend("hsc", base_url="http://127.0.0.1:1/viewer").viewer_url(RA, DEC)
    assert url == "https://www.legacysurvey.org/viewer?ra=150.000000&dec=2.500000&layer=hsc2&zoom=16"


def test_cache_key_ignores_mirror(no_service_env):
    a = LegacySurveyBackend(base_url="https://a.example/viewer")
    b = LegacySurveyBackend(base_url="https://b.example/viewer")
    assert a.cache_key(RA, DEC) == b.cache_key(RA, DEC)
    assert a.cache_key(RA, DEC) != LegacySurveyBackend("hsc").cache_key(RA, DEC)
    assert a.cache_key(RA, DEC) != LegacySurveyBackend(image_format="fits").cache_key(RA, DEC)


def test_entry_point(viewer):
    backend = get_backend("legacysurvey", survey="hsc", base_url=viewer.url)
    assert isinstance(backend, LegacySurveyBackend)
    assert backend.describe()["server"] == viewer.url


# -- downloads -----------------------------------------------------------------


def test_download_jpeg(viewer, backend_for):
    payload = backend_for("des").download(RA, DEC)
    assert payload.format == "jpeg"
    image = Image.open(io.BytesIO(payload.data))
    assert image.format == "JPEG" and image.size == (256, 256)
    info = viewer.log[-1]
    assert info.endpoint == "cutout.jpg"
    assert info.params["pixscale"] == "0.131"
    assert info.params["layer"] == "des-dr1"


@pytest.mark.parametrize("survey, bands", [("des", "grz"), ("hsc", "gri")])
def test_download_fits_cube_normalised(viewer, backend_for, survey, bands):
    payload = backend_for(survey, "fits").download(RA, DEC)
    assert payload.format == "fits"
    with fits.open(io.BytesIO(payload.data)) as hdul:
        assert len(hdul) == 1
        cube = hdul[0].data
        header = hdul[0].header
    assert cube.shape == (3, 256, 256)
    assert cube.dtype.kind == "f" and cube.dtype.itemsize == 4  # BITPIX -32
    assert header["BANDS"] == bands
    assert [header[f"BAND{i}"] for i in range(3)] == list(bands)
    assert header["LAYER"] == SURVEYS[survey].legacysurvey_layer
    assert viewer.log[-1].params["bands"] == bands


def test_fits_bands_reordered_to_bluest_first():
    rng = np.random.default_rng(0)
    g, r, z = (rng.normal(size=(8, 8)).astype(np.float32) + k for k in range(3))
    hdu = fits.PrimaryHDU(np.stack([z, g, r]))
    hdu.header["BANDS"] = "zgr"
    buf = io.BytesIO()
    hdu.writeto(buf)
    out = normalise_fits_cube(buf.getvalue(), ("g", "r", "z"), requested="grz", expected_size=8)
    cube = fits.getdata(io.BytesIO(out))
    np.testing.assert_array_equal(cube, np.stack([g, r, z]))


def test_fits_missing_band_is_fetch_error():
    buf = io.BytesIO()
    hdu = fits.PrimaryHDU(np.ones((2, 4, 4), np.float32))
    hdu.header["BANDS"] = "gr"
    hdu.writeto(buf)
    with pytest.raises(FetchError, match="lacks band"):
        normalise_fits_cube(buf.getvalue(), ("g", "r", "z"))


def test_unknown_layer_text_answer(viewer, backend_for):
    survey = dataclasses.replace(SURVEYS["des"], legacysurvey_layer="no-such-layer")
    backend = backend_for(survey)
    with pytest.raises(FetchError, match="no such layer"):
        backend.download(RA, DEC)
    assert viewer.total_requests == 1  # a deterministic answer: no retries


@pytest.mark.parametrize("image_format", ["jpeg", "fits"])
def test_scripted_no_layer_and_html_are_fetch_errors(viewer, backend_for, image_format):
    backend = backend_for("des", image_format)
    viewer.add_faults("no_layer")
    with pytest.raises(FetchError, match="no such layer"):
        backend.download(RA, DEC)
    viewer.add_faults("html")
    with pytest.raises(FetchError, match="text/html"):
        backend.download(RA, DEC)
    assert viewer.total_requests == 2


def test_blank_jpeg_is_no_coverage(viewer, backend_for):
    backend = backend_for("des")
    with pytest.raises(NoCoverageError, match="footprint"):
        backend.download(RA, 85.0)
    outcome = backend.fetch_one(RA, 85.0)
    assert outcome.status == status.NO_COVERAGE
    assert outcome.payload is None
    assert viewer.total_requests == 2  # no retries for a blank image


def test_fits_outside_footprint_is_fetch_error(viewer, backend_for):
    # The viewer answers HTTP 500 there; that cannot be told from a crash.
    backend = backend_for("des", "fits", max_retries=1)
    outcome = backend.fetch_one(RA, 85.0)
    assert outcome.status == status.FETCH_FAILED
    assert "HTTP 500" in outcome.message


def test_all_zero_fits_is_no_coverage(renderers):
    def zeros(ra, dec, survey, seed=0, label=None, size=None, pixel_scale=None):
        buf = io.BytesIO()
        fits.PrimaryHDU(np.zeros((3, size or 256, size or 256), np.float32)).writeto(buf)
        return buf.getvalue()

    options = dict(renderers)
    options["render_fits"] = zeros
    with LoopbackViewer(**options) as server:
        backend = LegacySurveyBackend("des", "fits", base_url=server.url)
        with pytest.raises(NoCoverageError):
            backend.download(RA, DEC)
        backend.close()


def test_all_nan_fits_is_no_coverage():
    buf = io.BytesIO()
    fits.PrimaryHDU(np.full((3, 4, 4), np.nan, np.float32)).writeto(buf)
    with pytest.raises(NoCoverageError):
        normalise_fits_cube(buf.getvalue(), ("g", "r", "z"))


@pytest.mark.parametrize("image_format", ["jpeg", "fits"])
def test_transient_faults_recovered(viewer, backend_for, image_format):
    viewer.add_faults(500, 502, (429, 0.01), "reset")
    payload = backend_for("des", image_format).download(RA, DEC)
    assert payload.format == image_format
    assert viewer.total_requests == 5


@pytest.mark.parametrize("image_format", ["jpeg", "fits"])
def test_truncated_payload_retried(viewer, backend_for, image_format):
    viewer.add_faults("truncate")
    backend_for("des", image_format).download(RA, DEC)
    assert viewer.total_requests == 2


def test_truncated_payload_every_time_fails(viewer, backend_for):
    viewer.set_faults(lambda info: "truncate")
    with pytest.raises(FetchError, match="damaged"):
        backend_for("des", max_retries=1).download(RA, DEC)


@pytest.mark.parametrize("image_format", ["jpeg", "fits"])
def test_wrong_size_is_fetch_error(viewer, backend_for, image_format):
    viewer.add_faults(Fault(action="wrong_size", size=100))
    with pytest.raises(FetchError, match="expected 256x256"):
        backend_for("des", image_format).download(RA, DEC)


def test_not_found_not_retried(viewer, backend_for):
    viewer.add_faults(404)
    outcome = backend_for("des").fetch_one(RA, DEC)
    assert outcome.status == status.FETCH_FAILED
    assert "404" in outcome.message
    assert viewer.total_requests == 1


def test_legacy_endpoints_answer(viewer):
    import requests

    params = {"ra": RA, "dec": DEC, "layer": "des-dr1", "pixscale": 0.131, "size": 64}
    jpeg = requests.get(viewer.url + "/jpeg-cutout/", params=params, timeout=10)
    assert jpeg.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).size == (64, 64)
    cube = requests.get(viewer.url + "/fits-cutout", params=dict(params, size=2000), timeout=10)
    # size is clipped at 512 like the real viewer
    assert fits.getdata(io.BytesIO(cube.content)).shape == (3, 512, 512)
    assert viewer.counts["jpeg-cutout"] == 1 and viewer.counts["fits-cutout"] == 1


def test_concurrent_fetch_returns_every_index_once(viewer, backend_for):
    backend = backend_for("des", workers_hint=8)
    ra = [10.0 + 0.01 * i for i in range(40)]
    dec = [85.0 if i % 10 == 3 else -5.0 + 0.01 * i for i in range(40)]
    viewer.add_faults(503, 503, "reset")
    results = dict()
    for index, outcome in backend.fetch(ra, dec, workers=8):
        assert index not in results
        results[index] = outcome
    assert sorted(results) == list(range(40))
    for i, outcome in results.items():
        expected = status.NO_COVERAGE if i % 10 == 3 else status.OK
        assert outcome.status == expected, (i, outcome.message)
    assert viewer.total_requests == 43
    # Keep-alive pool: far fewer connections than requests.
    assert len({info.client for info in viewer.log}) <= 10
