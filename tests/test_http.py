"""HttpClient: retries, backoff, Retry-After and keep-alive, over real sockets."""

import random
import socket
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from lsbg_classify.surveys import FetchError
from lsbg_classify.surveys.http import (
    DEFAULT_USER_AGENT,
    HttpClient,
    HttpFetchError,
    ResponseTooLargeError,
    RetryableResponseError,
    parse_retry_after,
    redact_text,
    redact_url,
)
from lsbg_classify.testing.loopback import Fault
from lsbg_classify.version import __version__

PARAMS = {"ra": "150.0", "dec": "2.5", "layer": "des-dr1", "pixscale": "0.131", "size": "64"}


class Sleeps:
    """Records the waits instead of sleeping (keeps the tests fast)."""

    def __init__(self):
        self.calls = []

    def __call__(self, seconds):
        self.calls.append(seconds)


def make_client(sleep=None, **options):
    options.setdefault("max_retries", 4)
    options.setdefault("backoff", 0.01)
    options.setdefault("timeout", 5)
    return HttpClient(sleep=sleep, rng=random.Random(1), **options)


def jpeg_url(viewer):
    return viewer.url + "/cutout.jpg"


def test_success_sends_polite_user_agent(viewer):
    with make_client() as client:
        response = client.get(jpeg_url(viewer), PARAMS)
    assert response.status_code == 200
    assert response.content.startswith(b"\xff\xd8")
    agent = viewer.log[-1].headers["User-Agent"]
    assert agent == DEFAULT_USER_AGENT
    assert agent.startswith(f"lsbg-classify/{__version__} (")


def test_defaults_are_polite():
    client = HttpClient()
    assert client.timeout == 30
    assert client.max_retries == 4


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_retried_then_success(viewer, status):
    sleeps = Sleeps()
    viewer.add_faults(status, status)
    with make_client(sleeps) as client:
        response = client.get(jpeg_url(viewer), PARAMS)
    assert response.status_code == 200
    assert viewer.counts["cutout.jpg"] == 3
    assert len(sleeps.calls) == 2


def test_mixed_5xx_sequence(viewer):
    viewer.add_faults(500, 502, 503)
    with make_client(Sleeps()) as client:
        assert client.get(jpeg_url(viewer), PARAMS).status_code == 200
    assert viewer.total_requests == 4


def test_attempts_are_bounded(viewer):
    sleeps = Sleeps()
    viewer.set_faults(lambda info: 503)
    with make_client(sleeps, max_retries=3) as client:
        with pytest.raises(HttpFetchError) as err:
            client.get(jpeg_url(viewer), PARAMS)
    assert viewer.total_requests == 4
    assert len(sleeps.calls) == 3
    assert err.value.status == 503
    assert err.value.attempts == 4
    message = str(err.value)
    assert "HTTP 503" in message
    assert "cutout.jpg?ra=150.0" in message  # the URL, with its query
    assert isinstance(err.value, FetchError)


def test_backoff_is_exponential_with_full_jitter():
    client = HttpClient(backoff=0.5, max_backoff=3.0, rng=random.Random(0))
    for k in range(8):
        ceiling = min(3.0, 0.5 * 2**k)
        waits = [client.backoff_delay(k) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        # Full jitter: waits spread over the whole interval.
        assert min(waits) < 0.2 * ceiling and max(waits) > 0.8 * ceiling


def test_jittered_waits_recorded_between_attempts(viewer):
    sleeps = Sleeps()
    viewer.add_faults(503, 503, 503)
    with make_client(sleeps, backoff=0.004, max_backoff=1.0) as client:
        client.get(jpeg_url(viewer), PARAMS)
    assert [0 <= s <= 0.004 * 2**k for k, s in enumerate(sleeps.calls)] == [True] * 3


def test_429_retry_after_seconds_is_honoured(viewer):
    viewer.add_faults(Fault(status=429, retry_after="0.3"))
    with make_client() as client:  # real sleep: measure it
        start = time.monotonic()
        response = client.get(jpeg_url(viewer), PARAMS)
        elapsed = time.monotonic() - start
    assert response.status_code == 200
    assert viewer.total_requests == 2
    gap = viewer.log[1].time - viewer.log[0].time
    assert gap >= 0.3
    assert elapsed >= 0.3


def test_retry_after_http_date_is_honoured(viewer):
    sleeps = Sleeps()
    when = datetime.now(timezone.utc) + timedelta(seconds=20)
    viewer.add_faults((429, format_datetime(when, usegmt=True)))
    with make_client(sleeps) as client:
        client.get(jpeg_url(viewer), PARAMS)
    assert len(sleeps.calls) == 1
    assert 15 <= sleeps.calls[0] <= 21


def test_retry_after_is_capped(viewer):
    sleeps = Sleeps()
    viewer.add_faults((503, 3600))
    with make_client(sleeps, max_retry_after=0.05) as client:
        client.get(jpeg_url(viewer), PARAMS)
    assert sleeps.calls == [0.05]


@pytest.mark.parametrize(
    "value, expected",
    [("5", 5.0), ("1.5", 1.5), ("-3", 0.0), ("", None), (None, None), ("soon", None), ("nan", None)],
)
def test_parse_retry_after_numbers(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_dates():
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=timezone.utc)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now=now) == 0.0


