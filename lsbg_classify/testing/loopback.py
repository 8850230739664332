"""Loopback stand-ins for the remote cutout services.

Tests, benchmarks and offline demonstrations need a server that behaves
like the Legacy Surveys viewer or CDS hips2fits -- same URLs, same
parameters, same failure modes -- without touching the internet.  The two
servers here listen on ``127.0.0.1`` (a free port chosen by the OS), render
their images with :mod:`lsbg_classify.simulation`, and can be scripted to
misbehave (HTTP errors, rate limiting, slow or broken responses) so the
client's retry logic can be exercised through a real socket.

Examples
--------
>>> from lsbg_classify.testing.loopback import LoopbackViewer, Fault
>>> from lsbg_classify.surveys.legacysurvey import LegacySurveyBackend
>>> with LoopbackViewer(latency=0.1) as viewer:               # doctest: +SKIP
...     viewer.add_faults(503, Fault(status=429, retry_after=1))
...     backend = LegacySurveyBackend("des", base_url=viewer.url)
...     payload = backend.download(150.0, 2.0)  # succeeds on the 3rd request
...     viewer.counts["cutout.jpg"]
3
"""

import collections
import functools
import io
import json
import math
import mimetypes
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import numpy as np

__all__ = [
    "Fault",
    "RequestInfo",
    "LoopbackViewer",
    "LoopbackHips2fits",
    "LoopbackFileHost",
    "VIEWER_LAYERS",
    "DEFAULT_MAX_DEC",
]

#: Declination (deg) north of which the simulated sky has no coverage.
DEFAULT_MAX_DEC = 80.0

#: Viewer layers the loopback knows: layer -> (simulated survey, native
#: pixel scale in arcsec/pix, bands available in FITS cutouts).  The HSC
#: aliases follow the real viewer (hsc2 and hsc name hsc-dr2).
VIEWER_LAYERS = {
    "des-dr1": ("des", 0.262, "grz"),
    "hsc-dr2": ("hsc", 0.168, "gri"),
    "hsc2": ("hsc", 0.168, "gri"),
    "hsc": ("hsc", 0.168, "gri"),
    "hsc-dr3": ("hsc", 0.168, "gri"),
}

# Documented maximum cutout side of the viewer; larger requests are clipped.
_MAX_SIZE = 512

_ACTIONS = ("reset", "truncate", "html", "no_layer", "wrong_size", "blank")


@dataclass
class Fault:
    """One scripted misbehaviour of a loopback server.

    Parameters
    ----------
    status : int, optional
        Answer with this HTTP status and a short text body instead of an
        image (e.g. 500, 502, 503, 404, 429).
    retry_after : float or str, optional
        Value of the ``Retry-After`` header sent with ``status`` (seconds,
        or an HTTP date string).
    delay : float
        Seconds to wait before answering (a slow server; combine with a
        short client timeout to provoke a read timeout).  With no other
        field set the normal image follows the delay.
    action : str, optional
        One of

        ``"reset"``
            send the headers and half of the body, then reset the TCP
            connection (a connection dropped mid-body);
        ``"truncate"``
            send only the first half of the image with a matching
            ``Content-Length`` (transport fine, file damaged);
        ``"html"``
            HTTP 200 with an HTML error page;
        ``"no_layer"``
            HTTP 200, ``text/plain`` "no such layer" (what the viewer says
            for an unknown layer);
        ``"wrong_size"``
            a valid image of side ``size`` instead of the requested one;
        ``"blank"``
            answer as if the position were outside the footprint.
    size : int, optional
        Side in pixels for ``action="wrong_size"`` (default: half the
        requested side).
    body : bytes, optional
        Body for ``status`` answers.
    content_type : str, optional
        Content type for ``status`` answers (default ``text/plain``).
    headers : dict, optional
        Extra response headers (e.g. ``{"Content-Encoding": "gzip"}`` with
        a gzip ``body``: a decompression bomb).
    append : bytes, optional
        Junk sent after the normal image (its ``Content-Length`` counts it).
    drip : float
        Send the body one byte at a time, this many seconds apart (a server
        that is never silent long enough for a read timeout).

    Notes
    -----
    Wherever a fault is expected, a shorthand works too: an ``int`` is a
    status (``503``), a ``str`` an action (``"reset"``), and a ``(429, 2)``
    tuple a status with ``Retry-After``.
    """

    status: int = None
    retry_after: object = None
    delay: float = 0.0
    action: str = None
    size: int = None
    body: bytes = None
    content_type: str = None
    headers: dict = None
    append: bytes = None
    drip: float = 0.0

    def __post_init__(self):
        if self.action is not None and self.action not in _ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; choose from {_ACTIONS}")

    @classmethod
    def coerce(cls, spec):
        """Turn a shorthand (int, str, tuple, Fault or None) into a Fault."""
        if spec is None or isinstance(spec, Fault):
            return spec
        if isinstance(spec, bool):
            raise TypeError("a fault cannot be a bool")
        if isinstance(spec, int):
            return cls(status=spec)
        if isinstance(spec, str):
            return cls(action=spec)
        if isinstance(spec, tuple) and len(spec) == 2:
            return cls(status=int(spec[0]), retry_after=spec[1])
        raise TypeError(f"cannot make a Fault from {spec!r}")


