"""``lsbg-classify calibrate``: real against simulated cutout statistics."""

from pathlib import Path

from .common import HelpFormatter, UsageError, add_option, add_outdir_option

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``calibrate`` to ``subparsers``."""
    p = subparsers.add_parser("calibrate", help="real vs simulated cutout statistics side by side",
                              formatter_class=HelpFormatter)
    p.add_argument("real", help="real cutouts (.npz with X, optionally selection)")
    p.add_argument("--selection", help="only the real rows whose 'selection' is this (e.g. random)")
    add_option(p, "-n", "--count", aliases=("--rows",), type=int, default=200,
               help="simulated cutouts")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated sky and the tests")
    p.add_argument("--resample", default="bilinear",
                   choices=["antialias", "bilinear", "nearest", "mixed"],
                   help="how simulated 256 px cutouts become 64 px")
    p.add_argument("--randomize", action="store_true", help="with domain randomisation")
    p.add_argument("--depth", type=float, default=1.0,
                   help="sky noise relative to the DES DR1 depth (0.6 matches Legacy Surveys DR9)")
    add_outdir_option(p, what="write the table (ECSV) and a contact sheet (PNG) here "
                              "(default: print only)")
    p.set_defaults(run=run)
    return p


def run(args):
    """Compare ``args.real`` with ``args.count`` simulated cutouts."""
    import numpy as np

    from ..diagnostics.sim_vs_real import compare_with_simulation
    from ..simulation.conditions import SIMULATOR_VERSION

    with np.load(args.real, allow_pickle=False) as data:
        real = data["X"]
        if args.selection:
            if "selection" not in data.files:
                raise UsageError(f"{args.real} has no 'selection' array")
            real = real[data["selection"] == args.selection]
    if len(real) == 0:
        raise UsageError(f"no real cutouts selected from {args.real}")
    if not np.isfinite(args.depth) or args.depth <= 0:
        raise UsageError(f"--depth must be a positive number, not {args.depth:g}")
    found = compare_with_simulation(real, args.count, seed=args.seed, randomize=args.randomize,
                                    resample=args.resample, output_dir=args.outdir,
                                    depth=args.depth)
    print(f"{len(real)} real cutouts from {Path(args.real).name} vs {found.n_simulated} simulated "
          f"(simulator {SIMULATOR_VERSION}, resample {args.resample}, depth {args.depth:g}); "
          "z = (sim - real) / real scatter")
    found.table.pprint(max_lines=-1, max_width=-1)
    for model, d in found.discriminators.items():
        print(f"real-vs-simulated background discriminator ({model}): AUC {d['auc']:.2f} "
              f"± {d['auc_std']:.2f} (0.5 = indistinguishable; {d['n_real']} images each)")
    if found.written:
        print(f"wrote {' and '.join(map(str, found.written))}")
    return 0
