"""lsbg-classify: tell real low-surface-brightness galaxies from artifacts.

The public API is small:

- :func:`classify_catalog` scores an astropy Table of candidates;
- :func:`load_model` loads the bundled DeepShadows weights (``"des"``, ``"hsc"``);
- :func:`get_backend` builds an image source (Legacy Surveys viewer, CDS
  hips2fits, local FITS files, or the offline simulated sky).
"""

from .version import __version__

__all__ = ["__version__", "classify_catalog", "load_model", "get_backend"]


def __getattr__(name):
    # TensorFlow takes seconds to import; load it only when it is needed.
    if name == "classify_catalog":
        from .pipeline.classify import classify_catalog

        return classify_catalog
    if name == "load_model":
        from .pipeline.model import load_model

        return load_model
    if name == "get_backend":
        from .surveys import get_backend

        return get_backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
