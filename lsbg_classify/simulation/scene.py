"""The scene, pre-PSF band images on the survey's native grid, and the GalSim profiles in it."""

import math
from functools import lru_cache

import numpy as np

from .conditions import mag_to_nmgy

# --------------------------------------------------------------------------
# Scene: pre-PSF band images on the native grid


class Scene:
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
TEMPLATE_MAX_RE = 1.2


@lru_cache(maxsize=20000)
def _template(n_q, re_q, q_q, pa_q):
    # Templates are in pixel units (scale 1), so one cache serves every
    # pixel scale.
    re = math.exp(re_q / 20.0)
    prof = sersic(n_q / 4.0, re, q_q / 20.0, math.radians(pa_q * 10.0))
    h = _stamp_half(re, 1.0, 10**6)
    stamp = _draw_unit(prof, 1.0, h, 0.0, 0.0, re).astype(np.float32)
    stamp.flags.writeable = False
    return stamp


def add_small_galaxy(scene, n, re, q, pa, x_arcsec, y_arcsec, fluxes):
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


def import_galsim():
    import galsim

    return galsim


_GSPARAMS = None


def galsim_params():
    global _GSPARAMS
    if _GSPARAMS is None:
        g = import_galsim()
        _GSPARAMS = g.GSParams(folding_threshold=1e-2, maxk_threshold=3e-3)
    return _GSPARAMS


def sersic(n, hlr, q=1.0, beta_rad=0.0):
    """Unit-flux Sersic profile; ``hlr`` is the semi-major half-light radius.

    The index is rounded to 0.05 because GalSim tabulates every new index
    once (about 20 ms), so a small set of indices stays fast.
    """
    g = import_galsim()
    n = min(max(round(n * 20) / 20.0, 0.3), 6.0)
    q = min(max(float(q), 0.1), 1.0)
    prof = g.Sersic(n=n, half_light_radius=hlr * math.sqrt(q), flux=1.0, gsparams=galsim_params())
    if q < 0.999:
        prof = prof.shear(q=q, beta=beta_rad * g.radians)
    return prof


def sersic_mean_sb_offset(n):
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


def total_mag(mu_mean, r_e, q):
    """Total magnitude of a profile with mean SB ``mu_mean`` within the ellipse r_e."""
    return mu_mean - 2.5 * math.log10(2 * math.pi * q * r_e**2)


def band_fluxes(mag_g, g_r, r_z, model, gain):
    """Fluxes in the survey's three bands (native units) from g and colours."""
    mags = np.array([mag_g, mag_g - g_r, mag_g - g_r - r_z])
    return mag_to_nmgy(mags) * model.flux_per_nmgy * gain


def survey_colours(g_r, r_z, name):
    """Second colour for the survey's reddest band (r-z for DES, r-i for HSC)."""
    if name == "hsc":
        # For galaxy and stellar SEDs r-i is roughly 0.55 (r-z) - 0.02.
        return g_r, 0.55 * r_z - 0.02
    return g_r, r_z
