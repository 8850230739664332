"""The candidates at the centre of a cutout: LSBGs and the artifacts that mimic them."""

import dataclasses
import math

import numpy as np

from .conditions import Conditions, SurveyModel
from .populations import bright_star, draw_ghost, gaussian_random_field
from .scene import band_fluxes, sersic, sersic_mean_sb_offset, survey_colours, total_mag

# --------------------------------------------------------------------------
# Candidates at the centre


@dataclasses.dataclass
class Context:
    name: str
    model: SurveyModel
    cond: Conditions


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
    mu0 = mu_mean - sersic_mean_sb_offset(n)
    red = rng.random() < 0.33
    if red:
        g_r, r_z = rng.normal(0.60, 0.07), rng.normal(0.45, 0.08)
    else:
        g_r, r_z = rng.normal(0.38, 0.09), rng.normal(0.25, 0.10)
    return dict(r_e=re, n=n, ell=ell, mu_mean_g=mu_mean, mu0_g=mu0, g_r=g_r, r_z=r_z, red=red)


def add_lsbg(rng, scene, ctx, kind):
    p = _lsbg_params(rng)
    if ctx.name == "hsc":
        # HSC is ~1.5 mag deeper: Greco et al. (2018) LSBGs reach fainter
        # surface brightness than the DES sample.
        p["mu_mean_g"] += rng.uniform(0.0, 1.2)
        p["mu0_g"] = p["mu_mean_g"] - sersic_mean_sb_offset(p["n"])
    if kind == "lsbg_clumpy" and p["red"] and rng.random() < 0.7:
        p["red"] = False
        p["g_r"], p["r_z"] = rng.normal(0.36, 0.09), rng.normal(0.22, 0.1)
    if kind == "lsbg_nucleated" and not p["red"] and rng.random() < 0.6:
        p["red"] = True
        p["g_r"], p["r_z"] = rng.normal(0.60, 0.07), rng.normal(0.45, 0.08)
    q = 1.0 - p["ell"]
    pa = rng.uniform(0, math.pi)
    x0, y0 = rng.normal(0, 0.5, 2)
    mag_g = total_mag(p["mu_mean_g"], p["r_e"], q)
    gr, rz = survey_colours(p["g_r"], p["r_z"], ctx.name)
    fl = band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain)
    prof = sersic(p["n"], p["r_e"], q, pa)
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
            scene.add_profile(sersic(1.0, ksize), x0 + rr * math.cos(th), y0 + rr * math.sin(th), kfl, ksize)
        fl = fl_main
    scene.add_profile(prof, x0, y0, fl, p["r_e"], modulate=modulate)
    if kind == "lsbg_nucleated":
        nuc_mag = mag_g + rng.uniform(2.5, 4.5)
        ngr, nrz = survey_colours(p["g_r"] + 0.1, p["r_z"] + 0.05, ctx.name)
        nfl = band_fluxes(nuc_mag, ngr, nrz, ctx.model, ctx.cond.gain)
        scene.add_profile(sersic(1.0, 0.2), x0, y0, nfl, 0.2)
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
    mag_g = total_mag(mu_mean, re, q)
    gr, rz = survey_colours(g_r, r_z, ctx.name)
    x0, y0 = rng.normal(0, 0.5, 2)
    scene.add_profile(sersic(n, re, q, rng.uniform(0, math.pi)), x0, y0, band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain), re)
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
        gr, rz = survey_colours(g_r, r_z, ctx.name)
        scene.add_profile(sersic(rng.uniform(0.8, 2.5), re, rng.uniform(0.4, 1.0), rng.uniform(0, math.pi)), x, y, band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain), re)
    # Faint diffuse light often joins the group (intragroup light or an
    # unresolved background).
    if rng.random() < 0.5:
        re = rng.uniform(2.0, 4.0)
        mag = total_mag(rng.uniform(25.0, 26.5), re, 0.8)
        scene.add_profile(sersic(1.0, re, 0.8, 0.0), 0.0, 0.0, band_fluxes(mag, 0.6, 0.4, ctx.model, ctx.cond.gain), re)
    return dict(n_sources=k, spread=spread)


