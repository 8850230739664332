"""Scored catalogs as third-party tools read them.

Every output format is read back with its *native* reader (pyarrow for
Parquet, astropy's own readers for FITS, ECSV and VOTable), not with
:func:`lsbg_classify.pipeline.catalog.read.read_catalog`, and values and nulls are
compared.  FITS headers carry the column conventions TOPCAT reads
(``TCOMMn``, ``TUCDn``) and pass fitsverify; VOTables pass ``stilts
votlint``.  The two external checkers are skipped where not installed.
"""

import shutil
import subprocess

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Column, MaskedColumn, Table

from lsbg_classify import status
from lsbg_classify.pipeline.catalog.columns import add_result_columns
from lsbg_classify.pipeline.catalog.read import OUTPUT_COLUMNS, PROVENANCE_KEY, read_catalog
from lsbg_classify.pipeline.catalog.write import write_catalog

UCDS = dict(zip(OUTPUT_COLUMNS, ("stat.probability", "meta.code.class", "meta.code.status")))


def _scored():
    """A scored catalog with masked input columns of several types."""
    t = Table()
    t["ra"] = Column([10.0, 20.0, 30.0, 40.0], unit=u.deg)
    t["dec"] = Column([-1.0, -2.0, -3.0, -4.0], unit=u.deg)
    t["r_eff"] = MaskedColumn([2.5, 3.0, 4.5, 6.0], mask=[False, True, False, False],
                              unit=u.arcsec, description="half-light radius")
    t["n_det"] = MaskedColumn(np.array([3, 4, 5, 6], dtype=np.int32),
                              mask=[False, False, True, False])
    t["tile"] = MaskedColumn(["DES0001", "DES0002", "DES0003", "DES0004"],
                             mask=[False, False, False, True])
    t.meta["survey"] = "des"
    prob = np.ma.masked_array([0.1, 0.8, np.nan, 0.6], mask=[False, False, True, False])
    return add_result_columns(
        t, prob, [0, 1, 0, 1], [status.OK, status.OK, status.FETCH_FAILED, status.OK],
        meta={"backend": "legacysurvey", "layer": "des-dr1", "threshold": 0.5,
              "weights_path": "/a/rather/long/directory/name/" * 4 + "best.weights.h5"},
    )


MASKED = ("r_eff", "n_det", "tile", "lsbg_prob", "lsbg_class")


def _null_rows(values):
    return [i for i, v in enumerate(values) if v is None]


# ------------------------------------------------------------------------ Parquet


