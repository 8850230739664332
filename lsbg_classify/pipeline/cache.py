"""A persistent on-disk cache of survey cutouts.

Fetching a cutout from a remote service is slow and the services ask users
not to request the same image twice, so the pipeline keeps every payload it
receives (the exact bytes the service sent, see
:class:`~lsbg_classify.surveys.base.Payload`) and every "this position is not
covered" answer.  Transient failures (``fetch_failed``) are never stored:
the next run should try again.

Layout
------
One file per cutout::

    <directory>/CACHEDIR.TAG
    <directory>/<backend>/<xx>/<key>.cutout

where ``<backend>`` is the part of the key before the first ``-`` (the
backend name in keys made by
:meth:`~lsbg_classify.surveys.base.SurveyBackend.cache_key`) and ``<xx>`` the
first two hex digits of the SHA-256 of the key, which spreads entries over
at most 256 sub-directories so that no directory grows huge.

Each file is a small self-describing header followed by the payload::

    magic        8 bytes   b"LSBGCUT\\x00"
    version      uint16    little-endian, currently 1
    header_len   uint32    length of the JSON header that follows (bytes)
    header_crc   uint32    CRC-32 of the JSON header
    header       JSON      {"key", "status", "format", "message",
                            "length", "sha256"}
    payload      bytes     ``length`` bytes whose SHA-256 is ``sha256``

Model inputs
------------
Decoding and resizing a payload costs more than scoring it, so the pipeline
also keeps what it made of each payload, the model input, in a second file
beside the entry::

    <directory>/<backend>/<xx>/<key>.input

with the same layout under its own magic (``b"LSBGINP\x00"``); its JSON
header holds ``key``, ``tag`` (which preprocessing made the pixels, see
:func:`~lsbg_classify.pipeline.preprocess.model_input_tag`), ``source``
(the SHA-256 of the payload they were made from), ``shape``, ``length``
and ``sha256``, followed by the pixels (uint8).  It is only a memo: it is
used when its tag is the one asked for and its source is the entry's
current payload, and otherwise ignored (a refreshed payload makes it
stale); it is written without ``fsync``, and a damaged one is removed and
made again, never fetched.  :meth:`CutoutCache.delete` and
:meth:`CutoutCache.clear` remove it with its entry.

Writes go to a temporary file in the destination directory that is
flushed, ``fsync``-ed and then moved into place with :func:`os.replace`, an
atomic rename (:func:`lsbg_classify.atomic.atomic_write_bytes`): several
threads or processes may write the same or different keys at once, the last
writer wins and a reader sees either a complete old file or a complete new
one, never a partial file.  Temporary files more than an hour old can only
be leftovers of a killed run; :meth:`CutoutCache.remove_stale_temp_files`
(called by :meth:`~CutoutCache.clear` and at the start of a classification)
removes them.

The cache is untrusted input too: an entry is read only if it is a regular
file (not a link, a FIFO or a device) in its own directory, and only up to
the byte cap of its format (:mod:`lsbg_classify.limits`).  Anything else
is damaged: removed, warned about and fetched again.  A cache that cannot be
written (read-only, full) is warned about once and the run goes on without
storing cutouts.
"""

import contextlib
import errno
import hashlib
import json
import math
import os
import pathlib
import re
import stat
import struct
import threading
import warnings
import zlib

import numpy as np
from astropy.utils.exceptions import AstropyUserWarning

from .. import status
from ..atomic import atomic_write_bytes, remove_stale_temp_files
from ..limits import MAX_PAYLOAD_BYTES, payload_byte_cap
from ..surveys.base import FetchOutcome, Payload

__all__ = [
    "DEFAULT_CACHE",
    "as_cache",
    "DEFAULT_CACHE_ENV",
    "default_cache_dir",
    "CacheCorruptionWarning",
    "CacheUnavailableWarning",
    "CutoutCache",
    "validate_key",
]

