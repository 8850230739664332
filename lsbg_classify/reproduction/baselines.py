"""Feature-based baselines: the paper's SVM and random forest.

DeepShadows (Tanoglidis et al. 2021, Sect. 5) compares its CNN with two
classifiers trained on SourceExtractor measurements of the same objects:
an SVM with an RBF kernel (C = 1e4, gamma = 0.001) and a random forest
(100 trees, ``min_samples_split=10``).  The features were the ellipticity,
the magnitudes in g, r, i, the colours g-i, g-r, r-i and the mean, central
and effective surface brightness in g, r, i.

This module rebuilds those baselines:

- :func:`catalog_features` turns catalogue columns (found by common names,
  any case) into a feature matrix, deriving what is missing from what is
  there (r-i from g-i and g-r, surface brightnesses from a Sérsic model,
  magnitudes in other bands from colours);
- :func:`measure_features` measures SourceExtractor-style features with
  ``sep`` on cutouts when a catalogue has none;
- :func:`load_greco2018` reads the labelled HSC catalogue of Greco et al.
  (2018) LSBGs and artifacts shipped with the DeepShadows repository;
- :func:`cross_validate_baselines` scores the classifiers with stratified
  k-fold cross-validation and bootstrap intervals
  (:mod:`lsbg_classify.training.evaluate`);
- :func:`run_greco_benchmark` does all of it on the Greco catalogue and
  writes the tables and the ROC figure (see ``docs/baselines.rst``).

Surface brightnesses are in mag arcsec^-2, magnitudes in mag, radii in
arcsec (catalogue features); image features are in relative units, see
:func:`measure_features`.
"""

import math
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table, vstack
from sklearn.base import BaseEstimator, ClassifierMixin

from ..pipeline.catalog.write import write_catalog
from ..pipeline.model import DEFAULT_DECISION_THRESHOLD
from ..training.evaluate import METRIC_NAMES, metrics_table, plot_roc

__all__ = [
    "FEATURE_SETS",
    "IMAGE_FEATURES",
    "FEATURE_UNITS",
    "catalog_features",
    "sersic_b",
    "measure_features",
    "load_greco2018",
    "sky_groups",
    "baseline_models",
    "GridSVM",
    "cross_validate_baselines",
    "feature_importances",
    "run_greco_benchmark",
]

BANDS = ("g", "r", "i")

# The paper's hyperparameters (Tanoglidis et al. 2021, Sect. 5).
SVM_C = 1e4
SVM_GAMMA = 1e-3
RF_TREES = 100
RF_MIN_SAMPLES_SPLIT = 10
# Grid for the nested-CV SVM (searched on ROC AUC in an inner 5-fold CV).
SVM_GRID = {"C": (1.0, 10.0, 100.0, 1e3, 1e4), "gamma": (1e-4, 1e-3, 1e-2, 1e-1, 1.0)}

_LN10 = math.log(10.0)

# Features measured on cutouts by :func:`measure_features`.
IMAGE_FEATURES = (
    "mag",        # -2.5 log10(Kron flux of the channel-mean image)
    "B-G",        # channel colours, -2.5 log10(F_B / F_G) etc.
    "G-R",
    "B-R",
    "r_half",     # half-light radius (arcsec with pixel_scale, else pixels)
    "ell",        # 1 - b/a from the isophotal second moments
    "mu_0",       # central surface brightness (mean within 1.5 px)
    "mu_mean_e",  # mean surface brightness within r_half
    "mu_e",       # surface brightness at r_half (annulus 0.8-1.2 r_half)
    "peak",       # peak of the background-subtracted image (linear)
    "n_sources",  # detections in the cutout
    "offset",     # distance of the chosen object from the cutout centre
    "flag",       # 0 central detection, 1 nearest detection, 2 nothing detected
)

FEATURE_SETS = {
    # The paper's SourceExtractor set, built from catalogue columns.
    "paper": (
        "ell",
        "m_g", "m_r", "m_i",
        "g-i", "g-r", "r-i",
        "mu_0_g", "mu_0_r", "mu_0_i",
        "mu_mean_e_g", "mu_mean_e_r", "mu_mean_e_i",
        "mu_e_g", "mu_e_r", "mu_e_i",
    ),
    # The fitted Sérsic parameters themselves (Greco et al. 2018 columns).
    "structural": ("mu_0_g", "m_g", "r_e", "n", "ell", "g-i", "g-r"),
    # Measured on cutouts by measure_features.
    "image": IMAGE_FEATURES,
}

FEATURE_UNITS = {"ell": "", "n": "", "r_e": "arcsec", "g-i": "mag", "g-r": "mag", "r-i": "mag"}
for _b in BANDS:
    FEATURE_UNITS[f"m_{_b}"] = "mag"
    for _kind in ("mu_0", "mu_mean_e", "mu_e"):
        FEATURE_UNITS[f"{_kind}_{_b}"] = "mag / arcsec2"

# -- catalogue features ------------------------------------------------------

_ALIASES = {
    "r_e": ("r_e", "re", "r_eff", "reff", "r_half", "half_light_radius", "flux_radius"),
    "n": ("n", "sersic_n", "n_sersic", "sersic_index"),
    "ell": ("ell", "ellipticity", "ellip", "eps"),
    "q": ("q", "b/a", "ba", "axis_ratio", "b_a"),
    "elongation": ("elongation",),
}
_UNBANDED = {
    "mu_0": ("mu_0", "mu0", "mu_max_model", "mu_central", "mu0_model"),
    "m": ("m_tot", "mtot", "mag", "mag_auto", "m"),
}


def _banded_aliases(kind, band):
    if kind == "mu_0":
        return (f"mu_0_{band}", f"mu0_{band}", f"mu_0({band})", f"mu_0{band}",
                f"mu_max_model_{band}", f"{band}_mu_0", f"mu_central_{band}")
    return (f"m_{band}", f"mag_{band}", f"mag_auto_{band}", f"m_tot_{band}", f"{band}mag",
            f"mag{band}", f"{band}_mag", f"m{band}")