@dataclass
class RequestInfo:
    """What a loopback server received (for tests and fault callables).

    Attributes
    ----------
    number : int
        1-based count of this request among all the server received.
    path : str
        URL path, e.g. ``/viewer/cutout.jpg``.
    endpoint : str
        Last path component without a trailing slash, e.g. ``cutout.jpg``
        or ``hips2fits``.
    params : dict
        Query parameters (last value wins), as strings.
    headers : dict
        Request headers.
    time : float
        ``time.monotonic()`` at arrival (seconds).
    client : tuple
        Client (host, port): equal ports mean a reused keep-alive
        connection.
    in_flight : int
        Requests being served when this one arrived, itself included.
    rate_limited : bool
        Answered 429 because more than ``concurrency_limit`` requests were
        in flight.
    """

    number: int
    path: str
    endpoint: str
    params: dict
    headers: dict = field(default_factory=dict)
    time: float = 0.0
    client: tuple = ()
    in_flight: int = 0
    rate_limited: bool = False


class _BadRequest(Exception):
    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str
    headers: dict = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so clients keep connections alive, as with the real services.
    protocol_version = "HTTP/1.1"
    server_version = "lsbg-classify-loopback"

    def setup(self):
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def do_GET(self):  # noqa: N802 (name fixed by http.server)
        self.server.owner._serve(self)

    def log_message(self, format, *args):
        # Quiet: tests and benchmarks send thousands of requests.
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A benchmark opens many connections at once.
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # Clients that time out and hang up are expected here; a traceback
        # on stderr for each would only hide real failures.
        pass


