"""Read, validate and write candidate catalogs.

A *candidate catalog* is any table that astropy can read (FITS, CSV, ECSV,
Parquet, VOTable, HDF5) with one sky position per row.  This module

- reads it (:func:`read_catalog`), turning every I/O failure into a
  :class:`CatalogError` that names the file;
- finds the position columns by name (:func:`find_position_columns`);
- turns them into ICRS degrees and checks every row
  (:func:`extract_positions`);
- adds the classifier's results to a copy of the table
  (:func:`add_result_columns`);
- writes the result atomically (:func:`write_catalog`).

Conventions
-----------
Rows are numbered from 0, in table order, in every message.

Positions are returned in degrees (ICRS).  Column units are honoured
(``deg``, ``rad``, ``hourangle``, ``arcsec``, ...).  A numeric column
without a unit is taken to be in **degrees**, also when every RA value is
below 24: this module never guesses hours from the values.  Strings are
parsed as numbers (same unit rule) or as sexagesimal angles with
`~astropy.coordinates.Angle`: RA strings such as ``"10:21:33.2"``,
``"10 21 33.2"`` or ``"10h21m33.2s"`` are **hours**, Dec strings such as
``"-05:12:00"`` or ``"-5d12m"`` are degrees, unless the column's unit says
otherwise or the string carries its own unit letters.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import ICRS, Angle, SkyCoord
from astropy.io import fits
from astropy.io.fits.verify import VerifyError, VerifyWarning
from astropy.table import Column, MaskedColumn, Table
from astropy.utils.exceptions import AstropyUserWarning

from . import status as _status
from .version import __version__

__all__ = [
    "CatalogError",
    "RA_NAMES",
    "DEC_NAMES",
    "OUTPUT_COLUMNS",
    "OUTPUT_UCDS",
    "PROVENANCE_KEY",
    "FORMATS",
    "Positions",
    "read_catalog",
    "find_position_columns",
    "extract_positions",
    "output_column_names",
    "add_result_columns",
    "write_catalog",
    "format_from_path",
    "same_file",
]


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
_MAX_SHOWN = 5

# Unit spellings found in catalogs that astropy does not parse (lower case).
_UNIT_ALIASES = {
    "degree": u.deg, "degrees": u.deg, "decimal degrees": u.deg, "decdeg": u.deg,
    "d:m:s": u.deg, '"d:m:s"': u.deg, "dms": u.deg, "radian": u.rad, "radians": u.rad,
    "h:m:s": u.hourangle, '"h:m:s"': u.hourangle, "hms": u.hourangle, "hours": u.hourangle,
    "hr": u.hourangle,
}


# --------------------------------------------------------------------------- reading


def _one_line(exc):
    """First line of an exception's message, for one-line error messages.

    astropy's messages can run to dozens of lines (the table of every format
    it knows when it cannot identify a file); the command line promises a
    one-line error, and the first line says what went wrong.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] + (" [...]" if len(lines) > 1 else "")


def _normalise_format(fmt):
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
    fmt = _normalise_format(format) if format else format_from_path(path, reading=True)
    how = f" as {fmt}" if fmt else ""
    # A damaged file makes the readers warn before they fail (astropy.io.fits:
    # "Header size is not multiple of 2880 ... the file is corrupted"), which
    # would print several lines ahead of the one-line error.  Hold the
    # warnings back and pass them on only if the file was read after all.
    with warnings.catch_warnings(record=True) as caught:
        try:
            if fmt == "votable":
                table = _read_votable(path, **kwargs)
            else:
                table = Table.read(path, format=fmt, **kwargs)
        except Exception as exc:
            hint = "" if fmt else "; pass format= (e.g. 'fits', 'csv', 'ecsv', 'parquet', 'votable')"
            raise CatalogError(f"cannot read catalog {path}{how}: {_one_line(exc)}{hint}") from exc
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


# --------------------------------------------------------------------- column detection


def _is_skycoord(table, name):
    return isinstance(table[name], SkyCoord)


def _explicit_column(table, name, argname):
    """Return the column called ``name`` (exact, else unique case-insensitive match)."""
    if name in table.colnames:
        return name
    folded = [c for c in table.colnames if c.lower() == str(name).lower()]
    if len(folded) == 1:
        return folded[0]
    raise CatalogError(
        f"{argname}={name!r} is not a column of the catalog; "
        f"available columns: {', '.join(table.colnames) or '(none)'}"
    )


