"""``lsbg-classify bench``: throughput figures measured side by side.

Every figure is a ratio of two measurements taken in the same run, on the
same machine, so it means something even on a noisy shared computer.
"""

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from .loopback import LoopbackViewer
from .surveys import get_backend

__all__ = [
    "classify_peak_rss",
    "command_peak_rss",
    "describe_machine",
    "end_to_end_throughput",
    "fetch_throughput",
    "inference_throughput",
    "memory_by_rows",
    "read_coordinates",
    "run_benchmarks",
    "simulated_positions",
    "warm_cache",
]

# The loopback server remembers this many rendered images (see loopback.py).
MAX_ROWS = 512
# Random images per inference measurement and interleaved repeats of it:
# the median of the repeats is reported, so one slow repeat on a busy
# machine does not decide a figure.
INFERENCE_IMAGES = 512
INFERENCE_REPEATS = 3
# Rows of the end-to-end measurement unless told otherwise: about a minute
# of rendering to warm the cache on two cores, seconds to classify.
E2E_ROWS = 2000
# Rows whose cache read, decoding and resampling are timed on their own,
# after the end-to-end run: enough for a steady rate.
DECODE_SAMPLE_ROWS = 1000
# Rows of a memory-run catalog that are scored (cache hits of the warmed
# positions, used in turn); the rest have no position and are flagged, so a
# million-row catalog runs in minutes yet takes the whole command-line path.
MEMORY_SCORED_ROWS = 4000


