"""The ``lsbg-classify`` command: a thin layer over the library."""

import argparse
import shutil
import sys
from pathlib import Path

from .training_defaults import FINETUNE_DEFAULTS, TRAIN_DEFAULTS
from .version import __version__

__all__ = ["main", "build_parser"]


class UsageError(Exception):
    """A problem with the command line or its inputs, shown without a traceback."""


def _add_source_options(p):
    p.add_argument("--survey", default="des", choices=["des", "hsc"],
                   help="survey whose images and bundled model are used (default: des)")
    p.add_argument("--backend", default="legacysurvey",
                   help="image source: legacysurvey (default), hips, local, simulated, or an "
                        "installed plug-in")
    p.add_argument("--base-url", help="server of the legacysurvey or hips backend "
                                      "(default: the public service, or $LSBG_CLASSIFY_LEGACYSURVEY_URL)")
    p.add_argument("--format", dest="image_format", choices=["jpeg", "fits"],
                   help="cutout format where the backend offers both (default: the backend's first)")
    p.add_argument("--image", action="append", default=[], metavar="BAND=PATH",
                   help="local backend: FITS image with WCS for one band (repeat per band)")
    p.add_argument("--seed", type=int, default=0, help="simulated backend: sky seed")
    p.add_argument("--cache", help="cutout cache directory (default: the user cache directory)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cutout cache")
    p.add_argument("--refresh", action="store_true", help="fetch cutouts again even if cached")
    p.add_argument("--workers", type=int, default=8, help="concurrent requests (default: 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_catalog_options(p):
    p.add_argument("--ra-col", help="RA column (default: found by name)")
    p.add_argument("--dec-col", help="Dec column (default: found by name)")
    p.add_argument("--hdu", help="FITS input: the table HDU to read, by number or name "
                                 "(default: the first table)")


def _read_input(args):
    """The input catalog, from the HDU that ``--hdu`` names if given."""
    from .catalog import read_catalog

    options = {}
    if args.hdu is not None:
        options["hdu"] = int(args.hdu) if args.hdu.strip().isdigit() else args.hdu
    return read_catalog(args.input, **options)


def build_parser():
    """The argument parser of ``lsbg-classify``."""
    parser = argparse.ArgumentParser(
        prog="lsbg-classify",
        description="Separate real low-surface-brightness galaxies from artifacts with DeepShadows.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", help="score a candidate catalog")
    p.add_argument("input", help="catalog with RA/Dec (FITS, CSV, ECSV, Parquet, VOTable, ...)")
    p.add_argument("-o", "--output", required=True, help="scored catalog to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--model", help="weights file (default: the bundled model of --survey)")
    p.add_argument("--threshold", type=float,
                   help="class threshold (default: the model card's decision_threshold, chosen "
                        "on real cutouts for the bundled DES model; 0.5 without one)")
    p.add_argument("--tta", action="store_true",
                   help="average each probability over the 8 flips and rotations of the cutout "
                        "(8 network passes per image)")
    p.add_argument("--on-invalid", choices=["raise", "flag"], default="raise",
                   help="invalid positions: stop with an error (default) or flag the rows")
    p.add_argument("--batch-size", type=int,
                   help="images per model call (default: the model's fastest, 256 with ONNX "
                        "Runtime)")
    p.add_argument("--chunk-size", type=int, default=2000,
                   help="rows per checkpointed chunk; finished chunks are kept in "
                        "OUTPUT.checkpoint/ until the output is written, so an interrupted "
                        "run resumes when started again with the same arguments")
    p.add_argument("--mc-samples", type=int, default=0, metavar="N",
                   help="also score each image N times with dropout on and add the spread as "
                        "lsbg_prob_std (Monte-Carlo dropout; default 0: off)")
    p.add_argument("--temperature", type=float, metavar="T",
                   help="divide every logit by T before thresholding (a calibration fitted by "
                        "evaluate --fit-temperature; default: none)")
    p.add_argument("--overwrite-columns", action="store_true",
                   help="replace result columns the input already has (re-scoring a scored "
                        "catalog)")
    p.add_argument("--messages", action="store_true",
                   help="add a column lsbg_message saying why each unscored row has no score")
    _add_catalog_options(p)
    _add_source_options(p)

    p = sub.add_parser("explain", help="Grad-CAM maps: which part of a cutout drove its score")
    p.add_argument("input", help="catalog with RA/Dec")
    p.add_argument("--rows", required=True,
                   help="comma-separated row numbers of the catalog, counted from 0 (e.g. 0,5,7)")
    p.add_argument("-o", "--output", required=True, help="figure to write (.png, .pdf or .svg)")
    p.add_argument("--model", help="weights file (default: the bundled model of --survey)")
    _add_catalog_options(p)
    _add_source_options(p)

    p = sub.add_parser("demo", help="classify a simulated candidate catalog offline")
    p.add_argument("-o", "--output-dir", default="lsbg_demo_output", help="where to write results")
    p.add_argument("-n", "--rows", type=int, default=48, help="candidates to simulate")
    p.add_argument("--survey", default="des", choices=["des", "hsc"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("cache", help="inspect or empty the cutout cache")
    p.add_argument("action", choices=["info", "clear"])
    p.add_argument("--cache", help="cache directory (default: the user cache directory)")
    p.add_argument("--backend", help="clear only this backend's cutouts")

    p = sub.add_parser("fetch", help="labelled catalog -> cutout data set (.npz) for training")
    p.add_argument("input", help="catalog with RA/Dec and a 0/1 label column")
    p.add_argument("-o", "--output", required=True, help="data set file (.npz)")
    p.add_argument("--label-col", default="label", help="label column, 1 = LSBG (default: label)")
    _add_catalog_options(p)
    _add_source_options(p)

    p = sub.add_parser("simulate", help="simulated labelled data set (.npz) for training")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("-n", "--rows", type=int, required=True, help="cutouts (balanced classes)")
    p.add_argument("--survey", default="des", choices=["des", "hsc"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-randomize", action="store_true", help="no domain randomisation")
    p.add_argument("--workers", type=int, default=1, help="processes")

    for name, helptext, d in (
        ("train", "train DeepShadows (paper defaults)", TRAIN_DEFAULTS),
        ("finetune", "fine-tune weights on a new survey (paper defaults)", FINETUNE_DEFAULTS),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("data", help="training data set (.npz)")
        p.add_argument("-o", "--output-dir", required=True)
        p.add_argument("--val", help="validation data set (default: a split of DATA)")
        p.add_argument("--val-fraction", type=float, default=0.125)
        p.add_argument("--weights", required=(name == "finetune"),
                       help="initial weights (.weights.h5)" + (" (required)" if name == "finetune" else ""))
        p.add_argument("--epochs", type=int, default=d["epochs"])
        p.add_argument("--batch-size", type=int, default=d["batch_size"])
        p.add_argument("--learning-rate", type=float, default=d["learning_rate"])
        p.add_argument("--patience", type=int, help="early stop after N epochs without improvement")
        p.add_argument("--no-augment", action="store_true")
        p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("evaluate", help="metrics, confusion matrix and ROC of a model on a data set")
    p.add_argument("data", help="labelled data set (.npz)")
    p.add_argument("--model", default="des", help="des, hsc or a weights file")
    p.add_argument("-o", "--output-dir", help="write metrics table and PNG figures here")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--fit-temperature", metavar="VALIDATION",
                   help="labelled data set (.npz) to fit a temperature on; report the "
                        "calibration error before and after scaling")
    p = sub.add_parser("calibrate", help="real vs simulated cutout statistics side by side")
    p.add_argument("real", help="real cutouts (.npz with X, optionally selection)")
    p.add_argument("--selection", help="only the real rows whose 'selection' is this (e.g. random)")
    p.add_argument("-n", "--rows", type=int, default=200, help="simulated cutouts (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resample", default="bilinear",
                   choices=["antialias", "bilinear", "nearest", "mixed"],
                   help="how simulated 256 px cutouts become 64 px (default: bilinear)")
    p.add_argument("--randomize", action="store_true", help="with domain randomisation")
    p.add_argument("-o", "--output-dir", help="write the table (ECSV) and a contact sheet (PNG)")

    p = sub.add_parser("baselines", help="SVM and random-forest baselines on a labelled feature catalog")
    p.add_argument("data_dir", help="folder with hsc_LSBGs.dat and hsc_artifacts.csv "
                                    "(Greco et al. 2018; downloaded by the user)")
    p.add_argument("-o", "--output-dir", default="baselines_output", help="tables and ROC figure")
    p.add_argument("--folds", type=int, default=10, help="cross-validation folds (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws for intervals")

    p = sub.add_parser("bench", help="throughput figures, each a ratio measured in one run")
    p.add_argument("--rows", type=int, default=100, help="cutouts per measurement")
    p.add_argument("--latency", type=float, default=0.1, help="loopback server latency (s)")
    p.add_argument("--workers", type=int, default=8, help="concurrent requests")
    p.add_argument("--coords", action="append", default=[], metavar="PATH",
                   help="catalog with ra,dec whose positions the end-to-end figure uses, e.g. "
                        "the DeepShadows Baseline_*.csv (repeat per file; default: simulated "
                        "positions)")
    p.add_argument("--e2e-rows", type=int, default=2000, metavar="N",
                   help="rows of the end-to-end figure (default 2000; 0: leave it out)")
    p.add_argument("--cache", help="cutout cache to warm and read (default: a temporary "
                                   "directory, removed afterwards)")
    p.add_argument("--memory-rows", type=int, nargs="+", default=[], metavar="N",
                   help="catalog sizes of peak-memory runs of lsbg-classify classify "
                        "(e.g. 2000 8000 1000000; default: none)")
    p.add_argument("--memory-scored", type=int, default=4000, metavar="N",
                   help="rows of each memory-run catalog that are scored (default 4000)")
    p.add_argument("--train-steps", type=int, default=8, metavar="N",
                   help="timed training steps per installed Keras backend (default 8; 0: leave "
                        "training out)")

    p = sub.add_parser("build-models", help="remake the bundled weights on the simulated sky")
    p.add_argument("-o", "--work-dir", default="runs/bundled", help="data sets, checkpoints, figures")
    p.add_argument("--real", action="append", default=[], metavar="NPZ",
                   help="real labelled cutouts (X, y[, selection]) to score with the DES model")
    p.add_argument("--finetune-real", metavar="NPZ",
                   help="real labelled DES cutouts to fine-tune the DES model on; what that "
                        "buys is estimated by 5-fold cross-fitting")
    p.add_argument("--ship-finetuned", action="store_true",
                   help="ship the model fine-tuned on --finetune-real (default: the "
                        "simulated-sky model)")
    p.add_argument("--install", action="store_true",
                   help="replace the weights in this installation's lsbg_classify/data/models")
    p.add_argument("--threshold-real", metavar="NPZ",
                   help="real labelled DES cutouts whose 'random' rows choose the class "
                        "threshold by cross-validation (default: threshold 0.5)")
    p.add_argument("--des-cutouts", type=int,
                   help="simulated DES training cutouts (default: recipes.RECIPE['des_train'])")
    p.add_argument("--des-epochs", type=int,
                   help="DES epochs (default: recipes.RECIPE['des_epochs'])")
    p.add_argument("--des-patience", type=int, help="early stop on validation loss (default: none)")
    p.add_argument("--members", type=int,
                   help="snapshots averaged by the teacher (default: recipes.RECIPE['ensemble_members'])")
    p.add_argument("--distil-cutouts", type=int,
                   help="simulated cutouts the teacher labels for distillation "
                        "(default: recipes.RECIPE['distil_cutouts'])")
    p.add_argument("--des-time-budget", type=float, metavar="MINUTES",
                   help="stop DES training before an epoch that would end past this many minutes")
    p.add_argument("--workers", type=int, default=2, help="processes for simulation")

    p = sub.add_parser("reproduce", help="the DeepShadows paper's experiment, from the public "
                                         "catalogs to an HTML report (resumable)")
    p.add_argument("--workdir", default="deepshadows_reproduction",
                   help="downloads, cutouts, weights, metrics and report; rerun to resume")
    p.add_argument("--epochs", type=int, default=TRAIN_DEFAULTS["epochs"],
                   help="DES training epochs (default: the paper's 100)")
    p.add_argument("--finetune-epochs", type=int, default=FINETUNE_DEFAULTS["epochs"],
                   help="HSC fine-tuning epochs (default: the paper's 30)")
    p.add_argument("--subset", type=int, metavar="N",
                   help="quick run: N objects per class in every set (at least 5)")
    p.add_argument("--seed", type=int, default=0, help="subsets, HSC sets, training, bootstrap")
    p.add_argument("--base-url", help="Legacy Surveys viewer (default: the public one, or "
                                      "$LSBG_CLASSIFY_LEGACYSURVEY_URL)")
    p.add_argument("--data-url", help="where the DeepShadows data files are (default: the "
                                      "paper's repository, or $LSBG_CLASSIFY_DEEPSHADOWS_URL)")
    p.add_argument("--workers", type=int, default=8, help="concurrent cutout requests (default 8)")
    p.add_argument("--cache", help="cutout cache directory (default: the user cache directory)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws for intervals")
    p.add_argument("--quiet", action="store_true", help="no progress output")

    p = sub.add_parser("inspect", help="inspection sheets (PNG and HTML) of a scored catalog: "
                                       "top candidates, most uncertain, disagreements")
    p.add_argument("input", help="scored catalog (the output of classify)")
    p.add_argument("-o", "--output-dir", required=True, help="where the sheets are written")
    p.add_argument("--top", type=int, default=48, metavar="N", help="rows per sheet (default 48)")
    p.add_argument("--prob-col", default="lsbg_prob",
                   help="probability column of the model (default: lsbg_prob)")
    p.add_argument("--compare-col", metavar="COL",
                   help="probability column of a second model: adds the disagreement sheet")
    p.add_argument("--threshold", type=float, default=0.5, help="class threshold (default 0.5)")
    _add_catalog_options(p)
    _add_source_options(p)

    p = sub.add_parser("inject", help="injection-recovery: completeness against surface "
                                      "brightness and size")
    p.add_argument("-o", "--output-dir", required=True,
                   help="where completeness.ecsv and completeness.png are written")
    p.add_argument("--model", help="weights file, des or hsc (default: the bundled model of --survey)")
    p.add_argument("--survey", default="des", choices=["des", "hsc"])
    p.add_argument("--mu0", default="23,27,0.5", metavar="START,STOP,STEP",
                   help="central surface brightness grid, g mag/arcsec^2 (default 23,27,0.5)")
    p.add_argument("--re", default="2.5,12.5,2.5", metavar="START,STOP,STEP",
                   help="effective radius grid, arcsec (default 2.5,12.5,2.5)")
    p.add_argument("--per-cell", type=int, default=20, help="galaxies per grid cell (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--background", default="simulated", choices=["simulated", "simulated-artifacts"],
                   help="simulated sky to inject into when no --image is given (default: "
                        "blank fields)")
    p.add_argument("--image", action="append", default=[], metavar="BAND=PATH",
                   help="inject into your own FITS image with WCS instead (repeat per band)")
    p.add_argument("--psf-fwhm", type=float, default=1.0,
                   help="--image: Gaussian PSF FWHM in arcsec (default 1.0)")
    p.add_argument("--zero-point", type=float, default=22.5,
                   help="--image: AB zero point of the pixel values (default 22.5, nanomaggies)")
    p.add_argument("--sersic-n", type=float, default=1.0, help="Sersic index (default 1)")
    p.add_argument("--threshold", type=float, default=0.5, help="class threshold (default 0.5)")
    return parser


def _cache_arg(args):
    if getattr(args, "no_cache", False):
        return None
    from .cache import CutoutCache

    return CutoutCache(args.cache) if args.cache else CutoutCache()


def _backend_from_args(args):
    from .surveys import get_backend

    options = {}
    if args.base_url:
        options["base_url"] = args.base_url
    if args.image_format:
        options["image_format"] = args.image_format
    if args.backend == "local":
        images = {}
        for item in args.image:
            band, sep_, path = item.partition("=")
            if not sep_:
                raise UsageError(f"--image expects BAND=PATH, got {item!r}")
            images.setdefault(band, []).append(path)
        options["images"] = images
    if args.backend == "simulated":
        options["seed"] = args.seed
    try:
        return get_backend(args.backend, survey=args.survey, **options)
    except ValueError as exc:
        if str(exc).startswith("base_url:"):  # the remote backends' URL check
            raise UsageError("--base-url" + str(exc)[len("base_url"):]) from None
        raise


def _check_output(out, overwrite):
    """Refuse an output that cannot be written before any work is done."""
    from .catalog import format_from_path

    if out.is_dir():
        raise UsageError(f"{out} is a directory; give a file name")
    if not out.parent.is_dir():
        raise UsageError(f"the output directory {out.parent} does not exist")
    if format_from_path(out) is None:
        raise UsageError(f"cannot tell the table format from {out.name!r}; use an ending such as "
                         ".fits, .csv, .ecsv, .parquet or .vot")
    if out.exists() and not overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")


#: Exit status of ``classify`` when the output was written but no row has a score.
EXIT_NOTHING_SCORED = 3

# Rows of the input written to a trial file before any fetch, to learn whether
# the output format can hold the catalog and the result columns.
_TRIAL_ROWS = 1000


def _check_output_holds(table, out, args):
    """Write the head of what classify will write beside ``out``, then remove it.

    A format that cannot hold a column (its name or its type) fails here,
    before anything is fetched, instead of after the last row is scored.
    """
    import os
    import tempfile

    from .catalog import CatalogError, format_from_path, write_catalog
    from .pipeline import result_template

    template = result_template(table[:_TRIAL_ROWS], args.mc_samples, args.messages,
                               args.overwrite_columns)
    try:
        fd, trial = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as exc:
        raise UsageError(f"cannot write in {out.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        write_catalog(template, trial, format=format_from_path(out), overwrite=True)
    except CatalogError as exc:
        raise UsageError(str(exc).replace(trial, str(out))) from None
    finally:
        Path(trial).unlink(missing_ok=True)


def _check_checkpoint(checkpoint):
    if checkpoint.exists() and not checkpoint.is_dir():
        raise UsageError(f"{checkpoint} exists and is not a checkpoint folder; remove or rename "
                         "it (classify keeps its finished chunks there)")


def _cmd_classify(args):
    from .catalog import same_file, write_catalog
    from .pipeline import MESSAGE_COLUMN, check_options, classify_catalog

    check_options(args.threshold, args.chunk_size, args.workers, args.batch_size,
                  args.mc_samples, args.temperature)
    out = Path(args.output)
    _check_output(out, args.overwrite)
    if same_file(args.input, out):
        raise UsageError("the output file must differ from the input file")
    checkpoint = out.with_name(out.name + ".checkpoint")
    _check_checkpoint(checkpoint)
    table = _read_input(args)
    _check_output_holds(table, out, args)
    with _backend_from_args(args) as backend:
        scored = classify_catalog(
            table, survey=args.survey, backend=backend, model=args.model,
            threshold=args.threshold, ra_col=args.ra_col, dec_col=args.dec_col,
            on_invalid=args.on_invalid, cache=_cache_arg(args) or False, refresh=args.refresh,
            workers=args.workers, batch_size=args.batch_size,
            progress=False if args.quiet else None,
            checkpoint_dir=checkpoint, chunk_size=args.chunk_size,
            mc_samples=args.mc_samples, temperature=args.temperature,
            overwrite_columns=args.overwrite_columns, messages=True, tta=args.tta,
        )
    reasons = scored[MESSAGE_COLUMN]
    if not args.messages:
        scored.remove_column(MESSAGE_COLUMN)
    write_catalog(scored, out, overwrite=args.overwrite)
    shutil.rmtree(checkpoint, ignore_errors=True)
    _print_summary(scored, out)
    _print_reasons(scored["lsbg_status"], reasons)
    if not (scored["lsbg_status"] == "ok").any():
        print(f"lsbg-classify classify: no row could be scored (exit status "
              f"{EXIT_NOTHING_SCORED})", file=sys.stderr)
        return EXIT_NOTHING_SCORED
    return 0


def _print_summary(scored, out):
    import numpy as np

    values, counts = np.unique(np.asarray(scored["lsbg_status"]), return_counts=True)
    by_status = ", ".join(f"{v}: {c}" for v, c in zip(values, counts))
    n_lsbg = int(np.sum(np.asarray(scored["lsbg_class"].filled(0)) == 1)) if hasattr(
        scored["lsbg_class"], "filled") else int(np.sum(scored["lsbg_class"] == 1))
    print(f"wrote {out}: {len(scored)} rows ({by_status}); {n_lsbg} classified as LSBG")


# Distinct reasons shown in the summary, and the length each is cut to.
_SHOWN_REASONS = 5
_REASON_WIDTH = 240


def _print_reasons(row_status, reasons):
    """On stderr: rows per status, and the first few distinct reasons rows were not scored."""
    import collections

    statuses = [str(s) for s in row_status]
    counts = collections.Counter(statuses)
    print("rows by status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
          file=sys.stderr)
    distinct = collections.Counter((st, str(why)) for st, why in zip(statuses, reasons)
                                   if st != "ok")
    for (st, why), n in list(distinct.items())[:_SHOWN_REASONS]:
        why = " ".join(why.split()) or "no reason recorded"
        if len(why) > _REASON_WIDTH:
            why = why[: _REASON_WIDTH - 3] + "..."
        print(f"  {st} ({n} row{'s' if n != 1 else ''}): {why}", file=sys.stderr)
    if len(distinct) > _SHOWN_REASONS:
        print(f"  ... {len(distinct) - _SHOWN_REASONS} other reason(s); --messages writes "
              "each row's reason to the output", file=sys.stderr)


def _cmd_demo(args):
    from .demo import run_demo

    run_demo(args.output_dir, n_rows=args.rows, survey=args.survey, seed=args.seed,
             progress=False if args.quiet else None)


def _cmd_cache(args):
    from .cache import CutoutCache

    cache = CutoutCache(args.cache) if args.cache else CutoutCache()
    if args.action == "info":
        info = cache.info()
        for key, value in info.items():
            print(f"{key}: {value}")
    else:
        removed = cache.clear(backend=args.backend)
        print(f"removed {removed} cached cutouts from {cache.directory}")


def _cmd_fetch(args):
    import numpy as np

    from .catalog import extract_positions
    from .pipeline import fetch_images
    from .preprocess import as_uint8
    from .training import save_dataset

    table = _read_input(args)
    if args.label_col not in table.colnames:
        raise UsageError(f"label column {args.label_col!r} not in {args.input}; "
                         f"columns: {', '.join(table.colnames)}")
    labels = np.asarray(table[args.label_col])
    positions = extract_positions(table, ra_col=args.ra_col, dec_col=args.dec_col, on_invalid="flag")
    with _backend_from_args(args) as backend:
        fetched = fetch_images(positions.ra, positions.dec, backend, cache=_cache_arg(args) or False,
                               refresh=args.refresh, workers=args.workers,
                               progress=False if args.quiet else None, valid=positions.valid)
    ok = fetched.status == "ok"
    save_dataset(args.output, as_uint8(fetched.images[ok]), labels[ok].astype(np.int8),
                 ra=positions.ra[ok], dec=positions.dec[ok], row=np.flatnonzero(ok))
    print(f"wrote {args.output}: {ok.sum()} of {len(ok)} rows have cutouts")


def _cmd_simulate(args):
    from .simulation import make_training_set
    from .training import save_dataset

    X, y = make_training_set(args.rows, survey=args.survey, seed=args.seed,
                             randomize=not args.no_randomize, workers=args.workers)
    save_dataset(args.output, X, y)
    print(f"wrote {args.output}: {len(y)} simulated cutouts ({int(y.sum())} LSBGs)")


def _cmd_train(args):
    from .training import load_dataset, split_dataset, train

    X, y, _ = load_dataset(args.data)
    if args.val:
        X_val, y_val, _ = load_dataset(args.val)
    else:
        train_idx, val_idx = split_dataset(len(y), (1 - args.val_fraction, args.val_fraction),
                                           seed=args.seed)
        X, y, X_val, y_val = X[train_idx], y[train_idx], X[val_idx], y[val_idx]
    record = train(X, y, X_val, y_val, args.output_dir, epochs=args.epochs,
                   batch_size=args.batch_size, learning_rate=args.learning_rate,
                   initial_weights=args.weights, augment=not args.no_augment,
                   patience=args.patience, seed=args.seed)
    print(f"best epoch {record['best_epoch']} of {record['epochs_run']}: validation accuracy "
          f"{record['best_val_accuracy']:.3f}; weights in {Path(args.output_dir) / 'best.weights.h5'}")


def _cmd_evaluate(args):
    import numpy as np

    from .evaluate import evaluate_model
    from .model import load_model
    from .training import load_dataset

    X, y, extra = load_dataset(args.data)
    model = load_model(args.model)
    temperature = (_fitted_temperature(model, args.fit_temperature, args.data)
                   if args.fit_temperature else None)
    subsets = {"all": np.ones(len(y), bool)}
    # Sets such as the real development set mark how each cutout was chosen.
    for name in np.unique(extra["selection"]) if "selection" in extra else ():
        subsets[str(name)] = extra["selection"] == name
    for label, rows in subsets.items():
        table, prob = evaluate_model(model, X[rows], y[rows], args.output_dir, args.threshold,
                                     label=label if len(subsets) > 1 else "test")
        m = table.meta
        print(f"{Path(args.data).name} [{label}]: n = {m['n']}; confusion TN {m['tn']} FP {m['fp']} "
              f"FN {m['fn']} TP {m['tp']}")
        table.pprint(max_lines=-1)
        _report_calibration(y[rows], prob, temperature, args.output_dir,
                            label if len(subsets) > 1 else "test", f"{model.name}: {label}")


def _fitted_temperature(model, validation, evaluated):
    from .reliability import fit_temperature
    from .training import load_dataset

    X_val, y_val, _ = load_dataset(validation)
    temperature = fit_temperature(y_val, model.predict(X_val))
    print(f"temperature fitted on {Path(validation).name} (n = {len(y_val)}): T = {temperature:.3f}")
    if Path(validation).resolve() == Path(evaluated).resolve():
        print("note: T was fitted on the evaluated set itself, so the calibration error after "
              "scaling is optimistic", file=sys.stderr)
    return temperature


def _report_calibration(y, prob, temperature, output_dir, label, title):
    from .reliability import N_BINS, apply_temperature, calibration_summary, plot_reliability

    summary = calibration_summary(y, prob, temperature)
    text = f"expected calibration error ({N_BINS} bins): {summary['ece']:.3f}"
    if temperature is not None:
        text += f"; after temperature scaling (T = {temperature:.3f}): {summary['ece_scaled']:.3f}"
    print(text)
    if output_dir:
        curves = {"model": prob}
        if temperature is not None:
            curves[f"T = {temperature:.2f}"] = apply_temperature(prob, temperature)
        plot_reliability(y, curves, Path(output_dir) / f"reliability_{label}.png", title=title)


def _parse_rows(text, n_rows):
    """Row numbers of ``--rows`` (e.g. "0,5,7"), each checked against the catalog length."""
    rows = []
    for item in text.split(","):
        try:
            rows.append(int(item.strip()))
        except ValueError:
            raise UsageError(f"--rows expects comma-separated row numbers, got {item.strip()!r}"
                             ) from None
    outside = [r for r in rows if not 0 <= r < n_rows]
    if outside:
        raise UsageError(f"row(s) {', '.join(map(str, outside))} out of range: the catalog has "
                         f"{n_rows} rows, numbered 0 to {n_rows - 1}")
    return rows


def _cmd_explain(args):
    import warnings

    import numpy as np
    from astropy.utils.exceptions import AstropyUserWarning

    from .catalog import extract_positions
    from .explain import gradcam, save_gradcam_png
    from .model import load_model
    from .pipeline import fetch_images

    out = Path(args.output)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UsageError(f"cannot tell the figure format from {out.name!r}; end it in .png, .pdf "
                         "or .svg")
    if not out.parent.is_dir():
        raise UsageError(f"the output directory {out.parent} does not exist")
    table = _read_input(args)
    rows = _parse_rows(args.rows, len(table))
    with warnings.catch_warnings():
        # Invalid rows are reported below by their catalog row numbers.
        warnings.simplefilter("ignore", AstropyUserWarning)
        positions = extract_positions(table[rows], ra_col=args.ra_col, dec_col=args.dec_col,
                                      on_invalid="flag")
    invalid = [r for r, ok in zip(rows, positions.valid) if not ok]
    if invalid:
        raise UsageError(f"row(s) {', '.join(map(str, invalid))} have no valid position")
    model = load_model(args.model or args.survey)
    with _backend_from_args(args) as backend:
        fetched = fetch_images(positions.ra, positions.dec, backend,
                               cache=_cache_arg(args) or False, refresh=args.refresh,
                               workers=args.workers, progress=False if args.quiet else None)
    ok = fetched.status == "ok"
    for k in np.flatnonzero(~ok):
        print(f"row {rows[k]}: {fetched.status[k]} ({fetched.messages.get(int(k), 'no image')});"
              " left out", file=sys.stderr)
    if not ok.any():
        raise UsageError("none of the requested rows has an image to explain")
    images = fetched.images[ok]
    prob = model.predict(images)
    kept = [r for r, good in zip(rows, ok) if good]
    captions = [f"row {r}\nRA {ra:.5f} Dec {dec:+.5f}\np = {p:.3f}"
                for r, ra, dec, p in zip(kept, positions.ra[ok], positions.dec[ok], prob)]
    save_gradcam_png(images, gradcam(model, images), out, captions=captions,
                     title=f"Grad-CAM, {model.name}: {Path(args.input).name}")
    print(f"wrote {out}: Grad-CAM maps of row(s) {', '.join(map(str, kept))}")


def _real_set(path):
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        selection = data["selection"] if "selection" in data.files else None
        return data["X"], data["y"].astype(np.int8), selection


def _cmd_build_models(args):
    from .model import bundled_weights_path
    from .recipes import build_bundled_models

    recipe = {k: v for k, v in (("des_train", args.des_cutouts), ("des_epochs", args.des_epochs),
                                ("des_patience", args.des_patience),
                                ("ensemble_members", args.members),
                                ("distil_cutouts", args.distil_cutouts),
                                ("des_time_budget_min", args.des_time_budget)) if v is not None}
    install = bundled_weights_path("des").parent if args.install else None
    cards = build_bundled_models(
        args.work_dir, real_sets={Path(p).stem: _real_set(p) for p in args.real},
        real_finetune=_real_set(args.finetune_real) if args.finetune_real else None,
        ship_finetuned=args.ship_finetuned,
        threshold_set=_real_set(args.threshold_real) if args.threshold_real else None,
        install_dir=install, workers=args.workers, recipe=recipe)
    for name, card in cards.items():
        for label, m in card["metrics"].items():
            for subset, mm in (m.items() if "all" in m else [("", m)]):
                lo, hi = mm["intervals_95"]["accuracy"]
                print(f"{name}: {label} {subset}: accuracy {mm['accuracy']:.3f} [{lo:.3f}, {hi:.3f}],"
                      f" ROC AUC {mm['roc_auc']:.3f} (n = {mm['n']})")


def _cmd_calibrate(args):
    import numpy as np

    from .calibration import compare_real_vs_simulated, contact_sheet, discriminator_test
    from .simulation import SIMULATOR_VERSION, make_training_set

    with np.load(args.real, allow_pickle=False) as data:
        real = data["X"]
        if args.selection:
            if "selection" not in data.files:
                raise UsageError(f"{args.real} has no 'selection' array")
            real = real[data["selection"] == args.selection]
    if len(real) == 0:
        raise UsageError(f"no real cutouts selected from {args.real}")
    sim, _ = make_training_set(args.rows, survey="des", seed=args.seed, randomize=args.randomize,
                               resample=args.resample)
    table = compare_real_vs_simulated(real, sim)
    print(f"{len(real)} real cutouts from {Path(args.real).name} vs {len(sim)} simulated "
          f"(simulator {SIMULATOR_VERSION}, resample {args.resample}); z = (sim - real) / real scatter")
    table.pprint(max_lines=-1, max_width=-1)
    for model in ("logistic", "boosting"):
        d = discriminator_test(real, sim, seed=args.seed, model=model)
        print(f"real-vs-simulated background discriminator ({model}): AUC {d['auc']:.2f} "
              f"± {d['auc_std']:.2f} (0.5 = indistinguishable; {d['n_real']} images each)")
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        table.write(out / "calibration.ecsv", overwrite=True)
        contact_sheet(real, sim, out / "real_vs_simulated.png")
        print(f"wrote {out / 'calibration.ecsv'} and {out / 'real_vs_simulated.png'}")


def _cmd_baselines(args):
    from .baselines import run_greco_benchmark

    table = run_greco_benchmark(args.data_dir, args.output_dir, folds=args.folds, seed=args.seed,
                                n_boot=args.bootstrap)
    table.pprint(max_lines=-1, max_width=-1)
    print(f"wrote tables and figures to {args.output_dir}")


def _cmd_bench(args):
    from .benchmark import run_benchmarks

    run_benchmarks(rows=args.rows, latency=args.latency, workers=args.workers,
                   coords=args.coords, e2e_rows=args.e2e_rows, cache=args.cache,
                   memory_rows=args.memory_rows, memory_scored=args.memory_scored,
                   train_steps=args.train_steps)


def _cmd_reproduce(args):
    from .reproduce import run_reproduction

    outcome = run_reproduction(
        args.workdir, epochs=args.epochs, finetune_epochs=args.finetune_epochs,
        subset=args.subset, seed=args.seed, base_url=args.base_url, data_url=args.data_url,
        workers=args.workers, cache=args.cache or True, quiet=args.quiet, n_boot=args.bootstrap)
    results = outcome["results"]
    for key, item in results["evaluations"].items():
        paper = results["paper"].get(key, {})
        shown = []
        for metric in ("accuracy", "roc_auc"):
            m = item["metrics"][metric]
            if m["value"] is None:
                continue
            text = f"{metric} {m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
            if metric in paper:
                text += f" (paper {paper[metric]:.3f})"
            shown.append(text)
        print(f"{item['title']}: " + ", ".join(shown) + f" (n = {item['n']})")
    print(f"report: {outcome['report']}")


def _cmd_inspect(args):
    import numpy as np

    from .catalog import extract_positions
    from .inspection import inspection_rows, write_inspection_sheets
    from .pipeline import fetch_images

    table = _read_input(args)
    selected = inspection_rows(table, args.top, args.prob_col, args.compare_col, args.threshold)
    rows = np.unique(np.concatenate([np.zeros(0, int), *selected.values()])).astype(int)
    positions = extract_positions(table, ra_col=args.ra_col, dec_col=args.dec_col,
                                  on_invalid="flag")
    # Only the rows on the sheets are fetched; after classify they come from the cache.
    with _backend_from_args(args) as backend:
        fetched = fetch_images(positions.ra[rows], positions.dec[rows], backend,
                               cache=_cache_arg(args) or False, refresh=args.refresh,
                               workers=args.workers, progress=False if args.quiet else None,
                               valid=positions.valid[rows])
    images = {int(r): fetched.images[i] for i, r in enumerate(rows)}
    written = write_inspection_sheets(table, images, args.output_dir, n=args.top,
                                      second_prob_col=args.compare_col, survey=args.survey,
                                      prob_col=args.prob_col, threshold=args.threshold,
                                      ra_col=args.ra_col, dec_col=args.dec_col)
    missing = int(np.sum(fetched.status != "ok"))
    if missing:
        print(f"warning: {missing} cutouts could not be fetched and are shown blank",
              file=sys.stderr)
    for kind, paths in written.items():
        print(f"{kind}: {len(selected[kind])} rows -> {paths['png']}, {paths['html']}")


def _cmd_inject(args):
    from .injection import injection_recovery, parse_grid, plot_completeness

    mu0 = parse_grid(args.mu0, "--mu0")
    r_e = parse_grid(args.re, "--re")
    background = args.background
    if args.image:
        source = argparse.Namespace(survey=args.survey, backend="local", base_url=None,
                                    image_format=None, image=args.image)
        background = _backend_from_args(source)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        table = injection_recovery(args.model, mu0, r_e, n_per_cell=args.per_cell,
                                   background=background, survey=args.survey, seed=args.seed,
                                   sersic_n=args.sersic_n, threshold=args.threshold,
                                   psf_fwhm=args.psf_fwhm, zero_point=args.zero_point)
    finally:
        if not isinstance(background, str):
            background.close()
    table.write(out / "completeness.ecsv", overwrite=True)
    plot_completeness(table, out / "completeness.png")
    table.pprint(max_lines=-1, max_width=-1)
    print(f"wrote {out / 'completeness.ecsv'} and {out / 'completeness.png'}")


COMMANDS = {
    "baselines": _cmd_baselines,
    "calibrate": _cmd_calibrate,
    "bench": _cmd_bench,
    "build-models": _cmd_build_models,
    "classify": _cmd_classify,
    "demo": _cmd_demo,
    "cache": _cmd_cache,
    "fetch": _cmd_fetch,
    "simulate": _cmd_simulate,
    "train": _cmd_train,
    "finetune": _cmd_train,
    "evaluate": _cmd_evaluate,
    "explain": _cmd_explain,
    "reproduce": _cmd_reproduce,
    "inspect": _cmd_inspect,
    "inject": _cmd_inject,
}


def _one_line(text):
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] + (" [...]" if len(lines) > 1 else "")) if lines else ""


def main(argv=None):
    """Run the command line; returns the exit status.

    0: done; 2: an error, reported on one line of standard error (bad
    arguments or input, an option the run cannot work with, a file that
    cannot be read or written); 3 (``classify``): the output was written
    but no row could be scored; 130: interrupted.  An unexpected exception
    (a bug) shows its traceback.
    """
    args = build_parser().parse_args(argv)
    from .catalog import CatalogError
    from .model import MissingExtraError
    from .pipeline import OptionError
    from .surveys import FetchError

    def fail(message):
        print(f"lsbg-classify {args.command}: error: {_one_line(message)}", file=sys.stderr)
        return 2

    try:
        return COMMANDS[args.command](args) or 0
    except OptionError as exc:
        return fail(exc.naming("--" + exc.option.replace("_", "-")))
    except (UsageError, CatalogError, FetchError, FileNotFoundError, ValueError,
            MissingExtraError) as exc:
        return fail(exc)
    except OSError as exc:  # the file system's word: permissions, a full disk, ...
        return fail(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
