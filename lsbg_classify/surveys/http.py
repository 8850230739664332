"""A small, polite HTTP client shared by the remote survey backends.

One :class:`HttpClient` wraps one keep-alive `requests.Session` whose
connection pool is sized for the number of worker threads, so a catalog of
thousands of positions reuses a handful of TCP/TLS connections instead of
opening one per cutout.

Failures that are usually transient are retried with exponential backoff
and *full jitter* (the wait is drawn uniformly between zero and the
exponential ceiling), which spreads the retries of many worker threads so
they do not hit a struggling server in lock step:

- timeouts and connection errors, including a connection reset in the
  middle of the body (`requests.exceptions.ChunkedEncodingError`, incomplete
  reads);
- HTTP 429 (Too Many Requests) and 5xx, honouring a ``Retry-After`` header
  (seconds or an HTTP date), capped so a misbehaving server cannot park a
  worker for hours;
- payloads that a caller's ``check`` function declares damaged by raising
  :class:`RetryableResponseError` (e.g. a truncated JPEG behind a proxy).

Other 4xx responses are the client's fault and are not retried.  After the
last attempt an :class:`HttpFetchError` (a
:class:`~lsbg_classify.surveys.FetchError`) says which URL failed and why.

Every body is read in small pieces against two bounds (see
:mod:`lsbg_classify.limits`): a byte cap, counted after any
``Content-Encoding`` is undone, whose breach is final
(:class:`ResponseTooLargeError`, no retry), and a deadline for the whole
transfer, whose breach counts as a timeout (retried).

A user name or password in a URL is sent (as HTTP basic authentication)
but never written: :func:`redact_url` and :func:`redact_text` remove it
from every URL that reaches a message, a log record or the provenance.
"""

import email.utils
import http.client
import logging
import os
import random
import re
import threading
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from ..limits import DEFAULT_MAX_BYTES, TRANSFER_DEADLINE, payload_byte_cap
from ..version import __version__
from . import pacing
from .base import FetchError, SurveyBackend

__all__ = [
    "HttpClient",
    "HttpFetchError",
    "ResponseTooLargeError",
    "TransferDeadlineError",
    "RetryableResponseError",
    "redact_url",
    "redact_text",
    "DEFAULT_USER_AGENT",
    "RETRY_STATUSES",
    "parse_retry_after",
    "FITS_MAGIC",
    "TEXT_TYPES",
    "resolve_base_url",
    "describe_body",
    "check_not_text",
    "check_fits",
    "HttpBackend",
]

log = logging.getLogger(__name__)

#: Where a service operator who sees our traffic can read who we are.

#: Identifies the package to service operators (they ask for this).
DEFAULT_USER_AGENT = f"lsbg-classify/{__version__} (python-requests; DeepShadows LSBG classifier)"

#: HTTP statuses worth retrying: rate limiting and server-side trouble.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

# Transport failures that say nothing about the request itself, so another
# attempt may succeed.  ConnectionError covers refused connections, resets
# and (via ConnectTimeout) slow connects; ChunkedEncodingError is what
# requests raises when the peer drops the connection mid-body.  urllib3 and
# http.client errors are listed because a few code paths let them escape
# unwrapped.
_TRANSIENT_EXCEPTIONS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)


class HttpFetchError(FetchError):
    """A request failed for good (after any retries).

    Attributes
    ----------
    url : str
        The URL of the last attempt, with its query string.
    status : int or None
        HTTP status of the last response, or None when no response came
        (timeout, connection error).
    attempts : int
        Number of attempts made.
    """

    def __init__(self, message, url=None, status=None, attempts=0):
        super().__init__(redact_text(message))
        self.url = None if url is None else redact_url(url)
        self.status = status
        self.attempts = attempts


class ResponseTooLargeError(HttpFetchError):
    """An answer was larger than the byte cap (final: not retried)."""


class TransferDeadlineError(requests.exceptions.Timeout):
    """A transfer went on past its deadline (a timeout: retried)."""


# scheme://user:password@host -> scheme://host, wherever it appears in a text.
_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s'\"]*@")


