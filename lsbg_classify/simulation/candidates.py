"""A synthetic DES / HSC sky for training and offline tests.

The bundled CNN is trained on cutouts made here and applied to real cutouts
from the Legacy Surveys viewer, so the simulator mirrors the real image chain
step by step:

1. A scene is drawn on the survey's *native* pixel grid (DES 0.262"/px,
   HSC 0.168"/px): the candidate at the centre (a low-surface-brightness
   galaxy or one of the DES "hard" artifacts), field stars and galaxies with
   realistic number counts, sizes and colours.  Profiles come from GalSim,
   drawn before the PSF; the whole scene is then convolved with a per-band
   Moffat PSF (also from GalSim) by FFT.
2. Bright stars get extended wings, diffraction spikes, saturated cores and
   bleed trails; ghosts, scattered light and Galactic cirrus are added where
   the scene calls for them.
3. The viewer resamples the coadd to the cutout pixel scale (0.131"/px for
   ``zoom=15``, half the native scale); we do the same with band-limited
   (Fourier) interpolation, and bilinear interpolation for the sharp-edged
   detector effects.
4. Sky noise at the survey depth (white per native pixel, resampled the
   same way) and a small residual sky level are added.
5. :func:`lsbg_classify.colour.asinh_rgb` maps the bands to RGB, which is
   quantised to 8 bits and JPEG-compressed with Pillow (quality 90).

Calibration against real cutouts (:mod:`lsbg_classify.calibration`, the
real des_real_10 and des_dev_119 sets) fixed three empirical constants:
the noise level (``_NOISE_CALIBRATION``), a residual sky offset per band
(``_SKY_OFFSET``) and an overall source brightness against the stretch
(``_FLUX_SCALE`` = 2, i.e. sources 0.75 mag brighter than catalogue
nanomaggies would give).  It also showed that the real 64x64 reference
cutouts have nearly white noise at 64 px, as the paper's PIL bicubic resize
gives (a Gaussian anti-aliasing filter would correlate neighbours);
:func:`make_training_set` uses that resize and can mimic others
(``resample``).

Units: DES band images are in nanomaggies (zero point 22.5); HSC images are
in counts with zero point 27 (1 nanomaggy = 63.1 counts), as the services
deliver them.

HSC colour: the viewer's ``hsc2`` JPEG shows g, r and **z**, but the model's
HSC bands are g, r, i (:data:`lsbg_classify.surveys.SURVEYS`).  The
simulated HSC cube holds g, r, i and :func:`render_jpeg` puts i in the red
channel with the ``HSC_MAPPING`` z scale.  The difference (i instead of z)
is a colour shift of about r-i vs r-z in the red channel only.

Everything is deterministic: the random state of a cutout is seeded from
``(seed, ra, dec)`` (positions rounded to 1e-6 deg) and the label.
"""

import dataclasses
import io
import math
from functools import lru_cache

import numpy as np

from .surveys.base import SurveyInfo, get_survey

__all__ = [
    "SIMULATOR_VERSION",
    "JPEG_QUALITY",
    "truth_label",
    "render_bands",
    "render_jpeg",
    "render_fits",
    "make_training_set",
    "ARTIFACT_KINDS",
    "LSBG_KINDS",
    "sersic_band_magnitudes",
    "render_background",
    "bands_to_jpeg",
]

#: Version of the rendering; bump whenever a cutout's pixels change.
SIMULATOR_VERSION = "1.3"

#: JPEG quality used for the viewer-like JPEGs (Pillow scale).  The viewer
#: has written its JPEGs at quality 90; with it the simulated 64 px noise
#: texture (neighbour-pixel roughness over MAD) matches des_real_10.  Domain
#: randomisation draws from 75-95.
JPEG_QUALITY = 90

# How a position and seed become a random state: positions are rounded to
# 1e-6 deg (3.6 mas, far below a pixel) like the cache keys, so a catalog
# re-read with rounding noise gets the same sky.
_POS_SCALE = 1e6
_STREAM_LABEL = 0x1ABE1
_STREAM_SCENE = 0x5CE9E

#: Kinds of simulated LSBGs and their rates (sum to 1).
LSBG_KINDS = {
    "lsbg_smooth": 0.62,
    "lsbg_clumpy": 0.26,
    "lsbg_nucleated": 0.12,
}

#: Kinds of simulated artifacts (the DES "hard negatives") and their rates.
#: Rates follow the composition of the rejected DES candidates described by
#: Tanoglidis et al. (2021a) and seen in real artifact cutouts: compact
#: sources/blends and light around bright stars and galaxies dominate.
#: Simulator 1.3 adds the ordinary galaxies just above the selection's
#: surface-brightness cut that a model trained on 1.2 took for LSBGs on real
#: cutouts: edge-on discs, discs with a bright core, and close pairs, and it
#: moves ``art_compact`` to the sizes an LSBG finder picks up.
ARTIFACT_KINDS = {
    "art_compact": 0.13,
    "art_edge_on": 0.08,
    "art_bright_core": 0.09,
    "art_pair": 0.07,
    "art_blend": 0.09,
    "art_star_halo": 0.14,
    "art_galaxy_halo": 0.13,
    "art_spiral": 0.12,
    "art_tidal": 0.05,
    "art_cirrus": 0.04,
    "art_ghost": 0.04,
    "art_faint": 0.02,
}


# --------------------------------------------------------------------------
# Survey models


@dataclasses.dataclass(frozen=True)
class _SurveyModel:
    """Observing conditions of a survey as the simulator uses them.

    Attributes
    ----------
    depth10 : tuple of float
        Median 10-sigma point-source depth per band (AB mag, 1.95" aperture),
        bands bluest first.
    psf_fwhm : tuple of float
        Median PSF FWHM per band (arcsec).
    psf_scatter : float
        Log-normal scatter of the PSF FWHM between cutouts (natural log).
    depth_scatter : float
        Log-normal scatter of the noise level between cutouts (natural log).
    flux_per_nmgy : float
        Native flux units per nanomaggy.
    saturation : float
        Peak native-pixel flux (nanomaggies) above which a star saturates.
    """

    depth10: tuple
    psf_fwhm: tuple
    psf_scatter: float
    depth_scatter: float
    flux_per_nmgy: float
    saturation: float


# DES DR1 median coadd depths (Abbott et al. 2018, 10 sigma, 1.95" aperture)
# and PSF FWHM.  HSC-SSP PDR2 Wide depths (5 sigma, 2" aperture, minus
# 0.75 mag for 10 sigma) and seeing.
_MODELS = {
    "des": _SurveyModel(
        depth10=(24.08, 24.08, 22.69),
        psf_fwhm=(1.12, 0.96, 0.88),
        psf_scatter=0.12,
        depth_scatter=0.15,
        flux_per_nmgy=1.0,
        saturation=30.0,
    ),
    "hsc": _SurveyModel(
        depth10=(25.85, 25.45, 25.45),
        psf_fwhm=(0.77, 0.72, 0.62),
        psf_scatter=0.15,
        depth_scatter=0.15,
        flux_per_nmgy=63.1,
        saturation=60.0,
    ),
}

# Converts the formal aperture depth into the per-pixel noise of viewer
# cutouts (white on the native grid), per band (bluest first).  Calibrated
# so the background noise (MAD per channel) of simulated des-dr1 cutouts,
# shrunk to 64 px with the paper's PIL resize, matches des_real_10 (made by
# the paper's pipeline): MAD R/G/B about 11/7/8 levels of 255.  Factors
# above 1 absorb coadd depth variations, masked exposures and the viewer's
# resampling.  HSC has no real cutouts here: it takes their geometric mean.
_NOISE_CALIBRATION = {"des": (3.14, 5.69, 3.6), "hsc": (4.0, 4.0, 4.0)}


def _noise_calibration(model):
    return np.asarray(_NOISE_CALIBRATION["hsc" if model is _MODELS["hsc"] else "des"])

# Brightness of sources relative to the noise and the colour stretch.  Real
# viewer cutouts (des_real_10, des_dev_119) show candidates, field sources
# and the brightest pixels about 0.75 mag brighter against the asinh stretch
# than the catalogued nanomaggy fluxes of DES objects predict; this factor
# matches them (calibration.compare_real_vs_simulated: central brightness,
# source counts, upper pixel quantiles).  Noise is calibrated separately.
_FLUX_SCALE = 2.0

# Mean residual sky per band (g, r, z), nanomaggies per arcsec^2.
_SKY_OFFSET = (-0.006, -0.012, -0.03)

# Gaussian correlation length (native pixels) of the coadd noise.  Zero
# matches the real texture; randomisation draws 0-0.6.
_NOISE_CORRELATION = 0.0

# Multiplies the noise of every cutout (1 = the depths above); calibration
# scripts set it to mimic a deeper release such as DR9.
_DEPTH_FACTOR = 1.0

# Margin (native pixels) drawn around the cutout so light from just outside
# reaches it and the FFT's wrap-around stays out of view.
_MARGIN = 16


def _survey_info(survey):
    return survey if isinstance(survey, SurveyInfo) else get_survey(survey)


def _arcsec(q):
    """Pixel scale as a plain float in arcsec/pix."""
    return float(getattr(q, "value", q))


def _mag_to_nmgy(mag):
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - 22.5))


# --------------------------------------------------------------------------
# Random states


def _position_key(ra, dec):
    ra_key = int(round((float(ra) % 360.0) * _POS_SCALE)) % (360 * int(_POS_SCALE))
    dec_key = int(round((float(dec) + 90.0) * _POS_SCALE))
    return ra_key, dec_key


def _rng(ra, dec, seed, stream, *extra):
    ra_key, dec_key = _position_key(ra, dec)
    entropy = [int(seed) % (2**63), ra_key, max(dec_key, 0), stream, *extra]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def truth_label(ra, dec, seed=0):
    """The simulated sky's label at a position.

    Parameters
    ----------
    ra, dec : float
        Position (deg).
    seed : int
        Sky seed; a different seed is a different sky.

    Returns
    -------
    int
        1 if the simulated candidate at this position is an LSBG, else 0
        (about half of all positions).
    """
    return int(_rng(ra, dec, seed, _STREAM_LABEL).random() < 0.5)


# --------------------------------------------------------------------------
# Observing conditions


@dataclasses.dataclass
class _Conditions:
    psf_fwhm: np.ndarray  # (3,) arcsec
    psf_beta: float
    noise: np.ndarray  # (3,) native flux per native pixel (nanomaggies)
    sky: np.ndarray  # (3,) residual sky level, nanomaggies per arcsec^2
    gain: np.ndarray  # (3,) calibration multiplier
    noise_corr: float
    jpeg_quality: int


