"""``lsbg-classify bench``: throughput figures measured side by side.

Every figure is a ratio of two measurements taken in the same run, on the
same machine, so it means something even on a noisy shared computer.
"""

import json
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

from .. import status
from ..pipeline.catalog.write import write_catalog
from ..surveys import get_backend
from .loopback import LoopbackViewer

__all__ = [
    "architecture_flops",
    "batch_sweep",
    "classify_peak_rss",
    "command_peak_rss",
    "decode_throughput",
    "describe_machine",
    "end_to_end_throughput",
    "fetch_throughput",
    "inference_throughput",
    "keras_backends",
    "matmul_limit",
    "memory_by_rows",
    "read_coordinates",
    "run_benchmarks",
    "simulated_positions",
    "training_throughput",
    "warm_cache",
    "warm_cache_synthetic",
]

# The loopback server remembers this many rendered images (see loopback.py).
MAX_ROWS = 512
# Random images per inference measurement and interleaved repeats of it:
# the median of the repeats is reported, so one slow repeat on a busy
# machine does not decide a figure.
INFERENCE_IMAGES = 512
INFERENCE_REPEATS = 3
# Batch sizes of the ONNX Runtime sweep.
BATCH_SWEEP = (64, 128, 256, 512)
# Timed training steps per Keras backend, and images per step (the paper's).
TRAIN_STEPS = 8
TRAIN_BATCH = 64
# Distinct rendered cutouts the synthetic warm cache reuses.
SYNTHETIC_DISTINCT = 64
# Rows of the end-to-end measurement unless told otherwise: about a minute
# of rendering to warm the cache on two cores, seconds to classify.
E2E_ROWS = 2000
# Rows whose cache read, decoding and resampling are timed on their own,
# after the end-to-end run: enough for a steady rate.
DECODE_SAMPLE_ROWS = 1000
# Timed passes over the decode sample; the fastest counts.
DECODE_REPEATS = 3
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
    if outcomes.count(status.OK) != len(ra):
        raise RuntimeError(f"benchmark fetch failed for {len(ra) - outcomes.count(status.OK)} rows")
    return len(ra) / elapsed


def fetch_throughput(rows=100, latency=0.1, workers=8, seed=0, limit=4, retry_after=0.1):
    """Cutouts per second from a loopback viewer: serial, concurrent, and rate-limited.

    The server answers after ``latency`` seconds, like a distant service.
    Its images are rendered once before timing, so the measurements time
    the client's HTTP path and the wait, not the simulator.  The last run
    is against the same server answering HTTP 429 (``Retry-After:
    retry_after``) to any request beyond ``limit`` in flight, to show the
    client backing off to what the server allows.

    Returns
    -------
    dict
        ``serial`` and ``concurrent`` cutouts/s and their ``ratio``;
        ``limited`` cutouts/s under the rate limit, ``limited_429`` (429
        answers), ``after_backoff_within`` (fraction of the requests after
        the first 429 that arrived with at most ``limit`` in flight) and
        ``after_backoff_median`` / ``after_backoff_max`` (requests in
        flight at their arrival).
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
        server.reset_counts()
        server.concurrency_limit, server.limit_retry_after = limit, retry_after
        limited = _timed_fetch(backend, ra, dec, workers)
        log = list(server.log)
    first = next((k for k, info in enumerate(log) if info.rate_limited), len(log))
    # Requests already on their way when the first 429 came are not the client's choice.
    after = np.array([info.in_flight for info in log[first + workers:]] or [0])
    return {"rows": rows, "latency_s": latency, "workers": workers, "serial": serial,
            "concurrent": concurrent, "ratio": concurrent / serial, "limit": limit,
            "limited": limited, "limited_429": sum(info.rate_limited for info in log),
            "after_backoff_within": float(np.mean(after <= limit)),
            "after_backoff_median": float(np.median(after)),
            "after_backoff_max": int(after.max())}


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


def architecture_flops():
    """:func:`deepshadows_flops_per_image` from the architecture's constants, without Keras."""
    from ..pipeline.model import CONV_FILTERS, CONV_KERNEL, DENSE_UNITS, INPUT_SHAPE

    side, _, channels = INPUT_SHAPE
    flops = 0
    for filters in CONV_FILTERS:
        flops += 2 * side * side * filters * CONV_KERNEL**2 * channels
        side, channels = side // 2, filters  # 'same' convolution, then 2x2 pooling
    flat = side * side * channels
    return flops + 2 * flat * DENSE_UNITS + 2 * DENSE_UNITS


