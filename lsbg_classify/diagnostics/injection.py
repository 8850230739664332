"""Injection–recovery: the classifier's completeness for LSBGs of known size and brightness.

Simulated galaxies (Sérsic profiles of index about 1, the standard model
of LSBGs) with a chosen central surface brightness μ0 (g band) and
effective radius r_e are added to background images, turned into model
inputs exactly as the pipeline turns cutouts into them, and scored.  The
fraction called LSBG on a grid of (μ0, r_e) is the completeness map that
LSBG surveys publish (e.g. Greco et al. 2018; Tanoglidis et al. 2021a),
here for the classification step alone.

Backgrounds
-----------
``"simulated"``
    Blank fields of the simulated sky
    (:func:`lsbg_classify.simulation.backgrounds.render_background`: field galaxies
    and stars, PSF, noise and sky as in the training cutouts, nothing at
    the centre).  The galaxy is drawn on the cutout grid through the
    field's Moffat PSF and goes through the viewer's colour mapping and
    JPEG compression (:func:`lsbg_classify.simulation.backgrounds.bands_to_jpeg`), then
    :func:`lsbg_classify.pipeline.preprocess.prepare_payload`, as the ``simulated``
    backend's cutouts do.
``"simulated-artifacts"``
    The same, with one of the simulated artifacts at the centre: how well
    an LSBG is recovered when it sits on a star halo, cirrus, a blend, ...
a :class:`~lsbg_classify.surveys.local.LocalFitsBackend`
    The user's own FITS images.  For each injection a native-pixel stamp
    of every band is cut around a random position, the galaxy is added to
    it (convolved with a Gaussian PSF of ``psf_fwhm``, in the image's flux
    units via ``zero_point``), and the stamp goes through the local
    backend and :func:`lsbg_classify.pipeline.scoring.fetch_images` as a catalog
    position would.  The files on disk are never changed.

Fluxes follow the simulator's conventions
(:func:`lsbg_classify.simulation.backgrounds.sersic_band_magnitudes`).  On the
simulated sky every source's catalogue flux is multiplied by the
simulator's brightness calibration (the ``gain`` of
:func:`~lsbg_classify.simulation.backgrounds.render_background`, 2 = 0.75 mag), so
there μ0 is on the same scale as the ``mu0_g`` of the simulated training
LSBGs; in the user's images μ0 is the physical surface brightness.

Every cell of the grid reuses the same backgrounds and the same shapes and
colours (common random numbers), so differences between cells come from
μ0 and r_e alone; intervals are Wilson score intervals of the binomial
fraction.
"""

import math
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from .. import status
from ..figures import new_figure, save_figure
from ..pipeline.model import load_model
from ..pipeline.options import DEFAULT_THRESHOLD
from ..pipeline.preprocess import prepare_payload
from ..pipeline.scoring import fetch_images
from ..simulation.backgrounds import bands_to_jpeg, render_background, sersic_band_magnitudes
from ..surveys import JPEG, Payload, get_survey
from ..surveys.local import NANOMAGGY_ZERO_POINT, LocalFitsBackend

__all__ = [
    "InjectedLSBG",
    "draw_lsbg",
    "inject_into_image",
    "injection_recovery",
    "run_injection",
    "plot_completeness",
    "wilson_interval",
    "parse_grid",
    "DEFAULT_MU0_GRID",
    "DEFAULT_RE_GRID",
    "SIMULATED_BACKGROUNDS",
]

#: Files :func:`run_injection` writes into its output folder.
COMPLETENESS_TABLE = "completeness.ecsv"
COMPLETENESS_FIGURE = "completeness.png"
#: Default grid of central surface brightness (g, mag/arcsec^2): START, STOP, STEP.
DEFAULT_MU0_GRID = "23,27,0.5"
#: Default grid of effective radius (arcsec): START, STOP, STEP.
DEFAULT_RE_GRID = "2.5,12.5,2.5"
DEFAULT_PER_CELL = 20
SERSIC_INDEX = 1.0
#: Backgrounds drawn from the simulated sky.
SIMULATED_BACKGROUNDS = ("simulated", "simulated-artifacts")

