"""Reading candidate catalogs: formats, unit spellings, VOTable and Parquet round trips."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Column, MaskedColumn, Table

__all__ = ["CatalogError", "RA_NAMES", "DEC_NAMES", "OUTPUT_COLUMNS", "OUTPUT_UCDS",
           "PROVENANCE_KEY", "FORMATS", "read_catalog", "format_from_path"]

class CatalogError(ValueError):
    """A catalog cannot be read, understood or written.

    The message names the file or the column and, for bad values, the first
    offending rows (numbered from 0).
    """


#: Column names recognised as right ascension (compared case-insensitively).
RA_NAMES = (
    "ra", "raj2000", "ra_j2000", "_raj2000", "ra2000", "alpha_j2000", "alphawin_j2000",
    "ra_deg", "radeg", "ra_icrs", "coord_ra", "ramean", "target_ra", "right_ascension",
)
#: Column names recognised as declination (compared case-insensitively).
DEC_NAMES = (
    "dec", "decl", "dej2000", "decj2000", "dec_j2000", "de_j2000", "_dej2000", "dec2000",
    "de2000", "delta_j2000", "deltawin_j2000", "dec_deg", "decdeg", "dedeg", "de_icrs",
    "dec_icrs", "coord_dec", "decmean", "target_dec", "declination",
)

#: Result columns added by :func:`add_result_columns` with the default prefix.
OUTPUT_COLUMNS = ("lsbg_prob", "lsbg_class", "lsbg_status")

#: IVOA UCDs of the result columns, in the order of :data:`OUTPUT_COLUMNS`
#: (stored as ``column.meta["ucd"]``; VOTable FIELD ``ucd``, FITS ``TUCDn``).
OUTPUT_UCDS = ("stat.probability", "meta.code.class", "meta.code.status")

#: Key of ``table.meta`` holding the run's provenance (a flat dict).
PROVENANCE_KEY = "LSBG_CLASSIFY"

#: Table formats by file-name ending (longest endings first).
FORMATS = {
    ".fits.gz": "fits", ".fit.gz": "fits", ".fits": "fits", ".fit": "fits", ".fts": "fits",
    ".csv": "ascii.csv", ".ecsv": "ascii.ecsv", ".parquet": "parquet", ".pq": "parquet",
    ".vot": "votable", ".votable": "votable", ".xml": "votable",
    ".hdf5": "hdf5", ".h5": "hdf5",
}
_READ_ONLY_FORMATS = {".txt": "ascii", ".dat": "ascii", ".tsv": "ascii.tab"}
_FORMAT_ALIASES = {"csv": "ascii.csv", "ecsv": "ascii.ecsv", "fit": "fits", "vot": "votable",
                   "xml": "votable", "h5": "hdf5", "pq": "parquet"}
MAX_SHOWN = 5

# Unit spellings found in catalogs that astropy does not parse (lower case).
UNIT_ALIASES = {
    "degree": u.deg, "degrees": u.deg, "decimal degrees": u.deg, "decdeg": u.deg,
    "d:m:s": u.deg, '"d:m:s"': u.deg, "dms": u.deg, "radian": u.rad, "radians": u.rad,
    "h:m:s": u.hourangle, '"h:m:s"': u.hourangle, "hms": u.hourangle, "hours": u.hourangle,
    "hr": u.hourangle,
}


# --------------------------------------------------------------------------- reading


def one_line(exc):
    """First line of an exception's message, for one-line error messages.

    astropy's messages can run to dozens of lines (the table of every format
    it knows when it cannot identify a file); the command line promises a
    one-line error, and the first line says what went wrong.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] + (" [...]" if len(lines) > 1 else "")


def normalise_format(fmt):
    fmt = str(fmt).lower()
    return _FORMAT_ALIASES.get(fmt, fmt)


def format_from_path(path, reading=False):
    """Table format implied by a file name, or None if the ending is unknown.

    Parameters
    ----------
    path : str or path-like
        File name; only its ending matters (``.fits``, ``.fits.gz``, ``.csv``,
        ``.ecsv``, ``.parquet``, ``.vot``/``.votable``/``.xml``, ``.hdf5``/``.h5``).
    reading : bool
        Also accept endings astropy can only guess at (``.txt``, ``.dat``,
        ``.tsv``).

    Returns
    -------
    str or None
        An astropy unified-I/O format name.
    """
    name = Path(path).name.lower()
    table = {**FORMATS, **_READ_ONLY_FORMATS} if reading else FORMATS
    for ending in sorted(table, key=len, reverse=True):
        if name.endswith(ending):
            return table[ending]
    return None


