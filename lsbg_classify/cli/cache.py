"""``lsbg-classify cache``: inspect or empty the cutout cache."""

from .common import HelpFormatter

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add ``cache`` to ``subparsers``."""
    p = subparsers.add_parser("cache", help="inspect or empty the cutout cache",
                              formatter_class=HelpFormatter)
    p.add_argument("action", choices=["info", "clear"],
                   help="info: size and location; clear: remove cached cutouts")
    p.add_argument("--cache", help="cache directory (default: the user cache directory)")
    p.add_argument("--backend", help="clear only this backend's cutouts (default: all)")
    p.add_argument("--model-inputs", action="store_true",
                   help="clear only the remembered model inputs, keeping the cutouts")
    p.set_defaults(run=run)
    return p


def run(args):
    """Print the cache's figures, or empty it."""
    from ..pipeline.cache import CutoutCache

    cache = CutoutCache(args.cache) if args.cache else CutoutCache()
    if args.action == "info":
        for key, value in cache.info().items():
            print(f"{key}: {value}")
    elif args.model_inputs:
        removed = cache.clear_model_inputs()
        print(f"removed {removed} remembered model inputs from {cache.directory}")
    else:
        removed = cache.clear(backend=args.backend)
        print(f"removed {removed} cached cutouts from {cache.directory}")
    return 0
