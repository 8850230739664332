"""Adaptive concurrency: fewer requests in flight while a service answers 429/503."""

import threading
import time

import numpy as np
import pytest

from lsbg_classify.surveys import get_backend
from lsbg_classify.surveys.http import HttpClient
from lsbg_classify.surveys.pacing import (
    PROBE_ROUNDS,
    AdaptiveConcurrency,
    released,
    report_success,
    report_throttled,
)
from lsbg_classify.testing.benchmark import simulated_positions


def test_throttling_halves_the_limit_once_per_episode():
    limiter = AdaptiveConcurrency(8)
    with limiter.slot():
        report_throttled()
        assert limiter.limit == 4 and limiter.throttle_events == 1
        # Another answer to a request sent before the halving: no second halving.
        report_throttled()
        assert limiter.limit == 4
    with limiter.slot():
        report_throttled()  # sent under the lowered limit, throttled again
    assert limiter.limit == 2 and limiter.throttle_events == 2
    for _ in range(20):
        with limiter.slot():
            pass
    assert limiter.limit == 2  # holding a slot is not success; only reported successes count


def test_limit_grows_back_to_the_throttled_level_then_probes_slowly():
    limiter = AdaptiveConcurrency(8)
    with limiter.slot():
        report_throttled()
    assert limiter.limit == 4
    successes = []
    while limiter.limit < 8:
        with limiter.slot():
            report_success()
        successes.append(limiter.limit)
    # One round of successes per step up to 7 (the level below the throttled 8) ...
    assert successes.index(5) + 1 == 4 and successes.index(7) + 1 == 4 + 5 + 6
    # ... then PROBE_ROUNDS rounds before trying the level that was throttled.
    assert len(successes) == 4 + 5 + 6 + PROBE_ROUNDS * 7
    with limiter.slot():
        report_success()
    assert limiter.limit == 8  # the cap: never more than the worker count


def test_retry_after_holds_back_new_requests_and_waits_release_the_place():
    limiter = AdaptiveConcurrency(2)
    with limiter.slot():
        report_throttled(retry_after=0.3)
        started = time.monotonic()
        with released():
            assert limiter.active == 0  # the waiting request gives its place back
            time.sleep(0.05)
        assert limiter.active == 1
    assert time.monotonic() - started >= 0.25  # it came back only after Retry-After
    assert limiter.limit == 1


def test_reports_outside_a_slot_change_nothing():
    report_throttled(5.0)
    report_success()
    with released():
        pass


def test_the_limit_bounds_requests_in_flight():
    limiter = AdaptiveConcurrency(3)
    inside, peak, lock = [0], [0], threading.Lock()

    def work():
        with limiter.slot():
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.01)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] <= 3 and limiter.peak_active <= 3


def _fetch_all(viewer, rows, workers):
    ra, dec = simulated_positions(rows, seed=3)
    client = HttpClient(timeout=10, max_retries=8, backoff=0.02, max_backoff=0.2)
    with get_backend("legacysurvey", survey="des", base_url=viewer.url, http=client) as backend:
        statuses = [outcome.status for _, outcome in backend.fetch(ra, dec, workers=workers)]
    return statuses


@pytest.mark.slow
def test_a_rate_limited_server_sees_its_limit_after_the_back_off(viewer):
    _fetch_all(viewer, 48, workers=8)  # render once, at full speed
    viewer.reset_counts()
    viewer.latency = 0.05
    viewer.concurrency_limit = 4
    viewer.limit_retry_after = 0.1
    assert _fetch_all(viewer, 48, workers=8) == ["ok"] * 48
    log = list(viewer.log)
    assert viewer.counts["rate_limited"] >= 1  # eight workers did hit the limit
    first = next(i for i, info in enumerate(log) if info.rate_limited)
    after = np.array([info.in_flight for info in log[first + 8:]])
    # After backing off, requests arrive within the limit but for rare probes.
    assert np.mean(after <= 4) >= 0.9
    assert sum(info.rate_limited for info in log[first + 8:]) <= len(after) // 10


@pytest.mark.slow
def test_a_healthy_server_gets_every_worker(viewer):
    _fetch_all(viewer, 32, workers=8)
    viewer.reset_counts()
    viewer.latency = 0.05
    assert _fetch_all(viewer, 32, workers=8) == ["ok"] * 32
    in_flight = [info.in_flight for info in viewer.log]
    assert max(in_flight) == 8 and viewer.counts["rate_limited"] == 0
