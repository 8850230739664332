import numpy as np
import pytest

from lsbg_classify.benchmark import (
    deepshadows_flops_per_image,
    end_to_end_throughput,
    fetch_throughput,
    inference_throughput,
    matmul_peak_flops,
    read_coordinates,
    run_benchmarks,
    simulated_positions,
    warm_cache,
)
from lsbg_classify.cache import CutoutCache
from lsbg_classify.catalog import CatalogError
from lsbg_classify.cli import main
from lsbg_classify.model import build_deepshadows, load_model


def test_flop_count_of_deepshadows_by_hand():
    conv = 2 * 9 * (64 * 64 * 16 * 3 + 32 * 32 * 32 * 16 + 16 * 16 * 64 * 32)
    dense = 2 * (4096 * 1024 + 1024 * 1)
    assert deepshadows_flops_per_image(build_deepshadows()) == conv + dense == 30_803_968


def test_matmul_peak_is_a_positive_rate():
    assert matmul_peak_flops(size=128, repeats=2) > 1e6


def test_fetch_throughput_reports_both_measurements():
    result = fetch_throughput(rows=8, latency=0.05, workers=4)
    assert result["serial"] > 0 and result["concurrent"] > 0
    assert result["ratio"] == result["concurrent"] / result["serial"]


def test_inference_throughput_times_both_paths_and_compares_them(weights):
    result = inference_throughput(weights, images=12, batch_size=5, repeats=2)
    assert result["images_per_s"] > 0 and result["eager_images_per_s"] > 0
    assert result["speedup"] == result["images_per_s"] / result["eager_images_per_s"]
    assert 0 <= result["max_abs_diff"] <= 1e-5
    assert result["batch_size"] == 5 and result["repeats"] == 2


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
    assert result["rows_per_s"] == pytest.approx(6 / result["seconds"])
    assert result["decode_rows_per_s"] > 0


@pytest.mark.parametrize("options, message", [
    ({"e2e_rows": -1}, "--e2e-rows must be 0 or more"),
    ({"e2e_rows": 0, "memory_rows": [10]}, "--memory-rows needs --e2e-rows"),
    ({"memory_rows": [0]}, "--memory-rows must be positive"),
    ({"memory_scored": 0}, "--memory-scored must be positive"),
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