def _colour_aliases(a, b):
    return (f"{a}-{b}", f"{a}_{b}", f"{a}{b}", f"{a}_minus_{b}", f"{a}-{b}_color",
            f"color_{a}{b}", f"colour_{a}{b}", f"color_{a}_{b}", f"colour_{a}_{b}")


def _columns(table):
    if hasattr(table, "colnames"):
        return list(table.colnames)
    if hasattr(table, "columns"):
        return [str(c) for c in table.columns]
    return list(table.keys())


def _find(table, aliases):
    lookup = {}
    for name in _columns(table):
        lookup.setdefault(name.lower(), name)
    for alias in aliases:
        if alias.lower() in lookup:
            return lookup[alias.lower()]
    return None


def _values(table, name, unit=None, pixel_scale=None):
    col = table[name]
    col_unit = getattr(col, "unit", None)
    raw = getattr(col, "value", col)  # Quantity columns of a QTable
    arr = np.array(np.ma.getdata(raw), dtype=float)
    if np.ma.isMaskedArray(raw) or np.ma.isMaskedArray(col):
        arr[np.ma.getmaskarray(col)] = np.nan
    if unit is not None and col_unit is not None and col_unit != u.dimensionless_unscaled:
        if col_unit.physical_type == "angle":
            arr = (arr * col_unit).to_value(unit)
        elif str(col_unit) in ("pix", "pixel"):
            if pixel_scale is None:
                raise ValueError(f"column {name!r} is in pixels: give pixel_scale (arcsec/pixel)")
            arr = arr * float(pixel_scale)
    return arr


def sersic_b(n):
    """b_n of the Sérsic profile: the half-light radius encloses half the flux.

    Exact, from the regularised incomplete gamma function: P(2n, b_n) = 1/2.
    """
    from scipy.special import gammaincinv

    return gammaincinv(2.0 * np.asarray(n, dtype=float), 0.5)


def _sersic_area(n, r_e, q):
    """2 pi n q r_e^2 Gamma(2n) / b_n^{2n}: total flux / central intensity (arcsec^2)."""
    from scipy.special import gammaln

    n = np.asarray(n, dtype=float)
    b = sersic_b(n)
    log_area = np.log(2 * np.pi * n * q * r_e**2) + gammaln(2 * n) - 2 * n * np.log(b)
    return np.exp(log_area)


def _derive(table, band="g", pixel_scale=None):
    """Every feature derivable from the table's columns, by name."""
    n_rows = len(table)
    got = {}

    def take(key, aliases, unit=None):
        name = _find(table, aliases)
        if name is not None:
            got[key] = _values(table, name, unit=unit, pixel_scale=pixel_scale)

    take("r_e", _ALIASES["r_e"], unit=u.arcsec)
    take("n", _ALIASES["n"])
    take("ell", _ALIASES["ell"])
    if "ell" not in got:
        name = _find(table, _ALIASES["q"])
        if name is not None:
            got["ell"] = 1.0 - _values(table, name)
        else:
            name = _find(table, _ALIASES["elongation"])
            if name is not None:
                got["ell"] = 1.0 - 1.0 / _values(table, name)
    for kind in ("mu_0", "m"):
        for b in BANDS:
            take(f"{kind}_{b}", _banded_aliases(kind, b))
        name = _find(table, _UNBANDED[kind])
        if name is not None and f"{kind}_{band}" not in got:
            got[f"{kind}_{band}"] = _values(table, name)
    for a, b in (("g", "i"), ("g", "r"), ("r", "i")):
        take(f"{a}-{b}", _colour_aliases(a, b))

    # Colours from magnitudes, then the missing colour from the other two.
    for a, b in (("g", "i"), ("g", "r"), ("r", "i")):
        if f"{a}-{b}" not in got and f"m_{a}" in got and f"m_{b}" in got:
            got[f"{a}-{b}"] = got[f"m_{a}"] - got[f"m_{b}"]
    if "r-i" not in got and "g-i" in got and "g-r" in got:
        got["r-i"] = got["g-i"] - got["g-r"]
    if "g-i" not in got and "g-r" in got and "r-i" in got:
        got["g-i"] = got["g-r"] + got["r-i"]
    if "g-r" not in got and "g-i" in got and "r-i" in got:
        got["g-r"] = got["g-i"] - got["r-i"]

    # Offsets of each band from g: x_b = x_g - (g - b).
    to_g = {"g": np.zeros(n_rows)}
    if "g-r" in got:
        to_g["r"] = got["g-r"]
    if "g-i" in got:
        to_g["i"] = got["g-i"]
    for kind in ("mu_0", "m"):
        source = next((b for b in BANDS if f"{kind}_{b}" in got and b in to_g), None)
        if source is None:
            continue
        ref_g = got[f"{kind}_{source}"] + to_g[source]
        for b in BANDS:
            if f"{kind}_{b}" not in got and b in to_g:
                got[f"{kind}_{b}"] = ref_g - to_g[b]

    q = 1.0 - got["ell"] if "ell" in got else np.ones(n_rows)
    if "r_e" in got and "n" in got:
        with np.errstate(invalid="ignore", divide="ignore"):
            log_area = 2.5 * np.log10(_sersic_area(got["n"], got["r_e"], q))
        for b in BANDS:
            # mu_0 = m + 2.5 log10(total flux / central intensity), and back.
            if f"mu_0_{b}" not in got and f"m_{b}" in got:
                got[f"mu_0_{b}"] = got[f"m_{b}"] + log_area
            if f"m_{b}" not in got and f"mu_0_{b}" in got:
                got[f"m_{b}"] = got[f"mu_0_{b}"] - log_area
    if "r_e" in got:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_area = 2.5 * np.log10(2 * np.pi * q * got["r_e"] ** 2)
        for b in BANDS:
            if f"m_{b}" in got:
                got[f"mu_mean_e_{b}"] = got[f"m_{b}"] + mean_area
    if "n" in got:
        shift = 2.5 * sersic_b(got["n"]) / _LN10
        for b in BANDS:
            if f"mu_0_{b}" in got:
                got[f"mu_e_{b}"] = got[f"mu_0_{b}"] + shift
    return got