def _detect_column(table, candidates, what, argname):
    """Find the single column whose lower-cased name is in ``candidates``.

    A name followed by ``_<n>`` counts as a candidate too: that is how a
    reader renames a column whose name appears twice in a file (``ra,dec,ra``
    reads as ``ra, dec, ra_1``), and which of two such columns holds the
    positions is not ours to guess.
    """
    found = [c for c in table.colnames
             if _DUPLICATE_SUFFIX.sub("", c.lower()) in candidates
             and not _is_skycoord(table, c)]
    exact = [c for c in found if c.lower() in candidates]
    if len(found) == 1 and exact:
        return found[0]
    if not exact:
        raise CatalogError(
            f"no {what} column found: looked for {', '.join(candidates)} (any case); "
            f"available columns: {', '.join(table.colnames) or '(none)'}; "
            f"pass {argname}= to name it"
        )
    twice = ("; a name that appears twice in a file is read as NAME and NAME_1"
             if len(found) > len(exact) else "")
    raise CatalogError(
        f"several possible {what} columns: {', '.join(found)}{twice}; "
        f"pass ra_col= and dec_col= to choose"
    )


_DUPLICATE_SUFFIX = re.compile(r"_\d+$")


def find_position_columns(table, ra_col=None, dec_col=None):
    """Find the columns holding the sky positions.

    Parameters
    ----------
    table : `~astropy.table.Table`
        The catalog.
    ra_col, dec_col : str, optional
        Explicit column names.  ``ra_col`` may name a `~astropy.coordinates.SkyCoord`
        column (then leave ``dec_col`` out).  Without them, a single SkyCoord
        column is used if there is one; otherwise the columns are found among
        :data:`RA_NAMES` and :data:`DEC_NAMES`, case-insensitively.

    Returns
    -------
    (str, str) or (str, None)
        ``(ra_name, dec_name)``, or ``(skycoord_name, None)``.

    Raises
    ------
    CatalogError
        A column is missing, several candidates match (the message lists
        them), or an explicit name is not in the table (the message lists the
        available columns).
    """
    if ra_col is None and dec_col is None:
        sky = [c for c in table.colnames if _is_skycoord(table, c)]
        if len(sky) == 1:
            return sky[0], None
        if len(sky) > 1:
            raise CatalogError(
                f"several SkyCoord columns: {', '.join(sky)}; pass ra_col= to choose one"
            )
    if ra_col is not None:
        ra = _explicit_column(table, ra_col, "ra_col")
        if _is_skycoord(table, ra):
            if dec_col is not None:
                raise CatalogError(f"ra_col={ra!r} is a SkyCoord column; leave dec_col out")
            return ra, None
    else:
        ra = _detect_column(table, RA_NAMES, "RA", "ra_col")
    if dec_col is not None:
        dec = _explicit_column(table, dec_col, "dec_col")
    else:
        dec = _detect_column(table, DEC_NAMES, "Dec", "dec_col")
    if _is_skycoord(table, dec):
        raise CatalogError(f"dec_col={dec!r} is a SkyCoord column; pass it as ra_col")
    if ra == dec:
        raise CatalogError(f"RA and Dec cannot both come from column {ra!r}")
    return ra, dec


# ----------------------------------------------------------------- position parsing


@dataclass
class Positions:
    """Sky positions of a catalog, one per row.

    Attributes
    ----------
    ra, dec : `~numpy.ndarray`
        float64 ICRS coordinates in degrees; NaN where ``valid`` is False.
    valid : `~numpy.ndarray`
        bool, True where the row has a usable position.
    problems : list of str
        One human-readable line per kind of problem and column, naming the
        first bad rows (numbered from 0) and their values.  Empty when all
        rows are valid.
    columns : tuple of str
        The column(s) the positions came from.
    reasons : `~numpy.ndarray`
        str per row: why it is invalid, ``""`` where valid.
    """

    ra: np.ndarray
    dec: np.ndarray
    valid: np.ndarray
    problems: list = field(default_factory=list)
    columns: tuple = ()
    reasons: np.ndarray = None

    def __len__(self):
        return len(self.ra)

    @property
    def n_invalid(self):
        """Number of rows without a usable position."""
        return int(np.count_nonzero(~self.valid))