def test_timeouts_retried_then_fetch_error(viewer):
    sleeps = Sleeps()
    viewer.set_faults(lambda info: Fault(delay=0.6))
    with make_client(sleeps, timeout=0.1, max_retries=2) as client:
        start = time.monotonic()
        with pytest.raises(HttpFetchError) as err:
            client.get(jpeg_url(viewer), PARAMS)
    assert time.monotonic() - start < 2.0
    assert viewer.total_requests == 3
    assert err.value.status is None
    assert "Timeout" in str(err.value)
    assert "no response" in str(err.value)


def test_timeout_then_success(viewer):
    viewer.add_faults(Fault(delay=0.6))
    with make_client(Sleeps(), timeout=0.2) as client:
        assert client.get(jpeg_url(viewer), PARAMS).status_code == 200
    assert viewer.total_requests == 2


def test_connection_reset_mid_body_is_retried(viewer):
    viewer.add_faults("reset", "reset")
    with make_client(Sleeps()) as client:
        response = client.get(jpeg_url(viewer), PARAMS)
    assert response.content.startswith(b"\xff\xd8")
    assert viewer.total_requests == 3


def test_connection_reset_every_time_fails(viewer):
    viewer.set_faults(lambda info: "reset")
    with make_client(Sleeps(), max_retries=1) as client:
        with pytest.raises(HttpFetchError) as err:
            client.get(jpeg_url(viewer), PARAMS)
    assert viewer.total_requests == 2
    assert "Error" in str(err.value)


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_client_errors_not_retried(viewer, status):
    sleeps = Sleeps()
    viewer.add_faults(status)
    with make_client(sleeps) as client:
        with pytest.raises(HttpFetchError) as err:
            client.get(jpeg_url(viewer), PARAMS)
    assert viewer.total_requests == 1
    assert sleeps.calls == []
    assert err.value.status == status
    assert f"HTTP {status}" in str(err.value)


def test_real_400_from_missing_position(viewer):
    with make_client(Sleeps()) as client:
        with pytest.raises(HttpFetchError) as err:
            client.get(jpeg_url(viewer), {"layer": "des-dr1"})
    assert err.value.status == 400
    assert "ra" in str(err.value)
    assert viewer.total_requests == 1


def test_check_callback_can_ask_for_retry(viewer):
    calls = []

    def check(response):
        calls.append(1)
        if len(calls) < 3:
            raise RetryableResponseError("looks damaged")

    with make_client(Sleeps()) as client:
        client.get(jpeg_url(viewer), PARAMS, check=check)
    assert viewer.total_requests == 3


def test_check_callback_exhausted_reports_problem(viewer):
    def check(response):
        raise RetryableResponseError("looks damaged")

    with make_client(Sleeps(), max_retries=1) as client:
        with pytest.raises(HttpFetchError, match="looks damaged"):
            client.get(jpeg_url(viewer), PARAMS, check=check)


def test_connection_refused_fails_after_retries():
    # A port that was free a moment ago: nothing listens there.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = Sleeps()
    with make_client(sleeps, max_retries=2) as client:
        with pytest.raises(HttpFetchError, match="ConnectionError"):
            client.get(f"http://127.0.0.1:{port}/viewer/cutout.jpg", PARAMS)
    assert len(sleeps.calls) == 2


def test_bad_url_is_not_retried():
    sleeps = Sleeps()
    with make_client(sleeps) as client:
        with pytest.raises(HttpFetchError):
            client.get("not a url", PARAMS)
    assert sleeps.calls == []