def redact_url(url):
    """``url`` without the user name and password it may carry.

    Parameters
    ----------
    url : str

    Returns
    -------
    str
        The same URL with ``user:password@`` removed from its authority
        (anything that is not a URL is only stripped of such a part).
    """
    text = str(url)
    authority = text.split("/", 1)[0]
    if "://" not in text and "@" in authority:  # "user:password@host/..." with no scheme
        text = text[len(authority.rsplit("@", 1)[0]) + 1:]
    try:
        parts = urlsplit(text)
    except ValueError:
        return redact_text(text)
    if "@" not in parts.netloc:
        return redact_text(text)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def redact_text(text):
    """``text`` with every ``scheme://user:password@`` cut to ``scheme://``."""
    return _USERINFO_RE.sub(r"\1", str(text))


class RetryableResponseError(Exception):
    """Raised by a ``check`` callback: the body is damaged, try again.

    The message ends up in the final :class:`HttpFetchError` if every
    attempt fails.
    """


def parse_retry_after(value, now=None):
    """Parse a ``Retry-After`` header value.

    Parameters
    ----------
    value : str or None
        Either a number of seconds (``"5"``, ``"1.5"``) or an HTTP date
        (``"Wed, 21 Oct 2015 07:28:00 GMT"``).
    now : datetime.datetime, optional
        Current time (UTC) for HTTP dates; defaults to the clock.

    Returns
    -------
    float or None
        Seconds to wait (never negative), or None when the value is absent
        or cannot be parsed.
    """
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # NaN or inf would make sleep() fail or hang.
        if seconds != seconds or seconds == float("inf"):
            return None
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are always GMT.
        when = when.replace(tzinfo=timezone.utc)
    now = datetime.now(timezone.utc) if now is None else now
    return max(0.0, (when - now).total_seconds())


def _snippet(response, limit=200):
    """Start of a response body, on one line, for error messages."""
    try:
        text = response.content[:limit].decode("utf-8", "replace")
    except Exception:  # the body itself may be what failed
        return ""
    return " ".join(text.split())


