
import astropy.units as u
import numpy as np
import pytest
from astropy.table import MaskedColumn, Table

from lsbg_classify import classify_catalog, status
from lsbg_classify.pipeline.cache import CutoutCache
from lsbg_classify.pipeline.catalog.read import CatalogError
from lsbg_classify.pipeline.model import load_model
from lsbg_classify.pipeline.scoring import fetch_images, score_positions
from lsbg_classify.surveys import FetchError, Payload, get_backend
from lsbg_classify.surveys.base import SurveyBackend
from lsbg_classify.testing.loopback import LoopbackViewer


@pytest.fixture(scope="module")
def untrained_model(weights):
    return load_model(weights)


@pytest.fixture
def candidates():
    table = Table()
    table["name"] = ["a", "b", "c", "d", "e"]
    table["RA"] = [10.5, 20.25, 30.125, 40.0, 50.0] * u.deg
    table["DEC"] = [-45.0, -50.5, -40.0, -55.0, -42.0] * u.deg
    table["mag"] = MaskedColumn([20.1, 21.0, 0.0, 22.5, 19.0], mask=[0, 0, 1, 0, 0], unit=u.mag)
    table.meta["SURVEY"] = "my catalog"
    return table


class CountingBackend(SurveyBackend):
    """Simulated images, counting downloads; optionally failing or broken."""

    name = "counting"
    remote = False

    def __init__(self, survey="des", fail=(), garbage=()):
        super().__init__(survey)
        self.inner = get_backend("simulated", survey=survey)
        self.calls = 0
        self.fail, self.garbage = set(fail), set(garbage)

    def request_url(self, ra, dec):
        return self.inner.request_url(ra, dec)

    def download(self, ra, dec):
        self.calls += 1
        if round(ra, 3) in self.fail:
            raise FetchError("server said 503 five times")
        if round(ra, 3) in self.garbage:
            return Payload(b"<html>oops</html>", "jpeg")
        return self.inner.download(ra, dec)


def test_output_keeps_the_input_and_adds_three_columns(candidates, untrained_model, tmp_path):
    before = candidates.copy()
    scored = classify_catalog(candidates, backend="simulated", model=untrained_model,
                              cache=tmp_path, progress=False)
    assert scored.colnames == before.colnames + ["lsbg_prob", "lsbg_class", "lsbg_status"]
    for name in before.colnames:
        assert np.all(scored[name] == before[name])
        assert scored[name].unit == before[name].unit
    assert list(scored["mag"].mask) == [False, False, True, False, False]
    assert scored.meta["SURVEY"] == "my catalog"
    assert scored["lsbg_prob"].dtype == np.float32
    assert np.all((scored["lsbg_prob"] >= 0) & (scored["lsbg_prob"] <= 1))
    assert list(scored["lsbg_status"]) == ["ok"] * 5
    provenance = scored.meta["LSBG_CLASSIFY"]
    assert provenance["weights_sha256"] == untrained_model.weights_sha256
    assert provenance["survey"] == "des" and provenance["threshold"] == 0.5
    # The input table is untouched.
    assert candidates.colnames == before.colnames


def test_class_follows_threshold(candidates, untrained_model, tmp_path):
    prob = classify_catalog(candidates, backend="simulated", model=untrained_model, cache=tmp_path,
                            progress=False)["lsbg_prob"]
    threshold = float(np.median(prob))
    scored = classify_catalog(candidates, backend="simulated", model=untrained_model,
                              cache=tmp_path, threshold=threshold, progress=False)
    assert np.array_equal(np.asarray(scored["lsbg_class"]), (np.asarray(prob) >= threshold).astype(int))
    with pytest.raises(ValueError, match="threshold"):
        classify_catalog(candidates, backend="simulated", model=untrained_model, threshold=1.5)


def test_invalid_positions_raise_or_flag(candidates, untrained_model, tmp_path):
    candidates["DEC"][1] = 95.0
    candidates["RA"][3] = np.nan
    with pytest.raises(CatalogError, match="DEC") as excinfo:
        classify_catalog(candidates, backend="simulated", model=untrained_model, cache=tmp_path)
    assert "1" in str(excinfo.value)
    scored = classify_catalog(candidates, backend="simulated", model=untrained_model,
                              cache=tmp_path, on_invalid="flag", progress=False)
    assert list(scored["lsbg_status"]) == ["ok", "invalid_position", "ok", "invalid_position", "ok"]
    assert list(scored["lsbg_prob"].mask) == [False, True, False, True, False]


