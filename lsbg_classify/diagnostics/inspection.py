"""Inspection sheets: the candidates a person should look at first.

A scored catalog (the output of :func:`lsbg_classify.classify_catalog`)
is cut down to three short lists, each written as a PNG contact sheet and as
one self-contained HTML page:

``top``
    The most probable LSBGs.
``uncertain``
    The candidates the model is least sure of: largest ``lsbg_prob_std``
    when the catalog has it (an ensemble or test-time spread), else the
    probability closest to 0.5.
``disagree``
    Where two models (or two runs) give different classes, largest
    probability difference first; only when a second probability column is
    named.

Only rows with status ``ok`` and a finite probability take part.  The HTML
page embeds every cutout as a base64 PNG, so it can be mailed or archived
on its own; its links open the position in the Legacy Surveys viewer.
"""

import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import status
from ..atomic import atomic_write_bytes
from ..figures import contact_sheet, png_data_uri
from ..pipeline.catalog.columns import extract_positions
from ..pipeline.catalog.read import CatalogError
from ..pipeline.options import DEFAULT_THRESHOLD, DEFAULT_WORKERS
from ..pipeline.scoring import fetch_images

__all__ = ["SHEET_KINDS", "DEFAULT_ROWS", "select_rows", "inspection_rows",
           "write_inspection_sheets", "inspect_catalog", "InspectionSheets"]

#: Sheets written by :func:`write_inspection_sheets`, in this order.
SHEET_KINDS = ("top", "uncertain", "disagree")

#: Rows per sheet: six rows of the contact sheet's eight columns.
DEFAULT_ROWS = 48

PROB_COL = "lsbg_prob"
STD_COL = "lsbg_prob_std"
STATUS_COL = "lsbg_status"

# Cutouts are 64 px; shown at twice that on the HTML page, pixels kept sharp.
THUMBNAIL_DISPLAY_PIXELS = 128

SHEET_TITLES = {
    "top": "Most probable LSBGs",
    "uncertain": "Most uncertain candidates",
    "disagree": "Candidates on which the two models disagree",
}


def _probabilities(table, name):
    """A float column with masked values as NaN; a clear error when absent."""
    if name not in table.colnames:
        raise CatalogError(
            f"the scored catalog has no {name!r} column (columns: {', '.join(table.colnames)}); "
            "score it with lsbg-classify classify first, or name the column to use")
    return np.ma.filled(np.ma.asarray(table[name], dtype=np.float64), np.nan)


def _usable(table, prob_col):
    """Rows with status ``ok`` (when the table says) and a finite probability."""
    prob = _probabilities(table, prob_col)
    usable = np.isfinite(prob)
    if STATUS_COL in table.colnames:
        usable &= np.ma.filled(np.ma.asarray(table[STATUS_COL]).astype(str), "") == status.OK
    return usable, prob


def _ordered(rows, key):
    """``rows`` sorted by ``key`` ascending, ties kept in row order."""
    return rows[np.argsort(key, kind="stable")]


def select_rows(table, kind, n=DEFAULT_ROWS, prob_col=PROB_COL, second_prob_col=None,
                threshold=DEFAULT_THRESHOLD):
    """Row indices of one inspection sheet.

    Parameters
    ----------
    table : `~astropy.table.Table`
        Scored catalog with ``prob_col``, optionally ``lsbg_prob_std`` and
        ``lsbg_status``.
    kind : {"top", "uncertain", "disagree"}
        Which sheet (see the module documentation).
    n : int
        Most rows returned; fewer when fewer qualify.
    prob_col : str
        Probability column of the (first) model.
    second_prob_col : str, optional
        Probability column of the second model; required for
        ``"disagree"``.
    threshold : float
        Class threshold for ``"disagree"`` (class 1 where ``p >= threshold``).

    Returns
    -------
    numpy.ndarray of int
        Indices into ``table``, the row to look at first first.

    Raises
    ------
    CatalogError
        A named column is missing.
    ValueError
        Unknown ``kind``, negative ``n``, or ``"disagree"`` without
        ``second_prob_col``.
    """
    if kind not in SHEET_KINDS:
        raise ValueError(f"unknown sheet kind {kind!r}; choose from {', '.join(SHEET_KINDS)}")
    if int(n) < 0:
        raise ValueError(f"n must be at least 0, got {n}")
    usable, prob = _usable(table, prob_col)
    if kind == "top":
        rows = np.flatnonzero(usable)
        order = _ordered(rows, -prob[rows])
    elif kind == "uncertain":
        if STD_COL in table.colnames:
            std = _probabilities(table, STD_COL)
            rows = np.flatnonzero(usable & np.isfinite(std))
            order = _ordered(rows, -std[rows])
        else:
            rows = np.flatnonzero(usable)
            order = _ordered(rows, np.abs(prob[rows] - 0.5))
    else:
        if second_prob_col is None:
            raise ValueError("the 'disagree' sheet needs second_prob_col, the second model's "
                             "probability column")
        second = _probabilities(table, second_prob_col)
        both = usable & np.isfinite(second)
        differ = both & ((prob >= threshold) != (second >= threshold))
        rows = np.flatnonzero(differ)
        order = _ordered(rows, -np.abs(prob[rows] - second[rows]))
    return order[: int(n)]


