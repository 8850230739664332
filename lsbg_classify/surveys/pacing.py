"""Polite, adaptive concurrency for the fetching threads.

:meth:`~lsbg_classify.surveys.SurveyBackend.fetch` runs up to ``workers``
downloads at once; an :class:`AdaptiveConcurrency` decides how many of them
may be in flight *now*.  The worker count is the cap.  When the service
says it is overloaded (HTTP 429 or 503) the limit is halved, once per
episode of throttling, and no new request starts before the time its
``Retry-After`` names; while requests keep succeeding the limit grows back
by one per round of successes up to the level that was throttled last, and
beyond it only after several rounds (a slow probe), so a service that
refuses more than N concurrent requests sees about N.

The HTTP client reports what it sees through :func:`report_throttled`,
:func:`report_success` and :func:`released` (around its retry waits);
they act on the limiter whose slot the calling thread holds, and do
nothing in a thread that holds none, so the client works the same outside
:meth:`fetch`.
"""

import threading
import time
from contextlib import contextmanager

__all__ = ["AdaptiveConcurrency", "THROTTLE_STATUSES", "report_throttled", "report_success",
           "released"]

#: HTTP statuses that mean "slow down": too many requests, service unavailable.
THROTTLE_STATUSES = frozenset({429, 503})

# Rounds of successes (one round = as many successes as the limit) before
# the limit grows past the level at which the service last throttled.
PROBE_ROUNDS = 8

_held = threading.local()


class AdaptiveConcurrency:
    """A concurrency limit that halves on throttling and grows while requests succeed.

    Parameters
    ----------
    cap : int
        Most requests in flight at once (the worker count).
    floor : int
        Fewest requests the limit may fall to.
    clock : callable
        Monotonic seconds (tests may inject one).

    Attributes
    ----------
    limit : int
        Requests allowed in flight now.
    throttle_events : int
        Times the limit was halved.
    peak_active : int
        Most requests that were in flight at once.
    """

    def __init__(self, cap, floor=1, clock=time.monotonic):
        self.cap = max(1, int(cap))
        self.floor = max(1, min(int(floor), self.cap))
        self.limit = self.cap
        self.throttle_events = 0
        self.peak_active = 0
        self._clock = clock
        self._cond = threading.Condition()
        self._active = 0
        # Throttling of requests sent before the last halving says nothing
        # new about the lowered limit: each slot remembers the episode it
        # started in, and only the current episode's answers halve again.
        self._episode = 0
        self._successes = 0
        self._ceiling = self.cap
        self._resume_at = 0.0

    @property
    def active(self):
        """Requests in flight now."""
        with self._cond:
            return self._active

    def _acquire(self):
        with self._cond:
            while True:
                wait = self._resume_at - self._clock()
                if wait <= 0 and self._active < self.limit:
                    break
                self._cond.wait(timeout=wait if wait > 0 else None)
            self._active += 1
            self.peak_active = max(self.peak_active, self._active)
            return self._episode

    def _release(self):
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    @contextmanager
    def slot(self):
        """Hold one of the ``limit`` places for the duration of a request."""
        _held.slot = [self, self._acquire()]
        try:
            yield
        finally:
            self._release()
            _held.slot = None

    def throttled(self, episode, retry_after=None):
        """The service answered 429/503 to a request started in ``episode``.

        Parameters
        ----------
        episode : int
            What the slot's acquisition returned.
        retry_after : float, optional
            Seconds the service asked to wait; no request starts before then.
        """
        with self._cond:
            if episode == self._episode:
                self._ceiling = max(self.floor, self.limit - 1)
                self.limit = max(self.floor, self.limit // 2)
                self._episode += 1
                self._successes = 0
                self.throttle_events += 1
            if retry_after:
                self._resume_at = max(self._resume_at, self._clock() + float(retry_after))

    def succeeded(self):
        """A request succeeded: after enough of them, allow one more in flight."""
        with self._cond:
            self._successes += 1
            rounds = 1 if self.limit < self._ceiling else PROBE_ROUNDS
            if self.limit < self.cap and self._successes >= rounds * self.limit:
                self.limit += 1
                self._ceiling = max(self._ceiling, self.limit)
                self._successes = 0
                self._cond.notify_all()


def _current():
    return getattr(_held, "slot", None)


def report_throttled(retry_after=None):
    """Tell the calling thread's limiter (if any) that the service said slow down."""
    held = _current()
    if held is not None:
        held[0].throttled(held[1], retry_after)


def report_success():
    """Tell the calling thread's limiter (if any) that a request succeeded."""
    held = _current()
    if held is not None:
        held[0].succeeded()


@contextmanager
def released():
    """Give the calling thread's place back while it waits (e.g. before a retry)."""
    held = _current()
    if held is None:
        yield
        return
    limiter = held[0]
    limiter._release()
    try:
        yield
    finally:
        # The retry belongs to the episode it is sent in.
        held[1] = limiter._acquire()