def catalog_features(table, feature_set="paper", band="g", pixel_scale=None, strict=False):
    """Feature matrix from catalogue columns.

    Columns are found by common names in any case (``mu_0``/``mu0``/
    ``mu_max_model``, ``m_tot``/``mag``/``mag_auto``, band-specific
    ``mu_0_g``, ``m_g``, ``mag_auto_r`` …, ``r_e``/``re``/``r_eff``/
    ``flux_radius``, ``n``/``sersic_n``, ``ell``/``ellipticity`` (or
    ``q``/``b/a``, or ``elongation``), ``g-i``/``g_i``/``gi``, …).
    Missing features are derived where possible:

    ==================  =============  =========================================
    feature             unit           derivation when not a column
    ==================  =============  =========================================
    ``r-i``             mag            (g-i) - (g-r); likewise any colour from
                                       the other two, or from two magnitudes
    ``m_b``             mag            m_g - (g-b) from any band and colours
    ``mu_0_b``          mag arcsec-2   central surface brightness; from another
                                       band and colours, or from the Sérsic
                                       model: m_b + 2.5 log10(2 pi n q r_e^2
                                       Gamma(2n) / b_n^(2n))
    ``mu_mean_e_b``     mag arcsec-2   mean surface brightness within the
                                       effective ellipse: m_b + 2.5 log10(2 pi
                                       q r_e^2) (half the flux in area
                                       pi q r_e^2)
    ``mu_e_b``          mag arcsec-2   surface brightness at r_e (Sérsic):
                                       mu_0_b + 2.5 b_n / ln 10
    ``ell``             --             1 - b/a; or 1 - q; or 1 - 1/elongation
    ==================  =============  =========================================

    Here q = 1 - ell (1 when there is no ellipticity column), r_e is the
    semi-major-axis effective radius in arcsec and b_n solves
    P(2n, b_n) = 1/2.  A column with an angular unit is converted to
    arcsec; one in pixels needs ``pixel_scale``.

    Parameters
    ----------
    table : `~astropy.table.Table` or mapping of columns
    feature_set : str or sequence of str
        A key of :data:`FEATURE_SETS` or a list of feature names.
    band : str
        Band of unbanded magnitude / surface-brightness columns
        (``m_tot``, ``mu_0``, …).
    pixel_scale : float, optional
        arcsec per pixel, for radii in pixels.
    strict : bool
        Raise instead of warning when a requested feature cannot be derived.

    Returns
    -------
    X : numpy.ndarray, shape (n_rows, n_features)
        float64; NaN where a row's input is missing or masked.
    names : list of str
        The features in ``X``'s columns (those of the set that could be
        derived, in the set's order).
    """
    wanted = FEATURE_SETS[feature_set] if isinstance(feature_set, str) else tuple(feature_set)
    got = _derive(table, band=band, pixel_scale=pixel_scale)
    names = [f for f in wanted if f in got]
    missing = [f for f in wanted if f not in got]
    if missing:
        msg = f"cannot derive {missing} from columns {_columns(table)}"
        if strict or not names:
            raise ValueError(msg)
        warnings.warn(msg, stacklevel=2)
    X = np.column_stack([got[f] for f in names]) if names else np.empty((len(table), 0))
    return X.astype(float), names


# -- image features ----------------------------------------------------------


def _as_float_images(images):
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected images of shape (n, H, W, 3), got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    return arr.astype(np.float64)


def _mag(flux, floor=1e-6):
    return -2.5 * np.log10(np.maximum(flux, floor))


def _annulus_mean(img, x, y, r_in, r_out, mask):
    yy, xx = np.indices(img.shape)
    rr = np.hypot(xx - x, yy - y)
    sel = (rr >= r_in) & (rr <= r_out) & ~mask
    return float(np.mean(img[sel])) if sel.any() else np.nan