def _disc_colours(rng, ctx):
    red = rng.random() < 0.35
    g_r = rng.normal(0.8, 0.15) if red else rng.normal(0.5, 0.12)
    r_z = rng.normal(0.5, 0.12) if red else rng.normal(0.32, 0.12)
    return survey_colours(g_r, r_z, ctx.name)


def _add_edge_on(rng, scene, ctx):
    """An edge-on or strongly inclined disc galaxy, often with a dust lane."""
    re = math.exp(rng.uniform(math.log(1.8), math.log(7.0)))
    q = rng.uniform(0.12, 0.35)
    pa = rng.uniform(0, math.pi)
    mu_mean = 24.2 - rng.gamma(1.5, 0.6)
    mag_g = total_mag(mu_mean, re, q)
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

    scene.add_profile(sersic(rng.uniform(0.7, 1.3), re, q, pa), x0, y0,
                      band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain), re,
                      modulate=modulate)
    if rng.random() < 0.6:
        bre = re * rng.uniform(0.08, 0.2)
        bgr, brz = survey_colours(0.8, 0.5, ctx.name)
        scene.add_profile(sersic(rng.uniform(1.5, 3.5), bre, rng.uniform(0.5, 0.9), pa), x0, y0,
                          band_fluxes(mag_g + rng.uniform(1.0, 2.5), bgr, brz, ctx.model,
                                       ctx.cond.gain), bre)
    return dict(r_e=re, q=q, mu_mean_g=mu_mean, mag_g=mag_g)


def _add_bright_core(rng, scene, ctx):
    """A disc of moderate surface brightness around a bright, compact core."""
    re = math.exp(rng.uniform(math.log(2.0), math.log(7.0)))
    q = 1 - float(np.clip(rng.beta(2, 3) * 0.8, 0, 0.7))
    pa = rng.uniform(0, math.pi)
    mu_mean = rng.uniform(23.0, 24.8)
    mag_g = total_mag(mu_mean, re, q)
    gr, rz = _disc_colours(rng, ctx)
    x0, y0 = rng.normal(0, 0.5, 2)
    scene.add_profile(sersic(rng.uniform(0.7, 1.5), re, q, pa), x0, y0,
                      band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain), re)
    # The core holds 10-40 % of the light in a fraction of an arcsecond:
    # far above any LSBG's central surface brightness.
    core_frac = rng.uniform(0.1, 0.4)
    cre = rng.uniform(0.2, 0.8)
    cgr, crz = survey_colours(rng.normal(0.8, 0.15), rng.normal(0.5, 0.1), ctx.name)
    scene.add_profile(sersic(rng.uniform(1.5, 4.0), cre, rng.uniform(0.6, 1.0), pa), x0, y0,
                      band_fluxes(mag_g - 2.5 * math.log10(core_frac), cgr, crz, ctx.model,
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
        mag_g = total_mag(mu_mean, re, q)
        gr, rz = _disc_colours(rng, ctx)
        x = sign * 0.5 * sep * math.cos(th) + rng.normal(0, 0.3)
        y = sign * 0.5 * sep * math.sin(th) + rng.normal(0, 0.3)
        scene.add_profile(sersic(rng.uniform(0.6, 3.0), re, q, rng.uniform(0, math.pi)), x, y,
                          band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain), re)
        out[f"mag_g_{i}"] = mag_g
    out["separation"] = sep
    return out


def elliptical(rng, scene, ctx, x, y, re, mag_g):
    g_r = rng.normal(0.75, 0.06)
    r_z = rng.normal(0.45, 0.06)
    gr, rz = survey_colours(g_r, r_z, ctx.name)
    q = rng.uniform(0.55, 1.0)
    prof = sersic(rng.uniform(3.0, 4.5), re, q, rng.uniform(0, math.pi))
    scene.add_profile(prof, x, y, band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain), re * 1.5)


