"""Score a candidate catalog: positions → cutouts → DeepShadows probabilities.

:func:`classify_catalog` is the library entry point;
:func:`fetch_images` is the fetch-and-preprocess stage on its own (used to
build training sets too); :func:`classify_partition` is the per-partition
form for Dask/LSDB frames.
"""

import collections
import datetime
import functools
import hashlib
import json
import os
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.table import Column, MaskedColumn, Table
from astropy.utils.exceptions import AstropyUserWarning
from tqdm.auto import tqdm

from . import status
from .atomic import atomic_write_bytes
from .cache import CutoutCache
from .catalog import (CatalogError, add_result_columns, extract_positions,
                      find_position_columns, output_column_names)
from .model import DEFAULT_DECISION_THRESHOLD, load_model
from .preprocess import MODEL_IMAGE_SIZE, prepare_payload
from .surveys import get_backend
from .uncertainty import MC_SEED, apply_temperature, check_temperature, mc_dropout_predict
from .version import __version__

__all__ = ["classify_catalog", "classify_partition", "fetch_images", "score_positions",
           "score_in_chunks", "check_options", "check_model", "result_template",
           "FetchedImages", "CheckpointMismatchError", "OptionError", "ColumnClashError",
           "DEFAULT_THRESHOLD",
           "MC_STD_COLUMN", "MESSAGE_COLUMN"]

# The class threshold of weights whose card chooses none (one constant, in model).
DEFAULT_THRESHOLD = DEFAULT_DECISION_THRESHOLD
# Concurrent requests to a public service: enough to hide latency, few
# enough to be polite to a server with no documented rate limit.
DEFAULT_WORKERS = 8
#: Images per model call unless told: None, the model's fastest measured
#: (:attr:`~lsbg_classify.model.LSBGModel.predict_batch`).
DEFAULT_BATCH_SIZE = None
# Payloads queued per decode thread ahead of the consumer.
DECODE_AHEAD_PER_THREAD = 32
# Rows per checkpointed chunk: a few minutes of fetching from a public
# service, so an interruption loses little.
DEFAULT_CHUNK_SIZE = 2000
#: Column of the Monte-Carlo dropout spread, added when ``mc_samples > 0``.
MC_STD_COLUMN = "lsbg_prob_std"
#: Column saying why a row has no score, added when ``messages=True``.
MESSAGE_COLUMN = "lsbg_message"


class OptionError(ValueError):
    """An argument that cannot work, found before anything is fetched.

    Attributes
    ----------
    option : str
        The keyword argument at fault (``"chunk_size"``, ``"model"``, ...).
    template : str
        The message with ``{}`` where the option's name goes, so that the
        command line can name its flag instead (:meth:`naming`).
    """

    def __init__(self, option, template, spelled=None):
        self.option = option
        self.template = template
        super().__init__(template.format(spelled or option))

    def naming(self, name):
        """The message with the option called ``name`` (e.g. ``"--chunk-size"``)."""
        return self.template.format(name)


class ColumnClashError(OptionError, CatalogError):
    """The catalog already has a column the run would add (option ``overwrite_columns``)."""


def _whole_number(option, value, smallest):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise OptionError(option, f"{{}} must be a whole number, got {value!r}")
    if value < smallest:
        raise OptionError(option, f"{{}} must be at least {smallest}, got {value}")


def check_options(threshold=DEFAULT_THRESHOLD, chunk_size=DEFAULT_CHUNK_SIZE,
                  workers=DEFAULT_WORKERS, batch_size=DEFAULT_BATCH_SIZE, mc_samples=0,
                  temperature=None):
    """Refuse option values that cannot work, before any catalog is read or fetched.

    Parameters are those of :func:`classify_catalog`.

    Raises
    ------
    OptionError
        Naming the keyword: ``threshold`` outside [0, 1] or NaN (None:
        the model's own); ``chunk_size``, ``workers`` or ``batch_size``
        (None: the model's fastest) not a whole number >= 1; ``mc_samples`` other than 0 or >= 2; ``temperature`` not a
        positive finite number.
    """
    if threshold is not None:
        try:
            threshold_ok = 0.0 <= float(threshold) <= 1.0
        except (TypeError, ValueError):
            threshold_ok = False
        if not threshold_ok:
            raise OptionError("threshold", f"{{}} must lie in [0, 1], got {threshold!r}")
    _whole_number("chunk_size", chunk_size, 1)
    _whole_number("workers", workers, 1)
    if batch_size is not None:
        _whole_number("batch_size", batch_size, 1)
    _whole_number("mc_samples", mc_samples, 0)
    if mc_samples == 1:
        raise OptionError("mc_samples", "{} must be 0 (off) or at least 2, got 1")
    if temperature is not None:
        try:
            check_temperature(temperature)
        except ValueError:
            raise OptionError("temperature", "{} must be a positive finite number, got "
                              f"{temperature!r}") from None