def _draw_conditions(rng, model, native_scale, randomize):
    fwhm0 = np.asarray(model.psf_fwhm)
    scatter = model.psf_scatter * (1.6 if randomize else 1.0)
    fwhm = fwhm0 * math.exp(rng.normal(0.0, scatter)) * np.exp(rng.normal(0.0, 0.04, 3))
    beta = rng.uniform(2.6, 4.2)
    # Per-pixel noise from the 10-sigma aperture depth (1.95" diameter).
    ap_pix = math.pi * (1.95 / 2) ** 2 / native_scale**2
    sigma = (_mag_to_nmgy(model.depth10) / 10.0 / math.sqrt(ap_pix)
             * _noise_calibration(model))
    dscatter = model.depth_scatter
    if randomize:
        # Covers des-dr1 (1.0-1.3 with the calibration above) and the DR9
        # dev-set cutouts (about 0.6: their MAD R/G/B of 6.3/4.4/4.4 levels
        # is matched there), with some room on both sides; the per-band
        # jitter lets the noise colour vary as it does between releases.
        depth_factor = math.exp(rng.uniform(math.log(0.42), math.log(1.35)))
        band_jitter = 0.15
    else:
        depth_factor = math.exp(rng.normal(0.0, dscatter))
        band_jitter = 0.06
    sigma = (sigma * depth_factor * np.asarray(_DEPTH_FACTOR)
             * np.exp(rng.normal(0.0, band_jitter, 3)))
    # Residual sky (nanomaggies per arcsec^2).  The asinh stretch clips
    # negative noise at zero, which lifts the mean sky of noisy bands; the
    # slightly negative offsets (coadd sky over-subtraction is common) bring
    # the simulated sky level to the real cutouts' ~33/255 in every channel.
    sky_sb = np.asarray(_SKY_OFFSET) * depth_factor
    sky_sb = sky_sb + rng.normal(0.0, 0.004 if randomize else 0.0015, 3)
    sky_sb += rng.normal(0.0, 0.002 if randomize else 0.0005) * np.ones(3)
    gain = np.full(3, _FLUX_SCALE)
    if randomize:
        gain = gain * math.exp(rng.normal(0.0, 0.2)) * np.exp(rng.normal(0.0, 0.08, 3))
    corr = _NOISE_CORRELATION
    if randomize:
        corr = float(rng.choice([0.0, 0.0, 0.3, 0.6]))
    quality = int(rng.integers(75, 96)) if randomize else JPEG_QUALITY
    return _Conditions(fwhm, float(beta), sigma, sky_sb, gain, corr, quality)


# --------------------------------------------------------------------------
# Scene: pre-PSF band images on the native grid


class _Scene:
    """Three band images (nanomaggies per native pixel) being built.

    ``pre`` holds light that is convolved with the PSF; ``post`` holds light
    already convolved (bright-star models, detector effects), added after.
    Coordinates: pixel ``(ix, iy)`` has its centre at ``x = ix``; the
    cutout centre is at ``((n - 1) / 2, (n - 1) / 2)``.
    """

    def __init__(self, n, scale):
        self.n = n
        self.scale = scale
        self.pre = np.zeros((3, n, n))
        self.post = np.zeros((3, n, n))
        self.centre = (n - 1) / 2.0
        self.sat_masks = []
        self._grid = None

    @property
    def grid(self):
        """Offsets from the cutout centre (arcsec), arrays (y, x)."""
        if self._grid is None:
            c = (np.arange(self.n) - self.centre) * self.scale
            self._grid = (c[:, None] + 0 * c[None, :], c[None, :] + 0 * c[:, None])
        return self._grid

    def to_pix(self, x_arcsec, y_arcsec):
        return self.centre + x_arcsec / self.scale, self.centre + y_arcsec / self.scale

    def add_point(self, x_arcsec, y_arcsec, fluxes):
        """Deposit a point source with bilinear weights (pre-PSF)."""
        self.add_points([x_arcsec], [y_arcsec], np.asarray(fluxes, dtype=float)[None, :])

    def add_points(self, x_arcsec, y_arcsec, fluxes):
        """Deposit point sources with bilinear weights (pre-PSF).

        Parameters
        ----------
        x_arcsec, y_arcsec : array_like, shape (m,)
            Positions relative to the cutout centre (arcsec).
        fluxes : array_like, shape (m, 3)
            Flux per band.
        """
        x, y = self.to_pix(np.asarray(x_arcsec, float), np.asarray(y_arcsec, float))
        fluxes = np.asarray(fluxes, dtype=float).reshape(-1, 3)
        ix, iy = np.floor(x).astype(int), np.floor(y).astype(int)
        fx, fy = x - ix, y - iy
        flat = self.pre.reshape(3, -1)
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                jx, jy = ix + dx, iy + dy
                ok = (jx >= 0) & (jx < self.n) & (jy >= 0) & (jy < self.n)
                idx = (jy * self.n + jx)[ok]
                w = (wx * wy)[ok]
                for b in range(3):
                    np.add.at(flat[b], idx, fluxes[ok, b] * w)

    def add_stamp(self, stamp, ix, iy, fluxes, post=False):
        """Add ``fluxes[b] * stamp`` with the stamp centred on pixel (ix, iy)."""
        target = self.post if post else self.pre
        h = stamp.shape[0] // 2
        y0, x0 = iy - h, ix - h
        y1, x1 = y0 + stamp.shape[0], x0 + stamp.shape[1]
        cy0, cx0 = max(y0, 0), max(x0, 0)
        cy1, cx1 = min(y1, self.n), min(x1, self.n)
        if cy0 >= cy1 or cx0 >= cx1:
            return
        part = stamp[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        target[:, cy0:cy1, cx0:cx1] += np.asarray(fluxes, dtype=float)[:, None, None] * part

    def add_profile(self, prof, x_arcsec, y_arcsec, fluxes, size_arcsec, modulate=None):
        """Draw a unit-flux GalSim profile (pre-PSF) and add it per band.

        Parameters
        ----------
        prof : galsim.GSObject
            Profile with flux 1, centred on the origin.
        x_arcsec, y_arcsec : float
            Centre relative to the cutout centre (arcsec).
        fluxes : array_like, shape (3,)
            Flux per band (nanomaggies).
        size_arcsec : float
            Half-light size, sets the stamp size and oversampling.
        modulate : callable, optional
            ``modulate(dx, dy)`` with offsets (arcsec) from the profile
            centre, returning a non-negative factor applied to the stamp
            before it is renormalised to unit flux.
        """
        stamp, ix, iy = _draw_stamp(prof, self, x_arcsec, y_arcsec, size_arcsec)
        if stamp is None:
            return
        if modulate is not None:
            h = stamp.shape[0] // 2
            c = (np.arange(stamp.shape[0]) - h) * self.scale
            x0, y0 = self.to_pix(x_arcsec, y_arcsec)
            dx = c[None, :] + (ix - x0) * self.scale
            dy = c[:, None] + (iy - y0) * self.scale
            total = stamp.sum()
            stamp = stamp * modulate(dx, dy)
            s = stamp.sum()
            if s > 0:
                stamp *= total / s
        self.add_stamp(stamp, ix, iy, fluxes)


def _draw_stamp(prof, scene, x_arcsec, y_arcsec, size_arcsec):
    """Draw a pre-PSF profile on a stamp aligned with the scene's pixels."""
    scale = scene.scale
    x, y = scene.to_pix(x_arcsec, y_arcsec)
    ix, iy = int(round(x)), int(round(y))
    h = _stamp_half(size_arcsec, scale, scene.n)
    # Skip stamps entirely outside the scene.
    if ix + h < 0 or iy + h < 0 or ix - h >= scene.n or iy - h >= scene.n:
        return None, ix, iy
    return _draw_unit(prof, scale, h, x - ix, y - iy, size_arcsec), ix, iy


def _stamp_half(size_arcsec, scale, n):
    return int(min(max(math.ceil(5.0 * size_arcsec / scale) + 3, 5), n))


def _draw_unit(prof, scale, h, dx, dy, size_arcsec):
    # Small objects are drawn 3x oversampled and binned, so their flux is
    # integrated over pixels instead of sampled at a cusp.
    over = 3 if size_arcsec < 2.0 * scale else 1
    size = (2 * h + 1) * over
    img = prof.drawImage(
        nx=size, ny=size, scale=scale / over, offset=(dx * over, dy * over), method="no_pixel"
    ).array
    if over > 1:
        img = img.reshape(2 * h + 1, over, 2 * h + 1, over).sum(axis=(1, 3))
    s = img.sum()
    if s > 0:
        img = img / s
    return img


# Galaxies smaller than this (half-light radius, arcsec) come from a cache of
# stamps with quantised parameters: field galaxies are drawn by the
# thousand and after the PSF nobody can tell a 5 % size step.
_TEMPLATE_MAX_RE = 1.2


@lru_cache(maxsize=20000)
def _template(n_q, re_q, q_q, pa_q):
    # Templates are in pixel units (scale 1), so one cache serves every
    # pixel scale.
    re = math.exp(re_q / 20.0)
    prof = _sersic(n_q / 4.0, re, q_q / 20.0, math.radians(pa_q * 10.0))
    h = _stamp_half(re, 1.0, 10**6)
    stamp = _draw_unit(prof, 1.0, h, 0.0, 0.0, re).astype(np.float32)
    stamp.flags.writeable = False
    return stamp


def _add_small_galaxy(scene, n, re, q, pa, x_arcsec, y_arcsec, fluxes):
    """Add a small Sersic galaxy (pre-PSF) from the template cache.

    The centre is rounded to the nearest native pixel (0.13" at most for
    DES), far below the PSF.
    """
    q_q = int(round(min(max(q, 0.1), 1.0) * 10)) * 2
    pa_q = 0 if q_q >= 18 else (int(round(math.degrees(pa % math.pi) / 20.0)) % 9) * 2
    stamp = _template(
        int(round(min(max(n, 0.5), 4.0) * 2)) * 2,
        int(round(math.log(re / scene.scale) * 20)),
        q_q,
        pa_q,
    )
    x, y = scene.to_pix(x_arcsec, y_arcsec)
    scene.add_stamp(stamp, int(round(x)), int(round(y)), fluxes)


# --------------------------------------------------------------------------
# Profiles


def _galsim():
    import galsim

    return galsim


_GSPARAMS = None


def _gsparams():
    global _GSPARAMS
    if _GSPARAMS is None:
        g = _galsim()
        _GSPARAMS = g.GSParams(folding_threshold=1e-2, maxk_threshold=3e-3)
    return _GSPARAMS


def _sersic(n, hlr, q=1.0, beta_rad=0.0):
    """Unit-flux Sersic profile; ``hlr`` is the semi-major half-light radius.

    The index is rounded to 0.05 because GalSim tabulates every new index
    once (about 20 ms), so a small set of indices stays fast.
    """
    g = _galsim()
    n = min(max(round(n * 20) / 20.0, 0.3), 6.0)
    q = min(max(float(q), 0.1), 1.0)
    prof = g.Sersic(n=n, half_light_radius=hlr * math.sqrt(q), flux=1.0, gsparams=_gsparams())
    if q < 0.999:
        prof = prof.shear(q=q, beta=beta_rad * g.radians)
    return prof


def _sersic_mean_sb_offset(n):
    """<mu>_e - mu_0 for a Sersic profile (mag)."""
    b = _sersic_b(n)
    fn = n * math.exp(b) * math.gamma(2 * n) / b ** (2 * n)
    mu_e_minus_mean = 2.5 * math.log10(fn)
    return -mu_e_minus_mean + 1.0857362 * b


def _sersic_b(n):
    # Ciotti & Bertin (1999) asymptotic expansion, good to 1e-4 for n > 0.36,
    # with a low-n fit below.
    if n < 0.36:
        return 0.01945 - 0.8902 * n + 10.95 * n**2 - 19.67 * n**3 + 13.43 * n**4
    return 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n**2)