def _resolve_unit(unit, name, axis):
    """Astropy angle unit of a RA or Dec column (None when unitless)."""
    if isinstance(unit, (str, u.UnrecognizedUnit)):
        text = str(unit).strip()
        alias = _UNIT_ALIASES.get(text.lower())
        unit = (alias or u.Unit(text, parse_strict="silent")) if text else None
    if unit is None or unit == u.dimensionless_unscaled:
        return None
    if axis == "RA" and getattr(unit, "physical_type", None) == "time":
        unit = u.Unit(u.hourangle * unit.to(u.hour))  # RA in "h" means hours of RA
    if isinstance(unit, u.UnrecognizedUnit) or unit.physical_type != "angle":
        raise CatalogError(f"column {name!r} has unit {unit!s}, which is not an angle unit")
    if axis == "Dec" and unit == u.hourangle:
        raise CatalogError(
            f"Dec column {name!r} has unit hourangle; declinations are angles in degrees"
        )
    return unit


def _data_and_mask(col):
    """Plain values (ndarray, in the column's unit) and a bool mask of a column."""
    n = len(col)
    mask = np.zeros(n, bool)
    if getattr(col, "mask", None) is not None:
        mask |= np.broadcast_to(np.asarray(col.mask, dtype=bool), (n,))
    data = col.unmasked if hasattr(col, "unmasked") else col
    if isinstance(data, MaskedColumn):
        data = data.data.data
    if isinstance(data, u.Quantity):
        data = data.value
    return np.asarray(data), mask


def _parse_string(text, deg_per_unit, default_unit):
    """Degrees from one string: a number in the column's unit, or a sexagesimal angle."""
    try:
        return float(text) * deg_per_unit
    except ValueError:
        pass
    return float(Angle(text, unit=default_unit).to_value(u.deg))


def _parse_strings(values, mask, deg_per_unit, default_unit):
    """Degrees and per-row reasons for a string/object column."""
    n = len(values)
    deg = np.full(n, np.nan)
    why = np.full(n, "", dtype=object)
    for i, value in enumerate(values):
        if mask[i] or value is None or value is np.ma.masked:
            why[i] = "masked or missing"
            continue
        try:
            if isinstance(value, bytes):
                value = value.decode("ascii")
            if isinstance(value, str) and not value.strip():
                why[i] = "masked or missing"
                continue
            if isinstance(value, str):
                deg[i] = _parse_string(value, deg_per_unit, default_unit)
            elif isinstance(value, Real) and not isinstance(value, (bool, np.bool_)):
                deg[i] = float(value) * deg_per_unit
            else:
                raise TypeError(type(value).__name__)
        except Exception:
            why[i] = "not a number or sexagesimal angle"
            continue
        if not np.isfinite(deg[i]):
            why[i] = "not finite"
    return deg, why


def _column_degrees(table, name, axis):
    """Degrees, per-row reasons and raw values of one RA or Dec column."""
    col = table[name]
    if getattr(col, "ndim", 1) != 1:
        raise CatalogError(
            f"column {name!r} has shape {col.shape[1:]} per row; {axis} needs one value per row"
        )
    data, mask = _data_and_mask(col)
    unit = _resolve_unit(getattr(col, "unit", None), name, axis)
    per_unit = 1.0 if unit is None else float(unit.to(u.deg))
    kind = data.dtype.kind
    if kind in "iuf":
        raw = data.astype(np.float64)
        why = np.where(mask, "masked or missing", "").astype(object)
        why[~mask & ~np.isfinite(raw)] = "not finite"
        with np.errstate(over="ignore", invalid="ignore"):
            deg = raw * per_unit
        _check_hourangle(raw[why == ""], unit, name)
    elif kind in "USO":
        default = unit if unit is not None else (u.hourangle if axis == "RA" else u.deg)
        deg, why = _parse_strings(data, mask, per_unit, default)
    else:
        raise CatalogError(
            f"column {name!r} has dtype {data.dtype}; {axis} must be numbers or sexagesimal strings"
        )
    if axis == "RA" and unit is None and name.lower().startswith("coord_"):
        _warn_if_radians(deg[why == ""], name)
    return deg, why, data, mask


def _check_hourangle(values, unit, name):
    if unit == u.hourangle and values.size and np.nanmax(values) > 24:
        raise CatalogError(
            f"column {name!r} has unit hourangle but values up to {np.nanmax(values):g} (> 24): "
            "it is probably in degrees; fix its unit"
        )


