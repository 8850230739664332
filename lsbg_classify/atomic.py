"""Write a file so that readers never see it half-written.

The bytes go to a hidden temporary file (``.<prefix>XXXX.tmp``) in the
destination's directory, are flushed and ``fsync``-ed, and the file is then
renamed over the destination with :func:`os.replace`, an atomic rename.  A
process killed meanwhile leaves at most such a temporary file behind, never
a partial destination; :func:`remove_stale_temp_files` cleans those up.
"""

import os
import sys
import tempfile
import time

__all__ = ["atomic_write_bytes", "remove_stale_temp_files", "TEMP_SUFFIX", "STALE_AFTER"]

#: Ending of the temporary files.
TEMP_SUFFIX = ".tmp"

#: Age (seconds) after which a temporary file can only be a leftover of a
#: killed writer: a write takes milliseconds.
STALE_AFTER = 3600.0


def atomic_write_bytes(path, data, prefix=None, mode=0o644):
    """Replace ``path`` by a file holding ``data``, atomically.

    Parameters
    ----------
    path : pathlib.Path
        Destination; its directory must exist.
    data : bytes
    prefix : str, optional
        Start of the temporary file's name (default ``.<name>.``); keep it
        hidden (leading dot) so that directory listings skip it.
    mode : int
        Permissions of the new file (mkstemp's are private, 0600).
    """
    prefix = f".{path.name}." if prefix is None else prefix
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _replace(src, dst):
    # On Windows os.replace fails while another process has the target open
    # (a reader, or a writer mid-rename); such locks are brief, so retry.
    if sys.platform != "win32":
        os.replace(src, dst)
        return
    for attempt in range(50):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if attempt == 49:
                raise
            time.sleep(0.01 * (attempt + 1))


def remove_stale_temp_files(directory, max_age=STALE_AFTER, now=None):
    """Remove temporary files of killed writers from one directory.

    Only hidden regular files ending in :data:`TEMP_SUFFIX` whose last
    change is more than ``max_age`` seconds old are removed (a younger one
    may belong to a writer at work).

    Parameters
    ----------
    directory : str or path-like
    max_age : float
        Seconds.
    now : float, optional
        Current ``time.time()``; for tests.

    Returns
    -------
    int
        Files removed.
    """
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and (
                    now - entry.stat(follow_symlinks=False).st_mtime > max_age):
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue  # removed by someone else, or not ours to remove
    return removed
