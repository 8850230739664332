import json

import numpy as np
import pytest

from lsbg_classify.model import load_model
from lsbg_classify.recipes import build_bundled_models

TINY = {"des_cutouts": 48, "des_epochs": 1, "des_patience": None, "hsc_finetune": 16,
        "hsc_validation": 8, "hsc_test": 16, "hsc_epochs": 1, "real_folds": 2}


@pytest.mark.slow
def test_build_models_runs_the_whole_recipe_and_installs_cards(tmp_path):
    rng = np.random.default_rng(0)
    real = (rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8), np.tile([0, 1], 6).astype(np.int8),
            np.array(["random"] * 8 + ["hard"] * 4))
    other = (rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8), np.tile([0, 1], 3).astype(np.int8),
             None)
    cards = build_bundled_models(tmp_path / "work", real_sets={"dev": real, "other": other},
                                 real_finetune=real, ship_finetuned=True,
                                 install_dir=tmp_path / "models", recipe=TINY, verbose=0)
    for name in ("des", "hsc"):
        weights = tmp_path / "models" / f"{name}.weights.h5"
        card = json.loads((tmp_path / "models" / f"{name}.json").read_text())
        assert card["weights_sha256"] == load_model(weights).weights_sha256
        assert card["epochs_run"] == 1 and card["simulator_version"]
        assert card == json.loads(json.dumps(cards[name]))
    des = cards["des"]["metrics"]
    assert set(des) == {"simulated_des_test", "real_dev_simulated_sky_model",
                        "real_other_simulated_sky_model", "real_finetune_crossfit",
                        "real_other_finetuned_model"}
    assert set(des["real_finetune_crossfit"]) == {"all", "random", "hard"}
    assert des["real_finetune_crossfit"]["all"]["n"] == 12
    assert cards["hsc"]["metrics"]["simulated_hsc_test_after_finetune"]["n"] == 16
    # Finished steps are reused: a second call trains nothing new.
    before = (tmp_path / "work" / "des" / "training.json").stat().st_mtime
    build_bundled_models(tmp_path / "work", recipe=TINY, verbose=0)
    assert (tmp_path / "work" / "des" / "training.json").stat().st_mtime == before
