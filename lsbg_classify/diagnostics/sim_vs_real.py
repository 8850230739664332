"""Compare simulated cutouts with real ones.

The CNN is trained on simulated cutouts and applied to real ones, so the
simulation has to reproduce what the network sees: background level, noise
and colour, the asinh stretch, the density, sizes and colours of field
sources, and the look of the central candidate.  These functions measure
those properties on 64x64 uint8 model inputs (as
:func:`lsbg_classify.simulation.training_set.make_training_set` returns them and as the
real cutouts are stored) so real and simulated sets can be compared number
by number, by eye (:func:`real_vs_simulated_sheet`) and with a classifier
(:func:`discriminator_test`).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..figures import mosaic_sheet
from ..pipeline.catalog.write import write_catalog

__all__ = [
    "compare_with_simulation",
    "SimulationComparison",
    "image_statistics",
    "compare_real_vs_simulated",
    "real_vs_simulated_sheet",
    "discriminator_test",
]

# Width (pixels of the 64x64 image) of the border used as "background".
BORDER = 8

_CHANNELS = ("R", "G", "B")


def _border_pixels(img, width=BORDER):
    """Pixels within ``width`` of the edge, shape (m, 3)."""
    mask = np.zeros(img.shape[:2], dtype=bool)
    mask[:width] = mask[-width:] = True
    mask[:, :width] = mask[:, -width:] = True
    return img[mask]


def _clipped_median(values, nsigma=3.0, iters=5):
    """Sigma-clipped median and MAD-sigma per column of ``values`` (m, c)."""
    values = np.asarray(values, dtype=float)
    keep = np.ones(values.shape, dtype=bool)
    med = np.median(values, axis=0)
    sig = 1.4826 * np.median(np.abs(values - med), axis=0)
    for _ in range(iters):
        keep = np.abs(values - med) <= nsigma * np.maximum(sig, 0.5)
        med = np.array([np.median(values[keep[:, c], c]) for c in range(values.shape[1])])
        sig = np.array(
            [1.4826 * np.median(np.abs(values[keep[:, c], c] - med[c])) for c in range(values.shape[1])]
        )
    return med, sig


def _power_spectrum_fit(gray):
    """Slope and log10 amplitude (at k = 0.1 cycles/pix) of the radial power spectrum."""
    g = gray - gray.mean()
    n = g.shape[0]
    win = np.hanning(n)[:, None] * np.hanning(n)[None, :]
    p = np.abs(np.fft.fftshift(np.fft.fft2(g * win))) ** 2 / np.sum(win**2)
    k = np.fft.fftshift(np.fft.fftfreq(n))
    kr = np.hypot(k[:, None], k[None, :])
    sel = (kr > 0.04) & (kr < 0.45)
    x = np.log10(kr[sel])
    y = np.log10(p[sel] + 1e-12)
    slope, inter = np.polyfit(x, y, 1)
    return slope, inter + slope * np.log10(0.1)


def _sources(img, bkg, noise):
    """Compact sources found with ``sep`` on the summed image.

    Returns a list of (flux-weighted size in pixels, R-G, B-G colour in
    8-bit levels, peak) for each source; empty when ``sep`` is missing.
    """
    try:
        import sep
    except ImportError:  # pragma: no cover - sep is optional
        return None
    data = np.ascontiguousarray(img.astype(np.float64) - bkg[None, None, :]).sum(axis=2)
    err = float(np.sqrt(np.sum(np.asarray(noise, float) ** 2)))
    try:
        objs = sep.extract(data, 3.0, err=max(err, 1.0), minarea=3, deblend_cont=0.01)
    except Exception:  # pragma: no cover - sep gives up on pathological images
        return []
    out = []
    for o in objs:
        x, y = int(round(o["x"])), int(round(o["y"]))
        if not (0 <= x < img.shape[1] and 0 <= y < img.shape[0]):
            continue
        # Skip the central candidate: we want the field population.
        if np.hypot(o["x"] - 31.5, o["y"] - 31.5) < 8:
            continue
        size = float(np.sqrt(max(o["a"] * o["b"], 0.0)))
        pix = img[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].reshape(-1, 3).astype(float) - bkg
        col = pix.mean(axis=0)
        out.append((size, col[0] - col[1], col[2] - col[1], float(o["peak"])))
    return out


def image_statistics(X):
    """Per-image statistics of 64x64 RGB uint8 cutouts.

    Parameters
    ----------
    X : array_like, shape (n, 64, 64, 3), uint8
        Model inputs (0-255).

    Returns
    -------
    dict of str -> numpy.ndarray, shape (n,)
        Statistic name to its value per image.  Levels are 8-bit values
        (0-255); sizes are pixels of the 64x64 image (0.52"/px for des-dr1).
    """
    X = np.asarray(X)
    if X.ndim != 4 or X.shape[-1] != 3:
        raise ValueError(f"expected (n, ny, nx, 3) images, got {X.shape}")
    stats = {}

    def put(name, i, value):
        stats.setdefault(name, np.full(len(X), np.nan))[i] = value

    for i, img in enumerate(X.astype(np.float64)):
        border = _border_pixels(img)
        bkg, noise = _clipped_median(border)
        for c, ch in enumerate(_CHANNELS):
            put(f"bkg_{ch}", i, bkg[c])
            put(f"noise_{ch}", i, noise[c])
        put("sky_R-G", i, bkg[0] - bkg[1])
        put("sky_B-G", i, bkg[2] - bkg[1])
        gray = img.mean(axis=2)
        for q in (5, 50, 95, 99):
            put(f"q{q:02d}_gray", i, np.percentile(gray, q))
        put("frac_saturated", i, np.mean(np.any(img >= 255, axis=2)))
        put("frac_bright>100", i, np.mean(gray > 100))
        c = img[28:36, 28:36].reshape(-1, 3).mean(axis=0)
        put("centre_gray", i, c.mean() - bkg.mean())
        put("centre_R-G", i, (c[0] - bkg[0]) - (c[1] - bkg[1]))
        put("centre_B-G", i, (c[2] - bkg[2]) - (c[1] - bkg[1]))
        yy, xx = np.indices(gray.shape)
        r = np.hypot(yy - 31.5, xx - 31.5)
        sub = gray - bkg.mean()
        put("ring_4-8", i, np.median(sub[(r >= 4) & (r < 8)]))
        put("ring_8-14", i, np.median(sub[(r >= 8) & (r < 14)]))
        slope, amp = _power_spectrum_fit(gray)
        put("ps_slope", i, slope)
        put("ps_log_amp", i, amp)
        src = _sources(img, bkg, noise)
        if src is not None:
            put("n_sources", i, len(src))
            if src:
                arr = np.array(src)
                put("src_size", i, np.median(arr[:, 0]))
                put("src_R-G", i, np.median(arr[:, 1]))
                put("src_B-G", i, np.median(arr[:, 2]))
    return stats


def compare_real_vs_simulated(real_X, sim_X, statistics=None):
    """Summarise real and simulated cutouts side by side.

    Parameters
    ----------
    real_X, sim_X : array_like, shape (n, 64, 64, 3), uint8
        Real and simulated model inputs.
    statistics : sequence of str, optional
        Restrict the table to these statistics.

    Returns
    -------
    astropy.table.Table
        One row per statistic with columns ``statistic``, ``real_median``,
        ``real_p16``, ``real_p84``, ``real_scatter`` (half the 16-84 %
        range), ``sim_median``, ``sim_p16``, ``sim_p84``, ``sim_scatter``
        and ``z`` = (sim median - real median) / real scatter; ``|z| < 1``
        means the simulated median lies within the real scatter.
    """
    real = image_statistics(real_X)
    sim = image_statistics(sim_X)
    names = [s for s in real if s in sim]
    if statistics is not None:
        names = [s for s in names if s in set(statistics)]
    rows = []
    for name in names:
        r, s = real[name], sim[name]
        r, s = r[np.isfinite(r)], s[np.isfinite(s)]
        if len(r) == 0 or len(s) == 0:
            continue
        r16, r50, r84 = np.percentile(r, [16, 50, 84])
        s16, s50, s84 = np.percentile(s, [16, 50, 84])
        rsc = (r84 - r16) / 2
        ssc = (s84 - s16) / 2
        z = (s50 - r50) / rsc if rsc > 0 else np.nan
        rows.append((name, r50, r16, r84, rsc, s50, s16, s84, ssc, z))
    names_ = ("statistic", "real_median", "real_p16", "real_p84", "real_scatter",
              "sim_median", "sim_p16", "sim_p84", "sim_scatter", "z")
    t = Table(rows=rows, names=names_, dtype=[str] + [float] * 9)
    for c in names_[1:]:
        t[c].format = ".3g"
    t.meta["n_real"] = len(real_X)
    t.meta["n_sim"] = len(sim_X)
    return t


def real_vs_simulated_sheet(real_X, sim_X, path, ncols=10, scale=3, max_rows=5):
    """Write a PNG with real cutouts (top rows) above simulated ones.

    ``real_X`` and ``sim_X`` are uint8 model inputs, shape (n, 64, 64, 3);
    the other parameters and the return value are those of
    :func:`~lsbg_classify.figures.mosaic_sheet`.
    """
    return mosaic_sheet([real_X, sim_X], path, ncols=ncols, scale=scale, max_rows=max_rows)


def _patch_features(X, patch=16):
    """Pixel statistics of the 16x16 corner patches of each image."""
    feats = []
    X = np.asarray(X, dtype=np.float64)
    for img in X:
        for y0, x0 in ((0, 0), (0, 64 - patch), (64 - patch, 0), (64 - patch, 64 - patch)):
            p = img[y0 : y0 + patch, x0 : x0 + patch]
            f = []
            for c in range(3):
                v = p[..., c].ravel()
                med = np.median(v)
                f += [med, 1.4826 * np.median(np.abs(v - med)), np.percentile(v, 10),
                      np.percentile(v, 90), v.std()]
                # Pixel-to-pixel correlation: noise texture after resampling/JPEG.
                d = p[..., c]
                f.append(np.mean(np.abs(np.diff(d, axis=0))) + np.mean(np.abs(np.diff(d, axis=1))))
            f += [np.median(p[..., 0] - p[..., 1]), np.median(p[..., 2] - p[..., 1])]
            feats.append(f)
    return np.array(feats)


def discriminator_test(real_X, sim_X, seed=0, folds=5, model="boosting"):
    """How well can a classifier tell real from simulated background?

    A small classifier is trained on per-patch pixel statistics (median,
    MAD, 10/90 % percentiles, standard deviation, roughness and colour per
    channel) of the four 16x16 corner patches of every image and scored by
    cross-validation, with the patches of one image kept in one fold.

    Parameters
    ----------
    real_X, sim_X : array_like, shape (n, 64, 64, 3), uint8
    seed : int
        Seed of the folds, the classifier and the subsample of the larger set.
    folds : int
        Cross-validation folds.
    model : {"boosting", "logistic"}
        Gradient-boosted trees (depth 2) or a standardised logistic
        regression.

    Returns
    -------
    dict
        ``auc`` (0.5 = indistinguishable, 1 = trivially separable), its
        standard deviation over folds ``auc_std``, and the numbers of real
        and simulated images used.
    """
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    real_X, sim_X = np.asarray(real_X), np.asarray(sim_X)
    # Balance the two sets so the AUC is not driven by class priors.
    m = min(len(real_X), len(sim_X))
    real_X = real_X[rng.permutation(len(real_X))[:m]]
    sim_X = sim_X[rng.permutation(len(sim_X))[:m]]
    fr, fs = _patch_features(real_X), _patch_features(sim_X)
    F = np.concatenate([fr, fs])
    y = np.r_[np.zeros(len(fr)), np.ones(len(fs))]
    groups = np.r_[np.repeat(np.arange(m), 4), np.repeat(np.arange(m, 2 * m), 4)]
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    aucs = []
    for tr, te in cv.split(F, y, groups):
        if model == "logistic":
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        elif model == "boosting":
            clf = GradientBoostingClassifier(n_estimators=100, max_depth=2, learning_rate=0.1,
                                             subsample=0.8, random_state=seed)
        else:
            raise ValueError(f"unknown model {model!r}")
        clf.fit(F[tr], y[tr])
        aucs.append(roc_auc_score(y[te], clf.predict_proba(F[te])[:, 1]))
    return {"auc": float(np.mean(aucs)), "auc_std": float(np.std(aucs)),
            "n_real": int(m), "n_sim": int(m), "model": model}


#: Classifiers :func:`compare_with_simulation` runs :func:`discriminator_test` with.
DISCRIMINATORS = ("logistic", "boosting")
#: Files :func:`compare_with_simulation` writes into its output folder.
COMPARISON_TABLE = "calibration.ecsv"
COMPARISON_SHEET = "real_vs_simulated.png"


@dataclass(frozen=True)
class SimulationComparison:
    """What :func:`compare_with_simulation` found.

    Attributes
    ----------
    table : `~astropy.table.Table`
        From :func:`compare_real_vs_simulated`.
    discriminators : dict
        Classifier name → the result of :func:`discriminator_test`.
    n_simulated : int
        Simulated cutouts compared.
    written : list of pathlib.Path
        Files written (none without an output folder).
    """

    table: Table
    discriminators: dict
    n_simulated: int
    written: list


def compare_with_simulation(real_X, n_simulated, seed=0, randomize=False, resample="bilinear",
                            output_dir=None, depth=1.0):
    """Simulate DES cutouts and compare them with real ones, by statistics and by classifiers.

    Parameters
    ----------
    real_X : array_like, shape (n, 64, 64, 3), uint8
        Real model inputs.
    n_simulated : int
        Simulated cutouts to draw.
    seed : int
        Seed of the simulated sky and of the classifiers' folds.
    randomize : bool
        Draw the simulated sky with domain randomisation.
    resample : str
        How simulated 256 px cutouts become 64 px (see
        :func:`~lsbg_classify.simulation.training_set.make_training_set`).
    output_dir : path-like, optional
        Folder (made if missing) for :data:`COMPARISON_TABLE` (ECSV) and
        :data:`COMPARISON_SHEET` (PNG).
    depth : float
        Sky noise of the simulated cutouts relative to the DES DR1 depth
        (0.6 for Legacy Surveys DR9 cutouts; see
        :func:`~lsbg_classify.simulation.render.render_bands`).

    Returns
    -------
    SimulationComparison
    """
    from ..simulation.training_set import make_training_set

    sim, _ = make_training_set(n_simulated, survey="des", seed=seed, randomize=randomize,
                               resample=resample, depth=depth)
    table = compare_real_vs_simulated(real_X, sim)
    discriminators = {name: discriminator_test(real_X, sim, seed=seed, model=name)
                      for name in DISCRIMINATORS}
    written = []
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_catalog(table, out / COMPARISON_TABLE, overwrite=True)
        real_vs_simulated_sheet(real_X, sim, out / COMPARISON_SHEET)
        written = [out / COMPARISON_TABLE, out / COMPARISON_SHEET]
    return SimulationComparison(table, discriminators, len(sim), written)