def test_keep_alive_reuses_one_connection(viewer):
    with make_client() as client:
        for _ in range(5):
            client.get(jpeg_url(viewer), PARAMS)
    assert len({info.client for info in viewer.log}) == 1


def test_pool_sized_for_workers():
    client = HttpClient(pool_size=16)
    adapter = client.session.get_adapter("https://www.legacysurvey.org/")
    assert adapter._pool_maxsize == 16
    # urllib3's own retries are off: ours are the only ones.
    assert adapter.max_retries.total == 0
    client.close()


def test_latency_option_delays_each_request(viewer):
    viewer.latency = 0.1
    with make_client() as client:
        start = time.monotonic()
        client.get(jpeg_url(viewer), PARAMS)
        client.get(jpeg_url(viewer), PARAMS)
    assert time.monotonic() - start >= 0.2


# -- issue 11: bounded bodies, a deadline for the whole transfer, no credentials ------------------


def test_body_over_the_cap_is_final_and_read_only_up_to_the_cap(viewer):
    viewer.add_faults(Fault(status=200, body=b"\x00" * 300_000, content_type="image/jpeg"))
    with make_client(max_retries=4) as client:
        with pytest.raises(ResponseTooLargeError, match="100000"):
            client.get(jpeg_url(viewer), PARAMS, max_bytes=100_000)
    assert viewer.counts["cutout.jpg"] == 1  # not retried


def test_gzip_body_is_capped_after_decompression(viewer):
    import gzip

    bomb = gzip.compress(b"\x00" * 5_000_000)
    viewer.add_faults(Fault(status=200, body=bomb, content_type="image/jpeg",
                            headers={"Content-Encoding": "gzip"}))
    with make_client() as client:
        with pytest.raises(ResponseTooLargeError, match="decompression"):
            client.get(jpeg_url(viewer), PARAMS, max_bytes=len(bomb) * 10)
    assert viewer.counts["cutout.jpg"] == 1


def test_small_gzip_body_is_decoded(viewer):
    import gzip

    viewer.add_faults(Fault(status=200, body=gzip.compress(b"hello" * 1000),
                            content_type="application/octet-stream",
                            headers={"Content-Encoding": "gzip"}))
    with make_client() as client:
        assert client.get(jpeg_url(viewer), PARAMS).content == b"hello" * 1000


def test_error_bodies_are_capped_too(viewer):
    viewer.add_faults(Fault(status=503, body=b"x" * 300_000))
    with make_client() as client:
        with pytest.raises(ResponseTooLargeError):
            client.get(jpeg_url(viewer), PARAMS, max_bytes=1000)


def test_transfer_deadline_bounds_a_dripping_answer(viewer):
    viewer.add_faults(Fault(drip=0.02), Fault(drip=0.02))
    sleeps = Sleeps()
    start = time.monotonic()
    with make_client(sleep=sleeps, max_retries=1, deadline=0.3) as client:
        with pytest.raises(HttpFetchError, match="deadline"):
            client.get(jpeg_url(viewer), PARAMS)
    assert time.monotonic() - start < 5
    assert viewer.counts["cutout.jpg"] == 2  # a timeout: retried once


def test_keep_alive_survives_bounded_reads(viewer):
    with make_client() as client:
        for _ in range(3):
            client.get(jpeg_url(viewer), PARAMS)
    assert len({r.client for r in viewer.log}) == 1


@pytest.mark.parametrize("url, clean", [
    ("http://user:pw@host:8080/viewer?x=1", "http://host:8080/viewer?x=1"),
    ("https://token@host/v", "https://host/v"),
    ("https://host/v?mail=a@b", "https://host/v?mail=a@b"),
    ("user:pw@host/viewer", "host/viewer"),
    ("https://host/v", "https://host/v"),
])
def test_redact_url(url, clean):
    assert redact_url(url) == clean


def test_errors_never_carry_credentials(viewer):
    url = viewer.url.replace("http://", "http://reader:Xy9Secret@") + "/cutout.jpg"
    viewer.add_faults(404)
    with make_client() as client:
        with pytest.raises(HttpFetchError) as info:
            client.get(url, PARAMS)
    assert "Xy9Secret" not in str(info.value) and "Xy9Secret" not in info.value.url
    assert "Xy9Secret" not in redact_text(f"see {url} and {url}")
