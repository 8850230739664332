"""Training sets: simulated cutouts turned into model inputs as the paper's pipeline does."""

import math

import numpy as np

from .conditions import survey_info
from .render import render_jpeg

__all__ = ["make_training_set"]

# --------------------------------------------------------------------------
# Training sets


#: Ways of shrinking the 256 px JPEG to the model's 64 px.
#: ``"antialias"`` is the package's own (and the paper's) resize,
#: :func:`lsbg_classify.pipeline.preprocess.resize_uint8` (PIL bicubic, anti-aliased):
#: training uses it, as scoring does.  ``"bilinear"`` (bilinear without
#: anti-aliasing, i.e. a 2x2 average per output pixel) and ``"nearest"``
#: (every 4th pixel) are what simpler resizing code does; calibration
#: compares real cutouts of unknown provenance against them.
RESAMPLE_METHODS = ("antialias", "bilinear", "nearest")

# Mix drawn by ``resample="mixed"``.
_RESAMPLE_MIX = {"antialias": 0.4, "bilinear": 0.4, "nearest": 0.2}


def _decode_to_model(data, method="antialias"):
    from PIL import Image

    from ..pipeline.preprocess import decode_image_uint8, resize_uint8

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
    ra, dec, survey, seed, label, randomize, method, depth = args
    data = render_jpeg(ra, dec, survey, seed=seed, label=label, randomize=randomize, depth=depth)
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


def make_training_set(n, survey="des", seed=0, randomize=True, workers=1, resample=None,
                      depth=1.0):
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
    depth : float
        Multiplies the sky noise (see :func:`render_bands`), e.g. 0.6 to
        compare with Legacy Surveys DR9 cutouts.

    Returns
    -------
    X : numpy.ndarray, shape (n, 64, 64, 3), uint8
        Model inputs scaled to 0-255 (divide by 255 for the model).
    y : numpy.ndarray, shape (n,), int8
        1 = LSBG, 0 = artifact.
    """
    n = int(n)
    info = survey_info(survey)
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
        (float(ra[i]), float(dec[i]), info.name, int(seed), int(y[i]), bool(randomize), str(methods[i]),
         float(depth))
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