def _total_mag(mu_mean, r_e, q):
    """Total magnitude of a profile with mean SB ``mu_mean`` within the ellipse r_e."""
    return mu_mean - 2.5 * math.log10(2 * math.pi * q * r_e**2)


def _band_fluxes(mag_g, g_r, r_z, model, gain):
    """Fluxes in the survey's three bands (native units) from g and colours."""
    mags = np.array([mag_g, mag_g - g_r, mag_g - g_r - r_z])
    return _mag_to_nmgy(mags) * model.flux_per_nmgy * gain


def _survey_colours(g_r, r_z, name):
    """Second colour for the survey's reddest band (r-z for DES, r-i for HSC)."""
    if name == "hsc":
        # For galaxy and stellar SEDs r-i is roughly 0.55 (r-z) - 0.02.
        return g_r, 0.55 * r_z - 0.02
    return g_r, r_z


# --------------------------------------------------------------------------
# Field populations


def _field_galaxies(rng, scene, ctx, density=1.0):
    """Background galaxies with number counts, sizes and colours.

    Counts: dN/dm = 21 * 10**(0.33 (r - 24)) per arcmin^2 per mag
    (r < 24 gives about 28 per arcmin^2, as in deep-field counts).  Half are
    red (passive or high-redshift) galaxies, which give the orange dots of
    real DES cutouts.
    """
    side = scene.n * scene.scale / 60.0
    area = side**2
    m_lo, m_hi = 17.0, 26.0
    a = 0.33
    norm = 21.0 / (a * math.log(10))
    n_exp = density * area * norm * (10 ** (a * (m_hi - 24)) - 10 ** (a * (m_lo - 24)))
    count = rng.poisson(n_exp)
    u = rng.random(count)
    lo, hi = 10 ** (a * (m_lo - 24)), 10 ** (a * (m_hi - 24))
    mags_r = 24 + np.log10(lo + u * (hi - lo)) / a
    half = scene.n * scene.scale / 2.0
    xs = rng.uniform(-half, half, count)
    ys = rng.uniform(-half, half, count)
    red = rng.random(count) < 0.5
    g_r = np.where(red, rng.normal(1.4, 0.25, count), rng.normal(0.5, 0.2, count))
    r_z = np.where(red, rng.normal(1.05, 0.25, count), rng.normal(0.45, 0.2, count))
    g_r = np.clip(g_r, -0.1, 2.0)
    r_z = np.clip(r_z, -0.2, 1.8)
    re = 0.45 * 10 ** (-0.12 * (mags_r - 22.0) + rng.normal(0.0, 0.2, count))
    re = np.clip(re, 0.08, 8.0)
    q = np.clip(rng.beta(3.0, 1.8, count), 0.15, 1.0)
    n_s = np.where(red, rng.uniform(2.0, 4.0, count), rng.uniform(0.7, 1.5, count))
    pa = rng.uniform(0, math.pi, count)
    gr, rz = _survey_colours(g_r, r_z, ctx.name)
    mags = np.stack([mags_r + g_r, mags_r, mags_r - rz])
    fl = (_mag_to_nmgy(mags) * ctx.model.flux_per_nmgy * ctx.cond.gain[:, None]).T
    # Unresolved or below the noise: a point source is indistinguishable
    # after the PSF and costs nothing.
    point = (re < 0.3) | (mags_r > 24.2)
    scene.add_points(xs[point], ys[point], fl[point])
    for i in np.nonzero(~point)[0]:
        if re[i] <= _TEMPLATE_MAX_RE:
            _add_small_galaxy(scene, n_s[i], re[i], q[i], pa[i], xs[i], ys[i], fl[i])
        else:
            scene.add_profile(_sersic(n_s[i], re[i], q[i], pa[i]), xs[i], ys[i], fl[i], re[i])
    return count


def _star_colours(rng, count):
    """g-r, r-z of field stars: blue halo turn-off stars and red disc dwarfs."""
    disc = rng.random(count) < 0.7
    g_r = np.where(disc, rng.uniform(0.6, 1.55, count), rng.normal(0.35, 0.1, count))
    r_z = np.where(disc, 0.15 + 0.9 * (g_r - 0.5) + rng.normal(0, 0.1, count) + np.where(g_r > 1.3, rng.uniform(0, 1.2, count), 0), rng.normal(0.05, 0.08, count))
    return g_r, r_z


def _field_stars(rng, scene, ctx, density=1.0):
    """Faint field stars (r > 17.5), drawn as points through the PSF.

    dN/dm = 0.7 * 10**(0.12 (r - 22)) per arcmin^2 per mag, scaled by a
    per-cutout Galactic density factor.
    """
    side = scene.n * scene.scale / 60.0
    area = side**2
    m_lo, m_hi = 17.5, 26.0
    a = 0.12
    norm = 0.7 / (a * math.log(10))
    lo, hi = 10 ** (a * (m_lo - 22)), 10 ** (a * (m_hi - 22))
    count = rng.poisson(density * area * norm * (hi - lo))
    mags_r = 22 + np.log10(lo + rng.random(count) * (hi - lo)) / a
    half = scene.n * scene.scale / 2.0
    xs = rng.uniform(-half, half, count)
    ys = rng.uniform(-half, half, count)
    g_r, r_z = _star_colours(rng, count)
    gr, rz = _survey_colours(g_r, r_z, ctx.name)
    mags = np.stack([mags_r + g_r, mags_r, mags_r - rz])
    fl = (_mag_to_nmgy(mags) * ctx.model.flux_per_nmgy * ctx.cond.gain[:, None]).T
    scene.add_points(xs, ys, fl)
    return count


# --------------------------------------------------------------------------
# Bright stars and detector effects (added after the PSF)


def _moffat_image(r2, fwhm, beta):
    """Unit-flux Moffat surface brightness (per arcsec^2) at radius^2 r2."""
    alpha = fwhm / (2.0 * math.sqrt(2 ** (1.0 / beta) - 1.0))
    return (beta - 1.0) / (math.pi * alpha**2) * (1.0 + r2 / alpha**2) ** (-beta)


def _bright_star(rng, scene, ctx, x, y, mag_r, g_r=None, r_z=None, spikes=True):
    """A bright star with wings, spikes, saturated core and bleed trail.

    Parameters
    ----------
    x, y : float
        Position relative to the cutout centre (arcsec); may lie outside.
    mag_r : float
        r-band magnitude.
    """
    if g_r is None:
        g_r, r_z = (v[0] for v in _star_colours(rng, 1))
    gr, rz = _survey_colours(g_r, r_z, ctx.name)
    fl = _band_fluxes(mag_r + g_r, gr, rz, ctx.model, ctx.cond.gain)
    gy, gx = scene.grid
    r2 = (gx - x) ** 2 + (gy - y) ** 2
    pix_area = scene.scale**2
    # Core + extended aureole: DECam/HSC PSFs have power-law wings that hold
    # a few per cent of the light out to arcminutes.
    wing_frac = rng.uniform(0.02, 0.06)
    wing_fwhm = rng.uniform(2.0, 4.0)
    prof = np.empty((3, scene.n, scene.n))
    for b in range(3):
        core = _moffat_image(r2, ctx.cond.psf_fwhm[b], ctx.cond.psf_beta)
        wing = _moffat_image(r2, wing_fwhm * (1.0 + 0.1 * (1 - b)), 1.7)
        prof[b] = (core * (1 - wing_frac) + wing * wing_frac) * pix_area * fl[b]
    scene.post += prof
    sat = ctx.model.saturation * ctx.model.flux_per_nmgy * (scene.scale / 0.262) ** 2
    excess = float(prof.max(axis=(1, 2)).max() / sat)
    # Diffraction spikes: four thin rays from the secondary-mirror vanes,
    # visible once the star saturates; length grows as sqrt(flux).
    if spikes and excess > 0.5:
        theta0 = rng.uniform(0, math.pi / 2) if rng.random() < 0.5 else math.radians(45 + rng.normal(0, 8))
        length = min(1.2 * math.sqrt(excess), 12.0)
        width = 0.3 * float(np.mean(ctx.cond.psf_fwhm))
        dxs, dys = gx - x, gy - y
        amp = rng.uniform(0.5, 1.5) * 1e-2
        for k in range(4):
            t = theta0 + k * math.pi / 2
            along = dxs * math.cos(t) + dys * math.sin(t)
            perp = -dxs * math.sin(t) + dys * math.cos(t)
            ok = along > 0
            ray = np.where(ok, np.exp(-0.5 * (perp / width) ** 2), 0.0)
            # Vane diffraction falls off about as the inverse square of the
            # distance beyond the core.
            ray = ray * np.exp(-along / length) / (1.0 + (along / 1.5) ** 2)
            for b in range(3):
                scene.post[b] += amp * fl[b] * ray * pix_area / width
    if excess > 1.0:
        _saturate(rng, scene, prof, sat, excess, ctx.model.flux_per_nmgy)


