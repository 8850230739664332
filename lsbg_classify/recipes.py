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

from .evaluate import evaluate_model, metrics_table, plot_history
from .model import file_sha256, load_model
from .simulation import SIMULATOR_VERSION, make_training_set
from .training import load_dataset, save_dataset, split_dataset, train
from .training_defaults import FINETUNE_DEFAULTS, TRAIN_DEFAULTS

__all__ = ["RECIPE", "build_bundled_models", "crossfit_finetune", "simulated_shards"]

#: Sizes and settings of the bundled-weights run (the paper's where CPU time allows).
RECIPE = {
    "des_cutouts": 40_000,  # the paper: 30,000 / 5,000 / 5,000
    "des_epochs": TRAIN_DEFAULTS["epochs"],
    "des_patience": 8,
    "des_time_budget_min": None,  # CPU runs: stop before an epoch that would overrun it
    "hsc_finetune": 320,  # the paper
    "hsc_validation": 160,
    "hsc_test": 960,  # the paper
    "hsc_epochs": FINETUNE_DEFAULTS["epochs"],
    "real_folds": 5,
    "seed": 2021,
}


#: Cutouts per stored shard of a simulated set: an interrupted render loses
#: at most one shard, and shards are reused by every later run.
SHARD_SIZE = 10_000


def _dataset(path, n, survey, seed, workers):
    if not path.exists():
        X, y = make_training_set(n, survey=survey, seed=seed, randomize=True, workers=workers)
        save_dataset(path, X, y)
    return load_dataset(path)[:2]