def _warn_if_radians(deg, name):
    if deg.size and np.all((deg >= 0) & (deg <= 2 * np.pi)):
        warnings.warn(
            f"column {name!r} has no unit and all values lie in [0, 2 pi]: pipeline tables "
            "often store coord_ra in radians, but degrees are assumed; set the unit if wrong",
            AstropyUserWarning, stacklevel=4,
        )


def _check_range(deg, why, axis):
    ok = why == ""
    if axis == "RA":
        bad = ok & ~((deg >= 0) & (deg < 360))
        why[bad] = "RA outside [0, 360) deg"
    else:
        bad = ok & ~((deg >= -90) & (deg <= 90))
        why[bad] = "Dec outside [-90, 90] deg"


def _skycoord_degrees(table, name):
    """ICRS degrees and per-row reasons of a SkyCoord column."""
    coord = table[name]
    try:
        icrs = coord.transform_to(ICRS())
    except Exception as exc:
        raise CatalogError(
            f"cannot transform SkyCoord column {name!r} from {coord.frame.name} to ICRS: {exc}"
        ) from exc
    ra, ra_mask = _data_and_mask(icrs.ra.to(u.deg))
    dec, dec_mask = _data_and_mask(icrs.dec.to(u.deg))
    ra, dec = ra.astype(np.float64), dec.astype(np.float64)
    why = np.full(len(ra), "", dtype=object)
    why[~(np.isfinite(ra) & np.isfinite(dec))] = "not finite"
    why[ra_mask | dec_mask] = "masked or missing"
    return ra, dec, why


def _show(value):
    if value is None or value is np.ma.masked:
        return "--"
    if isinstance(value, np.ndarray):
        value = tuple(value.tolist())
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 30 else text[:27] + "..."


def _summarise(name, why, data, mask):
    """One problem line per distinct reason of one column."""
    lines = []
    for reason in dict.fromkeys(why[why != ""]):
        rows = np.flatnonzero(why == reason)
        shown = ", ".join(
            f"{i} ({'--' if mask is not None and mask[i] else _show(data[i])})"
            for i in rows[:_MAX_SHOWN]
        )
        more = f" (first {_MAX_SHOWN} shown)" if len(rows) > _MAX_SHOWN else ""
        lines.append(f"column {name!r}: {len(rows)} row(s) {reason}: rows {shown}{more}")
    return lines


def extract_positions(table, ra_col=None, dec_col=None, on_invalid="raise"):
    """Read and check the sky position of every row.

    Parameters
    ----------
    table : `~astropy.table.Table`
        The catalog (not modified).
    ra_col, dec_col : str, optional
        Position columns, see :func:`find_position_columns`.
    on_invalid : {"raise", "flag"}
        ``"raise"``: a :class:`CatalogError` if any row is invalid.
        ``"flag"``: mark such rows ``valid=False`` (the pipeline gives them
        status ``invalid_position``) and warn once.

    Returns
    -------
    Positions
        ICRS RA and Dec in degrees (float64), validity and problem summary.

    Raises
    ------
    CatalogError
        The table has no rows; no position columns; a column is not numeric
        or string, or has a non-angle unit, or has unit hourangle with values
        above 24 (always raised: the unit is wrong); with ``on_invalid="raise"``,
        any invalid row: masked/missing, unparsable string, NaN/inf, RA
        outside [0, 360) deg, Dec outside [-90, 90] deg.  The message names
        the column(s) and the first bad rows with their values.

    Notes
    -----
    Units are honoured (``deg``, ``rad``, ``hourangle``, ``arcsec``, ...; a
    RA unit of time such as ``h`` is read as hours of RA).  Unitless numbers
    are degrees.  Strings are numbers in the column's unit or sexagesimal
    angles (RA in hours, Dec in degrees).  A SkyCoord column is transformed
    to ICRS.
    """
    if on_invalid not in ("raise", "flag"):
        raise ValueError(f"on_invalid must be 'raise' or 'flag', not {on_invalid!r}")
    if len(table) == 0:
        raise CatalogError("the catalog has no rows: nothing to classify")
    ra_name, dec_name = find_position_columns(table, ra_col, dec_col)
    if dec_name is None:
        ra, dec, why = _skycoord_degrees(table, ra_name)
        problems = _summarise(ra_name, why, np.column_stack([ra, dec]), None)
        columns = (ra_name,)
    else:
        ra, ra_why, ra_data, ra_mask = _column_degrees(table, ra_name, "RA")
        dec, dec_why, dec_data, dec_mask = _column_degrees(table, dec_name, "Dec")
        _check_range(ra, ra_why, "RA")
        _check_range(dec, dec_why, "Dec")
        problems = (_summarise(ra_name, ra_why, ra_data, ra_mask)
                    + _summarise(dec_name, dec_why, dec_data, dec_mask))
        why = np.where(ra_why != "", ra_why, dec_why)
        columns = (ra_name, dec_name)
    valid = why == ""
    if not valid.all():
        _report_invalid(problems, int(np.count_nonzero(~valid)), len(valid), on_invalid)
    ra = np.where(valid, ra, np.nan).astype(np.float64)
    dec = np.where(valid, dec, np.nan).astype(np.float64)
    return Positions(ra, dec, valid, problems, columns, why.astype(str))