def _saturate(rng, scene, prof, sat, excess, unit):
    """Replace the saturated core of a star by what coadds show there.

    The coadd holds masked or interpolated pixels: mostly a flat white
    plateau after the stretch, each band saturating over its own radius
    (coloured rings), sometimes gaps in one band (coloured stripes), and a
    bleed trail along the readout direction.
    """
    n = scene.n
    # Plateau per band in native flux per pixel; given per DES native pixel.
    to_pix = unit * scene.scale**2 / 0.0686
    values = rng.uniform(5.0, 30.0, 3)
    if rng.random() < 0.3:
        values[rng.integers(0, 3)] = rng.uniform(0.05, 0.5)
    mask_any = np.zeros((n, n), bool)
    for b in range(3):
        m = prof[b] > sat * rng.uniform(0.6, 1.6)
        if not m.any():
            continue
        mask_any |= m
        scene.post[b][m] = values[b] * to_pix
        scene.pre[b][m] = 0.0
    if not mask_any.any():
        return
    ys, xs = np.nonzero(mask_any)
    horizontal = rng.random() < 0.7
    if rng.random() < 0.4:
        for _ in range(rng.integers(1, 3)):
            b = rng.integers(0, 3)
            if horizontal:
                row = rng.integers(ys.min(), ys.max() + 1)
                scene.post[b, row, mask_any[row]] *= rng.uniform(0.0, 0.1)
            else:
                col = rng.integers(xs.min(), xs.max() + 1)
                scene.post[b, mask_any[:, col], col] *= rng.uniform(0.0, 0.1)
    # Bleed trail: half-length grows as sqrt(flux over the full well).
    half = min(0.5 * math.sqrt(excess), 10.0) / scene.scale
    if half > 3 and rng.random() < 0.8:
        cy, cx = int(round(ys.mean())), int(round(xs.mean()))
        width = int(rng.integers(1, 3))
        level = rng.uniform(0.3, 3.0, 3) * to_pix
        level[rng.integers(0, 3)] *= rng.uniform(2, 6)
        k = np.arange(-int(half * rng.uniform(0.6, 1.2)), int(half * rng.uniform(0.6, 1.2)) + 1)
        fade = 1.0 - 0.6 * np.abs(k) / max(np.abs(k).max(), 1)
        for w in range(width):
            if horizontal:
                py, px = cy + w, cx + k
            else:
                py, px = cy + k, cx + w
            ok = (px >= 0) & (px < n) & (py >= 0) & (py < n)
            for b in range(3):
                scene.post[b, np.broadcast_to(py, k.shape)[ok], np.broadcast_to(px, k.shape)[ok]] += level[b] * fade[ok]


def _ghost(rng, scene, ctx, x, y, radius, sb_g):
    """A smooth pupil ghost / scattered-light disc, sometimes ring-shaped."""
    gy, gx = scene.grid
    r = np.hypot(gx - x, gy - y)
    edge = radius * rng.uniform(0.08, 0.25)
    disc = 0.5 * (1 - np.tanh((r - radius) / edge))
    if rng.random() < 0.5:
        inner = radius * rng.uniform(0.3, 0.7)
        disc = disc * (0.35 + 0.65 * 0.5 * (1 + np.tanh((r - inner) / edge)))
    tint = rng.choice(["blue", "green", "red", "neutral"], p=[0.35, 0.25, 0.2, 0.2])
    col = {"blue": (0.05, 0.2), "green": (0.5, -0.3), "red": (0.8, 0.6), "neutral": (0.4, 0.3)}[tint]
    gr, rz = _survey_colours(col[0], col[1], ctx.name)
    fl = _band_fluxes(sb_g, gr, rz, ctx.model, ctx.cond.gain) * scene.scale**2
    scene.pre += fl[:, None, None] * disc[None]


def _gaussian_random_field(rng, n, slope):
    k = np.fft.fftfreq(n)
    kk = np.hypot(k[:, None], k[None, :])
    kk[0, 0] = 1.0
    amp = kk ** (-slope / 2.0)
    amp[0, 0] = 0.0
    f = (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))) * amp
    field = np.fft.ifft2(f).real
    return field / field.std()


# --------------------------------------------------------------------------
# Candidates at the centre


@dataclasses.dataclass
class _Context:
    name: str
    model: _SurveyModel
    cond: _Conditions


def _lsbg_params(rng):
    """Structural parameters of a DES-selected LSBG.

    Distributions follow the DES Y3 LSBG sample (Tanoglidis et al. 2021a)
    and Greco et al. (2018): mean surface brightness within r_e
    <mu>_e(g) > 24.2, r_e > 2.5", Sersic n about 0.5-1.5, ellipticity
    median 0.3, two colour populations (blue two thirds, red one third).
    """
    while True:
        re = math.exp(rng.normal(math.log(4.3), 0.40))
        if 2.5 <= re <= 20.0:
            break
    n = float(np.clip(math.exp(rng.normal(math.log(0.85), 0.3)), 0.35, 2.2))
    ell = float(np.clip(rng.beta(2.0, 3.5) * 0.9, 0.0, 0.8))
    # The DES sample's <mu>_e(g) runs from the 24.2 cut to beyond 27 (median
    # near 24.9); simulator 1.2 stopped near 25.5 and the model missed the
    # faintest real LSBGs.
    mu_mean = 24.2 + rng.gamma(1.3, 0.55)
    mu0 = mu_mean - _sersic_mean_sb_offset(n)
    red = rng.random() < 0.33
    if red:
        g_r, r_z = rng.normal(0.60, 0.07), rng.normal(0.45, 0.08)
    else:
        g_r, r_z = rng.normal(0.38, 0.09), rng.normal(0.25, 0.10)
    return dict(r_e=re, n=n, ell=ell, mu_mean_g=mu_mean, mu0_g=mu0, g_r=g_r, r_z=r_z, red=red)


def _add_lsbg(rng, scene, ctx, kind):
    p = _lsbg_params(rng)
    if ctx.name == "hsc":
        # HSC is ~1.5 mag deeper: Greco et al. (2018) LSBGs reach fainter
        # surface brightness than the DES sample.
        p["mu_mean_g"] += rng.uniform(0.0, 1.2)
        p["mu0_g"] = p["mu_mean_g"] - _sersic_mean_sb_offset(p["n"])
    if kind == "lsbg_clumpy" and p["red"] and rng.random() < 0.7:
        p["red"] = False
        p["g_r"], p["r_z"] = rng.normal(0.36, 0.09), rng.normal(0.22, 0.1)
    if kind == "lsbg_nucleated" and not p["red"] and rng.random() < 0.6:
        p["red"] = True
        p["g_r"], p["r_z"] = rng.normal(0.60, 0.07), rng.normal(0.45, 0.08)
    q = 1.0 - p["ell"]
    pa = rng.uniform(0, math.pi)
    x0, y0 = rng.normal(0, 0.5, 2)
    mag_g = _total_mag(p["mu_mean_g"], p["r_e"], q)
    gr, rz = _survey_colours(p["g_r"], p["r_z"], ctx.name)
    fl = _band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain)
    prof = _sersic(p["n"], p["r_e"], q, pa)
    modulate = None
    if kind == "lsbg_clumpy":
        # Irregular light: a smooth random field multiplies the profile, and
        # a few star-forming knots sit on it.
        lumpy = _lumpy_modulator(rng, p["r_e"], strength=rng.uniform(0.3, 0.8))
        modulate = lumpy
        knot_frac = rng.uniform(0.04, 0.15)
        fl_main = fl * (1 - knot_frac)
        nk = int(rng.integers(2, 7))
        for _ in range(nk):
            rr = p["r_e"] * math.sqrt(rng.random()) * 1.2
            th = rng.uniform(0, 2 * math.pi)
            kfl = fl * knot_frac / nk * rng.uniform(0.5, 1.5)
            kfl = kfl * np.array([1.25, 1.0, 0.85])  # bluer knots
            ksize = rng.uniform(0.2, 0.6)
            scene.add_profile(_sersic(1.0, ksize), x0 + rr * math.cos(th), y0 + rr * math.sin(th), kfl, ksize)
        fl = fl_main
    scene.add_profile(prof, x0, y0, fl, p["r_e"], modulate=modulate)
    if kind == "lsbg_nucleated":
        nuc_mag = mag_g + rng.uniform(2.5, 4.5)
        ngr, nrz = _survey_colours(p["g_r"] + 0.1, p["r_z"] + 0.05, ctx.name)
        nfl = _band_fluxes(nuc_mag, ngr, nrz, ctx.model, ctx.cond.gain)
        scene.add_profile(_sersic(1.0, 0.2), x0, y0, nfl, 0.2)
    p.update(kind=kind, mag_g=mag_g)
    return p


def _lumpy_modulator(rng, scale_arcsec, strength):
    nb = int(rng.integers(4, 9))
    cx = rng.normal(0, scale_arcsec, nb)
    cy = rng.normal(0, scale_arcsec, nb)
    w = rng.uniform(0.3, 0.8, nb) * scale_arcsec
    a = rng.uniform(0.5, 1.5, nb)

    def mod(dx, dy):
        f = np.zeros(np.broadcast(dx, dy).shape)
        for i in range(nb):
            f += a[i] * np.exp(-((dx - cx[i]) ** 2 + (dy - cy[i]) ** 2) / (2 * w[i] ** 2))
        f /= max(f.max(), 1e-12)
        return (1 - strength) + strength * 2 * f

    return mod


def _add_compact(rng, scene, ctx):
    """A small or moderate, higher-surface-brightness galaxy that passed the cut.

    Sizes reach the LSBG range (r_e 2.5-6") and the surface brightness comes
    up to the 24.2 cut: these are what a source finder confuses with LSBGs.
    """
    re = math.exp(rng.uniform(math.log(1.2), math.log(6.0)))
    n = rng.uniform(0.6, 2.5)
    q = 1 - float(np.clip(rng.beta(2, 3) * 0.9, 0, 0.8))
    mu_mean = 24.2 - rng.gamma(1.4, 0.6)
    red = rng.random() < 0.5
    g_r = rng.normal(0.85, 0.25) if red else rng.normal(0.45, 0.15)
    r_z = rng.normal(0.6, 0.2) if red else rng.normal(0.3, 0.15)
    mag_g = _total_mag(mu_mean, re, q)
    gr, rz = _survey_colours(g_r, r_z, ctx.name)
    x0, y0 = rng.normal(0, 0.5, 2)
    scene.add_profile(_sersic(n, re, q, rng.uniform(0, math.pi)), x0, y0, _band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain), re)
    return dict(r_e=re, n=n, mu_mean_g=mu_mean, g_r=g_r, r_z=r_z)


