"""Train and fine-tune DeepShadows with the paper's protocol.

Data sets are ``.npz`` files holding ``X`` (n, 64, 64, 3) uint8 model
inputs and ``y`` (n,) labels (1 = LSBG, 0 = artifact), optionally ``ra``
and ``dec``.  ``lsbg-classify fetch`` writes them from a labelled catalog
through any backend; ``lsbg-classify simulate`` writes them from the
simulated sky.
"""

import json
import time
from pathlib import Path

import numpy as np

from .. import status
from ..atomic import atomic_path, atomic_write_bytes
from ..pipeline.catalog.columns import extract_positions
from ..pipeline.catalog.read import CatalogError
from ..pipeline.model import build_deepshadows, compile_deepshadows, file_sha256, import_keras
from ..pipeline.options import DEFAULT_WORKERS
from ..pipeline.preprocess import as_uint8
from ..pipeline.scoring import fetch_images
from ..version import __version__
from .defaults import FINETUNE_DEFAULTS, TRAIN_DEFAULTS

__all__ = [
    "TRAIN_DEFAULTS",
    "FINETUNE_DEFAULTS",
    "load_dataset",
    "load_selection_set",
    "save_dataset",
    "fetch_dataset",
    "split_dataset",
    "train",
    "augment_batch",
    "cosine_cycle_rate",
]


# Pixels of random shift applied by augmentation (of 64): a few percent of
# the field, as centring errors of a source finder are.
MAX_SHIFT_PIX = 3


def save_dataset(path, X, y, **extra):
    """Write a data set file (see module docstring)."""
    X = np.asarray(X)
    if X.dtype != np.uint8:
        raise ValueError("X must be uint8 model inputs (use preprocess.as_uint8)")
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} images but y has {len(y)} labels")
    # The suffix keeps numpy from appending ".npz" to the temporary name.
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, X=X, y=np.asarray(y, np.int8), **extra)


def load_dataset(path):
    """Read a data set file; returns ``(X, y, extra)`` with X uint8."""
    with np.load(path, allow_pickle=False) as data:
        if "X" not in data or "y" not in data:
            raise ValueError(f"{path}: a data set needs arrays 'X' and 'y', found {data.files}")
        X, y = data["X"], data["y"].astype(np.int8)
        extra = {k: data[k] for k in data.files if k not in ("X", "y")}
    if X.ndim != 4 or X.shape[1:] != (64, 64, 3):
        raise ValueError(f"{path}: X must have shape (n, 64, 64, 3), got {X.shape}")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"{path}: labels must be 0 (artifact) or 1 (LSBG)")
    return X, y, extra


def load_selection_set(path):
    """Read a data set file as ``(X, y, selection)``, the form model building takes.

    ``selection`` is the file's array of how each cutout was chosen (e.g.
    ``"random"``), or None where the file has none.
    """
    X, y, extra = load_dataset(path)
    return X, y, extra.get("selection")


def fetch_dataset(table, path, backend, *, label_col="label", ra_col=None, dec_col=None,
                  cache=True, refresh=False, workers=DEFAULT_WORKERS, progress=None):
    """Fetch the cutouts of a labelled catalog and write them as a data set file.

    Rows without a valid position or a usable cutout are left out; the
    others keep their position (``ra``, ``dec``) and catalog row number
    (``row``) beside ``X`` and ``y``.

    Parameters
    ----------
    table : `~astropy.table.Table`
        Catalog with positions and a label column (1 = LSBG, 0 = artifact).
    path : path-like
        The ``.npz`` file to write.
    backend : SurveyBackend
        Where the cutouts come from.
    label_col : str
        The label column.
    ra_col, dec_col : str, optional
        Position columns (default: found by name).
    cache, refresh, workers, progress
        As for :func:`~lsbg_classify.pipeline.fetch_images`.

    Returns
    -------
    numpy.ndarray of bool, shape (len(table),)
        Which rows are in the data set.

    Raises
    ------
    CatalogError
        ``label_col`` is not a column, or the positions cannot be read.
    """
    if label_col not in table.colnames:
        raise CatalogError(f"label column {label_col!r} not in the catalog; "
                           f"columns: {', '.join(table.colnames)}")
    labels = np.asarray(table[label_col])
    positions = extract_positions(table, ra_col=ra_col, dec_col=dec_col, on_invalid="flag")
    fetched = fetch_images(positions.ra, positions.dec, backend, cache=cache, refresh=refresh,
                           workers=workers, progress=progress, valid=positions.valid)
    ok = fetched.status == status.OK
    save_dataset(path, as_uint8(fetched.images[ok]), labels[ok].astype(np.int8),
                 ra=positions.ra[ok], dec=positions.dec[ok], row=np.flatnonzero(ok))
    return ok