def _background_subtracted(img, central_disk):
    """Per-channel images minus their sep background, their mean and its robust noise."""
    import sep

    h, w, _ = img.shape
    box = max(8, min(h, w) // 2)
    channels = []
    for c in range(3):
        data = np.ascontiguousarray(img[..., c])
        try:
            bkg = sep.Background(data, mask=central_disk, bw=box, bh=box, fw=1, fh=1)
            channels.append(data - bkg.back())
        except Exception:  # pragma: no cover - sep refuses pathological images
            channels.append(data - np.median(data[~central_disk]))
    det = np.ascontiguousarray(np.mean(channels, axis=0))
    outer = det[~central_disk]
    rms = 1.4826 * float(np.median(np.abs(outer - np.median(outer))))
    if not np.isfinite(rms) or rms <= 0:
        rms = float(np.std(outer)) or 1e-4
    return channels, det, rms


def _central_object(objs, seg, cx, cy, max_offset):
    """Index of the candidate among the detections and its flag (see measure_features)."""
    if not len(objs):
        return None, 2
    ids = {int(seg[int(round(cy + dy)), int(round(cx + dx))])
           for dy in (-0.5, 0.5) for dx in (-0.5, 0.5)}
    ids.discard(0)
    if ids:
        return max(ids, key=lambda i: objs["flux"][i - 1]) - 1, 0
    dist = np.hypot(objs["x"] - cx, objs["y"] - cy)
    if dist.min() <= max_offset:
        return int(np.argmin(dist)), 1
    return None, 2


def _measure_detected(o, index, seg, det, channels):
    """Kron-aperture photometry of a detected object, other objects masked."""
    import sep

    x, y = float(o["x"]), float(o["y"])
    a, b, theta = max(float(o["a"]), 0.5), max(float(o["b"]), 0.5), float(o["theta"])
    other = (seg > 0) & (seg != index + 1)
    arr1 = np.atleast_1d
    kr, _ = sep.kron_radius(det, arr1(x), arr1(y), arr1(a), arr1(b), arr1(theta), arr1(6.0),
                            mask=other)
    kr = float(kr[0]) if np.isfinite(kr[0]) and kr[0] > 0 else 2.5
    r_kron = 2.5 * kr
    if r_kron * math.sqrt(a * b) < 3.5:  # SourceExtractor's minimum aperture
        a_ap = b_ap = 3.5
        r_kron, theta_ap = 1.0, 0.0
    else:
        a_ap, b_ap, theta_ap = a, b, theta
    ap = tuple(arr1(v) for v in (x, y, a_ap, b_ap, theta_ap, r_kron))
    fluxes = [float(sep.sum_ellipse(ch, *ap, mask=other, subpix=5)[0][0]) for ch in channels]
    flux = float(sep.sum_ellipse(det, *ap, mask=other, subpix=5)[0][0])
    rmax = max(r_kron * a_ap, 2.0)
    if flux > 0:
        r_half, _ = sep.flux_radius(det, arr1(x), arr1(y), arr1(rmax), 0.5,
                                    normflux=arr1(flux), mask=other, subpix=5)
        r_half = float(np.ravel(r_half)[0])
    else:
        r_half = np.nan
    peak = float(det[seg == index + 1].max())
    return x, y, flux, fluxes, r_half, 1.0 - b / a, peak, other


def _measure_moments(det, channels, central_disk, cx, cy):
    """Nothing usable detected: moments of the positive light in the central disk."""
    yy, xx = np.indices(det.shape)
    x, y = cx, cy
    wgt = np.where(central_disk, np.clip(det, 0, None), 0.0)
    flux = float(wgt.sum())
    fluxes = [float(np.sum(np.where(central_disk, ch, 0.0))) for ch in channels]
    mask = np.zeros(det.shape, dtype=bool)
    if flux > 0:
        x = float(np.sum(wgt * xx) / flux)
        y = float(np.sum(wgt * yy) / flux)
        dx, dy = xx - x, yy - y
        mxx, myy, mxy = (np.sum(wgt * dx * dx) / flux, np.sum(wgt * dy * dy) / flux,
                         np.sum(wgt * dx * dy) / flux)
        tr, det2 = mxx + myy, mxx * myy - mxy**2
        disc = math.sqrt(max(tr**2 / 4 - det2, 0.0))
        lam1, lam2 = tr / 2 + disc, max(tr / 2 - disc, 0.0)
        ell = 1.0 - math.sqrt(lam2 / lam1) if lam1 > 0 else 0.0
        rr = np.hypot(dx, dy)[central_disk]
        order = np.argsort(rr)
        cum = np.cumsum(wgt[central_disk][order])
        r_half = float(rr[order][np.searchsorted(cum, 0.5 * cum[-1])])
    else:
        ell, r_half = 0.0, np.nan
    peak = float(det[central_disk].max())
    return x, y, flux, fluxes, r_half, ell, peak, mask


def _measure_one(img, pixel_scale, thresh, minarea, max_offset):
    import sep

    h, w, _ = img.shape
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    yy, xx = np.indices((h, w))
    central_disk = np.hypot(xx - cx, yy - cy) < 0.25 * min(h, w)
    channels, det, rms = _background_subtracted(img, central_disk)
    try:
        objs, seg = sep.extract(det, thresh, err=rms, minarea=minarea, deblend_cont=0.005,
                                segmentation_map=True)
    except Exception:  # pragma: no cover - e.g. pixel stack overflow
        objs, seg = np.zeros(0), np.zeros((h, w), dtype=np.int32)
    n_sources = len(objs)
    index, flag = _central_object(objs, seg, cx, cy, max_offset)
    scale = 1.0 if pixel_scale is None else float(pixel_scale)
    if index is not None:
        x, y, flux, fluxes, r_half, ell, peak, mask = _measure_detected(
            objs[index], index, seg, det, channels)
    else:
        x, y, flux, fluxes, r_half, ell, peak, mask = _measure_moments(
            det, channels, central_disk, cx, cy)

    if not np.isfinite(r_half) or r_half <= 0:
        r_half = 0.5
    r_half = max(r_half, 0.5)
    centre = _annulus_mean(det, x, y, 0.0, 1.5, mask)
    ring = _annulus_mean(det, x, y, 0.8 * r_half, max(1.2 * r_half, 0.8 * r_half + 1.0), mask)
    area_pix = scale**2
    # A channel flux at or below zero (a background-dominated JPEG channel)
    # is floored at 1% of the detection flux, which bounds colours at ~5 mag.
    floor = max(0.01 * abs(flux), 1e-6)
    f_b, f_g, f_r = (max(f, floor) for f in (fluxes[2], fluxes[1], fluxes[0]))
    return [
        _mag(flux),
        _mag(f_b) - _mag(f_g),
        _mag(f_g) - _mag(f_r),
        _mag(f_b) - _mag(f_r),
        r_half * scale,
        ell,
        _mag(centre / area_pix),
        _mag(0.5 * flux / (math.pi * r_half**2 * area_pix)),
        _mag(ring / area_pix),
        peak,
        float(n_sources),
        math.hypot(x - cx, y - cy) * scale,
        float(flag),
    ]


def measure_features(images, pixel_scale=None, thresh=1.5, minarea=5, max_offset=None):
    """SourceExtractor-style features measured with ``sep`` on cutouts.

    For each cutout: the per-channel background is estimated with
    ``sep.Background`` (a 2×2 grid of boxes, the central disk of radius
    a quarter of the cutout masked, since the candidate sits there) and
    subtracted; sources are extracted on the channel-mean image at
    ``thresh`` times its robust noise (MAD of the outer pixels); the
    object whose segment covers the centre is measured (``flag`` 0), else
    the detection nearest the centre within ``max_offset`` (``flag`` 1),
    else the positive light in the central disk, by moments (``flag`` 2).
    Fluxes are Kron (``MAG_AUTO``-like: 2.5 Kron radii, at least 3.5 px),
    with the other detections masked.

    Features (:data:`IMAGE_FEATURES`): ``mag`` (-2.5 log10 of the Kron
    flux); channel colours ``B-G``, ``G-R``, ``B-R`` (from the Kron fluxes
    in each channel; for the DES viewer composite B, G, R are g, r, z, so
    these are g-r, r-z and g-z-like); ``r_half`` (circular half-light
    radius of the Kron flux, ``FLUX_RADIUS``); ``ell`` (1 - b/a of the
    isophotal second moments); ``mu_0`` (mean within 1.5 px of the
    centroid), ``mu_mean_e`` (mean within ``r_half``: -2.5 log10(F/2 /
    (pi r_half^2))) and ``mu_e`` (at ``r_half``, an annulus from 0.8 to 1.2
    ``r_half``); ``peak`` (linear); ``n_sources``; ``offset`` of the object
    from the centre; ``flag``.

    Units are relative.  Pixel values are taken as they come: a uint8
    cutout is divided by 255, so a flux of 1 is one full-scale pixel and
    magnitudes have that zero point; the model inputs are asinh-stretched
    8-bit composites, so "magnitudes" and colours are monotonic, not
    linear, functions of the true ones.  Radii are in arcsec and surface
    brightnesses per arcsec^2 when ``pixel_scale`` (arcsec/pixel) is given,
    otherwise in pixels and per pixel.  Fluxes at or below zero are floored
    at 1e-6 before taking logs, and channel fluxes for colours at 1% of the
    detection flux (so colours stay within about ±5 mag).

    Parameters
    ----------
    images : array_like, shape (n, H, W, 3) or (H, W, 3)
        uint8 (0-255) or float cutouts, channels R, G, B.
    pixel_scale : float, optional
        arcsec per pixel of ``images`` (0.131 × 4 = 0.524 for a 64×64 model
        input made from a 256-pixel des-dr1 cutout).
    thresh : float
        Detection threshold in units of the noise.
    minarea : int
        Minimum number of pixels of a detection.
    max_offset : float, optional
        Largest distance (pixels) from the centre for a non-central
        detection to be used; default a quarter of the cutout.

    Returns
    -------
    X : numpy.ndarray, shape (n, 13)
    names : list of str
        :data:`IMAGE_FEATURES`.
    """
    try:
        import sep  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("measure_features needs the 'sep' package: pip install sep") from exc
    arr = _as_float_images(images)
    if max_offset is None:
        max_offset = 0.25 * min(arr.shape[1:3])
    rows = [_measure_one(img, pixel_scale, thresh, minarea, max_offset) for img in arr]
    return np.asarray(rows, dtype=float).reshape(len(arr), len(IMAGE_FEATURES)), list(IMAGE_FEATURES)


# -- the Greco et al. (2018) catalogue --------------------------------------

# Column order of hsc_LSBGs.dat.  Columns 3 and 5 are *i-band* quantities
# (see load_greco2018); the data README calls them mu_0(g) and m_g.
_GRECO_DAT_COLUMNS = (
    "id", "ra", "dec", "mu_0_i", "mu_0_i_err", "m_i", "m_i_err", "g-r", "g-i",
    "r_e", "r_e_err", "n", "n_err", "ell", "ell_err", "A_g", "A_r", "A_i",
)
_GRECO_CSV_RENAME = {"mu_0": "mu_0_i", "m_tot": "m_i"}
_GRECO_UNITS = {
    "ra": u.deg, "dec": u.deg, "mu_0_i": u.mag / u.arcsec**2, "mu_0_i_err": u.mag / u.arcsec**2,
    "m_i": u.mag, "m_i_err": u.mag, "g-r": u.mag, "g-i": u.mag, "r_e": u.arcsec,
    "r_e_err": u.arcsec, "A_g": u.mag, "A_r": u.mag, "A_i": u.mag,
}


def _greco_dir(data_dir):
    path = Path(data_dir)
    if (path / "hsc_greco2018").is_dir():
        path = path / "hsc_greco2018"
    for name in ("hsc_LSBGs.dat", "hsc_artifacts.csv"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} not found")
    return path


def load_greco2018(data_dir):
    """The labelled HSC LSBGs and artifacts of Greco et al. (2018).

    Reads ``hsc_LSBGs.dat`` (781 LSBGs, whitespace-separated, no header)
    and ``hsc_artifacts.csv`` (641 artifacts) from ``data_dir`` or from
    ``data_dir/hsc_greco2018`` and stacks them.

    The ``.dat`` columns are id, ra, dec, mu_0, its error, m, its error,
    g-r, g-i, r_e [arcsec], error, n, error, ell, error, A_g, A_r, A_i.
    Its surface brightness and magnitude are **i-band** values
    (``mu_0_i``, ``m_i``), not g-band as the data README says: adding g-i
    reproduces Greco et al.'s published g-band numbers (mu_0(g) spans
    18-27.4 with half the galaxies fainter than 24.3 and 95% fainter than
    22; every galaxy has a mean g-band surface brightness within r_e
    fainter than the 24.3 selection cut), while the columns as they stand
    do not (17.5-26.4, median 23.75).  The Sérsic relation between mu_0,
    m, r_e, n and ell holds to the rounding (0.02 mag), so the order
    mu_0, m, (g-r, g-i), r_e, n, ell is right; g-r < g-i in 99% of rows.
    The artifacts' ``mu_0`` and ``m_tot`` are taken to be i-band too:
    with g-i added, 97% of them pass the same 24.3 cut (9% fail it as
    g-band values), and an artifact 10 arcsec from LSBG 1 has m_tot =
    20.98 against that galaxy's m_i = 21.03.

    Parameters
    ----------
    data_dir : path-like

    Returns
    -------
    `~astropy.table.Table`
        Columns ``source`` (``"lsbg"``/``"artifact"``), ``id`` (the LSBG
        number, or the artifact's row in its file, from 1), ``ra``,
        ``dec`` (deg), ``mu_0_i`` (mag arcsec-2), ``m_i`` (mag), ``g-r``,
        ``g-i``, ``r_e`` (arcsec), ``n``, ``ell``, ``A_g``, ``A_r``,
        ``A_i`` (mag), the LSBGs' errors (``*_err``, masked for
        artifacts) and ``label`` (1 LSBG, 0 artifact).  Magnitudes and
        colours are as in the files (no extinction correction applied).
    """
    path = _greco_dir(data_dir)
    raw = np.loadtxt(path / "hsc_LSBGs.dat", ndmin=2)
    if raw.shape[1] != len(_GRECO_DAT_COLUMNS):
        raise ValueError(f"hsc_LSBGs.dat has {raw.shape[1]} columns, expected {len(_GRECO_DAT_COLUMNS)}")
    lsbg = Table(raw, names=_GRECO_DAT_COLUMNS)
    lsbg["id"] = lsbg["id"].astype(int)
    lsbg["source"] = "lsbg"
    lsbg["label"] = 1

    art = Table.read(path / "hsc_artifacts.csv", format="ascii.csv")
    for old, new in _GRECO_CSV_RENAME.items():
        art.rename_column(old, new)
    art["id"] = np.arange(1, len(art) + 1)
    art["source"] = "artifact"
    art["label"] = 0

    table = vstack([lsbg, art], join_type="outer", metadata_conflicts="silent")
    order = ["source", "id", "ra", "dec", "mu_0_i", "m_i", "g-r", "g-i", "r_e", "n", "ell",
             "A_g", "A_r", "A_i", "mu_0_i_err", "m_i_err", "r_e_err", "n_err", "ell_err", "label"]
    table = table[order]
    for name, unit in _GRECO_UNITS.items():
        table[name].unit = unit
    table["label"] = np.asarray(table["label"], dtype=int)
    table.meta["reference"] = "Greco et al. 2018, ApJ 857, 104"
    table.meta["note"] = ("mu_0_i and m_i are i-band (the DeepShadows repository files); "
                          "g-band: add g-i. No extinction correction applied.")
    return table


def sky_groups(ra, dec, radius_arcsec=60.0):
    """Friends-of-friends groups of positions closer than ``radius_arcsec``.

    Used to keep shreds of one bright object (and near-duplicates across
    the LSBG and artifact lists) in the same cross-validation fold.

    Returns
    -------
    numpy.ndarray of int
        A group number per position.
    """
    from astropy.coordinates import SkyCoord, search_around_sky
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    coords = SkyCoord(np.asarray(ra, float) * u.deg, np.asarray(dec, float) * u.deg)
    i, j, _, _ = search_around_sky(coords, coords, radius_arcsec * u.arcsec)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(len(coords), len(coords)))
    return connected_components(graph, directed=False)[1]