def _report_invalid(problems, n_bad, n, on_invalid):
    text = "\n  ".join(problems)
    if on_invalid == "raise":
        # One line (problems joined with "; "): the command line prints this
        # message as its one-line error (docs/cli/classify.rst).
        raise CatalogError(
            f"{n_bad} of {n} rows have invalid positions (rows numbered from 0): "
            f"{'; '.join(problems)}; fix the catalog, or use on_invalid='flag' "
            f"(--on-invalid flag) to give these rows status {_status.INVALID_POSITION!r} "
            "and classify the rest"
        )
    warnings.warn(
        f"{n_bad} of {n} rows have invalid positions and get status "
        f"{_status.INVALID_POSITION!r}:\n  {text}",
        AstropyUserWarning, stacklevel=3,
    )


# ------------------------------------------------------------------------ results


def output_column_names(prefix="lsbg_"):
    """Names of the probability, class and status columns for ``prefix``."""
    return tuple(prefix + name[len("lsbg_"):] for name in OUTPUT_COLUMNS)


def _masked_1d(values, n, what):
    """(data, mask) of a length-``n`` 1-d array-like."""
    data = np.ma.getdata(values)
    mask = np.ma.getmaskarray(values)
    data = np.asarray(data)
    if data.shape != (n,):
        raise ValueError(f"{what} has shape {data.shape}; expected ({n},), one value per row")
    return data, np.asarray(mask, dtype=bool)


def _flat_provenance(meta, prefix=""):
    """A flat dict of FITS-friendly scalars (keys lower-case ``[a-z0-9_]``)."""
    flat = {}
    for key, value in (meta or {}).items():
        key = prefix + re.sub(r"[^a-z0-9_]", "_", str(key).lower())
        if isinstance(value, Mapping):
            flat.update(_flat_provenance(value, key + "_"))
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if value is None:
            value = ""
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, float) and not np.isfinite(value):
            value = str(value)
        elif not isinstance(value, (str, bool, int, float)):
            value = str(value)
        flat[key] = value
    return flat


def _result_columns(n, prob, lsbg_class, status, names):
    p, p_mask = _masked_1d(prob, n, "prob")
    p = p.astype(np.float64)
    no_score = p_mask | ~np.isfinite(p)
    if np.any((p[~no_score] < 0) | (p[~no_score] > 1)):
        raise ValueError("prob must lie in [0, 1] (NaN or masked where there is no score)")
    c, c_mask = _masked_1d(lsbg_class, n, "lsbg_class")
    c = np.where(no_score | c_mask, -1, np.nan_to_num(c.astype(np.float64), nan=-1)).astype(np.int8)
    c_mask = c_mask | no_score | (c == -1)
    if np.any(~np.isin(c[~c_mask], (0, 1))):
        raise ValueError("lsbg_class must be 0 (artifact) or 1 (LSBG) where scored")
    s = np.asarray(status).astype(str)
    if s.shape != (n,):
        raise ValueError(f"status has shape {s.shape}; expected ({n},)")
    unknown = sorted(set(s.tolist()) - set(_status.ALL_STATUSES))
    if unknown:
        raise ValueError(f"unknown status values {unknown}; use {_status.ALL_STATUSES}")
    p_name, c_name, s_name = names
    p_ucd, c_ucd, s_ucd = OUTPUT_UCDS
    return [
        MaskedColumn(np.where(no_score, np.nan, p).astype(np.float32), name=p_name,
                     mask=no_score, fill_value=np.nan, meta={"ucd": p_ucd},
                     description="DeepShadows probability that the candidate is a real LSBG "
                                 "(0-1); null where not scored, see the status column"),
        MaskedColumn(c, name=c_name, mask=c_mask, fill_value=-1, meta={"ucd": c_ucd},
                     description="1 = LSBG, 0 = artifact (probability >= threshold); "
                                 "null where not scored"),
        Column(s.astype(f"U{_status.STATUS_WIDTH}"), name=s_name, meta={"ucd": s_ucd},
               description="processing status: " + ", ".join(_status.ALL_STATUSES)),
    ]


