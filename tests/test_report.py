"""The reproduction report: one self-contained, escaped HTML file."""

import base64
import re

import numpy as np
import pytest

from lsbg_classify.reproduction.report import PAPER_RESULTS, REPORT_METRICS, write_report
from lsbg_classify.training.evaluate import metrics_table


def _evaluation(title, group, y, prob):
    table = metrics_table(y, prob, n_boot=20)
    return {
        "title": title, "group": group, "n": len(y),
        "metrics": {m: {"value": None if not np.isfinite(v) else float(v),
                        "ci_low": None if not np.isfinite(lo) else float(lo),
                        "ci_high": None if not np.isfinite(hi) else float(hi)}
                    for m, v, lo, hi in zip(table["metric"], table["value"], table["ci_low"],
                                            table["ci_high"])},
        "confusion": {k: int(table.meta[k]) for k in ("tn", "fp", "fn", "tp")},
        "y": [int(v) for v in y], "prob": [float(p) for p in prob],
    }


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(3)
    y = np.array([0, 1] * 20)
    noisy = np.clip(y * 0.6 + rng.uniform(0, 0.4, len(y)), 0, 1)
    history = {"accuracy": [0.5, 0.7, 0.8], "loss": [0.9, 0.6, 0.4],
               "val_accuracy": [0.55, 0.65, 0.75], "val_loss": [0.8, 0.7, 0.5]}
    return {
        "title": "Run <b>1</b> & co",
        "evaluations": {
            "des_cnn": _evaluation("DES test: DeepShadows", "DES test", y, noisy),
            "des_svm": _evaluation("DES test: SVM", "DES test", y, rng.uniform(0, 1, len(y))),
            "hsc_after": _evaluation("HSC test: <script>alert(1)</script>", "HSC test", y, noisy),
        },
        "histories": {
            "des": {"title": "DES training", "history": history},
            # Fine-tuning has no validation set: only training curves.
            "hsc": {"title": "HSC fine-tuning", "history": {"accuracy": [0.6], "loss": [0.7]}},
        },
        "settings": {"seed": 0, "data server": "http://example.org/?a=1&b=<2>"},
        "data_files": {"Baseline_test.csv": {"sha256": "ab" * 32, "verified": "pinned digest"}},
        "notes": ["1 of 11 rows match no master list & were dropped"],
    }


def test_report_is_one_self_contained_file_with_its_figures_beside_it(tmp_path, results):
    path = write_report(results, tmp_path / "out" / "report.html")
    text = path.read_text(encoding="utf-8")
    images = re.findall(r'<img src="([^"]+)"', text)
    # 2 training-curve, 3 confusion-matrix and 2 ROC figures.
    assert len(images) == 7
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    assert not re.search(r'(src|href)="(?!data:)', text), "no external assets"
    pngs = sorted(p.name for p in path.parent.glob("*.png"))
    assert len(pngs) == 7 and all(p.startswith("report_") for p in pngs)
    assert not list(path.parent.glob(".*.part"))


def test_report_escapes_every_string(tmp_path, results):
    text = write_report(results, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>1</b>" not in text and "Run &lt;b&gt;1&lt;/b&gt; &amp; co" in text
    assert "a=1&amp;b=&lt;2&gt;" in text
    assert "match no master list &amp; were dropped" in text


def test_report_shows_metrics_with_intervals_beside_the_papers(tmp_path, results):
    text = write_report(results, tmp_path / "report.html").read_text(encoding="utf-8")
    cnn = results["evaluations"]["des_cnn"]["metrics"]
    for metric, heading in REPORT_METRICS.items():
        assert f"<th>{heading}</th>" in text
        value = cnn[metric]
        assert f"{value['value']:.3f} <span class=\"ci\">[{value['ci_low']:.3f}, " \
               f"{value['ci_high']:.3f}]</span>" in text
    assert f"paper {PAPER_RESULTS['des_cnn']['accuracy']:.3f}" in text  # 0.920
    assert f"paper {PAPER_RESULTS['des_cnn']['roc_auc']:.3f}" in text  # 0.974
    assert f"paper {PAPER_RESULTS['hsc_after']['recall']:.3f}" in text  # 0.932
    assert "Tanoglidis" in text and "ab" * 32 in text


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")  # bootstrap of one class
def test_single_class_evaluation_gets_no_roc_curve(tmp_path, results):
    one_class = dict(results)
    one_class["evaluations"] = {"hsc_before": _evaluation("HSC", "HSC test", np.ones(6, int),
                                                          np.linspace(0.2, 0.9, 6))}
    one_class["histories"] = {}
    text = write_report(one_class, tmp_path / "report.html").read_text(encoding="utf-8")
    assert text.count("<img ") == 1  # the confusion matrix only
    assert "&ndash;" in text  # ROC AUC is undefined


def test_paper_numbers_are_the_published_ones():
    assert PAPER_RESULTS["des_cnn"]["accuracy"] == 0.920
    svm = PAPER_RESULTS["des_svm"]
    assert (svm["accuracy"], svm["roc_auc"]) == (0.819, 0.894)
    assert (PAPER_RESULTS["des_random_forest"]["accuracy"],
            PAPER_RESULTS["des_random_forest"]["roc_auc"]) == (0.797, 0.872)
    assert (PAPER_RESULTS["hsc_before"]["accuracy"], PAPER_RESULTS["hsc_after"]["accuracy"]) == (
        0.821, 0.876)