# Shapes and colours of the injected galaxies: the simulator's DES LSBG
# population (Tanoglidis et al. 2021a, Greco et al. 2018).  Ellipticity
# 0.9 * Beta(2, 3.5), at most 0.8 (median about 0.3); two thirds blue, one
# third red; colours (mean, sd) in g-r and r-z, g-z being their sum.
ELLIPTICITY_BETA = (2.0, 3.5)
ELLIPTICITY_SCALE = 0.9
MAX_ELLIPTICITY = 0.8
RED_FRACTION = 0.33
BLUE_COLOURS = {"g_r": (0.38, 0.09), "r_z": (0.25, 0.10)}
RED_COLOURS = {"g_r": (0.60, 0.07), "r_z": (0.45, 0.08)}

#: PSF FWHM (arcsec) of the user's images when none is given: DES's median.
DEFAULT_PSF_FWHM = 1.0
#: AB zero point of the user's image units (22.5: nanomaggies).
DEFAULT_ZERO_POINT = NANOMAGGY_ZERO_POINT
CONFIDENCE = 0.95

# The profile is drawn out to this many r_e (an n = 1 profile holds all
# but 0.05 % of its light there) and the PSF out to this many FWHM.
PROFILE_EXTENT_RE = 6.0
PSF_EXTENT_FWHM = 6.0
# Positions on the simulated sky are drawn in the DES declination range.
SIMULATED_DEC_RANGE = (-60.0, 0.0)
# Native pixels around the local stamp beyond the cutout's diagonal, for
# the local backend's anti-aliasing smoothing.
STAMP_MARGIN_PIX = 12
MAX_SITE_TRIES = 200


@dataclass(frozen=True)
class InjectedLSBG:
    """One galaxy to inject.

    Attributes
    ----------
    mu0_g : float
        Central surface brightness in g (AB mag/arcsec^2).
    r_e : float
        Semi-major half-light radius (arcsec).
    n : float
        Sérsic index.
    ell : float
        Ellipticity ``1 - b/a``.
    pa : float
        Position angle of the major axis on the pixel grid (deg,
        counter-clockwise from +x).
    g_r, g_z : float
        Colours (AB mag).  For HSC the i band is derived as the simulator
        does (``r - i = 0.55 (r - z) - 0.02``).
    """

    mu0_g: float
    r_e: float
    n: float = SERSIC_INDEX
    ell: float = 0.0
    pa: float = 0.0
    g_r: float = 0.38
    g_z: float = 0.63

    def magnitudes(self, survey="des"):
        """Total AB magnitude per band of ``survey``, bluest first."""
        return sersic_band_magnitudes(self.mu0_g, self.r_e, self.n, self.ell, self.g_r,
                                      self.g_z - self.g_r, survey)

    def fluxes(self, survey="des", zero_point=NANOMAGGY_ZERO_POINT):
        """Total flux per band in units of AB zero point ``zero_point`` (default nanomaggies)."""
        return 10.0 ** (-0.4 * (self.magnitudes(survey) - float(zero_point)))


def _psf_stamp(fwhm, beta, pixel_scale):
    """Pixel-integrated PSF (Gaussian, or Moffat of index beta), unit sum, odd side."""
    import galsim

    psf = galsim.Gaussian(fwhm=fwhm) if beta is None else galsim.Moffat(beta=beta, fwhm=fwhm)
    half = math.ceil(PSF_EXTENT_FWHM * fwhm / pixel_scale)
    stamp = psf.drawImage(nx=2 * half + 1, ny=2 * half + 1, scale=pixel_scale).array
    return stamp / stamp.sum()


