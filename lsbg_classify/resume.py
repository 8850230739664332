"""Resume by fingerprint: what a finished piece of work depended on, and its record.

Long runs (chunked scoring, the paper reproduction) keep each finished
piece on disk with a record of its *fingerprint*, a SHA-256 of everything
its result depends on.  A rerun recomputes the fingerprint and reuses the
piece only when the two agree, so an interrupted run goes on where it
stopped and a changed input is never mixed with stale results.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes

__all__ = ["fingerprint", "load_record", "save_record"]


def fingerprint(*parts):
    """SHA-256 (hex) of ``parts``, in order.

    Parameters
    ----------
    *parts : numpy.ndarray or JSON-serialisable
        Arrays count by their bytes (C order); anything else by its JSON
        with sorted keys, objects JSON cannot hold by their ``str``.

    Returns
    -------
    str
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def load_record(path):
    """The JSON record at ``path``; None when it is missing or cannot be read.

    A damaged record is as good as none: the work it vouched for is redone.
    """
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def save_record(path, record, indent=None):
    """Write a JSON record atomically (keys sorted when ``indent`` is given)."""
    text = json.dumps(record) if indent is None else json.dumps(record, indent=indent,
                                                                sort_keys=True)
    atomic_write_bytes(Path(path), text.encode())
