"""Tests of the persistent cutout cache."""

import hashlib
import io
import multiprocessing
import os
import time
import warnings

import numpy as np
import pytest
from astropy.io import fits

from lsbg_classify import status
from lsbg_classify.pipeline.cache import (
    DEFAULT_CACHE_ENV,
    CacheCorruptionWarning,
    CutoutCache,
    default_cache_dir,
)
from lsbg_classify.surveys import FetchOutcome, Payload

JPEG_BYTES = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"
KEY = "legacysurvey-des-" + "0123456789abcdef" * 2


def fits_bytes():
    buf = io.BytesIO()
    fits.PrimaryHDU(np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)).writeto(buf)
    return buf.getvalue()


def ok(data, fmt="jpeg"):
    return FetchOutcome(status.OK, Payload(data, fmt))


def key_for(i, backend="legacysurvey"):
    return f"{backend}-des-{hashlib.sha256(str(i).encode()).hexdigest()[:32]}"


def test_round_trip(tmp_path):
    cache = CutoutCache(tmp_path / "c")
    assert not (tmp_path / "c").exists()  # created lazily
    assert cache.get(KEY) is None and KEY not in cache
    cache.put(KEY, ok(JPEG_BYTES))
    got = cache.get(KEY)
    assert got.status == status.OK
    assert got.payload == Payload(JPEG_BYTES, "jpeg")
    assert KEY in cache

    fkey = key_for("fits", "hips")
    cache.put(fkey, ok(fits_bytes(), "fits"))
    got = cache.get(fkey)
    assert got.payload.format == "fits"
    with fits.open(io.BytesIO(got.payload.data)) as hdul:
        assert hdul[0].data.shape == (3, 4, 5)

    nkey = key_for("blank")
    cache.put(nkey, FetchOutcome(status.NO_COVERAGE, message="outside footprint"))
    got = cache.get(nkey)
    assert got == FetchOutcome(status.NO_COVERAGE, None, "outside footprint")

    # Overwrite: last writer wins.
    cache.put(KEY, ok(b"other"))
    assert cache.get(KEY).payload.data == b"other"

    assert cache.delete(KEY) is True
    assert cache.delete(KEY) is False
    assert cache.get(KEY) is None


def test_layout_and_cachedir_tag(tmp_path):
    cache = CutoutCache(tmp_path)
    cache.put(KEY, ok(JPEG_BYTES))
    path = cache.path(KEY)
    assert path.parent.parent == tmp_path / "legacysurvey"
    assert len(path.parent.name) == 2
    assert path.name == KEY + ".cutout"
    tag = (tmp_path / "CACHEDIR.TAG").read_text()
    assert tag.startswith("Signature: 8a477f597d28d172789f06886806bc55")
    # No temporary files are left behind.
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_failures_not_stored(tmp_path):
    cache = CutoutCache(tmp_path)
    cache.put(KEY, FetchOutcome(status.FETCH_FAILED, message="HTTP 503"))
    cache.put(KEY, FetchOutcome(status.BAD_IMAGE, message="bad"))
    assert cache.get(KEY) is None
    assert cache.info()["entries"] == 0
    with pytest.raises(ValueError):
        cache.put(KEY, FetchOutcome(status.OK))


@pytest.mark.parametrize(
    "key", ["../x", "a/b", "", "/abs/path", "C:\\x", ".hidden", "..", "-x", "a b", "x" * 201, None]
)
def test_key_validation(tmp_path, key):
    cache = CutoutCache(tmp_path)
    with pytest.raises(ValueError, match="invalid cache key"):
        cache.put(key, ok(b"x"))
    with pytest.raises(ValueError):
        cache.get(key)
    with pytest.raises(ValueError):
        cache.delete(key)
    assert key not in cache
    assert list(tmp_path.iterdir()) == []


def test_long_key_accepted(tmp_path):
    cache = CutoutCache(tmp_path)
    key = "b-" + "x" * 198
    cache.put(key, ok(b"x"))
    assert cache.get(key).payload.data == b"x"


def _damage_flip_payload(path):
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))


def _damage_flip_header(path):
    blob = bytearray(path.read_bytes())
    blob[30] ^= 0x01
    path.write_bytes(bytes(blob))


def _damage_truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def _damage_truncate_header(path):
    path.write_bytes(path.read_bytes()[:12])


def _damage_garbage(path):
    path.write_bytes(b"<html>503 Service Unavailable</html>")