def split_dataset(n, fractions=(0.75, 0.125, 0.125), seed=0):
    """Random train/validation/test index arrays (the paper: 30k/5k/5k of 40k)."""
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError("fractions must add up to 1")
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum(np.round(np.asarray(fractions[:-1]) * n).astype(int))
    return tuple(np.split(order, cuts))


def augment_batch(images, seed=None):
    """Random flips, 90° rotations and shifts, drawn per image, on a whole batch.

    Parameters
    ----------
    images : tf.Tensor, shape (b, 64, 64, 3), float32
    seed : tf.Tensor, shape (2,), int, optional
        Stateless seed of this batch's draws.

    Returns
    -------
    tf.Tensor
        The augmented batch, same shape: each image flipped left-right with
        probability 1/2, rotated by k·90° (k uniform in 0-3) and shifted by
        up to :data:`MAX_SHIFT_PIX` pixels on each axis (reflected edges).
    """
    import tensorflow as tf

    seeds = tf.random.split(seed, 4) if seed is not None else [None] * 4

    def draw(shape, upper, i):
        if seed is None:
            return tf.random.uniform(shape, 0, upper, tf.int32)
        return tf.random.stateless_uniform(shape, seeds[i], 0, upper, tf.int32)

    n, side = tf.shape(images)[0], images.shape[1]
    flip = draw([n], 2, 0) == 1
    images = tf.where(flip[:, None, None, None], tf.reverse(images, [2]), images)
    rotations = tf.stack([tf.image.rot90(images, k) for k in range(4)], axis=1)
    images = tf.gather(rotations, draw([n], 4, 1), axis=1, batch_dims=1)
    pad = MAX_SHIFT_PIX
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], "REFLECT")
    base = tf.range(side)[None, :]
    rows = base + draw([n, 1], 2 * pad + 1, 2)
    cols = base + draw([n, 1], 2 * pad + 1, 3)
    images = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(images, cols, axis=2, batch_dims=1)


