"""Bad catalogs and bad output paths (issue 5, item 5).

Through the command line (``lsbg_classify.cli.main``, simulated sky, an
untrained network) every bad input ends in one of two ways:

- exit status 2 and exactly one line on standard error that names what is
  wrong (the column, the rows or the path), with no traceback, and no output
  written: the output path does not exist afterwards (or, if it existed, is
  unchanged byte for byte) and no temporary file is left beside it;
- or, with ``--on-invalid flag``, exit status 0 and a per-row status.

A hypothesis property checks the library the same way: for random position
columns (NaN, inf, huge, negative, numeric and sexagesimal strings, garbage,
masks, units) ``classify_catalog(..., on_invalid="flag")`` either raises
:class:`~lsbg_classify.pipeline.catalog.read.CatalogError` or returns every row with
``invalid_position`` exactly where the position is invalid.
"""

import contextlib
import hashlib
import io
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Column, MaskedColumn, Table
from astropy.utils.exceptions import AstropyUserWarning
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lsbg_classify import classify_catalog, status
from lsbg_classify.cli import main
from lsbg_classify.pipeline.cache import CutoutCache
from lsbg_classify.pipeline.catalog.read import CatalogError
from lsbg_classify.pipeline.model import LSBGModel, load_model
from lsbg_classify.surveys import NoCoverageError, Payload, SurveyBackend

ERROR_PREFIX = "lsbg-classify classify: error: "


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cutout cache for the module: reruns of a position cost nothing."""
    return tmp_path_factory.mktemp("cache")


def _cli(inp, out, weights, cache, *extra):
    return main(["classify", str(inp), "-o", str(out), "--backend", "simulated", "--model", weights,
                 "--cache", str(cache), "--quiet", *extra])


def _temp_files(directory, checkpoint_ok=False):
    """What a run could have left in the output's directory.

    Temporary files of the atomic writer (hidden, ``.tmp``) and the
    ``OUTPUT.checkpoint/`` directory of finished chunks.  ``checkpoint_ok``
    tolerates the latter where the output is refused only after scoring (it
    is documented resumable state, kept until an output is written; see
    ``test_refused_output_is_refused_before_any_fetching``).
    """
    if not directory.is_dir():
        return []
    return [p.name for p in directory.iterdir()
            if p.name.startswith(".") or ".tmp" in p.name
            or (p.name.endswith(".checkpoint") and not checkpoint_ok)]


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _assert_clean_failure(code, capsys, out, names, before=None, checkpoint_ok=False):
    """Exit 2, one line naming every string in ``names``, no output written."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(ERROR_PREFIX), err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    if before is None:
        assert not out.exists()
    else:
        assert _sha(out) == before
    assert _temp_files(out.parent, checkpoint_ok) == []
    return lines[0]


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# -- bad catalogs through the command line -------------------------------------------------------

# name -> (file name, content, strings the one-line error must contain)
BAD_CATALOGS = {
    "empty_table": ("empty.csv", "ra,dec\n", ["no rows"]),
    "empty_file": ("nothing.csv", "", ["no rows"]),
    "no_ra_dec": ("cols.csv", "x,y\n1,2\n", ["no RA column", "x, y"]),
    "no_dec": ("cols.csv", "ra,y\n1,2\n", ["no Dec column", "ra, y"]),
    "ambiguous_ra": ("amb.csv", "ra,raj2000,dec\n1,2,3\n", ["ra, raj2000"]),
    "ambiguous_dec": ("amb.csv", "ra,dec,DEJ2000\n1,2,3\n", ["dec, DEJ2000"]),
    "nan": ("nan.csv", "ra,dec\n10,-45\nnan,-45\n20,nan\n", ["column 'ra'", "rows 1 (nan)",
                                                           "column 'dec'", "rows 2 (nan)"]),
    "inf": ("inf.csv", "ra,dec\ninf,-45\n10,-inf\n", ["rows 0 (inf)", "rows 1 (-inf)"]),
    "ra_out_of_range": ("r.csv", "ra,dec\n10,-45\n360,-45\n-0.5,-45\n",
                        ["column 'ra'", "RA outside", "rows 1 (360", "2 (-0.5)"]),
    "dec_out_of_range": ("d.csv", "ra,dec\n10,-45\n10,90.5\n10,-1e300\n",
                         ["column 'dec'", "Dec outside", "rows 1 (90.5)", "2 (-1e+300)"]),
    "garbage_strings": ("g.csv", "ra,dec\n10,-45\nfoo,-45\n10,n/a\n",
                        ["column 'ra'", "rows 1 ('foo')", "column 'dec'", "rows 2 ('n/a')"]),
    "bad_sexagesimal": ("s.csv", "ra,dec\n10:00:00,-05:00:00\n12:61:00,-05:00:00\n",
                        ["column 'ra'", "not a number or sexagesimal", "rows 1 ('12:61:00')"]),
    "masked_cells": ("m.csv", "ra,dec\n10,-45\n,-45\n10,\n",
                     ["masked or missing", "rows 1 (--)", "rows 2 (--)"]),
    "binary_junk_txt": ("junk.txt", bytes(range(256)) * 4, ["junk.txt", "cannot read"]),
    "xlsx_name": ("cat.xlsx", b"PK\x03\x04" + bytes(200), ["cat.xlsx", "--input-format"]),
    "fits_garbage": ("broken.fits", b"SIMPLE  =                    T" + bytes(range(256)) * 3,
                     ["broken.fits", "cannot read"]),
    "fits_not_a_table": ("image.fits", "image", ["image.fits", "cannot read"]),
    "fits_truncated": ("trunc.fits", "truncated", ["trunc.fits", "cannot read"]),
}


