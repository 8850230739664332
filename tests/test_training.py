import json

import numpy as np

from lsbg_classify.training.train import train


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


def test_augment_batch_draws_a_dihedral_transform_and_shift_per_image():
    import tensorflow as tf

    from lsbg_classify.training.train import MAX_SHIFT_PIX, augment_batch

    rng = np.random.default_rng(5)
    images = rng.uniform(0, 1, (16, 64, 64, 3)).astype(np.float32)
    out = augment_batch(tf.constant(images), tf.constant([3, 4], tf.int64)).numpy()
    assert out.shape == images.shape
    inner = slice(MAX_SHIFT_PIX, 64 - MAX_SHIFT_PIX)
    found = set()
    for image, augmented in zip(images, out):
        # Some dihedral transform of the input, shifted by at most
        # MAX_SHIFT_PIX, must reproduce the interior exactly.
        matches = []
        for flip in (False, True):
            base = image[:, ::-1] if flip else image
            for k in range(4):
                turned = np.rot90(base, k, axes=(0, 1))
                for dy in range(-MAX_SHIFT_PIX, MAX_SHIFT_PIX + 1):
                    for dx in range(-MAX_SHIFT_PIX, MAX_SHIFT_PIX + 1):
                        shifted = np.roll(turned, (-dy, -dx), axis=(0, 1))
                        if np.array_equal(shifted[inner, inner], augmented[inner, inner]):
                            matches.append((flip, k, dy, dx))
        assert len(matches) == 1
        found.add(matches[0][:2])
    # Per-image draws: a batch of 16 does not get one transform for all.
    assert len(found) > 1
    again = augment_batch(tf.constant(images), tf.constant([3, 4], tf.int64)).numpy()
    assert np.array_equal(out, again)


def test_a_run_asked_for_more_epochs_resumes_with_its_optimizer_state(tmp_path):
    X, y = _tiny_set(8, 0)
    Xv, yv = _tiny_set(4, 1)
    train(X, y, Xv, yv, tmp_path, epochs=1, batch_size=4, verbose=0)
    record = train(X, y, Xv, yv, tmp_path, epochs=3, batch_size=4, verbose=0)
    assert record["epochs_run"] == 3
    assert len(record["history"]["loss"]) == 3
    assert (tmp_path / "backup").exists()
    # Nothing left to do: the same call trains no further epoch.
    assert train(X, y, Xv, yv, tmp_path, epochs=3, batch_size=4, verbose=0)["epochs_run"] == 3


def test_cosine_cycles_keep_one_snapshot_per_cycle(tmp_path):
    from lsbg_classify.training.train import cosine_cycle_rate

    rates = [cosine_cycle_rate(e, 0.1, 2, 0.001) for e in range(4)]
    assert rates[0] == rates[2] == 0.1 and rates[1] == rates[3] < 0.1
    X, y = _tiny_set(8, 0)
    record = train(X, y, None, None, tmp_path, epochs=4, batch_size=4, verbose=0, steps_per_epoch=1,
                   cycle_epochs=2, min_learning_rate=0.001)
    assert record["snapshots"] == ["snapshot_01.weights.h5", "snapshot_02.weights.h5"]
    assert np.allclose(record["history"]["learning_rate"], rates, rtol=1e-6)