def _added_columns(mc_samples, messages):
    return (*output_column_names(), *([MC_STD_COLUMN] if mc_samples else []),
            *([MESSAGE_COLUMN] if messages else []))


def _check_clashes(table, mc_samples, messages, overwrite_columns):
    clash = [c for c in _added_columns(mc_samples, messages) if c in table.colnames]
    if clash and not overwrite_columns:
        raise ColumnClashError(
            "overwrite_columns",
            f"the catalog already has column(s) {', '.join(clash)}; pass {{}} to replace them, "
            "or remove or rename them", spelled="overwrite_columns=True")


def result_template(table, mc_samples=0, messages=False, overwrite_columns=False):
    """``table`` with the columns :func:`classify_catalog` would add, every row unscored.

    Writing it (a few rows of it) to the output's format tells, before any
    fetch, whether that format can hold the result.

    Raises
    ------
    OptionError
        A result column already exists and ``overwrite_columns`` is False.
    """
    _check_clashes(table, mc_samples, messages, overwrite_columns)
    n = len(table)
    nan = np.full(n, np.nan, np.float32)
    out = add_result_columns(table, nan, np.zeros(n, np.int8),
                             np.full(n, status.FETCH_FAILED), overwrite_columns=True)
    if mc_samples:
        out = _with_std_column(out, nan)
    if messages:
        out = _with_message_column(out, np.full(n, "reason"))
    return out


# Probes of the model check: black, white and noise images.
_PROBE_SEED = 0


def check_model(model):
    """Refuse a network that does not map 64×64×3 images to one probability each.

    Runs the network (dropout off) on a black, a white and a noise image.

    Parameters
    ----------
    model : LSBGModel

    Raises
    ------
    OptionError
        Naming ``model``: another input shape, an output that is not one
        value per image, values outside [0, 1], or a last layer whose
        activation is not a sigmoid.
    """
    shape = tuple(getattr(model.network, "input_shape", (None,) * 4)[1:])
    want = (MODEL_IMAGE_SIZE, MODEL_IMAGE_SIZE, 3)
    if shape != want:
        raise OptionError("model", f"{{}} {model.name} takes images of shape {shape}; "
                                   f"DeepShadows needs {want}")
    layers = getattr(model.network, "layers", None)
    activation = getattr(layers[-1], "activation", None) if layers else None
    name = getattr(activation, "__name__", None)
    if name is not None and name != "sigmoid":
        raise OptionError("model", f"{{}} {model.name} ends in a {name!r} activation, not a "
                                   "sigmoid: its outputs are not probabilities")
    rng = np.random.default_rng(_PROBE_SEED)
    probes = np.stack([np.zeros(want), np.ones(want), rng.uniform(0, 1, want)]).astype(np.float32)
    out = np.asarray(model.eager_forward(probes))
    if out.shape not in ((3,), (3, 1)):
        raise OptionError("model", f"{{}} {model.name} gives output of shape {out.shape[1:]} per "
                                   "image; DeepShadows needs one probability per image")
    if not np.all(np.isfinite(out) & (out >= 0) & (out <= 1)):
        raise OptionError("model", f"{{}} {model.name} gives values outside [0, 1] "
                                   f"({', '.join(f'{v:.3g}' for v in out.ravel())}): not "
                                   "probabilities")


@dataclass
class FetchedImages:
    """Model inputs for a set of positions.

    Attributes
    ----------
    images : numpy.ndarray, shape (n, 64, 64, 3), float32
        Zero where no image could be had.
    status : numpy.ndarray of str, shape (n,)
        Per-row status (see :mod:`lsbg_classify.status`).
    messages : dict
        Row index → why that row is not ``ok``.
    """

    images: np.ndarray
    status: np.ndarray
    messages: dict


def _open_cache(cache):
    if cache is None or cache is False:
        return None
    if isinstance(cache, CutoutCache):
        return cache
    if cache is True:
        return CutoutCache()
    return CutoutCache(cache)


