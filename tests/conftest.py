"""Shared fixtures: loopback services and the ``--remote-data`` switch.

Tests never reach the internet unless run with ``--remote-data``; those
that need the real services carry ``@pytest.mark.remote_data`` and live in
``tests/*_remote.py``.  Everything else talks HTTP to loopback servers on
127.0.0.1.
"""

import io

import numpy as np
import pytest


def pytest_addoption(parser):
    try:
        parser.addoption(
            "--remote-data",
            action="store_true",
            default=False,
            help="run tests marked 'remote_data' (they contact the real survey services)",
        )
    except ValueError:
        # pytest-remotedata (astropy's plugin) already defines the option.
        pass


def _remote_enabled(config):
    value = config.getoption("--remote-data", default=False)
    # pytest-remotedata's option takes "none" / "astropy" / "any".
    return value not in (False, None, "none")


def pytest_collection_modifyitems(config, items):
    if _remote_enabled(config):
        return
    skip = pytest.mark.skip(reason="contacts the real services; run with --remote-data")
    for item in items:
        if "remote_data" in item.keywords:
            item.add_marker(skip)


# -- renderers ---------------------------------------------------------------


def _fake_cube(ra, dec, survey, seed=0, size=None, pixel_scale=None):
    """Small deterministic stand-in for the simulator: noise plus a blob."""
    size = 256 if size is None else int(size)
    rng = np.random.default_rng([seed, int(abs(ra) * 1e6) % 2**31, int(abs(dec) * 1e6) % 2**31])
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    blob = np.exp(-(x**2 + y**2) / (2 * (size / 8) ** 2))
    scale = 63.1 if survey == "hsc" else 1.0
    cube = np.stack(
        [scale * (0.02 * rng.standard_normal((size, size)) + (k + 1) * 0.3 * blob) for k in range(3)]
    ).astype(np.float32)
    return cube


def fake_render_fits(ra, dec, survey, seed=0, label=None, size=None, pixel_scale=None):
    from astropy.io import fits

    buf = io.BytesIO()
    fits.PrimaryHDU(_fake_cube(ra, dec, survey, seed, size, pixel_scale)).writeto(buf)
    return buf.getvalue()


def fake_render_jpeg(ra, dec, survey, seed=0, label=None, size=None, pixel_scale=None):
    from PIL import Image

    from lsbg_classify.colour import DES_MAPPING, HSC_MAPPING, asinh_rgb

    mapping = HSC_MAPPING if survey == "hsc" else DES_MAPPING
    cube = _fake_cube(ra, dec, survey, seed, size, pixel_scale)
    rgb = np.round(asinh_rgb(cube[::-1], mapping) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="session")
def renderers():
    """Renderer overrides for the loopback servers.

    Empty (use :mod:`lsbg_classify.simulation`) when the simulator is
    importable, else a tiny fake with the same signature.
    """
    try:
        from lsbg_classify.simulation.render import render_fits, render_jpeg  # noqa: F401
    except ImportError:
        return {"render_jpeg": fake_render_jpeg, "render_fits": fake_render_fits}
    return {}


# -- loopback servers ----------------------------------------------------------


@pytest.fixture(scope="session")
def _viewer_server(renderers):
    from lsbg_classify.testing.loopback import LoopbackViewer

    server = LoopbackViewer(**renderers)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _hips_server(renderers):
    from lsbg_classify.testing.loopback import LoopbackHips2fits

    server = LoopbackHips2fits(**renderers)
    yield server
    server.stop()


def _fresh(server):
    # One server per session keeps the render cache warm; each test gets
    # it back with no faults, no latency and zeroed counters.
    server.clear_faults()
    server.latency = 0.0
    server.concurrency_limit = None
    server.reset_counts()
    return server


@pytest.fixture
def viewer(_viewer_server):
    """A running :class:`~lsbg_classify.testing.loopback.LoopbackViewer` (reset per test)."""
    yield _fresh(_viewer_server)
    _fresh(_viewer_server)


@pytest.fixture
def hips_server(_hips_server):
    """A running :class:`~lsbg_classify.testing.loopback.LoopbackHips2fits` (reset per test)."""
    yield _fresh(_hips_server)
    _fresh(_hips_server)


@pytest.fixture
def no_service_env(monkeypatch):
    """Remove the server-URL environment variables for the test."""
    monkeypatch.delenv("LSBG_CLASSIFY_LEGACYSURVEY_URL", raising=False)
    monkeypatch.delenv("LSBG_CLASSIFY_HIPS2FITS_URL", raising=False)


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """Initial (untrained) DeepShadows weights: the plumbing is under test, not the model."""
    from lsbg_classify.pipeline.model import build_deepshadows

    path = tmp_path_factory.mktemp("weights") / "untrained.weights.h5"
    build_deepshadows().save_weights(path)
    return str(path)