# -- classifiers and cross-validation ----------------------------------------


class GridSVM(ClassifierMixin, BaseEstimator):
    """RBF SVM with (C, gamma) chosen by an inner CV, then Platt-scaled.

    ``fit`` searches ``grid`` (default :data:`SVM_GRID`) with a stratified
    ``inner_folds``-fold CV on ROC AUC, then refits the best pair on all
    the training data with probabilities.  Inside
    :func:`cross_validate_baselines` this is a nested cross-validation:
    the held-out fold never takes part in choosing (C, gamma).
    """

    def __init__(self, grid=None, inner_folds=5, random_state=0):
        self.grid = grid
        self.inner_folds = inner_folds
        self.random_state = random_state

    def fit(self, X, y):
        from sklearn.model_selection import GridSearchCV, StratifiedKFold

        grid = SVM_GRID if self.grid is None else self.grid
        search = GridSearchCV(
            _svm_pipeline(probability=False, random_state=self.random_state),
            {f"svc__{k}": list(v) for k, v in grid.items()},
            scoring="roc_auc",
            cv=StratifiedKFold(self.inner_folds, shuffle=True, random_state=self.random_state),
        )
        search.fit(X, y)
        self.best_params_ = {k.split("__", 1)[1]: v for k, v in search.best_params_.items()}
        self.model_ = _svm_pipeline(probability=True, random_state=self.random_state,
                                    **self.best_params_)
        self.model_.fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, X):
        return self.model_.predict_proba(X)

    def predict(self, X):
        return self.model_.predict(X)


