"""Grad-CAM saliency maps: which part of a cutout drove the LSBG score.

Grad-CAM (Selvaraju et al. 2017, ICCV, "Grad-CAM: Visual Explanations from
Deep Networks via Gradient-based Localization") weights each channel of a
convolutional feature map by the spatial mean of the score's gradient with
respect to it, sums the weighted channels and keeps the positive part: the
regions whose features raise the score.  Here the score is the logit of
the LSBG probability, so that confident (saturated) predictions still have
gradients.  This module sits beside the pipeline; it is not imported by it.
"""

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.utils.exceptions import AstropyUserWarning

from .. import status
from ..figures import new_figure, save_figure
from ..pipeline.catalog.columns import extract_positions
from ..pipeline.catalog.read import CatalogError
from ..pipeline.model import (
    as_model_inputs,
    import_keras,
    import_tensorflow,
    keras_network_of,
    load_model,
)
from ..pipeline.options import DEFAULT_WORKERS
from ..pipeline.scoring import fetch_images

__all__ = ["last_conv_layer", "gradcam", "overlay", "save_gradcam_png", "explain_rows",
           "ExplainedRows", "FIGURE_FORMATS"]

#: Endings of the figures :func:`explain_rows` writes.
FIGURE_FORMATS = (".png", ".pdf", ".svg")

# Images per gradient computation: the tape keeps every activation of the
# batch, about 1 MB per DeepShadows image.
GRADCAM_BATCH = 32
# Heat-map overlay: colour map and opacity over the cutout.
OVERLAY_CMAP = "jet"
OVERLAY_ALPHA = 0.45
# Cutout + overlay pairs per row of the figure.
PAIRS_PER_ROW = 3


