"""How the bundled weights are made: one function, one command.

``lsbg-classify build-models`` runs the paper's protocol on the simulated
sky: simulate a balanced DES set and split it like the paper (75/12.5/12.5),
train DeepShadows (Adadelta lr 0.1, batch 64), test; simulate HSC cutouts,
test the DES model on them, fine-tune it on 320 (Adadelta lr 0.005,
batch 16) and test on 960; then, when a real labelled set is given, score
it too.  Every number goes into a model card (JSON) shipped beside the
weights.
"""

import json
import shutil
from pathlib import Path

import numpy as np

from .evaluate import evaluate_model, plot_history
from .model import load_model
from .simulation import SIMULATOR_VERSION, make_training_set
from .training import load_dataset, save_dataset, split_dataset, train
from .training_defaults import FINETUNE_DEFAULTS, TRAIN_DEFAULTS

__all__ = ["RECIPE", "build_bundled_models"]

#: Sizes and settings of the bundled-weights run (the paper's where CPU time allows).
RECIPE = {
    "des_cutouts": 40_000,  # the paper: 30,000 / 5,000 / 5,000
    "des_epochs": TRAIN_DEFAULTS["epochs"],
    "des_patience": 8,
    "hsc_finetune": 320,  # the paper
    "hsc_validation": 160,
    "hsc_test": 960,  # the paper
    "hsc_epochs": FINETUNE_DEFAULTS["epochs"],
    "seed": 2021,
}


def _dataset(path, n, survey, seed, workers):
    if not path.exists():
        X, y = make_training_set(n, survey=survey, seed=seed, randomize=True, workers=workers)
        save_dataset(path, X, y)
    return load_dataset(path)[:2]


def _metrics(table):
    row = {m: float(v) for m, v in zip(table["metric"], table["value"])}
    row["intervals_95"] = {m: [float(lo), float(hi)]
                           for m, lo, hi in zip(table["metric"], table["ci_low"], table["ci_high"])}
    row.update({k: int(table.meta[k]) for k in ("tn", "fp", "fn", "tp", "n")})
    return row


def build_bundled_models(work_dir, real_sets=None, install_dir=None, workers=2, recipe=None,
                         verbose=2):
    """Make the DES and HSC weights from scratch.

    Parameters
    ----------
    work_dir : path-like
        Data sets, checkpoints, histories and figures go here; finished
        steps are reused, so an interrupted run resumes.
    real_sets : dict, optional
        Name → (X, y) of real labelled cutouts to score with the DES model
        (e.g. the development set); their metrics go into the card.
    install_dir : path-like, optional
        Copy ``des.weights.h5``/``hsc.weights.h5`` and their cards here
        (the package's ``data/models`` to replace the bundled weights).
    workers : int
        Processes for simulating cutouts.
    recipe : dict, optional
        Overrides of :data:`RECIPE` (e.g. fewer cutouts for a quick run).

    Returns
    -------
    dict
        The DES and HSC model cards.
    """
    r = {**RECIPE, **(recipe or {})}
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    seed = r["seed"]

    X, y = _dataset(work / "des_sim.npz", r["des_cutouts"], "des", seed, workers)
    tr, va, te = split_dataset(len(y), seed=seed)
    des_dir = work / "des"
    if not (des_dir / "training.json").exists():
        train(X[tr], y[tr], X[va], y[va], des_dir, epochs=r["des_epochs"],
              patience=r["des_patience"], seed=seed, verbose=verbose)
    des_record = json.loads((des_dir / "training.json").read_text())
    plot_history(des_record["history"], des_dir / "history.png")
    des_model = load_model(des_dir / "best.weights.h5")
    des_model.name = "des"
    des_test, _ = evaluate_model(des_model, X[te], y[te], des_dir, label="simulated_des_test")

    hsc_n = r["hsc_finetune"] + r["hsc_validation"] + r["hsc_test"]
    Xh, yh = _dataset(work / "hsc_sim.npz", hsc_n, "hsc", seed + 1, workers)
    ft = np.arange(r["hsc_finetune"])
    hv = np.arange(r["hsc_finetune"], r["hsc_finetune"] + r["hsc_validation"])
    ht = np.arange(r["hsc_finetune"] + r["hsc_validation"], hsc_n)
    hsc_dir = work / "hsc"
    before, _ = evaluate_model(des_model, Xh[ht], yh[ht], hsc_dir, label="simulated_hsc_test_before")
    if not (hsc_dir / "training.json").exists():
        train(Xh[ft], yh[ft], Xh[hv], yh[hv], hsc_dir, initial_weights=des_dir / "best.weights.h5",
              epochs=r["hsc_epochs"], batch_size=FINETUNE_DEFAULTS["batch_size"],
              learning_rate=FINETUNE_DEFAULTS["learning_rate"], seed=seed, verbose=verbose)
    hsc_record = json.loads((hsc_dir / "training.json").read_text())
    plot_history(hsc_record["history"], hsc_dir / "history.png")
    hsc_model = load_model(hsc_dir / "best.weights.h5")
    hsc_model.name = "hsc"
    after, _ = evaluate_model(hsc_model, Xh[ht], yh[ht], hsc_dir, label="simulated_hsc_test_after")

    real = {}
    for name, (Xr, yr) in (real_sets or {}).items():
        table, _ = evaluate_model(des_model, Xr, yr, des_dir, label=f"real_{name}")
        real[name] = _metrics(table)

    common = {"simulator_version": SIMULATOR_VERSION, "recipe": r,
              "command": "lsbg-classify build-models"}
    cards = {
        "des": {**des_record, **common,
                "training_data": f"simulated DES g,r,z sky, {len(tr)} train / {len(va)} validation",
                "metrics": {"simulated_des_test": _metrics(des_test), **{f"real_{k}": v for k, v in real.items()}}},
        "hsc": {**hsc_record, **common,
                "training_data": f"DES model fine-tuned on {len(ft)} simulated HSC g,r,i cutouts",
                "metrics": {"simulated_hsc_test_before_finetune": _metrics(before),
                            "simulated_hsc_test_after_finetune": _metrics(after)}},
    }
    for name, folder in (("des", des_dir), ("hsc", hsc_dir)):
        cards[name].pop("history", None)
        (folder / "card.json").write_text(json.dumps(cards[name], indent=1))
        if install_dir is not None:
            dest = Path(install_dir)
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / "best.weights.h5", dest / f"{name}.weights.h5")
            (dest / f"{name}.json").write_text(json.dumps(cards[name], indent=1))
    return cards
