"""``lsbg-classify build-models``: remake the bundled weights on the simulated sky."""

from pathlib import Path

from .common import HelpFormatter, add_option

__all__ = ["add_parser", "run"]

# Options that override an entry of recipes.RECIPE, by the entry's key.
_RECIPE_OPTIONS = {"des_cutouts": "des_train", "des_epochs": "des_epochs",
                   "des_patience": "des_patience", "members": "ensemble_members",
                   "distil_cutouts": "distil_cutouts", "des_time_budget": "des_time_budget_min"}


def add_parser(subparsers):
    """Add ``build-models`` to ``subparsers``."""
    p = subparsers.add_parser("build-models", help="remake the bundled weights on the simulated sky",
                              formatter_class=HelpFormatter)
    add_option(p, "--work-dir", aliases=("-o",), default="runs/bundled",
               help="data sets, checkpoints, figures; rerun to resume")
    p.add_argument("--real", action="append", default=[], metavar="NPZ",
                   help="real labelled cutouts (X, y[, selection]) to score with the DES model "
                        "(repeat per file)")
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
                        "threshold by cross-validation (default: the library's default "
                        "threshold)")
    p.add_argument("--des-cutouts", type=int,
                   help="simulated DES training cutouts (default: recipes.RECIPE['des_train'])")
    p.add_argument("--des-epochs", type=int,
                   help="DES epochs (default: recipes.RECIPE['des_epochs'])")
    p.add_argument("--des-patience", type=int, help="early stop on validation loss (default: none)")
    p.add_argument("--members", type=int,
                   help="snapshots averaged by the teacher "
                        "(default: recipes.RECIPE['ensemble_members'])")
    p.add_argument("--distil-cutouts", type=int,
                   help="simulated cutouts the teacher labels for distillation "
                        "(default: recipes.RECIPE['distil_cutouts'])")
    p.add_argument("--des-time-budget", type=float, metavar="MINUTES",
                   help="stop DES training before an epoch that would end past this many minutes")
    add_option(p, "--processes", aliases=("--workers",), type=int, default=2,
               help="worker processes simulating cutouts")
    p.set_defaults(run=run)
    return p


def run(args):
    """Build the models and print their metrics."""
    from ..pipeline.model import bundled_weights_path
    from ..training.recipes import build_bundled_models
    from ..training.train import load_selection_set

    recipe = {key: getattr(args, option) for option, key in _RECIPE_OPTIONS.items()
              if getattr(args, option) is not None}
    install = bundled_weights_path("des").parent if args.install else None
    cards = build_bundled_models(
        args.work_dir, real_sets={Path(p).stem: load_selection_set(p) for p in args.real},
        real_finetune=load_selection_set(args.finetune_real) if args.finetune_real else None,
        ship_finetuned=args.ship_finetuned,
        threshold_set=load_selection_set(args.threshold_real) if args.threshold_real else None,
        install_dir=install, workers=args.processes, recipe=recipe)
    for name, card in cards.items():
        for label, m in card["metrics"].items():
            for subset, mm in (m.items() if "all" in m else [("", m)]):
                lo, hi = mm["intervals_95"]["accuracy"]
                print(f"{name}: {label} {subset}: accuracy {mm['accuracy']:.3f} [{lo:.3f}, {hi:.3f}],"
                      f" ROC AUC {mm['roc_auc']:.3f} (n = {mm['n']})")
    return 0