#: Environment variable that overrides the default cache location.
DEFAULT_CACHE_ENV = "LSBG_CLASSIFY_CACHE_DIR"

_MAGIC = b"LSBGCUT\x00"
_VERSION = 1
# magic, version, header length, header CRC-32; little-endian so files can
# be shared between machines.
_PREFIX = struct.Struct("<8sHII")
# A header is a few hundred bytes; anything claiming more is damaged and
# must not make us allocate gigabytes.
_MAX_HEADER = 1 << 16
_SUFFIX = ".cutout"
_INPUT_MAGIC = b"LSBGINP\x00"
_INPUT_SUFFIX = ".input"
# A model input is 64×64×3 bytes; a file claiming more than this is damaged.
_MAX_INPUT_BYTES = 1 << 20
_TAG_RE = re.compile(r"[A-Za-z0-9_.:+-]{1,64}")
_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
_FORMAT_RE = re.compile(r"[A-Za-z0-9_.+-]{1,32}")
_SHARD_RE = re.compile(r"[0-9a-f]{2}")
_STORED = (status.OK, status.NO_COVERAGE)

# The standard signature (https://bford.info/cachedir/) that tells backup
# and archiving tools to skip the directory.
_CACHEDIR_TAG_NAME = "CACHEDIR.TAG"
_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by lsbg-classify.\n"
    "# For information about cache directory tags, see:\n"
    "#\thttps://bford.info/cachedir/\n"
)


def default_cache_dir():
    """Where cutouts are cached unless told otherwise.

    Returns
    -------
    pathlib.Path
        ``$LSBG_CLASSIFY_CACHE_DIR`` if that environment variable is set
        and not empty, else the platform's user cache directory for
        ``lsbg-classify`` followed by ``cutouts`` (e.g.
        ``~/.cache/lsbg-classify/cutouts`` on Linux).  The directory is not
        created here.
    """
    env = os.environ.get(DEFAULT_CACHE_ENV, "").strip()
    if env:
        return pathlib.Path(env).expanduser()
    # Imported here so that merely importing this module stays cheap.
    import platformdirs

    return pathlib.Path(platformdirs.user_cache_dir("lsbg-classify")) / "cutouts"


class CacheCorruptionWarning(AstropyUserWarning):
    """A cache file was damaged; it was removed and will be fetched again."""


class CacheUnavailableWarning(AstropyUserWarning):
    """The cache cannot be written (read-only, full); cutouts are no longer stored."""


# open() flags for reading an entry: never follow a link in the last
# component, never block on a FIFO (both then fail the regular-file test).
_READ_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_BINARY", 0))


class _Corrupt(Exception):
    """Internal: the file at hand is not a valid cache entry."""


def validate_key(key):
    """Check that ``key`` is usable as a cache file name.

    Parameters
    ----------
    key : str
        Letters, digits, ``_``, ``.`` and ``-`` only, starting with a
        letter, digit or ``_``, 1 to 200 characters.  This guarantees a key can never name a
        path outside the cache directory (no separators, no ``..``, no
        drive letters) nor a hidden or temporary file.

    Returns
    -------
    str
        ``key`` unchanged.

    Raises
    ------
    ValueError
        If the key is not valid.
    """
    if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
        raise ValueError(
            f"invalid cache key {key!r}: use 1-200 characters from "
            "[A-Za-z0-9_.-], not starting with '.' or '-'"
        )
    return key


def _backend_of(key):
    return key.split("-", 1)[0]


def _shard_of(key):
    return hashlib.sha256(key.encode("ascii")).hexdigest()[:2]


