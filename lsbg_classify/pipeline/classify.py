"""Score a candidate catalog: the :class:`~astropy.table.Table` path."""

import datetime

import numpy as np

from ..surveys import get_backend
from ..version import __version__
from .cache import DEFAULT_CACHE, as_cache
from .catalog.columns import add_result_columns, extract_positions
from .checkpoint import chunked, message_array
from .model import load_model
from .options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_WORKERS,
    OptionError,
    check_clashes,
    check_model,
    check_options,
    with_message_column,
    with_std_column,
)
from .partitions import classify_partitioned
from .scoring import score_positions
from .uncertainty import MC_SEED, check_temperature

__all__ = ["classify_catalog"]

def classify_catalog(table, survey="des", backend="legacysurvey", model=None,
                     threshold=None, ra_col=None, dec_col=None, on_invalid="raise",
                     cache=DEFAULT_CACHE, refresh=False, workers=DEFAULT_WORKERS,
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
        model's :attr:`~lsbg_classify.pipeline.model.LSBGModel.decision_threshold`
        (chosen on real cutouts for the bundled DES model, see its card;
        0.5 for weights without one).
    ra_col, dec_col : str, optional
        Position columns; found by name when omitted.
    on_invalid : {"raise", "flag"}
        What to do with invalid positions: raise a
        :class:`~lsbg_classify.pipeline.catalog.read.CatalogError` naming the rows, or
        give them status ``invalid_position``.
    cache : CutoutCache, None, bool or path-like
        Persistent cutout cache, read by
        :func:`~lsbg_classify.pipeline.cache.as_cache` (default: the user
        cache directory).  Its
        stale temporary files (over an hour old) are removed at the start;
        a cache that cannot be written is warned about once and the run goes
        on without storing cutouts.
    refresh : bool
        Ignore cached cutouts and fetch again.
    workers : int
        Concurrent requests to the image service (at least 1).
    batch_size : int, optional
        Images per model call; default: the model's fastest measured
        (:attr:`~lsbg_classify.pipeline.model.LSBGModel.predict_batch`, 256 with
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
        :func:`~lsbg_classify.pipeline.uncertainty.mc_dropout_predict`; it costs
        ``mc_samples`` extra model passes) and add their standard deviation
        as ``lsbg_prob_std``.  ``lsbg_prob`` stays the deterministic
        prediction.  0 (default) or at least 2.
    temperature : float, optional
        Divide the logit of every probability (and of every Monte-Carlo
        sample) by this ``T > 0`` before thresholding, a calibration fitted
        with :func:`lsbg_classify.diagnostics.reliability.fit_temperature`; recorded in
        the provenance.  Default: no scaling.
    overwrite_columns : bool
        Replace result columns the catalog already has (re-scoring a scored
        catalog) instead of refusing before any fetch.
    messages : bool
        Add ``lsbg_message``: why each row has no score (the service's
        answer, the decoder's complaint, ...), empty where it has one.
    tta : bool
        Average every probability over the 8 flips and 90° rotations of the
        cutout (test-time augmentation, :func:`~lsbg_classify.pipeline.model.predict_tta`):
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
        return classify_partitioned(
            table, survey=survey, backend=backend, model=model, threshold=threshold,
            ra_col=ra_col, dec_col=dec_col, cache=cache, refresh=refresh, workers=workers,
            batch_size=batch_size, backend_options=backend_options, tta=tta, **scoring)
    check_clashes(table, mc_samples, messages, overwrite_columns)
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
        opened = as_cache(cache)
        if opened is not None:
            opened.remove_stale_temp_files()
        options = dict(cache=opened, refresh=refresh, workers=workers, batch_size=batch_size,
                       progress=progress, **scoring)
        if checkpoint_dir is None:
            scores = score_positions(positions.ra, positions.dec, source, classifier,
                                     valid=positions.valid, **options)
            result = {"prob": scores.prob, "status": scores.status,
                      "message": message_array(scores.messages, len(positions.ra)),
                      "std": scores.std}
        else:
            result = chunked(positions.ra, positions.dec, source, classifier, checkpoint_dir,
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
        out = with_std_column(out, result["std"])
    if messages:
        out = with_message_column(out, np.where(positions.valid, result["message"],
                                                 positions.reasons))
    return out