def describe_machine():
    """One line naming the machine the figures were measured on."""
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f}"
    return (f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs{load}, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def simulated_positions(n, seed=0):
    """``n`` random positions (deg) in a patch of the DES footprint."""
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
    ra, dec = simulated_positions(rows, seed)
    with LoopbackViewer(latency=0.0) as server, get_backend(
            "legacysurvey", survey="des", base_url=server.url) as backend:
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


def _seconds(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def inference_throughput(model="des", images=INFERENCE_IMAGES, batch_size=None,
                         repeats=INFERENCE_REPEATS):
    """Images/s of the compiled and the eager forward pass, measured interleaved.

    Parameters
    ----------
    model : str, path-like or LSBGModel
        Classifier to time (default: the bundled DES model).
    images : int
        Random images per measurement.
    batch_size : int, optional
        Images per network call; default: the pipeline's, so that the
        figure is the limit :func:`end_to_end_throughput` can approach.
    repeats : int
        Timings of each path, alternating; the median of each is used.

    Returns
    -------
    dict
        ``images_per_s`` (compiled, the default path), ``eager_images_per_s``,
        their ratio ``speedup``, ``max_abs_diff`` (largest difference of the
        two paths' probabilities), the compiled path's ``achieved_flops`` and
        its ``fraction_of_peak`` of the numpy matmul ``peak_flops``.
    """
    from .model import load_model
    from .pipeline import DEFAULT_BATCH_SIZE

    classifier = load_model(model)
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else int(batch_size)
    x = np.random.default_rng(1).uniform(0, 1, (images, 64, 64, 3)).astype(np.float32)
    # Trace the graph and warm both paths' kernels before any timing.
    compiled_prob = classifier.predict(x, batch_size=batch_size)
    eager_prob = classifier.predict(x, batch_size=batch_size, compiled=False)
    compiled, eager = [], []
    for _ in range(repeats):
        compiled.append(_seconds(lambda: classifier.predict(x, batch_size=batch_size)))
        eager.append(_seconds(lambda: classifier.predict(x, batch_size=batch_size,
                                                         compiled=False)))
    rate = images / statistics.median(compiled)
    eager_rate = images / statistics.median(eager)
    achieved = rate * deepshadows_flops_per_image(classifier.network)
    peak = matmul_peak_flops()
    return {"images": images, "batch_size": batch_size, "repeats": repeats,
            "images_per_s": rate, "eager_images_per_s": eager_rate,
            "speedup": rate / eager_rate,
            "max_abs_diff": float(np.max(np.abs(compiled_prob - eager_prob))),
            "achieved_flops": achieved, "peak_flops": peak, "fraction_of_peak": achieved / peak}


# -- end to end on a warm cache -----------------------------------------------------------


def read_coordinates(paths):
    """Positions of every row of one or more catalogs, in file order.

    Parameters
    ----------
    paths : sequence of path-like
        Catalogs with RA/Dec columns (found by name, e.g. ``ra``/``dec``),
        in any format :func:`~lsbg_classify.catalog.read_catalog` reads,
        such as the DeepShadows ``Baseline_*.csv`` files.

    Returns
    -------
    ra, dec : numpy.ndarray
        Degrees (ICRS).

    Raises
    ------
    CatalogError
        A file without position columns, or with an invalid position
        (the message names the file, column and rows).
    """
    from .catalog import CatalogError, extract_positions, read_catalog

    ra, dec = [], []
    for path in paths:
        try:
            positions = extract_positions(read_catalog(path), on_invalid="raise")
        except CatalogError as exc:
            raise CatalogError(f"{path}: {exc}") from None
        ra.append(positions.ra)
        dec.append(positions.dec)
    return np.concatenate(ra), np.concatenate(dec)


def _render_into_cache(job):
    ra, dec, directory, survey, seed = job
    from .cache import CutoutCache

    cache = CutoutCache(directory)
    with get_backend("simulated", survey=survey, seed=seed) as backend:
        for r, d in zip(ra, dec):
            cache.put(backend.cache_key(r, d), backend.fetch_one(r, d))
    return len(ra)


def _cache_misses(backend, ra, dec, cache):
    return np.array([backend.cache_key(r, d) not in cache for r, d in zip(ra, dec)], bool)


def warm_cache(ra, dec, cache, survey="des", seed=0, processes=None):
    """Put the simulated sky's cutouts of positions into a cutout cache.

    Only positions not yet cached are rendered, by the ``simulated``
    backend in ``processes`` processes, so a second call costs nothing.
    The entries are those that backend stores when it fetches: a later
    :func:`~lsbg_classify.pipeline.classify_catalog` with
    ``backend="simulated"`` and the same seed reads them all from the cache.

    Parameters
    ----------
    ra, dec : array_like
        Positions (deg).
    cache : CutoutCache
        The cache to fill.
    survey : {"des", "hsc"}
    seed : int
        Sky seed of the simulated backend.
    processes : int, optional
        Rendering processes (default: one per CPU).  With 1, this process
        renders.

    Returns
    -------
    int
        Cutouts rendered (0 when all were cached).

    Notes
    -----
    Several processes are started with the ``spawn`` method, which imports
    the calling script again: call this from a script under
    ``if __name__ == "__main__":``.
    """
    with get_backend("simulated", survey=survey, seed=seed) as backend:
        missing = np.flatnonzero(_cache_misses(backend, ra, dec, cache))
    if len(missing) == 0:
        return 0
    processes = max(1, min(processes or os.cpu_count() or 1, len(missing)))
    jobs = [(np.asarray(ra)[rows], np.asarray(dec)[rows], str(cache.directory), survey, seed)
            for rows in np.array_split(missing, processes * 4)]
    if processes == 1:
        return sum(map(_render_into_cache, jobs))
    # Spawned, not forked: the parent may already run TensorFlow's threads.
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        return sum(pool.map(_render_into_cache, jobs))


def end_to_end_throughput(ra, dec, model, cache, survey="des", seed=0):
    """Rows/s of :func:`~lsbg_classify.pipeline.classify_catalog` on a warm cache.

    Everything a catalog goes through after the download is timed: the
    position checks, cache reads, image decoding and resampling, batching,
    the model and the output table.  The model is loaded (and its graph
    traced) beforehand, as in any run long enough to matter.

    Parameters
    ----------
    ra, dec : array_like
        Positions (deg), all already in ``cache`` (see :func:`warm_cache`).
    model : LSBGModel
    cache : CutoutCache
    survey : {"des", "hsc"}
    seed : int
        Sky seed the cache was warmed with.

    Returns
    -------
    dict
        ``rows``, ``seconds``, ``rows_per_s``, ``ok`` (rows scored) and
        ``decode_rows_per_s``: the cache read, decoding and resampling
        alone, one row after another, for the first
        ``DECODE_SAMPLE_ROWS`` (1000) rows.

    Raises
    ------
    RuntimeError
        Some position is not cached: the figure would include rendering.
    """
    from astropy.table import Table

    from .pipeline import classify_catalog
    from .preprocess import prepare_payload

    ra, dec = np.asarray(ra, np.float64), np.asarray(dec, np.float64)
    table = Table({"ra": ra, "dec": dec})
    with get_backend("simulated", survey=survey, seed=seed) as backend:
        misses = int(_cache_misses(backend, ra, dec, cache).sum())
        if misses:
            raise RuntimeError(f"{misses} of {len(ra)} positions are not in the cache {cache}")
        started = time.perf_counter()
        scored = classify_catalog(table, survey=survey, backend=backend, model=model,
                                  cache=cache, progress=False)
        seconds = time.perf_counter() - started
        sample = min(len(ra), DECODE_SAMPLE_ROWS)
        started = time.perf_counter()
        for r, d in zip(ra[:sample], dec[:sample]):
            prepare_payload(cache.get(backend.cache_key(r, d)).payload, backend.survey.colour)
        decode_seconds = time.perf_counter() - started
    return {"rows": len(ra), "seconds": seconds, "rows_per_s": len(ra) / seconds,
            "ok": int(np.sum(np.asarray(scored["lsbg_status"]) == "ok")),
            "decode_rows_per_s": sample / decode_seconds}


# -- memory of the command line on large catalogs ---------------------------------------


# Runs the command given after the result file and writes its exit status and
# ru_maxrss there.  A child's ru_maxrss starts from the high-water mark of the
# address space it was forked from (Linux copies it with the address space),
# so the command must be started by a small process, not by a benchmark that
# already holds TensorFlow and its images.
_LAUNCHER = """\
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, wait_status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(wait_status)} {usage.ru_maxrss}")
"""


def command_peak_rss(command, log, env=None):
    """Run a command to its end and measure its peak resident memory.

    Parameters
    ----------
    command : sequence of str
        Program and arguments.
    log : path-like
        File that receives the command's standard output and error; the
        measurement is written beside it (suffix ``.rusage``).
    env : dict, optional
        Environment of the command (default: this process's).

    Returns
    -------
    peak_mib : float
        Peak resident set size of the command's process (MiB), not counting
        this process nor the command's own children.
    seconds : float
        Wall-clock time, including the start of a small launcher process.

    Raises
    ------
    RuntimeError
        The command exited with a non-zero status (the message ends with
        the end of its output).
    """
    result = Path(log).with_suffix(".rusage")
    started = time.perf_counter()
    with open(log, "wb") as out:
        subprocess.run([sys.executable, "-c", _LAUNCHER, str(result), *map(str, command)],
                       stdout=out, stderr=subprocess.STDOUT, env=env, check=True)
    seconds = time.perf_counter() - started
    returncode, maxrss = map(int, result.read_text().split())
    if returncode != 0:
        tail = Path(log).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(map(str, command[:4]))} ... exited with status "
                           f"{returncode}:\n{tail}")
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    kib = maxrss / 1024 if sys.platform == "darwin" else maxrss
    return kib / 1024, seconds


