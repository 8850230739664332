"""Resume by fingerprint: chunked scoring whose finished chunks survive an interruption."""

import zipfile
from pathlib import Path

import numpy as np

from .. import status
from ..atomic import atomic_path
from ..resume import fingerprint, load_record, save_record
from .options import DEFAULT_CHUNK_SIZE, whole_number
from .scoring import score_positions

__all__ = ["score_in_chunks", "CheckpointMismatchError"]

def _fingerprint(ra, dec, valid, model, source):
    """What a checkpoint's results depend on: positions, model, image source."""
    return fingerprint(ra, dec, valid, [model.provenance(), source.describe()])


class CheckpointMismatchError(ValueError):
    """A checkpoint directory holds results of a different run."""


def message_array(messages, n):
    """Row index -> reason dict as a string array of length ``n`` ("" where none)."""
    out = np.full(n, "", dtype=object)
    for row, text in messages.items():
        out[row] = text
    return out.astype(str)


def _save_chunk(path, prob, row_status, message, std=None):
    # The suffix keeps numpy from appending ".npz" to the temporary name.
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, prob=prob, status=row_status, message=message,
                 **({} if std is None else {"std": std}))


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
        found = load_record(manifest)
        if found == identity:
            return
        if found is not None or any(folder.glob("chunk-*.npz")):
            raise CheckpointMismatchError(
                mismatch if found is not None else
                f"checkpoint {folder} has a damaged manifest.json; remove the folder to start "
                "afresh")
        # An unreadable manifest and no chunk yet: nothing to lose, start over.
    save_record(manifest, identity)


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
    result = chunked(ra, dec, backend, model, checkpoint_dir, chunk_size, valid, options)
    if options.get("mc_samples", 0):
        return result["prob"], result["status"], result["std"]
    return result["prob"], result["status"]


def chunked(ra, dec, backend, model, checkpoint_dir, chunk_size, valid, options):
    """The work of :func:`score_in_chunks`: a dict of prob, status, message and std."""
    whole_number("chunk_size", chunk_size, 1)
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
            scores = score_positions(ra[rows], dec[rows], backend, model, valid=valid[rows],
                                     **options)
            done = {"prob": scores.prob, "status": scores.status,
                    "message": message_array(scores.messages, rows.stop - start)}
            if mc_samples:
                done["std"] = scores.std
            _save_chunk(path, done["prob"], done["status"], done["message"], done.get("std"))
        for name, values in done.items():
            out[name][rows] = values
    out["message"] = out["message"].astype(str)
    return out