class HttpClient:
    """Keep-alive HTTP client with bounded, jittered retries.

    Parameters
    ----------
    timeout : float
        Seconds to wait for the connection and for each read from the
        socket (not for the whole transfer).  Default 30 s.
    max_retries : int
        Retries after the first attempt, so at most ``max_retries + 1``
        requests are sent per call.  Default 4.
    backoff : float
        Base of the exponential backoff in seconds: before retry ``k``
        (0-based) the client sleeps a random time in
        ``[0, min(max_backoff, backoff * 2**k)]``.  Default 0.5 s.
    pool_size : int
        Connections kept open per host.  Use at least the number of worker
        threads, or the extra connections are discarded after each use.
    user_agent : str, optional
        ``User-Agent`` header.  Default
        ``"lsbg-classify/<version> (+<docs URL>)"``.
    max_backoff : float
        Ceiling of one jittered backoff wait in seconds.  Default 30 s.
    max_retry_after : float
        Longest ``Retry-After`` honoured in seconds; longer requests are cut
        to this.  Default 60 s.
    sleep : callable, optional
        ``sleep(seconds)`` used between attempts.  Tests inject a recorder.
    rng : random.Random, optional
        Source of the jitter (a seeded one makes waits reproducible).
    max_bytes : int
        Most bytes an answer's body may have after any ``Content-Encoding``
        is undone (default :data:`~lsbg_classify.limits.DEFAULT_MAX_BYTES`,
        64 MiB); :meth:`get` takes a per-call cap.
    deadline : float or None
        Longest one attempt may take from sending the request to the last
        byte of the body, in seconds (default
        :data:`~lsbg_classify.limits.TRANSFER_DEADLINE`, 120 s); None for
        no limit.

    Notes
    -----
    The session is shared between threads.  `requests` does not promise
    thread safety of a Session, but concurrent GETs without cookies or
    authentication changes are the standard, well-trodden use; the pool
    itself (urllib3) is thread safe.
    """

    def __init__(
        self,
        timeout=30.0,
        max_retries=4,
        backoff=0.5,
        pool_size=10,
        user_agent=None,
        *,
        max_backoff=30.0,
        max_retry_after=60.0,
        sleep=None,
        rng=None,
        max_bytes=DEFAULT_MAX_BYTES,
        deadline=TRANSFER_DEADLINE,
    ):
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (seconds)")
        if int(max_bytes) < 1:
            raise ValueError("max_bytes must be a positive number of bytes")
        if deadline is not None and not deadline > 0:
            raise ValueError("deadline must be positive (seconds) or None")
        self.max_bytes = int(max_bytes)
        self.deadline = None if deadline is None else float(deadline)
        self.timeout = timeout
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_retry_after = float(max_retry_after)
        self.pool_size = max(1, int(pool_size))
        self.user_agent = DEFAULT_USER_AGENT if user_agent is None else user_agent
        self._sleep = time.sleep if sleep is None else sleep
        self._rng = random.Random() if rng is None else rng
        self._rng_lock = threading.Lock()
        self._session = None
        self._session_lock = threading.Lock()

    @classmethod
    def for_backend(cls, timeout, max_retries=None, backoff=None, workers_hint=32,
                    deadline=None):
        """A client sized for a backend used with up to ``workers_hint`` threads.

        ``max_retries``, ``backoff`` and ``deadline`` of None keep the
        polite defaults.
        """
        options = {"timeout": float(timeout), "pool_size": max(10, int(workers_hint))}
        if max_retries is not None:
            options["max_retries"] = max_retries
        if backoff is not None:
            options["backoff"] = backoff
        if deadline is not None:
            options["deadline"] = deadline
        return cls(**options)

    # -- session -----------------------------------------------------------

    @property
    def session(self):
        """The underlying `requests.Session` (created on first use)."""
        if self._session is None:
            with self._session_lock:
                if self._session is None:
                    self._session = self._make_session()
        return self._session

    def _make_session(self):
        session = requests.Session()
        # Retries are ours (with jitter and Retry-After); urllib3's own retry
        # layer would multiply the attempt count, so switch it off.
        adapter = HTTPAdapter(
            pool_connections=4, pool_maxsize=self.pool_size, max_retries=0
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = self.user_agent
        return session

    def close(self):
        """Close the pooled connections.  The client can be used again."""
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- retry policy ------------------------------------------------------

    def backoff_delay(self, retry_index, retry_after=None):
        """Seconds to wait before retry number ``retry_index`` (0-based).

        Parameters
        ----------
        retry_index : int
            How many retries came before this one.
        retry_after : float, optional
            Seconds the server asked for (``Retry-After``).  When given it is
            honoured, capped at ``max_retry_after``, instead of the jittered
            exponential wait.

        Returns
        -------
        float
            Seconds.
        """
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        ceiling = min(self.max_backoff, self.backoff * (2.0**retry_index))
        with self._rng_lock:
            return self._rng.uniform(0.0, ceiling)

    def call(self, send, url, check=None):
        """Run ``send()`` with the retry policy.

        This is the loop behind :meth:`get`, exposed so a backend that lets
        another library build or send the request can still share the
        policy.

        Parameters
        ----------
        send : callable
            ``send() -> requests.Response``; must read the body (no
            streaming) so that mid-body failures happen inside the call.
        url : str
            For error messages.
        check : callable, optional
            ``check(response)`` run on 2xx responses; raise
            :class:`RetryableResponseError` to retry, any other exception
            to stop.  Its return value is ignored.

        Returns
        -------
        requests.Response
            A 2xx (or 3xx, if redirects were not followed) response.

        Raises
        ------
        HttpFetchError
            A 4xx other than 429 (at once), or any retryable failure on the
            last attempt.
        """
        attempts = self.max_retries + 1
        last_status = None
        last_problem = "no attempt made"
        for attempt in range(attempts):
            retry_after = None
            try:
                response = send()
            except _TRANSIENT_EXCEPTIONS as exc:
                last_status = None
                last_problem = f"{type(exc).__name__}: {exc}"
            except requests.exceptions.RequestException as exc:
                # Malformed URL, bad schema, too many redirects: retrying
                # cannot help.
                raise HttpFetchError(
                    f"request to {url} failed: {type(exc).__name__}: {exc}",
                    url=url,
                    attempts=attempt + 1,
                ) from exc
            else:
                url = response.url or url
                last_status = response.status_code
                if response.status_code in RETRY_STATUSES:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    if response.status_code in pacing.THROTTLE_STATUSES:
                        # Capped as the wait is, so a server cannot park the run.
                        pacing.report_throttled(
                            None if retry_after is None else min(retry_after,
                                                                 self.max_retry_after))
                    last_problem = (
                        f"HTTP {response.status_code} {response.reason or ''}".strip()
                    )
                    body = _snippet(response)
                    if body:
                        last_problem += f": {body}"
                    # Read fully already; hand the connection back to the pool.
                    response.close()
                elif response.status_code >= 400:
                    body = _snippet(response)
                    raise HttpFetchError(
                        f"GET {url} failed: HTTP {response.status_code} "
                        f"{response.reason or ''}".rstrip()
                        + (f": {body}" if body else ""),
                        url=url,
                        status=response.status_code,
                        attempts=attempt + 1,
                    )
                else:
                    try:
                        if check is not None:
                            check(response)
                    except RetryableResponseError as exc:
                        last_problem = f"damaged response: {exc}"
                    else:
                        pacing.report_success()
                        return response
            if attempt + 1 < attempts:
                delay = self.backoff_delay(attempt, retry_after)
                log.debug(
                    "attempt %d/%d for %s failed (%s); retrying in %.3g s",
                    attempt + 1,
                    attempts,
                    url,
                    redact_text(last_problem),
                    delay,
                )
                if delay > 0:
                    # Other requests may go out meanwhile (within the limit).
                    with pacing.released():
                        self._sleep(delay)
        status_text = "no response" if last_status is None else f"HTTP {last_status}"
        raise HttpFetchError(
            f"GET {url} failed after {attempts} attempt(s); last status: {status_text}; "
            f"last problem: {last_problem}",
            url=url,
            status=last_status,
            attempts=attempts,
        )

    def get(self, url, params=None, *, check=None, headers=None, timeout=None, max_bytes=None):
        """Send a GET request with retries, reading the body within bounds.

        Parameters
        ----------
        url : str
            Absolute URL.
        params : dict, optional
            Query parameters.
        check : callable, optional
            Validates a 2xx response; see :meth:`call`.
        headers : dict, optional
            Extra request headers.
        timeout : float, optional
            Overrides the client's timeout (seconds) for this call.
        max_bytes : int, optional
            Overrides the client's byte cap for this call (e.g. the cap of
            the payload format asked for).

        Returns
        -------
        requests.Response
            With the body already read; its ``url`` carries no user name
            or password.

        Raises
        ------
        ResponseTooLargeError
            The body (decoded) is larger than the cap; not retried.
        HttpFetchError
            See :meth:`call`.
        """
        timeout = self.timeout if timeout is None else timeout
        cap = self.max_bytes if max_bytes is None else int(max_bytes)
        try:
            full_url = redact_url(requests.Request("GET", url, params=params).prepare().url)
        except requests.exceptions.RequestException as exc:
            raise HttpFetchError(f"bad URL {url!r}: {exc}", url=url) from exc

        def send():
            started = time.monotonic()
            response = self.session.get(url, params=params, headers=headers, timeout=timeout,
                                        stream=True)
            try:
                _read_body(response, cap, None if self.deadline is None
                           else started + self.deadline)
            except BaseException:
                response.close()
                raise
            response.url = redact_url(response.url or full_url)
            return response

        return self.call(send, full_url, check=check)


# Bytes asked of the socket per read: small, so each read returns what has
# arrived (read1) and a gzip stream is inflated a little at a time.
_READ_CHUNK = 64 * 1024


def _read_body(response, cap, deadline_at):
    """Read a streamed body into ``response`` within a byte cap and a deadline.

    ``deadline_at`` is a ``time.monotonic()`` value or None.  Each read waits
    at most the client's socket timeout, so the deadline is overrun by at
    most that much.
    """
    declared = response.headers.get("Content-Length", "")
    encoded = response.headers.get("Content-Encoding", "identity").strip().lower()
    if declared.isdigit() and int(declared) > cap and encoded in ("", "identity"):
        raise ResponseTooLargeError(
            f"{response.url} announced {int(declared)} bytes, more than the cap of {cap}",
            url=response.url, status=response.status_code, attempts=1)
    raw = response.raw
    read = getattr(raw, "read1", None) or raw.read
    parts, size = [], 0
    while True:
        piece = read(_READ_CHUNK, decode_content=True)
        if not piece:
            break
        size += len(piece)
        if size > cap:
            raise ResponseTooLargeError(
                f"{response.url} sent more than the cap of {cap} bytes"
                + (" (after decompression)" if encoded not in ("", "identity") else ""),
                url=response.url, status=response.status_code, attempts=1)
        parts.append(piece)
        if deadline_at is not None and time.monotonic() > deadline_at:
            raise TransferDeadlineError(
                f"transfer of {redact_url(response.url)} not finished by its deadline "
                f"({size} bytes received)")
    # What requests itself does once it has read a body: later .content,
    # .text and .json() use these bytes, and close() hands the connection
    # back to the pool instead of closing it.
    response._content = b"".join(parts)
    response._content_consumed = True


# Content types that are certainly not an image: the viewer answers an
# unknown layer with 200 text/plain, and proxies answer with HTML pages.
TEXT_TYPES = ("text/", "application/json", "application/xhtml")

FITS_MAGIC = b"SIMPLE  ="


def resolve_base_url(base_url, env_name, default):
    """Base URL precedence: explicit argument > environment > configuration.

    Raises
    ------
    ValueError
        The URL chosen is not an ``http://`` or ``https://`` URL with a
        host (a missing scheme would otherwise fail every row, one by one).
    """
    for source, candidate in (("base_url", base_url), (env_name, os.environ.get(env_name)),
                              ("the configured server", default)):
        if candidate:
            if isinstance(candidate, (list, tuple)):
                # astropy config items may hold a list of mirrors.
                candidate = candidate[0]
            return _checked_url(str(candidate).rstrip("/"), source)
    raise ValueError("no server URL configured")


def _checked_url(url, source):
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError as exc:
        raise ValueError(f"{source}: {redact_url(url)!r} is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{source}: {redact_url(url)!r} is not an http:// or https:// URL "
                         "with a host name (e.g. https://www.legacysurvey.org/viewer)")
    return url


def describe_body(response, limit=120):
    text = response.content[:limit].decode("utf-8", "replace")
    return " ".join(text.split()) or "<empty body>"


def check_not_text(response, what):
    """Reject a 200 answer that is a message rather than an image."""
    ctype = response.headers.get("Content-Type", "").lower()
    if ctype.startswith(TEXT_TYPES):
        raise FetchError(
            f"{response.url} answered HTTP 200 with {ctype or 'no content type'} "
            f"instead of a {what}: {describe_body(response)!r}"
        )



def check_fits(response):
    """Reject a 200 answer that is not a whole FITS file (a retry may mend a cut one)."""
    check_not_text(response, "FITS file")
    if not response.content.startswith(FITS_MAGIC):
        raise FetchError(
            f"{response.url} answered HTTP 200 but the body is not a FITS file "
            f"({response.headers.get('Content-Type', 'no content type')}): "
            f"{describe_body(response)!r}"
        )
    # A FITS file is a whole number of 2880-byte blocks; anything else
    # was cut short in transit.
    if len(response.content) % 2880:
        raise RetryableResponseError(f"FITS file of {len(response.content)} bytes is truncated")

class HttpBackend(SurveyBackend):
    """A backend that talks to one web service through an :class:`HttpClient`.

    Subclasses set :attr:`env_url` and implement :meth:`default_server`;
    the server URL is then taken from the ``base_url`` argument, else that
    environment variable, else the default.  Parameters other than those
    of :class:`~lsbg_classify.surveys.SurveyBackend`: ``base_url``,
    ``timeout`` (seconds per connection attempt and socket read),
    ``max_retries``, ``workers_hint`` (sizes the connection pool),
    ``backoff`` (base of the retry backoff, seconds), ``deadline`` (seconds
    one transfer may take in all, default
    :data:`~lsbg_classify.limits.TRANSFER_DEADLINE`), ``max_bytes`` (cap of
    one answer in bytes, an int or a dict by format; default
    :data:`~lsbg_classify.limits.MAX_PAYLOAD_BYTES`) and ``http`` (a client
    to use instead of making one).

    A user name and password in ``base_url`` are used to log in but are
    left out of :meth:`describe` and of every message.
    """

    #: Environment variable that names the server.
    env_url = None

    def __init__(self, survey="des", image_format=None, base_url=None, timeout=None,
                 max_retries=None, workers_hint=32, *, backoff=None, http=None, deadline=None,
                 max_bytes=None):
        super().__init__(survey=survey, image_format=image_format)
        default_url, default_timeout = self.default_server()
        self.base_url = resolve_base_url(base_url, self.env_url, default_url)
        #: Most bytes one answer may have (after decompression).
        self.max_bytes = payload_byte_cap(self.image_format, max_bytes)
        self.http = http or HttpClient.for_backend(
            default_timeout if timeout is None else timeout, max_retries, backoff, workers_hint,
            deadline
        )

    def describe(self):
        """Provenance, with the server URL stripped of any user name and password."""
        info = super().describe()
        info["server"] = redact_url(self.base_url)
        return info

    def default_server(self):
        """(server URL, timeout in seconds) from the service's configuration."""
        raise NotImplementedError

    def close(self):
        """Close the HTTP connections."""
        self.http.close()
