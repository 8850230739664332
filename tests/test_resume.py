"""An interrupted classification resumes: killed with SIGKILL, run again, same result."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.table import Table

from lsbg_classify.pipeline.checkpoint import CheckpointMismatchError, score_in_chunks
from lsbg_classify.surveys import get_backend
from lsbg_classify.testing.loopback import LoopbackViewer

ROWS = 240
CHUNK = 40


def _command(catalog, out, weights, cache, viewer):
    return [sys.executable, "-m", "lsbg_classify.cli", "classify", str(catalog), "-o", str(out),
            "--base-url", viewer.url, "--model", weights, "--cache", str(cache), "--workers", "4",
            "--chunk-size", str(CHUNK), "--quiet"]


@pytest.mark.slow
def test_kill_minus_nine_then_rerun_gives_the_uninterrupted_result(tmp_path, weights):
    rng = np.random.default_rng(7)
    catalog = tmp_path / "cands.fits"
    Table({"id": np.arange(ROWS), "ra": rng.uniform(0, 60, ROWS),
           "dec": rng.uniform(-60, -40, ROWS)}).write(catalog)
    out = tmp_path / "scored.fits"
    checkpoint = tmp_path / "scored.fits.checkpoint"
    with LoopbackViewer(latency=0.02) as viewer:
        proc = subprocess.Popen(_command(catalog, out, weights, tmp_path / "cache", viewer))
        deadline = time.time() + 240
        while len(list(checkpoint.glob("chunk-*.npz"))) < 2 and time.time() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run finished before it could be interrupted"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not out.exists()
        finished = len(list(checkpoint.glob("chunk-*.npz")))
        assert 2 <= finished < ROWS // CHUNK
        requests_before = viewer.counts["cutout.jpg"]
        subprocess.run(_command(catalog, out, weights, tmp_path / "cache", viewer), check=True)
        requests_total = viewer.counts["cutout.jpg"]
        # Cached cutouts are not fetched again; at most the few in flight when killed are.
        assert requests_total <= ROWS + 4
        assert requests_total - requests_before <= ROWS - finished * CHUNK + 4
        assert not checkpoint.exists()
        resumed = Table.read(out)
        reference = tmp_path / "reference.fits"
        subprocess.run(_command(catalog, reference, weights, tmp_path / "cache", viewer), check=True)
    uninterrupted = Table.read(reference)
    assert len(resumed) == ROWS and list(resumed["id"]) == list(range(ROWS))
    assert list(resumed["lsbg_status"]) == list(uninterrupted["lsbg_status"]) == ["ok"] * ROWS
    # Equal up to float32 rounding: TensorFlow's CPU kernels may round the last bit differently
    # when an image shares its batch with other images.
    assert np.allclose(resumed["lsbg_prob"], uninterrupted["lsbg_prob"], rtol=0, atol=1e-6)
    assert list(resumed["lsbg_class"]) == list(uninterrupted["lsbg_class"])


def test_a_checkpoint_of_another_run_is_refused(tmp_path, weights):
    from lsbg_classify.pipeline.model import load_model

    model = load_model(weights)
    backend = get_backend("simulated")
    ra, dec = np.array([10.0, 20.0, 30.0]), np.array([-45.0, -45.0, -45.0])
    prob, st = score_in_chunks(ra, dec, backend, model, tmp_path / "ck", chunk_size=2,
                               cache=False, progress=False)
    assert list(st) == ["ok"] * 3 and np.all(np.isfinite(prob))
    again, _ = score_in_chunks(ra, dec, backend, model, tmp_path / "ck", chunk_size=2,
                               cache=False, progress=False)
    assert np.array_equal(prob, again)
    with pytest.raises(CheckpointMismatchError, match="remove it"):
        score_in_chunks(ra + 1, dec, backend, model, tmp_path / "ck", chunk_size=2, cache=False)


def test_a_damaged_chunk_is_scored_again(tmp_path, weights):
    from lsbg_classify.pipeline.model import load_model

    model = load_model(weights)
    backend = get_backend("simulated")
    ra, dec = np.array([10.0, 20.0, 30.0]), np.array([-45.0, -45.0, -45.0])
    prob, _ = score_in_chunks(ra, dec, backend, model, tmp_path / "ck", chunk_size=2,
                              cache=False, progress=False)
    (tmp_path / "ck" / "chunk-000000000000.npz").write_bytes(b"half a zip")
    again, st = score_in_chunks(ra, dec, backend, model, tmp_path / "ck", chunk_size=2,
                                cache=False, progress=False)
    assert list(st) == ["ok"] * 3 and np.allclose(prob, again)
