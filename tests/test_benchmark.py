import numpy as np
import pytest

from lsbg_classify.cli import main
from lsbg_classify.pipeline.cache import CutoutCache
from lsbg_classify.pipeline.catalog.read import CatalogError
from lsbg_classify.pipeline.model import build_deepshadows, load_model
from lsbg_classify.testing.benchmark import (
    architecture_flops,
    batch_sweep,
    decode_throughput,
    deepshadows_flops_per_image,
    end_to_end_throughput,
    fetch_throughput,
    inference_throughput,
    keras_backends,
    matmul_limit,
    matmul_peak_flops,
    read_coordinates,
    run_benchmarks,
    simulated_positions,
    training_throughput,
    warm_cache,
    warm_cache_synthetic,
)


def test_flop_count_of_deepshadows_by_hand():
    conv = 2 * 9 * (64 * 64 * 16 * 3 + 32 * 32 * 32 * 16 + 16 * 16 * 64 * 32)
    dense = 2 * (4096 * 1024 + 1024 * 1)
    assert deepshadows_flops_per_image(build_deepshadows()) == conv + dense == 30_803_968
    assert architecture_flops() == conv + dense  # the same count without Keras


def test_matmul_peak_is_a_positive_rate():
    assert matmul_peak_flops(size=128, repeats=2) > 1e6


def test_matmul_limit_runs_in_a_fresh_process_without_tensorflow():
    result = matmul_limit(size=128, repeats=2)
    assert result["flops"] > 1e6 and result["size"] == 128 and result["repeats"] == 2
    assert result["images_per_s"] == result["flops"] / architecture_flops()
    assert result["blas_threads"] is None or result["blas_threads"] >= 1
    with pytest.raises(ValueError, match="positive"):
        matmul_limit(repeats=0)


def test_fetch_throughput_reports_both_measurements_and_the_back_off():
    result = fetch_throughput(rows=24, latency=0.05, workers=6, limit=2)
    assert result["serial"] > 0 and result["concurrent"] > 0 and result["limited"] > 0
    assert result["ratio"] == result["concurrent"] / result["serial"]
    assert result["limited_429"] >= 1  # six workers met a limit of two
    assert 0 <= result["after_backoff_within"] <= 1


def test_inference_throughput_times_each_runtime_and_compares_them(weights, tmp_path):
    import shutil

    from lsbg_classify.training.onnx_export import write_onnx_twin

    only_keras = inference_throughput(weights, images=12, batch_size=5, repeats=2)
    assert list(only_keras["runtimes"]) == ["keras"] and only_keras["max_abs_diff"] is None
    assert "onnx" in only_keras["missing"]  # untrained weights have no twin
    path = tmp_path / "w.weights.h5"
    shutil.copyfile(weights, path)
    write_onnx_twin(path)
    both = inference_throughput(path, images=12, repeats=2)
    assert set(both["runtimes"]) == {"keras", "onnxruntime"}
    assert all(r["images_per_s"] > 0 for r in both["runtimes"].values())
    # Each runtime at its own fastest batch unless told.
    assert both["runtimes"]["onnxruntime"]["batch_size"] == load_model(path).predict_batch
    assert 0 <= both["max_abs_diff"] <= 1e-5
    assert set(batch_sweep(path, sizes=(4, 8), images=16, repeats=1)) == {4, 8}


def test_decode_throughput_and_the_synthetic_warm_cache(tmp_path, weights):
    ra, dec = simulated_positions(10, seed=6)
    cache = CutoutCache(tmp_path / "cache")
    assert warm_cache_synthetic(ra, dec, cache, distinct=3) == 10
    assert warm_cache_synthetic(ra, dec, cache, distinct=3) == 0  # already warm
    result = end_to_end_throughput(ra, dec, load_model(weights), cache)
    assert result["ok"] == 10  # every position reads from the cache
    from lsbg_classify.surveys import get_backend

    backend = get_backend("simulated")
    payloads = [cache.get(backend.cache_key(r, d)).payload for r, d in zip(ra, dec)]
    decode = decode_throughput(payloads, backend.survey.colour, threads=2)
    assert decode["per_core"] > 0 and decode["all_threads"] > 0 and decode["threads"] == 2


@pytest.mark.slow
@pytest.mark.skipif("tensorflow" not in keras_backends(), reason="needs TensorFlow")
def test_training_throughput_in_a_child_process():
    result = training_throughput("tensorflow", steps=1, batch_size=8)
    assert result["backend"] == "tensorflow" and result["images_per_s"] > 0
    with pytest.raises(RuntimeError, match="Keras backend 'no-such-backend' failed"):
        training_throughput("no-such-backend", steps=1, batch_size=8)


def _deepshadows_like_csv(path, ra, dec):
    # The DeepShadows files start with an unnamed index column: ",ra,dec".
    lines = [",ra,dec"] + [f"{i},{r},{d}" for i, (r, d) in enumerate(zip(ra, dec))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_coordinates_joins_files_in_order(tmp_path):
    a = _deepshadows_like_csv(tmp_path / "a.csv", [10.0, 20.0], [-40.0, -41.0])
    b = _deepshadows_like_csv(tmp_path / "b.csv", [30.0], [-42.0])
    ra, dec = read_coordinates([a, b])
    assert np.array_equal(ra, [10.0, 20.0, 30.0]) and np.array_equal(dec, [-40.0, -41.0, -42.0])
    bad = _deepshadows_like_csv(tmp_path / "bad.csv", [10.0, 400.0], [-40.0, -41.0])
    with pytest.raises(CatalogError, match=r"bad\.csv.*'ra'.*row"):
        read_coordinates([a, bad])


def test_end_to_end_on_a_warm_cache(tmp_path, weights):
    ra, dec = simulated_positions(6, seed=5)
    cache = CutoutCache(tmp_path / "cache")
    with pytest.raises(RuntimeError, match="6 of 6 positions are not in the cache"):
        end_to_end_throughput(ra, dec, load_model(weights), cache)
    assert warm_cache(ra, dec, cache, processes=1) == 6
    assert warm_cache(ra, dec, cache) == 0  # already warm: nothing rendered again
    result = end_to_end_throughput(ra, dec, load_model(weights), cache)
    assert result["rows"] == 6 and result["ok"] == 6
    for run in ("decoding", "model_inputs"):
        assert result[run]["rows_per_s"] == pytest.approx(6 / result[run]["seconds"])
    assert result["same_probabilities"] is True
    assert cache.info()["model_inputs"] == 6  # the first run remembered them
    assert result["decode_rows_per_s"] > 0


@pytest.mark.parametrize("options, message", [
    ({"e2e_rows": -1}, "--e2e-rows must be 0 or more"),
    ({"e2e_rows": 0, "memory_rows": [10]}, "--memory-rows needs --e2e-rows"),
    ({"memory_rows": [0]}, "--memory-rows must be positive"),
    ({"memory_scored": 0}, "--memory-scored must be positive"),
    ({"train_steps": -1}, "--train-steps must be 0 or more"),
])
def test_bad_bench_options_are_refused_before_any_work(options, message, capsys):
    with pytest.raises(ValueError, match=message):
        run_benchmarks(**options)
    assert capsys.readouterr().out == ""


def test_more_rows_than_coordinates_is_an_error_naming_the_option(tmp_path, capsys):
    coords = _deepshadows_like_csv(tmp_path / "few.csv", [10.0, 20.0], [-40.0, -41.0])
    assert main(["bench", "--coords", str(coords), "--e2e-rows", "3"]) == 2
    err = capsys.readouterr().err
    assert "--e2e-rows 3 is more than the 2 positions in --coords" in err
