"""``lsbg-classify train`` and ``finetune``: DeepShadows with the paper's settings."""

from pathlib import Path

from ..training.defaults import FINETUNE_DEFAULTS, TRAIN_DEFAULTS
from .common import HelpFormatter, add_outdir_option

__all__ = ["add_parser", "run"]

_COMMANDS = (
    ("train", "train DeepShadows (paper defaults)", TRAIN_DEFAULTS),
    ("finetune", "fine-tune weights on a new survey (paper defaults)", FINETUNE_DEFAULTS),
)


def add_parser(subparsers):
    """Add ``train`` and ``finetune`` to ``subparsers``; returns the two parsers."""
    parsers = []
    for name, helptext, defaults in _COMMANDS:
        p = subparsers.add_parser(name, help=helptext, formatter_class=HelpFormatter)
        p.add_argument("data", help="training data set (.npz)")
        add_outdir_option(p, required=True,
                          what="weights, history and figures (best.weights.h5 is the best epoch)")
        p.add_argument("--val", help="validation data set (default: a split of DATA)")
        p.add_argument("--val-fraction", type=float, default=0.125,
                       help="share of DATA held out for validation when --val is not given")
        required = name == "finetune"
        p.add_argument("--weights", required=required,
                       help="initial weights (.weights.h5)" + (" (required)" if required else ""))
        p.add_argument("--epochs", type=int, default=defaults["epochs"], help="training epochs")
        p.add_argument("--batch-size", type=int, default=defaults["batch_size"],
                       help="images per gradient step")
        p.add_argument("--learning-rate", type=float, default=defaults["learning_rate"],
                       help="SGD learning rate")
        p.add_argument("--patience", type=int, help="early stop after N epochs without improvement")
        p.add_argument("--no-augment", action="store_true",
                       help="no random flips, rotations and shifts")
        p.add_argument("--seed", type=int, default=0, help="validation split and training seed")
        p.set_defaults(run=run)
        parsers.append(p)
    return parsers


def run(args):
    """Train on ``args.data``; the weights go to ``args.outdir``."""
    from ..training.train import load_dataset, split_dataset, train

    X, y, _ = load_dataset(args.data)
    if args.val:
        X_val, y_val, _ = load_dataset(args.val)
    else:
        train_idx, val_idx = split_dataset(len(y), (1 - args.val_fraction, args.val_fraction),
                                           seed=args.seed)
        X, y, X_val, y_val = X[train_idx], y[train_idx], X[val_idx], y[val_idx]
    record = train(X, y, X_val, y_val, args.outdir, epochs=args.epochs,
                   batch_size=args.batch_size, learning_rate=args.learning_rate,
                   initial_weights=args.weights, augment=not args.no_augment,
                   patience=args.patience, seed=args.seed)
    print(f"best epoch {record['best_epoch']} of {record['epochs_run']}: validation accuracy "
          f"{record['best_val_accuracy']:.3f}; weights in {Path(args.outdir) / 'best.weights.h5'}")
    return 0
