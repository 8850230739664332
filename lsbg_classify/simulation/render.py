"""Image formation: PSF, resampling, noise, and the viewer-like JPEG and FITS cutouts."""

import io
import math
from functools import lru_cache

import numpy as np

from .candidates import ARTIFACT_BUILDERS, Context, add_lsbg, elliptical
from .conditions import (
    ARTIFACT_KINDS,
    LSBG_KINDS,
    MARGIN,
    MODELS,
    SIMULATOR_VERSION,
    STREAM_SCENE,
    cutout_rng,
    draw_conditions,
    survey_info,
    to_arcsec,
    truth_label,
)
from .populations import bright_star, field_galaxies, field_stars
from .scene import Scene, galsim_params, import_galsim

__all__ = ["render_bands", "render_jpeg", "render_fits"]

# --------------------------------------------------------------------------
# Image formation


@lru_cache(maxsize=360)
def _psf_kernel_cached(n, fwhm_q, beta_q):
    g = import_galsim()
    psf = g.Moffat(beta=beta_q / 10.0, fwhm=math.exp(fwhm_q / 50.0), gsparams=galsim_params())
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


def psf_kernel_fft(n, scale, fwhm, beta):
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


def upsample_fft(spec, n, k, out_n):
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
    bank = (upsample_fft(spec, n, k, n * k) * k**2).astype(np.float32)
    bank.flags.writeable = False
    return bank


def noise_image(rng, corr, k, size):
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


def upsample_local(img, k, out_n):
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


def geometry(info, size, pixel_scale, randomize, rng):
    size = int(info.cutout_size if size is None else size)
    ps = to_arcsec(info.pixel_scale if pixel_scale is None else pixel_scale)
    native = to_arcsec(info.native_pixel_scale)
    if randomize and pixel_scale is None:
        # Field-of-view jitter: covers the 33.5" des-dr1 cutouts and the
        # ~40" DR9 crops.
        ps *= math.exp(rng.uniform(math.log(0.9), math.log(1.3)))
    k = max(1, int(round(native / ps)))
    render_scale = ps * k
    n_core = int(math.ceil(size / k))
    n = n_core + 2 * MARGIN
    n += n % 2
    return size, ps, k, render_scale, n


def _render(ra, dec, survey, seed, label, size, pixel_scale, randomize, depth):
    info = survey_info(survey)
    name = info.name if info.name in MODELS else "des"
    model = MODELS[name]
    if label is None:
        label = truth_label(ra, dec, seed)
    label = int(label)
    rng = cutout_rng(ra, dec, seed, STREAM_SCENE, label, int(bool(randomize)))
    size, ps, k, scale, n = geometry(info, size, pixel_scale, randomize, rng)
    cond = draw_conditions(rng, model, scale, randomize, depth)
    ctx = Context(name, model, cond)
    scene = Scene(n, scale)

    if label == 1:
        kinds, rates = zip(*LSBG_KINDS.items())
    else:
        kinds, rates = zip(*ARTIFACT_KINDS.items())
    kind = str(rng.choice(kinds, p=np.asarray(rates) / sum(rates)))
    if label == 1:
        params = add_lsbg(rng, scene, ctx, kind)
    else:
        params = ARTIFACT_BUILDERS[kind](rng, scene, ctx)

    # Field: density varies with Galactic latitude and clustering.
    star_density = math.exp(rng.normal(0.0, 0.6))
    gal_density = math.exp(rng.normal(0.0, 0.25))
    field_galaxies(rng, scene, ctx, gal_density)
    field_stars(rng, scene, ctx, star_density)
    # Unrelated bright stars and galaxies appear around LSBGs too, so their
    # presence alone does not give the label away.
    if rng.random() < 0.10 * star_density:
        d = rng.uniform(8, 40)
        t = rng.uniform(0, 2 * math.pi)
        bright_star(rng, scene, ctx, d * math.cos(t), d * math.sin(t), max(17.5 - rng.exponential(1.8), 10.0))
    if rng.random() < 0.08:
        d = rng.uniform(10, 30)
        t = rng.uniform(0, 2 * math.pi)
        elliptical(rng, scene, ctx, d * math.cos(t), d * math.sin(t), rng.uniform(1.5, 5), rng.uniform(17, 20))

    # PSF, noise, resampling.
    nat_sigma = cond.noise * model.flux_per_nmgy
    sky = cond.sky * scale**2 * model.flux_per_nmgy
    kern = np.stack(
        [psf_kernel_fft(n, scale, cond.psf_fwhm[b], cond.psf_beta) for b in range(3)]
    )
    spec = np.fft.rfft2(scene.pre) * kern
    out = upsample_fft(spec, n, k, size)
    if scene.post.any():
        # Saturated plateaus and bleed trails have sharp edges: band-limited
        # interpolation would ring across the whole cutout, so they are
        # interpolated locally (bilinear, like the viewer's short kernel).
        out += upsample_local(scene.post, k, size)
    # Noise and sky go on after resampling: the noise comes from a bank of
    # already-resampled fields, which saves three FFTs per cutout.
    out += noise_image(rng, cond.noise_corr, k, size) * (nat_sigma / k**2)[:, None, None]
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


def render_bands(ra, dec, survey, seed=0, label=None, size=None, pixel_scale=None, randomize=False,
                 depth=1.0):
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
    depth : float
        Multiplies the sky noise (1 = the survey's calibrated depth, DES
        DR1 for DES; 0.6 matches the deeper Legacy Surveys DR9 cutouts).

    Returns
    -------
    cube : numpy.ndarray, shape (3, size, size), float32
        Band images bluest first (``survey.bands``), nanomaggies per pixel
        for DES, counts (zero point 27) for HSC.
    info : dict
        ``label``, ``kind`` (what was drawn at the centre), observing
        conditions and the centre object's parameters.
    """
    if not (np.isfinite(depth) and depth > 0):
        raise ValueError(f"depth must be a positive number, not {depth!r}")
    return _render(ra, dec, survey, seed, label, size, pixel_scale, randomize, depth)


def encode_jpeg(rgb, quality):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def render_jpeg(ra, dec, survey, seed=0, label=None, size=None, pixel_scale=None, randomize=False,
                depth=1.0):
    """Render the cutout the viewer's ``cutout.jpg`` would return.

    Parameters are those of :func:`render_bands`.

    Returns
    -------
    bytes
        A JPEG file: the bands mapped with the survey's asinh colour mapping
        (red, green, blue = z, r, g for DES; i, r, g for HSC), 8-bit.
    """
    from ..colour import asinh_rgb

    info = survey_info(survey)
    cube, meta = render_bands(ra, dec, info, seed, label, size, pixel_scale, randomize, depth)
    # Bluest-first cube; the mapping wants red, green, blue.
    rgb = asinh_rgb(cube[::-1], info.colour)
    rgb8 = np.round(rgb * 255.0).astype(np.uint8)
    return encode_jpeg(rgb8, meta["jpeg_quality"])


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

    info = survey_info(survey)
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
