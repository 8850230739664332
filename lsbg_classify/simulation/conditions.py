"""Survey models, random states and observing conditions of the simulated sky."""

import dataclasses
import math

import numpy as np

from ..surveys.base import SurveyInfo, get_survey

__all__ = ["SIMULATOR_VERSION", "JPEG_QUALITY", "truth_label", "ARTIFACT_KINDS", "LSBG_KINDS"]

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
STREAM_SCENE = 0x5CE9E

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
class SurveyModel:
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
MODELS = {
    "des": SurveyModel(
        depth10=(24.08, 24.08, 22.69),
        psf_fwhm=(1.12, 0.96, 0.88),
        psf_scatter=0.12,
        depth_scatter=0.15,
        flux_per_nmgy=1.0,
        saturation=30.0,
    ),
    "hsc": SurveyModel(
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
    return np.asarray(_NOISE_CALIBRATION["hsc" if model is MODELS["hsc"] else "des"])

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

# Margin (native pixels) drawn around the cutout so light from just outside
# reaches it and the FFT's wrap-around stays out of view.
MARGIN = 16


def survey_info(survey):
    return survey if isinstance(survey, SurveyInfo) else get_survey(survey)


def to_arcsec(q):
    """Pixel scale as a plain float in arcsec/pix."""
    return float(getattr(q, "value", q))


def mag_to_nmgy(mag):
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - 22.5))


# --------------------------------------------------------------------------
# Random states


def _position_key(ra, dec):
    ra_key = int(round((float(ra) % 360.0) * _POS_SCALE)) % (360 * int(_POS_SCALE))
    dec_key = int(round((float(dec) + 90.0) * _POS_SCALE))
    return ra_key, dec_key


def cutout_rng(ra, dec, seed, stream, *extra):
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
    return int(cutout_rng(ra, dec, seed, _STREAM_LABEL).random() < 0.5)


# --------------------------------------------------------------------------
# Observing conditions


@dataclasses.dataclass
class Conditions:
    psf_fwhm: np.ndarray  # (3,) arcsec
    psf_beta: float
    noise: np.ndarray  # (3,) native flux per native pixel (nanomaggies)
    sky: np.ndarray  # (3,) residual sky level, nanomaggies per arcsec^2
    gain: np.ndarray  # (3,) calibration multiplier
    noise_corr: float
    jpeg_quality: int


def draw_conditions(rng, model, native_scale, randomize, depth=1.0):
    fwhm0 = np.asarray(model.psf_fwhm)
    scatter = model.psf_scatter * (1.6 if randomize else 1.0)
    fwhm = fwhm0 * math.exp(rng.normal(0.0, scatter)) * np.exp(rng.normal(0.0, 0.04, 3))
    beta = rng.uniform(2.6, 4.2)
    # Per-pixel noise from the 10-sigma aperture depth (1.95" diameter).
    ap_pix = math.pi * (1.95 / 2) ** 2 / native_scale**2
    sigma = (mag_to_nmgy(model.depth10) / 10.0 / math.sqrt(ap_pix)
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
    # ``depth`` (1 = the depths above) mimics another release, e.g. 0.6 for
    # the DR9 dev cutouts; it scales the noise only, not the drawn sky.
    sigma = sigma * depth_factor * depth * np.exp(rng.normal(0.0, band_jitter, 3))
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
    return Conditions(fwhm, float(beta), sigma, sky_sb, gain, corr, quality)
