"""Cutouts from the DESI Legacy Surveys sky viewer.

This is where the DeepShadows paper took its images: 256 x 256 JPEG
cutouts of the ``des-dr1`` layer (``hsc2`` for HSC) at ``zoom=15``, i.e.
half the native pixel scale.  We send the equivalent explicit ``pixscale``
(0.131 arcsec/pix for DES, 0.084 for HSC) rather than ``zoom``, so the
request does not depend on the viewer's zoom convention.

The viewer can also return the band images as FITS (``cutout.fits``),
which lets :mod:`lsbg_classify.pipeline.preprocess` apply the colour mapping itself.

Configuration follows astroquery's style::

    from lsbg_classify.surveys.legacysurvey import conf
    conf.server = "https://my-mirror.example.org/viewer"

and the ``LSBG_CLASSIFY_LEGACYSURVEY_URL`` environment variable overrides
``conf.server`` (handy on a cluster); a ``base_url`` given to the backend
wins over both.
"""

import io
import warnings
from urllib.parse import urlencode

import numpy as np
import requests
from astropy import config as _config

from .base import FITS, JPEG, FetchError, NoCoverageError, Payload
from .http import HttpBackend, RetryableResponseError, check_fits, check_not_text, describe_body
from .payload import UnreadablePayload, decode_rgb, is_blank, read_fits_image

__all__ = ["Conf", "conf", "LegacySurveyBackend", "ENV_URL", "PUBLIC_VIEWER", "jpeg_length",
           "trim_jpeg"]

#: Environment variable that overrides ``conf.server``.
ENV_URL = "LSBG_CLASSIFY_LEGACYSURVEY_URL"

#: The public viewer (also used for links in inspection sheets).
PUBLIC_VIEWER = "https://www.legacysurvey.org/viewer"


class Conf(_config.ConfigNamespace):
    """Configuration of the Legacy Surveys viewer backend."""

    server = _config.ConfigItem(
        PUBLIC_VIEWER,
        "Base URL of the Legacy Surveys viewer (the cutout endpoints live below it).",
    )
    timeout = _config.ConfigItem(
        30.0,
        "Seconds to wait for the connection and for each read from the viewer.",
    )


conf = Conf()

_ENDPOINTS = {JPEG: "cutout.jpg", FITS: "cutout.fits"}

_JPEG_MAGIC = b"\xff\xd8\xff"


def jpeg_length(data):
    """Length of the JPEG at the start of ``data``, up to its end-of-image marker.

    Walks the marker segments (skipping each by its length) and the
    entropy-coded data of every scan, so bytes that merely look like a
    marker inside a segment (an EXIF thumbnail, say) do not end the image.

    Parameters
    ----------
    data : bytes

    Returns
    -------
    int or None
        Bytes up to and including ``FF D9``; None when ``data`` does not
        start with a JPEG or ends before its end-of-image marker.
    """
    n = len(data)
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i < n:
        if data[i] != 0xFF:
            return None
        while i < n and data[i] == 0xFF:  # fill bytes before a marker
            i += 1
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker == 0xD9:
            return i
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        if i + 2 > n or int.from_bytes(data[i:i + 2], "big") < 2:
            return None
        i += int.from_bytes(data[i:i + 2], "big")
        if marker == 0xDA:
            i = _end_of_scan(data, i)
            if i is None:
                return None
    return None


