"""Columns of a catalog: finding the positions, parsing them, adding the result columns."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real

import astropy.units as u
import numpy as np
from astropy.coordinates import ICRS, Angle, SkyCoord
from astropy.table import Column, MaskedColumn
from astropy.utils.exceptions import AstropyUserWarning

from ... import status as _status
from ...version import __version__
from .read import (
    DEC_NAMES,
    MAX_SHOWN,
    OUTPUT_COLUMNS,
    OUTPUT_UCDS,
    PROVENANCE_KEY,
    RA_NAMES,
    UNIT_ALIASES,
    CatalogError,
)

__all__ = ["Positions", "find_position_columns", "extract_positions", "output_column_names",
           "add_result_columns"]

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
        alias = UNIT_ALIASES.get(text.lower())
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
            for i in rows[:MAX_SHOWN]
        )
        more = f" (first {MAX_SHOWN} shown)" if len(rows) > MAX_SHOWN else ""
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


def flat_provenance(meta, prefix=""):
    """A flat dict of FITS-friendly scalars (keys lower-case ``[a-z0-9_]``)."""
    flat = {}
    for key, value in (meta or {}).items():
        key = prefix + re.sub(r"[^a-z0-9_]", "_", str(key).lower())
        if isinstance(value, Mapping):
            flat.update(flat_provenance(value, key + "_"))
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
                                **flat_provenance(meta)}
    return out
