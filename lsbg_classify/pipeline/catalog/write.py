"""Writing scored catalogs: per-format preparation, provenance and an atomic replace."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError, VerifyWarning
from astropy.table import MaskedColumn
from astropy.utils.exceptions import AstropyUserWarning

from ...atomic import atomic_path
from .columns import flat_provenance
from .read import (
    FORMATS,
    PROVENANCE_KEY,
    CatalogError,
    format_from_path,
    normalise_format,
    one_line,
    require_format_libraries,
)

__all__ = ["write_catalog", "same_file"]

def same_file(a, b):
    """Whether two paths name the same file (following links; False if either is missing).

    Paths that do not exist yet are compared after resolving them, so
    ``same_file("cat.fits", "./cat.fits")`` is True even before writing.
    """
    a, b = Path(a), Path(b)
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _fits_ready(table):
    """Shallow copy for FITS: int8 as int16 (astropy writes int8 as L), provenance as cards."""
    out = _upcast_int8(table)
    prov = out.meta.pop(PROVENANCE_KEY, None)
    if isinstance(prov, Mapping):
        for key, value in flat_provenance(prov).items():
            card_key = f"{PROVENANCE_KEY} {key.upper()}"
            if isinstance(value, str):
                value = _fits_text(value)
            try:
                fits.Card(card_key, value).image  # noqa: B018  (raises if it cannot be a card)
            except (ValueError, VerifyError):
                value = str(value)
            out.meta[card_key] = value
    elif prov is not None:
        out.meta[PROVENANCE_KEY] = prov
    return out


def _upcast_int8(table):
    out = table.copy(copy_data=False)
    out.meta = dict(table.meta)
    for name in out.colnames:
        col = out[name]
        if getattr(col, "dtype", None) is not None and col.dtype == np.int8:
            new = col.astype(np.int16)
            if isinstance(col, MaskedColumn):
                new.fill_value = col.fill_value
            out[name] = new
    return out


def _dotted_provenance(prov):
    """The provenance dict as flat ``LSBG_CLASSIFY.<key>`` entries."""
    return {f"{PROVENANCE_KEY}.{k}": v for k, v in flat_provenance(prov).items()}


def _ecsv_ready(table):
    """Shallow copy for ECSV: provenance as flat ``LSBG_CLASSIFY.<key>`` header keys.

    A nested mapping would be one opaque YAML entry to other ECSV readers
    and to anyone reading the header; flat keys match the VOTable PARAMs.
    """
    prov = table.meta.get(PROVENANCE_KEY)
    if not isinstance(prov, Mapping):
        return table
    out = table.copy(copy_data=False)
    out.meta = {}
    for key, value in table.meta.items():
        out.meta.update(_dotted_provenance(value) if key == PROVENANCE_KEY else {key: value})
    return out


def _parquet_ready(table):
    """Shallow copy for Parquet: masked values become Arrow nulls.

    astropy's default writes each mask as an extra ``<name>.mask`` column
    with the data under it, which pyarrow, pandas and TOPCAT show as
    ordinary values (a masked ``r_eff`` read back as 0.0).
    """
    out = table.copy(copy_data=False)
    for col in out.itercols():
        if isinstance(col, MaskedColumn):
            col.info.serialize_method = {**col.info.serialize_method, "parquet": "null_value"}
    return out


_VOTABLE_TYPES = ((bool, "boolean", None), (int, "long", None), (float, "double", None),
                  (str, "unicodeChar", "*"))
_VOTABLE_OWN_META = ("ID", "name", "ref", "ucd", "utype", "description")


def _votable_params(meta):
    """(name, value) pairs of ``meta`` for VOTable PARAMs; warn about what cannot go."""
    pairs = []
    for key, value in meta.items():
        if key == PROVENANCE_KEY and isinstance(value, Mapping):
            pairs += list(_dotted_provenance(value).items())
        elif key in _VOTABLE_OWN_META:
            continue
        elif isinstance(value, (str, bool, int, float, np.generic)):
            pairs.append((str(key), value.item() if isinstance(value, np.generic) else value))
        else:
            warnings.warn(f"meta entry {key!r} of type {type(value).__name__} cannot be "
                          "stored in a VOTable - skipping", AstropyUserWarning, stacklevel=4)
    return pairs


def _write_votable(table, path):
    """Write a VOTable with the scalar ``meta`` entries as typed PARAMs."""
    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Param

    vot = from_table(table)
    element = vot.get_first_table()
    for name, value in _votable_params(table.meta):
        datatype, arraysize = next((d, a) for t, d, a in _VOTABLE_TYPES if isinstance(value, t))
        ident = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        ident = ident if re.match(r"[A-Za-z_]", ident) else "_" + ident
        element.params.append(Param(vot, ID=ident, name=name, value=value,
                                    datatype=datatype, arraysize=arraysize))
    vot.to_xml(str(path))


def _fits_text(value):
    """ASCII text for a FITS card (other characters as backslash escapes)."""
    return str(value).encode("ascii", "backslashreplace").decode("ascii")


def _describe_fits_columns(header, table):
    """Add ``TCOMMn`` (description) and ``TUCDn`` (UCD) cards for the columns of ``table``.

    These are the conventions TOPCAT and STILTS read; astropy alone keeps
    descriptions only in its serialized-columns COMMENT block.  Adds
    ``LONGSTRN`` when a card needs the OGIP long-string convention
    (``CONTINUE`` cards), as fitsverify expects.
    """
    for i in range(1, header.get("TFIELDS", 0) + 1):
        name = header.get(f"TTYPE{i}")
        if name not in table.colnames or not hasattr(table[name], "info"):
            continue
        info = table[name].info
        ucd = (info.meta or {}).get("ucd")
        after = f"TFORM{i}"
        for key, value in ((f"TCOMM{i}", info.description), (f"TUCD{i}", ucd)):
            if value:
                header.set(key, _fits_text(value), after=after)
                after = key
    long_cards = [n for n, card in enumerate(header.cards) if len(card.image) > fits.Card.length]
    if long_cards and "LONGSTRN" not in header:
        header.insert(long_cards[0], ("LONGSTRN", "OGIP 1.0",
                                      "The OGIP long string convention may be used"))


def _write_fits(table, path):
    """Write a FITS binary table with column descriptions and UCDs as header cards."""
    hdu = fits.table_to_hdu(_fits_ready(table), character_as_bytes=True)
    _describe_fits_columns(hdu.header, table)
    hdu.writeto(path, overwrite=True)


def _write(table, tmp, fmt):
    """Write ``table`` to ``tmp`` in ``fmt`` with the per-format adjustments."""
    if fmt == "fits":
        _write_fits(table, tmp)
    elif fmt == "votable":
        _write_votable(_upcast_int8(table), tmp)
    elif fmt == "hdf5":
        table.write(tmp, format=fmt, overwrite=True, path="data", serialize_meta=True)
    elif fmt == "ascii.ecsv":
        _ecsv_ready(table).write(tmp, format=fmt, overwrite=True)
    elif fmt == "parquet":
        _parquet_ready(table).write(tmp, format=fmt, overwrite=True)
    else:
        table.write(tmp, format=fmt, overwrite=True)


def _check_destination(path, overwrite):
    parent = path.parent
    if not parent.is_dir():
        raise CatalogError(f"cannot write {path}: directory {parent} does not exist")
    if path.is_dir():
        raise CatalogError(f"cannot write {path}: it is a directory")
    if path.exists() and not overwrite:
        raise CatalogError(f"{path} already exists; pass overwrite=True to replace it")


def write_catalog(table, path, format=None, overwrite=False):
    """Write a table atomically.

    The table is written to a temporary file next to ``path``, flushed to
    disk and renamed over ``path``, so readers see either the old file or the
    complete new one, never a partial file.  On any error the temporary file
    is removed and an existing ``path`` is left untouched.

    Parameters
    ----------
    table : `~astropy.table.Table`
        The table to write (not modified).
    path : str or path-like
        Destination.  Its ending picks the format unless ``format`` is given:
        ``.fits``/``.fit``/``.fits.gz``, ``.csv``, ``.ecsv``, ``.parquet``,
        ``.vot``/``.votable``/``.xml``, ``.hdf5``/``.h5``.
    format : str, optional
        astropy format name, overriding the file name.
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    CatalogError
        ``path`` exists and ``overwrite`` is False, its directory is missing,
        the format is unknown, or the writer fails (e.g. a column type the
        format cannot hold).

    Notes
    -----
    CSV keeps values and masks (as empty cells) but no units, descriptions or
    ``meta``; prefer ECSV, FITS or Parquet.  FITS and VOTable get int8
    columns as int16 (astropy cannot write int8 to them faithfully).

    Masked values are nulls in every format that has them: Arrow nulls in
    Parquet (native types, no ``<name>.mask`` columns; astropy's column
    metadata is kept in the schema's ``table_meta_yaml``), ``TNULLn`` or
    NaN in FITS, empty cells in CSV and ECSV, empty cells in VOTable.
    Column descriptions and UCDs (``column.meta["ucd"]``) go to
    ``TCOMMn``/``TUCDn`` cards in FITS (with ``LONGSTRN`` when a card is
    continued), to FIELD ``DESCRIPTION``/``ucd`` in VOTable and to the
    header of ECSV and Parquet.

    The provenance ``meta["LSBG_CLASSIFY"]`` becomes ``HIERARCH
    LSBG_CLASSIFY <KEY>`` header cards in FITS, typed PARAMs named
    ``LSBG_CLASSIFY.<key>`` in VOTable (other scalar ``meta`` entries become
    PARAMs too) and flat ``LSBG_CLASSIFY.<key>`` header keys in ECSV;
    :func:`read_catalog` gathers them back.  VOTable cannot hold mixin
    columns (SkyCoord, Time).  HDF5 tables go to the path ``data`` of the
    file.
    """
    path = Path(path)
    fmt = normalise_format(format) if format else format_from_path(path)
    if fmt is None:
        raise CatalogError(
            f"cannot tell the table format of {path} from its name; use one of "
            f"{', '.join(FORMATS)} or pass format="
        )
    _check_destination(path, overwrite)
    require_format_libraries(fmt, f"write {path}")
    suffix = ".gz" if fmt == "fits" and path.name.lower().endswith(".gz") else ""
    try:
        with atomic_path(path, suffix=suffix) as tmp:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*HIERARCH card will be created",
                                        category=VerifyWarning)
                _write(table, tmp, fmt)
    except Exception as exc:
        raise CatalogError(f"cannot write {path} as {fmt}: {one_line(exc)}") from exc
