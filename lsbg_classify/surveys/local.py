"""Cutouts from the user's own FITS images.

:class:`LocalFitsBackend` cuts candidate stamps out of FITS images on disk
(survey coadd tiles, bricks, or any image with a celestial WCS) and hands
them to the rest of the pipeline in the same form as the FITS services: a
(3, ny, nx) cube of band images, bluest band first, in the survey's native
flux units, on the survey's cutout grid.

Resampling
----------
The cutout grid is the one the sky viewer uses: a gnomonic (TAN) projection
centred on the position, north up and east left, ``survey.cutout_size``
pixels of ``survey.pixel_scale`` on a side, with the position at the centre
of the grid (between the two middle pixels for an even size, FITS
``CRPIX = (size + 1) / 2``).  For each band:

1. The images whose footprint contains the position are found (an image
   "contains" a position when it falls inside its outer pixel edges).
2. The part of the image under the cutout is extracted with
   :class:`astropy.nddata.Cutout2D` from the memory-mapped data, so only
   that part is read from disk.
3. If the cutout pixels are coarser than the image pixels, the extract is
   smoothed with a Gaussian of sigma ``(s - 1) / 2`` image pixels,
   ``s`` being the ratio of the pixel scales, like the anti-aliasing of
   :func:`skimage.transform.resize`, so that downsampling does not alias
   noise and stars.  Blank (NaN) pixels are left out of the smoothing
   (normalised convolution).
4. Every cutout pixel centre is mapped through the WCS of the cutout and
   of the image to image pixel coordinates, and the image is interpolated
   there bilinearly (:func:`skimage.transform.warp`, ``order=1``).  Going
   through the WCS rather than a plain rescale also puts rotated or
   east-right images north up and east left, and centres the position to a
   fraction of a pixel.
5. Interpolated values are surface brightnesses in "image units per image
   pixel"; they are multiplied by the ratio of the pixel areas
   (cutout / image), so the cutout is again in flux per (cutout) pixel, the
   convention of the viewer's nanomaggies-per-pixel images, and the total
   flux of a source is preserved.

Where the first image does not cover the whole cutout, other images of the
same band fill the gap (adjacent tiles).  Pixels that no image covers, or
that are blank in the image, are set to 0; if more than half of the cutout
of any band has no data the position counts as not covered.

Flux units
----------
The cube is returned in the survey's native units: nanomaggies for DES
(zero point 22.5, AB), and the HSC coadd unit (zero point 27, i.e.
nanomaggies times ``survey.colour.flux_divisor`` = 63.1) for HSC, which is
what :mod:`lsbg_classify.pipeline.preprocess` expects.  The unit of each input image
is taken, in this order, from:

1. ``zero_points`` given to the constructor (AB magnitude of a source of
   one image unit);
2. ``BUNIT`` in the image header (or the primary header), when it is a
   flux: ``nanomaggy``, ``maggy``, or a flux density such as ``nJy``,
   ``uJy`` or ``Jy`` (1 nanomaggy = 3631 nJy);
3. an AB zero point keyword: ``MAGZERO``, ``MAGZP``, ``MAGZPT``, ``ZP``,
   ``ZEROPT``, ``PHOTZP``, or ``FLUXMAG0`` (flux of a magnitude-0 source,
   zero point ``2.5 log10(FLUXMAG0)``, as in HSC coadds);
4. otherwise the image is assumed to be in nanomaggies already (Legacy
   Surveys and DES DR coadds).

A ``BUNIT`` that is not a flux (``ADU``, ``electron/s``, ...) with no zero
point is an error: there is no way to convert it.  Counts are converted as
``flux_nmgy = counts * 10**(-0.4 * (zp - 22.5))``.
"""

import io
import math
import os
import pathlib
import threading
import warnings
from collections.abc import Mapping

import astropy.units as u
import numpy as np
from astropy.coordinates import FK5, ICRS, SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS, FITSFixedWarning, NoConvergence
from astropy.wcs.utils import proj_plane_pixel_area, wcs_to_celestial_frame

from .base import FITS, FetchError, NoCoverageError, Payload, SurveyBackend

__all__ = ["LocalFitsBackend", "NANOMAGGY_ZERO_POINT", "MAX_MISSING_FRACTION"]

