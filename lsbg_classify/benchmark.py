"""``lsbg-classify bench``: throughput figures measured side by side.

Every figure is a ratio of two measurements taken in the same run, on the
same machine, so it means something even on a noisy shared computer.
"""

import os
import platform
import time

import numpy as np

from .loopback import LoopbackViewer
from .surveys import get_backend

__all__ = ["fetch_throughput", "describe_machine", "run_benchmarks"]

# The loopback server remembers this many rendered images (see loopback.py).
MAX_ROWS = 512


def describe_machine():
    """One line naming the machine the figures were measured on."""
    return (f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def _positions(n, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 60, n), rng.uniform(-60, -40, n)


def _timed_fetch(backend, ra, dec, workers):
    started = time.perf_counter()
    outcomes = [outcome.status for _, outcome in backend.fetch(ra, dec, workers=workers)]
    elapsed = time.perf_counter() - started
    if outcomes.count("ok") != len(ra):
        raise RuntimeError(f"benchmark fetch failed for {len(ra) - outcomes.count('ok')} rows")
    return len(ra) / elapsed


def fetch_throughput(rows=100, latency=0.1, workers=8, seed=0):
    """Cutouts per second from a loopback viewer, serial and concurrent.

    The server answers after ``latency`` seconds, like a distant service.
    Its images are rendered once before timing, so both measurements time
    the client's HTTP path and the wait, not the simulator.

    Returns
    -------
    dict
        ``serial`` and ``concurrent`` cutouts/s and their ``ratio``.
    """
    if rows > MAX_ROWS:
        raise ValueError(f"at most {MAX_ROWS} rows: the loopback server keeps that many images")
    ra, dec = _positions(rows, seed)
    with LoopbackViewer(latency=0.0) as server:
        with get_backend("legacysurvey", survey="des", base_url=server.url) as backend:
            _timed_fetch(backend, ra, dec, workers)  # renders and keeps the images
            server.latency = latency
            serial = _timed_fetch(backend, ra, dec, 1)
            concurrent = _timed_fetch(backend, ra, dec, workers)
    return {"rows": rows, "latency_s": latency, "workers": workers, "serial": serial,
            "concurrent": concurrent, "ratio": concurrent / serial}


def run_benchmarks(rows=100, latency=0.1, workers=8):
    """Print one line per figure."""
    print(f"machine: {describe_machine()}")
    fetch = fetch_throughput(rows, latency, workers)
    print(f"fetch: {fetch['rows']} cutouts, {latency * 1000:.0f} ms server latency: serial "
          f"{fetch['serial']:.1f}/s, {workers} workers {fetch['concurrent']:.1f}/s, "
          f"ratio {fetch['ratio']:.2f}x")
    return {"fetch": fetch}
