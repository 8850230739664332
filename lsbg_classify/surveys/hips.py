"""Cutouts from CDS hips2fits, one request per band.

hips2fits resamples a HiPS sky map onto any grid we ask for, so we ask for
exactly the paper's grid: 256 x 256 pixels, gnomonic (TAN) projection, at
0.131 arcsec/pix for DES (DES DR2 HiPS) and 0.084 arcsec/pix for HSC (HSC
PDR2 wide HiPS).  The three band images are stacked into the same payload
as the Legacy Surveys FITS mode: a primary-HDU cube (3, ny, nx), bluest
band first, with a ``BANDS`` card.

The request parameters are built by astroquery
(``hips2fits.query(..., get_query_payload=True)``), so they follow the
client CDS maintains; sending goes through our :class:`HttpClient`.  We do
not let astroquery send: it has no retries, it turns non-JSON error pages
into a ``JSONDecodeError``, and its ``_request`` toggles the global
``astroquery.cache_conf.cache_active`` with ``set_temp`` -- from several
threads at once that can leave astroquery's cache switched off for the
rest of the session.

Server precedence: ``base_url`` argument > ``LSBG_CLASSIFY_HIPS2FITS_URL``
environment variable > ``astroquery.hips2fits.conf.server`` (read when the
backend is made, so ``conf.set_temp`` works).
"""

import io
import warnings

import astropy.units as u
import numpy as np
import requests
from astropy.coordinates import Angle, Latitude, Longitude

from .base import FITS, FetchError, NoCoverageError, Payload
from .http import HttpBackend, check_fits
from .payload import UnreadablePayload, read_fits_image

__all__ = ["HipsBackend", "ENV_URL"]

#: Environment variable that overrides astroquery's hips2fits server.
ENV_URL = "LSBG_CLASSIFY_HIPS2FITS_URL"


def _astroquery_hips2fits():
    # Imported on use: astroquery's import is slow and only this backend
    # needs it.
    from astroquery.hips2fits import conf, hips2fits

    return hips2fits, conf