def _progress(total, desc, progress):
    # tqdm's disable=None turns the bar off when stderr is not a terminal.
    return tqdm(total=total, desc=desc, unit="img", disable=None if progress is None else not progress)


def _iter_outcomes(backend, ra, dec, rows, cache, refresh, workers):
    """Yield (row, FetchOutcome) for ``rows``, from the cache when possible."""
    missing = []
    for row in rows:
        hit = None if (cache is None or refresh) else cache.get(backend.cache_key(ra[row], dec[row]))
        if hit is None:
            missing.append(row)
        else:
            yield row, hit
    def store(i, outcome):
        row = missing[i]
        cache.put(backend.cache_key(ra[row], dec[row]), outcome)

    fetched = backend.fetch(ra[missing], dec[missing], workers=workers,
                            on_fetched=None if cache is None else store)
    for i, outcome in fetched:
        yield missing[i], outcome


def decode_threads():
    """Threads that decode and resize payloads: one per CPU core this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _decode(outcome, mapping):
    """(image or None, status, message) of one fetch outcome."""
    if outcome.status != status.OK:
        return None, outcome.status, outcome.message
    return prepare_payload(outcome.payload, mapping)


def _decoded_in_order(outcomes, mapping, threads):
    """Yield (row, image or None, status, message) for (row, outcome) pairs, in their order.

    Decoding and resizing run in ``threads`` worker threads (Pillow releases
    the GIL while it works), a bounded number of payloads ahead of the
    consumer, so the model is not kept waiting on one Python thread.  The
    order is the input order, so batches hold the same rows as a serial run.
    """
    if threads <= 1:
        for row, outcome in outcomes:
            yield (row, *_decode(outcome, mapping))
        return
    # Enough payloads in flight to keep every thread busy while the consumer
    # scores a batch, few enough that memory stays a few MB.
    ahead = DECODE_AHEAD_PER_THREAD * threads
    window = collections.deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="lsbg-decode") as pool:
        try:
            for row, outcome in outcomes:
                window.append((row, pool.submit(_decode, outcome, mapping)))
                if len(window) >= ahead:
                    first, future = window.popleft()
                    yield (first, *future.result())
            while window:
                first, future = window.popleft()
                yield (first, *future.result())
        finally:
            for _, future in window:
                future.cancel()


def _iter_images(backend, ra, dec, rows, cache, refresh, workers, progress):
    """Yield (row, image or None, status, message) as cutouts arrive."""
    bar = _progress(len(rows), "fetch", progress)

    def counted():
        for item in _iter_outcomes(backend, ra, dec, rows, cache, refresh, workers):
            bar.update()
            yield item

    try:
        yield from _decoded_in_order(counted(), backend.survey.colour, decode_threads())
    finally:
        bar.close()


def fetch_images(ra, dec, backend, cache=True, refresh=False, workers=DEFAULT_WORKERS,
                 progress=None, valid=None):
    """Fetch and preprocess the cutouts of many positions.

    Parameters
    ----------
    ra, dec : array_like
        Positions in degrees (ICRS).
    backend : SurveyBackend
        Image source.
    cache : bool, str, path-like or CutoutCache
        Persistent cutout cache: True for the default directory, a path, or
        False/None for none.
    refresh : bool
        Fetch again even when the cache has the cutout (and update it).
    workers : int
        Concurrent requests.
    progress : bool or None
        Show a progress bar; None shows it only on a terminal.
    valid : array_like of bool, optional
        Rows to fetch; the others get status ``invalid_position``.

    Returns
    -------
    FetchedImages
    """
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    n = len(ra)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    images = np.zeros((n, MODEL_IMAGE_SIZE, MODEL_IMAGE_SIZE, 3), np.float32)
    row_status = np.full(n, status.INVALID_POSITION, dtype=f"U{status.STATUS_WIDTH}")
    messages = {}
    rows = np.flatnonzero(valid)
    for row, image, st, message in _iter_images(
        backend, ra, dec, rows, _open_cache(cache), refresh, workers, progress
    ):
        row_status[row] = st
        if image is not None:
            images[row] = image
        if message:
            messages[int(row)] = message
    return FetchedImages(images, row_status, messages)


def score_positions(ra, dec, backend, model, cache=True, refresh=False, workers=DEFAULT_WORKERS,
                    batch_size=DEFAULT_BATCH_SIZE, progress=None, valid=None, mc_samples=0,
                    temperature=1.0):
    """LSBG probabilities for positions, scoring batches while fetching goes on.

    Parameters are those of :func:`fetch_images`, plus ``model`` (an
    :class:`~lsbg_classify.model.LSBGModel`), ``batch_size`` (images per
    model call; None for the model's fastest,
    :attr:`~lsbg_classify.model.LSBGModel.predict_batch`), ``mc_samples`` (Monte-Carlo dropout passes per image, 0 for
    none; see :func:`~lsbg_classify.uncertainty.mc_dropout_predict`) and
    ``temperature`` (applied to every probability, see
    :func:`~lsbg_classify.uncertainty.apply_temperature`).

    Returns
    -------
    prob : numpy.ndarray, shape (n,), float32
        Deterministic prediction; NaN where the row has no usable image.
    row_status : numpy.ndarray of str, shape (n,)
    messages : dict
        Row index → reason for rows that are not ``ok``.
    std : numpy.ndarray, shape (n,), float32
        Only when ``mc_samples > 0``: the Monte-Carlo dropout spread of the
        probability (seed :data:`~lsbg_classify.uncertainty.MC_SEED`); NaN
        where there is no image.
    """
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    n = len(ra)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    prob = np.full(n, np.nan, np.float32)
    std = np.full(n, np.nan, np.float32)
    row_status = np.full(n, status.INVALID_POSITION, dtype=f"U{status.STATUS_WIDTH}")
    messages = {}
    batch_size = model.predict_batch if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    # One batch of model inputs, filled in place and reused for every batch.
    batch = np.empty((batch_size, MODEL_IMAGE_SIZE, MODEL_IMAGE_SIZE, 3), np.float32)
    pending_rows = []

    rows = np.flatnonzero(valid)
    score_bar = _progress(len(rows), "score", progress)

    def flush():
        if pending_rows:
            images = batch[:len(pending_rows)]
            prob[pending_rows] = apply_temperature(model.predict(images, batch_size=batch_size),
                                                   temperature)
            if mc_samples:
                std[pending_rows] = mc_dropout_predict(model, images, mc_samples, batch_size,
                                                       seed=MC_SEED, temperature=temperature)[1]
            score_bar.update(len(pending_rows))
            pending_rows.clear()

    try:
        for row, image, st, message in _iter_images(
            backend, ra, dec, rows, _open_cache(cache), refresh, workers, progress
        ):
            row_status[row] = st
            if message:
                messages[int(row)] = message
            if image is not None:
                batch[len(pending_rows)] = image
                pending_rows.append(row)
                if len(pending_rows) == batch_size:
                    flush()
        flush()
    finally:
        score_bar.close()
    return (prob, row_status, messages, std) if mc_samples else (prob, row_status, messages)


def _fingerprint(ra, dec, valid, model, source):
    """What a checkpoint's results depend on: positions, model, image source."""
    digest = hashlib.sha256()
    for array in (ra, dec, valid):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(json.dumps([model.provenance(), source.describe()], sort_keys=True,
                             default=str).encode())
    return digest.hexdigest()


