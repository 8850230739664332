import json

import numpy as np

from lsbg_classify.training import train


def _tiny_set(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8), np.tile([0, 1], n // 2)


def test_time_budget_stops_before_an_epoch_that_would_overrun_it(tmp_path):
    X, y = _tiny_set(8, 0)
    Xv, yv = _tiny_set(4, 1)
    record = train(X, y, Xv, yv, tmp_path, epochs=5, batch_size=4, time_budget=1e-3, verbose=0)
    assert record["epochs_run"] == 1
    assert record["stopped_by_time_budget"] is True
    assert json.loads((tmp_path / "training.json").read_text())["time_budget_s"] == 1e-3
    assert (tmp_path / "best.weights.h5").exists()
