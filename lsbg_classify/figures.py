"""Figures: the helpers every plotting module shares, and cutout sheets.

Figures are bare :class:`matplotlib.figure.Figure` objects
(:func:`new_figure`), drawn with Agg when saved and unknown to pyplot: a
library call never switches the backend of a notebook or script that
imported it, and leaves no open figure behind.  :func:`save_figure` writes
one atomically.  :func:`contact_sheet` lays cutouts out in an annotated
grid; :func:`mosaic_sheet` puts sets of cutouts side by side pixel for
pixel.
"""

import base64
from pathlib import Path

import numpy as np

from .atomic import atomic_path

__all__ = ["new_figure", "save_figure", "contact_sheet", "mosaic_sheet", "png_data_uri"]

SHEET_COLUMNS = 8
# Height of one caption line at the captions' 7 pt font, inches.
CAPTION_LINE_INCHES = 0.14


def new_figure(figsize, **options):
    """A bare figure of ``figsize`` inches; ``options`` go to :class:`~matplotlib.figure.Figure`."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, **options)


def save_figure(fig, path, dpi):
    """Write ``fig`` to ``path`` atomically; the format comes from the ending (default PNG)."""
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix[1:].lower() or "png")


def png_data_uri(png_bytes):
    """A ``data:image/png;base64,...`` URI embedding PNG bytes in an HTML page."""
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")


def contact_sheet(images, path, captions=None, labels=None, columns=SHEET_COLUMNS, title=None):
    """Save cutouts in a grid.

    Parameters
    ----------
    images : array_like, shape (n, ny, nx, 3)
        Images in [0, 1] or uint8.
    path : path-like
        PNG file to write.
    captions : sequence of str, optional
        Text under each image (e.g. ``"p=0.93"``).
    labels : sequence of {0, 1, -1}, optional
        Frame colour: green for 1 (LSBG), red for 0 (artifact), none for -1.
    columns : int
        Images per row.
    title : str, optional
        Figure title.
    """
    images = np.asarray(images)
    n = len(images)
    rows = max(1, int(np.ceil(n / columns)))
    # Captions of several lines ("\n") get room for their extra lines.
    extra_lines = max((str(c).count("\n") for c in captions or ()), default=0)
    height = 1.55 * rows + 0.4 + CAPTION_LINE_INCHES * extra_lines * rows
    fig = new_figure((1.4 * columns, height))
    axes = fig.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.axis("off")
            continue
        ax.imshow(images[k], interpolation="nearest")
        if captions is not None:
            ax.set_xlabel(captions[k], fontsize=7, labelpad=2)
        if labels is not None and labels[k] in (0, 1):
            colour = "tab:green" if labels[k] == 1 else "tab:red"
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(2.5)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def mosaic_sheet(image_sets, path, ncols=10, scale=3, max_rows=5):
    """Write a PNG of image sets one above the other, pixel for pixel.

    Each set fills rows of ``ncols`` cells (a 2-pixel grey gap around every
    image); a white bar separates the sets.  Nothing is resampled except by
    the final nearest-neighbour magnification, so noise textures can be
    compared by eye.

    Parameters
    ----------
    image_sets : sequence of array_like, each shape (n, 64, 64, 3), uint8
    path : str or path-like
        Output PNG.
    ncols : int
        Cutouts per row.
    scale : int
        Nearest-neighbour magnification.
    max_rows : int
        Rows per set at most.

    Returns
    -------
    path
    """
    from PIL import Image

    def grid(X):
        X = np.asarray(X)[: ncols * max_rows]
        nrows = max(1, int(np.ceil(len(X) / ncols)))
        g = np.full((nrows * 66, ncols * 66, 3), 128, dtype=np.uint8)
        for i, x in enumerate(X):
            r, c = divmod(i, ncols)
            g[r * 66 : r * 66 + 64, c * 66 : c * 66 + 64] = x
        return g

    sep_bar = np.full((8, ncols * 66, 3), 255, dtype=np.uint8)
    parts = []
    for k, images in enumerate(image_sets):
        parts += ([sep_bar] if k else []) + [grid(images)]
    img = Image.fromarray(np.concatenate(parts, axis=0))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG")
    return path
