import argparse
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table

from lsbg_classify import status
from lsbg_classify.cli import build_parser, main
from lsbg_classify.cli.common import HelpFormatter, LibraryDefault, name_flags
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
    out = capsys.readouterr().out
    assert "entries: 6" in out and "model_inputs: 6" in out
    assert main(["cache", "clear", "--model-inputs", "--cache", str(tmp_path / "cache")]) == 0
    assert "removed 6 remembered model inputs" in capsys.readouterr().out
    assert main(["cache", "info", "--cache", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "entries: 6" in out and "model_inputs: 0" in out
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
    assert main(["train", str(data), "--outdir", str(tmp_path / "run"), "--epochs", "1",
                 "--batch-size", "8"]) == 0
    for name in ("best.weights.h5", "last.weights.h5", "history.csv", "training.json"):
        assert (tmp_path / "run" / name).exists()
    assert main(["evaluate", str(data), "--model", str(tmp_path / "run" / "best.weights.h5"),
                 "--outdir", str(tmp_path / "eval")]) == 0
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


# --------------------------------------------------------------------- option consistency


def _subparsers():
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"lsbg-classify": parser, **action.choices}


def _options(parser):
    """The parser's optional arguments, less ``--help`` and ``--version``."""
    return [a for a in parser._actions
            if a.option_strings and not isinstance(a, (argparse._HelpAction,
                                                       argparse._VersionAction))]


def _visible(action):
    return [s for s in action.option_strings if s not in getattr(action, "hidden_aliases", ())]


SUBPARSERS = _subparsers()


@pytest.mark.parametrize("name", sorted(SUBPARSERS))
def test_every_option_and_argument_has_help(name):
    missing = [a.option_strings or a.dest for a in SUBPARSERS[name]._actions
               if not a.help or a.help == argparse.SUPPRESS]
    assert not missing, f"{name}: no help for {missing}"
    for action in _options(SUBPARSERS[name]):
        assert _visible(action), f"{name}: {action.option_strings} are all hidden"


@pytest.mark.parametrize("name", sorted(SUBPARSERS))
def test_every_telling_default_is_shown(name):
    formatter = HelpFormatter(prog=name)
    for action in _options(SUBPARSERS[name]):
        if action.default is None or action.default is False or action.default == []:
            continue
        assert "default" in formatter._get_help_string(action), (
            f"{name} {action.option_strings[0]} hides its default {action.default!r}")
    text = SUBPARSERS[name].format_help()
    assert "LibraryDefault" not in text  # a library default is shown by its value


def _meaning(action):
    return type(action).__name__, action.dest, action.type, action.nargs


# What each option string means in every command that has it: its dest
# (so its type and use) and, as a reminder of the contract, the kind of value.
FLAG_MEANINGS = {
    "-o": "output",            # the path of the one file a command writes
    "--output": "output",
    "--outdir": "outdir",      # a folder of outputs
    "--work-dir": "work_dir",  # a folder a command works in and resumes from
    "--threads": "threads",    # concurrent requests
    "--processes": "processes",
    "-n": "count",
    "--count": "count",
    "--row-indices": "row_indices",
    "--image-format": "image_format",
    "--input-format": "input_format",
    "--output-format": "output_format",
    "--threshold": "threshold",
    "--model": "model",
    "--cache": "cache",
}

# Spellings of earlier releases, hidden: command -> {old spelling: new dest}.
OLD_SPELLINGS = {
    "classify": {"--format": "image_format", "--workers": "threads"},
    "explain": {"--rows": "row_indices", "--format": "image_format", "--workers": "threads"},
    "fetch": {"--format": "image_format", "--workers": "threads"},
    "inspect": {"-o": "outdir", "--output-dir": "outdir", "--format": "image_format",
                "--workers": "threads"},
    "demo": {"-o": "outdir", "--output-dir": "outdir", "--rows": "count"},
    "simulate": {"--rows": "count", "--workers": "processes"},
    "train": {"-o": "outdir", "--output-dir": "outdir"},
    "finetune": {"-o": "outdir", "--output-dir": "outdir"},
    "evaluate": {"-o": "outdir", "--output-dir": "outdir"},
    "calibrate": {"-o": "outdir", "--output-dir": "outdir", "--rows": "count"},
    "baselines": {"-o": "outdir", "--output-dir": "outdir"},
    "bench": {"--rows": "count", "--workers": "threads"},
    "build-models": {"-o": "work_dir", "--workers": "processes"},
    "reproduce": {"--workdir": "work_dir", "--workers": "threads"},
    "inject": {"-o": "outdir", "--output-dir": "outdir"},
}


def test_one_meaning_per_visible_option_string():
    seen = {}
    for name, parser in SUBPARSERS.items():
        for action in _options(parser):
            for option in _visible(action):
                seen.setdefault(option, {})[name] = _meaning(action)
                if option in FLAG_MEANINGS:
                    assert action.dest == FLAG_MEANINGS[option], (name, option, action.dest)
    for option, by_command in seen.items():
        assert len(set(by_command.values())) == 1, f"{option} differs: {by_command}"


def test_old_spellings_are_hidden_aliases_of_the_new_options():
    for name, parser in SUBPARSERS.items():
        hidden = {s: a.dest for a in _options(parser) for s in getattr(a, "hidden_aliases", ())}
        assert hidden == OLD_SPELLINGS.get(name, {}), name
        text = parser.format_help()
        for spelling in hidden:
            assert not re.search(rf"(?<![\w-]){re.escape(spelling)}(?![\w-])", text), (
                f"{name} --help shows {spelling}")


@pytest.mark.parametrize("old, new", [
    (["reproduce", "--workdir", "w"], ["reproduce", "--work-dir", "w"]),
    (["build-models", "-o", "w", "--workers", "3"], ["build-models", "--work-dir", "w",
                                                     "--processes", "3"]),
    (["demo", "-o", "d", "--rows", "5"], ["demo", "--outdir", "d", "-n", "5"]),
    (["simulate", "-o", "s.npz", "--rows", "4", "--workers", "2"],
     ["simulate", "-o", "s.npz", "--count", "4", "--processes", "2"]),
    (["explain", "c.fits", "--rows", "0,1", "-o", "m.png", "--format", "fits", "--workers", "2"],
     ["explain", "c.fits", "--row-indices", "0,1", "-o", "m.png", "--image-format", "fits",
      "--threads", "2"]),
    (["train", "d.npz", "-o", "run"], ["train", "d.npz", "--outdir", "run"]),
    (["inject", "--output-dir", "i"], ["inject", "--outdir", "i"]),
])
def test_old_spellings_parse_as_the_new_ones(old, new):
    parser = build_parser()
    assert vars(parser.parse_args(old)) == vars(parser.parse_args(new))


def test_building_the_parser_imports_neither_numpy_nor_astropy():
    # --help must answer at once; library defaults are looked up when used.
    code = ("import sys; from lsbg_classify.cli import build_parser; build_parser();"
            "print(sorted(m for m in ('numpy', 'astropy', 'sklearn') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_library_defaults_are_the_library_constants():
    from lsbg_classify.diagnostics import injection
    from lsbg_classify.pipeline import options as pipeline

    args = build_parser().parse_args(["inject", "--outdir", "x"])
    assert isinstance(args.threshold, LibraryDefault)
    assert args.threshold.value() == pipeline.DEFAULT_THRESHOLD
    assert args.mu0.value() == injection.DEFAULT_MU0_GRID
    args = build_parser().parse_args(["classify", "in.fits", "-o", "out.fits"])
    assert args.chunk_size.value() == pipeline.DEFAULT_CHUNK_SIZE
    assert args.threads.value() == pipeline.DEFAULT_WORKERS
    assert args.threshold is None  # the model card's decision threshold


def test_library_keywords_become_flags_in_messages():
    assert name_flags("pass ra_col= and dec_col= to choose", {"ra_col": "--ra-col",
                                                              "dec_col": "--dec-col"}) == (
        "pass --ra-col and --dec-col to choose")
    assert name_flags("ra_col='x' is not a column", {"ra_col": "--ra-col"}) == (
        "--ra-col 'x' is not a column")
    assert name_flags("out.fits exists; pass overwrite=True to replace it",
                      {"overwrite": "--overwrite"}) == "out.fits exists; pass --overwrite to replace it"
    # Another keyword that merely ends the same way is left alone.
    assert name_flags("image_format='png'", {"format": "--input-format"}) == "image_format='png'"


def test_classify_names_cli_flags_not_keywords(tmp_path, weights, capsys):
    path = tmp_path / "c.csv"
    path.write_text("x,y\n10.0,-45.0\n")
    assert _classify(path, tmp_path / "o.fits", weights, tmp_path) == 2
    err = capsys.readouterr().err
    assert "--ra-col" in err and "ra_col=" not in err
    assert _classify(path, tmp_path / "o.fits", weights, tmp_path, "--ra-col", "nope") == 2
    err = capsys.readouterr().err
    assert "--ra-col 'nope' is not a column" in err


def test_ipac_catalog_read_with_input_format(tmp_path, weights, capsys):
    path = tmp_path / "cands.tbl"
    Table({"ra": [10.0, 20.0], "dec": [-45.0, -50.0]}).write(path, format="ascii.ipac")
    out = tmp_path / "scored.ecsv"
    assert _classify(path, out, weights, tmp_path) == 2
    err = capsys.readouterr().err
    assert "--input-format" in err and "format=" not in err
    assert _classify(path, out, weights, tmp_path, "--input-format", "ipac") == 0
    assert list(Table.read(out)["lsbg_status"]) == [status.OK, status.OK]
    votable = tmp_path / "scored.out"
    assert _classify(path, votable, weights, tmp_path, "--input-format", "ipac",
                     "--output-format", "votable") == 0
    assert len(Table.read(votable, format="votable")) == 2


def test_package_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    from lsbg_classify.cli import demo

    def package_check(args):
        from lsbg_classify.diagnostics.injection import parse_grid

        parse_grid("1,2", "--mu0")

    monkeypatch.setattr(demo, "run", package_check)
    assert main(["demo", "--outdir", "d"]) == 2
    assert "--mu0 expects START,STOP,STEP" in capsys.readouterr().err

    def bug(args):
        np.zeros(3).reshape(2)

    monkeypatch.setattr(demo, "run", bug)
    with pytest.raises(ValueError, match="reshape"):
        main(["demo", "--outdir", "d"])


def test_calibrate_compares_real_cutouts_with_the_simulated_sky(tmp_path, capsys):
    from lsbg_classify.simulation.training_set import make_training_set

    X, y = make_training_set(20, seed=5)
    real = tmp_path / "real.npz"
    np.savez(real, X=X, y=y, selection=np.array(["random", "other"] * 10))
    out = tmp_path / "cal"
    assert main(["calibrate", str(real), "--selection", "random", "-n", "20",
                 "--outdir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "10 real cutouts from real.npz vs 20 simulated" in text
    assert text.count("background discriminator") == 2
    assert len(Table.read(out / "calibration.ecsv")) > 0
    assert (out / "real_vs_simulated.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["calibrate", str(real), "--selection", "nowhere"]) == 2
    assert "no real cutouts selected" in capsys.readouterr().err
    assert main(["calibrate", str(real), "-n", "8", "--depth", "0.6"]) == 0
    assert "depth 0.6" in capsys.readouterr().out
    assert main(["calibrate", str(real), "--depth", "0"]) == 2
    assert "--depth must be a positive number" in capsys.readouterr().err
