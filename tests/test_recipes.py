import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lsbg_classify.pipeline.model import load_model
from lsbg_classify.training.recipes import build_bundled_models

TINY = {"des_train": 48, "des_validation": 16, "des_test": 16, "des_epochs": 4,
        "des_steps_per_epoch": 2, "des_cycle_epochs": 2, "ensemble_members": 2, "distil_cutouts": 24,
        "distil_epochs": 1, "threshold_folds": 2, "hsc_finetune": 16, "hsc_validation": 8,
        "hsc_test": 16, "hsc_epochs": 1, "real_folds": 2}


@pytest.mark.slow
def test_build_models_runs_the_whole_recipe_and_installs_cards(tmp_path):
    rng = np.random.default_rng(0)
    real = (rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8), np.tile([0, 1], 6).astype(np.int8),
            np.array(["random"] * 8 + ["hard"] * 4))
    other = (rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8), np.tile([0, 1], 3).astype(np.int8),
             None)
    cards = build_bundled_models(tmp_path / "work", real_sets={"dev": real, "other": other},
                                 real_finetune=real, ship_finetuned=True,
                                 threshold_set=tuple(a.copy() for a in real),
                                 install_dir=tmp_path / "models", recipe=TINY, verbose=0)
    for name in ("des", "hsc"):
        weights = tmp_path / "models" / f"{name}.weights.h5"
        card = json.loads((tmp_path / "models" / f"{name}.json").read_text())
        assert card["weights_sha256"] == load_model(weights).weights_sha256
        assert card["simulator_version"] and 0 < card["decision_threshold"] < 1
        assert card == json.loads(json.dumps(cards[name]))
        # The installed weights score through their ONNX twin.
        assert load_model(weights).runtime == "onnxruntime" and card["onnx_sha256"]
    des_card = cards["des"]
    # Two snapshots (one per 2-epoch cycle), averaged, then distilled.
    assert des_card["ensemble_members"] == ["snapshot_01.weights.h5", "snapshot_02.weights.h5"]
    assert des_card["snapshot_training"]["epochs_run"] == 4
    # The student only if it kept the last snapshot's simulated validation loss.
    choice = des_card["simulated_sky_model"]
    kept = choice["distilled_val_loss"] <= choice["last_snapshot_val_loss"]
    assert des_card["shipped_step"] == choice["step"] == ("distilled" if kept else "last_snapshot")
    assert des_card["real_finetune"]["initial_weights"] == (
        "best.weights.h5" if kept else "snapshot_02.weights.h5")
    # The fine-tuned network ships, so its threshold comes from the
    # out-of-fold scores of the fine-tuning set, not from the student's.
    assert set(des_card["steps"]) == {"last_snapshot", "ensemble_tta", "distilled",
                                      "real_finetuned_cv_threshold"}
    assert set(des_card["steps"]["real_finetuned_cv_threshold"]) == {"threshold_set_out_of_fold"}
    chosen = des_card["threshold_selection"]
    assert chosen["subset"] == "random" and chosen["n"] == 8 and chosen["scores"] == "out_of_fold"
    assert chosen["threshold"] == des_card["decision_threshold"]
    des = des_card["metrics"]
    # The shipped network saw "dev": out-of-fold metrics stand for it there.
    assert set(des) == {"simulated_des_test", "real_dev_simulated_sky_model",
                        "real_other_simulated_sky_model", "real_other_shipped_model",
                        "real_finetune_crossfit"}
    shipped = load_model(tmp_path / "models" / "des.weights.h5").predict(other[0])
    assert des["real_other_shipped_model"]["all"]["roc_auc"] == pytest.approx(
        roc_auc_score(other[1], shipped), abs=1e-6)
    assert set(des["real_finetune_crossfit"]) == {"all", "random", "hard"}
    assert des["real_finetune_crossfit"]["all"]["n"] == 12
    assert cards["hsc"]["metrics"]["simulated_hsc_test_after_finetune"]["n"] == 16
    # Finished steps are reused: a second call trains nothing new.
    before = [(tmp_path / "work" / d / "training.json").stat().st_mtime for d in ("des", "student")]
    build_bundled_models(tmp_path / "work", recipe=TINY, verbose=0)
    assert [(tmp_path / "work" / d / "training.json").stat().st_mtime
            for d in ("des", "student")] == before
    # Cached scores follow their images: the same step on other cutouts is scored afresh.
    work = tmp_path / "work"
    changed = tuple(a[::-1].copy() for a in real)
    build_bundled_models(work, real_sets={"dev": changed}, recipe=TINY, verbose=0)
    fresh = load_model(work / "student" / "best.weights.h5").predict(changed[0])
    assert np.allclose(np.load(work / "scores" / "distilled_real_dev.npy"), fresh, atol=1e-6)


def test_the_student_ships_only_if_it_kept_the_snapshots_quality(tmp_path):
    from pathlib import Path

    from lsbg_classify.training.recipes import _simulated_sky_model

    members = [Path("snapshot_01.weights.h5"), Path("snapshot_02.weights.h5")]
    record = {"history": {"val_loss": [0.5, 0.4, 0.35, 0.30]}}
    student = Path("student/best.weights.h5")
    step, weights, choice = _simulated_sky_model(record, members, {"best_val_loss": 0.34}, student)
    assert (step, weights) == ("last_snapshot", members[-1]) and "why" in choice
    step, weights, _ = _simulated_sky_model(record, members, {"best_val_loss": 0.29}, student)
    assert (step, weights) == ("distilled", student)
    step, weights, _ = _simulated_sky_model(record, members, None, members[-1])
    assert (step, weights) == ("last_snapshot", members[-1])