def _end_of_scan(data, i):
    """Offset of the marker that ends the entropy-coded data starting at ``i``."""
    while True:
        j = data.find(b"\xff", i)
        if j < 0 or j + 1 >= len(data):
            return None
        following = data[j + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:  # stuffed byte, restart marker
            i = j + 2
        elif following == 0xFF:  # fill byte
            i = j + 1
        else:
            return j


def trim_jpeg(data):
    """``data`` cut after its JPEG's end-of-image marker (unchanged if there is none)."""
    end = jpeg_length(data)
    return data if end is None else data[:end]


def normalise_fits_cube(data, bands, requested=None, extra_header=None, expected_size=None):
    """Turn a FITS answer into the payload cube: primary HDU (3, ny, nx).

    Parameters
    ----------
    data : bytes
        The FITS file as sent.
    bands : sequence of str
        Bands wanted, bluest first.
    requested : str, optional
        Bands in the order they were asked for; used when the file does not
        name its bands.
    extra_header : dict, optional
        Cards added to the output header (provenance).
    expected_size : int, optional
        Required side of the planes in pixels.

    Returns
    -------
    bytes
        FITS file with a float32 cube of the bands in ``bands`` order and
        ``BANDS``/``BANDi`` cards; the celestial WCS is kept.

    Raises
    ------
    FetchError
        The file cannot be read, lacks a band or has the wrong size.
    NoCoverageError
        A band plane is entirely zero or NaN (no data there).
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    try:
        cube, header = read_fits_image(data)
    except UnreadablePayload as exc:
        raise FetchError(str(exc)) from exc
    if cube.ndim == 2:
        cube = cube[None]
    if cube.ndim != 3:
        raise FetchError(f"FITS answer has shape {cube.shape}, expected (nbands, ny, nx)")
    if expected_size is not None and cube.shape[1:] != (expected_size, expected_size):
        raise FetchError(
            f"FITS planes are {cube.shape[2]}x{cube.shape[1]} pix, "
            f"expected {expected_size}x{expected_size}"
        )
    have = header.get("BANDS")
    if have is None:
        have = "".join(str(header.get(f"BAND{i}", "")) for i in range(cube.shape[0]))
    # Header values are untrusted: a numeric or boolean BANDS card would
    # make len() below raise TypeError and escape download().
    have = str(have)
    if not have or len(have) != cube.shape[0]:
        have = requested if requested is not None else "".join(bands)
    have = str(have).strip()
    if len(have) != cube.shape[0]:
        raise FetchError(
            f"FITS answer has {cube.shape[0]} planes but names bands {have!r}"
        )
    missing = [b for b in bands if b not in have]
    if missing:
        raise FetchError(f"FITS answer lacks band(s) {''.join(missing)} (has {have!r})")
    cube = np.stack([cube[have.index(b)] for b in bands])
    for band, plane in zip(bands, cube):
        finite = plane[np.isfinite(plane)]
        if finite.size == 0 or not np.any(finite):
            raise NoCoverageError(f"no data in band {band} (all zero or NaN)")
    out = fits.Header()
    with warnings.catch_warnings():
        # Viewer headers carry cards astropy.wcs grumbles about; only the
        # celestial part matters here.
        warnings.simplefilter("ignore")
        try:
            out.update(WCS(header).celestial.to_header())
        except Exception:
            pass
    for key in ("BUNIT", "MAGZERO", "SURVEY"):
        if key in header:
            out[key] = header[key]
    out["BANDS"] = ("".join(bands), "bands of the cube planes, bluest first")
    for i, band in enumerate(bands):
        out[f"BAND{i}"] = band
    for key, value in (extra_header or {}).items():
        out[key] = value
    buf = io.BytesIO()
    fits.PrimaryHDU(data=cube, header=out).writeto(buf)
    return buf.getvalue()


class LegacySurveyBackend(HttpBackend):
    """Cutouts from the Legacy Surveys viewer, as in the DeepShadows paper.

    Parameters
    ----------
    survey : str or SurveyInfo
        ``"des"`` (layer ``des-dr1``, 0.131 arcsec/pix, bands grz) or
        ``"hsc"`` (layer ``hsc2``, 0.084 arcsec/pix, bands gri).
    image_format : str, optional
        ``"jpeg"`` (default; the viewer's colour composite, what the models
        were trained on) or ``"fits"`` (band images in nanomaggies, or
        survey units for HSC).
    base_url : str, optional
        Viewer base URL, e.g. a mirror or a
        :class:`~lsbg_classify.testing.loopback.LoopbackViewer`.  Default: the
        ``LSBG_CLASSIFY_LEGACYSURVEY_URL`` environment variable, else
        ``conf.server``.
    timeout : float, optional
        Seconds per connection attempt and socket read; default
        ``conf.timeout`` (30 s).
    max_retries : int, optional
        Retries after the first attempt (default 4).
    workers_hint : int
        Expected number of concurrent downloads; sizes the connection pool.
    backoff : float, optional
        Base of the exponential retry backoff in seconds (default 0.5).
    http : HttpClient, optional
        Use this client instead of making one (then ``timeout``,
        ``max_retries``, ``backoff`` and ``workers_hint`` are ignored).

    Examples
    --------
    >>> backend = LegacySurveyBackend("des")
    >>> backend.request_url(150.0, 2.5)
    'https://www.legacysurvey.org/viewer/cutout.jpg?ra=150.000000&dec=2.500000&layer=des-dr1&pixscale=0.131&size=256'
    """

    name = "legacysurvey"
    formats = (JPEG, FITS)

    env_url = ENV_URL

    def default_server(self):
        return conf.server, conf.timeout

    @property
    def layer(self):
        """The viewer layer read: ``des-dr1`` (DES) or ``hsc2`` (HSC)."""
        return self.survey.legacysurvey_layer

    @property
    def endpoint(self):
        """Full URL of the cutout endpoint for the current format."""
        return f"{self.base_url}/{_ENDPOINTS[self.image_format]}"

    @property
    def fits_bands(self):
        """Bands asked for in FITS mode, bluest first (``"grz"`` / ``"gri"``)."""
        return "".join(self.survey.bands)

    def request_params(self, ra, dec):
        """Query parameters for one position (deg)."""
        params = {
            "ra": f"{float(ra):.6f}",
            "dec": f"{float(dec):.6f}",
            "layer": self.survey.legacysurvey_layer,
            # %.6g gives "0.131" rather than "0.13100000000000001".
            "pixscale": f"{self.pixel_scale.to_value('arcsec / pix'):.6g}",
            "size": str(int(self.cutout_size)),
        }
        if self.image_format == FITS:
            params["bands"] = self.fits_bands
        return params

    def request_url(self, ra, dec):
        """Full cutout URL for (ra, dec) in degrees; nothing is sent."""
        return requests.Request("GET", self.endpoint, params=self.request_params(ra, dec)).prepare().url

    def viewer_url(self, ra, dec, zoom=16, base_url=None):
        """Link to the position in the interactive viewer, for inspection.

        Parameters
        ----------
        ra, dec : float
            Position in degrees.
        zoom : int
            Viewer zoom level (16: about 0.07 arcsec/pix for DES).
        base_url : str, optional
            Viewer to link to; default the public one, since a link in a
            saved inspection sheet should still work after the run (a
            loopback or private mirror may not).

        Returns
        -------
        str
        """
        query = urlencode(
            {
                "ra": f"{float(ra):.6f}",
                "dec": f"{float(dec):.6f}",
                "layer": self.survey.legacysurvey_layer,
                "zoom": int(zoom),
            }
        )
        return f"{(base_url or PUBLIC_VIEWER).rstrip('/')}?{query}"

    # Cutouts from a mirror are the same pixels, so the server is not part
    # of the cache key (the layer already is).
    def cache_salt(self):
        return ""

    def _check_jpeg(self, response):
        check_not_text(response, "JPEG")
        body = response.content
        if body.startswith(_JPEG_MAGIC) and jpeg_length(body) is None:
            # A JPEG that stops before its end-of-image marker was cut in transit.
            raise RetryableResponseError("JPEG ends before its end-of-image marker")
        body = trim_jpeg(body)
        if not body.startswith(_JPEG_MAGIC):
            raise FetchError(
                f"{response.url} answered HTTP 200 but the body is not a JPEG "
                f"({response.headers.get('Content-Type', 'no content type')}): "
                f"{describe_body(response)!r}"
            )
        from PIL import Image

        # Check the size the JPEG header declares *before* decoding: an
        # answer of the wrong size is refused without decoding it, and a
        # header that claims an absurd size (Pillow's DecompressionBombError,
        # which is not an OSError) must give this row fetch_failed instead of
        # escaping from download() and ending the whole run.
        size = int(self.cutout_size)
        try:
            with Image.open(io.BytesIO(body)) as img:
                declared = img.size
            if declared == (size, size):
                decode_rgb(body)
        except OSError as exc:
            # A damaged body with a valid start is a transfer problem.
            raise RetryableResponseError(f"JPEG cannot be decoded: {exc}") from exc
        except Exception as exc:  # untrusted bytes: any other decoder failure is final
            raise FetchError(
                f"{response.url} sent a JPEG that cannot be decoded: {type(exc).__name__}: {exc}"
            ) from exc
        if declared != (size, size):
            raise FetchError(
                f"{response.url} sent a {declared[0]}x{declared[1]} image, "
                f"expected {size}x{size}"
            )

    def download(self, ra, dec):
        """Fetch the cutout at (ra, dec) in degrees.

        Returns
        -------
        Payload
            The JPEG as sent, or a FITS cube (3, ny, nx), bluest band first.

        Raises
        ------
        NoCoverageError
            Blank JPEG, or a FITS band plane that is all zero / NaN.
        FetchError
            HTTP failure after retries, or a non-image answer (e.g. "no such
            layer", an HTML page), or an image of the wrong size.
        """
        params = self.request_params(ra, dec)
        if self.image_format == JPEG:
            response = self.http.get(self.endpoint, params, check=self._check_jpeg,
                                     max_bytes=self.max_bytes)
            # Bytes after the end-of-image marker are no part of the image;
            # they are neither decoded nor cached.
            data = trim_jpeg(response.content)
            array = decode_rgb(data)
            size = int(self.cutout_size)
            if array.shape[:2] != (size, size):
                raise FetchError(
                    f"{response.url} sent a {array.shape[1]}x{array.shape[0]} image, "
                    f"expected {size}x{size}"
                )
            if is_blank(array):
                raise NoCoverageError(
                    f"blank cutout at ra={float(ra):.6f} dec={float(dec):.6f}: "
                    f"outside the {self.layer} footprint"
                )
            return Payload(data, JPEG)
        # FITS: outside the footprint the viewer fails with HTTP 500, which
        # cannot be told from a real server error, so it stays a FetchError.
        response = self.http.get(self.endpoint, params, check=check_fits,
                                 max_bytes=self.max_bytes)
        try:
            data = normalise_fits_cube(
                response.content,
                self.survey.bands,
                requested=params["bands"],
                extra_header={"LAYER": self.layer, "PIXSCALE": float(params["pixscale"])},
                expected_size=int(self.cutout_size),
            )
        except FetchError as exc:
            raise FetchError(f"{response.url}: {exc}") from None
        except NoCoverageError as exc:
            raise NoCoverageError(
                f"ra={float(ra):.6f} dec={float(dec):.6f} outside the {self.layer} footprint: {exc}"
            ) from None
        return Payload(data, FITS)