def inspection_rows(table, n=DEFAULT_ROWS, prob_col=PROB_COL, second_prob_col=None,
                    threshold=DEFAULT_THRESHOLD):
    """Rows of every sheet that applies.

    Parameters are those of :func:`select_rows`.

    Returns
    -------
    dict
        Sheet kind → row indices; ``"disagree"`` only with ``second_prob_col``.
    """
    kinds = SHEET_KINDS if second_prob_col is not None else SHEET_KINDS[:2]
    return {kind: select_rows(table, kind, n, prob_col, second_prob_col, threshold)
            for kind in kinds}


def _image_lookup(images, n_rows):
    """A function row -> image from an array aligned with the table or a dict."""
    if isinstance(images, dict):
        return images.__getitem__
    images = np.asarray(images)
    if images.ndim != 4 or len(images) != n_rows:
        raise ValueError(f"images must be a dict row -> image or an array of shape "
                         f"({n_rows}, ny, nx, 3) aligned with the table, got shape {images.shape}")
    return images.__getitem__


def _as_uint8(image):
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _png_data_uri(image):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_as_uint8(image)).save(buf, format="PNG")
    return png_data_uri(buf.getvalue())


def _fmt(value, digits):
    return "" if not np.isfinite(value) else f"{value:.{digits}f}"


def _html_page(title, subtitle, header, body_rows):
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        ("<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
         f"img{{width:{THUMBNAIL_DISPLAY_PIXELS}px;height:{THUMBNAIL_DISPLAY_PIXELS}px;"
         "image-rendering:pixelated}</style>"),
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>{esc(subtitle)}</p>",
    ]
    if body_rows:
        lines += [f"<table><thead><tr>{head}</tr></thead><tbody>", *body_rows, "</tbody></table>"]
    else:
        lines.append("<p><em>No rows qualify.</em></p>")
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"


def _sheet(kind, rows, table, image_of, ra, dec, prob, std, second, second_col, threshold,
           viewer, out):
    """Write one sheet's PNG and HTML; return their paths."""
    row_status = (np.asarray(table[STATUS_COL]).astype(str) if STATUS_COL in table.colnames
                  else None)
    images = np.stack([_as_uint8(image_of(int(r))) for r in rows]) if len(rows) else \
        np.zeros((0, 64, 64, 3), np.uint8)
    captions = []
    for r in rows:
        p = f"p={prob[r]:.2f}" + (f"/{second[r]:.2f}" if second is not None else "")
        captions.append(f"#{r} {p}\n{ra[r]:.5f} {dec[r]:+.5f}")
    png = out / f"{kind}.png"
    what = (f"p = {PROB_COL if second is None else 'p1/p2 (' + second_col + ')'}; "
            "frame = class (green LSBG, red artifact)")
    contact_sheet(images, png, captions=captions,
                  labels=[int(prob[r] >= threshold) for r in rows],
                  title=f"{SHEET_TITLES[kind]} ({len(rows)}): {what}")

    header = ["cutout", "row", "RA (deg)", "Dec (deg)", "lsbg_prob"]
    if std is not None:
        header.append(STD_COL)
    if second is not None:
        header.append(second_col)
    header += ["status", "viewer"]
    body = []
    for r in rows:
        cells = [f'<img alt="row {r}" src="{_png_data_uri(image_of(int(r)))}">']
        values = [str(r), _fmt(ra[r], 5), _fmt(dec[r], 5), _fmt(prob[r], 3)]
        if std is not None:
            values.append(_fmt(std[r], 3))
        if second is not None:
            values.append(_fmt(second[r], 3))
        values.append("" if row_status is None else row_status[r])
        cells += [html.escape(v) for v in values]
        url = html.escape(viewer.viewer_url(ra[r], dec[r]), quote=True)
        cells.append(f'<a href="{url}" target="_blank" rel="noopener">Legacy Surveys viewer</a>')
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    subtitle = (f"{len(rows)} of {len(table)} catalog rows; class threshold {threshold:g}; "
                f"viewer layer {viewer.survey.legacysurvey_layer}.")
    page = out / f"{kind}.html"
    atomic_write_bytes(page, _html_page(SHEET_TITLES[kind], subtitle, header, body).encode("utf-8"))
    return {"png": png, "html": page}