def test_statuses_for_failures_and_what_the_cache_remembers(untrained_model, tmp_path):
    table = Table({"ra": [10.0, 20.0, 30.0, 40.0], "dec": [-45.0, -45.0, 89.5, -45.0]})
    backend = CountingBackend(fail={20.0}, garbage={40.0})
    cache = CutoutCache(tmp_path)
    scored = classify_catalog(table, backend=backend, model=untrained_model, cache=cache,
                              progress=False)
    assert list(scored["lsbg_status"]) == ["ok", "fetch_failed", "no_coverage", "bad_image"]
    assert backend.calls == 4
    # ok, no_coverage and the (undecodable) payload are cached; the failure is retried.
    classify_catalog(table, backend=backend, model=untrained_model, cache=cache, progress=False)
    assert backend.calls == 5
    classify_catalog(table, backend=backend, model=untrained_model, cache=cache, refresh=True,
                     progress=False)
    assert backend.calls == 9


def test_same_probabilities_whatever_the_batching_and_concurrency(untrained_model, tmp_path):
    rng = np.random.default_rng(3)
    ra, dec = rng.uniform(0, 60, 12), rng.uniform(-60, -40, 12)
    backend = get_backend("simulated")
    reference, st, _ = score_positions(ra, dec, backend, untrained_model, cache=False,
                                       batch_size=256, workers=1, progress=False)
    again, _, _ = score_positions(ra, dec, backend, untrained_model, cache=tmp_path, batch_size=5,
                                  workers=4, progress=False)
    assert np.all(st == status.OK)
    assert np.allclose(reference, again, atol=1e-6)
    images = fetch_images(ra, dec, backend, cache=tmp_path, progress=False).images
    assert np.allclose(untrained_model.predict(images), reference, atol=1e-6)


@pytest.mark.parametrize("threads", [2, 5])
def test_decoding_in_threads_changes_nothing(untrained_model, tmp_path, monkeypatch, threads):
    from lsbg_classify.pipeline import scoring

    rng = np.random.default_rng(8)
    ra, dec = np.round(rng.uniform(0, 60, 30), 3), rng.uniform(-60, -40, 30)
    dec[4] = 89.5  # outside the footprint
    backend = CountingBackend(fail={ra[7]}, garbage={ra[11], ra[12]})
    cache = CutoutCache(tmp_path)
    monkeypatch.setattr(scoring, "decode_threads", lambda: 1)
    serial = score_positions(ra, dec, backend, untrained_model, cache=cache, batch_size=7,
                             workers=1, progress=False)
    monkeypatch.setattr(scoring, "decode_threads", lambda: threads)
    monkeypatch.setattr(scoring, "DECODE_AHEAD_PER_THREAD", 2)
    threaded = score_positions(ra, dec, backend, untrained_model, cache=cache, batch_size=7,
                               workers=1, progress=False)
    assert backend.calls == 31  # every row once, and the failed row again
    assert list(serial[1]).count("ok") == 26
    assert serial[1][4] == "no_coverage" and serial[1][7] == "fetch_failed"
    assert list(serial[1][[11, 12]]) == ["bad_image"] * 2
    # Same rows in the same batches: bit-identical probabilities.
    assert np.array_equal(serial[0], threaded[0], equal_nan=True)
    assert np.array_equal(serial[1], threaded[1])
    assert serial[2].keys() == threaded[2].keys()


def test_legacysurvey_backend_through_a_loopback_viewer(candidates, untrained_model, tmp_path):
    with LoopbackViewer() as viewer:
        scored = classify_catalog(candidates, survey="des", backend="legacysurvey",
                                  backend_options={"base_url": viewer.url},
                                  model=untrained_model, cache=tmp_path, workers=3, progress=False)
        assert viewer.counts["cutout.jpg"] == 5
        assert list(scored["lsbg_status"]) == ["ok"] * 5
        assert scored.meta["LSBG_CLASSIFY"]["layer"] == "des-dr1"
        # Second run: everything from the cache, no request.
        classify_catalog(candidates, survey="des", backend="legacysurvey",
                         backend_options={"base_url": viewer.url}, model=untrained_model,
                         cache=tmp_path, progress=False)
        assert viewer.counts["cutout.jpg"] == 5


def test_jpeg_and_fits_modes_agree_on_the_simulated_sky(candidates, untrained_model):
    probs = {}
    for fmt in ("jpeg", "fits"):
        backend = get_backend("simulated", image_format=fmt)
        probs[fmt] = classify_catalog(candidates, backend=backend, model=untrained_model,
                                      cache=False, progress=False)["lsbg_prob"]
    assert np.allclose(probs["jpeg"], probs["fits"], atol=0.05)