def classify_peak_rss(rows, ra, dec, cache, workdir, scored=MEMORY_SCORED_ROWS, survey="des",
                      seed=0, chunk_size=None):
    """Peak memory of one ``lsbg-classify classify`` process on a large catalog.

    The catalog (FITS, ``rows`` rows) has ``min(rows, scored)`` rows at
    cached positions (``ra``/``dec`` used in turn) and the rest without a
    position (NaN).  The command reads it, scores the first kind through
    the whole chunked path (cache, decoding, model, checkpoint) and flags
    the rest ``invalid_position``, then writes every row.

    Parameters
    ----------
    rows : int
        Catalog rows.
    ra, dec : array_like
        Positions in ``cache`` (see :func:`warm_cache`).
    cache : CutoutCache
    workdir : path-like
        Where the catalog, output and log are written (and removed after).
    scored : int
        Rows that get a position.
    survey : {"des", "hsc"}
    seed : int
        Sky seed the cache was warmed with.
    chunk_size : int, optional
        ``--chunk-size`` (default: the command's).

    Returns
    -------
    dict
        ``rows``, ``scored``, ``peak_rss_mib`` (of the child process),
        ``seconds`` (including starting Python and TensorFlow) and ``ok``
        (scored rows in the output).

    Raises
    ------
    RuntimeError
        The command failed, or the output does not have every row.
    """
    from astropy.io import fits
    from astropy.table import Table

    workdir = Path(workdir)
    n_scored = min(int(rows), int(scored))
    cat_ra, cat_dec = np.full(rows, np.nan), np.full(rows, np.nan)
    cat_ra[:n_scored] = np.resize(np.asarray(ra, np.float64), n_scored)
    cat_dec[:n_scored] = np.resize(np.asarray(dec, np.float64), n_scored)
    catalog, output = workdir / f"memory-{rows}.fits", workdir / f"memory-{rows}-scored.fits"
    Table({"ra": cat_ra, "dec": cat_dec}).write(catalog, overwrite=True)
    command = [sys.executable, "-m", "lsbg_classify.cli", "classify", str(catalog),
               "-o", str(output), "--overwrite", "--backend", "simulated", "--survey", survey,
               "--seed", str(seed), "--cache", str(cache.directory), "--on-invalid", "flag",
               "--quiet"]
    if chunk_size is not None:
        command += ["--chunk-size", str(chunk_size)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # The child must import this very package, installed or not.
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    try:
        peak, seconds = command_peak_rss(command, workdir / f"memory-{rows}.log", env)
        with fits.open(output, memmap=True) as hdul:
            data = hdul[1].data
            written = len(data)
            ok = int(np.sum(data["lsbg_status"][:n_scored] == "ok"))
    finally:
        for path in (catalog, output):
            path.unlink(missing_ok=True)
    if written != rows:
        raise RuntimeError(f"the output of the {rows}-row run has {written} rows")
    return {"rows": int(rows), "scored": n_scored, "peak_rss_mib": peak, "seconds": seconds,
            "ok": ok}


def memory_by_rows(row_counts, ra, dec, cache, scored=MEMORY_SCORED_ROWS, survey="des", seed=0):
    """:func:`classify_peak_rss` for several catalog sizes, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="lsbg-bench-") as workdir:
        return [classify_peak_rss(n, ra, dec, cache, workdir, scored=scored, survey=survey,
                                  seed=seed) for n in row_counts]


# -- the command --------------------------------------------------------------------------


def peak_rss_mib():
    """Peak resident memory of this process so far (MiB)."""
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024


def _e2e_positions(coords, e2e_rows):
    if not coords:
        return simulated_positions(e2e_rows), "simulated positions"
    ra, dec = read_coordinates(coords)
    if e2e_rows > len(ra):
        raise ValueError(f"--e2e-rows {e2e_rows} is more than the {len(ra)} positions in --coords")
    names = ", ".join(Path(p).name for p in coords)
    return (ra[:e2e_rows], dec[:e2e_rows]), f"the first {e2e_rows} of {len(ra)} rows of {names}"


def run_benchmarks(rows=100, latency=0.1, workers=8, coords=(), e2e_rows=E2E_ROWS, cache=None,
                   memory_rows=(), memory_scored=MEMORY_SCORED_ROWS):
    """Print one line per figure.

    Parameters
    ----------
    rows, latency, workers
        Of :func:`fetch_throughput`.
    coords : sequence of path-like
        Catalogs whose positions the end-to-end figure uses (default:
        simulated positions).
    e2e_rows : int
        Rows of the end-to-end figure; 0 leaves it (and the memory runs) out.
    cache : path-like, optional
        Cutout cache to warm and read; default: a temporary directory,
        removed afterwards.  Give one to keep the warm cache for the next run.
    memory_rows : sequence of int
        Catalog sizes of :func:`classify_peak_rss` runs (none by default).
    memory_scored : int
        Scored rows of each memory run.
    """
    from .cache import CutoutCache
    from .model import load_model

    if e2e_rows < 0:
        raise ValueError(f"--e2e-rows must be 0 or more, got {e2e_rows}")
    if memory_rows and e2e_rows == 0:
        raise ValueError("--memory-rows needs --e2e-rows above 0: the memory runs read the cache "
                         "it warms")
    if any(n < 1 for n in memory_rows):
        raise ValueError(f"--memory-rows must be positive, got {list(memory_rows)}")
    if memory_scored < 1:
        raise ValueError(f"--memory-scored must be positive, got {memory_scored}")
    positions, origin = _e2e_positions(coords, e2e_rows) if e2e_rows else (None, "")
    print(f"machine: {describe_machine()}", flush=True)
    classifier = load_model("des")
    inference = inference_throughput(classifier)
    print(f"inference: {inference['images_per_s']:.0f} images/s, "
          f"{inference['achieved_flops'] / 1e9:.1f} GFLOP/s = "
          f"{inference['fraction_of_peak']:.2f} of the float32 matmul peak measured now "
          f"({inference['peak_flops'] / 1e9:.1f} GFLOP/s)", flush=True)
    print(f"inference: compiled vs eager: {inference['images_per_s']:.0f} vs "
          f"{inference['eager_images_per_s']:.0f} images/s, ratio {inference['speedup']:.2f}x "
          f"(median of {inference['repeats']} interleaved runs of {inference['images']} images, "
          f"batch {inference['batch_size']}; max |dp| {inference['max_abs_diff']:.1e})",
          flush=True)
    fetch = fetch_throughput(rows, latency, workers)
    print(f"fetch: {fetch['rows']} cutouts, {latency * 1000:.0f} ms server latency: serial "
          f"{fetch['serial']:.1f}/s, {workers} workers {fetch['concurrent']:.1f}/s, "
          f"ratio {fetch['ratio']:.2f}x", flush=True)
    results = {"inference": inference, "fetch": fetch}
    if positions is not None:
        with tempfile.TemporaryDirectory(prefix="lsbg-bench-cache-") as scratch:
            store = CutoutCache(cache if cache is not None else scratch)
            results.update(_warm_cache_figures(positions, origin, classifier, store, inference,
                                               memory_rows, memory_scored))
    print(f"peak memory: {peak_rss_mib():.0f} MiB", flush=True)
    return results


def _warm_cache_figures(positions, origin, classifier, store, inference, memory_rows,
                        memory_scored):
    ra, dec = positions
    started = time.perf_counter()
    rendered = warm_cache(ra, dec, store)
    print(f"cache: {len(ra)} cutouts of {origin}: {rendered} rendered into {store.directory} by "
          f"the simulated backend in {time.perf_counter() - started:.0f} s, "
          f"{len(ra) - rendered} already there", flush=True)
    e2e = end_to_end_throughput(ra, dec, classifier, store)
    print(f"end to end: classify_catalog on the warm cache: {e2e['rows']} rows in "
          f"{e2e['seconds']:.1f} s = {e2e['rows_per_s']:.0f} rows/s ({e2e['ok']} scored) = "
          f"{e2e['rows_per_s'] / inference['images_per_s']:.2f} of bare inference "
          f"({inference['images_per_s']:.0f} images/s); cache read + decode + resample alone: "
          f"{e2e['decode_rows_per_s']:.0f} rows/s", flush=True)
    results = {"end_to_end": e2e}
    if memory_rows:
        runs = memory_by_rows(memory_rows, ra, dec, store, scored=memory_scored)
        sizes = ", ".join(f"{r['rows']:,} rows {r['peak_rss_mib']:.0f} MiB ({r['seconds']:.0f} s)"
                          for r in runs)
        smallest = min(runs, key=lambda r: r["rows"])
        largest = max(runs, key=lambda r: r["rows"])
        print(f"memory: peak RSS of lsbg-classify classify by catalog rows (up to "
              f"{memory_scored} scored from the warm cache, the rest flagged invalid): {sizes}; "
              f"largest / smallest catalog "
              f"{largest['peak_rss_mib'] / smallest['peak_rss_mib']:.2f}x", flush=True)
        results["memory"] = runs
    return results