def _augmenting_dataset(X, y, batch_size, seed, augment, repeat=False):
    """Shuffled uint8 images as float32 batches, augmented a batch at a time."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((X, np.asarray(y, np.float32)))
    data = data.shuffle(len(X), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        data = data.repeat()
    data = data.batch(batch_size)
    if augment:
        counter = tf.data.Dataset.counter()
        data = tf.data.Dataset.zip((data, counter))

        def transform(batch, step):
            images, labels = batch
            images = tf.cast(images, tf.float32) / 255.0
            return augment_batch(images, tf.stack([tf.cast(seed, tf.int64), step])), labels
    else:
        def transform(images, labels):
            return tf.cast(images, tf.float32) / 255.0, labels
    return data.map(transform, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def cosine_cycle_rate(epoch, learning_rate, cycle_epochs, min_learning_rate):
    """Learning rate of a cosine cycle restarting every ``cycle_epochs`` epochs.

    Snapshot ensembles (Huang et al. 2017): each cycle ends in a different
    low-loss model, all from one run.
    """
    phase = (epoch % cycle_epochs) / cycle_epochs
    return min_learning_rate + 0.5 * (learning_rate - min_learning_rate) * (1 + np.cos(np.pi * phase))


def _schedule_callbacks(output_dir, learning_rate, cycle_epochs, min_learning_rate):
    keras = import_keras()

    def rate(epoch, _current):
        return float(cosine_cycle_rate(epoch, learning_rate, cycle_epochs, min_learning_rate))

    class Snapshot(keras.callbacks.Callback):
        """Keep the weights at the end of every cycle."""

        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % cycle_epochs == 0:
                path = output_dir / f"snapshot_{(epoch + 1) // cycle_epochs:02d}.weights.h5"
                self.model.save_weights(path)

    return [keras.callbacks.LearningRateScheduler(rate), Snapshot()]


def _time_budget_callback(seconds):
    keras = import_keras()

    class TimeBudget(keras.callbacks.Callback):
        """Stop before an epoch that would end past the budget."""

        def __init__(self, seconds):
            super().__init__()
            self.seconds = float(seconds)
            self.stopped = False

        def on_train_begin(self, logs=None):
            self.started = time.time()

        def on_epoch_end(self, epoch, logs=None):
            elapsed = time.time() - self.started
            if elapsed + elapsed / (epoch + 1) > self.seconds:
                self.stopped = True
                self.model.stop_training = True

    return TimeBudget(seconds)


def _read_history(path):
    """Per-epoch history from the CSV log (all sittings of a resumed run)."""
    import csv

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    history = {}
    for row in rows:
        for key, value in row.items():
            if key != "epoch":
                history.setdefault(key, []).append(float("nan") if value == "NA" else float(value))
    return history


def train(X_train, y_train, X_val, y_val, output_dir, *, epochs=TRAIN_DEFAULTS["epochs"],
          batch_size=TRAIN_DEFAULTS["batch_size"], learning_rate=TRAIN_DEFAULTS["learning_rate"],
          initial_weights=None, augment=True, patience=None, time_budget=None, seed=0,
          verbose=2, notes=None, steps_per_epoch=None, cycle_epochs=None,
          min_learning_rate=None, resume=True):
    """Train (or fine-tune) DeepShadows and keep the best epoch.

    Parameters
    ----------
    X_train, y_train, X_val, y_val : numpy.ndarray
        uint8 images (n, 64, 64, 3) and 0/1 labels.  ``X_val`` and
        ``y_val`` may be None: then the last epoch's weights are kept.
    output_dir : path-like
        Receives ``best.weights.h5`` (lowest validation loss),
        ``last.weights.h5``, ``history.csv`` and ``training.json``.
    epochs, batch_size, learning_rate : int, int, float
        Paper defaults: 100, 64, 0.1 (fine-tuning: 30, 16, 0.005).
    initial_weights : path-like, optional
        Start from these weights (fine-tuning); the whole network is
        trained, as in the paper.
    augment : bool
        Random flips, 90° rotations and shifts of up to 3 pixels.
    patience : int, optional
        Stop after this many epochs without validation-loss improvement
        (the paper ran all epochs; on a CPU this saves hours).
    time_budget : float, optional
        Seconds of training allowed: no epoch is started that would, at
        the pace of the epochs so far, end after it.  The record says
        whether the budget stopped the run.
    seed : int
        Seeds Keras, TensorFlow and the shuffling.
    steps_per_epoch : int, optional
        Batches per epoch (default: one pass over ``X_train``); shorter
        epochs give more frequent checkpoints and validation on big sets.
    cycle_epochs : int, optional
        Cosine learning-rate cycles of this many epochs, from
        ``learning_rate`` down to ``min_learning_rate``, restarting; the
        weights at the end of cycle k are kept as ``snapshot_{k:02d}.weights.h5``
        (a snapshot ensemble).  Default: the constant rate of the paper.
    min_learning_rate : float, optional
        End of each cycle (default ``learning_rate / 100``).
    resume : bool
        Keep the model and optimiser state after every epoch in
        ``output_dir/backup`` and, when that exists, continue from it: an
        interrupted run resumes at its last finished epoch, and a finished
        one asked for more ``epochs`` goes on from where it ended.

    Returns
    -------
    dict
        The training record written to ``training.json``.
    """
    keras = import_keras()
    keras.utils.set_random_seed(seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    network = build_deepshadows()
    if initial_weights is not None:
        network.load_weights(initial_weights)
    compile_deepshadows(network, learning_rate=learning_rate)
    best = output_dir / "best.weights.h5"
    has_val = X_val is not None
    monitor = "val_loss" if has_val else "loss"
    log = output_dir / "history.csv"
    backup = output_dir / "backup"
    resuming = resume and backup.exists()
    if not resuming and log.exists():
        log.unlink()
    callbacks = []
    if resume:
        # Restores weights, optimiser state and the epoch count.  Kept after
        # the run completes, so asking the same run for more epochs
        # continues it.
        callbacks.append(keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False))
    if cycle_epochs:
        # Before the logger, so each epoch's rate is in its row.
        min_rate = learning_rate / 100 if min_learning_rate is None else min_learning_rate
        callbacks += _schedule_callbacks(output_dir, learning_rate, int(cycle_epochs), min_rate)
    callbacks.append(keras.callbacks.CSVLogger(log, append=True))
    if has_val:
        # A resumed run must not replace the best epoch of an earlier
        # sitting with a worse one.
        earlier = _read_history(log).get(monitor) if resuming and log.exists() else None
        callbacks.append(keras.callbacks.ModelCheckpoint(
            best, monitor=monitor, save_best_only=True, save_weights_only=True,
            initial_value_threshold=min(earlier) if earlier else None))
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=patience))
    budget = _time_budget_callback(time_budget) if time_budget else None
    if budget is not None:
        callbacks.append(budget)
    val = (np.asarray(X_val, np.float32) / 255.0, np.asarray(y_val, np.float32)) if has_val else None
    started = time.time()
    network.fit(
        _augmenting_dataset(np.asarray(X_train), np.asarray(y_train), batch_size, seed, augment,
                            repeat=steps_per_epoch is not None),
        validation_data=val, epochs=epochs, callbacks=callbacks, verbose=verbose,
        steps_per_epoch=steps_per_epoch,
    )
    network.save_weights(output_dir / "last.weights.h5")
    if not has_val:
        # Without a validation set there is no "best" epoch: keep the last.
        network.save_weights(best)
    history = _read_history(log)
    losses = history[monitor]
    chosen = int(np.argmin(losses)) if has_val else len(losses) - 1
    record = {
        "package_version": __version__,
        "epochs_run": len(losses),
        "best_epoch": chosen + 1,
        "selected_by": "lowest validation loss" if has_val else "last epoch (no validation set)",
        "best_val_loss": float(losses[chosen]) if has_val else None,
        "best_val_accuracy": float(history["val_accuracy"][chosen]) if has_val else None,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "optimizer": "Adadelta",
        "augment": augment,
        "patience": patience,
        "time_budget_s": time_budget,
        "stopped_by_time_budget": bool(budget is not None and budget.stopped),
        "seed": seed,
        "n_train": int(len(X_train)),
        "n_val": int(len(X_val)) if has_val else 0,
        "initial_weights_sha256": file_sha256(initial_weights) if initial_weights else None,
        "weights_sha256": file_sha256(best),
        "seconds": round(time.time() - started, 1),
        "notes": notes or {},
        "steps_per_epoch": steps_per_epoch,
        "cycle_epochs": cycle_epochs,
        "snapshots": sorted(p.name for p in output_dir.glob("snapshot_*.weights.h5")),
        "history": history,
    }
    atomic_write_bytes(output_dir / "training.json", json.dumps(record, indent=1).encode())
    return record