#: AB magnitude of a source of 1 nanomaggy.
NANOMAGGY_ZERO_POINT = 22.5
#: Largest fraction of a band's cutout that may lack data (else no coverage).
MAX_MISSING_FRACTION = 0.5
#: Flux density of 1 nanomaggy (AB), nJy.
_NANOMAGGY_NJY = 3631.0
# Bumped whenever the resampling changes, so cached cutouts made by an
# older version are not reused (it is part of the cache salt).
_ALGORITHM_VERSION = "local-v1"

_ZERO_POINT_KEYWORDS = ("MAGZERO", "MAGZP", "MAGZPT", "ZP", "ZEROPT", "PHOTZP")
_NANOMAGGY_NAMES = {"nanomaggy", "nanomaggies", "nmgy", "nanomaggys"}
_MAGGY_NAMES = {"maggy", "maggies", "mgy"}


def _zp_factor(zero_point):
    """Multiplier from image units with AB zero point ``zero_point`` to nanomaggies."""
    return 10.0 ** (-0.4 * (float(zero_point) - NANOMAGGY_ZERO_POINT))


def _bunit_factor(bunit):
    """Multiplier from ``BUNIT`` to nanomaggies, or None if it is not a flux."""
    text = bunit.strip()
    low = text.lower()
    if low in _NANOMAGGY_NAMES:
        return 1.0
    if low in _MAGGY_NAMES:
        return 1e9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unit = u.Unit(text, parse_strict="silent")
    if isinstance(unit, u.UnrecognizedUnit):
        return None
    try:
        return float((1.0 * unit).to_value(u.nmgy))
    except u.UnitsError:
        pass
    try:
        return float((1.0 * unit).to_value(u.nJy)) / _NANOMAGGY_NJY
    except u.UnitsError:
        return None


def _nanomaggy_factor(headers, override, path):
    """Find the unit of an image; return (multiplier to nanomaggies, description)."""
    if override is not None:
        return _zp_factor(override), f"zero point {float(override):g} (given)"
    for header in headers:
        bunit = header.get("BUNIT")
        if isinstance(bunit, str) and bunit.strip():
            factor = _bunit_factor(bunit)
            if factor is not None:
                return factor, f"BUNIT={bunit.strip()!r}"
            break
    else:
        bunit = None
    for header in headers:
        for key in _ZERO_POINT_KEYWORDS:
            value = header.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return _zp_factor(value), f"{key}={value:g}"
        value = header.get("FLUXMAG0")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            zp = 2.5 * math.log10(value)
            return _zp_factor(zp), f"FLUXMAG0={value:g} (zero point {zp:.3f})"
    if bunit is not None:
        raise ValueError(
            f"{path}: BUNIT={bunit.strip()!r} is not a flux and the header has no "
            "zero point keyword; pass zero_points={band: zp} to LocalFitsBackend"
        )
    return 1.0, "assumed nanomaggies"


def _usable_shape(shape):
    """(ny, nx) of an image HDU whose extra axes are all of length 1, else None."""
    if shape is None or len(shape) < 2 or any(n != 1 for n in shape[:-2]):
        return None
    if shape[-1] < 1 or shape[-2] < 1:
        return None
    return tuple(int(n) for n in shape[-2:])


