"""The reproduction's data download from the real host (run with ``--remote-data``)."""

import pytest

from lsbg_classify.reproduction import reproduce as rp


@pytest.mark.remote_data
def test_real_baseline_test_csv_has_the_pinned_digest(tmp_path):
    info = rp.download_data(tmp_path, files=["Baseline_test.csv"], log=lambda *a: None)
    assert info["Baseline_test.csv"]["sha256"] == rp.PINNED_SHA256["Baseline_test.csv"]
