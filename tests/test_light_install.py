"""A plain install scores without TensorFlow; features that need it say which extra to install.

Each test runs a fresh Python in which importing ``tensorflow`` or ``keras``
fails as it does where they are not installed, so the test holds whether or
not the test environment has them.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from lsbg_classify.testing.benchmark import simulated_positions

PACKAGE_ROOT = Path(__file__).resolve().parents[1]

# Makes ``import tensorflow`` / ``import keras`` fail like a missing package,
# then runs the body and reports which heavy modules were imported.
PRELUDE = textwrap.dedent("""\
    import importlib.abc, json, sys

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    from lsbg_classify.cli import main
    """)
EPILOGUE = textwrap.dedent("""\
    print("MODULES " + json.dumps(sorted(m for m in ("tensorflow", "keras", "onnxruntime")
                                         if m in sys.modules)))
    """)


def _environment():
    """The test's environment, with this checkout first on the path."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")])))


def _run_without_tensorflow(body, tmp_path):
    script = tmp_path / "no_tf.py"
    script.write_text(PRELUDE + textwrap.dedent(body) + EPILOGUE)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=_environment(), cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    modules = json.loads(result.stdout.rsplit("MODULES ", 1)[1])
    return modules, result


@pytest.fixture
def catalog(tmp_path):
    ra, dec = simulated_positions(6, seed=11)
    path = tmp_path / "candidates.ecsv"
    Table({"ra": ra, "dec": dec, "label": np.arange(6) % 2}).write(path)
    return path


@pytest.mark.slow
def test_classify_fetch_demo_inspect_and_dask_run_without_tensorflow(tmp_path, catalog):
    modules, result = _run_without_tensorflow(f"""\
        source = ["--backend", "simulated", "--cache", "cache", "--quiet"]
        assert main(["classify", {str(catalog)!r}, "-o", "scored.ecsv", *source]) == 0
        assert main(["fetch", {str(catalog)!r}, "-o", "set.npz", *source]) == 0
        assert main(["demo", "--outdir", "demo", "-n", "4", "--quiet"]) == 0
        assert main(["inspect", "scored.ecsv", "--outdir", "sheets", "--top", "3", *source]) == 0

        from lsbg_classify.pipeline.catalog.read import read_catalog

        reference = read_catalog("scored.ecsv")
        assert reference.meta["LSBG_CLASSIFY"]["runtime"] == "onnxruntime"
        # The distributed extra is optional (tox's oldestdeps leaves it out).
        import importlib.util
        if importlib.util.find_spec("dask") is not None:
            import dask.dataframe as dd
            from astropy.table import Table
            from lsbg_classify import classify_catalog

            frame = Table.read({str(catalog)!r}).to_pandas()
            lazy = classify_catalog(dd.from_pandas(frame, npartitions=2), backend="simulated",
                                    cache="cache")
            scored = lazy.compute(scheduler="synchronous")
            assert list(scored["lsbg_status"]) == ["ok"] * len(frame)
            assert abs(scored["lsbg_prob"].to_numpy() - reference["lsbg_prob"]).max() <= 1e-6
        """, tmp_path)
    assert modules == ["onnxruntime"]
    assert "cuda" not in result.stderr.lower()
    assert (tmp_path / "scored.ecsv").exists() and (tmp_path / "set.npz").exists()
    assert (tmp_path / "demo" / "scored.fits").exists()


@pytest.mark.parametrize("command", [
    ["classify", "{catalog}", "-o", "out.ecsv", "--backend", "simulated", "--mc-samples", "2"],
    ["classify", "{catalog}", "-o", "out.ecsv", "--backend", "simulated", "--model", "{weights}"],
    ["explain", "{catalog}", "--rows", "0", "-o", "map.png", "--backend", "simulated"],
    ["train", "set.npz", "-o", "run", "--epochs", "1"],
])
def test_features_needing_tensorflow_name_the_extra(tmp_path, catalog, weights, command):
    np.savez(tmp_path / "set.npz", X=np.zeros((4, 64, 64, 3), np.uint8), y=np.arange(4) % 2)
    argv = [a.format(catalog=catalog, weights=weights) for a in command]
    modules, result = _run_without_tensorflow(f"""\
        assert main({argv!r}) == 2
        """, tmp_path)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"lsbg-classify {command[0]}: error: ")
    assert 'pip install "lsbg-classify[train]"' in lines[0]
    assert "tensorflow" not in modules and "keras" not in modules
    assert not (tmp_path / "out.ecsv").exists()


# Words of the start-up lines TensorFlow and the CUDA libraries print.
STARTUP_NOISE = ("tensorflow", "cuda", "onednn", "cuinit", "cudnn", "cublas", "xla")


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["demo", "--outdir", "demo", "-n", "2", "--quiet"],
    ["classify", "{catalog}", "-o", "scored.ecsv", "--backend", "simulated", "--cache", "cache",
     "--quiet"],
])
def test_commands_scoring_with_onnx_start_quietly(tmp_path, catalog, argv):
    # With TensorFlow installed, as here, and nothing asking it to be quiet:
    # these commands must not import it, so none of its lines appear.
    env = _environment()
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    result = subprocess.run([sys.executable, "-m", "lsbg_classify.cli",
                             *(a.format(catalog=catalog) for a in argv)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    noisy = [line for line in (result.stdout + result.stderr).splitlines()
             if any(word in line.lower() for word in STARTUP_NOISE)]
    assert not noisy, "\n".join(noisy)
