"""Reproduce the DeepShadows experiment, from the public catalogues to a report.

``lsbg-classify reproduce`` (and :func:`run_reproduction`) runs the
protocol of Tanoglidis, Ćiprijanović & Drlica-Wagner (2021) end to end:

1. download the coordinate lists of the paper's repository and verify
   their SHA-256 (:func:`download_data`);
2. label the three "Baseline" splits by matching their positions against
   the LSBG and artifact master lists (:func:`label_by_position`);
3. fetch the DES cutouts of the splits and the HSC cutouts of the Greco et
   al. (2018) objects from the Legacy Surveys viewer;
4. train DeepShadows on the training split (validation split for choosing
   the epoch), test it on the test split and on HSC, fine-tune it on 320
   HSC objects and test again; train the SVM and random-forest baselines
   on the master lists' SourceExtractor features;
5. write every metric with bootstrap intervals and an HTML report
   (:func:`lsbg_classify.reproduction.report.write_report`).

Every step writes its output in a work directory and records a
fingerprint of its inputs (SHA-256 of the files it read, plus its
settings) in ``steps/<step>.json``; a step whose outputs exist and whose
fingerprint matches is skipped, so a rerun after an interruption goes on
where it stopped.

Configuration follows astroquery's style::

    from lsbg_classify.reproduction.reproduce import conf
    conf.server = "https://my-mirror.example.org/DeepShadows/Datasets/"

and the ``LSBG_CLASSIFY_DEEPSHADOWS_URL`` environment variable overrides
``conf.server``; a ``data_url`` argument wins over both.
"""

import datetime
import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
from astropy import config as _config
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from .. import status
from ..atomic import atomic_path, atomic_write_bytes
from ..pipeline.cache import CutoutCache
from ..pipeline.catalog.columns import extract_positions
from ..pipeline.catalog.read import CatalogError
from ..pipeline.catalog.write import write_catalog
from ..pipeline.model import file_sha256, load_model
from ..pipeline.preprocess import MODEL_IMAGE_SIZE, as_uint8
from ..pipeline.scoring import fetch_images
from ..resume import fingerprint, load_record, save_record
from ..surveys import get_backend, get_survey
from ..surveys.http import HttpClient, redact_url, resolve_base_url
from ..training.defaults import FINETUNE_DEFAULTS, TRAIN_DEFAULTS
from ..training.evaluate import metrics_table
from ..training.train import load_dataset, save_dataset, train
from ..version import __version__
from .baselines import baseline_models, catalog_features, load_greco2018, measure_features
from .report import PAPER_RESULTS, write_report

__all__ = [
    "Conf",
    "conf",
    "ENV_URL",
    "DEFAULT_DATA_URL",
    "SPLIT_FILES",
    "LSBG_LIST",
    "ARTIFACT_LIST",
    "HSC_FILES",
    "DATA_FILES",
    "PINNED_SHA256",
    "MATCH_TOLERANCE",
    "ChecksumError",
    "download_data",
    "read_split",
    "label_by_position",
    "attach_features",
    "balanced_subset",
    "run_reproduction",
]

#: Environment variable that overrides ``conf.server``.
ENV_URL = "LSBG_CLASSIFY_DEEPSHADOWS_URL"

#: The ``Datasets/`` folder of the paper's repository, as raw files.
DEFAULT_DATA_URL = "https://raw.githubusercontent.com/dtanoglidis/DeepShadows/main/Datasets/"


class Conf(_config.ConfigNamespace):
    """Configuration of the DeepShadows data downloads."""

    server = _config.ConfigItem(
        DEFAULT_DATA_URL,
        "Base URL of the DeepShadows data files (the Datasets/ folder of the paper's repository).",
    )
    timeout = _config.ConfigItem(
        60.0,
        "Seconds to wait for the connection and for each read from the data server.",
    )


conf = Conf()

#: The paper's random split of 20,000 LSBGs and 20,000 artifacts: split -> file.
SPLIT_FILES = {
    "train": "Baseline_training.csv",
    "validation": "Baseline_validation.csv",
    "test": "Baseline_test.csv",
}
#: Master list of the DES LSBGs (membership is the label; SourceExtractor features).
LSBG_LIST = "random_LSBGs_all.csv"
#: Master list of the DES artifacts.
ARTIFACT_LIST = "random_negative_all_2.csv"
#: Greco et al. (2018) HSC LSBGs and artifacts.
HSC_FILES = ("hsc_LSBGs.dat", "hsc_artifacts.csv")
#: Every file the reproduction needs.
DATA_FILES = (*SPLIT_FILES.values(), LSBG_LIST, ARTIFACT_LIST, *HSC_FILES)