@pytest.mark.parametrize(
    "damage",
    [_damage_flip_payload, _damage_flip_header, _damage_truncate,
     _damage_truncate_header, _damage_garbage],
)
def test_corruption_detected(tmp_path, damage):
    cache = CutoutCache(tmp_path)
    cache.put(KEY, ok(JPEG_BYTES))
    path = cache.path(KEY)
    damage(path)
    with pytest.warns(CacheCorruptionWarning, match="damaged cache entry"):
        assert cache.get(KEY) is None
    assert not path.exists()
    # Refetched and stored again, it reads fine.
    cache.put(KEY, ok(JPEG_BYTES))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get(KEY).payload.data == JPEG_BYTES


def _writer(directory, proc, n):
    """Write a shared key and an own key ``n`` times, reading back each time.

    Returns the number of reads that came back missing or damaged.
    """
    cache = CutoutCache(directory)
    bad = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(n):
            # Sizes vary so that a torn write could not look complete.
            data = f"{proc}:{i}:".encode() * (50 + 37 * ((proc + i) % 13))
            cache.put("shared-key", ok(data, "fits"))
            cache.put(f"proc{proc}-key{i % 5}", ok(data))
            got = cache.get("shared-key")
            if got is None or got.status != status.OK:
                bad += 1
        bad += sum(issubclass(w.category, CacheCorruptionWarning) for w in caught)
    return bad