def matmul_peak_flops(size=2048, repeats=10):
    """float32 matrix-multiply FLOP/s this process reaches with numpy (best of ``repeats``)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # the first product pays for thread start-up and page faults
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


# Run in a fresh interpreter: numpy alone, so that no TensorFlow or ONNX
# Runtime thread pool competes with the BLAS threads being measured.
_MATMUL_SCRIPT = """\
import json, os, sys
from lsbg_classify.testing.benchmark import matmul_peak_flops
try:
    from threadpoolctl import threadpool_info
    threads = sum(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
except ImportError:
    threads = None
flops = matmul_peak_flops(int(sys.argv[1]), int(sys.argv[2]))
print(json.dumps({"flops": flops, "blas_threads": threads}))
"""


def matmul_limit(size=2048, repeats=10):
    """The float32 matmul limit, measured in a fresh process before any other thread pool.

    Returns
    -------
    dict
        ``flops`` (FLOP/s, best of ``repeats`` products of ``size``² float32
        matrices), ``blas_threads`` (threads numpy's BLAS used; None when
        ``threadpoolctl`` is missing), ``size``, ``repeats``, and
        ``images_per_s``: that rate divided by the FLOPs of one DeepShadows
        forward pass, the most any runtime could score on this machine.
    """
    if repeats < 1 or size < 1:
        raise ValueError("size and repeats must be positive")
    result = subprocess.run([sys.executable, "-c", _MATMUL_SCRIPT, str(size), str(repeats)],
                            capture_output=True, text=True, check=True, env=_child_env())
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return {**figures, "size": size, "repeats": repeats,
            "images_per_s": figures["flops"] / architecture_flops()}


def _child_env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)
    # The child must import this very package, installed or not.
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def _seconds(function):
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def _load_runtimes(model, runtimes):
    from ..pipeline.model import MissingExtraError, load_model

    loaded, missing = {}, {}
    for runtime in runtimes:
        try:
            classifier = load_model(model, runtime=runtime)
        except (MissingExtraError, FileNotFoundError) as exc:
            missing[runtime] = str(exc)
            continue
        loaded[classifier.runtime] = classifier
    return loaded, missing


def inference_throughput(model="des", images=INFERENCE_IMAGES, batch_size=None,
                         repeats=INFERENCE_REPEATS, runtimes=("onnx", "keras")):
    """Images/s of the model on each runtime, timed interleaved.

    Parameters
    ----------
    model : str or path-like
        Classifier to time (default: the bundled DES model).
    images : int
        Random images per measurement.
    batch_size : int, optional
        Images per network call; default: each runtime's fastest
        (:attr:`~lsbg_classify.pipeline.model.LSBGModel.predict_batch`), the
        pipeline's default.
    repeats : int
        Timings of each runtime, alternating; the median is used.
    runtimes : sequence of {"onnx", "keras"}
        Runtimes to time; one that cannot be loaded (no ONNX twin, no
        TensorFlow) is left out and named in ``missing``.

    Returns
    -------
    dict
        ``runtimes``: runtime name -> ``{"images_per_s", "batch_size"}``;
        ``max_abs_diff``: largest difference of the runtimes'
        probabilities (None with one runtime); ``missing``: runtime ->
        why it was left out; ``images``, ``repeats``.
    """
    loaded, missing = _load_runtimes(model, runtimes)
    if not loaded:
        raise RuntimeError(f"no runtime could load {model!r}: {missing}")
    x = np.random.default_rng(1).uniform(0, 1, (images, 64, 64, 3)).astype(np.float32)
    batches = {name: c.predict_batch if batch_size is None else int(batch_size)
               for name, c in loaded.items()}
    # Warm every path (graph tracing, kernel selection) before any timing.
    probs = {name: c.predict(x, batch_size=batches[name]) for name, c in loaded.items()}
    times = {name: [] for name in loaded}
    for _ in range(repeats):
        for name, c in loaded.items():
            times[name].append(_seconds(lambda: c.predict(x, batch_size=batches[name])))
    values = list(probs.values())
    diff = (float(max(np.max(np.abs(v - values[0])) for v in values[1:]))
            if len(values) > 1 else None)
    return {"images": images, "repeats": repeats, "missing": missing, "max_abs_diff": diff,
            "runtimes": {name: {"images_per_s": images / statistics.median(times[name]),
                                "batch_size": batches[name]} for name in loaded}}


def batch_sweep(model="des", sizes=BATCH_SWEEP, images=INFERENCE_IMAGES, repeats=2,
                runtime="onnx"):
    """Images/s of one runtime at several batch sizes (interleaved, median of ``repeats``).

    Returns
    -------
    dict
        Batch size -> images/s.
    """
    from ..pipeline.model import load_model

    classifier = load_model(model, runtime=runtime)
    x = np.random.default_rng(2).uniform(0, 1, (images, 64, 64, 3)).astype(np.float32)
    for size in sizes:
        classifier.predict(x[:size], batch_size=size)
    times = {size: [] for size in sizes}
    for _ in range(repeats):
        for size in sizes:
            times[size].append(_seconds(lambda: classifier.predict(x, batch_size=size)))
    return {size: images / statistics.median(t) for size, t in times.items()}


def decode_throughput(payloads, mapping, threads=None):
    """Decode + resize rate (payloads/s) on one core and on ``threads`` threads.

    Parameters
    ----------
    payloads : sequence of Payload
        Cutouts as cached.
    mapping : ColourMapping
        Colour mapping of their survey (for FITS payloads).
    threads : int, optional
        Default: :func:`~lsbg_classify.pipeline.scoring.decode_threads`.

    Returns
    -------
    dict
        ``per_core`` (one thread), ``threads`` and ``all_threads`` (that
        many threads at once), payloads/s, each the fastest of
        ``DECODE_REPEATS`` (3) alternating passes.
    """
    from concurrent.futures import ThreadPoolExecutor

    from ..pipeline.preprocess import prepare_payload_uint8
    from ..pipeline.scoring import decode_threads

    threads = decode_threads() if threads is None else int(threads)
    prepare_payload_uint8(payloads[0], mapping)
    # Best of a few passes, alternating the two, as for the matmul limit:
    # on a shared machine the slow passes measure the neighbours.
    one, every = [], []
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(DECODE_REPEATS):
            one.append(_seconds(lambda: [prepare_payload_uint8(p, mapping) for p in payloads]))
            every.append(_seconds(
                lambda: list(pool.map(lambda p: prepare_payload_uint8(p, mapping), payloads))))
    one, every = min(one), min(every)
    return {"per_core": len(payloads) / one, "threads": threads,
            "all_threads": len(payloads) / every}


# Run in a fresh interpreter per Keras backend (KERAS_BACKEND is read at import).
_TRAIN_SCRIPT = """\
import json, sys, time
import numpy as np
steps, batch, intra, inter = (int(a) for a in sys.argv[1:5])
if intra or inter:
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
from lsbg_classify.pipeline.model import build_deepshadows, compile_deepshadows, import_keras
keras = import_keras()
network = compile_deepshadows(build_deepshadows())
rng = np.random.default_rng(0)
x = (rng.integers(0, 256, (steps * batch, 64, 64, 3), dtype=np.uint8) / 255.0).astype(np.float32)
y = rng.integers(0, 2, steps * batch).astype(np.float32)
network.fit(x[:2 * batch], y[:2 * batch], batch_size=batch, epochs=1, verbose=0)  # trace, warm
started = time.perf_counter()
network.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
seconds = time.perf_counter() - started
print(json.dumps({"images_per_s": len(x) / seconds, "backend": keras.backend.backend()}))
"""


def training_throughput(backend="tensorflow", steps=TRAIN_STEPS, batch_size=TRAIN_BATCH,
                        intra_threads=0, inter_threads=0):
    """Training images/s of DeepShadows on one Keras backend, in a fresh process.

    A few steps of ``fit`` with the paper's optimiser on random images
    (uint8 pixels / 255), after two warm-up steps that trace the step.

    Parameters
    ----------
    backend : str
        ``KERAS_BACKEND`` of the child process (``"tensorflow"``, ``"jax"``).
    steps : int
        Timed training steps.
    batch_size : int
        Images per step (64, the paper's).
    intra_threads, inter_threads : int
        TensorFlow's thread-pool sizes (0: TensorFlow's choice).

    Returns
    -------
    dict
        ``images_per_s`` and the ``backend`` Keras reported.

    Raises
    ------
    RuntimeError
        The child failed (the message ends with its error output).
    """
    result = subprocess.run(
        [sys.executable, "-c", _TRAIN_SCRIPT, str(steps), str(batch_size), str(intra_threads),
         str(inter_threads)], capture_output=True, text=True,
        env=_child_env(KERAS_BACKEND=backend))
    if result.returncode != 0:
        raise RuntimeError(f"training on Keras backend {backend!r} failed:\n"
                           f"{result.stderr[-1500:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def keras_backends():
    """Keras backends installed here that the bench times (TensorFlow, JAX)."""
    from importlib.util import find_spec

    if find_spec("keras") is None:
        return []
    return [name for name in ("tensorflow", "jax") if find_spec(name) is not None]


# -- end to end on a warm cache -----------------------------------------------------------


def read_coordinates(paths):
    """Positions of every row of one or more catalogs, in file order.

    Parameters
    ----------
    paths : sequence of path-like
        Catalogs with RA/Dec columns (found by name, e.g. ``ra``/``dec``),
        in any format :func:`~lsbg_classify.pipeline.catalog.read.read_catalog` reads,
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
    from ..pipeline.catalog.columns import extract_positions
    from ..pipeline.catalog.read import CatalogError, read_catalog

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
    from ..pipeline.cache import CutoutCache

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
    :func:`~lsbg_classify.pipeline.classify.classify_catalog` with
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


def warm_cache_synthetic(ra, dec, cache, survey="des", seed=0, distinct=SYNTHETIC_DISTINCT,
                         threads=8):
    """Fill a cutout cache for positions quickly, reusing a few rendered cutouts.

    ``distinct`` cutouts of the simulated sky are rendered and stored, in
    turn, under the cache keys of every position not cached yet, as the
    ``simulated`` backend would key them.  Decoding them costs what
    decoding real viewer JPEGs of that size costs, without rendering
    thousands of skies; the probabilities are not those of the positions.

    Parameters
    ----------
    ra, dec : array_like
        Positions (deg).
    cache : CutoutCache
    survey : {"des", "hsc"}
    seed : int
        Seed of the simulated backend whose keys are used.
    distinct : int
        Cutouts actually rendered.
    threads : int
        Threads writing cache entries (each write is flushed to disk).

    Returns
    -------
    int
        Entries written (0 when every position was cached).
    """
    from concurrent.futures import ThreadPoolExecutor

    ra, dec = np.asarray(ra, np.float64), np.asarray(dec, np.float64)
    with get_backend("simulated", survey=survey, seed=seed) as backend:
        missing = np.flatnonzero(_cache_misses(backend, ra, dec, cache))
        if len(missing) == 0:
            return 0
        # Positions of the footprint's usual part (Dec < 80), where every render succeeds.
        sky_ra, sky_dec = simulated_positions(max(1, int(distinct)), seed=seed + 1)
        outcomes = [backend.fetch_one(r, d) for r, d in zip(sky_ra, sky_dec)]
        keys = [backend.cache_key(ra[k], dec[k]) for k in missing]
    with ThreadPoolExecutor(max(1, int(threads))) as pool:
        list(pool.map(lambda n: cache.put(keys[n], outcomes[n % len(outcomes)]),
                      range(len(keys))))
    return len(keys)


def end_to_end_throughput(ra, dec, model, cache, survey="des", seed=0):
    """Rows/s of :func:`~lsbg_classify.pipeline.classify.classify_catalog` on a warm cache.

    Everything a catalog goes through after the download is timed: the
    position checks, cache reads, batching, the model and the output table.
    It is timed twice on the same rows: first with only the payloads cached
    (the model inputs it remembers are removed first), so that every row is
    decoded and resampled in the run, then again with the model inputs the
    first run left in the cache.  The model is loaded (and its graph traced)
    beforehand, as in any run long enough to matter.

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
        ``rows``, ``ok`` (rows scored), ``decoding`` and ``model_inputs``
        (each ``{"seconds", "rows_per_s"}``: the first and the second
        run), ``same_probabilities`` (whether the runs agree exactly) and
        ``decode_rows_per_s``: the cache read, decoding and resampling
        alone, one row after another, for the first
        ``DECODE_SAMPLE_ROWS`` (1000) rows.

    Raises
    ------
    RuntimeError
        Some position is not cached: the figure would include rendering.
    """
    from astropy.table import Table

    from ..pipeline.classify import classify_catalog
    from ..pipeline.preprocess import prepare_payload_uint8

    ra, dec = np.asarray(ra, np.float64), np.asarray(dec, np.float64)
    table = Table({"ra": ra, "dec": dec})
    runs = {}
    with get_backend("simulated", survey=survey, seed=seed) as backend:
        misses = int(_cache_misses(backend, ra, dec, cache).sum())
        if misses:
            raise RuntimeError(f"{misses} of {len(ra)} positions are not in the cache {cache}")
        cache.clear_model_inputs()
        for run in ("decoding", "model_inputs"):
            started = time.perf_counter()
            scored = classify_catalog(table, survey=survey, backend=backend, model=model,
                                      cache=cache, progress=False)
            seconds = time.perf_counter() - started
            runs[run] = {"seconds": seconds, "rows_per_s": len(ra) / seconds,
                         "prob": np.asarray(scored["lsbg_prob"])}
        sample = min(len(ra), DECODE_SAMPLE_ROWS)
        started = time.perf_counter()
        for r, d in zip(ra[:sample], dec[:sample]):
            prepare_payload_uint8(cache.get(backend.cache_key(r, d)).payload, backend.survey.colour)
        decode_seconds = time.perf_counter() - started
    same = np.array_equal(runs["decoding"].pop("prob"), runs["model_inputs"].pop("prob"),
                          equal_nan=True)
    return {"rows": len(ra), **runs, "same_probabilities": bool(same),
            "ok": int(np.sum(np.asarray(scored["lsbg_status"]) == status.OK)),
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
    write_catalog(Table({"ra": cat_ra, "dec": cat_dec}), catalog, overwrite=True)
    command = [sys.executable, "-m", "lsbg_classify.cli", "classify", str(catalog),
               "-o", str(output), "--overwrite", "--backend", "simulated", "--survey", survey,
               "--seed", str(seed), "--cache", str(cache.directory), "--on-invalid", "flag",
               "--quiet"]
    if chunk_size is not None:
        command += ["--chunk-size", str(chunk_size)]
    try:
        peak, seconds = command_peak_rss(command, workdir / f"memory-{rows}.log", _child_env())
        with fits.open(output, memmap=True) as hdul:
            data = hdul[1].data
            written = len(data)
            ok = int(np.sum(data["lsbg_status"][:n_scored] == status.OK))
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
                   memory_rows=(), memory_scored=MEMORY_SCORED_ROWS, train_steps=TRAIN_STEPS):
    """Measure every figure in one run and print them, each beside its limit.

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
    train_steps : int
        Timed training steps per Keras backend; 0 leaves training out.

    Returns
    -------
    dict
        Every measurement, by name.
    """
    from ..pipeline.cache import CutoutCache

    if e2e_rows < 0:
        raise ValueError(f"--e2e-rows must be 0 or more, got {e2e_rows}")
    if memory_rows and e2e_rows == 0:
        raise ValueError("--memory-rows needs --e2e-rows above 0: the memory runs read the cache "
                         "it warms")
    if any(n < 1 for n in memory_rows):
        raise ValueError(f"--memory-rows must be positive, got {list(memory_rows)}")
    if memory_scored < 1:
        raise ValueError(f"--memory-scored must be positive, got {memory_scored}")
    if train_steps < 0:
        raise ValueError(f"--train-steps must be 0 or more, got {train_steps}")
    positions, origin = _e2e_positions(coords, e2e_rows) if e2e_rows else (None, "")
    print(f"machine: {describe_machine()}", flush=True)
    # First, before this process starts any thread pool of its own.
    limit = matmul_limit()
    threads = limit["blas_threads"]
    print(f"matmul limit: {limit['flops'] / 1e9:.1f} GFLOP/s float32 ({limit['size']}² best of "
          f"{limit['repeats']}, fresh process, {threads if threads else '?'} BLAS threads) = "
          f"{limit['images_per_s']:.0f} DeepShadows images/s "
          f"({architecture_flops() / 1e6:.1f} MFLOP each)", flush=True)
    results = {"matmul": limit}
    # ONNX Runtime first: this process holds no TensorFlow until the Keras figures.
    onnx = inference_throughput("des", runtimes=("onnx",))
    sweep = batch_sweep("des")
    best_batch = max(sweep, key=sweep.get)
    results.update(inference_onnx=onnx, batch_sweep=sweep)
    ort_rate = onnx["runtimes"]["onnxruntime"]["images_per_s"]
    print(f"inference, ONNX Runtime: {ort_rate:.0f} images/s at batch "
          f"{onnx['runtimes']['onnxruntime']['batch_size']} = {ort_rate / limit['images_per_s']:.2f}"
          f" of the matmul limit; by batch: "
          + ", ".join(f"{b}: {r:.0f}" for b, r in sweep.items()) + f" (fastest {best_batch})",
          flush=True)
    fetch = fetch_throughput(rows, latency, workers)
    results["fetch"] = fetch
    print(f"fetch: {fetch['rows']} cutouts, {latency * 1000:.0f} ms server latency: serial "
          f"{fetch['serial']:.1f}/s, {workers} workers {fetch['concurrent']:.1f}/s, "
          f"ratio {fetch['ratio']:.2f}x (cap {workers}); server answering 429 above "
          f"{fetch['limit']} in flight: {fetch['limited']:.1f}/s, {fetch['limited_429']} x 429, "
          f"after backing off {fetch['after_backoff_within']:.0%} of requests arrived with "
          f"<= {fetch['limit']} in flight (median {fetch['after_backoff_median']:.0f}, "
          f"max {fetch['after_backoff_max']})", flush=True)
    if positions is not None:
        with tempfile.TemporaryDirectory(prefix="lsbg-bench-cache-") as scratch:
            store = CutoutCache(cache if cache is not None else scratch)
            results.update(_warm_cache_figures(positions, origin, store, ort_rate,
                                               memory_rows, memory_scored))
    print(f"peak memory before Keras: {peak_rss_mib():.0f} MiB", flush=True)
    results.update(_keras_figures(limit, ort_rate, train_steps))
    results["peak_rss_mib"] = peak_rss_mib()
    print(f"peak memory: {results['peak_rss_mib']:.0f} MiB", flush=True)
    _print_summary(results)
    return results


def _keras_figures(limit, ort_rate, train_steps):
    results = {}
    keras_run = inference_throughput("des", runtimes=("keras", "onnx"))
    if "keras" in keras_run["runtimes"]:
        rate = keras_run["runtimes"]["keras"]["images_per_s"]
        ort_again = keras_run["runtimes"]["onnxruntime"]["images_per_s"]
        print(f"inference, Keras ({_keras_backend_name()}): {rate:.0f} images/s at batch "
              f"{keras_run['runtimes']['keras']['batch_size']} = "
              f"{rate / limit['images_per_s']:.2f} of the matmul limit; ONNX Runtime interleaved "
              f"with it {ort_again:.0f} images/s, ratio {ort_again / rate:.2f}x; max |dp| "
              f"{keras_run['max_abs_diff']:.1e}", flush=True)
        results["inference_keras"] = keras_run
    else:
        print(f"inference, Keras: left out ({keras_run['missing'].get('keras', '')})", flush=True)
    if train_steps:
        results["training"] = _training_figures(train_steps)
    return results


def _keras_backend_name():
    import keras

    return keras.backend.backend()


def _training_figures(steps):
    figures = {}
    backends = keras_backends()
    if not backends:
        print("training: left out (Keras is not installed)", flush=True)
        return figures
    variants = [(name, 0, 0) for name in backends]
    if "tensorflow" in backends:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        variants.append(("tensorflow", cores, 1))
    for name, intra, inter in variants:
        label = name if not intra else f"{name} intra={intra} inter={inter}"
        try:
            figures[label] = training_throughput(name, steps, intra_threads=intra,
                                                 inter_threads=inter)["images_per_s"]
        except RuntimeError as exc:
            print(f"training, {label}: failed: {str(exc).splitlines()[-1]}", flush=True)
    if figures:
        print(f"training images/s ({steps} steps of batch {TRAIN_BATCH}, fresh process each): "
              + ", ".join(f"{k} {v:.0f}" for k, v in figures.items()), flush=True)
    return figures


def _print_summary(results):
    limit = results["matmul"]["images_per_s"]
    ort = results["inference_onnx"]["runtimes"]["onnxruntime"]["images_per_s"]
    parts = [f"matmul limit {limit:.0f} images/s",
             f"ONNX Runtime {ort:.0f} ({ort / limit:.2f})"]
    if "inference_keras" in results:
        keras_rate = results["inference_keras"]["runtimes"]["keras"]["images_per_s"]
        parts.append(f"Keras {keras_rate:.0f} ({keras_rate / limit:.2f})")
    if "decode" in results:
        d = results["decode"]
        parts.append(f"decode+resize {d['per_core']:.0f}/s per core x {d['threads']} = "
                     f"{d['all_threads']:.0f}/s")
    if "end_to_end" in results:
        e = results["end_to_end"]
        parts.append(f"end to end {e['decoding']['rows_per_s']:.0f} rows/s decoding "
                     f"({e['fraction_of_stage_limit']:.2f} of min(inference, decode x cores)), "
                     f"{e['model_inputs']['rows_per_s']:.0f} rows/s on cached model inputs "
                     f"({e['fraction_of_inference']:.2f} of inference)")
    f = results["fetch"]
    parts.append(f"fetch {f['ratio']:.1f}x of serial with {f['workers']} workers")
    for label, rate in results.get("training", {}).items():
        parts.append(f"train {label} {rate:.0f}/s")
    parts.append(f"peak RSS {results['peak_rss_mib']:.0f} MiB")
    print("side by side: " + "; ".join(parts), flush=True)


def _warm_cache_figures(positions, origin, store, ort_rate, memory_rows, memory_scored):
    from ..surveys import get_backend as _backend

    ra, dec = positions
    started = time.perf_counter()
    written = warm_cache_synthetic(ra, dec, store)
    print(f"cache: {len(ra)} cutouts of {origin}: {written} written into {store.directory} from "
          f"{SYNTHETIC_DISTINCT} rendered simulated-sky JPEGs in "
          f"{time.perf_counter() - started:.0f} s, {len(ra) - written} already there", flush=True)
    with _backend("simulated", survey="des", seed=0) as backend:
        sample = [store.get(backend.cache_key(r, d)).payload
                  for r, d in zip(ra[:DECODE_SAMPLE_ROWS], dec[:DECODE_SAMPLE_ROWS])]
        decode = decode_throughput(sample, backend.survey.colour)
    print(f"decode + resize (Pillow, 256 -> 64 bicubic): {decode['per_core']:.0f}/s on one core, "
          f"{decode['all_threads']:.0f}/s on {decode['threads']} threads", flush=True)
    from ..pipeline.model import load_model

    e2e = end_to_end_throughput(ra, dec, load_model("des"), store)
    stage_limit = min(ort_rate, decode["per_core"] * decode["threads"])
    first, second = e2e["decoding"], e2e["model_inputs"]
    e2e["fraction_of_stage_limit"] = first["rows_per_s"] / stage_limit
    e2e["fraction_of_inference"] = second["rows_per_s"] / ort_rate
    print(f"end to end: classify_catalog on the warm cache, {e2e['rows']} rows "
          f"({e2e['ok']} scored):\n"
          f"  payloads cached, decoded in the run: {first['seconds']:.1f} s = "
          f"{first['rows_per_s']:.0f} rows/s = {e2e['fraction_of_stage_limit']:.2f} of "
          f"min(inference {ort_rate:.0f}, decode {decode['per_core']:.0f} x "
          f"{decode['threads']} cores), {first['rows_per_s'] / ort_rate:.2f} of bare inference\n"
          f"  model inputs cached too (the same run again): {second['seconds']:.1f} s = "
          f"{second['rows_per_s']:.0f} rows/s = {e2e['fraction_of_inference']:.2f} of bare "
          f"inference; probabilities {'identical' if e2e['same_probabilities'] else 'DIFFER'}",
          flush=True)
    results = {"end_to_end": e2e, "decode": decode}
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