def _add_blend(rng, scene, ctx):
    """Two to five faint compact sources close together (a blended detection)."""
    k = int(rng.integers(2, 6))
    spread = rng.uniform(1.0, 3.5)
    red_group = rng.random() < 0.4
    for _ in range(k):
        x, y = rng.normal(0, spread, 2)
        re = rng.uniform(0.3, 1.2)
        mag_g = rng.uniform(22.0, 24.5)
        g_r = rng.normal(1.1, 0.25) if red_group else rng.normal(0.5, 0.25)
        r_z = rng.normal(0.8, 0.2) if red_group else rng.normal(0.35, 0.2)
        gr, rz = _survey_colours(g_r, r_z, ctx.name)
        scene.add_profile(_sersic(rng.uniform(0.8, 2.5), re, rng.uniform(0.4, 1.0), rng.uniform(0, math.pi)), x, y, _band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain), re)
    # Faint diffuse light often joins the group (intragroup light or an
    # unresolved background).
    if rng.random() < 0.5:
        re = rng.uniform(2.0, 4.0)
        mag = _total_mag(rng.uniform(25.0, 26.5), re, 0.8)
        scene.add_profile(_sersic(1.0, re, 0.8, 0.0), 0.0, 0.0, _band_fluxes(mag, 0.6, 0.4, ctx.model, ctx.cond.gain), re)
    return dict(n_sources=k, spread=spread)


def _disc_colours(rng, ctx):
    red = rng.random() < 0.35
    g_r = rng.normal(0.8, 0.15) if red else rng.normal(0.5, 0.12)
    r_z = rng.normal(0.5, 0.12) if red else rng.normal(0.32, 0.12)
    return _survey_colours(g_r, r_z, ctx.name)


def _add_edge_on(rng, scene, ctx):
    """An edge-on or strongly inclined disc galaxy, often with a dust lane."""
    re = math.exp(rng.uniform(math.log(1.8), math.log(7.0)))
    q = rng.uniform(0.12, 0.35)
    pa = rng.uniform(0, math.pi)
    mu_mean = 24.2 - rng.gamma(1.5, 0.6)
    mag_g = _total_mag(mu_mean, re, q)
    gr, rz = _disc_colours(rng, ctx)
    x0, y0 = rng.normal(0, 0.6, 2)
    modulate = None
    if rng.random() < 0.5:
        lane_depth = rng.uniform(0.3, 0.8)
        lane_width = max(q * re * rng.uniform(0.15, 0.35), 0.15)
        cp, sp = math.cos(pa), math.sin(pa)

        def modulate(dx, dy):
            v = -dx * sp + dy * cp
            return 1.0 - lane_depth * np.exp(-0.5 * (v / lane_width) ** 2)

    scene.add_profile(_sersic(rng.uniform(0.7, 1.3), re, q, pa), x0, y0,
                      _band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain), re,
                      modulate=modulate)
    if rng.random() < 0.6:
        bre = re * rng.uniform(0.08, 0.2)
        bgr, brz = _survey_colours(0.8, 0.5, ctx.name)
        scene.add_profile(_sersic(rng.uniform(1.5, 3.5), bre, rng.uniform(0.5, 0.9), pa), x0, y0,
                          _band_fluxes(mag_g + rng.uniform(1.0, 2.5), bgr, brz, ctx.model,
                                       ctx.cond.gain), bre)
    return dict(r_e=re, q=q, mu_mean_g=mu_mean, mag_g=mag_g)


def _add_bright_core(rng, scene, ctx):
    """A disc of moderate surface brightness around a bright, compact core."""
    re = math.exp(rng.uniform(math.log(2.0), math.log(7.0)))
    q = 1 - float(np.clip(rng.beta(2, 3) * 0.8, 0, 0.7))
    pa = rng.uniform(0, math.pi)
    mu_mean = rng.uniform(23.0, 24.8)
    mag_g = _total_mag(mu_mean, re, q)
    gr, rz = _disc_colours(rng, ctx)
    x0, y0 = rng.normal(0, 0.5, 2)
    scene.add_profile(_sersic(rng.uniform(0.7, 1.5), re, q, pa), x0, y0,
                      _band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain), re)
    # The core holds 10-40 % of the light in a fraction of an arcsecond:
    # far above any LSBG's central surface brightness.
    core_frac = rng.uniform(0.1, 0.4)
    cre = rng.uniform(0.2, 0.8)
    cgr, crz = _survey_colours(rng.normal(0.8, 0.15), rng.normal(0.5, 0.1), ctx.name)
    scene.add_profile(_sersic(rng.uniform(1.5, 4.0), cre, rng.uniform(0.6, 1.0), pa), x0, y0,
                      _band_fluxes(mag_g - 2.5 * math.log10(core_frac), cgr, crz, ctx.model,
                                   ctx.cond.gain), cre)
    return dict(r_e=re, mu_mean_g=mu_mean, core_frac=core_frac, mag_g=mag_g)


def _add_pair(rng, scene, ctx):
    """Two ordinary galaxies close together, detected as one extended source."""
    sep = rng.uniform(1.5, 6.0)
    th = rng.uniform(0, 2 * math.pi)
    out = {}
    for i, sign in enumerate((1.0, -1.0)):
        re = math.exp(rng.uniform(math.log(0.8), math.log(4.0)))
        q = rng.uniform(0.35, 1.0)
        mu_mean = 24.2 - rng.gamma(1.3, 0.6)
        mag_g = _total_mag(mu_mean, re, q)
        gr, rz = _disc_colours(rng, ctx)
        x = sign * 0.5 * sep * math.cos(th) + rng.normal(0, 0.3)
        y = sign * 0.5 * sep * math.sin(th) + rng.normal(0, 0.3)
        scene.add_profile(_sersic(rng.uniform(0.6, 3.0), re, q, rng.uniform(0, math.pi)), x, y,
                          _band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain), re)
        out[f"mag_g_{i}"] = mag_g
    out["separation"] = sep
    return out


def _elliptical(rng, scene, ctx, x, y, re, mag_g):
    g_r = rng.normal(0.75, 0.06)
    r_z = rng.normal(0.45, 0.06)
    gr, rz = _survey_colours(g_r, r_z, ctx.name)
    q = rng.uniform(0.55, 1.0)
    prof = _sersic(rng.uniform(3.0, 4.5), re, q, rng.uniform(0, math.pi))
    scene.add_profile(prof, x, y, _band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain), re * 1.5)


def _add_galaxy_halo(rng, scene, ctx):
    """Outskirts of a bright galaxy with faint compact sources blended in."""
    re = math.exp(rng.uniform(math.log(3.0), math.log(15.0)))
    dist = rng.uniform(0.6, 2.5) * re + rng.uniform(3, 8)
    th = rng.uniform(0, 2 * math.pi)
    mag_g = rng.uniform(14.5, 18.0) - 1.5 * math.log10(re / 5.0)
    _elliptical(rng, scene, ctx, dist * math.cos(th), dist * math.sin(th), re, mag_g)
    for _ in range(int(rng.integers(0, 4))):
        x, y = rng.normal(0, 2.0, 2)
        re_c = rng.uniform(0.3, 1.0)
        gr, rz = _survey_colours(rng.normal(0.7, 0.3), rng.normal(0.5, 0.2), ctx.name)
        scene.add_profile(_sersic(1.0, re_c), x, y, _band_fluxes(rng.uniform(22, 24.5), gr, rz, ctx.model, ctx.cond.gain), re_c)
    return dict(host_r_e=re, host_dist=dist, host_mag_g=mag_g)


def _add_spiral(rng, scene, ctx):
    """A spiral galaxy: its arms and star-forming knots fall on the centre."""
    re = math.exp(rng.uniform(math.log(3.0), math.log(14.0)))
    # Mostly the detection is an arm or knot in the outskirts; sometimes a
    # whole small, low-contrast spiral.
    centred = rng.random() < 0.35
    dist = 0.0 if centred else rng.uniform(0.6, 1.6) * re
    th = rng.uniform(0, 2 * math.pi)
    x, y = dist * math.cos(th), dist * math.sin(th)
    q = rng.uniform(0.45, 1.0)
    pa = rng.uniform(0, math.pi)
    mu_mean = rng.uniform(22.5, 24.3)
    mag_g = _total_mag(mu_mean, re, q)
    m_arms = int(rng.choice([2, 2, 3, 4]))
    pitch = math.radians(rng.uniform(15, 35))
    contrast = rng.uniform(0.3, 0.8)
    phase = rng.uniform(0, 2 * math.pi)
    cp, sp = math.cos(pa), math.sin(pa)
    # Flocculent arms: a smooth random field breaks them into segments.
    lumps = _lumpy_modulator(rng, re, strength=rng.uniform(0.3, 0.7))

    def arms(dx, dy):
        u = dx * cp + dy * sp
        v = (-dx * sp + dy * cp) / q
        r = np.hypot(u, v) + 1e-3
        t = np.arctan2(v, u)
        wave = np.cos(m_arms * (t - np.log(r / re) / math.tan(pitch)) + phase)
        spiral = np.clip(1 + contrast * (2 * np.maximum(wave, 0) ** 2 - 1), 0.05, None)
        return spiral * lumps(dx, dy)

    gr, rz = _survey_colours(rng.normal(0.45, 0.1), rng.normal(0.3, 0.1), ctx.name)
    scene.add_profile(_sersic(1.0, re, q, pa), x, y, _band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain), re, modulate=arms)
    # Bulge.
    bre = re * rng.uniform(0.1, 0.25)
    gr_b, rz_b = _survey_colours(0.75, 0.45, ctx.name)
    scene.add_profile(_sersic(rng.uniform(2, 4), bre, 0.85, pa), x, y, _band_fluxes(mag_g + rng.uniform(0.5, 2.0), gr_b, rz_b, ctx.model, ctx.cond.gain), bre)
    # HII regions along the arms.
    for _ in range(int(rng.integers(3, 10))):
        r = re * rng.uniform(0.5, 2.0)
        t = rng.uniform(0, 2 * math.pi)
        u, v = r * math.cos(t), r * math.sin(t) * q
        kx, ky = x + u * cp - v * sp, y + u * sp + v * cp
        gr_k, rz_k = _survey_colours(rng.normal(0.2, 0.1), rng.normal(0.0, 0.15), ctx.name)
        ks = rng.uniform(0.2, 0.6)
        scene.add_profile(_sersic(1.0, ks), kx, ky, _band_fluxes(mag_g + rng.uniform(4.5, 7.0), gr_k, rz_k, ctx.model, ctx.cond.gain), ks)
    return dict(r_e=re, centred=centred, dist=dist, mag_g=mag_g)


