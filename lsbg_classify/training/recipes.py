"""How the bundled weights are made: one function, one command.

``lsbg-classify build-models`` runs the paper's network and optimiser on
the simulated sky, then spends the remaining effort where it pays on real
cutouts:

1. render (once, as reusable uint8 shards) balanced simulated DES training,
   validation and test sets;
2. train DeepShadows (Adadelta, batch 64) with cosine learning-rate cycles,
   keeping the weights at the end of each cycle (a snapshot ensemble from
   one resumable run);
3. average the last ``ensemble_members`` snapshots with 8-fold flip/rotation
   test-time augmentation: the teacher;
4. distil the teacher into one DeepShadows network (soft targets on
   simulated cutouts), so scoring costs one network;
5. choose the class threshold by cross-validation on real labelled cutouts;
6. fine-tune the DES network on 320 simulated HSC cutouts (the paper's
   protocol) and test on 960.

Every number goes into a model card (JSON) shipped beside the weights;
finished steps are reused, so an interrupted run resumes.
"""

import json
import shutil
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, atomic_write_bytes
from ..pipeline.model import DEFAULT_DECISION_THRESHOLD, file_sha256, load_model, predict_tta
from ..resume import fingerprint, load_record, save_record
from ..simulation.conditions import SIMULATOR_VERSION
from ..simulation.training_set import make_training_set
from .defaults import FINETUNE_DEFAULTS, TRAIN_DEFAULTS
from .evaluate import crossvalidated_threshold, evaluate_model, metrics_table, plot_history
from .onnx_export import write_onnx_twin
from .train import load_dataset, save_dataset, train

__all__ = ["RECIPE", "build_bundled_models", "crossfit_finetune", "simulated_shards"]