def _make_bad_catalog(tmp_path, name, content):
    path = tmp_path / name
    if content == "image":
        from astropy.io import fits

        fits.PrimaryHDU(np.zeros((4, 4))).writeto(path)
    elif content == "truncated":
        good = tmp_path / "good.fits"
        Table({"ra": np.linspace(10, 20, 500), "dec": np.full(500, -45.0)}).write(good)
        _write(path, good.read_bytes()[:6000])  # header whole, the rows cut short
    else:
        _write(path, content)
    return path


@pytest.mark.parametrize("case", BAD_CATALOGS.values(), ids=BAD_CATALOGS.keys())
def test_bad_catalog_exits_2_with_one_line_and_writes_nothing(case, weights, tmp_path, capsys):
    name, content, names = case
    path = _make_bad_catalog(tmp_path, name, content)
    out = tmp_path / "out" / "scored.fits"
    out.parent.mkdir()
    _assert_clean_failure(_cli(path, out, weights, tmp_path / "cache"), capsys, out, names)
    # An existing output is left exactly as it was, even with --overwrite.
    out.write_bytes(b"earlier result")
    before = _sha(out)
    code = _cli(path, out, weights, tmp_path / "cache", "--overwrite")
    _assert_clean_failure(code, capsys, out, names, before=before)
    # Nothing was fetched for a catalog that was refused.
    assert CutoutCache(tmp_path / "cache").keys() == []


def test_directory_as_catalog(weights, tmp_path, capsys):
    folder = tmp_path / "catalog.fits"
    folder.mkdir()  # tests run as root: a directory is what cannot be read
    out = tmp_path / "scored.fits"
    _assert_clean_failure(_cli(folder, out, weights, tmp_path / "cache"), capsys, out,
                          ["not a file", str(folder)])


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="permissions do not stop root (the directory and broken-FITS cases do)")
def test_catalog_without_read_permission(weights, tmp_path, capsys):
    path = _write(tmp_path / "secret.csv", "ra,dec\n10,-45\n")
    path.chmod(0)
    out = tmp_path / "scored.fits"
    _assert_clean_failure(_cli(path, out, weights, tmp_path / "cache"), capsys, out,
                          ["secret.csv"])


def test_missing_catalog(weights, tmp_path, capsys):
    out = tmp_path / "scored.fits"
    _assert_clean_failure(_cli(tmp_path / "nope.csv", out, weights, tmp_path / "cache"), capsys,
                          out, ["not found", "nope.csv"])


