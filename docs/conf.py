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