def add_result_columns(table, prob, lsbg_class, status, meta=None, prefix="lsbg_",
                       overwrite_columns=False):
    """Return a copy of ``table`` with the classification results added.

    Parameters
    ----------
    table : `~astropy.table.Table`
        The input catalog; not modified.  Every column, unit, description,
        mask, ``meta`` entry and the row order are kept.
    prob : array-like of float, shape (n,)
        Probability of being an LSBG, in [0, 1]; NaN or masked where no score.
    lsbg_class : array-like of int, shape (n,)
        1 (LSBG) or 0 (artifact).  Masked in the output wherever ``prob`` has
        no score, and wherever it is masked, NaN or -1 itself.
    status : array-like of str, shape (n,)
        One of :data:`lsbg_classify.status.ALL_STATUSES` per row.
    meta : dict, optional
        Provenance of the run, stored as ``meta["LSBG_CLASSIFY"]``: a flat
        dict (nested dicts are flattened with ``_``), keys lower-case
        ``[a-z0-9_]``, values str/int/float/bool (others become str), so that
        every format including FITS headers keeps it.  ``software`` and
        ``version`` are always recorded.  Replaces any earlier provenance.
    prefix : str
        Prefix of the new column names (default gives :data:`OUTPUT_COLUMNS`).
    overwrite_columns : bool
        Replace result columns already in ``table`` (e.g. re-scoring a scored
        catalog) instead of refusing.

    Returns
    -------
    `~astropy.table.Table`
        A new table (same class as ``table``) with ``<prefix>prob`` (float32,
        masked, fill NaN), ``<prefix>class`` (int8, masked, fill -1) and
        ``<prefix>status`` (str) appended, or replaced in place.

    Raises
    ------
    CatalogError
        A result column already exists and ``overwrite_columns`` is False.
    ValueError
        Inputs of the wrong length, probabilities outside [0, 1], classes
        other than 0/1, or unknown status values.
    """
    names = output_column_names(prefix)
    clash = [c for c in names if c in table.colnames]
    if clash and not overwrite_columns:
        raise CatalogError(
            f"the catalog already has column(s) {', '.join(clash)}; pass "
            "overwrite_columns=True to replace them, or choose another prefix"
        )
    new_columns = _result_columns(len(table), prob, lsbg_class, status, names)
    out = table.copy(copy_data=True)
    for col in new_columns:
        out[col.name] = col
    out.meta[PROVENANCE_KEY] = {"software": "lsbg_classify", "version": __version__,
                                **_flat_provenance(meta)}
    return out


# ------------------------------------------------------------------------ writing


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
        for key, value in _flat_provenance(prov).items():
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


def _dotted_provenance(prov):
    """The provenance dict as flat ``LSBG_CLASSIFY.<key>`` entries."""
    return {f"{PROVENANCE_KEY}.{k}": v for k, v in _flat_provenance(prov).items()}


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
        dtype = kind.to_pandas_dtype()
        data = chunked.fill_null(pa.scalar(0, type=kind)).to_numpy(zero_copy_only=False)
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


def _new_file_mode(path):
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync(path, directory=False):
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return  # some platforms cannot open directories
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


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
    fmt = _normalise_format(format) if format else format_from_path(path)
    if fmt is None:
        raise CatalogError(
            f"cannot tell the table format of {path} from its name; use one of "
            f"{', '.join(FORMATS)} or pass format="
        )
    _check_destination(path, overwrite)
    mode = _new_file_mode(path)
    suffix = ".gz" if fmt == "fits" and path.name.lower().endswith(".gz") else ""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*HIERARCH card will be created",
                                    category=VerifyWarning)
            _write(table, tmp, fmt)
        _fsync(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, Exception):
            raise CatalogError(f"cannot write {path} as {fmt}: {_one_line(exc)}") from exc
        raise
    _fsync(path.parent, directory=True)