class CutoutCache:
    """Persistent store of fetched cutouts, keyed by backend cache keys.

    Parameters
    ----------
    directory : str or path-like, optional
        Root of the cache; :func:`default_cache_dir` if not given.  It is
        created on the first :meth:`put`, so a cache that is only read
        never creates directories.
    max_bytes : int or dict, optional
        Most payload bytes an entry may hold, one for every format or by
        format; default :data:`lsbg_classify.limits.MAX_PAYLOAD_BYTES`.
        Larger entries read as damaged.

    Raises
    ------
    ValueError
        ``directory`` exists and is not a directory.

    Notes
    -----
    All coordination goes through the file system (atomic renames), so one
    instance may be shared by threads and several processes may use the
    same directory.  The only state an instance keeps is whether writing
    has failed (then it stops trying, see :meth:`put`).

    Examples
    --------
    >>> cache = CutoutCache(tmp_dir)                     # doctest: +SKIP
    >>> key = backend.cache_key(ra, dec)                 # doctest: +SKIP
    >>> outcome = cache.get(key)                         # doctest: +SKIP
    >>> if outcome is None:                              # doctest: +SKIP
    ...     outcome = backend.fetch_one(ra, dec)
    ...     cache.put(key, outcome)
    """

    def __init__(self, directory=None, max_bytes=None):
        if directory is None:
            directory = default_cache_dir()
        self.directory = pathlib.Path(os.fspath(directory)).expanduser()
        self._root = os.fspath(self.directory)
        # A path to a file (e.g. a mistyped --cache) would otherwise surface
        # only on the first lookup, as a NotADirectoryError traceback.
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"cache directory {self.directory} exists but is not a directory")
        self.max_bytes = max_bytes
        largest = max(payload_byte_cap(fmt, max_bytes) for fmt in (*MAX_PAYLOAD_BYTES, "other"))
        # Whole file: prefix, header, payload.
        self._max_file_bytes = _PREFIX.size + _MAX_HEADER + largest
        self._write_failed = None
        self._write_lock = threading.Lock()
        self._warned = set()

    def __repr__(self):
        return f"{type(self).__name__}({str(self.directory)!r})"

    # -- paths ---------------------------------------------------------------

    def path(self, key):
        """File that holds (or would hold) the entry for ``key``.

        Raises
        ------
        ValueError
            If ``key`` is not a valid key (see :func:`validate_key`).
        """
        return pathlib.Path(self._file(key, _SUFFIX))

    def input_path(self, key):
        """File that holds (or would hold) the model input memo of ``key``."""
        return pathlib.Path(self._file(key, _INPUT_SUFFIX))

    def _file(self, key, suffix):
        # Plain strings: pathlib's joins were a fifth of a warm-cache read.
        validate_key(key)
        return os.path.join(self._root, _backend_of(key), _shard_of(key), key + suffix)

    def _ensure_root(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        tag = self.directory / _CACHEDIR_TAG_NAME
        if not tag.exists():
            atomic_write_bytes(tag, _CACHEDIR_TAG.encode("ascii"), prefix=".CACHEDIR.TAG.")

    def _inside(self, path):
        """Whether ``path``'s backend and shard folders are real folders (no linked folders).

        Only the two levels the cache creates are checked, with one ``lstat``
        each: resolving the whole path (``realpath``) cost ten system calls
        per read and was a quarter of a warm-cache run.
        """
        shard = os.path.dirname(path)
        for folder in (os.path.dirname(shard), shard):
            try:
                if not stat.S_ISDIR(os.lstat(folder).st_mode):
                    return False
            except OSError:
                return False
        return True

    # -- entries -------------------------------------------------------------

    def __contains__(self, key):
        """Whether an entry file exists for ``key`` (its content is not checked).

        Use :meth:`get` to read an entry: it may still find the file damaged.
        """
        try:
            return self.path(key).is_file()
        except ValueError:
            return False

    def get(self, key):
        """Read the entry for ``key``.

        Parameters
        ----------
        key : str
            A cache key, normally from
            :meth:`~lsbg_classify.surveys.base.SurveyBackend.cache_key`.

        Returns
        -------
        FetchOutcome or None
            ``FetchOutcome("ok", Payload(data, format))`` or
            ``FetchOutcome("no_coverage", message=...)``; None when nothing
            usable is cached.  A damaged entry (bad checksum, truncated file,
            unreadable header) gives a :class:`CacheCorruptionWarning`, is
            deleted and reads as a miss so that it is fetched again.

        Raises
        ------
        ValueError
            If ``key`` is not a valid key.

        Notes
        -----
        Only a regular file inside the cache directory is read, and only up
        to the byte cap: a link (to ``/dev/zero``, say), a FIFO, a device
        or an oversized file is damaged too, and is removed without being
        read (a linked shard directory is only skipped, never written
        through).
        """
        found = self._read_verified(key)
        return None if found is None else _outcome(*found)

    def get_model_input(self, key, tag):
        """The model input memo of ``key``, if it is current.

        Parameters
        ----------
        key : str
            Cache key.
        tag : str
            The preprocessing the caller would apply
            (:func:`~lsbg_classify.pipeline.preprocess.model_input_tag`).

        Returns
        -------
        numpy.ndarray (uint8) or None
            The pixels stored by :meth:`put_model_input` with this tag, when
            the entry's header says it still holds the payload they were
            made from (the payload's checksum is not recomputed: :meth:`get`
            checks it when the payload is needed); None otherwise.  A
            damaged memo is removed, with a :class:`CacheCorruptionWarning`;
            a stale one silently.
        """
        stem = self._file(key, "")
        source = self._payload_sha256(stem + _SUFFIX, key)
        if source is None:
            return None
        path = stem + _INPUT_SUFFIX
        try:
            # The memo shares the entry's folders, which were just checked.
            blob, ident = self._read_file(path, _PREFIX.size + _MAX_HEADER + _MAX_INPUT_BYTES)
            header, pixels = _decode_input(blob)
        except FileNotFoundError:
            return None
        except _Corrupt as exc:
            self._discard(path, None, str(exc), then="it will be made again from its cutout")
            return None
        except OSError:
            return None
        if header["key"] != key or header["tag"] != tag:
            return None
        if header["source"] != source:
            _unlink_if_same(path, ident)  # stale: its payload was replaced
            return None
        return pixels

    def _payload_sha256(self, path, key):
        """The payload checksum in the header of ``key``'s entry at ``path``; None if no usable one."""
        if not self._inside(path):
            return None
        try:
            blob, _ = self._read_file(path, self._max_file_bytes)
            header, _ = _header_of(blob)  # the payload's own checksum is get()'s to check
        except (OSError, _Corrupt):
            return None  # get() tells damage apart, and removes it
        if header["status"] != status.OK or header["key"] != key:
            return None
        return header["sha256"]

    def _read_verified(self, key):
        """(header, payload bytes) of the entry for ``key``, checksums verified; None if none."""
        path = self._file(key, _SUFFIX)
        try:
            blob, ident = self._read_entry(path)
        except FileNotFoundError:
            return None
        except _Corrupt as exc:
            self._discard(path, None, str(exc))
            return None
        except OSError:
            return None  # unreadable (permissions): a miss, as if absent
        try:
            header, data = _decode(blob)
            if header["length"] > payload_byte_cap(header["format"], self.max_bytes):
                raise _Corrupt(f"payload of {header['length']} bytes is over the cap")
        except _Corrupt as exc:
            self._discard(path, ident, str(exc))
            return None
        if header["key"] != key:
            # Only possible on case-insensitive file systems, where keys that
            # differ in case share a file: not damage, just not our entry.
            return None
        return header, data

    def _read_entry(self, path):
        """(bytes, identity) of an entry file; _Corrupt if it is no plain, capped file."""
        if not self._inside(path):
            if not os.path.lexists(path):
                raise FileNotFoundError(path)
            # Not ours to remove: the file lives outside the cache.
            self._warn_once(f"cache entry {os.path.basename(path)} lies in a linked folder outside "
                            f"{self.directory}; ignored", CacheCorruptionWarning)
            raise FileNotFoundError(path)
        return self._read_file(path, self._max_file_bytes)

    def _read_file(self, path, max_bytes):
        """(bytes, identity) of a plain file of at most ``max_bytes``.

        _Corrupt if it is a link, FIFO, device or larger.
        """
        try:
            fd = os.open(path, _READ_FLAGS)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
                raise _Corrupt("a symbolic link, not a file") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _Corrupt("not a regular file")
            if st.st_size > max_bytes:
                raise _Corrupt(f"{st.st_size} bytes, over the cap of {max_bytes}")
            blob = _read_at_most(fd, max_bytes + 1, st.st_size + 1)
        finally:
            os.close(fd)
        if len(blob) > max_bytes:
            raise _Corrupt(f"over the cap of {max_bytes} bytes")
        return blob, _identity(st)

    def put(self, key, outcome):
        """Store the outcome of a fetch.

        Parameters
        ----------
        key : str
            Cache key.
        outcome : FetchOutcome
            Stored if its status is ``"ok"`` (with a payload) or
            ``"no_coverage"``; any other status (``"fetch_failed"``, ...)
            is ignored so that transient failures are retried next time.

        Raises
        ------
        ValueError
            If ``key`` is not valid, or an ``"ok"`` outcome has no payload
            or a payload format that is not a short plain word.

        Notes
        -----
        A write that fails (read-only directory, full disk, no permission)
        does not raise: it gives one :class:`CacheUnavailableWarning` and
        this instance stops writing, so the run goes on uncached.
        """
        path = self.path(key)
        if outcome.status not in _STORED:
            return
        if outcome.status == status.OK:
            payload = outcome.payload
            if payload is None:
                raise ValueError("an 'ok' outcome must carry a payload")
            fmt = str(payload.format)
            if _FORMAT_RE.fullmatch(fmt) is None:
                raise ValueError(f"invalid payload format {payload.format!r}")
            data = bytes(payload.data)
        else:
            fmt, data = None, b""
        if self._write_failed is not None:
            return
        blob = _encode(key, outcome.status, fmt, outcome.message or "", data)
        try:
            self._write(path, key, blob)
        except OSError as exc:
            self._stop_writing(exc)

    def put_model_input(self, key, tag, image, payload):
        """Remember the model input made from ``payload``, the payload cached for ``key``.

        Parameters
        ----------
        key : str
            Cache key.
        tag : str
            The preprocessing that made ``image``.
        image : numpy.ndarray, uint8
            The model input.
        payload : Payload
            The payload it was made from; the memo is used only while the
            entry holds this payload.

        Notes
        -----
        Written atomically but without ``fsync`` (it can always be made
        again); failures are silent, as for :meth:`put`.
        """
        if self._write_failed is not None:
            return
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if _TAG_RE.fullmatch(tag) is None:
            raise ValueError(f"invalid model input tag {tag!r}")
        if image.nbytes > _MAX_INPUT_BYTES:
            raise ValueError(f"model input of {image.nbytes} bytes is over the cap")
        blob = _encode_input(key, tag, hashlib.sha256(payload.data).hexdigest(), image)
        try:
            self._write(self.input_path(key), key, blob, durable=False)
        except OSError as exc:
            self._stop_writing(exc)

    def _write(self, path, key, blob, durable=True):
        # A concurrent clear() may remove the (empty) shard directory between
        # makedirs and the write; recreate it and try again.
        for attempt in range(3):
            try:
                self._ensure_root()
                path.parent.mkdir(parents=True, exist_ok=True)
                if not self._inside(path):
                    self._warn_once(f"cache folder {path.parent} is a link out of "
                                    f"{self.directory}; cutouts are not written through it",
                                    CacheCorruptionWarning)
                    return
                atomic_write_bytes(path, blob, prefix=f".{key[:40]}.", durable=durable)
                return
            except FileNotFoundError:
                if attempt == 2:
                    raise

    def _stop_writing(self, exc):
        """Give up writing after a failure (read-only or full disk), with one warning."""
        with self._write_lock:
            if self._write_failed is not None:
                return
            self._write_failed = exc
        reason = exc.strerror or type(exc).__name__
        warnings.warn(
            f"cannot write the cutout cache {self.directory} ({reason}); going on without "
            "storing cutouts (they will be fetched again next time)",
            CacheUnavailableWarning, stacklevel=4)

    def _warn_once(self, message, category):
        with self._write_lock:
            if message in self._warned:
                return
            self._warned.add(message)
        warnings.warn(message, category, stacklevel=4)

    @property
    def writable(self):
        """False once a write has failed (read-only or full cache): no more are tried."""
        return self._write_failed is None

    def delete(self, key):
        """Remove the entry for ``key``.

        Returns
        -------
        bool
            Whether an entry was removed.
        """
        with contextlib.suppress(FileNotFoundError):
            self.input_path(key).unlink()
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def _discard(self, path, ident, reason, then="it will be fetched again"):
        warnings.warn(
            f"damaged cache entry {os.path.basename(path)} ({reason}); removed, {then}",
            CacheCorruptionWarning,
            stacklevel=3,
        )
        # Only unlink the file we actually read (or, for what was never read,
        # a link, FIFO or device, whatever is there but a regular file): a
        # writer may have replaced it with a good one meanwhile.
        _unlink_if_same(path, ident)

    # -- maintenance -----------------------------------------------------------

    def _entries(self, suffix=_SUFFIX):
        """Yield ``(key, os.DirEntry)`` for every entry file (or, with ``suffix=".input"``,
        every model input memo) in the cache.

        Only files that follow the cache's own naming exactly are yielded
        (``<backend>/<xx>/<key>.cutout`` with matching backend and shard),
        so maintenance never touches files that merely live in the
        directory.
        """
        try:
            backends = list(os.scandir(self.directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for bdir in backends:
            if bdir.name.startswith(".") or not bdir.is_dir(follow_symlinks=False):
                continue
            try:
                shards = list(os.scandir(bdir.path))
            except OSError:
                continue
            for sdir in shards:
                if _SHARD_RE.fullmatch(sdir.name) is None or not sdir.is_dir(
                    follow_symlinks=False
                ):
                    continue
                try:
                    files = list(os.scandir(sdir.path))
                except OSError:
                    continue
                for entry in files:
                    name = entry.name
                    if not name.endswith(suffix):
                        continue
                    key = name[: -len(suffix)]
                    if (
                        _KEY_RE.fullmatch(key) is None
                        or _backend_of(key) != bdir.name
                        or _shard_of(key) != sdir.name
                        or not entry.is_file(follow_symlinks=False)
                    ):
                        continue
                    yield key, entry

    def keys(self):
        """Keys of all entries (in no particular order)."""
        return [key for key, _ in self._entries()]

    def info(self):
        """Summary of the cache content.

        Returns
        -------
        dict
            ``directory`` (str), ``entries`` (number of entry files),
            ``no_coverage`` (how many of them remember a blank answer),
            ``bytes`` (total size of the entry and model input files,
            bytes), ``model_inputs`` (model input memos) and
            ``by_backend`` (entries per backend name).  Only headers are
            read: payload checksums are checked by :meth:`get`.
        """
        entries = no_coverage = nbytes = 0
        by_backend = {}
        for key, entry in self._entries():
            try:
                size = entry.stat(follow_symlinks=False).st_size
                with open(entry.path, "rb") as fh:
                    header = _read_header(fh)
            except FileNotFoundError:
                continue  # removed by someone else meanwhile
            except (OSError, _Corrupt):
                header = None
            entries += 1
            nbytes += size
            backend = _backend_of(key)
            by_backend[backend] = by_backend.get(backend, 0) + 1
            if header is not None and header["status"] == status.NO_COVERAGE:
                no_coverage += 1
        model_inputs = 0
        for _, entry in self._entries(_INPUT_SUFFIX):
            with contextlib.suppress(OSError):
                nbytes += entry.stat(follow_symlinks=False).st_size
                model_inputs += 1
        return {
            "directory": str(self.directory),
            "entries": entries,
            "no_coverage": no_coverage,
            "bytes": nbytes,
            "model_inputs": model_inputs,
            "by_backend": dict(sorted(by_backend.items())),
        }

    def remove_stale_temp_files(self, max_age=None):
        """Remove temporary files that killed writers left in the cache.

        Parameters
        ----------
        max_age : float, optional
            Seconds since a temporary file last changed after which it is
            removed; default :data:`lsbg_classify.atomic.STALE_AFTER` (an
            hour: a write takes milliseconds, so an older one is no
            writer's at work).

        Returns
        -------
        int
            Files removed.
        """
        options = {} if max_age is None else {"max_age": max_age}
        removed = remove_stale_temp_files(self.directory, **options)
        for folder in self._folders():
            removed += remove_stale_temp_files(folder, **options)
        return removed

    def clear_model_inputs(self):
        """Remove every model input memo, keeping the entries.

        Returns
        -------
        int
            Memos removed.
        """
        removed = 0
        for _, entry in self._entries(_INPUT_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
        return removed

    def _folders(self):
        """Backend and shard directories (no links followed)."""
        try:
            backends = [e for e in os.scandir(self.directory)
                        if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
        except OSError:
            return
        for bdir in backends:
            yield bdir.path
            try:
                shards = list(os.scandir(bdir.path))
            except OSError:
                continue
            for sdir in shards:
                if _SHARD_RE.fullmatch(sdir.name) and sdir.is_dir(follow_symlinks=False):
                    yield sdir.path

    def clear(self, backend=None):
        """Remove cache entries.

        Parameters
        ----------
        backend : str, optional
            Remove only entries whose key starts with ``f"{backend}-"``;
            all entries if not given.

        Returns
        -------
        int
            Number of entries removed.

        Notes
        -----
        Only files that follow the cache's naming inside its directory are
        removed (plus shard directories left empty); anything else that
        lives there, ``CACHEDIR.TAG`` included, is left alone.
        """
        prefix = None if backend is None else f"{validate_key(str(backend))}-"
        self.remove_stale_temp_files()
        removed = 0
        dirs = set()
        for suffix in (_INPUT_SUFFIX, _SUFFIX):
            for key, entry in self._entries(suffix):
                if prefix is not None and not key.startswith(prefix):
                    continue
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                removed += suffix == _SUFFIX
                dirs.add(os.path.dirname(entry.path))
        for d in dirs:
            try:
                os.rmdir(d)  # only succeeds if empty
            except OSError:
                pass
        return removed


# -- file format --------------------------------------------------------------


def _read_at_most(fd, limit, expected):
    """Read ``fd`` to its end or ``limit`` bytes, whichever comes first.

    One read of the ``expected`` size usually does it: asking for the
    limit instead (megabytes) made every read allocate that much.
    """
    chunks, total = [], 0
    while total < limit:
        chunk = os.read(fd, min(limit - total, max(expected - total, 1 << 16)))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _outcome(header, data):
    if header["status"] == status.OK:
        return FetchOutcome(status.OK, Payload(data, header["format"]), header["message"])
    return FetchOutcome(header["status"], message=header["message"])


def _identity(st):
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _unlink_if_same(path, ident):
    """Remove ``path`` if it is still the file read (``ident``); with no identity, if no folder.

    A writer may have replaced the file with a good one meanwhile; a file
    never read (a link, FIFO or device) is removed whatever it is.
    """
    try:
        st = os.lstat(path)
        if _identity(st) == ident if ident is not None else not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
    except OSError:
        pass


def _pack(magic, fields, data):
    """A file of the cache's layout: prefix, JSON header (``fields`` plus the
    data's ``length`` and ``sha256``), data."""
    header = json.dumps(
        {**fields, "length": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        sort_keys=True,
    ).encode("utf-8")
    return _PREFIX.pack(magic, _VERSION, len(header), zlib.crc32(header)) + header + data


def _encode(key, status_, fmt, message, data):
    return _pack(_MAGIC, {"key": key, "status": status_, "format": fmt, "message": message},
                 data)


def _encode_input(key, tag, source, image):
    return _pack(_INPUT_MAGIC, {"key": key, "tag": tag, "source": source,
                                "shape": list(image.shape)}, image.tobytes())


def _is_entry_header(header):
    return (
        header["status"] in _STORED
        and isinstance(header["message"], str)
        and (
            isinstance(header["format"], str)
            if header["status"] == status.OK
            else header["format"] is None
        )
    )


def _is_input_header(header):
    shape = header["shape"]
    # Whole numbers only: a shape of floats or a string would pass a product
    # check and then fail in reshape, outside the damage handling.
    return (isinstance(header["tag"], str) and isinstance(header["source"], str)
            and isinstance(shape, list) and all(type(n) is int and n > 0 for n in shape)
            and math.prod(shape) == header["length"])


def _header_of(blob, magic=_MAGIC, valid=_is_entry_header):
    """(header, data offset) of a file's first bytes; _Corrupt unless its prefix,
    checksum and fields (common ones, then ``valid``) are sound."""
    if len(blob) < _PREFIX.size:
        raise _Corrupt("truncated header")
    found, version, hlen, crc = _PREFIX.unpack_from(blob)
    if found != magic:
        raise _Corrupt("not a cache file")
    if version != _VERSION:
        raise _Corrupt(f"unsupported format version {version}")
    if hlen > _MAX_HEADER:
        raise _Corrupt("unreadable header")
    start = _PREFIX.size + hlen
    header_bytes = blob[_PREFIX.size:start]
    if len(header_bytes) != hlen:
        raise _Corrupt("truncated header")
    if zlib.crc32(header_bytes) != crc:
        raise _Corrupt("header checksum mismatch")
    try:
        header = json.loads(header_bytes.decode("utf-8"))
        ok = (isinstance(header, dict) and isinstance(header["key"], str)
              and isinstance(header["length"], int) and isinstance(header["sha256"], str)
              and valid(header))
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise _Corrupt("unreadable header")
    return header, start


def _read_header(fh):
    """The header of the entry file open as ``fh``, read without its payload."""
    blob = fh.read(_PREFIX.size)
    if len(blob) == _PREFIX.size and _PREFIX.unpack(blob)[2] <= _MAX_HEADER:
        blob += fh.read(_PREFIX.unpack(blob)[2])
    return _header_of(blob)[0]


def _decode(blob, magic=_MAGIC, valid=_is_entry_header):
    """Split a cache file into its header and verified data."""
    header, start = _header_of(blob, magic, valid)
    data = blob[start:]
    if len(data) != header["length"]:
        raise _Corrupt(f"payload is {len(data)} bytes, expected {header['length']}")
    if hashlib.sha256(data).hexdigest() != header["sha256"]:
        raise _Corrupt("payload checksum mismatch")
    return header, data


def _decode_input(blob):
    """Split a model input file into its header and verified pixels (uint8, shaped)."""
    header, data = _decode(blob, _INPUT_MAGIC, _is_input_header)
    return header, np.frombuffer(data, np.uint8).reshape(header["shape"])


#: The ``cache=`` default of the pipeline's functions: the per-user cache in
#: :func:`default_cache_dir`.
DEFAULT_CACHE = True


def as_cache(cache):
    """The one reading of a ``cache=`` argument.

    Parameters
    ----------
    cache : CutoutCache, None, bool or path-like
        A cache is used as it is; None (or False) means no cache;
        :data:`DEFAULT_CACHE` (True) the per-user cache; a path a cache in
        that directory.

    Returns
    -------
    CutoutCache or None
    """
    if cache is None or cache is False:
        return None
    if isinstance(cache, CutoutCache):
        return cache
    if cache is DEFAULT_CACHE:
        return CutoutCache()
    return CutoutCache(cache)