def draw_lsbg(source, shape, pixel_scale, x, y, fluxes, psf_fwhm=None, psf_beta=None):
    """Noiseless images of a galaxy on a pixel grid, one per flux.

    Parameters
    ----------
    source : InjectedLSBG
        Shape (``r_e``, ``n``, ``ell``, ``pa``); its brightness is ``fluxes``.
    shape : tuple of int
        (ny, nx) of the grid.
    pixel_scale : float
        Grid pixel scale (arcsec/pix).
    x, y : float
        Centre in 0-based pixel coordinates of the grid (may lie off it).
    fluxes : sequence of float
        Total flux per image (the unit of the result times pixels).
    psf_fwhm : float or sequence of float, optional
        PSF FWHM (arcsec), one for all images or one per image; None: no
        PSF (the profile is sampled at pixel centres).
    psf_beta : float, optional
        Moffat index of the PSF; None: a Gaussian.

    Returns
    -------
    numpy.ndarray, shape (len(fluxes), ny, nx), float64
        Flux per pixel; zero beyond ``PROFILE_EXTENT_RE`` r_e plus the PSF's
        reach from the centre, so pixels there are left as they were when
        the result is added to an image.
    """
    import galsim
    from scipy.signal import fftconvolve

    fluxes = np.atleast_1d(np.asarray(fluxes, dtype=np.float64))
    ny, nx = (int(v) for v in shape)
    pixel_scale, x, y = float(pixel_scale), float(x), float(y)
    fwhms = np.broadcast_to(np.asarray([np.nan] if psf_fwhm is None else psf_fwhm, float),
                            fluxes.shape)
    stamps = [None if not np.isfinite(f) else _psf_stamp(float(f), psf_beta, pixel_scale)
              for f in fwhms]
    reach = max([0] + [s.shape[0] // 2 for s in stamps if s is not None])
    half = math.ceil(PROFILE_EXTENT_RE * source.r_e / pixel_scale)
    # Only the part of the profile that can reach the grid is drawn.
    x0, x1 = max(math.floor(x) - half, -reach), min(math.ceil(x) + half + 1, nx + reach)
    y0, y1 = max(math.floor(y) - half, -reach), min(math.ceil(y) + half + 1, ny + reach)
    out = np.zeros((len(fluxes), ny, nx))
    if x0 >= x1 or y0 >= y1:
        return out
    q = 1.0 - float(source.ell)
    prof = galsim.Sersic(n=float(source.n), half_light_radius=float(source.r_e) * math.sqrt(q),
                         flux=1.0)
    if q < 1.0:
        # The shear keeps the area, so the semi-major half-light radius is r_e.
        prof = prof.shear(q=q, beta=float(source.pa) * galsim.degrees)
    w, h = x1 - x0, y1 - y0
    canvas = galsim.ImageD(w, h, scale=pixel_scale)
    # GalSim puts the profile at the image's true centre plus the offset.
    prof.drawImage(image=canvas, method="no_pixel",
                   offset=(x - (x0 + (w - 1) / 2.0), y - (y0 + (h - 1) / 2.0)))
    unit = canvas.array
    gx0, gx1, gy0, gy1 = max(x0, 0), min(x1, nx), max(y0, 0), min(y1, ny)
    if gx0 >= gx1 or gy0 >= gy1:
        return out
    for k, (flux, stamp) in enumerate(zip(fluxes, stamps)):
        img = unit if stamp is None else fftconvolve(unit, stamp, mode="same")
        out[k, gy0:gy1, gx0:gx1] = flux * img[gy0 - y0 : gy1 - y0, gx0 - x0 : gx1 - x0]
    return out


def inject_into_image(data, wcs, ra, dec, source, band, survey="des", psf_fwhm=DEFAULT_PSF_FWHM,
                      zero_point=DEFAULT_ZERO_POINT):
    """Add a galaxy to one band's image at a sky position.

    Parameters
    ----------
    data : array_like, shape (ny, nx)
        Native-pixel image in units of AB zero point ``zero_point``.
    wcs : `~astropy.wcs.WCS`
        Its celestial WCS.
    ra, dec : float
        Position of the galaxy's centre (deg, ICRS).
    source : InjectedLSBG
        The galaxy.
    band : str
        Band of the image, one of the survey's bands.
    survey : str
        ``"des"`` or ``"hsc"`` (which bands, and the HSC i-band colour).
    psf_fwhm : float
        FWHM (arcsec) of the Gaussian PSF the galaxy is convolved with.
    zero_point : float
        AB zero point of the image units (22.5: nanomaggies).

    Returns
    -------
    numpy.ndarray, shape (ny, nx), float64
        A new image; ``data`` is not modified.  Pixels farther than the
        profile's and PSF's reach keep their values exactly.
    """
    from astropy.coordinates import SkyCoord
    from astropy.wcs.utils import proj_plane_pixel_area

    info = get_survey(survey) if isinstance(survey, str) else survey
    if band not in info.bands:
        raise ValueError(f"band {band!r} is not one of the {info.name} bands {info.bands}")
    flux = source.fluxes(info, zero_point)[info.bands.index(band)]
    x, y = wcs.world_to_pixel(SkyCoord(float(ra) * u.deg, float(dec) * u.deg, frame="icrs"))
    scale = math.sqrt(proj_plane_pixel_area(wcs.celestial)) * 3600.0
    data = np.asarray(data, dtype=np.float64)
    return data + draw_lsbg(source, data.shape, scale, float(x), float(y), [flux], psf_fwhm)[0]


def wilson_interval(k, n, confidence=CONFIDENCE):
    """Wilson score interval of a binomial fraction.

    Parameters
    ----------
    k, n : array_like of int
        Successes and trials.
    confidence : float
        Coverage of the interval.

    Returns
    -------
    low, high : numpy.ndarray
        Bounds in [0, 1]; NaN where ``n == 0``.
    """
    from scipy.stats import norm

    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = norm.ppf(0.5 + confidence / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        denom = 1.0 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
        # At k = 0 and k = n the bounds are exactly 0 and 1; say so without rounding noise.
        low = np.where(k > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
        high = np.where(k < n, np.clip(centre + half, 0.0, 1.0), 1.0)
        low = np.where(n > 0, low, np.nan)
        high = np.where(n > 0, high, np.nan)
    return low, high


def parse_grid(text, name="grid"):
    """Grid values from ``"START,STOP,STEP"`` (STOP included) or a single number.

    Parameters
    ----------
    text : str
        E.g. ``"23,27,0.5"``.
    name : str
        What the grid is, for error messages (e.g. ``"--mu0"``).

    Returns
    -------
    numpy.ndarray of float
    """
    try:
        parts = [float(p) for p in str(text).split(",")]
    except ValueError:
        raise ValueError(f"{name} expects START,STOP,STEP or one number, got {text!r}") from None
    if len(parts) == 1:
        values = np.array(parts)
    elif len(parts) == 3:
        start, stop, step = parts
        if not step > 0 or stop < start:
            raise ValueError(f"{name}: need STEP > 0 and STOP >= START, got {text!r}")
        # A small tolerance keeps STOP when (STOP - START) / STEP is whole.
        count = math.floor((stop - start) / step + 1e-9) + 1
        values = start + step * np.arange(count)
    else:
        raise ValueError(f"{name} expects START,STOP,STEP or one number, got {text!r}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name}: values must be finite, got {text!r}")
    return values


def _grid(values, name):
    values = parse_grid(values, name) if isinstance(values, str) else np.atleast_1d(
        np.asarray(values, dtype=np.float64))
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must hold finite values, got {values!r}")
    return values


def _draw_shapes(rng, count, sersic_n):
    """Ellipticities, angles and colours, one per background, shared by all cells."""
    shapes = []
    for _ in range(count):
        ell = min(rng.beta(*ELLIPTICITY_BETA) * ELLIPTICITY_SCALE, MAX_ELLIPTICITY)
        colours = RED_COLOURS if rng.random() < RED_FRACTION else BLUE_COLOURS
        g_r = rng.normal(*colours["g_r"])
        r_z = rng.normal(*colours["r_z"])
        shapes.append(dict(n=float(sersic_n), ell=float(ell), pa=float(rng.uniform(0, 180)),
                           g_r=float(g_r), g_z=float(g_r + r_z)))
    return shapes


# -- simulated backgrounds -----------------------------------------------------


class _SimulatedBackgrounds:
    """Blank (or artifact) fields of the simulated sky; galaxies drawn at their centres."""

    def __init__(self, survey, count, rng, seed, artifact):
        self.survey = survey
        ra = rng.uniform(0.0, 360.0, count)
        lo, hi = np.sin(np.radians(SIMULATED_DEC_RANGE))
        dec = np.degrees(np.arcsin(rng.uniform(lo, hi, count)))
        self.fields = [render_background(r, d, survey, seed=seed, artifact=artifact)
                       for r, d in zip(ra, dec)]

    def describe(self):
        return {"simulator_version": self.fields[0][1]["simulator_version"],
                "background_kinds": sorted({m["kind"] for _, m in self.fields})}

    def model_inputs(self, sources):
        """Model inputs and statuses, one per background."""
        images, statuses = [], []
        for (cube, meta), source in zip(self.fields, sources):
            fluxes = (source.fluxes(self.survey) * self.survey.colour.flux_divisor
                      * np.asarray(meta["gain"]))
            centre = (cube.shape[-1] - 1) / 2.0
            galaxy = draw_lsbg(source, cube.shape[1:], meta["pixel_scale"], centre, centre, fluxes,
                               meta["psf_fwhm"], meta["psf_beta"])
            jpeg = bands_to_jpeg(cube + galaxy, self.survey, meta["jpeg_quality"])
            image, row_status, _ = prepare_payload(Payload(jpeg, JPEG), self.survey.colour)
            images.append(image)
            statuses.append(row_status)
        return images, statuses

    def close(self):
        pass


# -- the user's images -----------------------------------------------------------


class _FitsImage:
    """One band's image: memory-mapped data and celestial WCS."""

    def __init__(self, path):
        from astropy.io import fits
        from astropy.wcs import WCS, FITSFixedWarning
        from astropy.wcs.utils import proj_plane_pixel_area

        self.path = Path(path)
        self.hdul = fits.open(self.path, memmap=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            for hdu in self.hdul:
                shape = getattr(hdu, "shape", None)
                if (hdu.is_image and shape and len(shape) >= 2
                        and all(s == 1 for s in shape[:-2])):
                    wcs = WCS(hdu.header, self.hdul)
                    if wcs.has_celestial:
                        break
            else:
                self.hdul.close()
                raise ValueError(f"{self.path}: no image HDU with a celestial WCS found")
        self.data = hdu.data.reshape(shape[-2:])
        self.wcs = wcs.celestial
        self.scale = math.sqrt(proj_plane_pixel_area(self.wcs)) * 3600.0

    def stamp(self, coord, side):
        """A (side, side) native-pixel copy around ``coord``, or None if it does not fit."""
        from astropy.nddata import Cutout2D
        from astropy.nddata.utils import NoOverlapError, PartialOverlapError

        try:
            cut = Cutout2D(self.data, coord, (side, side), wcs=self.wcs, mode="strict", copy=True)
        except (NoOverlapError, PartialOverlapError, ValueError):
            return None
        data = cut.data.astype(np.float64)
        centre = data[side // 2, side // 2]
        return (data, cut.wcs) if np.isfinite(centre) else None

    def close(self):
        self.hdul.close()


class _LocalBackgrounds:
    """Stamps of the user's images at random positions; cut by the local backend."""

    def __init__(self, backend, count, rng, psf_fwhm, zero_point, workdir):
        self.survey = backend.survey
        self.zero_point = float(zero_point)
        self.workdir = Path(workdir)
        if isinstance(psf_fwhm, dict):
            missing = [b for b in self.survey.bands if b not in psf_fwhm]
            if missing:
                raise ValueError(f"psf_fwhm has no value for band(s) {', '.join(missing)}")
        self.psf = {band: float(psf_fwhm[band] if isinstance(psf_fwhm, dict) else psf_fwhm)
                    for band in self.survey.bands}
        self.images = {}
        try:
            for band in self.survey.bands:
                self.images[band] = []
                for path in backend.images[band]:
                    self.images[band].append(_FitsImage(path))
            self._find_sites(count, rng)
        except Exception:
            self.close()
            raise
        self.paths = {band: [str(i.path) for i in imgs] for band, imgs in self.images.items()}
        self._counter = 0

    def _find_sites(self, count, rng):
        from astropy.coordinates import SkyCoord

        fov = float((self.survey.pixel_scale * self.survey.cutout_size * u.pix).to_value(u.arcsec))
        # A stamp holds the cutout in any orientation (its diagonal) plus a margin.
        sides = {band: 2 * math.ceil(0.5 * fov * math.sqrt(2) / imgs[0].scale)
                 + 2 * STAMP_MARGIN_PIX + 1 for band, imgs in self.images.items()}
        first = self.images[self.survey.bands[0]][0]
        ny, nx = first.data.shape
        margin = sides[self.survey.bands[0]] / 2.0 + 1.0
        # Sites may overlap: every injection gets its own copy of the pixels.
        self.sites = []
        for _ in range(MAX_SITE_TRIES * count):
            if len(self.sites) == count or nx < 2 * margin or ny < 2 * margin:
                break
            x, y = rng.uniform(margin, nx - 1 - margin), rng.uniform(margin, ny - 1 - margin)
            coord = SkyCoord(first.wcs.pixel_to_world(x, y)).icrs
            stamps = {}
            for band, imgs in self.images.items():
                found = (img.stamp(coord, sides[band]) for img in imgs)
                stamps[band] = next((s for s in found if s is not None), None)
            if all(s is not None for s in stamps.values()):
                self.sites.append((float(coord.ra.deg), float(coord.dec.deg), stamps))
        if len(self.sites) < count:
            raise ValueError(
                f"found room for only {len(self.sites)} of {count} injection sites in "
                f"{first.path.name}: each needs a stamp of {fov * math.sqrt(2):.0f} arcsec "
                "(the cutout's diagonal) with data in every band; give larger images")

    def describe(self):
        return {"images": self.paths, "psf_fwhm_arcsec": self.psf, "zero_point": self.zero_point}

    def model_inputs(self, sources):
        images, statuses = [], []
        for (ra, dec, stamps), source in zip(self.sites, sources):
            image, row_status = self._one(ra, dec, stamps, source)
            images.append(image)
            statuses.append(row_status)
        return images, statuses

    def _one(self, ra, dec, stamps, source):
        from astropy.io import fits

        self._counter += 1
        paths = {}
        for band, (data, wcs) in stamps.items():
            injected = inject_into_image(data, wcs, ra, dec, source, band, self.survey,
                                         self.psf[band], self.zero_point)
            path = self.workdir / f"injection{self._counter:06d}_{band}.fits"
            fits.PrimaryHDU(injected.astype(np.float32), header=wcs.to_header(relax=True)) \
                .writeto(path, overwrite=True)
            paths[band] = path
        # The same local backend a catalog position would go through; the
        # zero point given is the unit the galaxy was injected in.
        with LocalFitsBackend(self.survey, images=paths, zero_points=self.zero_point) as backend:
            fetched = fetch_images([ra], [dec], backend, cache=False, workers=1, progress=False)
        for path in paths.values():
            path.unlink()
        ok = fetched.status[0] == status.OK
        return (fetched.images[0] if ok else None), str(fetched.status[0])

    def close(self):
        for imgs in self.images.values():
            for img in imgs:
                img.close()


def _backgrounds(background, survey, count, rng, seed, psf_fwhm, zero_point, workdir):
    if isinstance(background, LocalFitsBackend):
        if survey is not None and get_survey(survey).name != background.survey.name:
            raise ValueError(f"survey={survey!r} differs from the local backend's survey "
                             f"{background.survey.name!r}")
        return _LocalBackgrounds(background, count, rng, psf_fwhm, zero_point, workdir)
    if background in SIMULATED_BACKGROUNDS:
        info = get_survey("des" if survey is None else survey)
        return _SimulatedBackgrounds(info, count, rng, seed,
                                     artifact=background == "simulated-artifacts")
    raise ValueError(f"background must be one of {SIMULATED_BACKGROUNDS} or a LocalFitsBackend, "
                     f"got {background!r}")


def injection_recovery(model=None, mu0_grid=DEFAULT_MU0_GRID, re_grid=DEFAULT_RE_GRID,
                       n_per_cell=DEFAULT_PER_CELL, background="simulated", survey=None, seed=0,
                       sersic_n=SERSIC_INDEX, threshold=DEFAULT_THRESHOLD,
                       psf_fwhm=DEFAULT_PSF_FWHM, zero_point=DEFAULT_ZERO_POINT):
    """Completeness of the classifier on a grid of surface brightness and size.

    Parameters
    ----------
    model : str, path-like or LSBGModel, optional
        ``"des"``, ``"hsc"``, a weights file or a loaded model; default the
        bundled model of ``survey``.
    mu0_grid : array_like or str
        Central surface brightness in g (AB mag/arcsec^2), values or
        ``"START,STOP,STEP"``.
    re_grid : array_like or str
        Effective (semi-major half-light) radius (arcsec), likewise.
    n_per_cell : int
        Galaxies injected per (μ0, r_e) cell.
    background : {"simulated", "simulated-artifacts"} or LocalFitsBackend
        What the galaxies are injected into (see the module documentation).
    survey : {"des", "hsc"}, optional
        Default ``"des"``, or the local backend's survey.
    seed : int
        Seed of the positions, shapes, colours and simulated skies.
    sersic_n : float
        Sérsic index of the injected galaxies.
    threshold : float
        A galaxy is recovered when its LSBG probability is at least this.
    psf_fwhm : float or dict
        Local images only: FWHM (arcsec) of the Gaussian PSF, for all bands
        or per band.  The simulated sky uses its own per-field PSF.
    zero_point : float
        Local images only: AB zero point of the image units (22.5:
        nanomaggies).  Used to inject the galaxy and, as the local
        backend's ``zero_points``, to read the stamps back, so the two agree.

    Returns
    -------
    `~astropy.table.Table`
        One row per cell: ``mu0`` (mag / arcsec2), ``r_e`` (arcsec), ``n``
        (galaxies scored), ``n_recovered``, ``completeness``, ``ci_low`` and
        ``ci_high`` (Wilson 95 % interval) and ``mean_prob``; the settings
        in ``meta``.
    """
    mu0_values = _grid(mu0_grid, "mu0_grid")
    re_values = _grid(re_grid, "re_grid")
    if np.any(re_values <= 0):
        raise ValueError(f"re_grid must be positive, got {re_values}")
    if int(n_per_cell) < 1:
        raise ValueError(f"n_per_cell must be at least 1, got {n_per_cell}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    n_per_cell = int(n_per_cell)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) % (2**63), 0x1A7EC7]))
    shapes = _draw_shapes(rng, n_per_cell, sersic_n)
    rows = []
    failed = Counter()
    with tempfile.TemporaryDirectory(prefix="lsbg-inject-") as workdir:
        fields = _backgrounds(background, survey, n_per_cell, rng, seed, psf_fwhm, zero_point,
                              workdir)
        try:
            info = fields.survey
            classifier = load_model(info.name if model is None else model)
            for mu0 in mu0_values:
                for r_e in re_values:
                    sources = [InjectedLSBG(float(mu0), float(r_e), **s) for s in shapes]
                    images, statuses = fields.model_inputs(sources)
                    ok = [im for im in images if im is not None]
                    failed.update(st for im, st in zip(images, statuses) if im is None)
                    prob = classifier.predict(np.stack(ok)) if ok else np.zeros(0, np.float32)
                    rows.append((mu0, r_e, len(ok), int(np.sum(prob >= threshold)),
                                 float(np.mean(prob)) if ok else np.nan))
            described = fields.describe()
        finally:
            fields.close()
    if failed:
        why = ", ".join(f"{st}: {count}" for st, count in sorted(failed.items()))
        warnings.warn(f"{sum(failed.values())} injections gave no usable cutout and are not "
                      f"counted ({why})", AstropyUserWarning)
    return _completeness_table(rows, dict(
        model=classifier.name,
        survey=info.name,
        background=background if isinstance(background, str) else "local",
        n_per_cell=n_per_cell,
        seed=int(seed),
        sersic_n=float(sersic_n),
        threshold=float(threshold),
        confidence=CONFIDENCE,
        failed=int(sum(failed.values())),
        **described,
    ))


def run_injection(output_dir, images=None, background="simulated", survey=None, **options):
    """Run :func:`injection_recovery` and write its table and figure into ``output_dir``.

    Parameters
    ----------
    output_dir : path-like
        Folder (made if missing) for :data:`COMPLETENESS_TABLE` (ECSV) and
        :data:`COMPLETENESS_FIGURE` (PNG); existing ones are replaced.
    images : dict, optional
        Band → FITS image path(s) with WCS of the user's own sky, read by a
        :class:`~lsbg_classify.surveys.local.LocalFitsBackend` of ``survey``
        (default ``"des"``) and injected into instead of ``background``.
    background : {"simulated", "simulated-artifacts"}
        The simulated sky to inject into when no ``images`` are given.
    survey : {"des", "hsc"}, optional
        As for :func:`injection_recovery`.
    **options
        The other arguments of :func:`injection_recovery`.

    Returns
    -------
    `~astropy.table.Table`
        The completeness table written.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if images:
        with LocalFitsBackend(survey or "des", images=images) as local:
            table = injection_recovery(background=local, survey=survey, **options)
    else:
        table = injection_recovery(background=background, survey=survey, **options)
    table.write(out / COMPLETENESS_TABLE, overwrite=True)
    plot_completeness(table, out / COMPLETENESS_FIGURE)
    return table


def _completeness_table(rows, meta):
    mu0, r_e, n, k, mean_prob = (np.array(c) for c in zip(*rows))
    low, high = wilson_interval(k, n)
    table = Table()
    table["mu0"] = mu0.astype(np.float64) * (u.mag / u.arcsec**2)
    table["r_e"] = r_e.astype(np.float64) * u.arcsec
    table["n"] = n.astype(np.int64)
    table["n_recovered"] = k.astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        table["completeness"] = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    table["ci_low"] = low
    table["ci_high"] = high
    table["mean_prob"] = mean_prob.astype(np.float64)
    table["mu0"].description = "central surface brightness, g band"
    table["r_e"].description = "effective (semi-major half-light) radius"
    table["n"].description = "injected galaxies with a usable cutout"
    table["n_recovered"].description = "of those, classified as LSBG"
    table["ci_low"].description = f"Wilson {CONFIDENCE:.0%} interval, lower bound"
    table["ci_high"].description = f"Wilson {CONFIDENCE:.0%} interval, upper bound"
    table.meta.update(meta)
    return table


def _edges(values):
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 1:
        return np.array([values[0] - 0.5, values[0] + 0.5])
    mid = (values[1:] + values[:-1]) / 2.0
    return np.concatenate([[2 * values[0] - mid[0]], mid, [2 * values[-1] - mid[-1]]])


def plot_completeness(table, path):
    """Completeness map over (μ0, r_e) and completeness curves against μ0.

    Parameters
    ----------
    table : `~astropy.table.Table`
        As returned by :func:`injection_recovery`.
    path : path-like
        PNG file to write.
    """
    mu_all = np.asarray(table["mu0"], dtype=np.float64)
    re_all = np.asarray(table["r_e"], dtype=np.float64)
    mu, re = np.unique(mu_all), np.unique(re_all)
    grid = np.full((len(re), len(mu)), np.nan)
    grid[np.searchsorted(re, re_all), np.searchsorted(mu, mu_all)] = table["completeness"]

    fig = new_figure((11.5, 4.4))
    left, right = fig.subplots(1, 2)
    mesh = left.pcolormesh(_edges(mu), _edges(re), grid, vmin=0, vmax=1, cmap="viridis")
    for i, r in enumerate(re):
        for j, m in enumerate(mu):
            if np.isfinite(grid[i, j]):
                left.text(m, r, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                          color="white" if grid[i, j] < 0.6 else "black")
    fig.colorbar(mesh, ax=left, label="completeness")
    left.set_xlabel(r"$\mu_0(g)$ [mag arcsec$^{-2}$]")
    left.set_ylabel(r"$r_e$ [arcsec]")

    n, k = np.asarray(table["n"]), np.asarray(table["n_recovered"])
    for r in re:
        sel = re_all == r
        right.plot(mu_all[sel], np.asarray(table["completeness"])[sel], marker="o", ms=3, lw=1,
                   label=rf"$r_e$ = {r:g}″")
    n_mu = np.array([n[mu_all == m].sum() for m in mu])
    k_mu = np.array([k[mu_all == m].sum() for m in mu])
    low, high = wilson_interval(k_mu, n_mu)
    with np.errstate(divide="ignore", invalid="ignore"):
        right.plot(mu, k_mu / n_mu, color="black", lw=2.2, label="all sizes")
    right.fill_between(mu, low, high, color="black", alpha=0.15,
                       label=f"{CONFIDENCE:.0%} interval (all sizes)")
    right.set_ylim(-0.02, 1.02)
    right.set_xlabel(r"$\mu_0(g)$ [mag arcsec$^{-2}$]")
    right.set_ylabel("fraction classified LSBG")
    right.legend(fontsize=7, loc="best")
    meta = table.meta
    fig.suptitle(f"Injection-recovery: model {meta.get('model', '?')}, "
                 f"{str(meta.get('survey', '')).upper()}, background {meta.get('background', '?')},"
                 f" {meta.get('n_per_cell', '?')} per cell, "
                 f"threshold {meta.get('threshold', DEFAULT_THRESHOLD)}",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
