"""Write a file so that readers never see it half-written.

Every file the package writes goes through :func:`atomic_path` (or
:func:`atomic_write_bytes`, its form for bytes in memory): the content goes
to a hidden temporary file with a unique name (``.<name>.XXXX.tmp``) in the
destination's directory, is flushed and ``fsync``-ed, and the file is then
renamed over the destination with :func:`os.replace`, an atomic rename,
after which the directory is ``fsync``-ed so that the rename survives a
crash.  On any failure the temporary file is removed and the destination
left as it was.  A process killed meanwhile leaves at most such a temporary
file behind, never a partial destination; :func:`remove_stale_temp_files`
cleans those up.
"""

import contextlib
import os
import stat
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "remove_stale_temp_files", "TEMP_SUFFIX",
           "STALE_AFTER"]

#: Ending of the temporary files.
TEMP_SUFFIX = ".tmp"

#: Age (seconds) after which a temporary file can only be a leftover of a
#: killed writer: a write takes milliseconds.
STALE_AFTER = 3600.0


def new_file_mode(path):
    """Permissions a file written at ``path`` gets: the current file's, else the umask's."""
    path = Path(path)
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path, suffix="", prefix=None, mode=None, durable=True):
    """A temporary path to write, put in place of ``path`` when the block ends.

    Parameters
    ----------
    path : str or path-like
        Destination; its directory must exist.
    suffix : str
        Added after the temporary name's ``.tmp``, for writers that choose a
        format by the file's ending (or append one, as :func:`numpy.savez`).
    prefix : str, optional
        Start of the temporary file's name (default ``.<name>.``); keep it
        hidden (leading dot) so that directory listings skip it.
    mode : int, optional
        Permissions of the new file; default :func:`new_file_mode`
        (mkstemp's own are private, 0600).
    durable : bool
        ``fsync`` the file and its directory so that the new content
        survives a power cut.  Only files that can be made again (derived
        data) may skip it: after a crash such a file may be empty or
        damaged, which its reader must detect.

    Yields
    ------
    pathlib.Path
        The (empty) temporary file to write.
    """
    path = Path(path)
    prefix = f".{path.name}." if prefix is None else prefix
    mode = new_file_mode(path) if mode is None else mode
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=TEMP_SUFFIX + suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        if durable:
            _fsync(tmp)
        os.chmod(tmp, mode)
        _replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync(path.parent, directory=True)


def atomic_write_bytes(path, data, prefix=None, mode=0o644, durable=True):
    """Replace ``path`` by a file holding ``data``, atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path : str or path-like
        Destination; its directory must exist.
    data : bytes
    prefix : str, optional
        Start of the temporary file's name (default ``.<name>.``).
    mode : int
        Permissions of the new file.
    durable : bool
        See :func:`atomic_path`.
    """
    with atomic_path(path, prefix=prefix, mode=mode, durable=durable) as tmp:
        tmp.write_bytes(data)


def _fsync(path, directory=False):
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return  # some platforms cannot open directories
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


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