#: SHA-256 of the public files.  The master lists have no pinned digest:
#: theirs is recorded on first download and checked on reuse.
PINNED_SHA256 = {
    "Baseline_test.csv": "8463f5651e69b4edba71c3fe59d8d948db499fcfe4701031c18a2d02879cf9bd",
    "Baseline_training.csv": "ca2df2edd23a7780b50a863a7f271e17136d66f6a8491f95551495a19d9b696e",
    "Baseline_validation.csv": "813b9b06ddae2e618023523444bb1393c406bdc2de0878c4857bc55c0792c67e",
    "hsc_LSBGs.dat": "ae90e138cf5c128c0ec888c2dd66de6930abfb588837089d60619e590338ae1a",
    "hsc_artifacts.csv": "64d473a159786377c12f5f3aff75eae8965dca6dd26625e3c5e19fa9ba553e99",
}

#: Largest separation at which a split row is the same object as a master-list row.
#: The lists share their coordinates to the printed digits, so 1 arcsec
#: (a few DES pixels) only absorbs rounding, while the nearest neighbouring
#: candidate is typically arcminutes away.
MATCH_TOLERANCE = 1.0 * u.arcsec

# The paper's HSC protocol: 320 objects for fine-tuning, 960 for testing
# (balanced here: the Greco lists hold 781 LSBGs and 641 artifacts).
HSC_FINETUNE_PER_CLASS = 160
HSC_TEST_PER_CLASS = 480
# The SVM's Platt scaling runs a 5-fold cross-validation inside the
# training set, so each class needs at least 5 training objects.
MIN_SUBSET = 5
N_BOOTSTRAP = 1000
THRESHOLD = 0.5

MANIFEST = "manifest.json"
# Pixel scale of the 64-pixel model inputs made from DES viewer cutouts (arcsec/pix).
DES_INPUT_PIXEL_SCALE = float(get_survey("des").pixel_scale.value
                              * get_survey("des").cutout_size / MODEL_IMAGE_SIZE)

# Evaluations: key -> (title, group of the ROC figure).
EVALUATIONS = {
    "des_cnn": ("DES test: DeepShadows", "DES test"),
    "des_svm": ("DES test: SVM", "DES test"),
    "des_random_forest": ("DES test: random forest", "DES test"),
    "hsc_before": ("HSC test: DES model, no fine-tuning", "HSC test"),
    "hsc_after": ("HSC test: fine-tuned on HSC", "HSC test"),
}
SETS = ("des_train", "des_validation", "des_test", "hsc_finetune", "hsc_test")


class ChecksumError(ValueError):
    """A data file does not have the SHA-256 it should have."""


# -- downloads ---------------------------------------------------------------


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _write_json(path, obj):
    save_record(path, obj, indent=1)


def _read_manifest(directory):
    path = directory / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def _reuse(path, known, pinned, manifest_path):
    """Whether an existing file can be used; raises when it cannot and will not be mended."""
    digest = file_sha256(path)
    if known is None or digest == known:
        return digest
    if pinned:
        return None  # the reference digest is known: download a good copy
    raise ChecksumError(
        f"{path.name}: the file in {path.parent} has SHA-256 {digest}, but {known} was "
        f"recorded in {manifest_path} when it was first downloaded; it changed on disk. "
        f"Delete {path} and its entry in {manifest_path.name} to download it again.")


def _download(client, url, name, known):
    body = client.get(url).content
    digest = _sha256(body)
    if known is not None and digest != known:
        raise ChecksumError(
            f"{name}: downloaded from {url} with SHA-256 {digest}, expected {known}; "
            "the file was not kept")
    return body, digest


def _fetch_file(name, directory, base, client, expected, manifest, log):
    path = directory / name
    known = expected.get(name) or manifest.get(name, {}).get("sha256")
    pinned = expected.get(name) is not None
    how = "pinned digest" if pinned else "trusted on first use"
    if path.exists():
        digest = _reuse(path, known, pinned, directory / MANIFEST)
        if digest is not None:
            log(f"[download] {name}: present, SHA-256 verified ({how})")
            return {"sha256": digest, "verified": how, "action": "reused"}
    url = f"{base}/{name}"
    body, digest = _download(client, url, name, known)
    atomic_write_bytes(path, body)
    log(f"[download] {name}: {len(body)} bytes from {url}, SHA-256 "
        + (f"verified ({how})" if known else f"recorded ({how})"))
    return {"sha256": digest, "verified": how, "action": "downloaded", "url": url,
            "bytes": len(body), "date": _now()}