def _svm_pipeline(C=SVM_C, gamma=SVM_GAMMA, probability=True, random_state=0):
    """Imputer, scaler and RBF SVC; with ``probability``, Platt-scaled.

    Platt scaling (a sigmoid fitted to the decision values of an internal
    5-fold CV, then one SVC refitted on all the data) is what libsvm's
    ``SVC(probability=True)`` does; written with ``CalibratedClassifierCV``
    because scikit-learn 1.9 deprecates the ``probability`` argument.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    svc = SVC(C=C, gamma=gamma, kernel="rbf", random_state=random_state)
    if probability:
        svc = CalibratedClassifierCV(svc, method="sigmoid", cv=5, ensemble=False)
    return Pipeline([
        ("impute", SimpleImputer(strategy="median")),
        ("scale", StandardScaler()),
        ("svc", svc),
    ])


def _rf_pipeline(random_state=0, n_jobs=None):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    return Pipeline([
        ("impute", SimpleImputer(strategy="median")),
        ("rf", RandomForestClassifier(n_estimators=RF_TREES, min_samples_split=RF_MIN_SAMPLES_SPLIT,
                                      random_state=random_state, n_jobs=n_jobs)),
    ])


def baseline_models(seed=0, grid_search=False):
    """The paper's classifiers as scikit-learn estimators, by name.

    ``svm``: median imputation, standardisation, RBF SVC with C = 1e4,
    gamma = 0.001 and Platt probabilities; ``random_forest``: median
    imputation and 100 trees with ``min_samples_split=10``; with
    ``grid_search``, also ``svm_grid``: the SVM with (C, gamma) chosen from
    :data:`SVM_GRID` by an inner 5-fold CV on ROC AUC (nested inside the
    outer CV by :func:`cross_validate_baselines`).
    """
    models = {"svm": _svm_pipeline(random_state=seed), "random_forest": _rf_pipeline(seed)}
    if grid_search:
        models["svm_grid"] = GridSVM(random_state=seed)
    return models


def _folds(y, folds, seed, groups):
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is None:
        return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    return list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(
        np.zeros(len(y)), y, groups))


def _fit_fold(model, X, y, train, test):
    from sklearn.base import clone

    est = clone(model).fit(X[train], y[train])
    return est, est.predict_proba(X[test])[:, list(est.classes_).index(1)]


def _out_of_fold(model, X, y, splits, n_jobs=None):
    from joblib import Parallel, delayed

    results = Parallel(n_jobs=n_jobs)(
        delayed(_fit_fold)(model, X, y, train, test) for train, test in splits)
    prob = np.full(len(y), np.nan)
    for (_, test), (_, p) in zip(splits, results):
        prob[test] = p
    return prob, [est for est, _ in results]


def cross_validate_baselines(X, y, folds=10, seed=0, n_boot=1000, groups=None, grid_search=False,
                             models=None, threshold=DEFAULT_DECISION_THRESHOLD,
                             return_predictions=False, n_jobs=None):
    """Out-of-fold scores of the baseline classifiers, with bootstrap intervals.

    Every model is trained on k-1 folds and predicts the held-out fold
    (stratified k-fold, shuffled with ``seed``; stratified *group* k-fold
    when ``groups`` is given), so each object gets one out-of-fold LSBG
    probability.  Metrics are computed on the pooled out-of-fold
    probabilities with :func:`lsbg_classify.training.evaluate.metrics_table`
    (percentile bootstrap over objects, ``n_boot`` draws, 95%).

    Parameters
    ----------
    X : array_like, shape (n, k)
        Features (NaN allowed: median-imputed inside each training fold).
    y : array_like of {0, 1}
        1 = LSBG.
    folds, seed, n_boot : int
    groups : array_like, optional
        Objects with the same group stay in the same fold (see
        :func:`sky_groups`).
    grid_search : bool
        Add ``svm_grid``, the nested-CV grid-searched SVM (slower).
    models : dict, optional
        Name → scikit-learn classifier with ``predict_proba``; default
        :func:`baseline_models`.
    threshold : float
        Probability at or above which an object is called an LSBG.
    return_predictions : bool
        Also return the out-of-fold probabilities.
    n_jobs : int, optional
        Folds fitted in parallel (joblib); results do not depend on it.

    Returns
    -------
    table : `~astropy.table.Table`
        Columns ``model``, ``metric`` (:data:`~lsbg_classify.training.evaluate.METRIC_NAMES`),
        ``value``, ``ci_low``, ``ci_high``; ``meta`` holds the protocol, the
        confusion counts per model (``<model>_tn`` …) and, for ``svm_grid``,
        the (C, gamma) chosen in each fold.
    probabilities : dict of str → numpy.ndarray
        Only with ``return_predictions``: out-of-fold probability per model.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y).astype(int)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (n, k) with n = len(y); got {X.shape} and {len(y)}")
    if set(np.unique(y)) != {0, 1}:
        raise ValueError("y must contain both classes, 0 (artifact) and 1 (LSBG)")
    models = baseline_models(seed, grid_search) if models is None else dict(models)
    splits = _folds(y, folds, seed, groups)
    rows, probs = [], {}
    meta = {"folds": int(folds), "seed": int(seed), "n": int(len(y)), "n_lsbg": int(y.sum()),
            "n_artifact": int(len(y) - y.sum()), "n_boot": int(n_boot), "threshold": float(threshold),
            "protocol": "stratified group k-fold" if groups is not None else "stratified k-fold",
            "svm": f"RBF SVC C={SVM_C:g} gamma={SVM_GAMMA:g}, standardised features",
            "random_forest": f"{RF_TREES} trees, min_samples_split={RF_MIN_SAMPLES_SPLIT}"}
    for name, model in models.items():
        prob, fitted = _out_of_fold(model, X, y, splits, n_jobs)
        probs[name] = prob
        t = metrics_table(y, prob, threshold, n_boot=n_boot, seed=seed)
        t.add_column([name] * len(t), name="model", index=0)
        for key in ("tn", "fp", "fn", "tp"):
            meta[f"{name}_{key}"] = int(t.meta[key])
        if hasattr(fitted[0], "best_params_"):
            meta[f"{name}_best_params"] = [
                {k: float(v) for k, v in est.best_params_.items()} for est in fitted]
        t.meta.clear()
        rows.append(t)
    table = vstack(rows)
    table.meta.update(meta)
    for col in ("value", "ci_low", "ci_high"):
        table[col].format = ".3f"
    return (table, probs) if return_predictions else table