def last_conv_layer(network):
    """The last 2-d convolution layer of a Keras network (the Grad-CAM default).

    Parameters
    ----------
    network : keras.Model

    Returns
    -------
    keras.layers.Conv2D

    Raises
    ------
    ValueError
        The network has no ``Conv2D`` layer.
    """
    keras = import_keras()
    convs = [layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise ValueError(f"network {network.name!r} has no Conv2D layer for Grad-CAM")
    return convs[-1]


def _is_sigmoid_dense(layer):
    keras = import_keras()
    return (isinstance(layer, keras.layers.Dense)
            and getattr(layer.activation, "__name__", "") == "sigmoid")


def _score_model(network, layer):
    """Sub-model: images → (feature map of ``layer``, what the score is made from).

    When the network ends in a sigmoid ``Dense`` layer, the second output is
    that layer's input, from which the logit is computed exactly; otherwise
    it is the network's output probability.
    """
    keras = import_keras()
    head = network.layers[-1]
    target = head.input if _is_sigmoid_dense(head) else network.outputs[0]
    inputs = network.inputs[0] if len(network.inputs) == 1 else network.inputs
    return keras.Model(inputs, [layer.output, target]), head if _is_sigmoid_dense(head) else None


def gradcam(model, images, layer=None, batch_size=GRADCAM_BATCH):
    """Grad-CAM maps of the LSBG score, at the input's resolution.

    For feature maps :math:`A^k` of ``layer`` and the score :math:`y`
    (the logit of the LSBG probability), the map is
    :math:`\\mathrm{ReLU}(\\sum_k \\alpha_k A^k)` with
    :math:`\\alpha_k` the spatial mean of :math:`\\partial y / \\partial A^k`,
    upsampled bilinearly to the input size and divided by its maximum.

    Parameters
    ----------
    model : LSBGModel or keras.Model
        A network with one output, the LSBG probability.
    images : array_like, shape (n, 64, 64, 3)
        Model inputs in [0, 1] (uint8 arrays are divided by 255).
    layer : str, optional
        Name of the layer whose feature map is used; default the last
        ``Conv2D`` (16×16 pixels in DeepShadows, so each map pixel covers
        4×4 input pixels).
    batch_size : int
        Images per gradient computation.

    Returns
    -------
    numpy.ndarray, shape (n, 64, 64), float32
        Maps in [0, 1], brightest where the evidence for "LSBG" is
        strongest; all zero where nothing in the feature map raises the
        score.
    """
    tf = import_tensorflow()
    network = keras_network_of(model)
    images = as_model_inputs(images, network)
    conv = last_conv_layer(network) if layer is None else network.get_layer(layer)
    if len(conv.output.shape) != 4:
        raise ValueError(f"layer {conv.name!r} has output shape {conv.output.shape}; Grad-CAM "
                         "needs a (batch, height, width, channels) feature map")
    sub, head = _score_model(network, conv)
    size = images.shape[1:3]
    maps = np.zeros(images.shape[:3], np.float32)
    for start in range(0, len(images), batch_size):
        batch = tf.constant(images[start : start + batch_size])
        with tf.GradientTape() as tape:
            features, target = sub(batch, training=False)
            score = (tf.matmul(target, tf.convert_to_tensor(head.kernel))
                     + tf.convert_to_tensor(head.bias)) if head is not None else target
            # Each image's score depends on its own features only, so the
            # gradient of the sum holds every image's gradient.
            total = tf.reduce_sum(score)
        grads = tape.gradient(total, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
        cam = tf.image.resize(cam, size, method="bilinear")[..., 0].numpy()
        peak = cam.max(axis=(1, 2), keepdims=True)
        maps[start : start + len(cam)] = np.divide(cam, peak, out=np.zeros_like(cam),
                                                   where=peak > 0)
    return maps


def overlay(images, maps, alpha=OVERLAY_ALPHA, cmap=OVERLAY_CMAP):
    """Heat maps blended over their cutouts, as RGB images.

    Parameters
    ----------
    images : array_like, shape (n, ny, nx, 3)
        Cutouts in [0, 1] or uint8.
    maps : array_like, shape (n, ny, nx)
        Saliency maps in [0, 1].
    alpha : float
        Opacity of the heat map.
    cmap : str
        Matplotlib colour map of the heat map.

    Returns
    -------
    numpy.ndarray, shape (n, ny, nx, 3), float32 in [0, 1]
    """
    from matplotlib import colormaps

    images = np.asarray(images)
    images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
    maps = np.asarray(maps)
    if images.shape[:3] != maps.shape or images.shape[3:] != (3,):
        raise ValueError(f"images of shape {images.shape} and maps of shape {maps.shape} "
                         "do not match; expected (n, ny, nx, 3) and (n, ny, nx)")
    heat = colormaps[cmap](np.clip(maps, 0, 1))[..., :3]
    return ((1 - alpha) * np.clip(images, 0, 1) + alpha * heat).astype(np.float32)


def save_gradcam_png(images, maps, path, captions=None, title=None, pairs_per_row=PAIRS_PER_ROW):
    """Save each cutout beside its Grad-CAM map laid over it.

    Parameters
    ----------
    images : array_like, shape (n, ny, nx, 3)
        Cutouts in [0, 1] or uint8.
    maps : array_like, shape (n, ny, nx)
        Saliency maps in [0, 1] (from :func:`gradcam`).
    path : path-like
        Figure to write; the format comes from the ending (``.png``,
        ``.pdf``, ``.svg``).
    captions : sequence of str, optional
        Text under each pair (e.g. row, position and probability).
    title : str, optional
        Figure title.
    pairs_per_row : int
        Cutout + map pairs per row of the figure.
    """
    blended = overlay(images, maps)
    plain = np.asarray(images)
    plain = plain.astype(np.float32) / 255.0 if plain.dtype == np.uint8 else plain
    if captions is not None and len(captions) != len(blended):
        raise ValueError(f"{len(captions)} captions for {len(blended)} images")
    n = len(blended)
    columns = min(max(n, 1), pairs_per_row)
    rows = max(1, int(np.ceil(n / columns)))
    gap = np.ones((blended.shape[1], max(1, blended.shape[2] // 16), 3), np.float32)
    fig = new_figure((2.9 * columns, 2.0 * rows + (0.3 if title else 0)), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.set_axis_off()
            continue
        ax.imshow(np.hstack([np.clip(plain[k], 0, 1), gap, blended[k]]), interpolation="nearest")
        if captions is not None:
            ax.set_xlabel(captions[k], fontsize=7, labelpad=2)
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=110)


@dataclass(frozen=True)
class ExplainedRows:
    """What :func:`explain_rows` drew.

    Attributes
    ----------
    path : pathlib.Path
        The figure written.
    rows : list of int
        Catalog rows on the figure, in the order asked for.
    skipped : dict
        Catalog row → why it has no map (its status and message).
    """

    path: Path
    rows: list
    skipped: dict = field(default_factory=dict)


def explain_rows(table, rows, path, backend, model, *, ra_col=None, dec_col=None, cache=True,
                 refresh=False, workers=DEFAULT_WORKERS, progress=None, label=None):
    """Fetch the cutouts of some catalog rows and draw their Grad-CAM maps into one figure.

    Parameters
    ----------
    table : `~astropy.table.Table`
        Catalog with positions.
    rows : sequence of int
        Row numbers of ``table``, counted from 0.
    path : path-like
        Figure to write: ``.png``, ``.pdf`` or ``.svg``.
    backend : SurveyBackend
        Where the cutouts come from.
    model : str, path-like or LSBGModel
        ``"des"``, ``"hsc"``, a weights file or a loaded model (Grad-CAM needs
        the Keras network, so the ``train`` extra).
    ra_col, dec_col : str, optional
        Position columns (default: found by name).
    cache, refresh, workers, progress
        As for :func:`~lsbg_classify.pipeline.fetch_images`.
    label : str, optional
        What the rows are of (e.g. the catalog's file name), shown in the
        figure's title after the model's name.

    Returns
    -------
    ExplainedRows

    Raises
    ------
    CatalogError
        A row number is outside the table, or a row has no valid position.
    ValueError
        The figure's ending is not one of :data:`FIGURE_FORMATS`, its folder
        does not exist, or no row has a cutout.
    """
    path = Path(path)
    if path.suffix.lower() not in FIGURE_FORMATS:
        raise ValueError(f"cannot tell the figure format from {path.name!r}; end it in "
                         f"{', '.join(FIGURE_FORMATS)}")
    if not path.parent.is_dir():
        raise ValueError(f"the output directory {path.parent} does not exist")
    rows = [int(r) for r in rows]
    outside = [r for r in rows if not 0 <= r < len(table)]
    if outside:
        raise CatalogError(f"row(s) {', '.join(map(str, outside))} out of range: the catalog has "
                           f"{len(table)} rows, numbered 0 to {len(table) - 1}")
    with warnings.catch_warnings():
        # Invalid rows are reported below by their catalog row numbers.
        warnings.simplefilter("ignore", AstropyUserWarning)
        positions = extract_positions(table[rows], ra_col=ra_col, dec_col=dec_col,
                                      on_invalid="flag")
    invalid = [r for r, ok in zip(rows, positions.valid) if not ok]
    if invalid:
        raise CatalogError(f"row(s) {', '.join(map(str, invalid))} have no valid position")
    model = load_model(model)
    fetched = fetch_images(positions.ra, positions.dec, backend, cache=cache, refresh=refresh,
                           workers=workers, progress=progress)
    ok = fetched.status == status.OK
    skipped = {rows[k]: f"{fetched.status[k]} ({fetched.messages.get(int(k), 'no image')})"
               for k in np.flatnonzero(~ok)}
    if not ok.any():
        first = next(iter(skipped.items()))
        raise ValueError("none of the requested rows has an image to explain (row "
                         f"{first[0]}: {first[1]})")
    images = fetched.images[ok]
    prob = model.predict(images)
    kept = [r for r, good in zip(rows, ok) if good]
    captions = [f"row {r}\nRA {ra:.5f} Dec {dec:+.5f}\np = {p:.3f}"
                for r, ra, dec, p in zip(kept, positions.ra[ok], positions.dec[ok], prob)]
    save_gradcam_png(images, gradcam(model, images), path, captions=captions,
                     title=f"Grad-CAM, {model.name}" + (f": {label}" if label else ""))
    return ExplainedRows(path, kept, skipped)