def test_broken_fits_error_is_one_line_in_a_real_process(tmp_path):
    """No parser warnings ahead of the error (hidden from capsys by pytest, not from a terminal)."""
    path = _write(tmp_path / "broken.fits", b"SIMPLE  =                    T" + bytes(100))
    out = tmp_path / "scored.fits"
    result = subprocess.run(
        [sys.executable, "-m", "lsbg_classify.cli", "classify", str(path), "-o", str(out),
         "--backend", "simulated", "--no-cache", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), result.stderr
    assert "broken.fits" in lines[0]
    assert not out.exists() and _temp_files(tmp_path) == []


# -- the same catalogs, flagged row by row -------------------------------------------------------


def test_invalid_rows_flagged_with_on_invalid_flag(weights, shared_cache, tmp_path, capsys):
    text = ("name,ra,dec\n"
            "good,10.0,-45.0\n"
            "nan,nan,-45.0\n"
            "inf,10.0,inf\n"
            "ra_high,360.0,-45.0\n"
            "ra_negative,-1.0,-45.0\n"
            "dec_high,10.0,91.0\n"
            "garbage,foo,-45.0\n"
            "masked,,-45.0\n"
            "sexagesimal,01:00:00,-05:30:00\n"
            "polar,20.0,89.5\n")
    path = _write(tmp_path / "mixed.csv", text)
    out = tmp_path / "scored.ecsv"
    _assert_clean_failure(_cli(path, out, weights, shared_cache), capsys, out,
                          ["7 of 10 rows", "column 'ra'", "column 'dec'"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        assert _cli(path, out, weights, shared_cache, "--on-invalid", "flag") == 0
    scored = Table.read(out)
    assert list(scored["name"]) == ["good", "nan", "inf", "ra_high", "ra_negative", "dec_high",
                                    "garbage", "masked", "sexagesimal", "polar"]
    expected = [status.OK] + [status.INVALID_POSITION] * 7 + [status.OK, status.NO_COVERAGE]
    assert list(scored["lsbg_status"]) == expected
    assert list(np.asarray(scored["lsbg_prob"].mask)) == [s != status.OK for s in expected]
    assert "10 rows" in capsys.readouterr().out


def test_valid_sexagesimal_strings_are_hours_and_degrees(weights, shared_cache, tmp_path):
    path = _write(tmp_path / "sexa.csv",
                  "RA,DEC\n10:00:00,-05:30:00\n10h00m00s,-5d30m00s\n150.0,-5.5\n")
    out = tmp_path / "scored.fits"
    assert _cli(path, out, weights, shared_cache) == 0
    scored = Table.read(out)
    assert list(scored["lsbg_status"]) == [status.OK] * 3
    # The same position written three ways: the same cutout, the same score.
    assert len(set(np.asarray(scored["lsbg_prob"]).tolist())) == 1


def test_masked_columns_from_a_fits_file(weights, shared_cache, tmp_path, capsys):
    table = Table()
    table["RA"] = MaskedColumn([10.0, 20.0, 30.0], mask=[False, True, False], unit=u.deg)
    table["DEC"] = MaskedColumn([-45.0, -45.0, -45.0], mask=[False, False, True], unit=u.deg)
    path = tmp_path / "masked.fits"
    table.write(path)
    out = tmp_path / "scored.fits"
    _assert_clean_failure(_cli(path, out, weights, shared_cache), capsys, out,
                          ["2 of 3 rows", "column 'RA'", "rows 1 (--)", "column 'DEC'",
                           "rows 2 (--)"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        assert _cli(path, out, weights, shared_cache, "--on-invalid", "flag") == 0
    assert list(Table.read(out)["lsbg_status"]) == [status.OK] + [status.INVALID_POSITION] * 2


def test_duplicate_rows_are_both_scored_alike(weights, shared_cache, tmp_path):
    path = _write(tmp_path / "dup.csv", "id,ra,dec\n1,12.5,-44.0\n2,33.0,-41.0\n3,12.5,-44.0\n"
                                        "4,12.5,-44.0\n")
    out = tmp_path / "scored.parquet"
    assert _cli(path, out, weights, shared_cache) == 0
    scored = Table.read(out)
    assert list(scored["id"]) == [1, 2, 3, 4]
    assert list(scored["lsbg_status"]) == [status.OK] * 4
    prob = np.asarray(scored["lsbg_prob"])
    assert prob[0] == prob[2] == prob[3]


# -- bad output paths --------------------------------------------------------------------------


@pytest.fixture
def good_catalog(tmp_path):
    return _write(tmp_path / "cands.csv", "ra,dec\n10.0,-45.0\n20.0,-46.0\n")


def test_cache_path_that_is_a_file(good_catalog, weights, tmp_path, capsys):
    cache = _write(tmp_path / "cache.txt", "not a directory")
    out = tmp_path / "scored.fits"
    _assert_clean_failure(_cli(good_catalog, out, weights, cache), capsys, out,
                          [str(cache), "not a directory"])
    assert cache.read_text() == "not a directory"


def test_output_in_a_missing_directory(good_catalog, weights, shared_cache, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "dir" / "scored.fits"
    _assert_clean_failure(_cli(good_catalog, out, weights, shared_cache), capsys, out,
                          [str(out.parent), "does not exist"])
    assert not (tmp_path / "no").exists()


def test_output_with_an_unknown_ending(good_catalog, weights, shared_cache, tmp_path, capsys):
    out = tmp_path / "scored.xlsx"
    _assert_clean_failure(_cli(good_catalog, out, weights, shared_cache), capsys, out,
                          ["scored.xlsx", "format"], checkpoint_ok=True)


def test_output_that_is_a_directory(good_catalog, weights, shared_cache, tmp_path, capsys):
    out = tmp_path / "scored.fits"
    out.mkdir()
    code = _cli(good_catalog, out, weights, shared_cache, "--overwrite")
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "directory" in err and str(out) in err
    assert out.is_dir() and list(out.iterdir()) == []
    assert _temp_files(tmp_path, checkpoint_ok=True) == []


@pytest.mark.parametrize("where", ["missing_directory", "unknown_ending", "a_directory"])
def test_refused_output_is_refused_before_any_fetching(where, good_catalog, weights, tmp_path,
                                                       capsys):
    cache = tmp_path / "fresh_cache"
    out = {"missing_directory": tmp_path / "missing" / "scored.fits",
           "unknown_ending": tmp_path / "scored.xlsx",
           "a_directory": tmp_path / "scored.fits"}[where]
    if where == "a_directory":
        out.mkdir()
    code = _cli(good_catalog, out, weights, cache, "--overwrite")
    capsys.readouterr()
    assert code == 2
    assert CutoutCache(cache).keys() == []
    assert not list(tmp_path.rglob("*.checkpoint"))


def _non_ascii_catalog(path):
    names = ["Müller 1", "Ødegaard 2"]
    Table({"ra": [10.0, 20.0], "dec": [-45.0, -46.0], "name": names}).write(path)


def _skycoord_catalog(path):
    Table({"pos": SkyCoord([10.0, 20.0] * u.deg, [-45.0, -46.0] * u.deg)}).write(path)


def _vector_catalog(path):
    Table({"ra": [10.0, 20.0], "dec": [-45.0, -46.0], "flux": np.ones((2, 3))}).write(path)


# name -> (input writer, output ending, strings the error must contain)
UNWRITABLE = {
    "non_ascii_text_to_fits": (_non_ascii_catalog, "fits", ["scored.fits", "ascii"]),
    "skycoord_to_votable": (_skycoord_catalog, "vot", ["scored.vot", "votable"]),
    "vector_column_to_csv": (_vector_catalog, "csv", ["scored.csv", "dimension"]),
}


@pytest.mark.parametrize("case", UNWRITABLE.values(), ids=UNWRITABLE.keys())
def test_output_format_that_cannot_hold_a_column(case, weights, shared_cache, tmp_path, capsys):
    make, ending, names = case
    path = tmp_path / "cands.ecsv"
    make(path)
    out = tmp_path / f"scored.{ending}"
    # Only the writer can tell that a column does not fit, after scoring; the
    # finished chunks (OUTPUT.checkpoint/) are kept, as after an interruption.
    _assert_clean_failure(_cli(path, out, weights, shared_cache), capsys, out, names,
                          checkpoint_ok=True)
    out.write_bytes(b"an earlier, good result")
    before = _sha(out)
    code = _cli(path, out, weights, shared_cache, "--overwrite")
    _assert_clean_failure(code, capsys, out, names, before=before, checkpoint_ok=True)


# -- property: random position columns ---------------------------------------------------------

# Degrees per unit, computed as the catalog code does (same rounding).
_DEG = {None: 1.0, **{name: float(u.Unit(name).to(u.deg)) for name in ("deg", "rad", "hourangle")}}
_GARBAGE = ["foo", "n/a", "12:61:00", "--", "NaN", "inf", "-inf", "", "   ", "null", "None",
            "1e400", "10h61m", "1.2.3", "0x10", "12::00", "12:00:00:00", "\u221e"]
# Values at and just beyond the edges of each axis's range, and other oddities.
_EDGES = {
    "RA": [0.0, -0.0, -1e-9, 359.999999, 360.0, 360.000001, 24.0, 24.5, 1e308, 5e-324, np.nan,
           np.inf, -np.inf],
    "Dec": [90.0, -90.0, 90.000001, -90.000001, 89.5, -89.5, -0.0, -1e308, np.nan, np.inf, -np.inf],
}


def _floats(axis):
    """Numbers for one axis: in its valid range, at its edges, or anything at all."""
    valid = st.floats(0, 360, exclude_max=True) if axis == "RA" else st.floats(-90, 90)
    edges = st.sampled_from(_EDGES[axis])
    return st.one_of(valid, edges, edges, st.floats(allow_nan=True, allow_infinity=True))


_INTS = st.one_of(st.integers(-400, 400), st.sampled_from([0, 359, 360, -1, 90, 91, -90, -91]),
                  st.integers(-10**12, 10**12))


_MASK_BIT = st.sampled_from([False, False, False, True])


@st.composite
def _string_cell(draw, axis):
    """(text, degrees or None when the text is not a position)."""
    kind = draw(st.sampled_from(["number", "sexagesimal", "garbage"]))
    if kind == "number":
        value = draw(_floats(axis))
        return repr(float(value)), float(value)
    if kind == "garbage":
        return draw(st.sampled_from(_GARBAGE)), None
    minutes, seconds = draw(st.integers(0, 59)), draw(st.integers(0, 59))
    if axis == "RA":  # hours
        hours = draw(st.integers(0, 23))
        degrees = 15.0 * (hours + minutes / 60 + seconds / 3600)
        return f"{hours:02d}:{minutes:02d}:{seconds:02d}", degrees
    degrees, sign = draw(st.integers(0, 89)), draw(st.sampled_from([-1, 1]))
    text = f"{'-' if sign < 0 else '+'}{degrees:02d}:{minutes:02d}:{seconds:02d}"
    return text, sign * (degrees + minutes / 60 + seconds / 3600)


@st.composite
def _position_column(draw, n, axis):
    """A RA or Dec column: (column, degrees per row or None, whether an error is due)."""
    kind = draw(st.sampled_from(["float", "float", "int", "str"]))
    masked = draw(st.booleans())
    mask = draw(st.lists(_MASK_BIT, min_size=n, max_size=n)) if masked else [False] * n
    if kind == "str":
        cells = draw(st.lists(_string_cell(axis), min_size=n, max_size=n))
        data = np.array([c[0] for c in cells], dtype=str)
        degrees = [c[1] for c in cells]
        unit = None
        raw = [None] * n
    else:
        if kind == "int":
            raw = draw(st.lists(_INTS, min_size=n, max_size=n))
        else:
            raw = draw(st.lists(_floats(axis), min_size=n, max_size=n))
        data = np.array(raw, dtype=np.int64 if kind == "int" else np.float64)
        unit = draw(st.sampled_from([None, None, None, "deg", "rad", "hourangle"]))
        with np.errstate(over="ignore", invalid="ignore"):
            degrees = [float(v) * _DEG[unit] for v in data]
    column = MaskedColumn(data, mask=mask, unit=unit) if masked else Column(data, unit=unit)
    degrees = [None if m else d for d, m in zip(degrees, mask)]
    # Always an error, whatever on_invalid says: a declination in hours, or
    # an "hourangle" RA with (unmasked, finite) values above 24: it is really
    # in degrees.
    error = unit == "hourangle" and (axis == "Dec" or any(
        not m and math.isfinite(v) and v > 24 for v, m in zip(raw, mask)))
    return column, degrees, error


def _expected_valid(ra_deg, dec_deg):
    def ok(value, low, high, high_open):
        return (value is not None and math.isfinite(value) and value >= low
                and (value < high if high_open else value <= high))
    return [ok(r, 0.0, 360.0, True) and ok(d, -90.0, 90.0, False) for r, d in zip(ra_deg, dec_deg)]


class _ConstantNetwork:
    """Stands in for Keras so that the fast property runs no TensorFlow per example."""

    input_shape = (None, 64, 64, 3)

    def __call__(self, images, training=False):
        return np.full((len(images), 1), 0.25, np.float32)


class _CannedBackend(SurveyBackend):
    """One stored simulated cutout for every position inside |dec| <= 89 deg."""

    name = "canned"
    remote = False
    _jpeg = None

    def request_url(self, ra, dec):
        return f"canned://{ra},{dec}"

    def download(self, ra, dec):
        if abs(dec) > 89.0:
            raise NoCoverageError("outside the footprint")
        if _CannedBackend._jpeg is None:
            from lsbg_classify.simulation.render import render_jpeg

            _CannedBackend._jpeg = render_jpeg(10.0, -45.0, "des")
        return Payload(_CannedBackend._jpeg, "jpeg")


def _check_property(data, run):
    n = data.draw(st.integers(1, 6), label="rows")
    ra, ra_deg, ra_error = data.draw(_position_column(n, "RA"), label="ra")
    dec, dec_deg, dec_error = data.draw(_position_column(n, "Dec"), label="dec")
    table = Table([ra, dec], names=["ra", "dec"])
    before = table.copy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)
            scored = run(table)
    except CatalogError:
        # Only ever for a unit that cannot be right; never for bad values.
        assert ra_error or dec_error
        event("CatalogError")
        return
    assert not (ra_error or dec_error)
    valid = _expected_valid(ra_deg, dec_deg)
    event(f"valid rows: {'all' if all(valid) else 'some' if any(valid) else 'none'}")
    assert len(scored) == n
    statuses = [str(s) for s in scored["lsbg_status"]]
    assert set(statuses) <= set(status.ALL_STATUSES)
    assert [s == status.INVALID_POSITION for s in statuses] == [not v for v in valid]
    for s, v, d in zip(statuses, valid, dec_deg):
        if v:  # the offline sky covers |dec| <= 89
            assert s == (status.NO_COVERAGE if abs(d) > 89.0 else status.OK)
    ok = np.array(statuses) == status.OK
    prob = scored["lsbg_prob"]
    assert np.array_equal(np.asarray(prob.mask), ~ok)
    assert np.all((prob.data[ok] >= 0) & (prob.data[ok] <= 1))
    # The input columns come back unchanged, the input table is untouched.
    assert table.colnames == before.colnames == scored.colnames[:2]
    for name in ("ra", "dec"):
        want = np.ma.getdata(before[name])
        nan_ok = want.dtype.kind == "f"
        for got in (table[name], scored[name]):
            assert np.array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(before[name]))
            assert np.array_equal(np.ma.getdata(got), want, equal_nan=nan_ok)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_flagged_rows_exactly_the_invalid_ones_fast(data):
    """Many examples: a stored cutout and a constant network, no TensorFlow per example."""
    model = LSBGModel(_ConstantNetwork(), "constant")
    _check_property(data, lambda table: classify_catalog(
        table, backend=_CannedBackend(), model=model, on_invalid="flag", cache=False,
        progress=False))


@pytest.fixture(scope="module")
def untrained_model(weights):
    return load_model(weights)


@settings(max_examples=20, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_flagged_rows_exactly_the_invalid_ones_simulated(data, untrained_model,
                                                                  shared_cache):
    """Fewer examples, nothing mocked: the simulated sky and a real (untrained) DeepShadows."""
    _check_property(data, lambda table: classify_catalog(
        table, backend="simulated", model=untrained_model, on_invalid="flag",
        cache=shared_cache, progress=False))


# -- property: random CSV files through the command line --------------------------------------

_CELLS = {
    "RA": st.sampled_from(["10.5", "0", "359.9", "360", "-1", "1e308", "nan", "inf", "", "foo",
                           "10:00:00", "23:59:59", "25:00:00", "12.5"]),
    "Dec": st.sampled_from(["-45", "0", "90", "-90", "90.1", "-1e308", "nan", "-inf", "", "n/a",
                            "-05:30:00", "+89:59:59", "-91:00:00", "89.5"]),
}


def _csv_cell_degrees(text, axis):
    """What a CSV cell means (degrees), or None; the same rules as the README's."""
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        pass
    parts = text.split(":")
    if len(parts) != 3:
        return None
    sign = -1.0 if text.startswith("-") else 1.0
    a, b, c = (abs(float(p)) for p in parts)
    if b >= 60 or c >= 60:
        return None
    value = sign * (a + b / 60 + c / 3600)
    return 15.0 * value if axis == "RA" else value


@settings(max_examples=8, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(_CELLS["RA"], _CELLS["Dec"]), min_size=1, max_size=4),
       flag=st.booleans())
def test_property_random_csv_through_the_command_line(rows, flag, weights, shared_cache,
                                                      tmp_path_factory):
    directory = tmp_path_factory.mktemp("csv")
    path = _write(directory / "cands.csv", "ra,dec\n" + "".join(f"{r},{d}\n" for r, d in rows))
    out = directory / "scored.ecsv"
    extra = ["--on-invalid", "flag"] if flag else []
    valid = _expected_valid([_csv_cell_degrees(r, "RA") for r, _ in rows],
                            [_csv_cell_degrees(d, "Dec") for _, d in rows])
    err = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stderr(err):
        warnings.simplefilter("ignore", AstropyUserWarning)
        code = _cli(path, out, weights, shared_cache, *extra)
    if not flag and not all(valid):
        assert code == 2
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), err.getvalue()
        assert "invalid positions" in lines[0]
        assert not out.exists() and _temp_files(directory) == []
        return
    scored = Table.read(out)
    # Exit status 3: written, but no row could be scored (all invalid or uncovered).
    assert code == (0 if status.OK in scored["lsbg_status"] else 3)
    assert len(scored) == len(rows)
    assert [s == status.INVALID_POSITION for s in scored["lsbg_status"]] == [not v for v in valid]


# -- everything knowable is checked before the first fetch (issue 11) ------------------------------


def _nothing_started(tmp_path, cache):
    """No cutout fetched, no checkpoint, no temporary file anywhere under ``tmp_path``."""
    assert not Path(cache).exists() or CutoutCache(cache).keys() == []
    assert not list(tmp_path.rglob("*.checkpoint"))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


# name -> (extra arguments, strings the one-line error must contain)
BAD_OPTIONS = {
    "chunk_size_negative": (["--chunk-size", "-5"], ["--chunk-size", "-5"]),
    "chunk_size_zero": (["--chunk-size", "0"], ["--chunk-size", "at least 1"]),
    "threads_zero": (["--threads", "0"], ["--threads"]),
    # The old spelling is accepted; the message names the flag --help shows.
    "workers_zero": (["--workers", "0"], ["--threads"]),
    "batch_size_zero": (["--batch-size", "0"], ["--batch-size"]),
    "threshold_above_one": (["--threshold", "1.5"], ["--threshold", "[0, 1]"]),
    "threshold_nan": (["--threshold", "nan"], ["--threshold"]),
    "mc_samples_one": (["--mc-samples", "1"], ["--mc-samples"]),
    "temperature_zero": (["--temperature", "0"], ["--temperature"]),
}


@pytest.mark.parametrize("case", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_bad_option_fails_at_once_naming_its_flag(case, good_catalog, weights, tmp_path, capsys):
    extra, names = case
    out = tmp_path / "scored.fits"
    start = time.monotonic()
    code = _cli(good_catalog, out, weights, tmp_path / "cache", *extra)
    elapsed = time.monotonic() - start
    line = _assert_clean_failure(code, capsys, out, names)
    assert "_" not in line.split("error: ", 1)[1].split(" ", 1)[0]  # the flag, not a keyword
    assert elapsed < 1.0
    _nothing_started(tmp_path, tmp_path / "cache")


def test_bad_option_names_the_keyword_in_python(good_catalog):
    from lsbg_classify.pipeline.catalog.read import read_catalog
    from lsbg_classify.pipeline.options import OptionError

    table = read_catalog(good_catalog)
    for options, name in ((dict(chunk_size=0), "chunk_size"), (dict(workers=0), "workers"),
                          (dict(threshold=2.0), "threshold"), (dict(batch_size=-1), "batch_size")):
        with pytest.raises(OptionError, match=name) as info:
            classify_catalog(table, backend="simulated", **options)
        assert info.value.option == name


def test_existing_result_columns_are_refused_before_fetching(weights, tmp_path, capsys):
    path = _write(tmp_path / "scored_before.csv", "ra,dec,lsbg_prob\n10,-45,42\n20,-46,42\n")
    out = tmp_path / "again.ecsv"
    cache = tmp_path / "cache"
    start = time.monotonic()
    code = _cli(path, out, weights, cache)
    assert time.monotonic() - start < 1.0
    _assert_clean_failure(code, capsys, out, ["lsbg_prob", "--overwrite-columns"])
    _nothing_started(tmp_path, cache)
    assert _cli(path, out, weights, cache, "--overwrite-columns") == 0
    prob = np.asarray(Table.read(out)["lsbg_prob"])
    assert np.all((prob >= 0) & (prob <= 1))


def test_existing_result_columns_in_python_name_the_keyword():
    asked = []

    class Recording(_CannedBackend):
        def download(self, ra, dec):
            asked.append((ra, dec))
            return super().download(ra, dec)

    table = Table({"ra": [10.0], "dec": [-45.0], "lsbg_status": ["x"]})
    with pytest.raises(CatalogError, match=r"overwrite_columns=True"):
        classify_catalog(table, backend=Recording(), model=LSBGModel(_ConstantNetwork(), "c"),
                         cache=False, progress=False)
    assert asked == []  # refused before anything was fetched


def test_column_name_the_output_format_cannot_hold_fails_before_fetching(weights, tmp_path,
                                                                         capsys):
    path = tmp_path / "cands.ecsv"
    Table({"ra": [10.0, 20.0], "dec": [-45.0, -46.0], "Größe": [1.0, 2.0]}).write(path)
    out = tmp_path / "scored.fits"
    _assert_clean_failure(_cli(path, out, weights, tmp_path / "cache"), capsys, out,
                          ["scored.fits", "ASCII"])
    _nothing_started(tmp_path, tmp_path / "cache")


def _keras_model(path, units, activation):
    import keras

    inputs = keras.Input((64, 64, 3))
    flat = keras.layers.Flatten()(keras.layers.AveragePooling2D(8)(inputs))
    keras.Model(inputs, keras.layers.Dense(units, activation=activation)(flat)).save(path)
    return path


@pytest.mark.parametrize("units, activation, names", [
    (2, "sigmoid", ["--model", "two.keras", "one probability"]),
    (1, None, ["--model", "linear.keras", "sigmoid"]),
], ids=["two_outputs", "no_sigmoid"])
def test_model_with_the_wrong_output_fails_before_fetching(units, activation, names,
                                                           good_catalog, tmp_path, capsys):
    model = _keras_model(tmp_path / names[1], units, activation)
    out = tmp_path / "scored.fits"
    code = _cli(good_catalog, out, str(model), tmp_path / "cache")
    _assert_clean_failure(code, capsys, out, names)
    _nothing_started(tmp_path, tmp_path / "cache")


def _keras_naming_os_system(path):
    import json
    import zipfile

    source = _keras_model(path.with_name("plain.keras"), 1, "sigmoid")
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config["config"]["layers"][1].update(module="os", class_name="system")
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    source.unlink()
    return path


@pytest.mark.parametrize("make", [
    lambda path: _write(path.with_name("garbage.weights.h5"), b"not an HDF5 file" * 10),
    lambda path: _keras_naming_os_system(path.with_name("evil.keras")),
], ids=["garbage_weights", "keras_naming_os_system"])
def test_unloadable_model_is_one_line(make, good_catalog, tmp_path, capsys):
    model = make(tmp_path / "x")
    out = tmp_path / "scored.fits"
    code = _cli(good_catalog, out, str(model), tmp_path / "cache")
    _assert_clean_failure(code, capsys, out, ["cannot load model", model.name])
    _nothing_started(tmp_path, tmp_path / "cache")


def test_file_in_the_way_of_the_checkpoint(good_catalog, weights, tmp_path, capsys):
    out = tmp_path / "scored.fits"
    blocker = _write(tmp_path / "scored.fits.checkpoint", "mine")
    code = _cli(good_catalog, out, weights, tmp_path / "cache")
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert str(blocker) in err
    assert blocker.read_text() == "mine" and not out.exists()


@pytest.mark.skipif(not os.path.isdir("/sys") or os.access("/sys", os.W_OK) and (
    os.geteuid() != 0 if hasattr(os, "geteuid") else True),
    reason="needs a directory that cannot be written to")
def test_read_only_output_directory(good_catalog, weights, tmp_path, capsys):
    out = Path("/sys") / "scored.fits"  # read-only for root too
    code = _cli(good_catalog, out, weights, tmp_path / "cache")
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "/sys" in err and "ermission" in err
    _nothing_started(tmp_path, tmp_path / "cache")


def test_url_without_a_scheme_fails_at_once_naming_the_flag(good_catalog, weights, tmp_path,
                                                            capsys):
    out = tmp_path / "scored.fits"
    code = main(["classify", str(good_catalog), "-o", str(out), "--model", weights,
                 "--base-url", "user:secret@example.org/viewer", "--cache",
                 str(tmp_path / "cache"), "--quiet"])
    line = _assert_clean_failure(code, capsys, out, ["--base-url", "http://"])
    assert "secret" not in line
    _nothing_started(tmp_path, tmp_path / "cache")


# -- why rows were not scored (issue 11) --------------------------------------------------------


def test_summary_of_reasons_and_exit_3_when_nothing_is_scored(weights, tmp_path, capsys):
    import socket

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = _write(tmp_path / "cands.csv", "ra,dec\n10,-45\n20,-46\n")
    out = tmp_path / "scored.ecsv"
    code = main(["classify", str(path), "-o", str(out), "--model", weights, "--no-cache",
                 "--base-url", f"http://127.0.0.1:{port}/viewer", "--quiet", "--messages"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "fetch_failed 2" in err
    assert f"127.0.0.1:{port}" in err and "no row could be scored" in err
    scored = Table.read(out)
    assert list(scored["lsbg_status"]) == [status.FETCH_FAILED] * 2
    assert all(f"127.0.0.1:{port}" in m for m in scored["lsbg_message"])


def test_summary_on_stderr_without_the_column(weights, shared_cache, tmp_path, capsys):
    path = _write(tmp_path / "cands.csv", "ra,dec\n10,-45\n20,89.5\n")
    out = tmp_path / "scored.ecsv"
    assert _cli(path, out, weights, shared_cache) == 0
    err = capsys.readouterr().err
    assert "no_coverage 1" in err and "ok 1" in err
    assert "no_coverage (1 row):" in err
    assert "lsbg_message" not in Table.read(out).colnames


# -- smaller items of point 8 (issue 11) -----------------------------------------------------------


def test_csv_with_a_byte_order_mark(weights, shared_cache, tmp_path):
    path = _write(tmp_path / "bom.csv", "\ufeffra,dec\n10,-45\n".encode("utf-8"))
    path.write_bytes(b"\xef\xbb\xbfra,dec\n10,-45\n")
    out = tmp_path / "scored.ecsv"
    assert _cli(path, out, weights, shared_cache) == 0
    assert Table.read(out).colnames[:2] == ["ra", "dec"]


def test_duplicate_ra_columns_are_an_error(weights, tmp_path, capsys):
    path = _write(tmp_path / "dup.csv", "ra,dec,ra\n10,-45,11\n")
    out = tmp_path / "scored.fits"
    _assert_clean_failure(_cli(path, out, weights, tmp_path / "cache"), capsys, out,
                          ["ra, ra_1", "twice", "--ra-col"])


def test_hdu_chooses_the_table_of_a_multi_hdu_fits(weights, shared_cache, tmp_path, capsys):
    from astropy.io import fits

    first = fits.BinTableHDU(Table({"flux": [1.0, 2.0, 3.0]}), name="PHOT")
    second = fits.BinTableHDU(Table({"ra": [10.0, 20.0], "dec": [-45.0, -46.0]}), name="POS")
    path = tmp_path / "multi.fits"
    fits.HDUList([fits.PrimaryHDU(), first, second]).writeto(path)
    out = tmp_path / "scored.ecsv"
    for hdu in ("2", "POS"):
        assert _cli(path, out, weights, shared_cache, "--hdu", hdu, "--overwrite") == 0
        assert len(Table.read(out)) == 2
    capsys.readouterr()
    _assert_clean_failure(_cli(path, out, weights, shared_cache, "--hdu", "1", "--overwrite"),
                          capsys, out, ["no RA column"], before=_sha(out))


def test_damaged_checkpoint_manifest(good_catalog, weights, shared_cache, tmp_path, capsys):
    out = tmp_path / "scored.fits"
    checkpoint = tmp_path / "scored.fits.checkpoint"
    checkpoint.mkdir()
    (checkpoint / "manifest.json").write_text("")  # as a kill during the old write left it
    assert _cli(good_catalog, out, weights, shared_cache) == 0  # no chunk: starts afresh
    checkpoint.mkdir()
    (checkpoint / "manifest.json").write_text("")
    (checkpoint / "chunk-000000000000.npz").write_bytes(b"")
    code = _cli(good_catalog, out, weights, shared_cache, "--overwrite")
    err = capsys.readouterr().err
    assert code == 2 and "damaged manifest" in err and "Expecting value" not in err