def test_parquet_has_arrow_nulls_and_native_types(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = _scored()
    path = tmp_path / "scored.parquet"
    write_catalog(out, path)
    arrow = pq.read_table(path)
    assert arrow.column_names == out.colnames  # no "<name>.mask" columns
    assert str(arrow.schema.field("lsbg_class").type) == "int8"
    assert str(arrow.schema.field("lsbg_prob").type) == "float"
    assert str(arrow.schema.field("n_det").type) == "int32"
    data = arrow.to_pydict()
    for name in MASKED:
        assert _null_rows(data[name]) == np.flatnonzero(out[name].mask).tolist(), name
    assert data["lsbg_class"] == [0, 1, None, 1]  # null, not -1
    assert data["r_eff"][0] == 2.5 and data["n_det"][3] == 6 and data["tile"][2] == "DES0003"
    assert data["lsbg_status"] == ["ok", "ok", "fetch_failed", "ok"]
    assert b"table_meta_yaml" in arrow.schema.metadata  # astropy's metadata for round trips


def test_parquet_nulls_in_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "scored.parquet"
    write_catalog(_scored(), path)
    frame = pd.read_parquet(path)
    assert frame["r_eff"].isna().tolist() == [False, True, False, False]
    assert frame["lsbg_class"].isna().tolist() == [False, False, True, False]
    assert frame["r_eff"][0] == 2.5


def test_parquet_round_trip_keeps_types_masks_and_metadata(tmp_path):
    pytest.importorskip("pyarrow")
    out = _scored()
    path = tmp_path / "scored.parquet"
    write_catalog(out, path)
    back = read_catalog(path)
    for name in MASKED:
        assert back[name].mask.tolist() == out[name].mask.tolist(), name
        assert back[name].dtype == out[name].dtype, name
    assert back["lsbg_class"].filled(-1).tolist() == [0, 1, -1, 1]
    assert back["tile"].filled("").tolist() == ["DES0001", "DES0002", "DES0003", ""]
    assert back["r_eff"].unit == u.arcsec and back["r_eff"].description == "half-light radius"
    assert back.meta[PROVENANCE_KEY] == out.meta[PROVENANCE_KEY]


def test_parquet_writing_leaves_the_table_alone(tmp_path):
    pytest.importorskip("pyarrow")
    out = _scored()
    before = dict(out["r_eff"].info.serialize_method)
    write_catalog(out, tmp_path / "scored.parquet")
    assert out["r_eff"].info.serialize_method == before


# ------------------------------------------------------ astropy's readers, directly


@pytest.mark.parametrize("ending, fmt", [("fits", "fits"), ("ecsv", "ascii.ecsv"),
                                         ("vot", "votable")])
def test_native_astropy_reader_sees_values_and_nulls(tmp_path, ending, fmt):
    out = _scored()
    path = tmp_path / f"scored.{ending}"
    write_catalog(out, path)
    back = Table.read(path, format=fmt)
    for name in ("r_eff", "n_det", "lsbg_prob", "lsbg_class"):
        assert np.ma.getmaskarray(back[name]).tolist() == out[name].mask.tolist(), name
        np.testing.assert_allclose(np.ma.filled(back[name], -1), out[name].filled(-1))
    assert [str(s) for s in back["lsbg_status"]] == ["ok", "ok", "fetch_failed", "ok"]
    assert back["r_eff"].unit == u.arcsec


# ------------------------------------------------------------- UCDs, descriptions


@pytest.mark.parametrize("ending", ["fits", "ecsv", "vot", "parquet", "hdf5"])
def test_result_columns_keep_ucds_and_descriptions(tmp_path, ending):
    if ending == "hdf5":
        pytest.importorskip("h5py")
    if ending == "parquet":
        pytest.importorskip("pyarrow")
    out = _scored()
    path = tmp_path / f"scored.{ending}"
    write_catalog(out, path)
    back = read_catalog(path)
    for name, ucd in UCDS.items():
        assert back[name].meta.get("ucd") == ucd, (ending, name)
        assert " ".join(back[name].description.split()) == out[name].description
    assert back["r_eff"].description == "half-light radius"


def test_votable_fields_carry_ucds(tmp_path):
    from astropy.io.votable import parse

    path = tmp_path / "scored.vot"
    write_catalog(_scored(), path)
    fields = {f.name: f for f in parse(str(path)).get_first_table().fields}
    for name, ucd in UCDS.items():
        assert fields[name].ucd == ucd
        assert fields[name].description


# -------------------------------------------------------------------- FITS cards


def test_fits_has_tcomm_tucd_and_longstrn(tmp_path):
    out = _scored()
    path = tmp_path / "scored.fits"
    write_catalog(out, path)
    header = fits.getheader(path, 1)
    number = {header[f"TTYPE{i}"]: i for i in range(1, header["TFIELDS"] + 1)}
    for name, ucd in UCDS.items():
        assert header[f"TUCD{number[name]}"] == ucd
        assert header[f"TCOMM{number[name]}"] == out[name].description
    assert header[f"TCOMM{number['r_eff']}"] == "half-light radius"
    assert f"TUCD{number['r_eff']}" not in header and f"TCOMM{number['ra']}" not in header
    assert any(len(card.image) > 80 for card in header.cards)  # CONTINUE'd long strings ...
    assert header["LONGSTRN"] == "OGIP 1.0"  # ... so the convention is declared


def test_fits_reader_moves_column_cards_off_meta(tmp_path):
    out = _scored()
    first, second = tmp_path / "a.fits", tmp_path / "b.fits"
    write_catalog(out, first)
    back = read_catalog(first)
    leaked = [k for k in back.meta if k.upper().startswith(("TCOMM", "TUCD", "LONGSTRN"))]
    assert not leaked
    write_catalog(back, second)  # a rewrite must not duplicate or shift cards
    header = fits.getheader(second, 1)
    assert list(header.keys()).count("LONGSTRN") == 1
    assert len(header.cards) == len(fits.getheader(first, 1).cards)


def test_fits_from_another_tool_gets_tcomm_as_description(tmp_path):
    path = tmp_path / "other.fits"
    hdu = fits.BinTableHDU.from_columns([fits.Column("ra", "D", array=[1.0]),
                                         fits.Column("dec", "D", array=[2.0])])
    hdu.header["TCOMM1"] = "Right ascension"
    hdu.header["TUCD1"] = "pos.eq.ra;meta.main"
    hdu.writeto(path)
    back = read_catalog(path)
    assert back["ra"].description == "Right ascension"
    assert back["ra"].meta["ucd"] == "pos.eq.ra;meta.main"
    assert "TCOMM1" not in back.meta and "TUCD1" not in back.meta


@pytest.mark.skipif(shutil.which("fitsverify") is None, reason="fitsverify is not installed")
@pytest.mark.parametrize("ending", ["fits", "fits.gz"])
def test_fitsverify_is_clean(tmp_path, ending):
    path = tmp_path / f"scored.{ending}"
    write_catalog(_scored(), path)
    result = subprocess.run(["fitsverify", "-q", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and "verification OK" in result.stdout, (
        result.stdout + result.stderr
    )


# ------------------------------------------------------------------------- ECSV


def test_ecsv_provenance_is_flat_keys(tmp_path):
    out = _scored()
    path = tmp_path / "scored.ecsv"
    write_catalog(out, path)
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any(f"{PROVENANCE_KEY}.backend: legacysurvey" in line for line in header)
    native = Table.read(path, format="ascii.ecsv")
    assert PROVENANCE_KEY not in native.meta
    assert native.meta[f"{PROVENANCE_KEY}.layer"] == "des-dr1"
    assert read_catalog(path).meta[PROVENANCE_KEY] == out.meta[PROVENANCE_KEY]


# ---------------------------------------------------------------------- VOTable


@pytest.mark.skipif(shutil.which("stilts") is None, reason="STILTS is not installed")
def test_stilts_votlint_is_clean(tmp_path):
    out = _scored()
    out["tile"] = out["tile"].filled("none")  # VOTable TABLEDATA has no null for strings
    path = tmp_path / "scored.vot"
    write_catalog(out, path)
    result = subprocess.run(["stilts", "votlint", str(path)], capture_output=True, text=True,
                            timeout=120)
    report = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not report, report
