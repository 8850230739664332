"""The pipeline survives a misbehaving image service (issue 5, item 4).

Every test sends real HTTP requests, through the package's own client
(:mod:`lsbg_classify.surveys.http`) and the ``legacysurvey`` backend, to a
:class:`~lsbg_classify.testing.loopback.LoopbackViewer` whose fault hook makes
chosen rows misbehave, and runs the whole of :func:`classify_catalog`
(cache, preprocessing, an untrained DeepShadows network).  Each checks that

- the run finishes and every row gets the right status;
- retries are bounded: the server saw exactly the requests the retry policy
  allows;
- the cache holds an entry for exactly the rows that got ``ok`` or
  ``no_coverage``, and every entry reads back (``CutoutCache.get``) without a
  :class:`~lsbg_classify.pipeline.cache.CacheCorruptionWarning` and, for images, decodes
  to a whole cutout.

The loopback renders its images with a small fast stand-in for the simulator
(noise and a blob): how long rendering takes is not what is tested here, and
a slow first render could trip the short client timeout.
"""

import collections
import errno
import gc
import io
import logging
import os
import socket
import threading
import time
import warnings

import numpy as np
import pytest
from astropy.table import Table
from PIL import Image

from lsbg_classify import classify_catalog, status
from lsbg_classify.limits import MAX_PAYLOAD_BYTES
from lsbg_classify.pipeline.cache import (
    CacheCorruptionWarning,
    CacheUnavailableWarning,
    CutoutCache,
)
from lsbg_classify.pipeline.model import load_model
from lsbg_classify.surveys import FetchOutcome, Payload
from lsbg_classify.surveys.http import HttpClient
from lsbg_classify.surveys.legacysurvey import LegacySurveyBackend
from lsbg_classify.surveys.payload import decode_rgb, is_blank
from lsbg_classify.testing.loopback import Fault, LoopbackViewer

#: Client settings: short enough to keep the file fast.  TIMEOUT is used
#: where answers are slow on purpose; elsewhere RELAXED, which costs nothing
#: (healthy answers take milliseconds) and keeps a busy machine's scheduling
#: hiccups from timing out a healthy request and upsetting the exact counts.
BACKOFF = 0.01
TIMEOUT = 0.5
RELAXED = 5.0
#: Requests the default policy sends for one cutout before giving up.
MAX_ATTEMPTS = HttpClient().max_retries + 1
#: A reply this slow always trips TIMEOUT.
SLOW = 2.0

RA = [10.0, 20.0, 30.0, 40.0]
DEC = [-45.0, -46.0, -47.0, -48.0]
#: The row that misbehaves in most tests.
BAD = 1
SIZE = 256


# -- fixtures and helpers -------------------------------------------------------------


