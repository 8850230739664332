"""Backgrounds and profiles for injection-recovery tests.

Used by :mod:`lsbg_classify.diagnostics.injection`; nothing else in the
simulator depends on them.
"""

import math

import numpy as np

from .candidates import ARTIFACT_BUILDERS, Context
from .conditions import (
    ARTIFACT_KINDS,
    JPEG_QUALITY,
    MODELS,
    SIMULATOR_VERSION,
    cutout_rng,
    draw_conditions,
    survey_info,
)
from .populations import field_galaxies, field_stars
from .render import encode_jpeg, geometry, noise_image, psf_kernel_fft, upsample_fft, upsample_local
from .scene import Scene, sersic_mean_sb_offset, survey_colours, total_mag

__all__ = ["sersic_band_magnitudes", "render_background", "bands_to_jpeg"]

# --------------------------------------------------------------------------
# Backgrounds and profiles for injection-recovery tests
# (used by lsbg_classify.diagnostics.injection; nothing above depends on them)

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
    info = survey_info(survey)
    q = 1.0 - float(ell)
    if not (0.0 < q <= 1.0 and r_e > 0 and n > 0):
        raise ValueError(f"need r_e > 0, n > 0 and 0 <= ell < 1; got r_e={r_e}, n={n}, ell={ell}")
    mag_g = total_mag(float(mu0_g) + sersic_mean_sb_offset(float(n)), float(r_e), q)
    gr, rz = survey_colours(float(g_r), float(r_z), info.name)
    return np.array([mag_g, mag_g - gr, mag_g - gr - rz])


def _form_image(scene, cond, model, rng, k, size):
    """PSF, resampling, noise and sky of a finished scene (the steps of ``_render``)."""
    n, scale = scene.n, scene.scale
    kern = np.stack([psf_kernel_fft(n, scale, cond.psf_fwhm[b], cond.psf_beta) for b in range(3)])
    out = upsample_fft(np.fft.rfft2(scene.pre) * kern, n, k, size)
    if scene.post.any():
        out += upsample_local(scene.post, k, size)
    nat_sigma = cond.noise * model.flux_per_nmgy
    sky = cond.sky * scale**2 * model.flux_per_nmgy
    out += noise_image(rng, cond.noise_corr, k, size) * (nat_sigma / k**2)[:, None, None]
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
    info = survey_info(survey)
    name = info.name if info.name in MODELS else "des"
    model = MODELS[name]
    rng = cutout_rng(ra, dec, seed, _STREAM_BACKGROUND, int(bool(artifact)))
    size, ps, k, scale, n = geometry(info, size, pixel_scale, False, rng)
    cond = draw_conditions(rng, model, scale, False)
    ctx = Context(name, model, cond)
    scene = Scene(n, scale)
    kind = "blank"
    if artifact:
        kinds, rates = zip(*ARTIFACT_KINDS.items())
        kind = str(rng.choice(kinds, p=np.asarray(rates) / sum(rates)))
        ARTIFACT_BUILDERS[kind](rng, scene, ctx)
    field_galaxies(rng, scene, ctx, math.exp(rng.normal(0.0, 0.25)))
    field_stars(rng, scene, ctx, math.exp(rng.normal(0.0, 0.6)))
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
    from ..colour import asinh_rgb

    info = survey_info(survey)
    rgb = asinh_rgb(np.asarray(cube)[::-1], info.colour)
    return encode_jpeg(np.round(rgb * 255.0).astype(np.uint8), quality)