def _add_galaxy_halo(rng, scene, ctx):
    """Outskirts of a bright galaxy with faint compact sources blended in."""
    re = math.exp(rng.uniform(math.log(3.0), math.log(15.0)))
    dist = rng.uniform(0.6, 2.5) * re + rng.uniform(3, 8)
    th = rng.uniform(0, 2 * math.pi)
    mag_g = rng.uniform(14.5, 18.0) - 1.5 * math.log10(re / 5.0)
    elliptical(rng, scene, ctx, dist * math.cos(th), dist * math.sin(th), re, mag_g)
    for _ in range(int(rng.integers(0, 4))):
        x, y = rng.normal(0, 2.0, 2)
        re_c = rng.uniform(0.3, 1.0)
        gr, rz = survey_colours(rng.normal(0.7, 0.3), rng.normal(0.5, 0.2), ctx.name)
        scene.add_profile(sersic(1.0, re_c), x, y, band_fluxes(rng.uniform(22, 24.5), gr, rz, ctx.model, ctx.cond.gain), re_c)
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
    mag_g = total_mag(mu_mean, re, q)
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

    gr, rz = survey_colours(rng.normal(0.45, 0.1), rng.normal(0.3, 0.1), ctx.name)
    scene.add_profile(sersic(1.0, re, q, pa), x, y, band_fluxes(mag_g, gr, rz, ctx.model, ctx.cond.gain), re, modulate=arms)
    # Bulge.
    bre = re * rng.uniform(0.1, 0.25)
    gr_b, rz_b = survey_colours(0.75, 0.45, ctx.name)
    scene.add_profile(sersic(rng.uniform(2, 4), bre, 0.85, pa), x, y, band_fluxes(mag_g + rng.uniform(0.5, 2.0), gr_b, rz_b, ctx.model, ctx.cond.gain), bre)
    # HII regions along the arms.
    for _ in range(int(rng.integers(3, 10))):
        r = re * rng.uniform(0.5, 2.0)
        t = rng.uniform(0, 2 * math.pi)
        u, v = r * math.cos(t), r * math.sin(t) * q
        kx, ky = x + u * cp - v * sp, y + u * sp + v * cp
        gr_k, rz_k = survey_colours(rng.normal(0.2, 0.1), rng.normal(0.0, 0.15), ctx.name)
        ks = rng.uniform(0.2, 0.6)
        scene.add_profile(sersic(1.0, ks), kx, ky, band_fluxes(mag_g + rng.uniform(4.5, 7.0), gr_k, rz_k, ctx.model, ctx.cond.gain), ks)
    return dict(r_e=re, centred=centred, dist=dist, mag_g=mag_g)


def _add_tidal(rng, scene, ctx):
    """A tidal stream or shell crossing the centre, host nearby."""
    radius = rng.uniform(10, 40)
    th = rng.uniform(0, 2 * math.pi)
    hx, hy = radius * math.cos(th), radius * math.sin(th)
    sb = rng.uniform(24.8, 26.3)
    width = rng.uniform(1.0, 3.0)
    g_r, r_z = rng.normal(0.7, 0.08), rng.normal(0.45, 0.08)
    gr, rz = survey_colours(g_r, r_z, ctx.name)
    gy, gx = scene.grid
    r = np.hypot(gx - hx, gy - hy)
    ang = np.arctan2(gy - hy, gx - hx)
    span = rng.uniform(0.4, 1.2)
    dang = np.angle(np.exp(1j * (ang - (th + math.pi))))
    arc = np.exp(-0.5 * ((r - radius) / width) ** 2) * np.exp(-0.5 * (dang / span) ** 2)
    # Clumps along the stream.
    arc *= 1 + 0.5 * gaussian_random_field(rng, scene.n, 3.5).clip(-1.5, 3)
    arc = np.clip(arc, 0, None)
    fl = band_fluxes(sb, gr, rz, ctx.model, ctx.cond.gain) * scene.scale**2
    scene.pre += fl[:, None, None] * arc[None]
    if rng.random() < 0.7:
        re = rng.uniform(3, 10)
        elliptical(rng, scene, ctx, hx, hy, re, rng.uniform(15, 17.5))
    return dict(stream_radius=radius, stream_sb_g=sb)