def simulated_shards(folder, n, survey, seed, workers=2, shard_size=SHARD_SIZE):
    """Render (or reuse) a simulated set as uint8 shards and load it.

    Shard ``i`` holds cutouts drawn with seed ``seed * 1000 + i``, so the
    set is the same whatever was already on disk and in whatever sittings
    it was rendered.

    Parameters
    ----------
    folder : path-like
        Holds ``shard_000.npz``, ``shard_001.npz``, ...
    n : int
        Cutouts in all (balanced LSBGs/artifacts within each shard).
    survey : str
        ``"des"`` or ``"hsc"``.
    seed : int
        Seed of the set.
    workers : int
        Rendering processes.
    shard_size : int
        Cutouts per shard (the last may be smaller).

    Returns
    -------
    X : numpy.ndarray, shape (n, 64, 64, 3), uint8
    y : numpy.ndarray, shape (n,), int8
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    X = np.empty((n, 64, 64, 3), np.uint8)
    y = np.empty(n, np.int8)
    for i, start in enumerate(range(0, n, shard_size)):
        size = min(shard_size, n - start)
        path = folder / f"shard_{i:03d}.npz"
        if path.exists():
            Xs, ys, _ = load_dataset(path)
        if not path.exists() or len(ys) != size:
            Xs, ys = make_training_set(size, survey=survey, seed=seed * 1000 + i, randomize=True,
                                       workers=workers)
            save_dataset(path, Xs, ys)
        X[start:start + size], y[start:start + size] = Xs, ys
    return X, y


def _metrics(table):
    row = {m: float(v) for m, v in zip(table["metric"], table["value"])}
    row["intervals_95"] = {m: [float(lo), float(hi)]
                           for m, lo, hi in zip(table["metric"], table["ci_low"], table["ci_high"])}
    row.update({k: int(table.meta[k]) for k in ("tn", "fp", "fn", "tp", "n")})
    return row


def crossfit_finetune(initial_weights, X, y, work_dir, folds=5, seed=0, verbose=0,
                      **finetune_options):
    """Honest scores for fine-tuning on a small real set: cross-fitting.

    The set is cut into ``folds`` stratified parts; for each part the model
    is fine-tuned on the others and scores the part it has not seen.  The
    out-of-fold probabilities measure what fine-tuning on such a set buys
    on new cutouts; a final model is then fine-tuned on the whole set.

    Parameters
    ----------
    initial_weights : path-like
        Weights to start from (the simulated-sky DES model).
    X, y : numpy.ndarray
        Real labelled cutouts, uint8 (n, 64, 64, 3), and 0/1 labels.
    work_dir : path-like
        One sub-folder per fold and ``all/`` for the final model.
    folds : int
        Number of parts.
    **finetune_options
        ``epochs``, ``batch_size``, ``learning_rate`` (default: the
        paper's fine-tuning settings).

    Returns
    -------
    oof_prob : numpy.ndarray
        Out-of-fold LSBG probabilities, one per cutout.
    final_weights : pathlib.Path
        Weights fine-tuned on the whole set.
    """
    from sklearn.model_selection import StratifiedKFold

    options = {**FINETUNE_DEFAULTS, **finetune_options}
    work = Path(work_dir)
    oof = np.full(len(y), np.nan, np.float32)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (fit_rows, held_rows) in enumerate(splitter.split(X, y)):
        fold_dir = work / f"fold{k}"
        if not (fold_dir / "training.json").exists():
            train(X[fit_rows], y[fit_rows], None, None, fold_dir, initial_weights=initial_weights,
                  seed=seed + k, verbose=verbose, **options)
        oof[held_rows] = load_model(fold_dir / "best.weights.h5").predict(X[held_rows])
    final = work / "all"
    if not (final / "training.json").exists():
        train(X, y, None, None, final, initial_weights=initial_weights, seed=seed, verbose=verbose,
              **options)
    return oof, final / "best.weights.h5"


def _subset_metrics(y, prob, selection, seed):
    """Metrics on the whole set and on each selection subset."""
    out = {"all": _metrics(metrics_table(y, prob, seed=seed))}
    if selection is not None:
        for name in np.unique(selection):
            rows = selection == name
            out[str(name)] = _metrics(metrics_table(y[rows], prob[rows], seed=seed))
    return out


def build_bundled_models(work_dir, real_sets=None, real_finetune=None, ship_finetuned=False,
                         install_dir=None, workers=2, recipe=None, verbose=2):
    """Make the DES and HSC weights from scratch.

    Parameters
    ----------
    work_dir : path-like
        Data sets, checkpoints, histories and figures go here; finished
        steps are reused, so an interrupted run resumes.
    real_sets : dict, optional
        Name → (X, y, selection or None) of real labelled cutouts to score
        with the simulated-sky DES model; metrics go into the card.
    real_finetune : tuple, optional
        (X, y, selection or None) real labelled DES cutouts.  The DES model
        is then fine-tuned on them (paper's fine-tuning settings) and its
        accuracy on new real cutouts estimated by cross-fitting
        (:func:`crossfit_finetune`).
    ship_finetuned : bool
        Ship the model fine-tuned on all of ``real_finetune`` as ``des``
        instead of the simulated-sky model.
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
              patience=r["des_patience"], seed=seed, verbose=verbose,
              time_budget=60 * r["des_time_budget_min"] if r["des_time_budget_min"] else None)
    des_record = json.loads((des_dir / "training.json").read_text())
    plot_history(des_record["history"], des_dir / "history.png")
    des_sim_weights = des_dir / "best.weights.h5"
    des_model = load_model(des_sim_weights)
    des_test, _ = evaluate_model(des_model, X[te], y[te], des_dir, label="simulated_des_test")
    des_metrics = {"simulated_des_test": _metrics(des_test)}
    for name, (Xr, yr, selection) in (real_sets or {}).items():
        prob = des_model.predict(Xr)
        des_metrics[f"real_{name}_simulated_sky_model"] = _subset_metrics(yr, prob, selection, seed)

    shipped_des = des_sim_weights
    if real_finetune is not None:
        Xr, yr, selection = real_finetune
        oof, finetuned = crossfit_finetune(des_sim_weights, Xr, yr, work / "des_real_finetune",
                                           folds=r["real_folds"], seed=seed)
        if ship_finetuned:
            shipped_des = finetuned
        des_metrics["real_finetune_crossfit"] = _subset_metrics(yr, oof, selection, seed)
        finetuned_model = load_model(finetuned)
        for name, (Xo, yo, sel) in (real_sets or {}).items():
            if Xo.shape == Xr.shape and np.array_equal(Xo, Xr):
                continue  # the fine-tuning set itself: only out-of-fold scores are honest
            des_metrics[f"real_{name}_finetuned_model"] = _subset_metrics(
                yo, finetuned_model.predict(Xo), sel, seed)
        des_record["real_finetune"] = {
            "n": int(len(yr)), "folds": r["real_folds"], **FINETUNE_DEFAULTS,
            "shipped": bool(ship_finetuned),
            "note": "real_finetune_crossfit metrics are out-of-fold (each cutout scored by a "
                    "model fine-tuned on the other folds, never on it)"}

    hsc_n = r["hsc_finetune"] + r["hsc_validation"] + r["hsc_test"]
    Xh, yh = _dataset(work / "hsc_sim.npz", hsc_n, "hsc", seed + 1, workers)
    ft = np.arange(r["hsc_finetune"])
    hv = np.arange(r["hsc_finetune"], r["hsc_finetune"] + r["hsc_validation"])
    ht = np.arange(r["hsc_finetune"] + r["hsc_validation"], hsc_n)
    hsc_dir = work / "hsc"
    before, _ = evaluate_model(des_model, Xh[ht], yh[ht], hsc_dir, label="simulated_hsc_test_before")
    if not (hsc_dir / "training.json").exists():
        train(Xh[ft], yh[ft], Xh[hv], yh[hv], hsc_dir, initial_weights=des_sim_weights,
              epochs=r["hsc_epochs"], batch_size=FINETUNE_DEFAULTS["batch_size"],
              learning_rate=FINETUNE_DEFAULTS["learning_rate"], seed=seed, verbose=verbose)
    hsc_record = json.loads((hsc_dir / "training.json").read_text())
    plot_history(hsc_record["history"], hsc_dir / "history.png")
    after, _ = evaluate_model(load_model(hsc_dir / "best.weights.h5"), Xh[ht], yh[ht], hsc_dir,
                              label="simulated_hsc_test_after")

    common = {"simulator_version": SIMULATOR_VERSION, "recipe": r,
              "command": "lsbg-classify build-models"}
    cards = {
        "des": {**des_record, **common,
                "training_data": f"simulated DES g,r,z sky, {len(tr)} train / {len(va)} validation"
                + ("; then fine-tuned on real labelled DES cutouts" if shipped_des != des_sim_weights
                   else ""),
                "metrics": des_metrics},
        "hsc": {**hsc_record, **common,
                "training_data": f"simulated-sky DES model fine-tuned on {len(ft)} simulated HSC "
                                 "g,r,i cutouts",
                "metrics": {"simulated_hsc_test_before_finetune": _metrics(before),
                            "simulated_hsc_test_after_finetune": _metrics(after)}},
    }
    shipped = {"des": shipped_des, "hsc": hsc_dir / "best.weights.h5"}
    for name, card in cards.items():
        card.pop("history", None)
        # Checkpoints carry the optimiser's state too; ship the layer weights alone.
        slim = work / f"{name}.weights.h5"
        load_model(shipped[name]).network.save_weights(slim)
        card["weights_sha256"] = file_sha256(slim)
        (work / f"{name}_card.json").write_text(json.dumps(card, indent=1))
        if install_dir is not None:
            dest = Path(install_dir)
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(slim, dest / f"{name}.weights.h5")
            (dest / f"{name}.json").write_text(json.dumps(card, indent=1))
    return cards