def test_default_threshold_is_the_model_cards_and_tta_averages_eight_views(tmp_path):
    import json

    import numpy as np
    from astropy.table import Table

    from lsbg_classify.pipeline.classify import classify_catalog
    from lsbg_classify.pipeline.model import build_deepshadows, dihedral_views, load_model

    network = build_deepshadows()
    weights = tmp_path / "mine.weights.h5"
    network.save_weights(weights)
    (tmp_path / "mine.json").write_text(json.dumps({"decision_threshold": 0.0}))
    table = Table({"ra": [10.0, 10.01, 10.02], "dec": [-30.0, -30.0, -30.0]})
    scored = classify_catalog(table, backend="simulated", model=weights, cache=False,
                              progress=False)
    # Threshold 0 from the card: every scored row is class 1.
    assert scored.meta["LSBG_CLASSIFY"]["threshold"] == 0.0
    assert list(scored["lsbg_class"]) == [1, 1, 1]
    explicit = classify_catalog(table, backend="simulated", model=weights, cache=False,
                                progress=False, threshold=1.0)
    assert explicit.meta["LSBG_CLASSIFY"]["threshold"] == 1.0
    # TTA: the mean of the model's answers on the 8 views of each image.
    model = load_model(weights)
    images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    views = list(dihedral_views(images))
    assert len(views) == 8 and len({v.tobytes() for v in views[:1] + views[1:]}) == 8
    expected = np.mean([model.predict(np.ascontiguousarray(v)) for v in views], axis=0)
    assert np.allclose(model.with_tta().predict(images), expected, atol=1e-6)
    assert not model.tta
    with_tta = classify_catalog(table, backend="simulated", model=weights, cache=False,
                                progress=False, tta=True)
    assert with_tta.meta["LSBG_CLASSIFY"]["tta"]
    plain_prob = np.asarray(scored["lsbg_prob"])
    assert not np.allclose(np.asarray(with_tta["lsbg_prob"]), plain_prob, atol=1e-7)


def test_worker_caches_keep_one_backend_per_configuration_until_cleared(monkeypatch):
    from lsbg_classify.pipeline import partitions

    partitions.clear_worker_caches()
    first = partitions._worker_backend("simulated", "des", ())
    assert partitions._worker_backend("simulated", "des", ()) is first
    closed = []
    monkeypatch.setattr(first, "close", lambda: closed.append(first))
    partitions.clear_worker_caches()
    assert closed == [first]
    assert partitions._worker_backend("simulated", "des", ()) is not first
    partitions.clear_worker_caches()


def test_worker_caches_close_the_least_recently_used_backend(monkeypatch):
    from lsbg_classify.pipeline import partitions

    partitions.clear_worker_caches()
    monkeypatch.setattr(partitions, "WORKER_BACKENDS", 2)
    closed = []
    seeds = [(("seed", s),) for s in range(3)]
    opened = [partitions._worker_backend("simulated", "des", seeds[0])]
    monkeypatch.setattr(opened[0], "close", lambda: closed.append(0))
    opened.append(partitions._worker_backend("simulated", "des", seeds[1]))
    opened.append(partitions._worker_backend("simulated", "des", seeds[2]))
    assert closed == [0]
    assert partitions._worker_backend("simulated", "des", seeds[2]) is opened[2]
    partitions.clear_worker_caches()


def test_a_warm_cache_gives_model_inputs_without_decoding(untrained_model, tmp_path, monkeypatch):
    from lsbg_classify.pipeline import scoring

    decoded = []
    real = scoring.prepare_payload_uint8
    monkeypatch.setattr(scoring, "prepare_payload_uint8",
                        lambda *args: decoded.append(1) or real(*args))
    backend = CountingBackend()
    rng = np.random.default_rng(11)
    ra, dec = rng.uniform(0, 60, 9), rng.uniform(-60, -40, 9)
    cold = score_positions(ra, dec, backend, untrained_model, cache=tmp_path, progress=False)
    assert len(decoded) == 9 and CutoutCache(tmp_path).info()["model_inputs"] == 9
    warm = score_positions(ra, dec, backend, untrained_model, cache=tmp_path, progress=False)
    assert len(decoded) == 9 and backend.calls == 9  # neither fetched nor decoded again
    np.testing.assert_array_equal(warm.prob, cold.prob)
    images = fetch_images(ra, dec, backend, cache=tmp_path, progress=False).images
    assert len(decoded) == 9
    uncached = fetch_images(ra, dec, backend, cache=False, progress=False).images
    np.testing.assert_array_equal(images, uncached)
    assert len(decoded) == 18 and backend.calls == 18
    # A refresh fetches and decodes again, and remembers the new inputs.
    score_positions(ra, dec, backend, untrained_model, cache=tmp_path, refresh=True,
                    progress=False)
    assert len(decoded) == 27 and backend.calls == 27
    score_positions(ra, dec, backend, untrained_model, cache=tmp_path, progress=False)
    assert len(decoded) == 27 and backend.calls == 27
