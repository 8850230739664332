"""HipsBackend: astroquery-built hips2fits requests against the loopback service."""

import dataclasses
import io
from urllib.parse import parse_qs, urlsplit

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import Angle, Latitude, Longitude
from astropy.io import fits

from lsbg_classify import status
from lsbg_classify.surveys import SURVEYS, FetchError, NoCoverageError, get_backend
from lsbg_classify.surveys.hips import ENV_URL, HipsBackend

RA, DEC = 150.0, 2.5


def query(url):
    split = urlsplit(url)
    return split.scheme + "://" + split.netloc + split.path, {
        k: v[0] for k, v in parse_qs(split.query).items()
    }


@pytest.fixture
def backend_for(hips_server):
    made = []

    def make(survey="des", **options):
        options.setdefault("backoff", 0.005)
        backend = HipsBackend(survey, base_url=hips_server.url, **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.mark.parametrize("survey", ["des", "hsc"])
def test_request_url_parameters(no_service_env, survey):
    from astroquery.hips2fits import conf as aq_conf

    info = SURVEYS[survey]
    base, params = query(HipsBackend(survey).request_url(RA, DEC))
    assert base == aq_conf.server
    assert params["hips"] == info.hips_ids[info.bands[0]]
    assert params["width"] == params["height"] == "256"
    assert params["projection"] == "TAN"
    assert params["format"] == "fits"
    assert float(params["ra"]) == RA and float(params["dec"]) == DEC
    # fov along the larger side: 256 pixels at the paper's scale.
    expected_fov = (256 * info.pixel_scale * u.pix).to_value(u.deg)
    assert float(params["fov"]) == pytest.approx(expected_fov, rel=1e-12)
    assert float(params["fov"]) * 3600 / 256 == pytest.approx(
        {"des": 0.131, "hsc": 0.084}[survey]
    )


def test_hips_ids_and_layer():
    assert HipsBackend("des").hips_ids == ("CDS/P/DES-DR2/g", "CDS/P/DES-DR2/r", "CDS/P/DES-DR2/z")
    assert HipsBackend("hsc").layer == (
        "CDS/P/HSC/DR2/wide/g,CDS/P/HSC/DR2/wide/r,CDS/P/HSC/DR2/wide/i"
    )
    with pytest.raises(ValueError):
        HipsBackend("des", "jpeg")


def test_base_url_precedence(monkeypatch):
    from astroquery.hips2fits import conf as aq_conf

    monkeypatch.delenv(ENV_URL, raising=False)
    # astroquery only accepts its listed servers: use the CDS mirror.
    mirror = "https://alaskybis.cds.unistra.fr/hips-image-services/hips2fits"
    with aq_conf.set_temp("server", mirror):
        assert HipsBackend().base_url == mirror
        monkeypatch.setenv(ENV_URL, "https://env.example/hips2fits")
        assert HipsBackend().base_url == "https://env.example/hips2fits"
        assert HipsBackend(base_url="https://arg.example/h2f").base_url == "https://arg.example/h2f"


def test_cache_key_differs_from_viewer():
    from lsbg_classify.surveys.legacysurvey import LegacySurveyBackend

    assert HipsBackend().cache_key(RA, DEC) != LegacySurveyBackend(image_format="fits").cache_key(
        RA, DEC
    )


@pytest.mark.parametrize("survey", ["des", "hsc"])
def test_download_three_band_cube(hips_server, backend_for, renderers, survey):
    info = SURVEYS[survey]
    payload = backend_for(survey).download(RA, DEC)
    assert payload.format == "fits"
    with fits.open(io.BytesIO(payload.data)) as hdul:
        assert len(hdul) == 1
        cube = hdul[0].data
        header = hdul[0].header
    assert cube.shape == (3, 256, 256)
    assert header["BANDS"] == "".join(info.bands)
    assert header["CTYPE1"] == "RA---TAN"
    assert hips_server.counts["hips2fits"] == 3
    assert [i.params["hips"] for i in hips_server.log] == [info.hips_ids[b] for b in info.bands]
    # Each plane is the simulator's band image: bands are not mixed up.
    render_fits = renderers.get("render_fits")
    if render_fits is None:
        from lsbg_classify.simulation.render import render_fits
    truth = fits.getdata(io.BytesIO(render_fits(RA, DEC, survey, size=256, pixel_scale=info.pixel_scale.value)))
    np.testing.assert_allclose(cube, truth, rtol=1e-5, atol=1e-6)


def test_astroquery_client_talks_to_loopback(hips_server):
    # The unmodified astroquery client, sending by itself, understands the
    # loopback service: it speaks the real GET API.
    from astroquery.hips2fits import hips2fitsClass

    client = hips2fitsClass()
    client.server = hips_server.url
    hdul = client.query(
        hips="CDS/P/DES-DR2/r",
        width=64,
        height=48,
        projection="TAN",
        ra=Longitude(RA * u.deg),
        dec=Latitude(DEC * u.deg),
        fov=Angle(64 * 0.131 * u.arcsec),
    )
    assert hdul[0].data.shape == (48, 64)
    with pytest.raises(AttributeError, match="not found"):
        client.query(
            hips="CDS/P/NOPE",
            width=8,
            height=8,
            projection="TAN",
            ra=Longitude(RA * u.deg),
            dec=Latitude(DEC * u.deg),
            fov=Angle(1 * u.arcmin),
        )


def test_outside_footprint_is_no_coverage(hips_server, backend_for):
    backend = backend_for()
    with pytest.raises(NoCoverageError, match="CDS/P/DES-DR2/g"):
        backend.download(RA, 85.0)
    assert hips_server.total_requests == 1  # stops at the first empty band


def test_retries_then_success(hips_server, backend_for):
    hips_server.add_faults(503, (429, 0.01), "reset", "truncate")
    backend_for().download(RA, DEC)
    assert hips_server.total_requests == 3 + 4


def test_bad_hips_id_is_fetch_error_without_retry(hips_server, backend_for):
    survey = dataclasses.replace(
        SURVEYS["des"], hips_ids={"g": "CDS/P/NOPE/g", "r": "CDS/P/NOPE/r", "z": "CDS/P/NOPE/z"}
    )
    outcome = backend_for(survey).fetch_one(RA, DEC)
    assert outcome.status == status.FETCH_FAILED
    assert "HTTP 400" in outcome.message and "not found" in outcome.message
    assert hips_server.total_requests == 1


def test_html_answer_is_fetch_error(hips_server, backend_for):
    hips_server.add_faults("html")
    with pytest.raises(FetchError, match="text/html"):
        backend_for().download(RA, DEC)


def test_invalid_position_is_fetch_error(backend_for):
    with pytest.raises(FetchError, match="invalid position"):
        backend_for().download(RA, 95.0)


def test_concurrent_fetch(hips_server, backend_for):
    backend = get_backend("hips", survey="des", base_url=hips_server.url, backoff=0.005)
    ra = [20.0 + 0.01 * i for i in range(16)]
    dec = [85.0 if i in (2, 9) else 1.0 for i in range(16)]
    seen = {}
    for index, outcome in backend.fetch(ra, dec, workers=8):
        assert index not in seen
        seen[index] = outcome.status
    backend.close()
    assert sorted(seen) == list(range(16))
    assert [seen[i] for i in range(16)] == [
        status.NO_COVERAGE if i in (2, 9) else status.OK for i in range(16)
    ]