def write_inspection_sheets(table, images, output_dir, n=DEFAULT_ROWS, second_prob_col=None,
                            survey="des", prob_col=PROB_COL, threshold=DEFAULT_THRESHOLD,
                            ra_col=None, dec_col=None):
    """Write the inspection sheets of a scored catalog.

    Parameters
    ----------
    table : `~astropy.table.Table`
        Scored catalog: sky positions (found as by
        :func:`~lsbg_classify.pipeline.catalog.columns.find_position_columns`), ``prob_col``,
        optionally ``lsbg_prob_std`` and ``lsbg_status``.
    images : array_like or dict
        The cutouts as the model saw them: an array (len(table), 64, 64, 3)
        aligned with the table (as :func:`~lsbg_classify.pipeline.scoring.fetch_images`
        returns), or a dict row index -> image holding at least the rows of
        :func:`inspection_rows`.  Values in [0, 1] or uint8.
    output_dir : path-like
        Created if needed; ``<kind>.png`` and ``<kind>.html`` are written
        there (existing ones replaced).
    n : int
        Rows per sheet.
    second_prob_col : str, optional
        Probability column of a second model; adds the ``disagree`` sheet.
    survey : {"des", "hsc"}
        Picks the viewer layer of the links (``des-dr1`` or ``hsc2``).
    prob_col : str
        Probability column of the first model.
    threshold : float
        Class threshold (frames and the ``disagree`` sheet).
    ra_col, dec_col : str, optional
        Position columns; found by name when omitted.

    Returns
    -------
    dict
        Sheet kind → ``{"png": Path, "html": Path}``.

    Raises
    ------
    CatalogError
        A probability or position column is missing.
    """
    from ..surveys.legacysurvey import LegacySurveyBackend

    selected = inspection_rows(table, n, prob_col, second_prob_col, threshold)
    positions = extract_positions(table, ra_col=ra_col, dec_col=dec_col, on_invalid="flag")
    image_of = _image_lookup(images, len(table))
    prob = _probabilities(table, prob_col)
    std = _probabilities(table, STD_COL) if STD_COL in table.colnames else None
    second = _probabilities(table, second_prob_col) if second_prob_col is not None else None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    # Only its viewer_url is used: no request is ever sent.
    with LegacySurveyBackend(survey) as viewer:
        for kind, rows in selected.items():
            written[kind] = _sheet(kind, rows, table, image_of, positions.ra, positions.dec, prob,
                                   std, second, second_prob_col, threshold, viewer, out)
    return written


@dataclass(frozen=True)
class InspectionSheets:
    """What :func:`inspect_catalog` wrote.

    Attributes
    ----------
    written : dict
        Sheet kind → ``{"png": Path, "html": Path}``.
    rows : dict
        Sheet kind → rows on the sheet.
    missing : int
        Cutouts that could not be fetched (drawn blank).
    """

    written: dict
    rows: dict
    missing: int


def inspect_catalog(table, output_dir, backend, *, n=DEFAULT_ROWS, prob_col=PROB_COL,
                    second_prob_col=None, threshold=DEFAULT_THRESHOLD, survey="des", ra_col=None,
                    dec_col=None, cache=True, refresh=False, workers=DEFAULT_WORKERS,
                    progress=None):
    """Fetch the cutouts of the rows worth a look and write their inspection sheets.

    Only the rows on the sheets are fetched; after ``classify`` they come
    from the cache.

    Parameters
    ----------
    table, output_dir, n, prob_col, second_prob_col, threshold, survey, ra_col, dec_col
        As for :func:`write_inspection_sheets`.
    backend : SurveyBackend
        Where the cutouts come from.
    cache, refresh, workers, progress
        As for :func:`~lsbg_classify.pipeline.fetch_images`.

    Returns
    -------
    InspectionSheets
    """
    selected = inspection_rows(table, n, prob_col, second_prob_col, threshold)
    rows = np.unique(np.concatenate([np.zeros(0, int), *selected.values()])).astype(int)
    positions = extract_positions(table, ra_col=ra_col, dec_col=dec_col, on_invalid="flag")
    fetched = fetch_images(positions.ra[rows], positions.dec[rows], backend, cache=cache,
                           refresh=refresh, workers=workers, progress=progress,
                           valid=positions.valid[rows])
    images = {int(r): fetched.images[i] for i, r in enumerate(rows)}
    written = write_inspection_sheets(table, images, output_dir, n=n,
                                      second_prob_col=second_prob_col, survey=survey,
                                      prob_col=prob_col, threshold=threshold, ra_col=ra_col,
                                      dec_col=dec_col)
    return InspectionSheets(written, {kind: len(r) for kind, r in selected.items()},
                            int(np.sum(fetched.status != status.OK)))