def test_concurrent_writers(tmp_path):
    # "spawn" works everywhere and does not inherit locks from this process.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        bad = pool.starmap(_writer, [(str(tmp_path), p, 50) for p in range(4)])
    assert bad == [0, 0, 0, 0]
    cache = CutoutCache(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shared = cache.get("shared-key").payload.data
        proc, i = shared.split(b":")[:2]
        assert shared == f"{int(proc)}:{int(i)}:".encode() * (50 + 37 * ((int(proc) + int(i)) % 13))
        for p in range(4):
            for j in range(5):
                got = cache.get(f"proc{p}-key{j}")
                assert got.status == status.OK and got.payload.data.startswith(f"{p}:".encode())
    assert cache.info()["entries"] == 1 + 4 * 5
    leftovers = [f for f in tmp_path.rglob("*") if f.is_file() and f.name.endswith(".tmp")]
    assert leftovers == []


def test_info_and_clear(tmp_path):
    cache = CutoutCache(tmp_path)
    assert cache.info() == {
        "directory": str(tmp_path), "entries": 0, "no_coverage": 0, "bytes": 0, "model_inputs": 0,
        "by_backend": {},
    }
    for i in range(3):
        cache.put(key_for(i), ok(JPEG_BYTES))
    cache.put(key_for(3), FetchOutcome(status.NO_COVERAGE))
    cache.put(key_for(4, "hips"), ok(fits_bytes(), "fits"))
    cache.put(key_for(5, "hips"), FetchOutcome(status.NO_COVERAGE))
    info = cache.info()
    assert info["entries"] == 6
    assert info["no_coverage"] == 2
    assert info["by_backend"] == {"hips": 2, "legacysurvey": 4}
    assert info["bytes"] == sum(cache.path(k).stat().st_size for k in cache.keys())
    assert info["bytes"] > 3 * len(JPEG_BYTES)

    # Files that are not cache entries, some of them disguised as entries.
    strangers = [
        tmp_path / "notes.txt",
        tmp_path / "legacysurvey" / "README",
        cache.path(key_for(0)).parent / "keep.me",
        cache.path(key_for(0)).parent / (key_for(99, "hips") + ".cutout"),  # wrong place
        tmp_path / "legacysurvey" / "zz" / (key_for(1) + ".cutout"),  # bad shard name
        tmp_path / "hips" / "00" / ".hidden.cutout",
    ]
    for s in strangers:
        s.parent.mkdir(parents=True, exist_ok=True)
        s.write_text("not mine")
    assert cache.info()["entries"] == 6

    assert cache.clear("hips") == 2
    assert cache.info()["by_backend"] == {"legacysurvey": 4}
    assert cache.clear() == 4
    assert cache.info()["entries"] == 0
    for s in strangers:
        assert s.read_text() == "not mine"
    assert (tmp_path / "CACHEDIR.TAG").exists()
    # The cache still works after clearing (shard directories are recreated).
    cache.put(key_for(0), ok(b"again"))
    assert cache.get(key_for(0)).payload.data == b"again"
    with pytest.raises(ValueError):
        cache.clear("../x")


def test_default_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv(DEFAULT_CACHE_ENV, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    assert CutoutCache().directory == tmp_path / "mine"
    monkeypatch.delenv(DEFAULT_CACHE_ENV)
    d = default_cache_dir()
    assert d.name == "cutouts" and "lsbg-classify" in str(d)


def test_cache_with_backend_keys(tmp_path):
    # Keys made by a real backend are valid and land under its name.
    from lsbg_classify.surveys.base import SurveyBackend

    class Dummy(SurveyBackend):
        name = "dummy"

        def request_url(self, ra, dec):
            return ""

        def download(self, ra, dec):
            return Payload(b"img", "jpeg")

    be = Dummy()
    cache = CutoutCache(tmp_path)
    key = be.cache_key(10.0, -5.0)
    cache.put(key, be.fetch_one(10.0, -5.0))
    assert cache.get(key).payload.data == b"img"
    assert cache.info()["by_backend"] == {"dummy": 1}
    assert os.path.commonpath([cache.path(key), tmp_path]) == str(tmp_path)


# -- issue 11: leftovers of killed writers, caps, links ------------------------------------------


def _leftover(folder, name, age):
    """A temporary file as a killed writer leaves it, last changed ``age`` seconds ago."""
    path = folder / name
    path.write_bytes(b"half a cutout")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_clear_and_a_classification_remove_stale_temp_files(tmp_path):
    cache = CutoutCache(tmp_path)
    cache.put(KEY, ok(JPEG_BYTES))
    shard = cache.path(KEY).parent
    stale = [_leftover(shard, f".{KEY}.abc123.tmp", 2 * 3600),
             _leftover(tmp_path, ".CACHEDIR.TAG.xyz.tmp", 2 * 3600)]
    fresh = _leftover(shard, f".{KEY}.def456.tmp", 60)  # may be a writer at work
    foreign = _leftover(shard, "notes.tmp", 2 * 3600)  # not hidden: not ours
    assert cache.clear(backend="hips") == 0
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and foreign.exists()
    assert cache.get(KEY) is not None


def test_stale_temp_files_removed_at_the_start_of_a_run(tmp_path, weights):
    from astropy.table import Table

    from lsbg_classify import classify_catalog

    cache = CutoutCache(tmp_path)
    cache.put(KEY, ok(JPEG_BYTES))
    leftover = _leftover(cache.path(KEY).parent, f".{KEY}.abc123.tmp", 2 * 3600)
    scored = classify_catalog(Table({"ra": [10.0], "dec": [-45.0]}), backend="simulated",
                              model=weights, cache=tmp_path, progress=False)
    assert list(scored["lsbg_status"]) == ["ok"]
    assert not leftover.exists()


def test_oversized_entry_is_damaged_and_never_read_whole(tmp_path):
    cache = CutoutCache(tmp_path, max_bytes=1000)
    cache.put(KEY, ok(JPEG_BYTES))  # 2 kB: over this cache's cap
    with pytest.warns(CacheCorruptionWarning, match="over the cap"):
        assert cache.get(KEY) is None
    assert not cache.path(KEY).exists()
    big = CutoutCache(tmp_path)
    big.put(KEY, ok(JPEG_BYTES))
    assert big.get(KEY).payload.data == JPEG_BYTES  # within the default cap


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
@pytest.mark.parametrize("level", ["shard", "backend"])
def test_entry_in_a_linked_folder_outside_the_cache_is_left_alone(tmp_path, level):
    cache = CutoutCache(tmp_path / "cache")
    cache.put(KEY, ok(JPEG_BYTES))
    shard = cache.path(KEY).parent
    if level == "backend":
        # The backend folder is the link; the shard inside it is a real folder.
        backend_folder = shard.parent
        elsewhere = tmp_path / "elsewhere"
        backend_folder.rename(elsewhere)
        backend_folder.symlink_to(elsewhere, target_is_directory=True)
        with pytest.warns(CacheCorruptionWarning, match="outside"):
            assert cache.get(KEY) is None
        assert (elsewhere / shard.name / cache.path(KEY).name).exists()
        return
    elsewhere = tmp_path / "elsewhere"
    shard.rename(elsewhere)
    shard.symlink_to(elsewhere, target_is_directory=True)
    with pytest.warns(CacheCorruptionWarning, match="outside"):
        assert cache.get(KEY) is None
    assert (elsewhere / cache.path(KEY).name).exists()  # not removed: not the cache's
    with pytest.warns(CacheCorruptionWarning, match="link out of"):
        cache.put(KEY, ok(JPEG_BYTES + b"new"))
    assert (elsewhere / cache.path(KEY).name).read_bytes().endswith(b"\xff\xd9")


# -- model input memos ----------------------------------------------------------

TAG = "v1-64-0123456789abcdef"


def _pixels(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def test_model_input_round_trip_and_tag(tmp_path):
    cache = CutoutCache(tmp_path)
    payload = Payload(JPEG_BYTES, "jpeg")
    cache.put(KEY, FetchOutcome(status.OK, payload))
    assert cache.get_model_input(KEY, TAG) is None
    cache.put_model_input(KEY, TAG, _pixels(), payload)
    np.testing.assert_array_equal(cache.get_model_input(KEY, TAG), _pixels())
    assert cache.get_model_input(KEY, "v2-64-0123456789abcdef") is None  # other recipe
    info = cache.info()
    assert info["entries"] == 1 and info["model_inputs"] == 1
    assert info["bytes"] == cache.path(KEY).stat().st_size + cache.input_path(KEY).stat().st_size


def test_model_input_goes_stale_with_its_payload(tmp_path):
    cache = CutoutCache(tmp_path)
    old = Payload(JPEG_BYTES, "jpeg")
    cache.put(KEY, FetchOutcome(status.OK, old))
    cache.put_model_input(KEY, TAG, _pixels(), old)
    cache.put(KEY, ok(JPEG_BYTES + b"refetched"))  # a refresh replaced the payload
    assert cache.get_model_input(KEY, TAG) is None
    assert not cache.input_path(KEY).exists()  # the stale memo is gone
    cache.put_model_input(KEY, TAG, _pixels(1), old)  # made from the old payload: never used
    assert cache.get_model_input(KEY, TAG) is None


def test_model_input_of_a_missing_or_damaged_entry_is_not_used(tmp_path):
    cache = CutoutCache(tmp_path)
    payload = Payload(JPEG_BYTES, "jpeg")
    cache.put(KEY, FetchOutcome(status.OK, payload))
    cache.put_model_input(KEY, TAG, _pixels(), payload)
    blob = bytearray(cache.path(KEY).read_bytes())
    blob[-5] ^= 0xFF
    cache.path(KEY).write_bytes(bytes(blob))
    # The memo does not read the payload: only its header's checksum.
    np.testing.assert_array_equal(cache.get_model_input(KEY, TAG), _pixels())
    with pytest.warns(CacheCorruptionWarning, match="damaged cache entry"):
        assert cache.get(KEY) is None
    assert not cache.path(KEY).exists()
    assert cache.get_model_input(KEY, TAG) is None
    cache.put(KEY, FetchOutcome(status.OK, payload))
    header_at = 30
    blob = bytearray(cache.path(KEY).read_bytes())
    blob[header_at] ^= 0xFF
    cache.path(KEY).write_bytes(bytes(blob))
    assert cache.get_model_input(KEY, TAG) is None  # a damaged header: no memo


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_model_input_is_removed_with_a_warning(tmp_path, damage):
    cache = CutoutCache(tmp_path)
    payload = Payload(JPEG_BYTES, "jpeg")
    cache.put(KEY, FetchOutcome(status.OK, payload))
    cache.put_model_input(KEY, TAG, _pixels(), payload)
    path = cache.input_path(KEY)
    blob = bytearray(path.read_bytes())
    if damage == "truncate":
        blob = blob[:-10]
    elif damage == "flip":
        blob[-1] ^= 0xFF
    else:
        blob = bytearray(b"not a memo at all")
    path.write_bytes(bytes(blob))
    with pytest.warns(CacheCorruptionWarning, match=path.name):
        assert cache.get_model_input(KEY, TAG) is None
    assert not path.exists()
    assert cache.get(KEY).payload == payload  # the payload itself is kept


@pytest.mark.parametrize("shape", [[64.0, 64.0, 3.0], "643", [64, 64, -3], [64, 64]])
def test_model_input_with_a_forged_shape_is_damaged(tmp_path, shape):
    from lsbg_classify.pipeline import cache as cache_module

    cache = CutoutCache(tmp_path)
    payload = Payload(JPEG_BYTES, "jpeg")
    cache.put(KEY, FetchOutcome(status.OK, payload))
    fields = {"key": KEY, "tag": TAG, "source": hashlib.sha256(JPEG_BYTES).hexdigest(),
              "shape": shape}
    # Checksums intact: only the shape is wrong.
    path = cache.input_path(KEY)
    path.write_bytes(cache_module._pack(cache_module._INPUT_MAGIC, fields, _pixels().tobytes()))
    with pytest.warns(CacheCorruptionWarning, match=path.name):
        assert cache.get_model_input(KEY, TAG) is None
    assert not path.exists()


def test_delete_and_clear_remove_model_inputs(tmp_path):
    cache = CutoutCache(tmp_path)
    for i in range(3):
        payload = Payload(JPEG_BYTES + bytes([i]), "jpeg")
        cache.put(key_for(i), FetchOutcome(status.OK, payload))
        cache.put_model_input(key_for(i), TAG, _pixels(i), payload)
    assert cache.delete(key_for(0))
    assert not cache.input_path(key_for(0)).exists()
    assert cache.clear() == 2
    assert cache.info()["model_inputs"] == 0
    assert not any(tmp_path.rglob("*.input"))