def read_catalog(path, format=None, **kwargs):
    """Read a candidate catalog.

    Parameters
    ----------
    path : str or path-like
        The catalog file.
    format : str, optional
        astropy format name (``"fits"``, ``"csv"``, ``"ecsv"``, ``"parquet"``,
        ``"votable"``, ``"hdf5"``, ``"ascii..."``).  By default taken from the
        file name, else left to astropy to identify.
    **kwargs
        Passed to `astropy.table.Table.read` (e.g. ``hdu=2``).

    Returns
    -------
    `~astropy.table.Table`
        The table.  Provenance written to FITS headers by :func:`write_catalog`
        is gathered back into ``meta["LSBG_CLASSIFY"]``.

    Raises
    ------
    CatalogError
        The file is missing, not a file, or cannot be read in that format.
    """
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"catalog file not found: {path}")
    if not path.is_file():
        raise CatalogError(f"catalog path is not a file: {path}")
    fmt = normalise_format(format) if format else format_from_path(path, reading=True)
    how = f" as {fmt}" if fmt else ""
    # A damaged file makes the readers warn before they fail (astropy.io.fits:
    # "Header size is not multiple of 2880 ... the file is corrupted"), which
    # would print several lines ahead of the one-line error.  Hold the
    # warnings back and pass them on only if the file was read after all.
    if fmt == "parquet":
        require_format_libraries(fmt, f"read {path}")
    with warnings.catch_warnings(record=True) as caught:
        try:
            if fmt == "votable":
                table = _read_votable(path, **kwargs)
            else:
                table = Table.read(path, format=fmt, **kwargs)
        except Exception as exc:
            hint = "" if fmt else "; pass format= (e.g. 'fits', 'csv', 'ecsv', 'parquet', 'votable')"
            raise CatalogError(f"cannot read catalog {path}{how}: {one_line(exc)}{hint}") from exc
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if not isinstance(table, Table):  # e.g. a reader handing back a list of tables
        raise CatalogError(f"cannot read catalog {path}{how}: got {type(table).__name__}")
    if fmt == "parquet":
        _restore_parquet_nulls(table, path)
    _fits_column_cards_to_columns(table)
    _gather_provenance(table.meta)
    _bytes_to_str(table)
    _strip_bom(table)
    return table


def _strip_bom(table):
    """Drop a UTF-8 byte-order mark that a text reader left on the first column name."""
    if table.colnames and table.colnames[0].startswith("\ufeff"):
        table.rename_column(table.colnames[0], table.colnames[0].lstrip("\ufeff"))


def _bytes_to_str(table):
    """Turn ASCII byte-string columns (as FITS and HDF5 give) into str columns."""
    for name in table.colnames:
        col = table[name]
        if isinstance(col, Column) and col.dtype.kind == "S":
            with contextlib.suppress(UnicodeDecodeError):
                table.replace_column(name, col.__class__(col, dtype="U"))


def _read_votable(path, table_id=None, use_names_over_ids=False, **kwargs):
    """Read a VOTable, with its PARAMs in ``meta`` (see :func:`_write_votable`)."""
    from astropy.io.votable import parse

    vot = parse(str(path), **kwargs)
    tables = list(vot.iter_tables())
    if table_id is None and len(tables) > 1:
        raise ValueError(f"{len(tables)} tables in the file; pass table_id= (an index or ID)")
    if not tables:
        raise ValueError("no table in the file")
    if isinstance(table_id, str):
        element = vot.get_table_by_id(table_id)
    else:
        element = tables[table_id or 0]
    table = element.to_table(use_names_over_ids=use_names_over_ids)
    head = PROVENANCE_KEY + "."
    for param in element.params:
        value = param.value.tolist() if isinstance(param.value, np.ndarray) else param.value
        if param.name.startswith(head):
            table.meta.setdefault(PROVENANCE_KEY, {})[param.name[len(head):]] = value
        else:
            table.meta[param.name] = value
    return table