class CheckpointMismatchError(ValueError):
    """A checkpoint directory holds results of a different run."""


def _message_array(messages, n):
    """Row index -> reason dict as a string array of length ``n`` ("" where none)."""
    out = np.full(n, "", dtype=object)
    for row, text in messages.items():
        out[row] = text
    return out.astype(str)


def _save_chunk(path, prob, row_status, message, std=None):
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, prob=prob, status=row_status, message=message,
             **({} if std is None else {"std": std}))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_chunk(path, length, with_std=False):
    """Dict of a finished chunk's arrays; None if absent, damaged or lacking std.

    Chunks written before messages were kept have none: their rows get "".
    """
    names = ("prob", "status", "std") if with_std else ("prob", "status")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in names}
            arrays["message"] = (data["message"] if "message" in data.files
                                 else np.full(length, ""))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    return arrays if all(len(a) == length for a in arrays.values()) else None


def _open_manifest(folder, identity):
    """Check ``folder``'s manifest against ``identity``, or write it (atomically)."""
    manifest = folder / "manifest.json"
    mismatch = (f"checkpoint {folder} belongs to a run with other positions, model, backend, "
                "chunk size, Monte-Carlo dropout samples or temperature; remove it to start "
                "afresh")
    if manifest.exists():
        try:
            found = json.loads(manifest.read_text())
        except (OSError, ValueError):
            found = None
        if found == identity:
            return
        if found is not None or any(folder.glob("chunk-*.npz")):
            raise CheckpointMismatchError(
                mismatch if found is not None else
                f"checkpoint {folder} has a damaged manifest.json; remove the folder to start "
                "afresh")
        # An unreadable manifest and no chunk yet: nothing to lose, start over.
    atomic_write_bytes(manifest, json.dumps(identity).encode())