def feature_importances(X, y, names, folds=10, seed=0, n_repeats=5, groups=None):
    """Random-forest feature importances, impurity-based and by permutation.

    The paper's random forest is fitted in each training fold; its
    impurity (Gini) importances are averaged over folds, and each feature
    is permuted ``n_repeats`` times in the held-out fold to measure the
    drop in ROC AUC (mean over folds).

    Returns
    -------
    `~astropy.table.Table`
        ``feature``, ``gini`` (mean), ``gini_std``, ``perm_auc_drop``,
        ``perm_auc_drop_std``, sorted by ``perm_auc_drop``.
    """
    from sklearn.inspection import permutation_importance

    X = np.asarray(X, dtype=float)
    y = np.asarray(y).astype(int)
    gini, perm = [], []
    for k, (train, test) in enumerate(_folds(y, folds, seed, groups)):
        model = _rf_pipeline(seed).fit(X[train], y[train])
        gini.append(model.named_steps["rf"].feature_importances_)
        res = permutation_importance(model, X[test], y[test], scoring="roc_auc",
                                     n_repeats=n_repeats, random_state=seed + k)
        perm.append(res.importances_mean)
    gini, perm = np.array(gini), np.array(perm)
    table = Table({
        "feature": list(names),
        "gini": gini.mean(0), "gini_std": gini.std(0),
        "perm_auc_drop": perm.mean(0), "perm_auc_drop_std": perm.std(0),
    })
    for col in table.colnames[1:]:
        table[col].format = ".4f"
    table.sort("perm_auc_drop", reverse=True)
    table.meta.update({"folds": int(folds), "seed": int(seed), "n_repeats": int(n_repeats)})
    return table