class HipsBackend(HttpBackend):
    """Band images from CDS hips2fits, resampled to the paper's grid.

    Parameters
    ----------
    survey : str or SurveyInfo
        ``"des"`` (HiPS ``CDS/P/DES-DR2/{g,r,z}``, 0.131 arcsec/pix) or
        ``"hsc"`` (``CDS/P/HSC/DR2/wide/{g,r,i}``, 0.084 arcsec/pix).
    image_format : str, optional
        Only ``"fits"``.
    base_url : str, optional
        hips2fits endpoint URL (e.g. a
        :class:`~lsbg_classify.testing.loopback.LoopbackHips2fits`).  Default: the
        ``LSBG_CLASSIFY_HIPS2FITS_URL`` environment variable, else
        ``astroquery.hips2fits.conf.server``.
    timeout : float, optional
        Seconds per connection attempt and socket read; default
        ``astroquery.hips2fits.conf.timeout``.
    max_retries : int, optional
        Retries per band request after the first attempt (default 4).
    workers_hint : int
        Expected number of concurrent downloads; sizes the connection pool.
    backoff : float, optional
        Base of the exponential retry backoff in seconds (default 0.5).
    http : HttpClient, optional
        Use this client instead of making one.

    Notes
    -----
    HiPS pixels are resampled, so these images are not pixel-identical to
    the viewer's; the fluxes are the survey's (nanomaggies for DES DR2,
    zero point 27 for HSC).
    """

    name = "hips"
    formats = (FITS,)

    env_url = ENV_URL

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        missing = [b for b in self.survey.bands if b not in self.survey.hips_ids]
        if missing:
            raise ValueError(f"survey {self.survey.name!r} has no HiPS for band(s) {missing}")

    def default_server(self):
        _, aq_conf = _astroquery_hips2fits()
        return aq_conf.server, aq_conf.timeout

    @property
    def hips_ids(self):
        """HiPS identifiers in band order (bluest first)."""
        return tuple(self.survey.hips_ids[b] for b in self.survey.bands)

    @property
    def layer(self):
        """The HiPS read, comma-separated (goes into cache keys and provenance)."""
        return ",".join(self.hips_ids)

    @property
    def field_of_view(self):
        """Cutout side on the sky (`~astropy.coordinates.Angle`, deg)."""
        return Angle(self.survey.field_of_view.to(u.deg))

    def query_payload(self, ra, dec, band):
        """hips2fits query parameters for one band, built by astroquery.

        Parameters
        ----------
        ra, dec : float
            Position in degrees.
        band : str
            One of the survey's bands.

        Returns
        -------
        dict
        """
        hips2fits, _ = _astroquery_hips2fits()
        size = int(self.cutout_size)
        try:
            # Rounded as in the cache key, so equal keys mean equal requests.
            ra = Longitude(round(float(ra), 6) * u.deg)
            dec = Latitude(round(float(dec), 6) * u.deg)
        except ValueError as exc:
            raise FetchError(f"invalid position ra={ra!r} dec={dec!r}: {exc}") from None
        return hips2fits.query(
            hips=self.survey.hips_ids[band],
            width=size,
            height=size,
            projection="TAN",
            ra=ra,
            dec=dec,
            fov=self.field_of_view,
            format="fits",
            get_query_payload=True,
        )

    def request_url(self, ra, dec):
        """hips2fits URL of the first (bluest) band; nothing is sent."""
        payload = self.query_payload(ra, dec, self.survey.bands[0])
        return requests.Request("GET", self.base_url, params=payload).prepare().url

    def _read_plane(self, response):
        try:
            plane, header = read_fits_image(response.content)
        except UnreadablePayload as exc:
            raise FetchError(f"{response.url}: {exc}") from exc
        plane = np.squeeze(plane)
        size = int(self.cutout_size)
        if plane.shape != (size, size):
            raise FetchError(
                f"{response.url}: image of shape {plane.shape}, expected ({size}, {size})"
            )
        return plane, header

    def download(self, ra, dec):
        """Fetch the three band images at (ra, dec) in degrees.

        Returns
        -------
        Payload
            FITS cube (3, ny, nx), bluest band first, with a ``BANDS`` card
            and the celestial WCS of the first band.

        Raises
        ------
        NoCoverageError
            A band image is entirely NaN or zero (no HiPS data there).
        FetchError
            A band request failed after retries or sent something unusable.
        """
        from astropy.io import fits
        from astropy.wcs import WCS

        planes = []
        wcs_header = None
        for band in self.survey.bands:
            payload = self.query_payload(ra, dec, band)
            response = self.http.get(self.base_url, payload, check=check_fits,
                                     max_bytes=self.max_bytes)
            plane, header = self._read_plane(response)
            finite = plane[np.isfinite(plane)]
            if finite.size == 0 or not np.any(finite):
                # No point asking for the other bands: one empty band is
                # already no usable colour image.
                raise NoCoverageError(
                    f"no {self.survey.hips_ids[band]} data at ra={float(ra):.6f} "
                    f"dec={float(dec):.6f} (all NaN or zero)"
                )
            planes.append(plane)
            if wcs_header is None:
                with warnings.catch_warnings():
                    # Only the celestial WCS matters; astropy.wcs warns about
                    # harmless non-standard cards.
                    warnings.simplefilter("ignore")
                    try:
                        wcs_header = WCS(header).celestial.to_header()
                    except Exception:
                        wcs_header = fits.Header()
        out = fits.Header()
        out.update(wcs_header)
        out["BANDS"] = ("".join(self.survey.bands), "bands of the cube planes, bluest first")
        for i, band in enumerate(self.survey.bands):
            out[f"BAND{i}"] = band
            out[f"HIPS{i}"] = self.survey.hips_ids[band]
        out["PIXSCALE"] = (
            float(self.pixel_scale.to_value(u.arcsec / u.pix)),
            "[arcsec/pix] pixel scale asked for",
        )
        buf = io.BytesIO()
        fits.PrimaryHDU(data=np.stack(planes), header=out).writeto(buf)
        return Payload(buf.getvalue(), FITS)