def score_in_chunks(ra, dec, backend, model, checkpoint_dir, chunk_size=DEFAULT_CHUNK_SIZE,
                    valid=None, **options):
    """:func:`score_positions` chunk by chunk, keeping finished chunks on disk.

    A rerun with the same positions, model and backend after an
    interruption (even ``kill -9``) scores only the chunks not yet
    finished, and returns what an uninterrupted run would (probabilities
    equal up to float32 rounding, which depends on how images share a batch).

    Parameters
    ----------
    checkpoint_dir : path-like
        Directory for the finished chunks; created if needed.
    chunk_size : int
        Rows per chunk.  Memory use depends on it, not on the catalog size.
    **options
        Passed to :func:`score_positions`.  A non-default ``mc_samples`` or
        ``temperature`` is part of what a checkpoint must match, and each
        chunk then also keeps its Monte-Carlo spread.

    Returns
    -------
    prob, row_status : numpy.ndarray
        As :func:`score_positions`.
    std : numpy.ndarray
        Only when ``mc_samples > 0``, as :func:`score_positions`.
    """
    result = _chunked(ra, dec, backend, model, checkpoint_dir, chunk_size, valid, options)
    if options.get("mc_samples", 0):
        return result["prob"], result["status"], result["std"]
    return result["prob"], result["status"]


def _chunked(ra, dec, backend, model, checkpoint_dir, chunk_size, valid, options):
    """The work of :func:`score_in_chunks`: a dict of prob, status, message and std."""
    _whole_number("chunk_size", chunk_size, 1)
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    n = len(ra)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    folder = Path(checkpoint_dir)
    # No parents: a missing directory is the caller's mistake, not ours to create.
    folder.mkdir(exist_ok=True)
    identity = {"fingerprint": _fingerprint(ra, dec, valid, model, backend),
                "rows": n, "chunk_size": int(chunk_size)}
    mc_samples = int(options.get("mc_samples", 0))
    temperature = float(options.get("temperature", 1.0))
    # Only non-default scoring options join the identity, so a plain run still
    # matches the checkpoints of versions that had no such options.
    if mc_samples:
        identity["mc_samples"] = mc_samples
    if temperature != 1.0:
        identity["temperature"] = temperature
    _open_manifest(folder, identity)
    out = {"prob": np.full(n, np.nan, np.float32), "std": np.full(n, np.nan, np.float32),
           "status": np.full(n, status.INVALID_POSITION, dtype=f"U{status.STATUS_WIDTH}"),
           "message": np.full(n, "", dtype=object)}
    for start in range(0, n, chunk_size):
        rows = slice(start, min(start + chunk_size, n))
        path = folder / f"chunk-{start:012d}.npz"
        done = _load_chunk(path, rows.stop - start, bool(mc_samples)) if path.exists() else None
        if done is None:
            result = score_positions(ra[rows], dec[rows], backend, model, valid=valid[rows],
                                     **options)
            done = {"prob": result[0], "status": result[1],
                    "message": _message_array(result[2], rows.stop - start)}
            if mc_samples:
                done["std"] = result[3]
            _save_chunk(path, done["prob"], done["status"], done["message"], done.get("std"))
        for name, values in done.items():
            out[name][rows] = values
    out["message"] = out["message"].astype(str)
    return out


