"""Positions to cutouts to probabilities: fetch, decode in threads, score in batches."""

import collections
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from .. import status
from .cache import DEFAULT_CACHE, as_cache
from .options import DECODE_AHEAD_PER_THREAD, DEFAULT_BATCH_SIZE, DEFAULT_WORKERS
from .preprocess import MODEL_IMAGE_SIZE, model_input_tag, prepare_payload_uint8
from .uncertainty import MC_SEED, apply_temperature, mc_dropout_predict

__all__ = ["fetch_images", "score_positions", "FetchedImages", "Scores"]

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


@dataclass
class Scores:
    """What :func:`score_positions` returns for a set of positions.

    Attributes
    ----------
    prob : numpy.ndarray, shape (n,), float32
        Deterministic prediction; NaN where the row has no usable image.
    status : numpy.ndarray of str, shape (n,)
        Per-row status (see :mod:`lsbg_classify.status`).
    messages : dict
        Row index → why that row is not ``ok``.
    std : numpy.ndarray, shape (n,), float32, or None
        The Monte-Carlo dropout spread of the probability when
        ``mc_samples > 0`` (NaN where there is no image), else None.

    Notes
    -----
    It also unpacks (and indexes) as ``(prob, status, messages)``, with
    ``std`` fourth when it was computed.
    """

    prob: np.ndarray
    status: np.ndarray
    messages: dict
    std: np.ndarray | None = None

    def _fields(self):
        return (self.prob, self.status, self.messages) + (() if self.std is None else (self.std,))

    def __iter__(self):
        return iter(self._fields())

    def __getitem__(self, index):
        return self._fields()[index]

    def __len__(self):
        return len(self._fields())


def _progress(total, desc, progress):
    # tqdm's disable=None turns the bar off when stderr is not a terminal.
    return tqdm(total=total, desc=desc, unit="img", disable=None if progress is None else not progress)


def decode_threads():
    """Threads that decode and resize payloads: one per CPU core this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


_INPUT_SHAPE = (MODEL_IMAGE_SIZE, MODEL_IMAGE_SIZE, 3)


def _decode(outcome, mapping):
    """(uint8 image or None, status, message) of one fetch outcome."""
    if outcome.status != status.OK:
        return None, outcome.status, outcome.message
    return prepare_payload_uint8(outcome.payload, mapping)


def _to_unit_range(images, out):
    """uint8 model inputs as float32 in [0, 1], written into ``out``."""
    return np.divide(images, np.float32(255.0), out=out, dtype=np.float32)


def _in_order(items, work, threads):
    """Yield (item, work(item)) for ``items``, in their order, computed in ``threads`` threads.

    Cache reads, checksums, decoding and resizing release the GIL, so they
    run in worker threads, a bounded number of items ahead of the consumer:
    the model is not kept waiting on one Python thread.  The order is the
    input order, so batches hold the same rows as a serial run.
    """
    if threads <= 1:
        for item in items:
            yield item, work(item)
        return
    # Enough items in flight to keep every thread busy while the consumer
    # scores a batch, few enough that memory stays a few MB.
    ahead = DECODE_AHEAD_PER_THREAD * threads
    window = collections.deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="lsbg-decode") as pool:
        try:
            for item in items:
                window.append((item, pool.submit(work, item)))
                if len(window) >= ahead:
                    first, future = window.popleft()
                    yield first, future.result()
            while window:
                first, future = window.popleft()
                yield first, future.result()
        finally:
            for _, future in window:
                future.cancel()


def _iter_images(backend, ra, dec, rows, cache, refresh, workers, progress):
    """Yield (row, uint8 image or None, status, message) as cutouts arrive.

    Cached rows come first, in row order, then the fetched ones as they
    arrive; each is decoded in the worker threads.  What a payload was
    decoded to is remembered in the cache beside it, so that a later run
    on the same cache reads model inputs instead of decoding again.
    """
    mapping = backend.survey.colour
    tag = model_input_tag(mapping)
    threads = decode_threads()
    bar = _progress(len(rows), "fetch", progress)

    def key_of(row):
        return backend.cache_key(ra[row], dec[row])

    def decode_and_remember(key, outcome):
        decoded = _decode(outcome, mapping)
        if cache is not None and decoded[0] is not None:
            cache.put_model_input(key, tag, decoded[0], outcome.payload)
        return decoded

    def read_cached(row):
        key = key_of(row)
        image = cache.get_model_input(key, tag)
        if image is not None and image.shape == _INPUT_SHAPE:
            return image, status.OK, ""
        hit = cache.get(key)
        return None if hit is None else decode_and_remember(key, hit)

    try:
        missing = []
        if cache is None or refresh:
            missing = list(rows)
        else:
            for row, decoded in _in_order(rows, read_cached, threads):
                if decoded is None:
                    missing.append(row)
                else:
                    bar.update()
                    yield (row, *decoded)

        def store(i, outcome):
            cache.put(key_of(missing[i]), outcome)

        def decode_fetched(pair):
            return decode_and_remember(key_of(missing[pair[0]]), pair[1])

        fetched = backend.fetch(ra[missing], dec[missing], workers=workers,
                                on_fetched=None if cache is None else store)

        for (i, outcome), decoded in _in_order(fetched, decode_fetched, threads):
            bar.update()
            yield (missing[i], *decoded)
    finally:
        bar.close()


def fetch_images(ra, dec, backend, cache=DEFAULT_CACHE, refresh=False, workers=DEFAULT_WORKERS,
                 progress=None, valid=None):
    """Fetch and preprocess the cutouts of many positions.

    Parameters
    ----------
    ra, dec : array_like
        Positions in degrees (ICRS).
    backend : SurveyBackend
        Image source.
    cache : CutoutCache, None, bool or path-like
        Persistent cutout cache, read by
        :func:`~lsbg_classify.pipeline.cache.as_cache`: the per-user cache
        by default (:data:`~lsbg_classify.pipeline.cache.DEFAULT_CACHE`),
        None for none.
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
    images = np.zeros((n, *_INPUT_SHAPE), np.float32)
    row_status = np.full(n, status.INVALID_POSITION, dtype=f"U{status.STATUS_WIDTH}")
    messages = {}
    rows = np.flatnonzero(valid)
    for row, image, st, message in _iter_images(
        backend, ra, dec, rows, as_cache(cache), refresh, workers, progress
    ):
        row_status[row] = st
        if image is not None:
            images[row] = image
        if message:
            messages[int(row)] = message
    return FetchedImages(_to_unit_range(images, images), row_status, messages)


