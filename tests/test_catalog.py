"""Tests of lsbg_classify.pipeline.catalog: reading, position parsing, results, atomic writes."""

import os
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Column, MaskedColumn, QTable, Table
from astropy.utils.exceptions import AstropyUserWarning
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsbg_classify import status
from lsbg_classify.pipeline.catalog.columns import (
    Positions,
    add_result_columns,
    extract_positions,
    find_position_columns,
)
from lsbg_classify.pipeline.catalog.read import (
    DEC_NAMES,
    OUTPUT_COLUMNS,
    PROVENANCE_KEY,
    RA_NAMES,
    CatalogError,
    format_from_path,
    read_catalog,
)
from lsbg_classify.pipeline.catalog.write import same_file, write_catalog

REPO = Path(__file__).resolve().parents[1]


def _table(ra, dec, ra_name="ra", dec_name="dec", **extra):
    t = Table()
    t[ra_name] = ra
    t[dec_name] = dec
    for name, values in extra.items():
        t[name] = values
    return t


def _flag(table, **kwargs):
    """extract_positions(on_invalid='flag') without the expected warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        return extract_positions(table, on_invalid="flag", **kwargs)


# ------------------------------------------------------------------ column detection


@pytest.mark.parametrize("ra_name, dec_name", [
    ("ra", "dec"), ("RA", "DEC"), ("Ra", "Dec"), ("RAJ2000", "DEJ2000"), ("raj2000", "decj2000"),
    ("RAJ2000", "DECJ2000"), ("ALPHA_J2000", "DELTA_J2000"), ("alpha_j2000", "delta_j2000"),
    ("ra_deg", "dec_deg"), ("RAdeg", "DEdeg"), ("radeg", "dedeg"), ("RA_ICRS", "DE_ICRS"),
    ("ra_icrs", "dec_icrs"), ("coord_ra", "coord_dec"), ("_RAJ2000", "_DEJ2000"),
])
def test_detects_name_families_any_case(ra_name, dec_name):
    t = _table([10.0, 20.0], [1.0, 2.0], ra_name, dec_name, mag=[20.0, 21.0])
    t[ra_name].unit = t[dec_name].unit = u.deg
    assert find_position_columns(t) == (ra_name, dec_name)
    pos = extract_positions(t)
    np.testing.assert_allclose(pos.ra, [10, 20])
    np.testing.assert_allclose(pos.dec, [1, 2])
    assert pos.columns == (ra_name, dec_name)


def test_name_lists_are_lower_case_and_distinct():
    for names in (RA_NAMES, DEC_NAMES):
        assert all(n == n.lower() for n in names)
        assert len(set(names)) == len(names)
    assert not set(RA_NAMES) & set(DEC_NAMES)


def test_skycoord_column_found_and_transformed_to_icrs():
    t = Table()
    t["id"] = [1, 2, 3]
    t["pos"] = SkyCoord([10, 200, 300] * u.deg, [30, -40, 60] * u.deg, frame="galactic")
    assert find_position_columns(t) == ("pos", None)
    pos = extract_positions(t)
    icrs = t["pos"].icrs
    np.testing.assert_allclose(pos.ra, icrs.ra.deg)
    np.testing.assert_allclose(pos.dec, icrs.dec.deg)
    assert pos.valid.all() and pos.columns == ("pos",)


def test_skycoord_wins_over_name_columns_unless_names_given():
    t = _table([1.0], [2.0])
    t["c"] = SkyCoord([50] * u.deg, [-30] * u.deg)
    assert find_position_columns(t) == ("c", None)
    assert find_position_columns(t, ra_col="ra", dec_col="dec") == ("ra", "dec")
    assert find_position_columns(t, ra_col="c") == ("c", None)
    with pytest.raises(CatalogError, match="SkyCoord"):
        find_position_columns(t, ra_col="c", dec_col="dec")


def test_skycoord_with_nan_and_mask_flagged():
    from astropy.utils.masked import Masked

    ra = Masked([10.0, np.nan, 30.0] * u.deg, mask=[False, False, True])
    t = Table()
    t["c"] = SkyCoord(ra, [1.0, 2.0, 3.0] * u.deg)
    pos = _flag(t)
    assert pos.valid.tolist() == [True, False, False]
    with pytest.raises(CatalogError, match=r"'c'.*rows 1"):
        extract_positions(t)


def test_several_skycoord_columns_are_ambiguous():
    t = Table()
    t["a"] = SkyCoord([1] * u.deg, [2] * u.deg)
    t["b"] = SkyCoord([1] * u.deg, [2] * u.deg)
    with pytest.raises(CatalogError, match="a, b"):
        find_position_columns(t)


def test_explicit_names_and_case_insensitive_match():
    t = _table([10.0], [20.0], "x_pos", "y_pos", RA=[1.0], DEC=[2.0])
    assert find_position_columns(t, ra_col="x_pos", dec_col="y_pos") == ("x_pos", "y_pos")
    assert find_position_columns(t, ra_col="X_POS", dec_col="y_pos") == ("x_pos", "y_pos")
    assert extract_positions(t, ra_col="x_pos", dec_col="y_pos").ra[0] == 10.0
    # only one given: the other is still found by name
    assert find_position_columns(t, ra_col="x_pos") == ("x_pos", "DEC")


def test_explicit_name_missing_lists_columns():
    t = _table([10.0], [20.0], mag=[1.0])
    with pytest.raises(CatalogError) as err:
        find_position_columns(t, ra_col="RA_WIN", dec_col="dec")
    message = str(err.value)
    assert "RA_WIN" in message and "ra_col" in message
    assert "ra, dec, mag" in message


def test_ambiguous_names_listed():
    t = _table([1.0], [2.0], RAJ2000=[1.0], DEJ2000=[2.0])
    with pytest.raises(CatalogError) as err:
        find_position_columns(t)
    message = str(err.value)
    assert "ra" in message and "RAJ2000" in message
    assert "ra_col" in message and "dec_col" in message


def test_same_name_different_case_is_ambiguous():
    t = _table([1.0], [2.0], RA=[3.0])
    with pytest.raises(CatalogError, match=r"ra, RA"):
        find_position_columns(t)


def test_missing_columns_named():
    t = Table({"x": [1.0], "y": [2.0]})
    with pytest.raises(CatalogError) as err:
        find_position_columns(t)
    assert "no RA column" in str(err.value) and "x, y" in str(err.value)
    t = Table({"ra": [1.0], "y": [2.0]})
    with pytest.raises(CatalogError, match="no Dec column"):
        find_position_columns(t)


def test_ra_and_dec_cannot_be_the_same_column():
    t = Table({"ra": [1.0]})
    with pytest.raises(CatalogError, match="both"):
        find_position_columns(t, ra_col="ra", dec_col="ra")


# -------------------------------------------------------------------------- units


@pytest.mark.parametrize("unit, ra_in, dec_in, ra_deg, dec_deg", [
    (None, [150.0], [-5.0], 150.0, -5.0),
    (u.deg, [150.0], [-5.0], 150.0, -5.0),
    (u.rad, [np.pi / 2], [-np.pi / 4], 90.0, -45.0),
    (u.arcsec, [3600.0], [-7200.0], 1.0, -2.0),
    ("degrees", [150.0], [-5.0], 150.0, -5.0),
])
def test_units_honoured(unit, ra_in, dec_in, ra_deg, dec_deg):
    t = _table(Column(ra_in, unit=unit), Column(dec_in, unit=unit))
    pos = extract_positions(t)
    np.testing.assert_allclose(pos.ra, [ra_deg])
    np.testing.assert_allclose(pos.dec, [dec_deg])
    assert pos.ra.dtype == np.float64


def test_hourangle_ra_times_15():
    t = _table(Column([10.0, 23.5], unit=u.hourangle), Column([1.0, 2.0], unit=u.deg))
    np.testing.assert_allclose(extract_positions(t).ra, [150.0, 352.5])
    t["ra"].unit = u.hour  # a time unit on RA means hours of RA
    np.testing.assert_allclose(extract_positions(t).ra, [150.0, 352.5])


def test_hourangle_with_degree_values_is_an_error_even_when_flagging():
    t = _table(Column([10.0, 150.0], unit=u.hourangle), [1.0, 2.0])
    for on_invalid in ("raise", "flag"):
        with pytest.raises(CatalogError, match=r"'ra'.*hourangle.*150"):
            extract_positions(t, on_invalid=on_invalid)


def test_quantity_columns():
    t = QTable()
    t["ra"] = [1.0, 2.0] * u.rad
    t["dec"] = [10.0, 20.0] * u.arcmin
    pos = extract_positions(t)
    np.testing.assert_allclose(pos.ra, np.degrees([1.0, 2.0]))
    np.testing.assert_allclose(pos.dec, [10 / 60, 20 / 60])


@pytest.mark.parametrize("ra_unit, dec_unit, match", [
    (u.mag, None, "'ra'.*not an angle"),
    (None, u.m, "'dec'.*not an angle"),
    (None, u.hourangle, "'dec'.*hourangle"),
    ("furlongs per fortnight", None, "'ra'.*not an angle"),
])
def test_bad_units(ra_unit, dec_unit, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns about the unparsable unit string
        t = _table(Column([1.0], unit=ra_unit), Column([2.0], unit=dec_unit))
    with pytest.raises(CatalogError, match=match):
        extract_positions(t)


def test_unitless_coord_ra_in_radian_range_warns():
    t = _table([0.5, 1.0], [0.1, -0.2], "coord_ra", "coord_dec")
    with pytest.warns(AstropyUserWarning, match="radians"):
        pos = extract_positions(t)
    np.testing.assert_allclose(pos.ra, [0.5, 1.0])  # still degrees


# ---------------------------------------------------------------- string positions


def test_sexagesimal_strings():
    t = _table(["10:21:33.2", "10h21m33.2s", "10 21 33.2", "150.5", "150d30m"],
               ["-05:12:00", "-5d12m", "-05 12 00", "-5.2", "+05:12:00"])
    pos = extract_positions(t)
    expected_ra = (10 + 21 / 60 + 33.2 / 3600) * 15
    np.testing.assert_allclose(pos.ra, [expected_ra] * 3 + [150.5, 150.5])
    np.testing.assert_allclose(pos.dec, [-5.2] * 4 + [5.2])


def test_byte_and_object_strings():
    ra = np.array([b"10:00:00", b"150.0"])
    dec = np.array(["-05:00:00", 3.5], dtype=object)
    pos = extract_positions(_table(ra, dec))
    np.testing.assert_allclose(pos.ra, [150.0, 150.0])
    np.testing.assert_allclose(pos.dec, [-5.0, 3.5])


def test_string_column_with_degree_unit():
    t = _table(Column(["150:30:00"], unit=u.deg), Column(["1.5"], unit=u.deg))
    assert extract_positions(t).ra[0] == pytest.approx(150.5)


def test_numeric_string_column_honours_unit():
    t = _table(Column(["10.0"], unit=u.hourangle), ["2.0"])
    assert extract_positions(t).ra[0] == pytest.approx(150.0)


def test_non_coordinate_dtype_is_an_error():
    with pytest.raises(CatalogError, match="'ra'.*bool"):
        extract_positions(_table([True, False], [1.0, 2.0]))
    with pytest.raises(CatalogError, match="'dec'.*one value per row"):
        extract_positions(_table([1.0, 2.0], np.ones((2, 3))))


# --------------------------------------------------------------------- validation


INVALID_CASES = [
    ("ra", np.nan, "not finite"),
    ("ra", np.inf, "not finite"),
    ("dec", -np.inf, "not finite"),
    ("ra", 360.0, "RA outside"),
    ("ra", -0.5, "RA outside"),
    ("dec", 90.5, "Dec outside"),
    ("dec", -91.0, "Dec outside"),
    ("ra", "junk", "not a number or sexagesimal"),
    ("dec", "12:xx", "not a number or sexagesimal"),
    ("ra", "12:61:00", "not a number or sexagesimal"),
    ("ra", "", "masked or missing"),
    ("dec", "masked", "masked or missing"),
]


def _with_bad_value(column, value):
    ra = [10.0, 20.0, 30.0, 40.0]
    dec = [-10.0, -20.0, -30.0, -40.0]
    target = ra if column == "ra" else dec
    if value == "masked":
        col = MaskedColumn(target, mask=[False, False, True, False])
        return _table(col, dec) if column == "ra" else _table(ra, col)
    if isinstance(value, str):
        target[:] = [str(v) for v in target]
    target[2] = value
    return _table(ra, dec)


@pytest.mark.parametrize("column, value, reason", INVALID_CASES)
def test_invalid_value_raises_naming_column_and_row(column, value, reason):
    t = _with_bad_value(column, value)
    with pytest.raises(CatalogError) as err:
        extract_positions(t)
    message = str(err.value)
    assert f"column {column!r}" in message
    assert reason in message
    assert "rows 2 (" in message
    assert "1 of 4 rows" in message


@pytest.mark.parametrize("column, value, reason", INVALID_CASES)
def test_invalid_value_flagged(column, value, reason):
    t = _with_bad_value(column, value)
    with pytest.warns(AstropyUserWarning, match="1 of 4 rows"):
        pos = extract_positions(t, on_invalid="flag")
    assert isinstance(pos, Positions) and len(pos) == 4
    assert pos.valid.tolist() == [True, True, False, True]
    assert np.isnan(pos.ra[2]) and np.isnan(pos.dec[2])
    np.testing.assert_allclose(pos.ra[[0, 1, 3]], [10, 20, 40])
    assert pos.n_invalid == 1
    assert reason in pos.reasons[2] and pos.reasons[0] == ""
    assert len(pos.problems) == 1 and f"column {column!r}" in pos.problems[0]


def test_boundaries():
    t = _table([0.0, 359.999999, 180.0, 0.0], [90.0, -90.0, 0.0, -0.0])
    assert extract_positions(t).valid.all()


def test_only_first_five_rows_shown():
    ra = np.full(12, 10.0)
    ra[[1, 2, 4, 6, 7, 8, 9]] = 400.0
    with pytest.raises(CatalogError) as err:
        extract_positions(_table(ra, np.zeros(12)))
    message = str(err.value)
    assert "7 row(s) RA outside" in message
    assert "rows 1 (400.0), 2 (400.0), 4 (400.0), 6 (400.0), 7 (400.0) (first 5 shown)" in message
    assert "8 (" not in message


def test_problems_in_both_columns_reported():
    t = _table([np.nan, 10.0, 10.0], [0.0, 95.0, 0.0])
    with pytest.raises(CatalogError) as err:
        extract_positions(t)
    assert "column 'ra'" in str(err.value) and "column 'dec'" in str(err.value)
    assert "2 of 3 rows" in str(err.value)
    assert _flag(t).valid.tolist() == [False, False, True]


def test_empty_table():
    with pytest.raises(CatalogError, match="no rows"):
        extract_positions(_table(Column([], dtype=float), Column([], dtype=float)))


def test_bad_on_invalid_value():
    with pytest.raises(ValueError, match="on_invalid"):
        extract_positions(_table([1.0], [2.0]), on_invalid="ignore")


def test_input_table_not_modified():
    t = _table(MaskedColumn([1.0, np.nan], mask=[False, False]), ["1:00:00", "2:00:00"])
    before = t.copy()
    _flag(t)
    assert t.colnames == before.colnames
    assert np.isnan(t["ra"][1]) and list(t["dec"]) == list(before["dec"])


# --------------------------------------------------- property test: never crash oddly


_ODD_STRINGS = ["10:21:33.2", "-05:12:00", "10h21m33.2s", "12:61:00", "", " ", "nan",
                "1e400", "-0", "359.9999", "360", "+90", "--", "1_000"]
_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10**20, 10**20),
    st.text(max_size=12),
    st.sampled_from(_ODD_STRINGS),
    st.none(),
)


@st.composite
def _position_column(draw, n):
    kind = draw(st.sampled_from(["float", "str", "object"]))
    mask = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    if kind == "float":
        data = np.array(draw(st.lists(st.floats(allow_nan=True, allow_infinity=True),
                                      min_size=n, max_size=n)), dtype=float)
    elif kind == "str":
        texts = st.one_of(st.text(max_size=12), st.sampled_from(_ODD_STRINGS))
        data = np.array(draw(st.lists(texts, min_size=n, max_size=n)), dtype=str)
    else:
        data = np.empty(n, dtype=object)
        data[:] = draw(st.lists(_values, min_size=n, max_size=n))
    unit = draw(st.sampled_from([None, u.deg, u.rad, u.hourangle, u.arcsec]))
    if kind == "object":
        return kind, Column(data, unit=unit)
    return kind, MaskedColumn(data, mask=mask, unit=unit)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), n=st.integers(1, 8), on_invalid=st.sampled_from(["raise", "flag"]))
def test_extract_positions_property(data, n, on_invalid):
    ra_kind, ra = data.draw(_position_column(n))
    dec_kind, dec = data.draw(_position_column(n))
    t = _table(ra, dec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pos = extract_positions(t, on_invalid=on_invalid)
    except CatalogError:
        return
    assert pos.ra.shape == pos.dec.shape == pos.valid.shape == (n,)
    assert pos.ra.dtype == pos.dec.dtype == np.float64 and pos.valid.dtype == bool
    v = pos.valid
    assert np.all((pos.ra[v] >= 0) & (pos.ra[v] < 360))
    assert np.all((pos.dec[v] >= -90) & (pos.dec[v] <= 90))
    assert np.all(np.isnan(pos.ra[~v]) & np.isnan(pos.dec[~v]))
    assert bool(pos.problems) == (not v.all())
    if on_invalid == "raise":
        assert v.all()
    for kind, col in ((ra_kind, ra), (dec_kind, dec)):
        if kind != "object":
            assert not np.any(v & np.asarray(col.mask))
    if ra_kind == dec_kind == "float" and ra.unit is dec.unit is None:
        r, d = np.asarray(ra.data.data), np.asarray(dec.data.data)
        with np.errstate(invalid="ignore"):
            expect = (~ra.mask & ~dec.mask & (r >= 0) & (r < 360) & (d >= -90) & (d <= 90))
        np.testing.assert_array_equal(v, expect)


# -------------------------------------------------------------------- result columns


def _scored_example():
    t = Table()
    t["col0"] = np.arange(4)
    t["ra"] = Column([1.0, 2.0, 3.0, 4.0], unit=u.deg, description="Right ascension")
    t["dec"] = Column([-1.0, -2.0, -3.0, -4.0], unit=u.deg)
    t["mu"] = MaskedColumn([24.0, 25.0, 26.0, 27.0], mask=[0, 0, 1, 0], unit=u.mag / u.arcsec**2)
    t["name"] = ["a", "b", "c", "d"]
    t.meta["survey"] = "des"
    prob = np.array([0.1, np.nan, 0.9, 0.5])
    out = add_result_columns(
        t, prob, [0, 0, 1, 1], [status.OK, status.FETCH_FAILED, status.OK, status.OK],
        meta={"backend": "legacysurvey", "pixel_scale_arcsec": 0.131, "n_rows": 4,
              "weights_sha256": "f" * 64, "cache": True, "extra": {"seed": 3}},
    )
    return t, out


def test_add_result_columns():
    t, out = _scored_example()
    assert out is not t
    assert t.colnames == ["col0", "ra", "dec", "mu", "name"]
    assert PROVENANCE_KEY not in t.meta
    assert out.colnames == t.colnames + list(OUTPUT_COLUMNS)
    assert out["ra"].unit == u.deg and out["ra"].description == "Right ascension"
    assert out["mu"].mask.tolist() == [False, False, True, False]
    assert out.meta["survey"] == "des"
    prob, cls, st_ = out["lsbg_prob"], out["lsbg_class"], out["lsbg_status"]
    assert prob.dtype == np.float32 and cls.dtype == np.int8 and st_.dtype.kind == "U"
    assert st_.dtype.itemsize // 4 >= status.STATUS_WIDTH
    assert prob.mask.tolist() == [False, True, False, False] and np.isnan(prob.data.data[1])
    assert cls.mask.tolist() == [False, True, False, False] and cls.fill_value == -1
    assert cls.filled().tolist() == [0, -1, 1, 1]
    assert np.isnan(prob.filled()[1])
    assert list(st_) == ["ok", "fetch_failed", "ok", "ok"]
    assert all(out[c].description for c in OUTPUT_COLUMNS)
    prov = out.meta[PROVENANCE_KEY]
    assert prov["software"] == "lsbg_classify" and prov["version"]
    assert prov["backend"] == "legacysurvey" and prov["extra_seed"] == 3
    assert all(isinstance(v, (str, int, float, bool)) for v in prov.values())


def test_add_result_columns_refuses_existing_columns():
    _, out = _scored_example()
    with pytest.raises(CatalogError, match="lsbg_prob"):
        add_result_columns(out, np.zeros(4), np.zeros(4), ["ok"] * 4)
    again = add_result_columns(out, np.ones(4), np.ones(4), ["ok"] * 4, overwrite_columns=True,
                               meta={"run": 2})
    assert again.colnames == out.colnames
    assert again["lsbg_prob"].tolist() == [1.0] * 4
    assert "backend" not in again.meta[PROVENANCE_KEY]  # provenance replaced, not mixed
    other = add_result_columns(out, np.ones(4), np.ones(4), ["ok"] * 4, prefix="v2_")
    assert other.colnames[-3:] == ["v2_prob", "v2_class", "v2_status"]


@pytest.mark.parametrize("kwargs, match", [
    ({"prob": np.zeros(3)}, "shape"),
    ({"prob": np.full(4, 1.5)}, r"\[0, 1\]"),
    ({"lsbg_class": np.full(4, 2)}, "0 .* or 1"),
    ({"status": ["ok", "ok", "ok", "weird"]}, "weird"),
])
def test_add_result_columns_checks_inputs(kwargs, match):
    args = {"prob": np.full(4, 0.5), "lsbg_class": np.ones(4), "status": ["ok"] * 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        add_result_columns(_table(np.ones(4), np.ones(4)), **args)


def test_add_result_columns_keeps_qtable_and_skycoord():
    t = QTable()
    t["c"] = SkyCoord([1, 2] * u.deg, [3, 4] * u.deg)
    t["flux"] = [1.0, 2.0] * u.Jy
    out = add_result_columns(t, np.ma.masked_array([0.2, 0.3], mask=[False, True]), [0, 0],
                             ["ok", "no_coverage"])
    assert isinstance(out, QTable) and isinstance(out["c"], SkyCoord)
    assert out["flux"].unit == u.Jy
    assert out["lsbg_prob"].mask.tolist() == [False, True]
    assert out["lsbg_class"].mask.tolist() == [False, True]


# ------------------------------------------------------------------ reading/writing


ROUND_TRIP_ENDINGS = ["fits", "fits.gz", "csv", "ecsv", "parquet", "vot", "xml", "hdf5"]


@pytest.mark.parametrize("ending", ROUND_TRIP_ENDINGS)
def test_round_trip(tmp_path, ending):
    if ending == "hdf5":
        pytest.importorskip("h5py")
    if ending == "parquet":
        pytest.importorskip("pyarrow")
    _, out = _scored_example()
    path = tmp_path / f"scored.{ending}"
    write_catalog(out, path)
    assert os.listdir(tmp_path) == [path.name]
    back = read_catalog(path)
    assert back.colnames == out.colnames
    assert back["col0"].tolist() == [0, 1, 2, 3]
    assert back["name"].tolist() == ["a", "b", "c", "d"]
    np.testing.assert_allclose(back["ra"], out["ra"])
    for name in ("mu", "lsbg_prob", "lsbg_class"):
        assert np.ma.getmaskarray(back[name]).tolist() == out[name].mask.tolist(), name
    np.testing.assert_allclose(back["lsbg_prob"].filled(np.nan), out["lsbg_prob"].filled(np.nan))
    assert back["lsbg_class"].filled(-1).tolist() == [0, -1, 1, 1]
    assert back["lsbg_status"].tolist() == ["ok", "fetch_failed", "ok", "ok"]
    if ending == "csv":
        return  # plain CSV keeps values and masks only
    assert back["ra"].unit == u.deg and back["mu"].unit == u.mag / u.arcsec**2
    meta = {str(k).lower(): v for k, v in back.meta.items()}
    assert meta["survey"] == "des"
    assert back.meta[PROVENANCE_KEY] == out.meta[PROVENANCE_KEY]
    assert back["ra"].description == "Right ascension"
    if ending == "fits.gz":
        assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_fits_keeps_int8_values(tmp_path):
    t = _table([1.0, 2.0], [3.0, 4.0], flags=np.array([5, -3], dtype=np.int8))
    write_catalog(t, tmp_path / "t.fits")
    assert read_catalog(tmp_path / "t.fits")["flags"].tolist() == [5, -3]


def test_write_refuses_existing_file(tmp_path):
    path = tmp_path / "out.ecsv"
    path.write_text("precious")
    _, out = _scored_example()
    with pytest.raises(CatalogError, match="out.ecsv.*exists"):
        write_catalog(out, path)
    assert path.read_text() == "precious"
    write_catalog(out, path, overwrite=True)
    assert read_catalog(path)["lsbg_status"][1] == "fetch_failed"
    assert os.listdir(tmp_path) == ["out.ecsv"]


def test_new_file_permissions_follow_umask(tmp_path):
    path = tmp_path / "out.csv"
    write_catalog(_table([1.0], [2.0]), path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("ending", ["parquet", "fits", "hdf5"])
def test_failed_write_leaves_no_temp_file_and_keeps_original(tmp_path, ending):
    if ending == "hdf5":
        pytest.importorskip("h5py")
    t = _table([1.0, 2.0], [3.0, 4.0])
    t["obj"] = np.array([{"a": 1}, None], dtype=object)  # no format can hold this
    path = tmp_path / f"out.{ending}"
    with pytest.raises(CatalogError, match=f"out.{ending}"):
        write_catalog(t, path)
    assert os.listdir(tmp_path) == []
    path.write_bytes(b"original")
    with pytest.raises(CatalogError):
        write_catalog(t, path, overwrite=True)
    assert os.listdir(tmp_path) == [path.name]
    assert path.read_bytes() == b"original"


def test_write_missing_directory(tmp_path):
    target = tmp_path / "nope" / "out.fits"
    with pytest.raises(CatalogError, match="nope.*does not exist"):
        write_catalog(_table([1.0], [2.0]), target)
    assert not (tmp_path / "nope").exists()


def test_write_unknown_format(tmp_path):
    t = _table([1.0], [2.0])
    with pytest.raises(CatalogError, match="format"):
        write_catalog(t, tmp_path / "out.xyz")
    write_catalog(t, tmp_path / "out.xyz", format="ecsv")
    assert read_catalog(tmp_path / "out.xyz", format="ecsv")["ra"][0] == 1.0


def test_write_does_not_touch_the_table(tmp_path):
    _, out = _scored_example()
    before = {k: v for k, v in out.meta.items()}
    write_catalog(out, tmp_path / "o.fits")
    write_catalog(out, tmp_path / "o.vot")
    assert out.meta == before and out["lsbg_class"].dtype == np.int8


def test_format_from_path():
    assert format_from_path("a/b.FITS.gz") == "fits"
    assert format_from_path("x.csv") == "ascii.csv"
    assert format_from_path("x.votable") == "votable"
    assert format_from_path("x.txt") is None
    assert format_from_path("x.txt", reading=True) == "ascii"


def test_read_missing_file(tmp_path):
    with pytest.raises(CatalogError, match="not found.*missing.fits"):
        read_catalog(tmp_path / "missing.fits")
    with pytest.raises(CatalogError, match="not a file"):
        read_catalog(tmp_path)


@pytest.mark.parametrize("name, content", [
    ("bad.fits", b"this is not FITS"),
    ("bad.parquet", b"nor parquet"),
    ("bad.vot", b"<VOTABLE"),
    ("bad.unknownext", b"\x00\x01\x02"),
])
def test_read_unreadable_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CatalogError, match=f"cannot read catalog .*{name}"):
        read_catalog(path)


def test_read_unsupported_format(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("ra,dec\n1,2\n")
    with pytest.raises(CatalogError, match="t.csv.*xlsx"):
        read_catalog(path, format="xlsx")
    assert read_catalog(path, format="csv")["dec"][0] == 2


def test_csv_with_empty_cells_and_sexagesimal(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("name,RA,DEC\na,10:00:00,-05:00:00\nb,,+10:00:00\nc,11:00:00,+01:00:00\n")
    t = read_catalog(path)
    pos = _flag(t)
    assert pos.valid.tolist() == [True, False, True]
    np.testing.assert_allclose(pos.ra[[0, 2]], [150.0, 165.0])


def test_same_file(tmp_path):
    a = tmp_path / "a.fits"
    a.write_bytes(b"x")
    assert same_file(a, tmp_path / "." / "a.fits")
    link = tmp_path / "link.fits"
    link.symlink_to(a)
    assert same_file(a, link)
    assert not same_file(a, tmp_path / "b.fits")
    assert same_file(tmp_path / "new.fits", tmp_path / "sub" / ".." / "new.fits")


# --------------------------------------------------------------------- real files


@pytest.fixture
def shared_data():
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip("shared data directory (../shared/data) not available")
    return path


def test_deepshadows_baseline_test_catalog(shared_data, tmp_path):
    path = shared_data / "deepshadows" / "Baseline_test.csv"
    if not path.exists():
        pytest.skip(f"{path.name} not available")
    table = read_catalog(path)
    assert len(table) == 5000
    index_col = table.colnames[0]
    assert index_col not in ("ra", "dec")
    pos = extract_positions(table)
    assert pos.valid.all() and pos.columns == ("ra", "dec")
    assert np.all((pos.ra >= 0) & (pos.ra < 360)) and np.all(pos.dec < 10)
    prob = np.linspace(0, 1, 5000)
    out = add_result_columns(table, prob, (prob >= 0.5).astype(int), ["ok"] * 5000)
    assert out.colnames == [index_col, "ra", "dec", *OUTPUT_COLUMNS]
    assert out[index_col].tolist() == list(range(5000))
    write_catalog(out, tmp_path / "scored.csv")
    back = read_catalog(tmp_path / "scored.csv")
    assert back[index_col].tolist() == list(range(5000))
    np.testing.assert_array_equal(back["ra"], table["ra"])


@pytest.mark.parametrize("name, columns", [
    ("example_des.fits", ("ra", "dec")),
    ("example_des.csv", ("ra", "dec")),
    ("example_hsc.ecsv", ("RAJ2000", "DEJ2000")),
])
def test_example_catalogs(name, columns):
    table = read_catalog(REPO / "catalogs" / name)
    assert len(table) == 20
    pos = extract_positions(table)
    assert pos.valid.all() and pos.columns == columns
    assert table["r_eff"].mask.tolist().count(True) == 2
    if not name.endswith(".csv"):
        assert table["r_eff"].unit == u.arcsec
        assert {k.lower(): v for k, v in table.meta.items()}["survey"] == name[8:11]


def test_parquet_without_its_extra_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    table = Table({"ra": [10.0], "dec": [-40.0]})
    existing = tmp_path / "in.parquet"
    write_catalog(table, existing)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pandas" else real_find_spec(name, *a))
    with pytest.raises(CatalogError, match=r'parquet catalogs need pandas.*lsbg-classify\[parquet\]'):
        read_catalog(existing)
    out = tmp_path / "out.parquet"
    with pytest.raises(CatalogError, match=r"cannot write .*out\.parquet.*\[parquet\]"):
        write_catalog(table, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]  # nothing half-written
