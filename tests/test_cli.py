import hashlib
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table

from lsbg_classify import status
from lsbg_classify.cli import main
from lsbg_classify.testing.loopback import LoopbackViewer

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def catalog(tmp_path):
    table = Table()
    table["ID"] = np.arange(6)
    table["ALPHA_J2000"] = np.linspace(10, 50, 6) * u.deg
    table["DELTA_J2000"] = np.linspace(-55, -42, 6) * u.deg
    table["FLUX_AUTO"] = np.arange(6) * 1.5 * u.nJy
    table.meta["EXTNAME"] = "CANDIDATES"
    path = tmp_path / "cands.fits"
    table.write(path)
    return path


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _classify(catalog, out, weights, tmp_path, *extra):
    return main(["classify", str(catalog), "-o", str(out), "--backend", "simulated", "--model",
                 weights, "--cache", str(tmp_path / "cache"), "--quiet", *extra])


def test_classify_writes_a_scored_copy_and_never_touches_the_input(catalog, weights, tmp_path, capsys):
    before = _sha(catalog)
    out = tmp_path / "scored.fits"
    assert _classify(catalog, out, weights, tmp_path) == 0
    scored = Table.read(out)
    assert scored.colnames == ["ID", "ALPHA_J2000", "DELTA_J2000", "FLUX_AUTO",
                               "lsbg_prob", "lsbg_class", "lsbg_status"]
    assert scored["FLUX_AUTO"].unit == u.nJy
    assert list(scored["lsbg_status"]) == ["ok"] * 6
    assert _sha(catalog) == before
    assert "6 rows" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name.lower()]


def test_existing_output_needs_overwrite(catalog, weights, tmp_path, capsys):
    out = tmp_path / "scored.fits"
    out.write_text("precious")
    assert _classify(catalog, out, weights, tmp_path) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_text() == "precious"
    assert _classify(catalog, out, weights, tmp_path, "--overwrite") == 0
    assert len(Table.read(out)) == 6


def test_output_equal_to_input_is_refused(catalog, weights, tmp_path, capsys):
    before = _sha(catalog)
    assert _classify(catalog, catalog, weights, tmp_path, "--overwrite") == 2
    assert "differ" in capsys.readouterr().err
    assert _sha(catalog) == before


def test_bad_input_gives_a_message_not_a_traceback(tmp_path, weights, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    out = tmp_path / "o.fits"
    assert _classify(bad, out, weights, tmp_path) == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err and "x" in err
    assert not out.exists()
    assert _classify(tmp_path / "missing.fits", out, weights, tmp_path) == 2
    assert "missing.fits" in capsys.readouterr().err


def test_invalid_rows_flagged_on_request(tmp_path, weights):
    path = tmp_path / "c.csv"
    path.write_text("ra,dec\n10.0,-45.0\n400.0,-45.0\n20.0,-50.0\n")
    out = tmp_path / "o.ecsv"
    assert _classify(path, out, weights, tmp_path) == 2
    assert not out.exists()
    assert _classify(path, out, weights, tmp_path, "--on-invalid", "flag") == 0
    assert list(Table.read(out)["lsbg_status"]) == ["ok", "invalid_position", "ok"]


def test_cache_info_and_clear(catalog, weights, tmp_path, capsys):
    _classify(catalog, tmp_path / "s.fits", weights, tmp_path)
    capsys.readouterr()
    assert main(["cache", "info", "--cache", str(tmp_path / "cache")]) == 0
    assert "entries: 6" in capsys.readouterr().out
    assert main(["cache", "clear", "--cache", str(tmp_path / "cache")]) == 0
    assert "removed 6" in capsys.readouterr().out


def test_fetch_train_evaluate_round_trip(tmp_path, capsys):
    rng = np.random.default_rng(0)
    table = Table({"ra": rng.uniform(0, 60, 24), "dec": rng.uniform(-60, -40, 24),
                   "label": np.tile([0, 1], 12)})
    table.write(tmp_path / "labelled.ecsv")
    data = tmp_path / "data.npz"
    assert main(["fetch", str(tmp_path / "labelled.ecsv"), "-o", str(data), "--backend", "simulated",
                 "--no-cache", "--quiet"]) == 0
    with np.load(data) as d:
        assert d["X"].shape == (24, 64, 64, 3) and d["X"].dtype == np.uint8
        assert list(d["y"]) == list(table["label"])
    assert main(["train", str(data), "-o", str(tmp_path / "run"), "--epochs", "1",
                 "--batch-size", "8"]) == 0
    for name in ("best.weights.h5", "last.weights.h5", "history.csv", "training.json"):
        assert (tmp_path / "run" / name).exists()
    assert main(["evaluate", str(data), "--model", str(tmp_path / "run" / "best.weights.h5"),
                 "-o", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "roc_auc" in out
    assert (tmp_path / "eval" / "confusion_test.png").exists()


@pytest.mark.slow
def test_end_to_end_on_the_real_des_test_coordinates(tmp_path, weights):
    """The paper's 5,000 DES test positions, through the real HTTP client, 100 ms latency."""
    source = SHARED_DATA / "deepshadows" / "Baseline_test.csv"
    if not source.exists():
        pytest.skip("../shared/data is not available")
    candidates = Table.read(source, format="ascii.csv")
    path = tmp_path / "baseline_test.fits"
    candidates.write(path)
    out = tmp_path / "scored.fits"
    with LoopbackViewer(latency=0.1) as viewer:
        code = main(["classify", str(path), "-o", str(out), "--survey", "des", "--base-url",
                     viewer.url, "--model", weights, "--cache", str(tmp_path / "cache"),
                     "--workers", "8", "--quiet"])
        requests = viewer.counts["cutout.jpg"]
    assert code == 0
    scored = Table.read(out)
    assert len(scored) == 5000
    assert scored.colnames == candidates.colnames + ["lsbg_prob", "lsbg_class", "lsbg_status"]
    assert np.array_equal(scored["ra"], candidates["ra"]) and np.array_equal(scored["dec"], candidates["dec"])
    assert set(scored["lsbg_status"]) <= set(status.ALL_STATUSES)
    ok = scored["lsbg_status"] == "ok"
    assert ok.all(), dict(zip(*np.unique(scored["lsbg_status"], return_counts=True)))
    prob = np.asarray(scored["lsbg_prob"])
    assert np.all((prob >= 0) & (prob <= 1))
    # Each distinct position is fetched once at most; a repeat in a later chunk comes from the cache.
    distinct = len(set(zip(np.round(candidates["ra"], 6), np.round(candidates["dec"], 6))))
    assert distinct <= requests <= 5000