def score_positions(ra, dec, backend, model, cache=DEFAULT_CACHE, refresh=False,
                    workers=DEFAULT_WORKERS, batch_size=DEFAULT_BATCH_SIZE, progress=None,
                    valid=None, mc_samples=0, temperature=1.0):
    """LSBG probabilities for positions, scoring batches while fetching goes on.

    Parameters are those of :func:`fetch_images`, plus ``model`` (an
    :class:`~lsbg_classify.pipeline.model.LSBGModel`), ``batch_size``
    (images per model call; None for the model's fastest,
    :attr:`~lsbg_classify.pipeline.model.LSBGModel.predict_batch`),
    ``mc_samples`` (Monte-Carlo dropout passes per image, 0 for none; see
    :func:`~lsbg_classify.pipeline.uncertainty.mc_dropout_predict`) and
    ``temperature`` (applied to every probability, see
    :func:`~lsbg_classify.pipeline.uncertainty.apply_temperature`).

    Returns
    -------
    Scores
        Probabilities, statuses, reasons and, when ``mc_samples > 0``, the
        Monte-Carlo dropout spread (seed
        :data:`~lsbg_classify.pipeline.uncertainty.MC_SEED`).
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
    batch = np.empty((batch_size, *_INPUT_SHAPE), np.uint8)
    batch_inputs = np.empty((batch_size, *_INPUT_SHAPE), np.float32)
    pending_rows = []

    rows = np.flatnonzero(valid)
    score_bar = _progress(len(rows), "score", progress)

    def flush():
        if pending_rows:
            images = _to_unit_range(batch[:len(pending_rows)], batch_inputs[:len(pending_rows)])
            prob[pending_rows] = apply_temperature(model.predict(images, batch_size=batch_size),
                                                   temperature)
            if mc_samples:
                std[pending_rows] = mc_dropout_predict(model, images, mc_samples, batch_size,
                                                       seed=MC_SEED, temperature=temperature)[1]
            score_bar.update(len(pending_rows))
            pending_rows.clear()

    try:
        for row, image, st, message in _iter_images(
            backend, ra, dec, rows, as_cache(cache), refresh, workers, progress
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
    return Scores(prob, row_status, messages, std if mc_samples else None)
