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


def deepshadows_flops_per_image(network):
    """Floating-point operations of one forward pass (multiply-adds count 2).

    Counts the convolutions and dense layers, which are nearly all of it.
    """
    flops = 0
    for layer in network.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            flops += 2 * h * w * c_out * kh * kw * layer.input.shape[-1]
        elif kind == "Dense":
            flops += 2 * layer.input.shape[-1] * layer.units
    return flops


def matmul_peak_flops(size=1024, repeats=5):
    """float32 matrix-multiply FLOP/s this machine reaches with numpy (best of ``repeats``)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def inference_throughput(images=512, batch_size=256, model="des"):
    """Images/s of the bundled model and its FLOP/s as a fraction of the matmul peak."""
    from .model import load_model

    classifier = load_model(model)
    x = np.random.default_rng(1).uniform(0, 1, (images, 64, 64, 3)).astype(np.float32)
    classifier.predict(x[:batch_size], batch_size=batch_size)  # build and warm up
    started = time.perf_counter()
    classifier.predict(x, batch_size=batch_size)
    rate = images / (time.perf_counter() - started)
    achieved = rate * deepshadows_flops_per_image(classifier.network)
    peak = matmul_peak_flops()
    return {"images_per_s": rate, "achieved_flops": achieved, "peak_flops": peak,
            "fraction_of_peak": achieved / peak}


def peak_rss_mib():
    """Peak resident memory of this process so far (MiB)."""
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024


def run_benchmarks(rows=100, latency=0.1, workers=8):
    """Print one line per figure."""
    print(f"machine: {describe_machine()}")
    inference = inference_throughput()
    print(f"inference: {inference['images_per_s']:.0f} images/s, "
          f"{inference['achieved_flops'] / 1e9:.1f} GFLOP/s = "
          f"{inference['fraction_of_peak']:.2f} of the float32 matmul peak measured now "
          f"({inference['peak_flops'] / 1e9:.1f} GFLOP/s)")
    fetch = fetch_throughput(rows, latency, workers)
    print(f"fetch: {fetch['rows']} cutouts, {latency * 1000:.0f} ms server latency: serial "
          f"{fetch['serial']:.1f}/s, {workers} workers {fetch['concurrent']:.1f}/s, "
          f"ratio {fetch['ratio']:.2f}x")
    print(f"peak memory: {peak_rss_mib():.0f} MiB")
    return {"inference": inference, "fetch": fetch}