def classify_catalog(table, survey="des", backend="legacysurvey", model=None,
                     threshold=None, ra_col=None, dec_col=None, on_invalid="raise",
                     cache=True, refresh=False, workers=DEFAULT_WORKERS,
                     batch_size=DEFAULT_BATCH_SIZE, progress=None, backend_options=None,
                     checkpoint_dir=None, chunk_size=DEFAULT_CHUNK_SIZE, mc_samples=0,
                     temperature=None, overwrite_columns=False, messages=False, tta=False):
    """Score every candidate of a catalog with DeepShadows.

    Everything that can be checked before the first fetch is checked first
    (the options, column clashes, the positions, the image source, the
    model's output), so a bad value fails at once, naming its keyword
    (:class:`OptionError`), and leaves no checkpoint behind.

    Parameters
    ----------
    table : `~astropy.table.Table`, Dask DataFrame or LSDB Catalog
        Candidates with sky positions.  Not modified.  A Dask DataFrame or
        an LSDB catalog is classified partition by partition on the active
        Dask scheduler (see :func:`classify_partition`) and the same kind
        of lazy object is returned; invalid positions are then always
        flagged, and ``model`` must be a name or a path.
    survey : {"des", "hsc"}
        Survey whose images are used; also picks the bundled model.
    backend : str or SurveyBackend
        Image source: ``"legacysurvey"`` (the paper's), ``"hips"``,
        ``"local"``, ``"simulated"``, one added by another package, or an
        instance.
    model : str, path-like or LSBGModel, optional
        Defaults to the bundled model of ``survey``.  It must map 64×64×3
        images to one probability each (see :func:`check_model`).
    threshold : float, optional
        ``lsbg_class`` is 1 where ``lsbg_prob >= threshold``.  Default: the
        model's :attr:`~lsbg_classify.model.LSBGModel.decision_threshold`
        (chosen on real cutouts for the bundled DES model, see its card;
        0.5 for weights without one).
    ra_col, dec_col : str, optional
        Position columns; found by name when omitted.
    on_invalid : {"raise", "flag"}
        What to do with invalid positions: raise a
        :class:`~lsbg_classify.catalog.CatalogError` naming the rows, or
        give them status ``invalid_position``.
    cache : bool, str, path-like or CutoutCache
        Persistent cutout cache (default: the user cache directory).  Its
        stale temporary files (over an hour old) are removed at the start;
        a cache that cannot be written is warned about once and the run goes
        on without storing cutouts.
    refresh : bool
        Ignore cached cutouts and fetch again.
    workers : int
        Concurrent requests to the image service (at least 1).
    batch_size : int, optional
        Images per model call; default: the model's fastest measured
        (:attr:`~lsbg_classify.model.LSBGModel.predict_batch`, 256 with
        ONNX Runtime).
    progress : bool or None
        Progress bars; None shows them only on a terminal.
    backend_options : dict, optional
        Passed to the backend's constructor (e.g. ``{"base_url": ...}``).
    checkpoint_dir : path-like, optional
        Keep finished chunks of ``chunk_size`` rows here so that a rerun
        after an interruption resumes (see :func:`score_in_chunks`).
    chunk_size : int
        Rows per checkpointed chunk (at least 1).
    mc_samples : int
        When positive, also score every image this many times with dropout
        active (Monte-Carlo dropout, see
        :func:`~lsbg_classify.uncertainty.mc_dropout_predict`; it costs
        ``mc_samples`` extra model passes) and add their standard deviation
        as ``lsbg_prob_std``.  ``lsbg_prob`` stays the deterministic
        prediction.  0 (default) or at least 2.
    temperature : float, optional
        Divide the logit of every probability (and of every Monte-Carlo
        sample) by this ``T > 0`` before thresholding, a calibration fitted
        with :func:`lsbg_classify.reliability.fit_temperature`; recorded in
        the provenance.  Default: no scaling.
    overwrite_columns : bool
        Replace result columns the catalog already has (re-scoring a scored
        catalog) instead of refusing before any fetch.
    messages : bool
        Add ``lsbg_message``: why each row has no score (the service's
        answer, the decoder's complaint, ...), empty where it has one.
    tta : bool
        Average every probability over the 8 flips and 90° rotations of the
        cutout (test-time augmentation, :func:`~lsbg_classify.model.predict_tta`):
        8 network passes per image instead of 1.  Not with ``mc_samples``.

    Returns
    -------
    `~astropy.table.Table`
        A copy of ``table`` with ``lsbg_prob`` (float32 in [0, 1], masked
        where no image), ``lsbg_class`` and ``lsbg_status`` added, and
        provenance under ``meta["LSBG_CLASSIFY"]``; with ``mc_samples``,
        also ``lsbg_prob_std`` (float32, masked where no image) after
        ``lsbg_prob``; with ``messages``, ``lsbg_message`` last.

    Raises
    ------
    OptionError
        A bad option, a column clash or an unusable model, before any fetch.
    """
    check_options(threshold, chunk_size, workers, batch_size, mc_samples, temperature)
    if tta and mc_samples:
        raise OptionError("tta", "{} cannot be combined with Monte-Carlo dropout (mc_samples)")
    mc_samples = int(mc_samples)
    scoring = dict(mc_samples=mc_samples,
                   temperature=1.0 if temperature is None else check_temperature(temperature))
    if hasattr(table, "map_partitions"):
        return _classify_partitioned(
            table, survey=survey, backend=backend, model=model, threshold=threshold,
            ra_col=ra_col, dec_col=dec_col, cache=cache, refresh=refresh, workers=workers,
            batch_size=batch_size, backend_options=backend_options, tta=tta, **scoring)
    _check_clashes(table, mc_samples, messages, overwrite_columns)
    positions = extract_positions(table, ra_col=ra_col, dec_col=dec_col, on_invalid=on_invalid)
    source = get_backend(backend, survey=survey, **(backend_options or {}))
    try:
        classifier = load_model(survey if model is None else model)
        check_model(classifier)
        if tta:
            classifier = classifier.with_tta()
        if threshold is None:
            threshold = classifier.decision_threshold
        if mc_samples:
            # Dropout sampling runs on the Keras network: build it (or say
            # which extra it needs) before anything is fetched.
            classifier.keras_network()
        opened = _open_cache(cache)
        if opened is not None:
            opened.remove_stale_temp_files()
        options = dict(cache=opened, refresh=refresh, workers=workers, batch_size=batch_size,
                       progress=progress, **scoring)
        if checkpoint_dir is None:
            result = score_positions(positions.ra, positions.dec, source, classifier,
                                     valid=positions.valid, **options)
            result = {"prob": result[0], "status": result[1],
                      "message": _message_array(result[2], len(positions.ra)),
                      "std": result[3] if mc_samples else None}
        else:
            result = _chunked(positions.ra, positions.dec, source, classifier, checkpoint_dir,
                              chunk_size, positions.valid, options)
    finally:
        if source is not backend:  # built here from a name: ours to close
            source.close()
    prob, row_status = result["prob"], result["status"]
    scored = np.isfinite(prob)
    lsbg_class = np.where(scored & (prob >= threshold), 1, 0).astype(np.int8)
    meta = {
        "version": __version__,
        **classifier.provenance(),
        **source.describe(),
        "threshold": float(threshold),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if temperature is not None:
        meta["temperature"] = float(temperature)
    if mc_samples:
        meta.update(mc_dropout_samples=mc_samples, mc_dropout_seed=MC_SEED)
    out = add_result_columns(table, prob, lsbg_class, row_status, meta=meta,
                             overwrite_columns=overwrite_columns)
    if mc_samples:
        out = _with_std_column(out, result["std"])
    if messages:
        out = _with_message_column(out, np.where(positions.valid, result["message"],
                                                 positions.reasons))
    return out


def _with_message_column(scored, message):
    """``scored`` with the per-row reasons as its (replaced) last column."""
    column = Column(np.asarray(message, dtype=str), name=MESSAGE_COLUMN,
                    description="why the row has no score (empty where it has one)")
    if MESSAGE_COLUMN in scored.colnames:
        scored.remove_column(MESSAGE_COLUMN)
    scored.add_column(column)
    return scored


def _with_std_column(scored, std):
    """``scored`` with the Monte-Carlo dropout spread inserted after ``lsbg_prob``."""
    no_score = ~np.isfinite(std)
    column = MaskedColumn(
        np.where(no_score, np.nan, std).astype(np.float32), name=MC_STD_COLUMN, mask=no_score,
        fill_value=np.nan,
        description="Monte-Carlo dropout standard deviation of the LSBG probability (not a "
                    "calibrated error bar); masked (NaN) where not scored")
    if MC_STD_COLUMN in scored.colnames:
        scored.remove_column(MC_STD_COLUMN)
    scored.add_column(column, index=scored.colnames.index("lsbg_prob") + 1)
    return scored


# -- partitioned catalogs (Dask DataFrames, LSDB catalogs) --------------------

# Types of the added columns in pandas partitions: nullable integer so rows
# without a score hold <NA> rather than a fake class.
PARTITION_DTYPES = {"lsbg_prob": "float32", "lsbg_class": "Int8", "lsbg_status": "string"}
# Type of the Monte-Carlo dropout spread column, present when mc_samples > 0.
PARTITION_STD_DTYPE = "float32"


@functools.lru_cache(maxsize=4)
def _worker_model(model):
    # One load per worker process, however many partitions it scores.
    return load_model(model)


@functools.lru_cache(maxsize=8)
def _worker_backend(backend, survey, options):
    # One HTTP session per worker process and backend configuration.
    return get_backend(backend, survey=survey, **dict(options))


def classify_partition(frame, survey="des", backend="legacysurvey", model=None,
                       threshold=None, ra_col=None, dec_col=None, cache=True,
                       refresh=False, workers=DEFAULT_WORKERS, batch_size=DEFAULT_BATCH_SIZE,
                       backend_options=None, mc_samples=0, temperature=None, tta=False):
    """Score one partition of a large catalog.

    This is what every Dask task runs; it works on a plain
    :class:`pandas.DataFrame` too, so the same code runs on a laptop and on
    a cluster.  Each worker process loads the model and opens the backend
    once; the on-disk cutout cache is shared safely between workers.

    Parameters
    ----------
    frame : pandas.DataFrame
        Candidates with position columns (degrees unless they hold strings).
    **options
        As :func:`classify_catalog`; ``model`` must be ``"des"``, ``"hsc"``
        or a path so that it can be sent to the workers.  Invalid
        positions are flagged (status ``invalid_position``).

    Returns
    -------
    pandas.DataFrame
        A copy of ``frame`` with ``lsbg_prob``, ``lsbg_class`` and
        ``lsbg_status`` added (types :data:`PARTITION_DTYPES`), and
        ``lsbg_prob_std`` (float32) after them when ``mc_samples > 0``.
    """
    out = frame.copy()
    n = len(frame)
    if n:
        ra_name, dec_name = find_position_columns(Table.from_pandas(frame.head(0)), ra_col, dec_col)
        columns = Table({ra_name: frame[ra_name].to_numpy(), dec_name: frame[dec_name].to_numpy()})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)
            positions = extract_positions(columns, ra_name, dec_name, on_invalid="flag")
        source = _worker_backend(backend, survey, tuple(sorted((backend_options or {}).items())))
        classifier = _worker_model(str(survey if model is None else model))
        if tta:
            classifier = classifier.with_tta()
        if threshold is None:
            threshold = classifier.decision_threshold
        result = score_positions(
            positions.ra, positions.dec, source, classifier, cache=cache, refresh=refresh,
            workers=workers, batch_size=batch_size, progress=False, valid=positions.valid,
            mc_samples=mc_samples, temperature=1.0 if temperature is None else temperature)
        prob, row_status = result[:2]
        std = result[3] if mc_samples else None
    else:
        prob, row_status = np.empty(0, np.float32), np.empty(0, str)
        std = np.empty(0, np.float32)
    scored = np.isfinite(prob)
    out["lsbg_prob"] = prob
    # An empty partition loads no model; its threshold changes nothing.
    cut = DEFAULT_THRESHOLD if threshold is None else threshold
    out["lsbg_class"] = pd.array(np.where(prob >= cut, 1, 0), dtype="Int8")
    out.loc[~scored, "lsbg_class"] = pd.NA
    out["lsbg_status"] = pd.array(row_status, dtype="string")
    if not mc_samples:
        return out.astype(PARTITION_DTYPES)
    out[MC_STD_COLUMN] = std
    return out.astype({**PARTITION_DTYPES, MC_STD_COLUMN: PARTITION_STD_DTYPE})


def _classify_partitioned(frame, model=None, **options):
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError("with a Dask or LSDB catalog, give model as 'des', 'hsc' or a path")
    if options["backend"] is not None and not isinstance(options["backend"], str):
        raise TypeError("with a Dask or LSDB catalog, give backend by name (plus backend_options)")
    if options["cache"] is True:
        # Every worker must use the same directory, whatever its environment.
        options["cache"] = str(CutoutCache().directory)
    elif isinstance(options["cache"], CutoutCache):
        options["cache"] = str(options["cache"].directory)
    # LSDB catalogs expose their empty schema frame as ``meta``; Dask as ``_meta``.
    meta = frame.meta if hasattr(frame, "hc_structure") else frame._meta
    empty = classify_partition(meta.iloc[:0], model=model, **options)
    return frame.map_partitions(classify_partition, meta=empty,
                                model=None if model is None else str(model), **options)