def _now():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def download_data(directory, data_url=None, checksums=None, files=DATA_FILES, http=None,
                  log=print):
    """Download the DeepShadows data files and verify their SHA-256.

    A file already in ``directory`` with the right digest is reused; a
    download goes to a temporary file that is renamed into place only after
    its digest is checked.  Files with a pinned digest
    (:data:`PINNED_SHA256`, or ``checksums``) must match it; the others are
    trusted on first use: their digest is recorded in
    ``directory/manifest.json`` and checked whenever they are reused.

    Parameters
    ----------
    directory : path-like
        Where the files go (created if needed).
    data_url : str, optional
        Base URL of the files; default ``$LSBG_CLASSIFY_DEEPSHADOWS_URL``,
        else ``conf.server`` (:data:`DEFAULT_DATA_URL`).
    checksums : dict of str to str or None, optional
        Expected digests by file name, replacing the pinned ones; None means
        trust on first use.
    files : sequence of str
        Which files to fetch (default :data:`DATA_FILES`).
    http : HttpClient, optional
        Client to use (retries with backoff); default a new one.
    log : callable
        Receives one line per file.

    Returns
    -------
    dict
        File name -> ``{"sha256", "verified", "url", "bytes", "date",
        "action"}``, ``action`` being ``"downloaded"`` or ``"reused"``; the
        manifest holds the same entries without ``action``.

    Raises
    ------
    ChecksumError
        A download, or a reused trusted-on-first-use file, has another
        digest; the message names the file.
    lsbg_classify.surveys.http.HttpFetchError
        A file could not be downloaded.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    expected = {**PINNED_SHA256, **(checksums or {})}
    base = resolve_base_url(data_url, ENV_URL, conf.server)
    manifest = _read_manifest(directory)
    client = http or HttpClient(timeout=float(conf.timeout))
    info = {}
    try:
        for name in files:
            entry = _fetch_file(name, directory, base, client, expected, manifest, log)
            action = entry.pop("action")
            updated = {**manifest.get(name, {}), **entry}
            if updated != manifest.get(name):
                manifest[name] = updated
                _write_json(directory / MANIFEST, manifest)
            info[name] = {**updated, "action": action}
    finally:
        if http is None:
            client.close()
    return info


# -- labels ------------------------------------------------------------------


def read_split(path):
    """Read a Baseline split (unnamed index, ra, dec) as a Table.

    The unnamed first column becomes ``index``.
    """
    table = Table.read(path, format="ascii.csv")
    if table.colnames and table.colnames[0] == "col0":
        table.rename_column("col0", "index")
    return table


def _positions(table, what):
    try:
        positions = extract_positions(table, on_invalid="flag")
    except CatalogError as exc:
        raise CatalogError(f"{what}: {exc}") from None
    return positions


def _nearest(coords, catalog, what, tolerance):
    """Whether each position has a ``catalog`` row within ``tolerance``, and which."""
    positions = _positions(catalog, what)
    rows = np.flatnonzero(positions.valid)
    if len(rows) == 0:
        return np.zeros(len(coords), bool), np.full(len(coords), -1)
    reference = SkyCoord(positions.ra[rows] * u.deg, positions.dec[rows] * u.deg)
    index, separation, _ = coords.match_to_catalog_sky(reference)
    return separation < tolerance, rows[index]


def label_by_position(split, lsbgs, artifacts, tolerance=MATCH_TOLERANCE, name="split"):
    """Label rows by which master list holds an object at their position.

    Parameters
    ----------
    split : `~astropy.table.Table`
        Rows with sky positions (degrees), e.g. from :func:`read_split`.
    lsbgs, artifacts : `~astropy.table.Table`
        The master lists of LSBGs and of artifacts.
    tolerance : `~astropy.units.Quantity`
        Largest separation of a match (default :data:`MATCH_TOLERANCE`).
    name : str
        Names the split in messages.

    Returns
    -------
    `~astropy.table.Table`
        The rows that match exactly one list, with ``label`` (1 LSBG,
        0 artifact) and ``master_row`` (row of the matching list, from 0)
        added; ``meta`` holds ``n_rows``, ``n_unmatched`` and
        ``n_ambiguous``.

    Raises
    ------
    ValueError
        No row matches exactly one list.

    Warns
    -----
    AstropyUserWarning
        Rows that match neither list, or both, are dropped; the warning
        says how many.
    """
    positions = _positions(split, name)
    coords = SkyCoord(np.nan_to_num(positions.ra) * u.deg, np.nan_to_num(positions.dec) * u.deg)
    in_lsbg, lsbg_row = _nearest(coords, lsbgs, "LSBG list", tolerance)
    in_artifact, artifact_row = _nearest(coords, artifacts, "artifact list", tolerance)
    in_lsbg &= positions.valid
    in_artifact &= positions.valid
    keep = in_lsbg ^ in_artifact
    n_none = int(np.count_nonzero(~in_lsbg & ~in_artifact))
    n_both = int(np.count_nonzero(in_lsbg & in_artifact))
    if not keep.any():
        raise ValueError(f"{name}: none of its {len(split)} rows matches exactly one master "
                         f"list within {tolerance}")
    if n_none or n_both:
        warnings.warn(f"{name}: dropped {n_none} of {len(split)} rows that match neither master "
                      f"list and {n_both} that match both, within {tolerance}",
                      AstropyUserWarning, stacklevel=2)
    out = split[keep]
    out["label"] = in_lsbg[keep].astype(np.int8)
    out["master_row"] = np.where(in_lsbg, lsbg_row, artifact_row)[keep]
    out.meta.update({"n_rows": len(split), "n_unmatched": n_none, "n_ambiguous": n_both,
                     "tolerance_arcsec": float(tolerance.to_value(u.arcsec))})
    return out


def _list_features(table):
    """Paper features of a master list, and the names found (none: empty list)."""
    with warnings.catch_warnings():
        # Some features of the set may be missing; the names say which are used.
        warnings.simplefilter("ignore", UserWarning)
        try:
            return catalog_features(table, "paper")
        except ValueError:
            return np.empty((len(table), 0)), []


def attach_features(labelled, lsbg_features, artifact_features):
    """Copy each row's master-list features into ``feat_<name>`` columns.

    Only features that both lists provide are copied.
    """
    (X_l, names_l), (X_a, names_a) = lsbg_features, artifact_features
    common = [n for n in names_l if n in names_a]
    rows = np.asarray(labelled["master_row"])
    is_lsbg = np.asarray(labelled["label"]) == 1
    for name in common:
        values = np.full(len(labelled), np.nan)
        values[is_lsbg] = X_l[rows[is_lsbg], names_l.index(name)]
        values[~is_lsbg] = X_a[rows[~is_lsbg], names_a.index(name)]
        labelled[f"feat_{name}"] = values
    labelled.meta["features"] = common
    return labelled


# -- selections ----------------------------------------------------------------


def balanced_subset(labels, per_class, seed=0, exclude=None, what="set"):
    """Indices of ``per_class`` random rows of each class, in increasing order.

    Parameters
    ----------
    labels : array_like of {0, 1}
    per_class : int or None
        Rows per class; None keeps every row.
    seed : int
    exclude : array_like of int, optional
        Rows that may not be chosen.
    what : str
        Names the set in messages.

    Raises
    ------
    ValueError
        A class has fewer than ``per_class`` rows to choose from.
    """
    labels = np.asarray(labels)
    available = np.ones(len(labels), bool)
    if exclude is not None:
        available[np.asarray(exclude, int)] = False
    if per_class is None:
        return np.flatnonzero(available)
    rng = np.random.default_rng(seed)
    chosen = []
    for label, kind in ((1, "LSBG"), (0, "artifact")):
        pool = np.flatnonzero(available & (labels == label))
        if len(pool) < per_class:
            raise ValueError(f"{what}: {per_class} {kind} rows wanted but only {len(pool)} "
                             "are available")
        chosen.append(rng.choice(pool, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


# -- the run --------------------------------------------------------------------


def _fingerprint(inputs, params):
    # Keyed by folder/name, so the fingerprint survives moving the work directory.
    files = {"/".join(Path(p).parts[-2:]): file_sha256(p) for p in inputs}
    return fingerprint({"inputs": files, "params": params})


class _Steps:
    """Runs named steps, skipping those whose outputs exist and inputs are unchanged."""

    def __init__(self, workdir, log):
        self.folder = Path(workdir) / "steps"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.ran, self.skipped = [], []

    def record(self, name):
        return load_record(self.folder / f"{name}.json")

    def run(self, name, action, inputs=(), outputs=(), params=None):
        fingerprint = _fingerprint(inputs, params or {})
        done = self.record(name)
        if done and done["fingerprint"] == fingerprint and all(Path(p).exists() for p in outputs):
            self.log(f"[{name}] up to date, skipped")
            self.skipped.append(name)
            return done.get("summary", {})
        self.log(f"[{name}] running")
        # Outputs are about to change: an interrupted run must not leave an
        # old record vouching for them.
        (self.folder / f"{name}.json").unlink(missing_ok=True)
        started = time.monotonic()
        summary = action() or {}
        _write_json(self.folder / f"{name}.json",
                    {"fingerprint": fingerprint, "params": params or {}, "summary": summary,
                     "outputs": [str(Path(p).name) for p in outputs], "finished": _now(),
                     "seconds": round(time.monotonic() - started, 1),
                     "package_version": __version__})
        self.ran.append(name)
        return summary


class _Run:
    """One reproduction: settings, work-directory layout and the steps."""

    def __init__(self, workdir, *, epochs, finetune_epochs, subset, seed, base_url, data_url,
                 workers, cache, quiet, checksums, n_boot, http):
        self.workdir = Path(workdir)
        self.options = {"epochs": int(epochs), "finetune_epochs": int(finetune_epochs),
                        "subset": subset, "seed": int(seed), "n_boot": int(n_boot)}
        self.base_url, self.data_url, self.workers = base_url, data_url, int(workers)
        self.cache, self.quiet, self.checksums, self.http = cache, quiet, checksums, http
        self.log = (lambda *a: None) if quiet else print
        self.steps = _Steps(self.workdir, self.log)

    def path(self, *parts):
        return self.workdir.joinpath(*parts)

    def set_path(self, name, kind):
        folder, suffix = {"table": ("sets", ".ecsv"), "cutouts": ("cutouts", ".npz")}[kind]
        return self.path(folder, name + suffix)

    # -- data ------------------------------------------------------------------

    def download(self):
        return download_data(self.path("downloads"), self.data_url, self.checksums, http=self.http,
                             log=self.log)

    def label(self):
        downloads = [self.path("downloads", f) for f in (*SPLIT_FILES.values(), LSBG_LIST,
                                                         ARTIFACT_LIST)]
        outputs = [self.path("labelled", f"des_{s}.ecsv") for s in SPLIT_FILES]
        params = {"tolerance_arcsec": MATCH_TOLERANCE.to_value(u.arcsec)}
        return self.steps.run("label", self._label, downloads, outputs, params)

    def _label(self):
        self.path("labelled").mkdir(exist_ok=True)
        lsbgs = Table.read(self.path("downloads", LSBG_LIST), format="ascii.csv")
        artifacts = Table.read(self.path("downloads", ARTIFACT_LIST), format="ascii.csv")
        features = (_list_features(lsbgs), _list_features(artifacts))
        summary = {}
        for split, filename in SPLIT_FILES.items():
            table = label_by_position(read_split(self.path("downloads", filename)), lsbgs,
                                      artifacts, name=filename)
            attach_features(table, *features)
            write_catalog(table, self.path("labelled", f"des_{split}.ecsv"), overwrite=True)
            summary[split] = {k: table.meta[k] for k in ("n_rows", "n_unmatched", "n_ambiguous")}
            summary[split].update(n_lsbg=int(np.sum(table["label"] == 1)),
                                  n_artifact=int(np.sum(table["label"] == 0)))
        summary["features"] = list(table.meta["features"])
        return summary

    def select(self):
        inputs = ([self.path("labelled", f"des_{s}.ecsv") for s in SPLIT_FILES]
                  + [self.path("downloads", f) for f in HSC_FILES])
        outputs = [self.set_path(name, "table") for name in SETS]
        params = {k: self.options[k] for k in ("subset", "seed")}
        return self.steps.run("select", self._select, inputs, outputs, params)

    def _select(self):
        self.path("sets").mkdir(exist_ok=True)
        subset, seed = self.options["subset"], self.options["seed"]
        for k, split in enumerate(SPLIT_FILES):
            table = Table.read(self.path("labelled", f"des_{split}.ecsv"))
            rows = balanced_subset(table["label"], subset, seed + k, what=f"DES {split} split")
            write_catalog(table[rows], self.set_path(f"des_{split}", "table"), overwrite=True)
        hsc = load_greco2018(self.path("downloads"))
        finetune = balanced_subset(hsc["label"], subset or HSC_FINETUNE_PER_CLASS, seed,
                                   what="HSC fine-tuning set")
        test = balanced_subset(hsc["label"], subset or HSC_TEST_PER_CLASS, seed + 1,
                               exclude=finetune, what="HSC test set")
        write_catalog(hsc[finetune], self.set_path("hsc_finetune", "table"), overwrite=True)
        write_catalog(hsc[test], self.set_path("hsc_test", "table"), overwrite=True)
        return {"hsc_finetune": len(finetune), "hsc_test": len(test)}

    def cutouts(self, name):
        survey = name.split("_")[0]
        info = get_survey(survey)
        params = {"survey": survey, "layer": info.legacysurvey_layer, "size": info.cutout_size,
                  "pixel_scale": float(info.pixel_scale.value)}
        return self.steps.run(f"cutouts_{name}", lambda: self._cutouts(name, survey),
                              [self.set_path(name, "table")], [self.set_path(name, "cutouts")],
                              params)

    def _cache(self):
        if self.cache is None or self.cache is True:
            return CutoutCache()
        return False if self.cache is False else CutoutCache(self.cache)

    def _cutouts(self, name, survey):
        self.path("cutouts").mkdir(exist_ok=True)
        table = Table.read(self.set_path(name, "table"))
        ra, dec = np.asarray(table["ra"], float), np.asarray(table["dec"], float)
        with get_backend("legacysurvey", survey=survey, base_url=self.base_url,
                         workers_hint=self.workers) as backend:
            fetched = fetch_images(ra, dec, backend, cache=self._cache(), workers=self.workers,
                                   progress=False if self.quiet else None)
        ok = fetched.status == status.OK
        labels = np.asarray(table["label"], np.int8)
        if len(np.unique(labels[ok])) < 2:
            raise ValueError(f"{name}: cutouts were fetched for {int(ok.sum())} of {len(ok)} "
                             "objects, not enough to hold both classes; first problems: "
                             + "; ".join(list(fetched.messages.values())[:3]))
        save_dataset(self.set_path(name, "cutouts"), as_uint8(fetched.images[ok]), labels[ok],
                     ra=ra[ok], dec=dec[ok], row=np.flatnonzero(ok))
        failed = {str(table["ra"][r]) + "," + str(table["dec"][r]): fetched.messages.get(int(r), "")
                  for r in np.flatnonzero(~ok)[:20]}
        return {"n": len(ok), "n_ok": int(ok.sum()), "first_failures": failed}

    # -- models ------------------------------------------------------------------

    def train_des(self):
        folder = self.path("models", "des")
        params = {**TRAIN_DEFAULTS, "epochs": self.options["epochs"], "seed": self.options["seed"]}
        inputs = [self.set_path("des_train", "cutouts"), self.set_path("des_validation", "cutouts")]

        def action():
            X, y, _ = load_dataset(inputs[0])
            X_val, y_val, _ = load_dataset(inputs[1])
            train(X, y, X_val, y_val, folder, verbose=0 if self.quiet else 2, **params)

        return self.steps.run("train_des", action, inputs,
                              [folder / "best.weights.h5", folder / "training.json"], params)

    def finetune_hsc(self):
        folder = self.path("models", "hsc")
        params = {**FINETUNE_DEFAULTS, "epochs": self.options["finetune_epochs"],
                  "seed": self.options["seed"]}
        inputs = [self.set_path("hsc_finetune", "cutouts"), self.path("models", "des",
                                                                        "best.weights.h5")]

        def action():
            X, y, _ = load_dataset(inputs[0])
            # Every Greco object not fine-tuned on is kept for the test, so
            # there is no validation set: the last epoch's weights are used.
            train(X, y, None, None, folder, initial_weights=inputs[1],
                  verbose=0 if self.quiet else 2, **params)

        return self.steps.run("finetune_hsc", action, inputs,
                              [folder / "best.weights.h5", folder / "training.json"], params)

    def predict_cnn(self, key, weights, data):
        """Step: the CNN's LSBG probabilities on a data set."""

        def action():
            X, y, _ = load_dataset(data)
            model = load_model(weights)
            self._save_predictions(key, y, model.predict(X), model=model.name)

        return self.steps.run(f"predict_{key}", action, [weights, data],
                              [self._predictions(key)])

    def _predictions(self, key):
        return self.path("predictions", f"{key}.npz")

    def _save_predictions(self, key, y, prob, **about):
        self.path("predictions").mkdir(exist_ok=True)
        path = self._predictions(key)
        # The suffix keeps numpy from appending ".npz" to the temporary name.
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, y=np.asarray(y, np.int8), prob=np.asarray(prob, np.float64),
                     about=json.dumps(about))

    def baselines(self):
        """Step: the SVM's and the random forest's probabilities on the DES test set."""
        train_set, test_set = "des_train", "des_test"
        inputs = [self.set_path(s, kind) for s in (train_set, test_set)
                  for kind in ("table", "cutouts")]
        outputs = [self._predictions(key) for key in ("des_svm", "des_random_forest")]
        return self.steps.run("baselines", lambda: self._baselines(train_set, test_set), inputs,
                              outputs, {"seed": self.options["seed"]})

    def _features(self, name):
        table = Table.read(self.set_path(name, "table"))
        X, y, extra = load_dataset(self.set_path(name, "cutouts"))
        names = [c for c in table.colnames if c.startswith("feat_")]
        if names:
            rows = extra["row"]
            features = np.column_stack([np.asarray(table[c], float)[rows] for c in names])
            return features, y, "catalogue: " + ", ".join(c[5:] for c in names)
        features, names = measure_features(X, pixel_scale=DES_INPUT_PIXEL_SCALE)
        return features, y, "measured on the cutouts with sep: " + ", ".join(names)

    def _baselines(self, train_set, test_set):
        X, y, source = self._features(train_set)
        X_test, y_test, _ = self._features(test_set)
        for name, model in baseline_models(self.options["seed"]).items():
            model.fit(X, y)
            prob = model.predict_proba(X_test)[:, list(model.classes_).index(1)]
            self._save_predictions(f"des_{name}", y_test, prob, model=name, features=source)
        return {"features": source}

    def metrics(self):
        """Step: metrics with bootstrap intervals of every evaluation."""
        inputs = [self._predictions(key) for key in EVALUATIONS]
        outputs = [self.path("metrics", f"{key}.json") for key in EVALUATIONS]
        params = {k: self.options[k] for k in ("n_boot", "seed")}
        return self.steps.run("metrics", self._write_all_metrics, inputs, outputs, params)

    def _write_all_metrics(self):
        for key in EVALUATIONS:
            self._write_metrics(key)

    def _write_metrics(self, key):
        with np.load(self._predictions(key), allow_pickle=False) as data:
            y, prob, about = data["y"], data["prob"], json.loads(str(data["about"]))
        table = metrics_table(y, prob, THRESHOLD, n_boot=self.options["n_boot"],
                              seed=self.options["seed"])
        title, group = EVALUATIONS[key]
        result = {
            "title": title, "group": group, "n": int(table.meta["n"]), "threshold": THRESHOLD,
            "metrics": {m: {"value": _number(v), "ci_low": _number(lo), "ci_high": _number(hi)}
                        for m, v, lo, hi in zip(table["metric"], table["value"],
                                                table["ci_low"], table["ci_high"])},
            "confusion": {k: int(table.meta[k]) for k in ("tn", "fp", "fn", "tp")},
            "y": [int(v) for v in y], "prob": [float(p) for p in prob], **about,
        }
        self.path("metrics").mkdir(exist_ok=True)
        _write_json(self.path("metrics", f"{key}.json"), result)

    # -- report ------------------------------------------------------------------

    def results(self, files):
        evaluations = {key: json.loads(self.path("metrics", f"{key}.json").read_text())
                       for key in EVALUATIONS}
        histories = {}
        for key, title in (("des", "DES training"), ("hsc", "HSC fine-tuning")):
            record = json.loads(self.path("models", key, "training.json").read_text())
            histories[key] = {"title": title, "history": record["history"],
                              "best_epoch": record["best_epoch"]}
        return {"title": "DeepShadows reproduction", "evaluations": evaluations,
                "histories": histories, "settings": self.settings(), "data_files": files,
                "notes": self.notes(), "paper": PAPER_RESULTS}

    def settings(self):
        return {"package version": __version__, "work directory": str(self.workdir),
                "DES epochs": self.options["epochs"],
                "HSC fine-tuning epochs": self.options["finetune_epochs"],
                "objects per class per set": self.options["subset"] or "all (the paper's sets)",
                "seed": self.options["seed"], "bootstrap draws": self.options["n_boot"],
                "data server": redact_url(resolve_base_url(self.data_url, ENV_URL, conf.server)),
                "image server": (redact_url(self.base_url) if self.base_url
                                 else "Legacy Surveys viewer (configured default)")}

    def notes(self):
        notes = []
        label = self.steps.record("label") or {}
        for split, s in label.get("summary", {}).items():
            if isinstance(s, dict) and (s["n_unmatched"] or s["n_ambiguous"]):
                notes.append(f"DES {split}: {s['n_unmatched']} of {s['n_rows']} rows match no "
                             f"master list and {s['n_ambiguous']} match both; they were dropped.")
        for name in SETS:
            s = (self.steps.record(f"cutouts_{name}") or {}).get("summary", {})
            if s and s["n_ok"] < s["n"]:
                notes.append(f"{name}: no usable cutout for {s['n'] - s['n_ok']} of {s['n']} "
                             "objects; they were left out.")
        return notes

    def report(self, files):
        inputs = [self.path("metrics", f"{key}.json") for key in EVALUATIONS] + [
            self.path("models", k, "training.json") for k in ("des", "hsc")]
        out = self.path("report.html")
        self.steps.run("report", lambda: {"report": str(write_report(self.results(files), out))},
                       inputs, [out], {"settings": self.settings()})
        return out


