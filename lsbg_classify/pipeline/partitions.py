"""Score partitioned catalogs (Dask DataFrames, LSDB catalogs) partition by partition."""

import collections
import functools
import os
import threading
import warnings

import numpy as np
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from ..surveys import get_backend
from .cache import DEFAULT_CACHE, CutoutCache, as_cache
from .catalog.columns import extract_positions, find_position_columns
from .model import load_model
from .options import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLD, DEFAULT_WORKERS, MC_STD_COLUMN
from .scoring import score_positions

__all__ = ["classify_partition", "clear_worker_caches", "PARTITION_DTYPES"]

# Types of the added columns in pandas partitions: nullable integer so rows
# without a score hold <NA> rather than a fake class.
PARTITION_DTYPES = {"lsbg_prob": "float32", "lsbg_class": "Int8", "lsbg_status": "string"}
# Type of the Monte-Carlo dropout spread column, present when mc_samples > 0.
PARTITION_STD_DTYPE = "float32"


@functools.lru_cache(maxsize=4)
def _worker_model(model):
    # One load per worker process, however many partitions it scores.
    return load_model(model)


# Open backends a worker process keeps at most; the least recently used is
# closed to make room.
WORKER_BACKENDS = 8
_worker_backends = collections.OrderedDict()
_worker_lock = threading.Lock()


def _worker_backend(backend, survey, options):
    # One HTTP session per worker process and backend configuration.  Dask
    # runs several partitions of one process in threads: the lock makes
    # each configuration open once.
    key = (backend, survey, options)
    with _worker_lock:
        if key in _worker_backends:
            _worker_backends.move_to_end(key)
            return _worker_backends[key]
        source = _worker_backends[key] = get_backend(backend, survey=survey, **dict(options))
        while len(_worker_backends) > WORKER_BACKENDS:
            _worker_backends.popitem(last=False)[1].close()
        return source


def clear_worker_caches():
    """Close the backends and drop the models this process keeps for partitions.

    :func:`classify_partition` keeps the models it loads and the backends it
    opens (HTTP sessions, open files) for the life of the worker process, so
    that each is made once however many partitions the worker scores.  Call
    this on every worker when the work is done (with Dask:
    ``client.run(clear_worker_caches)``), or between runs in one process;
    the next partition loads and opens them again.
    """
    with _worker_lock:
        while _worker_backends:
            _worker_backends.popitem()[1].close()
    _worker_model.cache_clear()


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
        scores = score_positions(
            positions.ra, positions.dec, source, classifier, cache=cache, refresh=refresh,
            workers=workers, batch_size=batch_size, progress=False, valid=positions.valid,
            mc_samples=mc_samples, temperature=1.0 if temperature is None else temperature)
        prob, row_status, std = scores.prob, scores.status, scores.std
    else:
        prob, row_status = np.empty(0, np.float32), np.empty(0, str)
        std = np.empty(0, np.float32)
    import pandas as pd  # only partitions of pandas frames come here

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


def classify_partitioned(frame, model=None, **options):
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError("with a Dask or LSDB catalog, give model as 'des', 'hsc' or a path")
    if options["backend"] is not None and not isinstance(options["backend"], str):
        raise TypeError("with a Dask or LSDB catalog, give backend by name (plus backend_options)")
    if options["cache"] is DEFAULT_CACHE or isinstance(options["cache"], CutoutCache):
        # Every worker must use the same directory, whatever its environment.
        options["cache"] = str(as_cache(options["cache"]).directory)
    # LSDB catalogs expose their empty schema frame as ``meta``; Dask as ``_meta``.
    meta = frame.meta if hasattr(frame, "hc_structure") else frame._meta
    empty = classify_partition(meta.iloc[:0], model=model, **options)
    return frame.map_partitions(classify_partition, meta=empty,
                                model=None if model is None else str(model), **options)
