"""``lsbg-classify reproduce``: the DeepShadows paper's experiment, end to end."""

from ..training.defaults import FINETUNE_DEFAULTS, TRAIN_DEFAULTS
from .common import HelpFormatter, LibraryDefault, add_option

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``reproduce`` to ``subparsers``."""
    p = subparsers.add_parser("reproduce", help="the DeepShadows paper's experiment, from the "
                                                "public catalogs to an HTML report (resumable)",
                              formatter_class=HelpFormatter)
    add_option(p, "--work-dir", aliases=("--workdir",), default="deepshadows_reproduction",
               help="downloads, cutouts, weights, metrics and report; rerun to resume")
    p.add_argument("--epochs", type=int, default=TRAIN_DEFAULTS["epochs"],
                   help="DES training epochs (the paper's)")
    p.add_argument("--finetune-epochs", type=int, default=FINETUNE_DEFAULTS["epochs"],
                   help="HSC fine-tuning epochs (the paper's)")
    p.add_argument("--subset", type=int, metavar="N",
                   help="quick run: N objects per class in every set (at least 5)")
    p.add_argument("--seed", type=int, default=0, help="subsets, HSC sets, training, bootstrap")
    p.add_argument("--base-url", help="Legacy Surveys viewer (default: the public one, or "
                                      "$LSBG_CLASSIFY_LEGACYSURVEY_URL)")
    p.add_argument("--data-url", help="where the DeepShadows data files are (default: the "
                                      "paper's repository, or $LSBG_CLASSIFY_DEEPSHADOWS_URL)")
    add_option(p, "--threads", aliases=("--workers",), type=int,
               default=LibraryDefault("..pipeline.options", "DEFAULT_WORKERS"),
               help="concurrent cutout requests")
    p.add_argument("--cache", help="cutout cache directory (default: the user cache directory)")
    p.add_argument("--bootstrap", type=int, default=LibraryDefault("..reproduction.reproduce", "N_BOOTSTRAP"),
                   help="bootstrap draws for intervals")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)
    return p


def run(args):
    """Run (or resume) the reproduction in ``args.work_dir`` and print its figures."""
    from ..reproduction.reproduce import run_reproduction

    outcome = run_reproduction(
        args.work_dir, epochs=args.epochs, finetune_epochs=args.finetune_epochs,
        subset=args.subset, seed=args.seed, base_url=args.base_url, data_url=args.data_url,
        workers=args.threads, cache=args.cache or True, quiet=args.quiet, n_boot=args.bootstrap)
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
    return 0
