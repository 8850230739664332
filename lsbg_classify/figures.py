"""Contact sheets: cutouts in a grid with their probabilities, as PNG.

Also the two figure helpers every plotting module shares: a headless
pyplot and PNG bytes as a data URI for self-contained HTML pages.
"""

import base64

import numpy as np

__all__ = ["contact_sheet", "png_data_uri", "pyplot"]

SHEET_COLUMNS = 8
# Height of one caption line at the captions' 7 pt font, inches.
CAPTION_LINE_INCHES = 0.14


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    plt = pyplot()
    images = np.asarray(images)
    n = len(images)
    rows = max(1, int(np.ceil(n / columns)))
    # Captions of several lines ("\n") get room for their extra lines.
    extra_lines = max((str(c).count("\n") for c in captions or ()), default=0)
    height = 1.55 * rows + 0.4 + CAPTION_LINE_INCHES * extra_lines * rows
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, height), squeeze=False)
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