class _Tile:
    """One image of one band: its WCS and footprint, and its open file."""

    def __init__(self, band, path, zero_point=None, flux_divisor=1.0):
        self.band = band
        self.path = path
        st = os.stat(path)
        self.mtime_ns = st.st_mtime_ns
        self.file_size = st.st_size
        self.zero_point = zero_point
        with warnings.catch_warnings():
            # Headers in the wild often trip astropy's WCS fixers; they are
            # harmless for our purpose and would flood the user's console.
            warnings.simplefilter("ignore", FITSFixedWarning)
            with fits.open(path, memmap=True) as hdul:
                primary = hdul[0].header
                for index, hdu in enumerate(hdul):
                    if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
                        continue
                    shape = _usable_shape(hdu.shape)
                    if shape is None:
                        continue
                    wcs = WCS(hdu.header, hdul)
                    if not wcs.has_celestial:
                        continue
                    header = hdu.header.copy()
                    break
                else:
                    raise ValueError(
                        f"{path}: no image HDU with a celestial WCS found"
                    )
        self.hdu_index = index
        self.shape = shape
        self.wcs = wcs.celestial
        if self.wcs.naxis != 2:
            raise ValueError(f"{path}: could not extract a 2-d celestial WCS")
        self.frame = wcs_to_celestial_frame(self.wcs)
        # The frame test decides whether positions can be passed to the WCS
        # as ICRS coordinates directly (FK5 J2000 differs from ICRS by tens
        # of mas, far below a pixel) or must be transformed first.
        self._icrs_like = isinstance(self.frame, ICRS) or (
            isinstance(self.frame, FK5) and abs(self.frame.equinox.jyear - 2000.0) < 1e-6
        )
        self._lng_first = self.wcs.wcs.lng == 0
        # Tiles of different bands usually share one pixel grid; this lets
        # a cutout map the sky to pixels once for all of them.
        self.grid_id = (self.wcs.to_header_string(relax=True), self.shape)
        bitpix = header.get("BITPIX", -32)
        scaled = "BSCALE" in header or "BZERO" in header
        self.blank = header.get("BLANK") if (bitpix > 0 and not scaled) else None
        headers = (header, primary) if index != 0 else (header,)
        nmgy, self.unit_note = _nanomaggy_factor(headers, zero_point, path)
        # Output is in the survey's native unit (nanomaggies * flux_divisor).
        self.flux_factor = nmgy * float(flux_divisor)
        # Pixel area (deg^2) at the reference point; used for the flux per
        # pixel conversion.  Distortion over one tile is negligible for this.
        self.pixel_area = float(proj_plane_pixel_area(self.wcs))
        self.pixel_scale = math.sqrt(self.pixel_area) * 3600.0  # arcsec / pix
        ny, nx = shape
        centre = self.wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2).icrs
        cx = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
        cy = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
        corners = self.wcs.pixel_to_world(cx, cy).icrs
        self.centre = centre
        self.centre_vec = _unit_vector(centre.ra.deg, centre.dec.deg)
        self.radius = float(np.max(centre.separation(corners).deg))
        self._lock = threading.Lock()
        self._hdul = None
        self._data = None

    # -- geometry ------------------------------------------------------------

    def world_to_pixel(self, ra, dec):
        """Image pixel coordinates (0-based x, y) of ICRS positions (deg)."""
        if self._icrs_like:
            lon, lat = ra, dec
        else:
            c = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs").transform_to(self.frame)
            lon, lat = c.spherical.lon.deg, c.spherical.lat.deg
        args = (lon, lat) if self._lng_first else (lat, lon)
        try:
            x, y = self.wcs.world_to_pixel_values(*args)
        except NoConvergence as exc:  # SIP inversion far from the tile
            x, y = exc.best_solution.T
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def inside(self, x, y):
        """Whether pixel coordinates fall inside the image's outer pixel edges."""
        ny, nx = self.shape
        with np.errstate(invalid="ignore"):
            return (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)

    # -- data ----------------------------------------------------------------

    def read(self, x0, x1, y0, y1):
        """Pixels ``[y0:y1, x0:x1]`` (clipped to the image) as float64.

        Returns
        -------
        data : numpy.ndarray
            The pixels, blank values as NaN.
        xoff, yoff : int
            Image pixel coordinates of ``data[0, 0]``.
        """
        # One lock per file: astropy's lazy loading and the shared file
        # handle are not safe for concurrent first use, and reads are small.
        with self._lock:
            try:
                if self._data is None:
                    self._hdul = fits.open(self.path, memmap=True)
                    data = self._hdul[self.hdu_index].data
                    self._data = data.reshape(self.shape)
                w, h = x1 - x0, y1 - y0
                cut = Cutout2D(
                    self._data,
                    position=(x0 + (w - 1) / 2, y0 + (h - 1) / 2),
                    size=(h, w),
                    mode="trim",
                    copy=True,
                )
            except (OSError, TypeError, ValueError) as exc:
                raise FetchError(f"could not read {self.path}: {exc}") from exc
        raw = cut.data
        data = raw.astype(np.float64)
        if self.blank is not None and np.issubdtype(raw.dtype, np.integer):
            data[raw == self.blank] = np.nan
        sy, sx = cut.slices_original
        return data, sx.start, sy.start

    def close(self):
        with self._lock:
            if self._hdul is not None:
                self._hdul.close()
            self._hdul = None
            self._data = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_lock=None, _hdul=None, _data=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _unit_vector(ra, dec):
    ra, dec = np.radians(ra), np.radians(dec)
    return np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def _as_path_list(value, band):
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    try:
        paths = list(value)
    except TypeError:
        raise TypeError(
            f"images[{band!r}] must be a path or a list of paths, not {type(value).__name__}"
        ) from None
    if not paths:
        raise ValueError(f"images[{band!r}] is empty")
    out = []
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"images[{band!r}] holds {p!r}, which is not a path")
        path = pathlib.Path(os.fspath(p)).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"image for band {band!r} not found: {path}")
        out.append(path)
    return out