def _number(value):
    value = float(value)
    return value if np.isfinite(value) else None


def _check_options(epochs, finetune_epochs, subset, workers, n_boot):
    for name, value in (("epochs", epochs), ("finetune_epochs", finetune_epochs),
                        ("workers", workers), ("n_boot", n_boot)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if subset is not None and subset < MIN_SUBSET:
        raise ValueError(f"subset must be at least {MIN_SUBSET} objects per class (the SVM's "
                         f"Platt scaling needs a 5-fold split of the training set), got {subset}")


def run_reproduction(workdir, *, epochs=TRAIN_DEFAULTS["epochs"],
                     finetune_epochs=FINETUNE_DEFAULTS["epochs"], subset=None, seed=0,
                     base_url=None, data_url=None, workers=8, cache=True, quiet=False,
                     checksums=None, n_boot=N_BOOTSTRAP, http=None):
    """Run the DeepShadows experiment from the public catalogues to an HTML report.

    Parameters
    ----------
    workdir : path-like
        Work directory: ``downloads/`` (with ``manifest.json``),
        ``labelled/`` and ``sets/`` (ECSV), ``cutouts/`` (``.npz`` data
        sets), ``models/des`` and ``models/hsc`` (weights, history),
        ``metrics/`` (JSON), ``steps/`` (one record per finished step),
        ``report.html`` and its PNG figures.  Created if needed; what is in
        it from an earlier run is reused where still valid.
    epochs : int
        DES training epochs (the paper: 100).
    finetune_epochs : int
        HSC fine-tuning epochs (the paper: 30).
    subset : int, optional
        Objects per class in every set (DES train, validation, test, HSC
        fine-tuning and test sets) for a quick run; default the paper's
        sets (30,000 / 5,000 / 5,000 DES; 320 and 960 HSC).
    seed : int
        Seeds the subsets, the HSC sets, training and the bootstrap.
    base_url : str, optional
        Legacy Surveys viewer (default: its configured server).
    data_url : str, optional
        Where the data files are (default: :data:`DEFAULT_DATA_URL`, see
        :data:`conf`).
    workers : int
        Concurrent cutout requests.
    cache : bool or path-like
        Cutout cache: True for the user cache directory, a directory, or
        False for none.
    quiet : bool
        No progress output.
    checksums : dict, optional
        Expected SHA-256 by file name, replacing :data:`PINNED_SHA256`
        entries (tests serve synthetic files).
    n_boot : int
        Bootstrap draws for the 95% intervals.
    http : HttpClient, optional
        Client for the data downloads.

    Returns
    -------
    dict
        ``report`` (path of the HTML report), ``results`` (what the report
        shows: ``evaluations``, ``histories``, ``settings``, ``notes``,
        ``data_files``), ``ran`` and ``skipped`` (step names).
    """
    _check_options(epochs, finetune_epochs, subset, workers, n_boot)
    run = _Run(workdir, epochs=epochs, finetune_epochs=finetune_epochs, subset=subset, seed=seed,
               base_url=base_url, data_url=data_url, workers=workers, cache=cache, quiet=quiet,
               checksums=checksums, n_boot=n_boot, http=http)
    files = run.download()
    run.label()
    run.select()
    for name in SETS:
        run.cutouts(name)
    run.train_des()
    des_weights = run.path("models", "des", "best.weights.h5")
    run.predict_cnn("des_cnn", des_weights, run.set_path("des_test", "cutouts"))
    run.predict_cnn("hsc_before", des_weights, run.set_path("hsc_test", "cutouts"))
    run.finetune_hsc()
    run.predict_cnn("hsc_after", run.path("models", "hsc", "best.weights.h5"),
                    run.set_path("hsc_test", "cutouts"))
    run.baselines()
    run.metrics()
    report = run.report(files)
    return {"report": report, "results": run.results(files), "ran": run.steps.ran,
            "skipped": run.steps.skipped}
