"""Peak memory of ``lsbg-classify classify`` on a large catalog, in a child process.

The survey-scale target is a 1,000,000-row catalog under 2 GB; the same
path on 200,000 rows fits a test's time.  Most rows carry no position and
are flagged, so the run is quick, yet it reads, checks, checkpoints and
writes every row; a few rows are scored from a warm cache.
"""

import os
import sys

import numpy as np
import pytest

from lsbg_classify.pipeline.cache import CutoutCache
from lsbg_classify.testing.benchmark import (
    classify_peak_rss,
    command_peak_rss,
    simulated_positions,
    warm_cache,
)

ROWS = 200_000
SCORED = 8
LIMIT_MIB = 2048

pytestmark = pytest.mark.skipif(not hasattr(os, "wait4"), reason="needs os.wait4 (POSIX)")


def test_a_large_catalog_is_classified_in_bounded_memory(tmp_path):
    ra, dec = simulated_positions(4, seed=11)
    cache = CutoutCache(tmp_path / "cache")
    warm_cache(ra, dec, cache, processes=1)
    run = classify_peak_rss(ROWS, ra, dec, cache, tmp_path, scored=SCORED, chunk_size=20_000)
    # classify_peak_rss raises unless the command succeeded and wrote every row.
    assert run["rows"] == ROWS and run["scored"] == SCORED
    assert run["ok"] == SCORED
    assert 0 < run["peak_rss_mib"] < LIMIT_MIB
    assert not any(tmp_path.glob("memory-*.fits"))  # catalog and output cleaned up


def test_peak_rss_is_the_commands_own_not_this_processs(tmp_path):
    # This process grows well past what a bare Python needs; a child forked
    # from it would report this process's peak as its own.
    ballast = np.ones(400 * 2**20 // 8)
    small, _ = command_peak_rss([sys.executable, "-c", "pass"], tmp_path / "small.log")
    big, _ = command_peak_rss(
        [sys.executable, "-c", "import numpy; a = numpy.ones(300 * 2**20 // 8); print(a.sum())"],
        tmp_path / "big.log")
    assert ballast.sum() > 0
    assert small < 150
    assert 300 < big < 300 + 150
    assert "39321600.0" in (tmp_path / "big.log").read_text()


def test_a_failing_command_is_reported_with_its_output(tmp_path):
    with pytest.raises(RuntimeError, match=r"exited with status 3:\n.*boom"):
        command_peak_rss([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
                         tmp_path / "fail.log")