def _render_jpeg(ra, dec, survey, seed=0, label=None, size=None, pixel_scale=None):
    """A fast, deterministic, never-blank stand-in for the simulated sky."""
    size = SIZE if size is None else int(size)
    rng = np.random.default_rng([seed, round(ra * 1e6) % 2**32, round((dec + 90) * 1e6) % 2**32])
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    blob = 120.0 * np.exp(-(x**2 + y**2) / (2 * (size / 8) ** 2))
    rgb = np.clip(40.0 + blob[..., None] + rng.normal(0, 8, (size, size, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _render_fits(ra, dec, survey, seed=0, label=None, size=None, pixel_scale=None):
    from astropy.io import fits

    size = SIZE if size is None else int(size)
    buf = io.BytesIO()
    fits.PrimaryHDU(np.ones((3, size, size), np.float32)).writeto(buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def model(weights):
    """The weights file loaded once (loading it for every run would double the file's time)."""
    return load_model(weights)


@pytest.fixture(scope="module", autouse=True)
def _no_long_gc_pauses(model):
    """Keep TensorFlow's objects out of the garbage collector's full passes.

    With TensorFlow and Keras loaded, a full (generation 2) collection walks
    hundreds of thousands of objects and stops every thread, the loopback
    server's included, for about 0.3 s on a busy machine: close to TIMEOUT, so
    a healthy request could time out and be counted twice.  Freezing what
    exists once the model is loaded makes those passes short.
    """
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="module")
def _server():
    server = LoopbackViewer(render_jpeg=_render_jpeg, render_fits=_render_fits)
    yield server
    server.stop()


@pytest.fixture
def server(_server):
    """The module's loopback viewer with no faults and zeroed counters."""
    _server.clear_faults()
    _server.reset_counts()
    yield _server
    _server.clear_faults()


class RowFaults:
    """Fault hook of a loopback server: faults for chosen rows, keyed on RA.

    ``script`` maps an RA to the faults its first requests get, one per
    request (later requests are served normally); ``always`` maps an RA to
    the fault every request for it gets.  Other rows are served normally.
    The server asks from several handler threads at once, hence the lock.
    """

    def __init__(self, script=None, always=None):
        self._lock = threading.Lock()
        self._script = {round(ra, 6): collections.deque(f) for ra, f in (script or {}).items()}
        self._always = {round(ra, 6): f for ra, f in (always or {}).items()}

    def __call__(self, info):
        ra = round(float(info.params["ra"]), 6)
        with self._lock:
            if ra in self._always:
                return self._always[ra]
            queue = self._script.get(ra)
            return queue.popleft() if queue else None


def _catalog(ra=RA, dec=DEC):
    return Table({"id": np.arange(len(ra)), "ra": ra, "dec": dec})


def _classify(table, server, model, cache, *, timeout=RELAXED, workers=4, **options):
    return classify_catalog(
        table, survey="des", backend="legacysurvey",
        backend_options={"base_url": server.url, "backoff": BACKOFF, "timeout": timeout},
        model=model, cache=cache, workers=workers, progress=False, **options,
    )


def _requests(server, ra):
    """Cutout requests the server received for one RA."""
    return sum(1 for r in server.log
               if r.endpoint == "cutout.jpg" and round(float(r.params["ra"]), 6) == round(ra, 6))


def _arrivals(server, ra):
    return [r.time for r in server.log
            if r.endpoint == "cutout.jpg" and round(float(r.params["ra"]), 6) == round(ra, 6)]


def _check_scored(scored, table, expected):
    """Same rows in the same order, the expected statuses, probabilities where ok."""
    assert len(scored) == len(table)
    assert list(scored["id"]) == list(table["id"])
    statuses = [str(s) for s in scored["lsbg_status"]]
    assert set(statuses) <= set(status.ALL_STATUSES)
    assert statuses == expected
    ok = np.array(statuses) == status.OK
    prob = scored["lsbg_prob"]
    assert np.array_equal(np.asarray(prob.mask), ~ok)
    assert np.all((prob.data[ok] >= 0) & (prob.data[ok] <= 1))


def _check_cache(directory, table, scored, base_url):
    """Entries exactly for ok / no_coverage rows; every entry whole; no temp files."""
    cache = CutoutCache(directory)
    keys = set(cache.keys())
    with LegacySurveyBackend("des", base_url=base_url) as backend:
        row_keys = [backend.cache_key(r, d) for r, d in zip(table["ra"], table["dec"])]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheCorruptionWarning)
        for key in keys:
            outcome = cache.get(key)
            assert outcome is not None, key
            assert outcome.status in (status.OK, status.NO_COVERAGE)
            if outcome.status == status.OK:
                image = decode_rgb(outcome.payload.data)  # raises if truncated
                assert image.shape == (SIZE, SIZE, 3) and not is_blank(image)
    for key, row_status in zip(row_keys, scored["lsbg_status"]):
        if row_status in (status.OK, status.NO_COVERAGE):
            assert key in keys
            assert cache.get(key).status == row_status
        else:
            assert key not in keys, f"a {row_status} row was cached"
    assert keys <= set(row_keys)
    leftovers = [p.name for p in directory.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers


# -- transient faults: retried, then ok ---------------------------------------------------

TRANSIENT = {
    "http500": 500,
    "http502": 502,
    "http503": 503,
    "http429": Fault(status=429, retry_after=0.05),
    "slower_than_timeout": Fault(delay=SLOW),
    "reset_mid_body": "reset",
    "truncated_jpeg": "truncate",
}


@pytest.mark.parametrize("fault", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient_fault_is_retried_then_ok(fault, server, model, tmp_path):
    table = _catalog()
    server.set_faults(RowFaults(script={RA[BAD]: [fault, fault]}))
    slow = isinstance(fault, Fault) and fault.delay > 0
    scored = _classify(table, server, model, tmp_path, timeout=TIMEOUT if slow else RELAXED)
    _check_scored(scored, table, [status.OK] * 4)
    # Two failed attempts and the good third one; one request for the others.
    assert [_requests(server, ra) for ra in RA] == [1, 3, 1, 1]
    _check_cache(tmp_path, table, scored, server.url)


# -- persistent faults: bounded attempts, then fetch_failed -------------------------------

PERSISTENT = {k: v for k, v in TRANSIENT.items() if k not in ("http429", "slower_than_timeout")}


@pytest.mark.parametrize("fault", PERSISTENT.values(), ids=PERSISTENT.keys())
def test_persistent_fault_gives_fetch_failed_after_bounded_attempts(fault, server, model, tmp_path):
    table = _catalog()
    server.set_faults(RowFaults(always={RA[BAD]: fault}))
    scored = _classify(table, server, model, tmp_path)
    _check_scored(scored, table, [status.OK, status.FETCH_FAILED, status.OK, status.OK])
    assert [_requests(server, ra) for ra in RA] == [1, MAX_ATTEMPTS, 1, 1]
    _check_cache(tmp_path, table, scored, server.url)
    # The failure is not remembered: once the server recovers, a rerun asks
    # again for that row only, and gets it.
    server.clear_faults()
    server.reset_counts()
    again = _classify(table, server, model, tmp_path)
    _check_scored(again, table, [status.OK] * 4)
    assert server.total_requests == 1 and _requests(server, RA[BAD]) == 1
    _check_cache(tmp_path, table, again, server.url)


# -- rate limiting --------------------------------------------------------------------------


def test_429_retry_after_is_waited_for_then_ok(server, model, tmp_path):
    table = _catalog()
    wait = 0.5  # far longer than any backoff (BACKOFF = 0.01): only Retry-After explains it
    server.set_faults(RowFaults(script={RA[BAD]: [Fault(status=429, retry_after=wait)]}))
    scored = _classify(table, server, model, tmp_path)
    _check_scored(scored, table, [status.OK] * 4)
    assert [_requests(server, ra) for ra in RA] == [1, 2, 1, 1]
    first, second = _arrivals(server, RA[BAD])
    assert second - first >= wait - 0.02
    _check_cache(tmp_path, table, scored, server.url)


def test_persistent_429_gives_fetch_failed_after_bounded_waits(server, model, tmp_path):
    table = _catalog()
    server.set_faults(RowFaults(always={RA[BAD]: Fault(status=429, retry_after=0.1)}))
    scored = _classify(table, server, model, tmp_path)
    _check_scored(scored, table, [status.OK, status.FETCH_FAILED, status.OK, status.OK])
    assert [_requests(server, ra) for ra in RA] == [1, MAX_ATTEMPTS, 1, 1]
    assert min(np.diff(_arrivals(server, RA[BAD]))) >= 0.1 - 0.02  # each wait honoured
    _check_cache(tmp_path, table, scored, server.url)


def test_an_hour_long_retry_after_does_not_park_the_run(server, model, tmp_path):
    # The client caps Retry-After (max_retry_after, default 60 s); here the
    # cap is made small so the test is quick, and the server asks for an hour.
    table = _catalog()
    server.set_faults(RowFaults(always={RA[BAD]: Fault(status=503, retry_after=3600)}))
    http = HttpClient(timeout=RELAXED, backoff=BACKOFF, max_retries=2, max_retry_after=0.1)
    backend = LegacySurveyBackend("des", base_url=server.url, http=http)
    start = time.monotonic()
    with backend:
        scored = classify_catalog(table, backend=backend, model=model, cache=tmp_path,
                                  progress=False)
    assert time.monotonic() - start < 30
    _check_scored(scored, table, [status.OK, status.FETCH_FAILED, status.OK, status.OK])
    assert _requests(server, RA[BAD]) == 3
    times = _arrivals(server, RA[BAD])
    assert 0.08 <= min(np.diff(times)) and max(np.diff(times)) < 5
    _check_cache(tmp_path, table, scored, server.url)


# -- slow answers -----------------------------------------------------------------------------


def test_persistently_slow_answers_give_fetch_failed_in_bounded_time(server, model, tmp_path):
    table = _catalog()
    server.set_faults(RowFaults(always={RA[BAD]: Fault(delay=SLOW)}))
    start = time.monotonic()
    scored = _classify(table, server, model, tmp_path, timeout=TIMEOUT)
    elapsed = time.monotonic() - start
    _check_scored(scored, table, [status.OK, status.FETCH_FAILED, status.OK, status.OK])
    assert [_requests(server, ra) for ra in RA] == [1, MAX_ATTEMPTS, 1, 1]
    # Each attempt is abandoned after TIMEOUT (plus a backoff) instead of
    # waiting SLOW for the answer, which would take at least
    # (MAX_ATTEMPTS - 1) * SLOW between the first and the last attempt.
    times = _arrivals(server, RA[BAD])
    assert times[-1] - times[0] < (MAX_ATTEMPTS - 1) * SLOW / 2
    assert elapsed < MAX_ATTEMPTS * SLOW
    _check_cache(tmp_path, table, scored, server.url)


def test_unreachable_service_gives_fetch_failed_everywhere(model, tmp_path):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    table = _catalog()
    start = time.monotonic()
    scored = classify_catalog(
        table, backend="legacysurvey", model=model, cache=tmp_path, progress=False,
        backend_options={"base_url": f"http://127.0.0.1:{port}/viewer", "backoff": BACKOFF,
                         "timeout": TIMEOUT})
    assert time.monotonic() - start < 30
    _check_scored(scored, table, [status.FETCH_FAILED] * 4)
    _check_cache(tmp_path, table, scored, f"http://127.0.0.1:{port}/viewer")
    assert CutoutCache(tmp_path).keys() == []


# -- answers that are not a cutout --------------------------------------------------------------


@pytest.mark.parametrize("fault", ["html", "no_layer"])
def test_text_page_with_status_200_gives_fetch_failed(fault, server, model, tmp_path):
    table = _catalog()
    server.set_faults(RowFaults(always={RA[BAD]: fault}))
    scored = _classify(table, server, model, tmp_path)
    _check_scored(scored, table, [status.OK, status.FETCH_FAILED, status.OK, status.OK])
    # A well-formed answer that is not an image is final: no retries in this
    # run, nothing cached, asked again on the next run.
    assert [_requests(server, ra) for ra in RA] == [1, 1, 1, 1]
    _check_cache(tmp_path, table, scored, server.url)


def _jpeg_claiming_size(side):
    """A valid JPEG whose header declares side x side pixels (the data stays 256 x 256)."""
    data = bytearray(_render_jpeg(1.0, 1.0, "des"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = side.to_bytes(2, "big") * 2
    return bytes(data)


WRONG_SIZE = {
    "half_size": Fault(action="wrong_size"),
    "tiny": Fault(action="wrong_size", size=8),
    "larger": Fault(action="wrong_size", size=300),
    # Pillow refuses to open this (DecompressionBombError, not an OSError);
    # before the fix in LegacySurveyBackend._check_jpeg the error escaped
    # download() and ended the whole run.
    "header_claims_60000px": Fault(status=200, body=_jpeg_claiming_size(60000),
                                   content_type="image/jpeg"),
    "header_claims_12000px": Fault(status=200, body=_jpeg_claiming_size(12000),
                                   content_type="image/jpeg"),
}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("fault", WRONG_SIZE.values(), ids=WRONG_SIZE.keys())
def test_image_of_the_wrong_size_gives_fetch_failed(fault, server, model, tmp_path):
    table = _catalog()
    server.set_faults(RowFaults(always={RA[BAD]: fault}))
    scored = _classify(table, server, model, tmp_path)
    _check_scored(scored, table, [status.OK, status.FETCH_FAILED, status.OK, status.OK])
    assert [_requests(server, ra) for ra in RA] == [1, 1, 1, 1]
    _check_cache(tmp_path, table, scored, server.url)


# -- outside the footprint --------------------------------------------------------------------


def test_blank_cutout_is_no_coverage_and_remembered(server, model, tmp_path):
    # Row 1: the server's "blank" fault; row 3: north of the loopback's
    # footprint (dec > 80), where it sends its constant image by itself.
    table = _catalog(dec=[-45.0, -46.0, -47.0, 85.0])
    server.set_faults(RowFaults(always={RA[BAD]: "blank"}))
    scored = _classify(table, server, model, tmp_path)
    expected = [status.OK, status.NO_COVERAGE, status.OK, status.NO_COVERAGE]
    _check_scored(scored, table, expected)
    assert [_requests(server, ra) for ra in RA] == [1, 1, 1, 1]  # a blank answer is final
    _check_cache(tmp_path, table, scored, server.url)
    assert CutoutCache(tmp_path).info()["no_coverage"] == 2
    # Rerun: everything, the "no coverage" answers included, comes from the cache.
    server.clear_faults()
    server.reset_counts()
    again = _classify(table, server, model, tmp_path)
    _check_scored(again, table, expected)
    assert server.total_requests == 0


# -- a cache file damaged on disk ----------------------------------------------------------------


def _flip(offset):
    def damage(path):
        data = bytearray(path.read_bytes())
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
    return damage


DAMAGE = {
    "payload_byte_flipped": _flip(-100),
    "header_byte_flipped": _flip(30),
    "magic_flipped": _flip(0),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "empty": lambda path: path.write_bytes(b""),
    "garbage": lambda path: path.write_bytes(b"\x00" * 64),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_cache_file_is_detected_and_refetched(damage, server, model, tmp_path):
    table = _catalog()
    first = _classify(table, server, model, tmp_path)
    _check_scored(first, table, [status.OK] * 4)
    assert server.total_requests == 4
    with LegacySurveyBackend("des", base_url=server.url) as backend:
        key = backend.cache_key(RA[BAD], DEC[BAD])
    path = CutoutCache(tmp_path).path(key)
    # Without its model input memo the entry itself is read (with one, a
    # payload is not read again: test_a_damaged_payload_behind_a_memo).
    CutoutCache(tmp_path).input_path(key).unlink()
    damage(path)
    server.reset_counts()
    with pytest.warns(CacheCorruptionWarning, match="damaged cache entry"):
        again = _classify(table, server, model, tmp_path)
    _check_scored(again, table, [status.OK] * 4)
    assert server.total_requests == 1 and _requests(server, RA[BAD]) == 1
    np.testing.assert_allclose(again["lsbg_prob"], first["lsbg_prob"], atol=1e-6)
    _check_cache(tmp_path, table, again, server.url)  # the entry was written again, whole


def test_a_damaged_payload_behind_a_memo(server, model, tmp_path):
    table = _catalog()
    first = _classify(table, server, model, tmp_path)
    with LegacySurveyBackend("des", base_url=server.url) as backend:
        key = backend.cache_key(RA[BAD], DEC[BAD])
    DAMAGE["payload_byte_flipped"](CutoutCache(tmp_path).path(key))
    server.reset_counts()
    again = _classify(table, server, model, tmp_path)  # scored from the memo
    assert server.total_requests == 0
    np.testing.assert_array_equal(again["lsbg_prob"], first["lsbg_prob"])
    with pytest.warns(CacheCorruptionWarning, match="damaged cache entry"):
        assert CutoutCache(tmp_path).get(key) is None  # found once the payload is read
    assert CutoutCache(tmp_path).get_model_input(key, "any") is None


# -- everything at once ---------------------------------------------------------------------------


def test_every_fault_at_once_with_concurrent_workers(server, weights, tmp_path):
    # Per row: faults for its first requests, fault for every request, status, requests.
    plan = [
        ([503, 502], None, status.OK, 3),
        ([Fault(status=429, retry_after=0.1)], None, status.OK, 2),
        ([Fault(delay=SLOW)], None, status.OK, 2),
        (["reset", "truncate"], None, status.OK, 3),
        ([], 500, status.FETCH_FAILED, MAX_ATTEMPTS),
        ([], Fault(delay=SLOW), status.FETCH_FAILED, MAX_ATTEMPTS),
        ([], "truncate", status.FETCH_FAILED, MAX_ATTEMPTS),
        ([], "html", status.FETCH_FAILED, 1),
        ([], Fault(action="wrong_size"), status.FETCH_FAILED, 1),
        ([], "blank", status.NO_COVERAGE, 1),
        ([], None, status.OK, 1),
    ]
    ra = [5.0 + 3.0 * i for i in range(len(plan))]
    table = _catalog(ra=ra, dec=[-50.0] * len(plan))
    server.set_faults(RowFaults(
        script={r: p[0] for r, p in zip(ra, plan)},
        always={r: p[1] for r, p in zip(ra, plan) if p[1] is not None},
    ))
    start = time.monotonic()
    scored = _classify(table, server, weights, tmp_path, timeout=TIMEOUT,
                       workers=8)  # the weights file itself this time
    assert time.monotonic() - start < 30
    _check_scored(scored, table, [p[2] for p in plan])
    assert [_requests(server, r) for r in ra] == [p[3] for p in plan]
    _check_cache(tmp_path, table, scored, server.url)


# -- answers too large, too slow, or with junk after the image (issue 11) -------------------------


def _gzip(data):
    import gzip

    return gzip.compress(data, compresslevel=9)


_JPEG = _render_jpeg(1.0, 1.0, "des")
_JPEG_CAP = MAX_PAYLOAD_BYTES["jpeg"]

OVERSIZED = {
    # A valid image followed by junk: was accepted as ok and cached whole.
    "jpeg_then_junk_over_the_cap": Fault(append=b"\x00" * (_JPEG_CAP + 1)),
    # Junk that looks like a damaged JPEG: was downloaded MAX_ATTEMPTS times.
    "garbage_over_the_cap": Fault(status=200, body=b"\xff\xd8\xff" + b"\x17" * (2 * _JPEG_CAP),
                                  content_type="image/jpeg"),
    # A small gzip body that inflates to many times the cap.
    "gzip_bomb": Fault(status=200, body=_gzip(_JPEG + b"\x00" * (16 * _JPEG_CAP)),
                       content_type="image/jpeg", headers={"Content-Encoding": "gzip"}),
}


@pytest.mark.parametrize("fault", OVERSIZED.values(), ids=OVERSIZED.keys())
def test_answer_over_the_byte_cap_fails_once_without_retry(fault, server, model, tmp_path):
    table = _catalog()
    server.set_faults(RowFaults(always={RA[BAD]: fault}))
    scored = _classify(table, server, model, tmp_path, messages=True)
    _check_scored(scored, table, [status.OK, status.FETCH_FAILED, status.OK, status.OK])
    assert "cap" in scored["lsbg_message"][BAD]
    # The cap is final: one request, nothing cached.
    assert [_requests(server, ra) for ra in RA] == [1, 1, 1, 1]
    _check_cache(tmp_path, table, scored, server.url)


def test_small_trailing_junk_is_trimmed_and_never_cached(server, model, tmp_path):
    table = _catalog()
    server.set_faults(RowFaults(always={RA[BAD]: Fault(append=b"not part of the image" * 50)}))
    scored = _classify(table, server, model, tmp_path)
    _check_scored(scored, table, [status.OK] * 4)
    with LegacySurveyBackend("des", base_url=server.url) as backend:
        key = backend.cache_key(RA[BAD], DEC[BAD])
    cached = CutoutCache(tmp_path).get(key).payload.data
    assert cached == _render_jpeg(RA[BAD], DEC[BAD], "des")  # exactly the image, no junk
    _check_cache(tmp_path, table, scored, server.url)


def test_dripping_server_is_cut_off_at_the_transfer_deadline(server, model, tmp_path):
    # One byte every 0.05 s never trips the read timeout, and the ~20 kB image
    # would take over 15 minutes.
    table = _catalog()
    server.set_faults(RowFaults(always={RA[BAD]: Fault(drip=0.05)}))
    http = HttpClient(timeout=RELAXED, backoff=BACKOFF, max_retries=1, deadline=0.5)
    start = time.monotonic()
    with LegacySurveyBackend("des", base_url=server.url, http=http) as backend:
        scored = classify_catalog(table, backend=backend, model=model, cache=tmp_path,
                                  progress=False, messages=True)
    assert time.monotonic() - start < 20
    _check_scored(scored, table, [status.OK, status.FETCH_FAILED, status.OK, status.OK])
    assert "deadline" in scored["lsbg_message"][BAD]
    assert _requests(server, RA[BAD]) == 2  # a timeout, so retried (max_retries=1)
    _check_cache(tmp_path, table, scored, server.url)


def test_every_failed_row_says_why(server, model, tmp_path):
    table = _catalog(dec=[-45.0, -46.0, -47.0, 85.0])
    server.set_faults(RowFaults(always={RA[BAD]: "html", RA[2]: Fault(action="wrong_size")}))
    scored = _classify(table, server, model, tmp_path, messages=True)
    assert scored.colnames[-1] == "lsbg_message"
    ok, html, wrong, blank = (str(m) for m in scored["lsbg_message"])
    assert ok == ""
    assert "HTTP 200" in html and "text/html" in html
    assert "128x128" in wrong and "256x256" in wrong
    assert "blank" in blank and "footprint" in blank


# -- the cache turned against the run (issue 11) -----------------------------------------------


def _replace_with_symlink_to_dev_zero(path):
    path.unlink()
    path.symlink_to("/dev/zero")


def _replace_with_fifo(path):
    path.unlink()
    os.mkfifo(path)


def _replace_with_entry_over_the_cap(path):
    # A well-formed entry (checksums fine) whose payload is over the JPEG cap.
    cache = CutoutCache(path.parents[2])
    big = Payload(_JPEG + b"\x00" * _JPEG_CAP, "jpeg")
    cache.put(path.name[: -len(".cutout")], FetchOutcome(status.OK, big))


HOSTILE = {
    "symlink_to_dev_zero": _replace_with_symlink_to_dev_zero,
    "fifo": _replace_with_fifo,
    "entry_over_the_cap": _replace_with_entry_over_the_cap,
}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs symbolic links and FIFOs")
@pytest.mark.parametrize("damage", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_cache_entry_is_removed_and_refetched_without_blocking(damage, server, model,
                                                                        tmp_path):
    table = _catalog()
    _classify(table, server, model, tmp_path)
    with LegacySurveyBackend("des", base_url=server.url) as backend:
        path = CutoutCache(tmp_path).path(backend.cache_key(RA[BAD], DEC[BAD]))
    damage(path)
    server.reset_counts()
    start = time.monotonic()
    with pytest.warns(CacheCorruptionWarning, match="damaged cache entry") as caught:
        again = _classify(table, server, model, tmp_path)
    assert time.monotonic() - start < 30
    assert sum(issubclass(w.category, CacheCorruptionWarning) for w in caught) == 1
    _check_scored(again, table, [status.OK] * 4)
    assert server.total_requests == 1 and _requests(server, RA[BAD]) == 1
    assert path.is_file() and not path.is_symlink()
    _check_cache(tmp_path, table, again, server.url)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [12000, 20000])
def test_cached_jpeg_bomb_is_bad_image_and_the_run_goes_on(side, server, model, tmp_path):
    # 12000² passes Pillow's own bomb check and was decoded (4.7 GB, minutes);
    # 20000² made Pillow raise DecompressionBombError, a traceback on every rerun.
    table = _catalog()
    with LegacySurveyBackend("des", base_url=server.url) as backend:
        key = backend.cache_key(RA[BAD], DEC[BAD])
    bomb = _jpeg_claiming_size(side)
    CutoutCache(tmp_path).put(key, FetchOutcome(status.OK, Payload(bomb, "jpeg")))
    start = time.monotonic()
    scored = _classify(table, server, model, tmp_path, messages=True)
    assert time.monotonic() - start < 30
    _check_scored(scored, table, [status.OK, status.BAD_IMAGE, status.OK, status.OK])
    assert "pixels" in scored["lsbg_message"][BAD]
    assert _requests(server, RA[BAD]) == 0  # it came from the cache


def test_cache_that_cannot_be_written_degrades_to_uncached_with_one_warning(server, model,
                                                                            tmp_path):
    # A file where the cache directory's parent should be: no one, root
    # included, can create the directory, as with a read-only file system.
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scored = _classify(_catalog(), server, model, blocker / "cache")
    _check_scored(scored, _catalog(), [status.OK] * 4)
    unavailable = [w for w in caught if issubclass(w.category, CacheUnavailableWarning)]
    assert len(unavailable) == 1
    assert "going on without" in str(unavailable[0].message)
    assert blocker.read_text() == "x"


def test_full_cache_degrades_to_uncached_with_one_warning(server, model, tmp_path, monkeypatch):
    import lsbg_classify.pipeline.cache as cache_module

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "atomic_write_bytes", disk_full)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scored = _classify(_catalog(), server, model, tmp_path, checkpoint_dir=tmp_path / "ck",
                           chunk_size=2)
    _check_scored(scored, _catalog(), [status.OK] * 4)
    unavailable = [w for w in caught if issubclass(w.category, CacheUnavailableWarning)]
    assert len(unavailable) == 1 and "No space left" in str(unavailable[0].message)
    assert CutoutCache(tmp_path).keys() == []


# -- credentials in the server URL (issue 11) ------------------------------------------------------

SECRET = "Pa55w0rdXyZ"


@pytest.mark.parametrize("ending", ["fits", "csv", "ecsv", "parquet", "vot", "hdf5"])
def test_credentials_in_the_url_are_written_nowhere(ending, server, weights, tmp_path, capsys,
                                                    caplog):
    from lsbg_classify.cli import main

    host = server.url.split("://", 1)[1]
    url = f"http://reader:{SECRET}@{host}"
    path = tmp_path / "cands.csv"
    _catalog().write(path)
    # Rows that fail (the message names the URL), one retried (logged), one fine.
    server.set_faults(RowFaults(always={RA[BAD]: "html", RA[2]: Fault(action="wrong_size")},
                                script={RA[3]: [503]}))
    out = tmp_path / f"scored.{ending}"
    caplog.set_level(logging.DEBUG)
    code = main(["classify", str(path), "-o", str(out), "--backend", "legacysurvey",
                 "--base-url", url, "--model", weights, "--cache", str(tmp_path / "cache"),
                 "--quiet", "--messages"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "text/html" in captured.err  # the reasons are there, without the password
    texts = {"stdout": captured.out, "stderr": captured.err, "log": caplog.text,
             "output": out.read_bytes().decode("latin-1")}
    for name, text in texts.items():
        assert SECRET not in text, name
        assert "reader:" not in text, name
    assert server.log[0].headers.get("Authorization", "").startswith("Basic ")
    if ending != "csv":  # CSV keeps no provenance at all
        from lsbg_classify.pipeline.catalog.read import read_catalog

        assert read_catalog(out).meta["LSBG_CLASSIFY"]["server"] == server.url


def test_credentials_stay_out_of_describe_errors_and_explain(server, weights, tmp_path, capsys,
                                                            caplog):
    from lsbg_classify.cli import main

    host = server.url.split("://", 1)[1]
    url = f"http://reader:{SECRET}@{host}"
    with LegacySurveyBackend("des", base_url=url) as backend:
        assert backend.describe()["server"] == server.url
        assert SECRET in backend.base_url  # still used to log in
    path = tmp_path / "cands.csv"
    _catalog().write(path)
    server.set_faults(RowFaults(always={RA[BAD]: "html"}))
    caplog.set_level(logging.DEBUG)
    code = main(["explain", str(path), "--rows", "0,1", "-o", str(tmp_path / "maps.png"),
                 "--backend", "legacysurvey", "--base-url", url, "--model", weights,
                 "--no-cache", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "row 1: fetch_failed" in captured.err
    for text in (captured.out, captured.err, caplog.text):
        assert SECRET not in text