def _add_tidal(rng, scene, ctx):
    """A tidal stream or shell crossing the centre, host nearby."""
    radius = rng.uniform(10, 40)
    th = rng.uniform(0, 2 * math.pi)
    hx, hy = radius * math.cos(th), radius * math.sin(th)
    sb = rng.uniform(24.8, 26.3)
    width = rng.uniform(1.0, 3.0)
    g_r, r_z = rng.normal(0.7, 0.08), rng.normal(0.45, 0.08)
    gr, rz = _survey_colours(g_r, r_z, ctx.name)
    gy, gx = scene.grid
    r = np.hypot(gx - hx, gy - hy)
    ang = np.arctan2(gy - hy, gx - hx)
    span = rng.uniform(0.4, 1.2)
    dang = np.angle(np.exp(1j * (ang - (th + math.pi))))
    arc = np.exp(-0.5 * ((r - radius) / width) ** 2) * np.exp(-0.5 * (dang / span) ** 2)
    # Clumps along the stream.
    arc *= 1 + 0.5 * _gaussian_random_field(rng, scene.n, 3.5).clip(-1.5, 3)
    arc = np.clip(arc, 0, None)
    fl = _band_fluxes(sb, gr, rz, ctx.model, ctx.cond.gain) * scene.scale**2
    scene.pre += fl[:, None, None] * arc[None]
    if rng.random() < 0.7:
        re = rng.uniform(3, 10)
        _elliptical(rng, scene, ctx, hx, hy, re, rng.uniform(15, 17.5))
    return dict(stream_radius=radius, stream_sb_g=sb)


def _add_cirrus(rng, scene, ctx):
    """Filamentary Galactic cirrus with a brighter knot at the centre."""
    field = _gaussian_random_field(rng, scene.n, rng.uniform(2.6, 3.4))
    field = np.exp(0.8 * field)
    field /= field.mean()
    sb = rng.uniform(25.3, 26.8)
    g_r, r_z = rng.normal(0.65, 0.1), rng.normal(0.5, 0.12)
    gr, rz = _survey_colours(g_r, r_z, ctx.name)
    fl = _band_fluxes(sb, gr, rz, ctx.model, ctx.cond.gain) * scene.scale**2
    scene.pre += fl[:, None, None] * field[None]
    re = rng.uniform(3, 8)
    mag = _total_mag(sb - rng.uniform(0.0, 0.8), re, 0.7)
    scene.add_profile(_sersic(0.6, re, rng.uniform(0.4, 0.9), rng.uniform(0, math.pi)), *rng.normal(0, 1, 2), _band_fluxes(mag, gr, rz, ctx.model, ctx.cond.gain), re)
    return dict(cirrus_sb_g=sb)


def _add_star_halo(rng, scene, ctx):
    """Diffuse light around a bright star, with a faint source at the centre."""
    dist = rng.uniform(6, 35)
    th = rng.uniform(0, 2 * math.pi)
    # Brighter stars are rarer but light up a larger area.
    mag_r = max(16.5 - rng.exponential(2.0), 9.0)
    _bright_star(rng, scene, ctx, dist * math.cos(th), dist * math.sin(th), mag_r)
    if rng.random() < 0.3:
        _ghost(rng, scene, ctx, *rng.normal(0, 4, 2), rng.uniform(4, 14), rng.uniform(24.5, 26.0))
    if rng.random() < 0.7:
        re = rng.uniform(0.4, 2.0)
        gr, rz = _survey_colours(rng.normal(0.7, 0.3), rng.normal(0.5, 0.2), ctx.name)
        scene.add_profile(_sersic(1.0, re), *rng.normal(0, 0.7, 2), _band_fluxes(rng.uniform(22, 24.5), gr, rz, ctx.model, ctx.cond.gain), re)
    return dict(star_mag_r=mag_r, star_dist=dist)


def _add_ghost_artifact(rng, scene, ctx):
    """A ghost or scattered-light feature with no visible parent star."""
    _ghost(rng, scene, ctx, *rng.normal(0, 3, 2), rng.uniform(4, 16), rng.uniform(24.3, 25.8))
    if rng.random() < 0.5:
        gy, gx = scene.grid
        t = rng.uniform(0, 2 * math.pi)
        grad = (gx * math.cos(t) + gy * math.sin(t)) / (scene.n * scene.scale)
        fl = _band_fluxes(rng.uniform(24.5, 26), 0.3, 0.2, ctx.model, ctx.cond.gain) * scene.scale**2
        scene.pre += fl[:, None, None] * np.clip(1 + 2 * grad, 0, None)[None]
    return {}


def _add_faint(rng, scene, ctx):
    """Nothing real: a noise peak or a very faint smudge that was detected."""
    # Kept below the LSBG sizes (r_e < 2.5"): a faint diffuse source of LSBG
    # size *is* an LSBG, and teaching the opposite cost real faint LSBGs.
    if rng.random() < 0.6:
        re = rng.uniform(0.6, 1.8)
        gr, rz = _survey_colours(rng.normal(0.6, 0.3), rng.normal(0.4, 0.3), ctx.name)
        scene.add_profile(_sersic(1.0, re, rng.uniform(0.4, 1), 0.3), 0, 0, _band_fluxes(_total_mag(rng.uniform(25.0, 26.5), re, 0.7), gr, rz, ctx.model, ctx.cond.gain), re)
    return {}


_ARTIFACT_BUILDERS = {
    "art_compact": _add_compact,
    "art_edge_on": _add_edge_on,
    "art_bright_core": _add_bright_core,
    "art_pair": _add_pair,
    "art_blend": _add_blend,
    "art_star_halo": _add_star_halo,
    "art_galaxy_halo": _add_galaxy_halo,
    "art_spiral": _add_spiral,
    "art_tidal": _add_tidal,
    "art_cirrus": _add_cirrus,
    "art_ghost": _add_ghost_artifact,
    "art_faint": _add_faint,
}


# --------------------------------------------------------------------------
# Image formation


@lru_cache(maxsize=360)
def _psf_kernel_cached(n, fwhm_q, beta_q):
    g = _galsim()
    psf = g.Moffat(beta=beta_q / 10.0, fwhm=math.exp(fwhm_q / 50.0), gsparams=_gsparams())
    m = min(65, n - 1 + n % 2)
    stamp = psf.drawImage(nx=m, ny=m, scale=1.0, method="no_pixel").array
    h = m // 2
    img = np.zeros((n, n))
    img[:m, :m] = stamp / stamp.sum()
    # Move the stamp centre to pixel (0, 0).
    img = np.roll(img, (-h, -h), axis=(0, 1))
    spec = np.fft.rfft2(img)
    spec.flags.writeable = False
    return spec


@lru_cache(maxsize=16)
def _freq_grids(n):
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    return fy, fx


def _psf_kernel_fft(n, scale, fwhm, beta):
    """rFFT of a unit-flux Moffat PSF (GalSim) centred on pixel (0, 0).

    The FWHM in pixels is quantised in 2 % steps and beta in steps of 0.3 so
    kernels are reused; the 65-pixel stamp holds all but ~0.1 % of the
    light of the widest PSFs drawn.
    """
    fwhm_q = int(round(math.log(fwhm / scale) * 50))
    beta_q = int(round(beta / 0.3)) * 3
    return _psf_kernel_cached(n, fwhm_q, beta_q)


@lru_cache(maxsize=16)
def _upsample_phase(n, k):
    m = n * k
    s = -(k - 1) / (2.0 * k)
    fy = np.fft.fftfreq(m, d=1.0 / m)[:, None] / n
    fx = np.fft.rfftfreq(m, d=1.0 / m)[None, :] / n
    h = n // 2
    rows = np.r_[0:h, m - h : m]
    return np.exp(2j * math.pi * (fx[:, : h + 1] + fy[rows]) * s)