class _LoopbackServer:
    """Shared machinery: socket, thread, counting, faults, latency."""

    #: URL path under which the service lives (no trailing slash).
    prefix = ""

    def __init__(
        self,
        *,
        latency=0.0,
        faults=None,
        max_dec=DEFAULT_MAX_DEC,
        footprint=None,
        seed=0,
        render_jpeg=None,
        render_fits=None,
        host="127.0.0.1",
        port=0,
        concurrency_limit=None,
        limit_retry_after=None,
    ):
        self.latency = float(latency)
        self.concurrency_limit = concurrency_limit
        self.limit_retry_after = limit_retry_after
        self.in_flight = 0
        self.max_dec = float(max_dec)
        self.footprint = footprint
        self.seed = seed
        self._render_jpeg_fn = render_jpeg
        self._render_fits_fn = render_fits
        self._lock = threading.Lock()
        self._fault_queue = collections.deque()
        self._fault_callable = None
        self._stopping = threading.Event()
        self._connections = set()
        self.counts = collections.Counter()
        self.log = []
        self.total_requests = 0
        self.set_faults(faults)
        # Rendering dominates the server's CPU time; benchmarks ask for the
        # same cutouts again and again, so keep recent ones.
        self._cached_fits = functools.lru_cache(maxsize=512)(self._render_fits_cube)
        self._cached_jpeg = functools.lru_cache(maxsize=512)(self._render_jpeg_bytes)
        self._httpd = _Server((host, port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-{self.port}",
            daemon=True,
        )
        self._thread.start()

    # -- life cycle --------------------------------------------------------

    @property
    def host(self):
        """Bound address (``127.0.0.1``)."""
        return self._httpd.server_address[0]

    @property
    def port(self):
        """Bound TCP port (chosen by the OS)."""
        return self._httpd.server_address[1]

    @property
    def root_url(self):
        """``http://127.0.0.1:PORT`` without the service path."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self):
        """Base URL of the service, to give to a backend as ``base_url``."""
        return self.root_url + self.prefix

    def stop(self):
        """Stop serving and drop open connections.  Safe to call twice."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        # Keep-alive connections park a handler thread in a blocking read;
        # shutting the sockets down lets those threads end now.
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __del__(self):
        try:
            self.stop()
        except Exception:
            pass

    def _track(self, conn, add):
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # -- faults and counting ----------------------------------------------

    def set_faults(self, faults):
        """Replace the fault script.

        Parameters
        ----------
        faults : None, callable or iterable
            None: behave normally.  A callable ``faults(info) -> fault or
            None`` is asked for every request (``info`` is a
            :class:`RequestInfo`).  An iterable of faults (or shorthands,
            None meaning "serve normally") is used one per request, in
            order; once exhausted the server behaves normally.
        """
        with self._lock:
            self._fault_queue.clear()
            self._fault_callable = None
            if faults is None:
                return
            if callable(faults):
                self._fault_callable = faults
            else:
                self._fault_queue.extend(Fault.coerce(f) for f in faults)

    def add_faults(self, *faults):
        """Append faults (or shorthands) to the per-request script."""
        with self._lock:
            self._fault_queue.extend(Fault.coerce(f) for f in faults)

    def clear_faults(self):
        """Remove every scripted fault."""
        self.set_faults(None)

    @property
    def pending_faults(self):
        """Number of scripted faults not used yet."""
        with self._lock:
            return len(self._fault_queue)

    def reset_counts(self):
        """Zero the request counters and clear the log."""
        with self._lock:
            self.counts.clear()
            self.log.clear()
            self.total_requests = 0

    def _next_fault(self, info):
        with self._lock:
            if self._fault_queue:
                return self._fault_queue.popleft()
            fn = self._fault_callable
        return Fault.coerce(fn(info)) if fn is not None else None

    def _wait(self, seconds):
        # Interruptible, so stop() does not wait for a scripted slow reply.
        if seconds > 0:
            self._stopping.wait(seconds)

    # -- footprint and rendering ------------------------------------------

    def in_footprint(self, ra, dec):
        """Whether the simulated survey covers (ra, dec) in degrees."""
        if self.footprint is not None:
            return bool(self.footprint(ra, dec))
        return dec <= self.max_dec

    def _renderers(self):
        if self._render_jpeg_fn is None or self._render_fits_fn is None:
            # Imported late: the simulator pulls in heavier dependencies and
            # a test may supply its own renderers.
            from ..simulation.render import render_fits, render_jpeg

            if self._render_jpeg_fn is None:
                self._render_jpeg_fn = render_jpeg
            if self._render_fits_fn is None:
                self._render_fits_fn = render_fits
        return self._render_jpeg_fn, self._render_fits_fn

    def _render_fits_cube(self, ra, dec, survey, size, pixel_scale):
        from astropy.io import fits

        _, render_fits = self._renderers()
        data = render_fits(ra, dec, survey, seed=self.seed, size=size, pixel_scale=pixel_scale)
        with fits.open(io.BytesIO(data)) as hdul:
            cube = np.asarray(hdul[0].data, dtype=np.float32)
            header = hdul[0].header.copy()
        cube.setflags(write=False)
        return cube, header

    def _render_jpeg_bytes(self, ra, dec, survey, size, pixel_scale):
        render_jpeg, _ = self._renderers()
        return render_jpeg(ra, dec, survey, seed=self.seed, size=size, pixel_scale=pixel_scale)

    # -- request handling --------------------------------------------------

    def _serve(self, handler):
        with self._lock:
            self.in_flight += 1
        try:
            self._serve_counted(handler)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _rate_limit_reply(self):
        reply = _text_reply(429, f"more than {self.concurrency_limit} concurrent requests")
        if self.limit_retry_after is not None:
            reply.headers["Retry-After"] = str(self.limit_retry_after)
        return reply

    def _serve_counted(self, handler):
        split = urlsplit(handler.path)
        params = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        endpoint = split.path.rstrip("/").rsplit("/", 1)[-1]
        with self._lock:
            self.total_requests += 1
            info = RequestInfo(
                number=self.total_requests,
                path=split.path,
                endpoint=endpoint,
                params=params,
                headers=dict(handler.headers.items()),
                time=time.monotonic(),
                client=tuple(handler.client_address),
                in_flight=self.in_flight,
            )
            limit = self.concurrency_limit
            info.rate_limited = limit is not None and self.in_flight > limit
            self.counts[endpoint] += 1
            if info.rate_limited:
                self.counts["rate_limited"] += 1
            self.log.append(info)
        if info.rate_limited:
            # A rate limiter answers at once, before any work.
            self._send(handler, self._rate_limit_reply())
            return
        self._wait(self.latency)
        try:
            fault = self._next_fault(info)
        except Exception as exc:  # a broken test hook should be visible
            self._send(handler, _text_reply(500, f"fault hook failed: {exc!r}"))
            return
        if fault is not None:
            self._wait(fault.delay)
            if fault.status is not None:
                reply = _text_reply(fault.status, f"scripted HTTP {fault.status}")
                if fault.body is not None:
                    reply.body = fault.body
                if fault.content_type is not None:
                    reply.content_type = fault.content_type
                if fault.retry_after is not None:
                    reply.headers["Retry-After"] = str(fault.retry_after)
                reply.headers.update(fault.headers or {})
                self._send(handler, reply, fault.drip)
                return
            if fault.action == "html":
                self._send(handler, _html_reply(200, "Service temporarily unavailable"))
                return
            if fault.action == "no_layer":
                self._send(handler, _text_reply(200, "no such layer"))
                return
        try:
            reply = self._route(split.path.rstrip("/"), endpoint, params, fault)
        except _BadRequest as exc:
            reply = self._error_reply(exc.status, str(exc))
        except Exception as exc:  # mirror a server crash, keep serving
            reply = self._error_reply(500, f"internal error: {exc!r}")
        if fault is not None and fault.action == "truncate" and reply.status == 200:
            reply.body = reply.body[: max(1, len(reply.body) // 2)]
        if fault is not None and fault.action == "reset":
            self._send_and_reset(handler, reply)
            return
        if fault is not None and reply.status == 200:
            reply.body += fault.append or b""
            reply.headers.update(fault.headers or {})
        self._send(handler, reply, 0.0 if fault is None else fault.drip)

    def _error_reply(self, status, message):
        return _text_reply(status, message)

    def _route(self, path, endpoint, params, fault):
        raise NotImplementedError

    def _send(self, handler, reply, drip=0.0):
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", reply.content_type)
            handler.send_header("Content-Length", str(len(reply.body)))
            for key, value in reply.headers.items():
                handler.send_header(key, value)
            handler.end_headers()
            if drip <= 0:
                handler.wfile.write(reply.body)
                return
            for i in range(len(reply.body)):
                if self._stopping.is_set():
                    break
                handler.wfile.write(reply.body[i:i + 1])
                handler.wfile.flush()
                self._wait(drip)
        except OSError:
            # The client gave up (e.g. its timeout fired); nothing to do.
            handler.close_connection = True

    def _send_and_reset(self, handler, reply):
        handler.close_connection = True
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", reply.content_type)
            handler.send_header("Content-Length", str(len(reply.body)))
            handler.end_headers()
            handler.wfile.write(reply.body[: len(reply.body) // 2])
            handler.wfile.flush()
            # SO_LINGER with a zero timeout makes close() send RST rather
            # than FIN: the client sees "connection reset by peer" mid-body.
            handler.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            handler.connection.close()
        except OSError:
            pass


def _text_reply(status, text):
    return _Reply(status, (text + "\n").encode(), "text/plain; charset=utf-8")


def _html_reply(status, title):
    body = (
        "<!DOCTYPE html>\n<html><head><title>{0}</title></head>"
        "<body><h1>{0}</h1><p>Please try again later.</p></body></html>\n"
    ).format(title)
    return _Reply(status, body.encode(), "text/html; charset=utf-8")


def _float_param(params, name, required=True, default=None):
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise _BadRequest(f"missing required parameter {name!r}")
        return default
    try:
        number = float(value)
    except ValueError:
        raise _BadRequest(f"parameter {name!r} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise _BadRequest(f"parameter {name!r} is not finite: {value!r}")
    return number


def _int_param(params, name, default=None):
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(float(value))
    except ValueError:
        raise _BadRequest(f"parameter {name!r} is not an integer: {value!r}") from None


def _position(params, ra_name="ra", dec_name="dec"):
    ra = _float_param(params, ra_name)
    dec = _float_param(params, dec_name)
    if not -90.0 <= dec <= 90.0:
        raise _BadRequest(f"dec must lie in [-90, 90] deg, got {dec}")
    return ra % 360.0, dec


def _crop(array, ny, nx):
    """Centre crop of the last two axes to (ny, nx)."""
    full_y, full_x = array.shape[-2:]
    y0 = (full_y - ny) // 2
    x0 = (full_x - nx) // 2
    return array[..., y0 : y0 + ny, x0 : x0 + nx]


def _jpeg_bytes(rgb):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _fits_bytes(data, header):
    from astropy.io import fits

    buf = io.BytesIO()
    fits.PrimaryHDU(data=data, header=header).writeto(buf)
    return buf.getvalue()


def _tan_header(header, ra, dec, pixel_scale, ny, nx):
    """Minimal celestial TAN WCS centred on (ra, dec); pixel_scale in arcsec/pix."""
    header["CTYPE1"] = "RA---TAN"
    header["CTYPE2"] = "DEC--TAN"
    header["CRVAL1"] = ra
    header["CRVAL2"] = dec
    header["CRPIX1"] = (nx + 1) / 2.0
    header["CRPIX2"] = (ny + 1) / 2.0
    header["CDELT1"] = -pixel_scale / 3600.0
    header["CDELT2"] = pixel_scale / 3600.0
    header["CUNIT1"] = "deg"
    header["CUNIT2"] = "deg"
    return header


class LoopbackViewer(_LoopbackServer):
    """A loopback Legacy Surveys viewer (cutout service only).

    Serves ``{url}/cutout.jpg``, ``{url}/cutout.fits`` and the older
    ``{url}/jpeg-cutout`` / ``{url}/fits-cutout`` (trailing slash optional),
    where ``url`` is ``http://127.0.0.1:PORT/viewer``.

    Parameters
    ----------
    latency : float
        Seconds added to every request before it is answered (e.g. 0.1 to
        mimic a transatlantic round trip in benchmarks).
    faults : None, callable or iterable
        Scripted misbehaviour; see :meth:`set_faults` and :class:`Fault`.
        Can be changed later with :meth:`set_faults` / :meth:`add_faults`.
    max_dec : float
        Declination (deg) north of which there is no coverage: JPEG
        requests get a blank constant image and FITS requests HTTP 500,
        as the real viewer does outside its footprint.
    footprint : callable, optional
        ``footprint(ra, dec) -> bool`` (deg) replacing the ``max_dec`` rule.
    seed : int
        Seed handed to the simulator (same seed, same sky).
    render_jpeg, render_fits : callable, optional
        Replace :func:`lsbg_classify.simulation.render.render_jpeg` /
        ``render_fits`` (same signature).
    host, port : str, int
        Where to listen; the defaults bind a free port on 127.0.0.1.
    concurrency_limit : int, optional
        Answer HTTP 429 at once to a request that arrives while more than
        this many (itself included) are being served, like a service's
        rate limiter.  Can be changed later (attribute of the same name).
    limit_retry_after : float, optional
        ``Retry-After`` (seconds) sent with those 429 answers.

    Attributes
    ----------
    counts : collections.Counter
        Requests per endpoint (``"cutout.jpg"``, ``"cutout.fits"``,
        ``"jpeg-cutout"``, ``"fits-cutout"``, or anything else asked for),
        and ``"rate_limited"``: those answered 429 for ``concurrency_limit``.
    total_requests : int
        All requests received.
    log : list of RequestInfo
        Every request, in arrival order.

    Notes
    -----
    Like the real viewer: ``ra`` and ``dec`` (deg) are required (HTTP 400
    otherwise); an unknown ``layer`` gets HTTP 200 with the text "no such
    layer"; ``pixscale`` (arcsec/pix) wins over ``zoom`` (pixscale = native
    * 2**(14 - zoom)); ``size`` (default 256) or ``width``/``height`` are
    clipped to 512; FITS cutouts are a primary-HDU cube (nbands, ny, nx) of
    the ``bands`` asked for (default: all of the layer's) with a ``BANDS``
    header card.
    """

    prefix = "/viewer"

    _JPEG_ENDPOINTS = ("cutout.jpg", "jpeg-cutout")
    _FITS_ENDPOINTS = ("cutout.fits", "fits-cutout")

    def __init__(self, *, default_layer="des-dr1", **options):
        self.default_layer = default_layer
        super().__init__(**options)

    def _route(self, path, endpoint, params, fault):
        if not path.startswith(self.prefix + "/"):
            raise _BadRequest(f"no such page: {path}", status=404)
        if endpoint in self._JPEG_ENDPOINTS:
            kind = "jpeg"
        elif endpoint in self._FITS_ENDPOINTS:
            kind = "fits"
        else:
            raise _BadRequest(f"no such page: {path}", status=404)
        ra, dec = _position(params)
        layer = params.get("layer") or self.default_layer
        if layer not in VIEWER_LAYERS:
            # What the real viewer does: 200, text, no image.
            return _text_reply(200, "no such layer")
        survey, native, layer_bands = VIEWER_LAYERS[layer]
        pixscale = _float_param(params, "pixscale", required=False)
        if pixscale is None:
            zoom = _int_param(params, "zoom", default=14)
            pixscale = native * 2.0 ** (14 - zoom)
        if pixscale <= 0:
            raise _BadRequest(f"pixscale must be positive, got {pixscale}")
        size = _int_param(params, "size", default=256)
        width = min(_MAX_SIZE, max(1, _int_param(params, "width", default=size)))
        height = min(_MAX_SIZE, max(1, _int_param(params, "height", default=size)))
        if fault is not None and fault.action == "wrong_size":
            width = height = fault.size or max(1, min(width, height) // 2)
        blank = not self.in_footprint(ra, dec) or (fault is not None and fault.action == "blank")
        side = max(width, height)
        if kind == "jpeg":
            if blank:
                return _Reply(200, _blank_jpeg(survey, height, width), "image/jpeg")
            if (width, height) == (side, side):
                body = self._cached_jpeg(ra, dec, survey, side, pixscale)
            else:
                from PIL import Image

                full = Image.open(io.BytesIO(self._cached_jpeg(ra, dec, survey, side, pixscale)))
                body = _jpeg_bytes(_crop(np.moveaxis(np.asarray(full), -1, 0), height, width)
                                   .transpose(1, 2, 0).copy())
            return _Reply(200, body, "image/jpeg")
        bands = params.get("bands") or layer_bands
        unknown = [b for b in bands if b not in layer_bands]
        if unknown:
            raise _BadRequest(f"bands {''.join(unknown)!r} not available in layer {layer}")
        if blank:
            # The real viewer fails with a server error outside the footprint.
            return _html_reply(500, "Server Error (500)")
        cube, header = self._cached_fits(ra, dec, survey, side, pixscale)
        cube = _crop(cube, height, width)
        cube = np.stack([cube[layer_bands.index(b)] for b in bands]).astype(np.float32)
        header = header.copy()
        header["BANDS"] = bands
        for i, band in enumerate(bands):
            header[f"BAND{i}"] = band
        if "CTYPE1" not in header:
            _tan_header(header, ra, dec, pixscale, height, width)
        return _Reply(200, _fits_bytes(cube, header), "image/fits")


def _blank_jpeg(survey, ny, nx):
    """The constant image the viewer sends where there is no data."""
    from ..colour import DES_MAPPING, HSC_MAPPING, asinh_rgb

    mapping = HSC_MAPPING if survey == "hsc" else DES_MAPPING
    rgb = asinh_rgb(np.zeros((3, 1, 1)), mapping)
    value = np.round(rgb[0, 0] * 255).astype(np.uint8)
    return _jpeg_bytes(np.broadcast_to(value, (ny, nx, 3)).copy())


def _hips_ids():
    from ..surveys.base import SURVEYS

    return {
        hips_id: (info.name, info.bands.index(band))
        for info in SURVEYS.values()
        for band, hips_id in info.hips_ids.items()
    }


class LoopbackHips2fits(_LoopbackServer):
    """A loopback CDS hips2fits service (the GET API astroquery sends).

    ``url`` is ``http://127.0.0.1:PORT/hips-image-services/hips2fits`` --
    the endpoint itself, as in ``astroquery.hips2fits.conf.server``.

    Parameters
    ----------
    latency, faults, max_dec, footprint, seed, render_jpeg, render_fits, host, port
        As for :class:`LoopbackViewer`.  Outside the footprint the answer
        is an all-NaN image (HTTP 200), like a HiPS without data there.

    Notes
    -----
    Accepted parameters: ``hips`` (one of the per-band DES DR2 / HSC DR2
    wide ids in :data:`lsbg_classify.surveys.SURVEYS`), ``width``,
    ``height`` (pix), ``projection`` (only ``TAN``), ``fov`` (deg, along the
    larger side), ``ra``, ``dec`` (deg), ``format`` (only ``fits``), and
    the cosmetic ``coordsys``, ``rotation_angle``, ``min_cut``,
    ``max_cut``, ``stretch``, ``cmap``.  Errors are HTTP 400 with a JSON
    body ``{"title": ..., "description": ...}`` like the real service.
    The image is one band plane of the simulator's FITS cube.
    """

    prefix = "/hips-image-services/hips2fits"

    def _error_reply(self, status, message):
        body = json.dumps({"title": "Bad request" if status < 500 else "Server error",
                           "description": message}).encode()
        return _Reply(status, body, "application/json")

    def _route(self, path, endpoint, params, fault):
        if path != self.prefix:
            raise _BadRequest(f"no such page: {path}", status=404)
        if "wcs" in params:
            raise _BadRequest("the loopback hips2fits does not support the 'wcs' parameter")
        hips = params.get("hips")
        known = _hips_ids()
        if not hips:
            raise _BadRequest("missing required parameter 'hips'")
        if hips not in known:
            raise _BadRequest(f"HiPS {hips!r} not found")
        fmt = params.get("format", "fits")
        if fmt != "fits":
            raise _BadRequest(f"the loopback hips2fits only produces fits, not {fmt!r}")
        projection = params.get("projection")
        if projection is None:
            raise _BadRequest("missing required parameter 'projection'")
        if projection.upper() != "TAN":
            raise _BadRequest(f"the loopback hips2fits only does TAN, not {projection!r}")
        if params.get("coordsys", "icrs") != "icrs":
            raise _BadRequest("the loopback hips2fits only does coordsys=icrs")
        width = _int_param(params, "width")
        height = _int_param(params, "height")
        if width is None or height is None:
            raise _BadRequest("missing required parameter 'width' or 'height'")
        if not (0 < width <= 4096 and 0 < height <= 4096):
            raise _BadRequest("width and height must lie in 1..4096")
        fov = _float_param(params, "fov")
        if fov <= 0:
            raise _BadRequest("fov must be positive (deg)")
        ra, dec = _position(params)
        survey, band_index = known[hips]
        if fault is not None and fault.action == "wrong_size":
            width = height = fault.size or max(1, min(width, height) // 2)
        side = max(width, height)
        pixel_scale = fov * 3600.0 / side  # arcsec/pix
        header_extra = {}
        blank = not self.in_footprint(ra, dec) or (fault is not None and fault.action == "blank")
        if blank:
            image = np.full((height, width), np.nan, dtype=np.float32)
        else:
            cube, header = self._cached_fits(ra, dec, survey, side, pixel_scale)
            image = np.array(_crop(cube[band_index], height, width), dtype=np.float32)
            for key in ("BUNIT", "MAGZERO"):
                if key in header:
                    header_extra[key] = header[key]
        from astropy.io import fits

        header = fits.Header()
        _tan_header(header, ra, dec, pixel_scale, height, width)
        header["HIPS"] = hips
        header.update(header_extra)
        return _Reply(200, _fits_bytes(image, header), "application/fits")


class LoopbackFileHost(_LoopbackServer):
    """A loopback static file server (e.g. a stand-in for a GitHub raw host).

    Serves ``{url}/<name>`` for every file it holds, where ``url`` is
    ``http://127.0.0.1:PORT`` followed by ``prefix``.  Files come from a
    mapping ``name -> bytes`` and/or the plain files directly inside a
    directory (the mapping wins); sub-folders and ``..`` are never served.
    Unknown names get HTTP 404.

    Parameters
    ----------
    files : dict of str to bytes, optional
        File contents by name.
    directory : path-like, optional
        Serve the files of this directory too (read at each request).
    prefix : str
        URL path under which the files live (default ``/files``).
    latency, faults, host, port
        As for :class:`LoopbackViewer`: seconds added to every request,
        scripted misbehaviour (:class:`Fault`; ``"truncate"`` and
        ``"reset"`` damage the file sent), where to listen.

    Attributes
    ----------
    counts : collections.Counter
        Requests per file name.
    total_requests : int
    log : list of RequestInfo
    """

    def __init__(self, files=None, directory=None, *, prefix="/files", latency=0.0, faults=None,
                 host="127.0.0.1", port=0):
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.directory = None if directory is None else Path(directory)
        self._files = {str(k): bytes(v) for k, v in (files or {}).items()}
        super().__init__(latency=latency, faults=faults, host=host, port=port)

    def set_file(self, name, content):
        """Serve ``content`` (bytes) as ``name`` from now on (replacing any)."""
        with self._lock:
            self._files[str(name)] = bytes(content)

    def remove_file(self, name):
        """Stop serving ``name`` from the mapping (404 unless in ``directory``)."""
        with self._lock:
            self._files.pop(str(name), None)

    def file_url(self, name):
        """Full URL of one file."""
        return f"{self.url}/{quote(name)}"

    def _content(self, name):
        with self._lock:
            if name in self._files:
                return self._files[name]
        if self.directory is None or not name or name in (".", "..") or name != Path(name).name:
            return None
        path = self.directory / name
        return path.read_bytes() if path.is_file() else None

    def _route(self, path, endpoint, params, fault):
        if not path.startswith(self.prefix + "/"):
            raise _BadRequest(f"no such page: {path}", status=404)
        name = unquote(path[len(self.prefix) + 1:])
        body = self._content(name)
        if body is None:
            raise _BadRequest(f"no such file: {name}", status=404)
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return _Reply(200, body, ctype)