#: Sizes and settings of the bundled-weights run.
RECIPE = {
    "des_train": 100_000,
    "des_validation": 5_000,
    "des_test": 5_000,
    "des_epochs": 30,
    "des_steps_per_epoch": 625,  # 40,000 images: checkpoints and validation every 4-5 min
    "des_cycle_epochs": 3,  # one snapshot every 120,000 images
    "des_learning_rate": TRAIN_DEFAULTS["learning_rate"],
    "des_min_learning_rate": 0.001,
    "des_patience": None,
    "des_time_budget_min": None,  # CPU runs: stop before an epoch that would overrun it
    "ensemble_members": 5,  # the last snapshots
    "distil_cutouts": 30_000,
    "distil_epochs": 3,
    "distil_learning_rate": 0.002,  # 0.02 left the student worse than its start on simulated validation
    "threshold_subset": "random",  # rows of the threshold set that choose it
    "threshold_folds": 5,
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


def _trained_from(folder, initial_weights):
    """Whether ``folder`` holds a finished training that started from ``initial_weights``.

    A finished training that started elsewhere (the recipe now starts it
    from other weights) is removed, so that it is run again rather than
    reused; an unfinished one is left for :func:`train` to resume.
    """
    record = load_record(Path(folder) / "training.json")
    if record is None:
        return False
    if record.get("initial_weights_sha256") == file_sha256(initial_weights):
        return True
    shutil.rmtree(folder)
    return False


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
        if not _trained_from(fold_dir, initial_weights):
            train(X[fit_rows], y[fit_rows], None, None, fold_dir, initial_weights=initial_weights,
                  seed=seed + k, verbose=verbose, **options)
        oof[held_rows] = load_model(fold_dir / "best.weights.h5").predict(X[held_rows])
    final = work / "all"
    if not _trained_from(final, initial_weights):
        train(X, y, None, None, final, initial_weights=initial_weights, seed=seed, verbose=verbose,
              **options)
    return oof, final / "best.weights.h5"


def _subset_metrics(y, prob, selection, seed, threshold=DEFAULT_DECISION_THRESHOLD):
    """Metrics on the whole set and on each selection subset."""
    out = {"all": _metrics(metrics_table(y, prob, threshold=threshold, seed=seed))}
    if selection is not None:
        for name in np.unique(selection):
            rows = selection == name
            out[str(name)] = _metrics(metrics_table(y[rows], prob[rows], threshold=threshold,
                                                    seed=seed))
    return out


def _cached_scores(path, compute, weight_digests, X):
    """Scores kept on disk, so a resumed run does not recompute them.

    ``weight_digests`` are the SHA-256 sums of the weights that made them.
    They are reused only while the weights and images they came from are
    the same (a fingerprint beside them): a rerun with another recipe in the
    same folder scores afresh instead of reporting stale numbers.
    """
    path = Path(path)
    key = fingerprint(weight_digests, np.asarray(X))
    record = path.with_suffix(".json")
    if path.exists() and (load_record(record) or {}).get("fingerprint") == key:
        return np.load(path)
    scores = np.asarray(compute(), np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, scores)
    save_record(record, {"fingerprint": key})
    return scores


def _ensemble_tta(members, X):
    """Mean LSBG probability of several networks, each averaged over 8 views."""
    return np.mean([predict_tta(load_model(w), X) for w in members], axis=0)


def _summary(metrics):
    """Accuracy and ROC AUC with intervals: one line of the step table."""
    return {k: metrics[k] for k in ("accuracy", "roc_auc", "n")} | {
        "accuracy_95": metrics["intervals_95"]["accuracy"],
        "roc_auc_95": metrics["intervals_95"]["roc_auc"]}


def _subset_summaries(metrics):
    """Step-table lines of :func:`_subset_metrics` output, subset by subset."""
    return {subset: _summary(m) for subset, m in metrics.items()}


def _train_des(work, r, X, y, Xv, yv, verbose):
    des_dir = work / "des"
    if not (des_dir / "training.json").exists():
        train(X, y, Xv, yv, des_dir, epochs=r["des_epochs"], learning_rate=r["des_learning_rate"],
              steps_per_epoch=r["des_steps_per_epoch"], cycle_epochs=r["des_cycle_epochs"],
              min_learning_rate=r["des_min_learning_rate"], patience=r["des_patience"],
              seed=r["seed"], verbose=verbose,
              time_budget=60 * r["des_time_budget_min"] if r["des_time_budget_min"] else None)
    record = json.loads((des_dir / "training.json").read_text())
    plot_history(record["history"], des_dir / "history.png")
    members = sorted(des_dir.glob("snapshot_*.weights.h5"))[-int(r["ensemble_members"]):]
    return record, members or [des_dir / "best.weights.h5"]


def _distil(work, r, members, X, Xv, yv, verbose):
    """Train one network on the teacher's probabilities (soft targets)."""
    n = min(int(r["distil_cutouts"]), len(X))
    student_dir = work / "student"
    if not r["distil_epochs"] or len(members) < 2:
        return None, members[-1]
    soft = _cached_scores(work / "scores" / f"teacher_distil_{n}.npy",
                          lambda: _ensemble_tta(members, X[:n]),
                          [file_sha256(m) for m in members], X[:n])
    if not _trained_from(student_dir, members[-1]):
        train(X[:n], soft, Xv, yv, student_dir, initial_weights=members[-1],
              epochs=r["distil_epochs"], learning_rate=r["distil_learning_rate"],
              cycle_epochs=r["distil_epochs"], seed=r["seed"] + 7, verbose=verbose,
              notes={"distilled_from": [m.name for m in members], "soft_targets": n})
    return json.loads((student_dir / "training.json").read_text()), student_dir / "best.weights.h5"


def _choose_threshold(r, prob, threshold_set):
    """Class threshold by cross-validation on (a subset of) a real set."""
    if threshold_set is None:
        return None
    _, yr, selection = threshold_set
    rows = np.ones(len(yr), bool)
    if selection is not None and r["threshold_subset"]:
        rows = selection == r["threshold_subset"]
    result = crossvalidated_threshold(yr[rows], prob[rows], folds=r["threshold_folds"],
                                      seed=r["seed"])
    result.pop("oof_pred")
    return result | {"n": int(rows.sum()), "subset": r["threshold_subset"]}


def _step_scores(name, weights_or_members, sets, work, tta):
    """Scores of one step's model on every evaluation set (cached)."""
    def score(X):
        if tta:
            return _ensemble_tta(weights_or_members, X)
        return load_model(weights_or_members).predict(X)

    # The weights' checksums once per step, not once per set.
    digests = [file_sha256(w) for w in (weights_or_members if tta else [weights_or_members])]
    return {label: _cached_scores(work / "scores" / f"{name}_{label}.npy", lambda X=X: score(X),
                                  digests, X)
            for label, (X, _, _) in sets.items()}


def build_bundled_models(work_dir, real_sets=None, real_finetune=None, ship_finetuned=False,
                         install_dir=None, workers=2, recipe=None, verbose=2, threshold_set=None):
    """Make the DES and HSC weights from scratch.

    Parameters
    ----------
    work_dir : path-like
        Data sets, checkpoints, histories, scores and figures go here;
        finished steps are reused, so an interrupted run resumes.
    real_sets : dict, optional
        Name → (X, y, selection or None) of real labelled cutouts to score
        at every step; metrics go into the card.
    real_finetune : tuple, optional
        (X, y, selection or None) real labelled DES cutouts.  The DES model
        is then fine-tuned on them (paper's fine-tuning settings) and its
        accuracy on new real cutouts estimated by cross-fitting
        (:func:`crossfit_finetune`).
    ship_finetuned : bool
        Ship the model fine-tuned on all of ``real_finetune`` as ``des``.
    install_dir : path-like, optional
        Copy ``des.weights.h5``/``hsc.weights.h5`` and their cards here
        (the package's ``data/models`` to replace the bundled weights).
    workers : int
        Processes for simulating cutouts.
    recipe : dict, optional
        Overrides of :data:`RECIPE` (e.g. fewer cutouts for a quick run).
    threshold_set : tuple, optional
        (X, y, selection or None) real labelled DES cutouts that choose the
        shipped model's class threshold by cross-validation (rows whose
        selection is ``recipe["threshold_subset"]``); 0.5 without it.

    Returns
    -------
    dict
        The DES and HSC model cards.
    """
    r = {**RECIPE, **(recipe or {})}
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    seed = r["seed"]
    real_sets = dict(real_sets or {})

    X, y = simulated_shards(work / "des_train", r["des_train"], "des", seed, workers)
    Xv, yv = simulated_shards(work / "des_val", r["des_validation"], "des", seed + 1, workers)
    Xt, yt = simulated_shards(work / "des_test", r["des_test"], "des", seed + 2, workers)
    des_record, members = _train_des(work, r, X, y, Xv, yv, verbose)
    student_record, student = _distil(work, r, members, X, Xv, yv, verbose)

    sets = {"simulated_des_test": (Xt, yt, None)} | {f"real_{k}": v for k, v in real_sets.items()}
    steps = {"last_snapshot": _step_scores("last_snapshot", members[-1], sets, work, False)}
    if len(members) > 1:
        steps["ensemble_tta"] = _step_scores("ensemble_tta", members, sets, work, True)
    if student_record is not None:
        steps["distilled"] = _step_scores("distilled", student, sets, work, False)
    shipped_step, des_sim_weights, choice = _simulated_sky_model(des_record, members,
                                                                student_record, student)
    des_metrics, step_table = _step_tables(steps, sets, shipped_step, seed)
    shipped_des, oof, finetune_record = des_sim_weights, None, None
    if real_finetune is not None:
        finetuned, oof, finetune_record = _finetune_on_real(des_sim_weights, real_finetune, work,
                                                            r, seed, ship_finetuned, des_metrics)
        if ship_finetuned:
            shipped_des = finetuned
    des_metrics |= _shipped_metrics(shipped_des, des_sim_weights, des_metrics, real_sets,
                                    real_finetune, seed)
    threshold, cut = _threshold_and_rows(r, threshold_set, steps, shipped_step, step_table,
                                         real_sets, real_finetune, oof, shipped_des,
                                         des_sim_weights, seed)
    des_test, _ = evaluate_model(load_model(shipped_des), Xt, yt, work / "des",
                                 label="simulated_des_test")
    hsc_dir = work / "hsc"
    hsc_record, n_hsc_finetune, before, after = _finetune_hsc(shipped_des, hsc_dir, work, r,
                                                              workers, verbose)

    common = {"simulator_version": SIMULATOR_VERSION, "recipe": r,
              "command": "lsbg-classify build-models"}
    des_card = {**(student_record if shipped_step == "distilled" else des_record), **common,
                "training_data": f"simulated DES g,r,z sky, {len(X)} train / {len(Xv)} validation",
                "snapshot_training": {k: v for k, v in des_record.items() if k != "history"},
                "ensemble_members": [m.name for m in members],
                "shipped_step": shipped_step,
                "simulated_sky_model": choice,
                "decision_threshold": cut,
                "threshold_selection": threshold,
                "steps": step_table,
                "metrics": des_metrics | {"simulated_des_test": _metrics(des_test)}}
    if finetune_record is not None:
        des_card["real_finetune"] = finetune_record
    if shipped_des != des_sim_weights:
        des_card["training_data"] += "; then fine-tuned on real labelled DES cutouts"
    cards = {
        "des": des_card,
        "hsc": {**hsc_record, **common,
                "training_data": f"the DES network fine-tuned on {n_hsc_finetune} simulated HSC "
                                 "g,r,i cutouts",
                "decision_threshold": DEFAULT_DECISION_THRESHOLD,
                "metrics": {"simulated_hsc_test_before_finetune": _metrics(before),
                            "simulated_hsc_test_after_finetune": _metrics(after)}},
    }
    _ship({"des": shipped_des, "hsc": hsc_dir / "best.weights.h5"}, cards, work, install_dir)
    return cards


def _simulated_sky_model(des_record, members, student_record, student):
    """The simulated-sky DES network: the student if it kept the teacher's quality.

    The student must reach a simulated validation loss no higher than the
    last snapshot's (the network it starts from), else distillation lost
    more than it gained and the last snapshot is used.  Real cutouts play
    no part in the choice.

    Returns the step name, the weights and a record of the choice.
    """
    history = des_record["history"]["val_loss"]
    snapshot_loss = history[-1] if members[-1].name.startswith("snapshot") else min(history)
    choice = {"last_snapshot_val_loss": float(snapshot_loss)}
    if student_record is None:
        return "last_snapshot", members[-1], choice | {"step": "last_snapshot"}
    student_loss = float(student_record["best_val_loss"])
    choice["distilled_val_loss"] = student_loss
    if student_loss <= snapshot_loss:
        return "distilled", student, choice | {"step": "distilled"}
    return "last_snapshot", members[-1], choice | {
        "step": "last_snapshot",
        "why": "the distilled student's simulated validation loss is higher than the last "
               "snapshot's"}


def _threshold_and_rows(r, threshold_set, steps, shipped_step, step_table, real_sets,
                        real_finetune, oof, shipped_des, des_sim_weights, seed):
    """The shipped network's class threshold, chosen by cross-validation on ``threshold_set``.

    Returns the selection record (None without a threshold set) and the
    threshold, and adds the step-table row of the metrics at it.
    """
    if threshold_set is None:
        return None, DEFAULT_DECISION_THRESHOLD
    if shipped_des == des_sim_weights:
        threshold = _shipped_threshold(r, steps[shipped_step], des_sim_weights, real_sets,
                                       threshold_set)
        cut = threshold["threshold"]
        step_table[f"{shipped_step}_cv_threshold"] = {
            f"real_{k}": _subset_summaries(_subset_metrics(
                v[1], steps[shipped_step][f"real_{k}"], v[2], seed, threshold=cut))
            for k, v in real_sets.items()}
        return threshold, cut
    # The shipped network is the fine-tuned one: where the threshold set is
    # the fine-tuning set, only out-of-fold scores are honest.
    same = np.array_equal(real_finetune[0], threshold_set[0])
    prob = oof if same else load_model(shipped_des).predict(threshold_set[0])
    threshold = _choose_threshold(r, prob, threshold_set)
    cut = threshold["threshold"]
    step_table["real_finetuned_cv_threshold"] = {
        "threshold_set" + ("_out_of_fold" if same else ""): _subset_summaries(
            _subset_metrics(threshold_set[1], prob, threshold_set[2], seed, threshold=cut))}
    return threshold | {"scores": "out_of_fold" if same else "fine-tuned model"}, cut


def _shipped_threshold(r, shipped_scores, weights, real_sets, threshold_set):
    """The class threshold chosen on ``threshold_set`` for the shipped step's model."""
    name = next((k for k, v in real_sets.items()
                 if np.array_equal(v[0], threshold_set[0])),
                None)
    prob = (shipped_scores[f"real_{name}"] if name else
            load_model(weights).predict(threshold_set[0]))
    return _choose_threshold(r, prob, threshold_set)


def _step_tables(steps, sets, shipped_step, seed):
    """Metrics of every step on every set, and those of the simulated-sky network for the card."""
    des_metrics, step_table = {}, {}
    for step, scores in steps.items():
        step_table[step] = {}
        for label, (_, ys, selection) in sets.items():
            m = _subset_metrics(ys, scores[label], selection, seed)
            step_table[step][label] = _subset_summaries(m)
            if step == shipped_step and not label.startswith("simulated"):
                des_metrics[f"{label}_simulated_sky_model"] = m
    return des_metrics, step_table


def _shipped_metrics(shipped_des, des_sim_weights, des_metrics, real_sets, real_finetune, seed):
    """Metrics of the shipped network on each real set, as ``real_<name>_shipped_model``.

    When the shipped network was fine-tuned on a set it is not scored on
    that set (it has seen it): the out-of-fold ``real_finetune_crossfit``
    metrics stand for it.
    """
    if shipped_des == des_sim_weights:
        return {f"real_{name}_shipped_model": des_metrics[f"real_{name}_simulated_sky_model"]
                for name in real_sets}
    model = load_model(shipped_des)
    return {f"real_{name}_shipped_model": _subset_metrics(yr, model.predict(X), selection, seed)
            for name, (X, yr, selection) in real_sets.items()
            if not np.array_equal(X, real_finetune[0])}


def _finetune_on_real(weights, real_finetune, work, r, seed, ship_finetuned, des_metrics):
    """Cross-fitted fine-tuning on real DES cutouts; records its metrics.

    Returns the weights fine-tuned on the whole set, the out-of-fold
    probabilities and the record of the fine-tuning for the card.
    """
    Xr, yr, selection = real_finetune
    oof, finetuned = crossfit_finetune(weights, Xr, yr, work / "des_real_finetune",
                                       folds=r["real_folds"], seed=seed)
    des_metrics["real_finetune_crossfit"] = _subset_metrics(yr, oof, selection, seed)
    record = {
        "n": int(len(yr)), "folds": r["real_folds"], **FINETUNE_DEFAULTS,
        "initial_weights": Path(weights).name, "shipped": bool(ship_finetuned),
        "note": "real_finetune_crossfit metrics are out-of-fold (each cutout scored by a "
                "model fine-tuned on the other folds, never on it)"}
    return finetuned, oof, record


def _finetune_hsc(des_weights, hsc_dir, work, r, workers, verbose):
    """Fine-tune the DES network on simulated HSC cutouts (reused when done).

    Returns the training record, the number of fine-tuning cutouts and the
    simulated HSC test metrics before and after.
    """
    seed = r["seed"]
    hsc_n = r["hsc_finetune"] + r["hsc_validation"] + r["hsc_test"]
    Xh, yh = _dataset(work / "hsc_sim.npz", hsc_n, "hsc", seed + 1, workers)
    ft = np.arange(r["hsc_finetune"])
    hv = np.arange(r["hsc_finetune"], r["hsc_finetune"] + r["hsc_validation"])
    ht = np.arange(r["hsc_finetune"] + r["hsc_validation"], hsc_n)
    before, _ = evaluate_model(load_model(des_weights), Xh[ht], yh[ht], hsc_dir,
                               label="simulated_hsc_test_before")
    if not _trained_from(hsc_dir, des_weights):
        train(Xh[ft], yh[ft], Xh[hv], yh[hv], hsc_dir, initial_weights=des_weights,
              epochs=r["hsc_epochs"], batch_size=FINETUNE_DEFAULTS["batch_size"],
              learning_rate=FINETUNE_DEFAULTS["learning_rate"], seed=seed, verbose=verbose)
    hsc_record = json.loads((hsc_dir / "training.json").read_text())
    plot_history(hsc_record["history"], hsc_dir / "history.png")
    after, _ = evaluate_model(load_model(hsc_dir / "best.weights.h5"), Xh[ht], yh[ht], hsc_dir,
                              label="simulated_hsc_test_after")
    return hsc_record, len(ft), before, after


def _ship(shipped, cards, work, install_dir):
    """Write each model's layer weights and card, and install them (with ONNX twins) if asked."""
    for name, card in cards.items():
        card.pop("history", None)
        # Checkpoints carry the optimiser's state too; ship the layer weights alone.
        slim = work / f"{name}.weights.h5"
        load_model(shipped[name], runtime="keras").keras_network().save_weights(slim)
        card["weights_sha256"] = file_sha256(slim)
        atomic_write_bytes(work / f"{name}_card.json", json.dumps(card, indent=1).encode())
        if install_dir is not None:
            dest = Path(install_dir)
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(slim, dest / f"{name}.weights.h5")
            atomic_write_bytes(dest / f"{name}.json", json.dumps(card, indent=1).encode())
            # Scoring runs on ONNX Runtime: the twin and its checksum in the card.
            write_onnx_twin(dest / f"{name}.weights.h5")
            card.update(json.loads((dest / f"{name}.json").read_text()))