def _upsample_fft(spec, n, k, out_n):
    """Band-limited k-times upsampling of images given their rfft2.

    Parameters
    ----------
    spec : ndarray, shape (..., n, n // 2 + 1)
    n : int
        Native size (even).
    k : int
        Integer upsampling factor.
    out_n : int
        Side of the centred crop returned.

    Returns
    -------
    ndarray, shape (..., out_n, out_n)
        Values per fine pixel (native values divided by k**2, so fluxes are
        conserved).
    """
    if k == 1:
        img = np.fft.irfft2(spec, s=(n, n))
    else:
        m = n * k
        h = n // 2
        big = np.zeros(spec.shape[:-2] + (m, m // 2 + 1), dtype=complex)
        # Fine pixel j has its centre at native coordinate (j + 0.5) / k - 0.5:
        # the phase factor shifts by that fraction of a native pixel.
        phase = _upsample_phase(n, k)
        big[..., :h, : h + 1] = spec[..., :h, : h + 1] * phase[:h]
        big[..., m - h :, : h + 1] = spec[..., n - h :, : h + 1] * phase[h:]
        # irfft2 of the zero-padded spectrum is the interpolated image / k**2,
        # which is exactly the flux per fine pixel.
        img = np.fft.irfft2(big, s=(m, m))
        n = m
    start = (n - out_n) // 2
    return img[..., start : start + out_n, start : start + out_n]


_NOISE_BANK_SIDE = 384


@lru_cache(maxsize=8)
def _noise_bank(corr_q, k):
    """Unit native-pixel white noise, optionally correlated, resampled k times.

    Three independent 384-native-pixel fields (one per band) made once per
    process from a fixed seed; cutouts take random crops, flips and
    transposes of them.
    """
    n = _NOISE_BANK_SIDE
    rng = np.random.default_rng(np.random.SeedSequence([0x4015E, corr_q, k]))
    spec = np.fft.rfft2(rng.standard_normal((3, n, n)))
    corr = corr_q / 10.0
    if corr > 0:
        fy, fx = _freq_grids(n)
        filt = np.exp(-2 * (math.pi * corr) ** 2 * (fx**2 + fy**2))
        # Keep the per-pixel variance: correlation moves noise power to
        # larger scales, it does not change the depth.
        spec *= filt / math.sqrt(np.mean(filt**2))
    bank = (_upsample_fft(spec, n, k, n * k) * k**2).astype(np.float32)
    bank.flags.writeable = False
    return bank


def _noise(rng, corr, k, size):
    """Unit-variance native noise resampled to the cutout grid, (3, size, size)."""
    bank = _noise_bank(int(round(corr * 10)), k)
    side = bank.shape[-1]
    out = np.empty((3, size, size))
    for b in range(3):
        y0, x0 = rng.integers(0, side - size + 1, 2)
        crop = bank[b, y0 : y0 + size, x0 : x0 + size]
        t = rng.integers(0, 8)
        if t & 1:
            crop = crop[::-1]
        if t & 2:
            crop = crop[:, ::-1]
        if t & 4:
            crop = crop.T
        out[b] = crop
    return out


def _upsample_local(img, k, out_n):
    """Bilinear k-times upsampling of (3, n, n) images, centred crop, flux per fine pixel."""
    n = img.shape[-1]
    m = n * k
    start = (m - out_n) // 2
    # Fine pixel j has its centre at native coordinate (j + 0.5) / k - 0.5.
    c = (np.arange(start, start + out_n) + 0.5) / k - 0.5
    i0 = np.clip(np.floor(c).astype(int), 0, n - 1)
    i1 = np.clip(i0 + 1, 0, n - 1)
    w = np.clip(c - np.floor(c), 0.0, 1.0)
    rows = img[:, i0, :] * (1 - w)[None, :, None] + img[:, i1, :] * w[None, :, None]
    out = rows[:, :, i0] * (1 - w)[None, None, :] + rows[:, :, i1] * w[None, None, :]
    return out / (k * k)


def _geometry(info, size, pixel_scale, randomize, rng):
    size = int(info.cutout_size if size is None else size)
    ps = _arcsec(info.pixel_scale if pixel_scale is None else pixel_scale)
    native = _arcsec(info.native_pixel_scale)
    if randomize and pixel_scale is None:
        # Field-of-view jitter: covers the 33.5" des-dr1 cutouts and the
        # ~40" DR9 crops.
        ps *= math.exp(rng.uniform(math.log(0.9), math.log(1.3)))
    k = max(1, int(round(native / ps)))
    render_scale = ps * k
    n_core = int(math.ceil(size / k))
    n = n_core + 2 * _MARGIN
    n += n % 2
    return size, ps, k, render_scale, n


def _render(ra, dec, survey, seed, label, size, pixel_scale, randomize):
    info = _survey_info(survey)
    name = info.name if info.name in _MODELS else "des"
    model = _MODELS[name]
    if label is None:
        label = truth_label(ra, dec, seed)
    label = int(label)
    rng = _rng(ra, dec, seed, _STREAM_SCENE, label, int(bool(randomize)))
    size, ps, k, scale, n = _geometry(info, size, pixel_scale, randomize, rng)
    cond = _draw_conditions(rng, model, scale, randomize)
    ctx = _Context(name, model, cond)
    scene = _Scene(n, scale)

    if label == 1:
        kinds, rates = zip(*LSBG_KINDS.items())
    else:
        kinds, rates = zip(*ARTIFACT_KINDS.items())
    kind = str(rng.choice(kinds, p=np.asarray(rates) / sum(rates)))
    if label == 1:
        params = _add_lsbg(rng, scene, ctx, kind)
    else:
        params = _ARTIFACT_BUILDERS[kind](rng, scene, ctx)

    # Field: density varies with Galactic latitude and clustering.
    star_density = math.exp(rng.normal(0.0, 0.6))
    gal_density = math.exp(rng.normal(0.0, 0.25))
    _field_galaxies(rng, scene, ctx, gal_density)
    _field_stars(rng, scene, ctx, star_density)
    # Unrelated bright stars and galaxies appear around LSBGs too, so their
    # presence alone does not give the label away.
    if rng.random() < 0.10 * star_density:
        d = rng.uniform(8, 40)
        t = rng.uniform(0, 2 * math.pi)
        _bright_star(rng, scene, ctx, d * math.cos(t), d * math.sin(t), max(17.5 - rng.exponential(1.8), 10.0))
    if rng.random() < 0.08:
        d = rng.uniform(10, 30)
        t = rng.uniform(0, 2 * math.pi)
        _elliptical(rng, scene, ctx, d * math.cos(t), d * math.sin(t), rng.uniform(1.5, 5), rng.uniform(17, 20))

    # PSF, noise, resampling.
    nat_sigma = cond.noise * model.flux_per_nmgy
    sky = cond.sky * scale**2 * model.flux_per_nmgy
    kern = np.stack(
        [_psf_kernel_fft(n, scale, cond.psf_fwhm[b], cond.psf_beta) for b in range(3)]
    )
    spec = np.fft.rfft2(scene.pre) * kern
    out = _upsample_fft(spec, n, k, size)
    if scene.post.any():
        # Saturated plateaus and bleed trails have sharp edges: band-limited
        # interpolation would ring across the whole cutout, so they are
        # interpolated locally (bilinear, like the viewer's short kernel).
        out += _upsample_local(scene.post, k, size)
    # Noise and sky go on after resampling: the noise comes from a bank of
    # already-resampled fields, which saves three FFTs per cutout.
    out += _noise(rng, cond.noise_corr, k, size) * (nat_sigma / k**2)[:, None, None]
    out += (sky / k**2)[:, None, None]
    out = out.astype(np.float32)
    info_dict = dict(
        label=label,
        kind=kind,
        survey=info.name,
        pixel_scale=ps,
        psf_fwhm=[float(f) for f in cond.psf_fwhm],
        noise_nmgy_per_native_pix=[float(s) for s in cond.noise],
        jpeg_quality=int(cond.jpeg_quality),
        simulator_version=SIMULATOR_VERSION,
    )
    info_dict.update({k2: (float(v) if isinstance(v, (float, np.floating)) else v) for k2, v in params.items()})
    return out, info_dict


def render_bands(ra, dec, survey, seed=0, label=None, size=None, pixel_scale=None, randomize=False):
    """Render the simulated band images of one cutout.

    Parameters
    ----------
    ra, dec : float
        Cutout centre (deg).
    survey : str or SurveyInfo
        ``"des"`` or ``"hsc"``.
    seed : int
        Sky seed.
    label : int, optional
        1 for an LSBG, 0 for an artifact at the centre; default
        :func:`truth_label`.
    size : int, optional
        Cutout side (pixels); default ``survey.cutout_size`` (256).
    pixel_scale : float or Quantity, optional
        Cutout pixel scale (arcsec/pix); default ``survey.pixel_scale``.
    randomize : bool
        Domain randomisation for training: wider PSF, depth, sky and
        calibration ranges, field-of-view jitter (when ``pixel_scale`` is
        not given) and JPEG quality.

    Returns
    -------
    cube : numpy.ndarray, shape (3, size, size), float32
        Band images bluest first (``survey.bands``), nanomaggies per pixel
        for DES, counts (zero point 27) for HSC.
    info : dict
        ``label``, ``kind`` (what was drawn at the centre), observing
        conditions and the centre object's parameters.
    """
    return _render(ra, dec, survey, seed, label, size, pixel_scale, randomize)


def _encode_jpeg(rgb, quality):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def render_jpeg(ra, dec, survey, seed=0, label=None, size=None, pixel_scale=None, randomize=False):
    """Render the cutout the viewer's ``cutout.jpg`` would return.

    Parameters are those of :func:`render_bands`.

    Returns
    -------
    bytes
        A JPEG file: the bands mapped with the survey's asinh colour mapping
        (red, green, blue = z, r, g for DES; i, r, g for HSC), 8-bit.
    """
    from .colour import asinh_rgb

    info = _survey_info(survey)
    cube, meta = render_bands(ra, dec, info, seed, label, size, pixel_scale, randomize)
    # Bluest-first cube; the mapping wants red, green, blue.
    rgb = asinh_rgb(cube[::-1], info.colour)
    rgb8 = np.round(rgb * 255.0).astype(np.uint8)
    return _encode_jpeg(rgb8, meta["jpeg_quality"])


def render_fits(ra, dec, survey, seed=0, label=None, size=None, pixel_scale=None):
    """Render the cutout the viewer's ``cutout.fits`` would return.

    Returns
    -------
    bytes
        FITS file; primary HDU a float32 cube (3, ny, nx), bands bluest
        first, header ``BANDS`` (e.g. ``'grz'``), ``BUNIT``, ``PIXSCALE``
        (arcsec/pix), ``SIMVER``, ``LABEL`` and ``KIND``.
    """
    from astropy.io import fits

    info = _survey_info(survey)
    cube, meta = render_bands(ra, dec, info, seed, label, size, pixel_scale)
    hdu = fits.PrimaryHDU(cube)
    hdr = hdu.header
    hdr["BANDS"] = ("".join(info.bands), "bands of the cube, bluest first")
    hdr["BUNIT"] = ("nanomaggy" if info.name != "hsc" else "count (ZP=27)", "flux unit per pixel")
    hdr["PIXSCALE"] = (float(meta["pixel_scale"]), "arcsec/pix")
    hdr["RA"] = (float(ra), "cutout centre (deg)")
    hdr["DEC"] = (float(dec), "cutout centre (deg)")
    hdr["SIMVER"] = (SIMULATOR_VERSION, "lsbg_classify simulator version")
    hdr["LABEL"] = (int(meta["label"]), "1 = LSBG, 0 = artifact")
    hdr["KIND"] = (meta["kind"], "simulated object at the centre")
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


# --------------------------------------------------------------------------
# Training sets


#: Ways of shrinking the 256 px JPEG to the model's 64 px.
#: ``"antialias"`` is the package's own (and the paper's) resize,
#: :func:`lsbg_classify.preprocess.resize_uint8` (PIL bicubic, anti-aliased):
#: training uses it, as scoring does.  ``"bilinear"`` (bilinear without
#: anti-aliasing, i.e. a 2x2 average per output pixel) and ``"nearest"``
#: (every 4th pixel) are what simpler resizing code does; calibration
#: compares real cutouts of unknown provenance against them.
RESAMPLE_METHODS = ("antialias", "bilinear", "nearest")

# Mix drawn by ``resample="mixed"``.
_RESAMPLE_MIX = {"antialias": 0.4, "bilinear": 0.4, "nearest": 0.2}


def _decode_to_model(data, method="antialias"):
    from PIL import Image

    from .preprocess import decode_image_uint8, resize_uint8

    rgb = decode_image_uint8(data)
    if method == "antialias" or rgb.shape[:2] == (64, 64):
        return resize_uint8(rgb)
    if method == "bilinear":
        # skimage.transform.resize(order=1, anti_aliasing=False) samples the
        # bilinear surface at 4i + 1.5: the mean of a 2x2 block.
        f = rgb.shape[0] // 64
        if rgb.shape[:2] == (64 * f, 64 * f) and f % 2 == 0 and f >= 2:
            a, b = f // 2 - 1, f // 2
            x = rgb.astype(np.float32)
            img = 0.25 * (x[a::f, a::f] + x[b::f, a::f] + x[a::f, b::f] + x[b::f, b::f])
            return np.clip(np.round(img), 0, 255).astype(np.uint8)
        return np.asarray(Image.fromarray(rgb).resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=None))
    if method == "nearest":
        return np.asarray(Image.fromarray(rgb).resize((64, 64), Image.Resampling.NEAREST))
    raise ValueError(f"unknown resample method {method!r}; choose from {RESAMPLE_METHODS}")


def _render_model_input(args):
    ra, dec, survey, seed, label, randomize, method = args
    data = render_jpeg(ra, dec, survey, seed=seed, label=label, randomize=randomize)
    return _decode_to_model(data, method)


def _training_positions(n, seed):
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) % (2**63), 0x7EA1]))
    ra = rng.uniform(0.0, 360.0, n)
    # Uniform on the sphere within the DES declination range.
    s = rng.uniform(math.sin(math.radians(-65.0)), math.sin(math.radians(5.0)), n)
    dec = np.degrees(np.arcsin(s))
    labels = np.zeros(n, dtype=np.int8)
    labels[: (n + 1) // 2] = 1
    rng.shuffle(labels)
    return ra, dec, labels


def make_training_set(n, survey="des", seed=0, randomize=True, workers=1, resample=None):
    """Simulated, balanced training cutouts as the model sees them.

    Parameters
    ----------
    n : int
        Number of cutouts (half LSBGs, half artifacts; the extra one of an
        odd ``n`` is an LSBG).
    survey : str
        ``"des"`` or ``"hsc"``.
    seed : int
        Seed of the positions and the sky.
    randomize : bool
        Domain randomisation (see :func:`render_bands`).
    workers : int
        Processes to render with; the result does not depend on it.
    resample : str, optional
        How the 256 px JPEG becomes 64 px: one of :data:`RESAMPLE_METHODS`,
        or ``"mixed"`` (a per-cutout draw: 40 % antialias, 40 % bilinear,
        20 % nearest).  Default ``"antialias"``: exactly what scoring does
        to a viewer JPEG (``preprocess.decode_image_uint8`` ->
        ``preprocess.resize_uint8``), the paper's PIL resize.

    Returns
    -------
    X : numpy.ndarray, shape (n, 64, 64, 3), uint8
        Model inputs scaled to 0-255 (divide by 255 for the model).
    y : numpy.ndarray, shape (n,), int8
        1 = LSBG, 0 = artifact.
    """
    n = int(n)
    info = _survey_info(survey)
    ra, dec, y = _training_positions(n, seed)
    if resample is None:
        resample = "antialias"
    if resample == "mixed":
        rng = np.random.default_rng(np.random.SeedSequence([int(seed) % (2**63), 0x2E5A]))
        names = list(_RESAMPLE_MIX)
        methods = rng.choice(names, size=n, p=[_RESAMPLE_MIX[k] for k in names])
    elif resample in RESAMPLE_METHODS:
        methods = [resample] * n
    else:
        raise ValueError(f"unknown resample {resample!r}; choose 'mixed' or one of {RESAMPLE_METHODS}")
    tasks = [
        (float(ra[i]), float(dec[i]), info.name, int(seed), int(y[i]), bool(randomize), str(methods[i]))
        for i in range(n)
    ]
    X = np.empty((n, 64, 64, 3), dtype=np.uint8)
    if workers is None or workers <= 1 or n < 8:
        for i, t in enumerate(tasks):
            X[i] = _render_model_input(t)
    else:
        import multiprocessing as mp

        # spawn: the parent may hold TensorFlow threads that fork would copy
        # in a broken state.
        ctx = mp.get_context("spawn")
        chunk = max(1, min(64, n // (workers * 4)))
        with ctx.Pool(int(workers)) as pool:
            for i, img in enumerate(pool.imap(_render_model_input, tasks, chunksize=chunk)):
                X[i] = img
    return X, y


# --------------------------------------------------------------------------
# Backgrounds and profiles for injection-recovery tests
# (used by lsbg_classify.injection; nothing above depends on them)

# Random stream of the backgrounds, apart from the cutouts' streams so a
# background never repeats the sky that render_bands draws at a position.
_STREAM_BACKGROUND = 0xB6C0D


def sersic_band_magnitudes(mu0_g, r_e, n=1.0, ell=0.0, g_r=0.4, r_z=0.3, survey="des"):
    """Total magnitudes of a Sérsic galaxy, with the simulator's conventions.

    The conversion is the one the simulated LSBGs use: central surface
    brightness to mean surface brightness within the effective ellipse
    (Sérsic ``b_n`` of Ciotti & Bertin 1999), then to the total magnitude
    ``m = <mu>_e - 2.5 log10(2 pi q r_e^2)``.

    Parameters
    ----------
    mu0_g : float
        Central surface brightness in g (AB mag/arcsec^2).
    r_e : float
        Semi-major half-light radius (arcsec).
    n : float
        Sérsic index.
    ell : float
        Ellipticity ``1 - b/a``.
    g_r, r_z : float
        Colours (AB mag).  For HSC the reddest band is i, with
        ``r - i = 0.55 (r - z) - 0.02`` as the simulator uses.
    survey : str or SurveyInfo
        ``"des"`` (bands g, r, z) or ``"hsc"`` (g, r, i).

    Returns
    -------
    numpy.ndarray, shape (3,)
        AB magnitude per survey band, bluest first.
    """
    info = _survey_info(survey)
    q = 1.0 - float(ell)
    if not (0.0 < q <= 1.0 and r_e > 0 and n > 0):
        raise ValueError(f"need r_e > 0, n > 0 and 0 <= ell < 1; got r_e={r_e}, n={n}, ell={ell}")
    mag_g = _total_mag(float(mu0_g) + _sersic_mean_sb_offset(float(n)), float(r_e), q)
    gr, rz = _survey_colours(float(g_r), float(r_z), info.name)
    return np.array([mag_g, mag_g - gr, mag_g - gr - rz])


def _form_image(scene, cond, model, rng, k, size):
    """PSF, resampling, noise and sky of a finished scene (the steps of ``_render``)."""
    n, scale = scene.n, scene.scale
    kern = np.stack([_psf_kernel_fft(n, scale, cond.psf_fwhm[b], cond.psf_beta) for b in range(3)])
    out = _upsample_fft(np.fft.rfft2(scene.pre) * kern, n, k, size)
    if scene.post.any():
        out += _upsample_local(scene.post, k, size)
    nat_sigma = cond.noise * model.flux_per_nmgy
    sky = cond.sky * scale**2 * model.flux_per_nmgy
    out += _noise(rng, cond.noise_corr, k, size) * (nat_sigma / k**2)[:, None, None]
    out += (sky / k**2)[:, None, None]
    return out.astype(np.float32)


def render_background(ra, dec, survey, seed=0, artifact=False, size=None, pixel_scale=None):
    """Render a simulated sky with no LSBG, to inject galaxies into.

    The field (background galaxies and faint stars), PSF, resampling, noise
    and sky are those of :func:`render_bands`, without domain
    randomisation; unrelated bright stars and galaxies are left out.

    Parameters
    ----------
    ra, dec : float
        Position (deg); with ``seed`` it fixes the random state, drawn
        apart from :func:`render_bands`'s.
    survey : str or SurveyInfo
        ``"des"`` or ``"hsc"``.
    seed : int
        Sky seed.
    artifact : bool
        False: a blank field.  True: one of the simulated artifacts
        (:data:`ARTIFACT_KINDS`, at their rates) at the centre.
    size : int, optional
        Cutout side (pixels); default ``survey.cutout_size``.
    pixel_scale : float, optional
        Cutout pixel scale (arcsec/pix); default ``survey.pixel_scale``.

    Returns
    -------
    cube : numpy.ndarray, shape (3, size, size), float32
        Band images bluest first, flux per cutout pixel in the survey's
        native unit (as :func:`render_bands`).
    info : dict
        ``kind`` (``"blank"`` or the artifact kind), ``pixel_scale``
        (arcsec/pix), ``psf_fwhm`` (arcsec, per band), ``psf_beta`` (Moffat
        index), ``gain`` (per band: the simulator's source brightness
        calibration, by which every simulated source's catalogue flux is
        multiplied), ``jpeg_quality`` and ``simulator_version``.
    """
    info = _survey_info(survey)
    name = info.name if info.name in _MODELS else "des"
    model = _MODELS[name]
    rng = _rng(ra, dec, seed, _STREAM_BACKGROUND, int(bool(artifact)))
    size, ps, k, scale, n = _geometry(info, size, pixel_scale, False, rng)
    cond = _draw_conditions(rng, model, scale, False)
    ctx = _Context(name, model, cond)
    scene = _Scene(n, scale)
    kind = "blank"
    if artifact:
        kinds, rates = zip(*ARTIFACT_KINDS.items())
        kind = str(rng.choice(kinds, p=np.asarray(rates) / sum(rates)))
        _ARTIFACT_BUILDERS[kind](rng, scene, ctx)
    _field_galaxies(rng, scene, ctx, math.exp(rng.normal(0.0, 0.25)))
    _field_stars(rng, scene, ctx, math.exp(rng.normal(0.0, 0.6)))
    cube = _form_image(scene, cond, model, rng, k, size)
    meta = dict(
        kind=kind,
        survey=info.name,
        pixel_scale=ps,
        psf_fwhm=[float(f) for f in cond.psf_fwhm],
        psf_beta=float(cond.psf_beta),
        gain=[float(g) for g in cond.gain],
        jpeg_quality=int(cond.jpeg_quality),
        simulator_version=SIMULATOR_VERSION,
    )
    return cube, meta


def bands_to_jpeg(cube, survey, quality=JPEG_QUALITY):
    """Encode band images as the viewer's JPEG, as :func:`render_jpeg` does.

    Parameters
    ----------
    cube : array_like, shape (3, ny, nx)
        Band images bluest first, in the survey's native flux units.
    survey : str or SurveyInfo
        Whose colour mapping to use.
    quality : int
        JPEG quality (Pillow scale).

    Returns
    -------
    bytes
    """
    from .colour import asinh_rgb

    info = _survey_info(survey)
    rgb = asinh_rgb(np.asarray(cube)[::-1], info.colour)
    return _encode_jpeg(np.round(rgb * 255.0).astype(np.uint8), quality)
