"""``lsbg-classify inject``: injection-recovery completeness."""

from pathlib import Path

from .common import HelpFormatter, LibraryDefault, add_outdir_option, parse_images

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``inject`` to ``subparsers``."""
    p = subparsers.add_parser("inject", help="injection-recovery: completeness against surface "
                                             "brightness and size", formatter_class=HelpFormatter)
    add_outdir_option(p, required=True,
                      what="where completeness.ecsv and completeness.png are written")
    p.add_argument("--model", help="des, hsc or a weights file (default: the bundled model of "
                                   "--survey)")
    p.add_argument("--survey", default="des", choices=["des", "hsc"],
                   help="survey whose sky and bundled model are used")
    p.add_argument("--mu0", default=LibraryDefault("..diagnostics.injection", "DEFAULT_MU0_GRID"),
                   metavar="START,STOP,STEP",
                   help="central surface brightness grid, g mag/arcsec^2")
    p.add_argument("--re", default=LibraryDefault("..diagnostics.injection", "DEFAULT_RE_GRID"),
                   metavar="START,STOP,STEP", help="effective radius grid, arcsec")
    p.add_argument("--per-cell", type=int, default=LibraryDefault("..diagnostics.injection", "DEFAULT_PER_CELL"),
                   help="galaxies per grid cell")
    p.add_argument("--seed", type=int, default=0, help="positions, shapes, colours and skies")
    p.add_argument("--background", default="simulated", choices=["simulated", "simulated-artifacts"],
                   help="simulated sky to inject into when no --image is given (simulated: "
                        "blank fields)")
    p.add_argument("--image", action="append", default=[], metavar="BAND=PATH",
                   help="inject into your own FITS image with WCS instead (repeat per band)")
    p.add_argument("--psf-fwhm", type=float, default=LibraryDefault("..diagnostics.injection", "DEFAULT_PSF_FWHM"),
                   help="--image: Gaussian PSF FWHM in arcsec")
    p.add_argument("--zero-point", type=float,
                   default=LibraryDefault("..diagnostics.injection", "DEFAULT_ZERO_POINT"),
                   help="--image: AB zero point of the pixel values (22.5: nanomaggies)")
    p.add_argument("--sersic-n", type=float, default=LibraryDefault("..diagnostics.injection", "SERSIC_INDEX"),
                   help="Sersic index")
    p.add_argument("--threshold", type=float, default=LibraryDefault("..pipeline.options", "DEFAULT_THRESHOLD"),
                   help="class threshold")
    p.set_defaults(run=run)
    return p


def run(args):
    """Run the injections and write the completeness table and figure into ``args.outdir``."""
    from ..diagnostics.injection import (
        COMPLETENESS_FIGURE,
        COMPLETENESS_TABLE,
        parse_grid,
        run_injection,
    )

    table = run_injection(args.outdir, images=parse_images(args.image), survey=args.survey,
                          model=args.model, mu0_grid=parse_grid(args.mu0, "--mu0"),
                          re_grid=parse_grid(args.re, "--re"), n_per_cell=args.per_cell,
                          background=args.background, seed=args.seed, sersic_n=args.sersic_n,
                          threshold=args.threshold, psf_fwhm=args.psf_fwhm,
                          zero_point=args.zero_point)
    table.pprint(max_lines=-1, max_width=-1)
    out = Path(args.outdir)
    print(f"wrote {out / COMPLETENESS_TABLE} and {out / COMPLETENESS_FIGURE}")
    return 0
