"""Inspection sheets: row selection, PNG and self-contained HTML, the ``inspect`` command."""

import base64
import io
import re

import numpy as np
import pytest
from astropy.table import MaskedColumn, Table
from PIL import Image

from lsbg_classify.cli import main
from lsbg_classify.diagnostics.inspection import (
    inspection_rows,
    select_rows,
    write_inspection_sheets,
)
from lsbg_classify.pipeline.catalog.read import CatalogError


@pytest.fixture
def scored():
    table = Table()
    table["ra"] = np.linspace(10.0, 17.0, 8)
    table["dec"] = np.linspace(-50.0, -43.0, 8)
    table["lsbg_prob"] = MaskedColumn([0.9, 0.45, 0.99, 0.2, 0.55, 0.05, 0.7, 0.98],
                                      mask=[False] * 7 + [True])
    table["lsbg_status"] = ["ok", "ok", "no_coverage", "ok", "ok", "ok", "ok", "bad_image"]
    return table


@pytest.fixture
def images(scored):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (len(scored), 64, 64, 3)).astype(np.uint8)


def test_top_takes_the_most_probable_ok_rows(scored):
    # Row 2 is not "ok" and row 7 has no probability: neither may appear.
    assert list(select_rows(scored, "top", n=3)) == [0, 6, 4]
    assert list(select_rows(scored, "top", n=100)) == [0, 6, 4, 1, 3, 5]
    assert len(select_rows(scored, "top", n=0)) == 0


def test_uncertain_is_closest_to_one_half_or_largest_spread(scored):
    assert list(select_rows(scored, "uncertain", n=3)) == [1, 4, 6]
    scored["lsbg_prob_std"] = [0.01, 0.02, 0.5, 0.3, 0.03, 0.2, 0.25, 0.4]
    assert list(select_rows(scored, "uncertain", n=3)) == [3, 6, 5]


def test_disagreement_needs_different_classes_and_sorts_by_difference(scored):
    scored["p_hsc"] = [0.1, 0.46, 0.1, 0.8, 0.56, 0.6, 0.65, 0.1]
    # Classes differ in rows 0 (|dp| 0.8), 3 (0.6) and 5 (0.55); row 2 is not ok.
    assert list(select_rows(scored, "disagree", n=10, second_prob_col="p_hsc")) == [0, 3, 5]
    # At threshold 0.9 only row 0 is an LSBG for one model and not the other.
    assert list(select_rows(scored, "disagree", n=10, second_prob_col="p_hsc",
                            threshold=0.9)) == [0]
    with pytest.raises(ValueError, match="second_prob_col"):
        select_rows(scored, "disagree")
    with pytest.raises(CatalogError, match="'p_missing'"):
        select_rows(scored, "disagree", second_prob_col="p_missing")
    assert set(inspection_rows(scored, 5, second_prob_col="p_hsc")) == {"top", "uncertain",
                                                                        "disagree"}
    assert set(inspection_rows(scored, 5)) == {"top", "uncertain"}


def test_missing_probability_column_is_named(scored):
    del scored["lsbg_prob"]
    with pytest.raises(CatalogError, match="'lsbg_prob'"):
        select_rows(scored, "top")
    with pytest.raises(ValueError, match="unknown sheet kind"):
        select_rows(Table({"lsbg_prob": [0.5]}), "best")


def _decode_data_uri(uri):
    payload = uri.split(",", 1)[1]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))))


def test_sheets_are_png_and_self_contained_html(scored, images, tmp_path):
    scored["p<hsc>"] = [0.1, 0.46, 0.1, 0.8, 0.56, 0.6, 0.65, 0.1]
    written = write_inspection_sheets(scored, images, tmp_path / "sheets", n=2,
                                      second_prob_col="p<hsc>", survey="hsc")
    assert set(written) == {"top", "uncertain", "disagree"}
    for paths in written.values():
        with Image.open(paths["png"]) as png:
            assert png.format == "PNG"
    page = written["top"]["html"].read_text(encoding="utf-8")
    # Self-contained: every image is a data URI, nothing is loaded from elsewhere.
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in page and "<script" not in page
    # The embedded cutout is the row's image, pixel for pixel.
    assert np.array_equal(_decode_data_uri(sources[0]), images[0])
    assert "<td>10.00000</td><td>-50.00000</td><td>0.900</td>" in page
    # Column names are escaped; links go to the HSC layer of the viewer.
    assert "p&lt;hsc&gt;" in page and "<hsc>" not in page
    assert "layer=hsc2" in page and "&amp;dec=" in page
    disagree = written["disagree"]["html"].read_text(encoding="utf-8")
    assert disagree.count("<tr><td><img") == 2


def test_images_may_be_a_dict_of_the_selected_rows_only(scored, images, tmp_path):
    rows = inspection_rows(scored, 2)
    needed = {int(r): images[r] for sel in rows.values() for r in sel}
    written = write_inspection_sheets(scored, needed, tmp_path, n=2)
    assert "layer=des-dr1" in written["uncertain"]["html"].read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="aligned with the table"):
        write_inspection_sheets(scored, images[:3], tmp_path, n=2)


def test_an_empty_sheet_says_so(scored, images, tmp_path):
    scored["p2"] = scored["lsbg_prob"]
    written = write_inspection_sheets(scored, images, tmp_path, second_prob_col="p2")
    assert "No rows qualify" in written["disagree"]["html"].read_text(encoding="utf-8")
    assert written["disagree"]["png"].stat().st_size > 0


def test_inspect_command_after_classify(tmp_path, weights, capsys):
    catalog = Table({"ra": [20.0, 21.0, 22.0, 23.0], "dec": [-45.0, -46.0, -47.0, -48.0]})
    catalog.write(tmp_path / "cands.ecsv")
    source = ["--backend", "simulated", "--cache", str(tmp_path / "cache"), "--quiet"]
    assert main(["classify", str(tmp_path / "cands.ecsv"), "-o", str(tmp_path / "scored.ecsv"),
                 "--model", weights, *source]) == 0
    scored = Table.read(tmp_path / "scored.ecsv")
    scored["second"] = 1.0 - scored["lsbg_prob"]
    scored.write(tmp_path / "scored2.ecsv")
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "scored2.ecsv"), "--outdir", str(tmp_path / "out"),
                 "--top", "3", "--compare-col", "second", *source]) == 0
    out = capsys.readouterr().out
    assert "top: 3 rows" in out and "disagree:" in out
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["disagree.html", "disagree.png", "top.html", "top.png", "uncertain.html",
                     "uncertain.png"]
    # Without a score there is nothing to inspect, and the message says which column is missing.
    assert main(["inspect", str(tmp_path / "cands.ecsv"), "-o", str(tmp_path / "o2"),
                 *source]) == 2
    assert "'lsbg_prob'" in capsys.readouterr().err
