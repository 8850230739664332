"""Field stars and galaxies, bright stars and detector effects (added after the PSF)."""

import math

import numpy as np

from .conditions import mag_to_nmgy
from .scene import TEMPLATE_MAX_RE, add_small_galaxy, band_fluxes, sersic, survey_colours

# --------------------------------------------------------------------------
# Field populations


def field_galaxies(rng, scene, ctx, density=1.0):
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
    gr, rz = survey_colours(g_r, r_z, ctx.name)
    mags = np.stack([mags_r + g_r, mags_r, mags_r - rz])
    fl = (mag_to_nmgy(mags) * ctx.model.flux_per_nmgy * ctx.cond.gain[:, None]).T
    # Unresolved or below the noise: a point source is indistinguishable
    # after the PSF and costs nothing.
    point = (re < 0.3) | (mags_r > 24.2)
    scene.add_points(xs[point], ys[point], fl[point])
    for i in np.nonzero(~point)[0]:
        if re[i] <= TEMPLATE_MAX_RE:
            add_small_galaxy(scene, n_s[i], re[i], q[i], pa[i], xs[i], ys[i], fl[i])
        else:
            scene.add_profile(sersic(n_s[i], re[i], q[i], pa[i]), xs[i], ys[i], fl[i], re[i])
    return count


def _star_colours(rng, count):
    """g-r, r-z of field stars: blue halo turn-off stars and red disc dwarfs."""
    disc = rng.random(count) < 0.7
    g_r = np.where(disc, rng.uniform(0.6, 1.55, count), rng.normal(0.35, 0.1, count))
    r_z = np.where(disc, 0.15 + 0.9 * (g_r - 0.5) + rng.normal(0, 0.1, count) + np.where(g_r > 1.3, rng.uniform(0, 1.2, count), 0), rng.normal(0.05, 0.08, count))
    return g_r, r_z


def field_stars(rng, scene, ctx, density=1.0):
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
    gr, rz = survey_colours(g_r, r_z, ctx.name)
    mags = np.stack([mags_r + g_r, mags_r, mags_r - rz])
    fl = (mag_to_nmgy(mags) * ctx.model.flux_per_nmgy * ctx.cond.gain[:, None]).T
    scene.add_points(xs, ys, fl)
    return count


# --------------------------------------------------------------------------
# Bright stars and detector effects (added after the PSF)


def _moffat_image(r2, fwhm, beta):
    """Unit-flux Moffat surface brightness (per arcsec^2) at radius^2 r2."""
    alpha = fwhm / (2.0 * math.sqrt(2 ** (1.0 / beta) - 1.0))
    return (beta - 1.0) / (math.pi * alpha**2) * (1.0 + r2 / alpha**2) ** (-beta)


def bright_star(rng, scene, ctx, x, y, mag_r, g_r=None, r_z=None, spikes=True):
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
    gr, rz = survey_colours(g_r, r_z, ctx.name)
    fl = band_fluxes(mag_r + g_r, gr, rz, ctx.model, ctx.cond.gain)
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


def draw_ghost(rng, scene, ctx, x, y, radius, sb_g):
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
    gr, rz = survey_colours(col[0], col[1], ctx.name)
    fl = band_fluxes(sb_g, gr, rz, ctx.model, ctx.cond.gain) * scene.scale**2
    scene.pre += fl[:, None, None] * disc[None]


def gaussian_random_field(rng, n, slope):
    k = np.fft.fftfreq(n)
    kk = np.hypot(k[:, None], k[None, :])
    kk[0, 0] = 1.0
    amp = kk ** (-slope / 2.0)
    amp[0, 0] = 0.0
    f = (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))) * amp
    field = np.fft.ifft2(f).real
    return field / field.std()