def _add_cirrus(rng, scene, ctx):
    """Filamentary Galactic cirrus with a brighter knot at the centre."""
    field = gaussian_random_field(rng, scene.n, rng.uniform(2.6, 3.4))
    field = np.exp(0.8 * field)
    field /= field.mean()
    sb = rng.uniform(25.3, 26.8)
    g_r, r_z = rng.normal(0.65, 0.1), rng.normal(0.5, 0.12)
    gr, rz = survey_colours(g_r, r_z, ctx.name)
    fl = band_fluxes(sb, gr, rz, ctx.model, ctx.cond.gain) * scene.scale**2
    scene.pre += fl[:, None, None] * field[None]
    re = rng.uniform(3, 8)
    mag = total_mag(sb - rng.uniform(0.0, 0.8), re, 0.7)
    scene.add_profile(sersic(0.6, re, rng.uniform(0.4, 0.9), rng.uniform(0, math.pi)), *rng.normal(0, 1, 2), band_fluxes(mag, gr, rz, ctx.model, ctx.cond.gain), re)
    return dict(cirrus_sb_g=sb)


def _add_star_halo(rng, scene, ctx):
    """Diffuse light around a bright star, with a faint source at the centre."""
    dist = rng.uniform(6, 35)
    th = rng.uniform(0, 2 * math.pi)
    # Brighter stars are rarer but light up a larger area.
    mag_r = max(16.5 - rng.exponential(2.0), 9.0)
    bright_star(rng, scene, ctx, dist * math.cos(th), dist * math.sin(th), mag_r)
    if rng.random() < 0.3:
        draw_ghost(rng, scene, ctx, *rng.normal(0, 4, 2), rng.uniform(4, 14), rng.uniform(24.5, 26.0))
    if rng.random() < 0.7:
        re = rng.uniform(0.4, 2.0)
        gr, rz = survey_colours(rng.normal(0.7, 0.3), rng.normal(0.5, 0.2), ctx.name)
        scene.add_profile(sersic(1.0, re), *rng.normal(0, 0.7, 2), band_fluxes(rng.uniform(22, 24.5), gr, rz, ctx.model, ctx.cond.gain), re)
    return dict(star_mag_r=mag_r, star_dist=dist)


def _add_ghost_artifact(rng, scene, ctx):
    """A ghost or scattered-light feature with no visible parent star."""
    draw_ghost(rng, scene, ctx, *rng.normal(0, 3, 2), rng.uniform(4, 16), rng.uniform(24.3, 25.8))
    if rng.random() < 0.5:
        gy, gx = scene.grid
        t = rng.uniform(0, 2 * math.pi)
        grad = (gx * math.cos(t) + gy * math.sin(t)) / (scene.n * scene.scale)
        fl = band_fluxes(rng.uniform(24.5, 26), 0.3, 0.2, ctx.model, ctx.cond.gain) * scene.scale**2
        scene.pre += fl[:, None, None] * np.clip(1 + 2 * grad, 0, None)[None]
    return {}


def _add_faint(rng, scene, ctx):
    """Nothing real: a noise peak or a very faint smudge that was detected."""
    # Kept below the LSBG sizes (r_e < 2.5"): a faint diffuse source of LSBG
    # size *is* an LSBG, and teaching the opposite cost real faint LSBGs.
    if rng.random() < 0.6:
        re = rng.uniform(0.6, 1.8)
        gr, rz = survey_colours(rng.normal(0.6, 0.3), rng.normal(0.4, 0.3), ctx.name)
        scene.add_profile(sersic(1.0, re, rng.uniform(0.4, 1), 0.3), 0, 0, band_fluxes(total_mag(rng.uniform(25.0, 26.5), re, 0.7), gr, rz, ctx.model, ctx.cond.gain), re)
    return {}


ARTIFACT_BUILDERS = {
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
