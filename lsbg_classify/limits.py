"""Bounds on what one cutout may cost, shared by the network and the cache.

A service (or a file in the cache) is untrusted input: without a bound, a
body of junk after a valid JPEG, a small gzip stream that inflates to
gigabytes, a server that drips one byte at a time, or a cache entry that
is a link to ``/dev/zero`` can take the memory or the time of a whole run
for one row.  These are the defaults; every one can be changed where it is
used (``max_bytes=`` of :class:`~lsbg_classify.surveys.http.HttpClient`,
of the remote backends and of :class:`~lsbg_classify.pipeline.cache.CutoutCache`;
``deadline=`` of the client and the backends).
"""

__all__ = ["MAX_PAYLOAD_BYTES", "DEFAULT_MAX_BYTES", "TRANSFER_DEADLINE", "payload_byte_cap"]

_MIB = 1 << 20

#: Most bytes one payload may have, by format, counted after any
#: ``Content-Encoding`` is undone.  A 256² viewer JPEG is about 30 KiB and its
#: largest (512²) well under 1 MiB; a three-band 512² float32 FITS cube is
#: 3 MiB, and a service may send float64 or extra HDUs: FITS gets room to spare.
MAX_PAYLOAD_BYTES = {"jpeg": 4 * _MIB, "fits": 64 * _MIB}

#: Cap for an answer of any other kind (bytes).
DEFAULT_MAX_BYTES = 64 * _MIB

#: Longest one HTTP transfer may take, headers and body together (seconds).
#: The client's ``timeout`` bounds each wait for the socket; this bounds the
#: sum, so a server sending a byte every few seconds cannot hold a row.
TRANSFER_DEADLINE = 120.0


def payload_byte_cap(fmt, override=None):
    """Byte cap for a payload format.

    Parameters
    ----------
    fmt : str
        Payload format (``"jpeg"``, ``"fits"``, or another word).
    override : int or dict, optional
        One cap for every format, or caps by format (missing formats keep
        the default).

    Returns
    -------
    int
        Bytes.
    """
    if isinstance(override, dict):
        if fmt in override:
            return int(override[fmt])
    elif override is not None:
        return int(override)
    return MAX_PAYLOAD_BYTES.get(fmt, DEFAULT_MAX_BYTES)
