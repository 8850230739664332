from lsbg_classify.benchmark import deepshadows_flops_per_image, fetch_throughput, matmul_peak_flops
from lsbg_classify.model import build_deepshadows


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