def run_greco_benchmark(data_dir, output_dir, folds=10, seed=0, n_boot=1000,
                        feature_sets=("paper", "structural"), grid_search=True,
                        grouped=True, group_radius_arcsec=60.0, importances=True, n_jobs=None):
    """The paper's SVM and random forest on the Greco et al. (2018) catalogue.

    Features from :func:`catalog_features` (each of ``feature_sets``),
    labels from :func:`load_greco2018`, scores from
    :func:`cross_validate_baselines` with stratified ``folds``-fold CV
    (and, with ``grouped``, again with friends-of-friends sky groups of
    ``group_radius_arcsec`` kept within one fold).  The grid-searched SVM
    is run on the first feature set with plain stratified folds only.

    Writes to ``output_dir``:

    - ``baselines_greco2018.ecsv``: the returned table;
    - ``roc_baselines_greco2018.png``: ROC curves of the models on the
      first feature set (stratified folds);
    - ``rf_importances_greco2018.ecsv`` (with ``importances``):
      :func:`feature_importances` on the first feature set.

    Parameters
    ----------
    data_dir : path-like
        Folder holding ``hsc_greco2018/`` (or that folder itself).
    output_dir : path-like
        Created if needed; existing files of the same names are replaced.
    folds, seed, n_boot : int
        As in :func:`cross_validate_baselines`.
    feature_sets : sequence of str
        Keys of :data:`FEATURE_SETS`.
    grid_search : bool
        Also run the nested-CV grid-searched SVM (about 4 minutes on two
        cores).
    grouped : bool
        Repeat each run with sky-grouped folds.
    group_radius_arcsec : float
        Linking length of the sky groups.
    importances : bool
        Also compute and write the random-forest feature importances.
    n_jobs : int, optional
        Folds fitted in parallel.

    Returns
    -------
    `~astropy.table.Table`
        Columns ``feature_set``, ``protocol`` (``stratified`` or
        ``grouped``), ``model``, ``metric``, ``value``, ``ci_low``,
        ``ci_high``; ``meta`` holds the counts and protocol details.
    """
    table = load_greco2018(data_dir)
    y = np.asarray(table["label"], dtype=int)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = sky_groups(table["ra"], table["dec"], group_radius_arcsec) if grouped else None

    parts, meta, curves = [], {}, {}
    for k, fset in enumerate(feature_sets):
        X, names = catalog_features(table, fset, strict=True)
        meta[f"features_{fset}"] = names
        protocols = [("stratified", None)] + ([("grouped", groups)] if grouped else [])
        for protocol, grp in protocols:
            res, probs = cross_validate_baselines(
                X, y, folds=folds, seed=seed, n_boot=n_boot, groups=grp,
                grid_search=grid_search and k == 0 and grp is None, return_predictions=True,
                n_jobs=n_jobs)
            for key, value in res.meta.items():
                if key.endswith(("_tn", "_fp", "_fn", "_tp", "_best_params")):
                    meta[f"{fset}_{protocol}_{key}"] = value
            res.meta.clear()
            res.add_column([fset] * len(res), name="feature_set", index=0)
            res.add_column([protocol] * len(res), name="protocol", index=1)
            parts.append(res)
            if k == 0 and grp is None:
                curves = {f"{m}, {fset} features": (y, p) for m, p in probs.items()}
                if importances:
                    write_catalog(feature_importances(X, y, names, folds=folds, seed=seed),
                                  out / "rf_importances_greco2018.ecsv", overwrite=True)

    result = vstack(parts)
    for col in ("value", "ci_low", "ci_high"):
        result[col].format = ".3f"
    result.meta.update({
        "data": "Greco et al. 2018 HSC LSBGs (label 1) and artifacts (label 0)",
        "n": int(len(y)), "n_lsbg": int(y.sum()), "n_artifact": int(len(y) - y.sum()),
        "folds": int(folds), "seed": int(seed), "n_boot": int(n_boot),
        "group_radius_arcsec": float(group_radius_arcsec) if grouped else None,
        "n_groups": int(len(np.unique(groups))) if grouped else None,
        "metrics": list(METRIC_NAMES),
    })
    result.meta.update(meta)
    write_catalog(result, out / "baselines_greco2018.ecsv", overwrite=True)
    plot_roc(curves, out / "roc_baselines_greco2018.png",
             title="Greco et al. 2018 HSC, out-of-fold")
    return result