class LocalFitsBackend(SurveyBackend):
    """Cut candidate stamps out of FITS images on disk.

    Parameters
    ----------
    survey : str or SurveyInfo
        ``"des"`` or ``"hsc"``: which bands are needed and the cutout's
        pixel scale (arcsec / pix), size (pix) and flux unit.
    image_format : str, optional
        Only ``"fits"``.
    images : dict
        Band name -> path, or list of paths (several tiles of one band), of
        FITS images with a celestial WCS, for every band of the survey
        (e.g. ``{"g": "tile_g.fits", "r": ..., "z": ...}`` for DES).  Extra
        bands are ignored.  The images may have any pixel scale,
        orientation and celestial frame; see the module documentation for
        how they are resampled.
    zero_points : float or dict, optional
        AB zero point of the images (magnitude of a source of one image
        unit), for all bands or per band; overrides the headers.  Needed
        for images in counts whose header has no zero point keyword.

    Raises
    ------
    ValueError
        If a band of the survey has no image, or an image has no celestial
        WCS or an unconvertible unit.
    FileNotFoundError
        If an image does not exist.

    Notes
    -----
    Files are opened memory-mapped on first use and stay open until
    :meth:`close`, so repeated cutouts do not reopen them; reading is
    serialised per file, so one backend may be used from several threads.
    The cache salt holds the files' paths and modification times, so cutouts
    cached from an image are not reused after the image changes; changing
    an image while a backend has it open is not supported.

    Examples
    --------
    >>> from lsbg_classify.surveys import get_backend
    >>> backend = get_backend(
    ...     "local", survey="des",
    ...     images={"g": "g.fits", "r": "r.fits", "z": "z.fits"},
    ... )                                                    # doctest: +SKIP
    >>> payload = backend.download(150.1, 2.2)               # doctest: +SKIP
    """

    name = "local"
    formats = (FITS,)
    remote = False

    def __init__(self, survey="des", image_format=None, images=None, zero_points=None):
        super().__init__(survey=survey, image_format=image_format)
        if images is None:
            raise ValueError(
                "the local backend needs images={band: path}; bands needed: "
                + ", ".join(self.bands)
            )
        if not isinstance(images, Mapping):
            raise TypeError("images must be a dict mapping band name to path(s)")
        by_band = {}
        for band, value in images.items():
            by_band[str(band).strip().lower()] = value
        missing = [b for b in self.bands if b not in by_band]
        if missing:
            raise ValueError(
                f"no image given for band{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(b) for b in missing)}; survey {self.survey.name!r} "
                f"needs {', '.join(self.bands)}"
            )
        if zero_points is None or isinstance(zero_points, Mapping):
            zps = {str(k).strip().lower(): v for k, v in (zero_points or {}).items()}
        else:
            zps = {b: zero_points for b in self.bands}
        divisor = self.survey.colour.flux_divisor
        self._tiles = {
            band: [
                _Tile(band, path, zero_point=zps.get(band), flux_divisor=divisor)
                for path in _as_path_list(by_band[band], band)
            ]
            for band in self.bands
        }

    # -- identity ------------------------------------------------------------

    @property
    def layer(self):
        """``"local"``: the images are the user's own."""
        return "local"

    @property
    def images(self):
        """Resolved image paths per band (dict of lists of `pathlib.Path`)."""
        return {band: [t.path for t in tiles] for band, tiles in self._tiles.items()}

    def cache_salt(self):
        """Image paths, sizes, modification times and zero points, per band.

        A cutout cached from an image is thus not reused once the image is
        replaced or edited.
        """
        parts = [_ALGORITHM_VERSION]
        for band in self.bands:
            for t in self._tiles[band]:
                parts.append(
                    f"{band}={t.path}@{t.mtime_ns}:{t.file_size}:{t.hdu_index}:{t.zero_point}"
                )
        return ";".join(parts)

    def describe(self):
        info = super().describe()
        info["images"] = {band: [str(p) for p in paths] for band, paths in self.images.items()}
        return info

    def request_url(self, ra, dec):
        """``file://`` URI of the bluest band's image holding the position.

        The position is appended as ``#ra=...,dec=...`` (deg).  The first
        image of the band is named if none covers the position.
        """
        ra, dec = float(ra), float(dec)
        tile = self._tiles[self.bands[0]][0]
        if _valid_position(ra, dec):
            found = self._containing(self.bands[0], ra, dec)
            if found:
                tile = found[0]
        return f"{tile.path.as_uri()}#ra={ra:.6f},dec={dec:.6f}"

    # -- cutting -------------------------------------------------------------

    def _target_wcs(self, ra, dec):
        n = int(self.cutout_size)
        scale = float(self.pixel_scale.to_value(u.deg / u.pix))
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [ra, dec]
        # FITS pixel coordinates are 1-based: the centre of an n-pixel axis
        # is at (n + 1) / 2, as in the sky viewer's cutouts.
        w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
        w.wcs.cd = [[-scale, 0.0], [0.0, scale]]  # east left, north up
        w.wcs.radesys = "ICRS"
        w.wcs.set()
        return w

    def _candidates(self, band, ra, dec):
        """Tiles of ``band`` that may overlap the cutout (cheap sky-distance test)."""
        n = int(self.cutout_size)
        half_diag = float(self.pixel_scale.to_value(u.deg / u.pix)) * n * math.sqrt(0.5)
        vec = _unit_vector(ra, dec)
        out = []
        for t in self._tiles[band]:
            sep = math.degrees(math.acos(max(-1.0, min(1.0, float(vec @ t.centre_vec)))))
            if sep <= t.radius + half_diag:
                out.append(t)
        return out

    def _containing(self, band, ra, dec):
        out = []
        for t in self._candidates(band, ra, dec):
            x, y = t.world_to_pixel(np.array([ra]), np.array([dec]))
            if t.inside(x, y)[0]:
                out.append(t)
        return out

    def _resample(self, tile, gx, gy, inside):
        """Values of ``tile`` at image pixel coordinates (gx, gy), NaN where none.

        Result is in the survey's native unit per cutout pixel.
        """
        target_scale = float(self.pixel_scale.to_value(u.arcsec / u.pix))
        ratio = target_scale / tile.pixel_scale  # > 1: cutout pixels are coarser
        sigma = max(0.0, (ratio - 1.0) / 2.0)
        margin = 2 + int(math.ceil(4.0 * sigma))
        ny, nx = tile.shape
        xs, ys = gx[inside], gy[inside]
        x0 = max(0, int(math.floor(xs.min())) - margin)
        x1 = min(nx, int(math.ceil(xs.max())) + margin + 1)
        y0 = max(0, int(math.floor(ys.min())) - margin)
        y1 = min(ny, int(math.ceil(ys.max())) + margin + 1)
        data, xoff, yoff = tile.read(x0, x1, y0, y1)

        from skimage.filters import gaussian
        from skimage.transform import warp

        valid = np.isfinite(data)
        filled = np.where(valid, data, 0.0)
        weight = valid.astype(np.float64)
        if sigma > 0:
            # Normalised convolution: blank pixels (and the space beyond the
            # image edge, cval=0) carry no weight instead of pulling the
            # smoothed values towards zero.
            kw = dict(sigma=sigma, mode="constant", cval=0.0, preserve_range=True, truncate=4.0)
            filled = gaussian(filled, **kw)
            weight = gaussian(weight, **kw)
        coords = np.stack([gy - yoff, gx - xoff])
        coords = np.where(np.isfinite(coords), coords, -10.0)
        kw = dict(order=1, mode="constant", cval=0.0, clip=False, preserve_range=True)
        value = warp(filled, coords, **kw)
        wsum = warp(weight, coords, **kw)
        ok = inside & (wsum >= 0.5)
        out = np.full(gx.shape, np.nan)
        # Dividing by the interpolated weight renormalises bilinear weights
        # next to blank pixels and at the image's outer half pixel.
        out[ok] = value[ok] / wsum[ok]
        area_ratio = (target_scale / 3600.0) ** 2 / tile.pixel_area
        return out * (tile.flux_factor * area_ratio)

    def _cut_band(self, band, ra, dec, gra, gdec, memo):
        tiles = []
        for t in self._candidates(band, ra, dec):
            if t.grid_id not in memo:
                gx, gy = t.world_to_pixel(gra, gdec)
                cx, cy = t.world_to_pixel(np.array([ra]), np.array([dec]))
                memo[t.grid_id] = (gx, gy, t.inside(gx, gy), bool(t.inside(cx, cy)[0]))
            gx, gy, inside, contains = memo[t.grid_id]
            if not inside.any():
                continue
            tiles.append((contains, float(inside.mean()), t, gx, gy, inside))
        if not any(contains for contains, *_ in tiles):
            raise NoCoverageError(
                f"position ({ra:.6f}, {dec:.6f}) is in no {band}-band image"
            )
        # Tiles holding the position first, the best covering one first;
        # the others only fill what is still missing (tile edges).
        tiles.sort(key=lambda item: (not item[0], -item[1]))
        result = np.full(gra.shape, np.nan)
        used = []
        for _, _, t, gx, gy, inside in tiles:
            todo = np.isnan(result) & inside
            if not todo.any():
                continue
            values = self._resample(t, gx, gy, todo)
            fill = todo & np.isfinite(values)
            result[fill] = values[fill]
            used.append(t)
            if not np.isnan(result).any():
                break
        return result, used

    def download(self, ra, dec):
        """Cut one (3, n, n) cutout out of the images.

        Parameters
        ----------
        ra, dec : float
            Position in degrees (ICRS).

        Returns
        -------
        Payload
            A FITS file whose primary HDU is a float32 cube (3, n, n), bands
            bluest first, in the survey's native flux unit per cutout pixel
            (nanomaggies for DES), with the cutout's WCS and ``BANDS`` (e.g.
            ``"grz"``), ``BAND0..2``, ``MAGZERO``, ``COVER0..2`` (fraction
            of the cutout with data) and ``FILE0..2`` (image file names).

        Raises
        ------
        NoCoverageError
            No image of some band contains the position, more than half of
            a band's cutout has no data, or the position is not valid.
        FetchError
            An image could not be read.
        """
        ra, dec = float(ra), float(dec)
        if not _valid_position(ra, dec):
            raise NoCoverageError(f"invalid position ({ra}, {dec})")
        n = int(self.cutout_size)
        twcs = self._target_wcs(ra % 360.0, dec)
        px, py = np.meshgrid(np.arange(n, dtype=np.float64), np.arange(n, dtype=np.float64))
        gra, gdec = twcs.pixel_to_world_values(px, py)
        cube = np.zeros((len(self.bands), n, n), dtype=np.float32)
        covers, files = [], []
        memo = {}
        for i, band in enumerate(self.bands):
            values, used = self._cut_band(band, ra, dec, gra, gdec, memo)
            missing = np.isnan(values)
            frac = float(missing.mean())
            if frac > MAX_MISSING_FRACTION:
                raise NoCoverageError(
                    f"{frac:.0%} of the {band}-band cutout at ({ra:.6f}, {dec:.6f}) has no data"
                )
            cube[i] = np.where(missing, 0.0, values)
            covers.append(1.0 - frac)
            files.append(",".join(t.path.name for t in used))
        return Payload(self._to_fits(cube, twcs, covers, files), FITS)

    def _to_fits(self, cube, twcs, covers, files):
        header = twcs.to_header()
        header["BANDS"] = ("".join(self.bands), "bands of the cube planes, bluest first")
        for i, band in enumerate(self.bands):
            header[f"BAND{i}"] = (band, f"band of plane {i}")
        divisor = self.survey.colour.flux_divisor
        zp = NANOMAGGY_ZERO_POINT + 2.5 * math.log10(divisor)
        if divisor == 1.0:
            header["BUNIT"] = ("nanomaggy", "flux per pixel")
        header["MAGZERO"] = (round(zp, 4), "AB zero point of the pixel values")
        header["SURVEY"] = (self.survey.name, "survey conventions used")
        header["BACKEND"] = (self.name, "lsbg_classify backend")
        header["PIXSCALE"] = (
            float(self.pixel_scale.to_value(u.arcsec / u.pix)),
            "[arcsec/pix] pixel scale",
        )
        for i, (cover, name) in enumerate(zip(covers, files)):
            header[f"COVER{i}"] = (round(cover, 6), f"fraction of plane {i} with data")
            header[f"FILE{i}"] = name
        buf = io.BytesIO()
        fits.PrimaryHDU(cube, header=header).writeto(buf)
        return buf.getvalue()

    def close(self):
        """Close the image files (they are reopened if used again)."""
        for tiles in self._tiles.values():
            for t in tiles:
                t.close()


def _valid_position(ra, dec):
    return math.isfinite(ra) and math.isfinite(dec) and -90.0 <= dec <= 90.0