def _gather_provenance(meta):
    """Gather provenance spread over ``meta`` keys back into one dict.

    Undoes :func:`_fits_ready` (``LSBG_CLASSIFY KEY`` header cards) and
    :func:`_dotted_provenance` (``LSBG_CLASSIFY.key`` entries of ECSV).
    """
    if isinstance(meta.get(PROVENANCE_KEY), Mapping):
        return
    gathered = {}
    for key in [k for k in meta if isinstance(k, str)]:
        head = key[:len(PROVENANCE_KEY) + 1]
        if head.upper() == PROVENANCE_KEY + " ":
            gathered[key[len(head):].lower()] = meta.pop(key)
        elif head == PROVENANCE_KEY + ".":
            gathered[key[len(head):]] = meta.pop(key)
    if gathered:
        meta[PROVENANCE_KEY] = gathered


#: What a format needs beyond the plain install, and the extra that brings it.
FORMAT_LIBRARIES = {"parquet": (("pyarrow", "pandas"), "parquet")}


def require_format_libraries(fmt, doing):
    """Raise a :class:`CatalogError` naming the extra if ``fmt`` needs libraries not installed.

    astropy reads and writes Parquet through pyarrow and pandas, which are not
    part of the plain install (together about 250 MB).
    """
    needs, extra = FORMAT_LIBRARIES.get(fmt, ((), None))
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        raise CatalogError(
            f"cannot {doing}: {fmt} catalogs need {' and '.join(missing)}; install them with "
            f'pip install "lsbg-classify[{extra}]"')


def _restore_parquet_nulls(table, path):
    """Mask the Arrow nulls of ``path`` in ``table`` as read by astropy.

    astropy's Parquet reader turns nulls into NaN (and integers into floats)
    or into the text ``"None"``; read the columns that hold nulls again with
    pyarrow and rebuild them as masked columns of the file's type.
    """
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    nulls = set()
    for group in range(meta.num_row_groups):
        for i in range(meta.num_columns):
            chunk = meta.row_group(group).column(i)
            stats = chunk.statistics
            if stats is None or not stats.has_null_count or stats.null_count:
                nulls.add(chunk.path_in_schema)
    names = [n for n in table.colnames if n in nulls and isinstance(table[n], Column)]
    if not names:
        return
    arrow = pq.read_table(path, columns=names)
    for name in names:
        table.replace_column(name, _masked_from_arrow(arrow[name], table[name]))


def _masked_from_arrow(chunked, like):
    """MaskedColumn from an Arrow column, with the attributes of ``like``."""
    import pyarrow as pa

    mask = chunked.is_null().to_numpy(zero_copy_only=False)
    kind = chunked.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        data, dtype = chunked.fill_null("").to_numpy(zero_copy_only=False), like.dtype
        dtype = dtype if dtype.kind == "U" else str
    elif pa.types.is_boolean(kind):
        data, dtype = chunked.fill_null(False).to_numpy(zero_copy_only=False), bool
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        data = chunked.fill_null(pa.scalar(0, type=kind)).to_numpy(zero_copy_only=False)
        dtype = data.dtype
    else:
        return like
    return MaskedColumn(np.asarray(data).astype(dtype), name=like.info.name, mask=mask,
                        unit=like.info.unit, description=like.info.description,
                        format=like.info.format, meta=like.info.meta)


_FITS_COLUMN_CARDS = re.compile(r"(TCOMM|TUCD)([0-9]+)")


def _fits_column_cards_to_columns(table):
    """Move ``TCOMMn``/``TUCDn`` cards from ``meta`` onto their columns.

    astropy keeps header keywords it does not know as ``meta`` entries;
    these describe columns (see :func:`_describe_fits_columns`), so they
    belong to the columns and must not be written back as table keywords.
    ``LONGSTRN`` only declares the long-string convention of the file.
    """
    table.meta.pop("LONGSTRN", None)
    names = table.colnames
    # Mixin columns (SkyCoord, Time) span several FITS columns: then card
    # numbers do not map onto table columns, and astropy's own serialized
    # column block has already restored descriptions and UCDs.
    plain = all(isinstance(table[n], Column) for n in names)
    for key in [k for k in table.meta if isinstance(k, str)]:
        match = _FITS_COLUMN_CARDS.fullmatch(key.upper())
        if match is None:
            continue
        value = table.meta.pop(key)
        index = int(match.group(2)) - 1
        if not plain or not 0 <= index < len(names):
            continue
        info = table[names[index]].info
        if match.group(1) == "TCOMM" and not info.description:
            info.description = value
        elif match.group(1) == "TUCD" and "ucd" not in (info.meta or {}):
            info.meta = {**(info.meta or {}), "ucd": value}
