"""Sphinx configuration of the lsbg-classify documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` from the
repository root (or ``tox -e docs``).  Nothing here reaches the network.
"""

import os
import sys

# The package lives one level above this directory; import it from the
# source tree so the documentation always matches the code next to it.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from lsbg_classify.version import __version__  # noqa: E402

# -- Real-vs-simulated contact sheets ------------------------------------------

# The real cutouts are public but are never committed to this repository, so
# the sheets comparing them with simulated ones are drawn at build time from
# the data directory (``LSBG_CLASSIFY_REAL_DATA``, default ``../shared/data``
# beside the repository).  Without it a placeholder says so.
_DOCS = os.path.dirname(os.path.abspath(__file__))
_GENERATED = os.path.join(_DOCS, "_generated")
_REAL_DATA = os.environ.get(
    "LSBG_CLASSIFY_REAL_DATA", os.path.join(_DOCS, "..", "..", "shared", "data")
)
#: (sheet name, real file, selection, simulated like the training set?)
_SHEETS = [
    ("real_vs_simulated_dr1", "des_real_10.npz", None, False),
    ("real_vs_simulated_dr9", "des_dev_119.npz", "random", True),
]
_SHEET_COLUMNS = 10


def _placeholder(path, text):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (660, 60), (240, 240, 240))
    ImageDraw.Draw(img).text((10, 22), text, fill=(0, 0, 0))
    img.save(path)


def _draw_real_vs_simulated_sheets():
    import numpy as np

    from lsbg_classify.calibration import contact_sheet
    from lsbg_classify.simulation import make_training_set

    os.makedirs(_GENERATED, exist_ok=True)
    for name, filename, selection, randomize in _SHEETS:
        path = os.path.join(_GENERATED, name + ".png")
        source = os.path.join(_REAL_DATA, "des_real", filename)
        if not os.path.exists(source):
            _placeholder(path, f"{filename} not found at build time: real cutouts not shown")
            continue
        with np.load(source, allow_pickle=False) as data:
            real = data["X"] if selection is None else data["X"][data["selection"] == selection]
        real = real[: 2 * _SHEET_COLUMNS]
        sim, _ = make_training_set(len(real), survey="des", seed=0, randomize=randomize,
                                   resample="mixed" if randomize else "bilinear", workers=1)
        contact_sheet(real, sim, path, ncols=_SHEET_COLUMNS)


_draw_real_vs_simulated_sheets()

# -- Project -----------------------------------------------------------------

project = "lsbg-classify"
author = "the lsbg-classify developers"
copyright = "the lsbg-classify developers; BSD 3-Clause licence"
version = __version__
release = __version__

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = []
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
language = "en"

# Unresolved cross-references (e.g. to numpy or astropy objects, which have
# no inventory here) are not errors.
nitpicky = False

# -- intersphinx ---------------------------------------------------------------

# Inventories would have to be downloaded; the documentation is built
# offline, so none are configured.
intersphinx_mapping = {}

# -- autodoc -----------------------------------------------------------------

# TensorFlow/Keras take seconds to import and GalSim is only needed to
# render simulated cutouts: mock them so the API pages build quickly.
autodoc_mock_imports = ["tensorflow", "keras", "galsim"]
autodoc_member_order = "bysource"
autodoc_typehints = "none"

# -- numpydoc ----------------------------------------------------------------

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# -- HTML --------------------------------------------------------------------

html_theme = "alabaster"
html_title = f"lsbg-classify {release}"
html_static_path = []
html_theme_options = {
    "description": "DeepShadows LSBG-vs-artifact classification of survey candidate catalogs",
    "fixed_sidebar": True,
}
