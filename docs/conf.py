"""Sphinx configuration of the lsbg-classify documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` from the
repository root (or ``tox -e docs``).  The build works offline (intersphinx
inventories are optional), writes nothing into the source tree and reads
nothing outside the repository unless ``LSBG_CLASSIFY_REAL_DATA`` is set.
"""

import os
import sys

# The package lives one level above this directory; import it from the
# source tree so the documentation always matches the code next to it.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from lsbg_classify.version import __version__  # noqa: E402

# -- Real-vs-simulated contact sheets ------------------------------------------

# The real cutouts are public but are never committed to this repository, so
# the sheets comparing them with simulated ones (the ``real-vs-simulated``
# directive of docs/calibration.rst) are drawn at build time only when
# ``LSBG_CLASSIFY_REAL_DATA`` names the data directory; otherwise a
# placeholder says so.  The build reads nothing outside the repository by
# default, and the sheets are embedded in the page as data URIs, so nothing
# is written into the source tree either.
_SHEET_COLUMNS = 10


def _png_bytes(draw):
    """PNG bytes of ``draw(path)``, drawn into a temporary directory outside the tree."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lsbg-classify-docs-") as tmp:
        path = os.path.join(tmp, "sheet.png")
        draw(path)
        with open(path, "rb") as f:
            return f.read()


def _placeholder(text):
    def draw(path):
        from PIL import Image, ImageDraw

        img = Image.new("RGB", (660, 60), (240, 240, 240))
        ImageDraw.Draw(img).text((10, 22), text, fill=(0, 0, 0))
        img.save(path)

    return _png_bytes(draw)


def real_vs_simulated_png(filename, selection=None, randomize=False):
    """PNG of real cutouts from ``$LSBG_CLASSIFY_REAL_DATA/des_real/filename`` above simulated ones."""
    data_dir = os.environ.get("LSBG_CLASSIFY_REAL_DATA")
    if not data_dir:
        return _placeholder(f"{filename}: set LSBG_CLASSIFY_REAL_DATA to show the real cutouts")
    source = os.path.join(data_dir, "des_real", filename)
    if not os.path.exists(source):
        return _placeholder(f"{filename} not found at build time: real cutouts not shown")
    import numpy as np

    from lsbg_classify.diagnostics.sim_vs_real import contact_sheet
    from lsbg_classify.simulation.training_set import make_training_set

    with np.load(source, allow_pickle=False) as data:
        real = data["X"] if selection is None else data["X"][data["selection"] == selection]
    real = real[: 2 * _SHEET_COLUMNS]
    sim, _ = make_training_set(len(real), survey="des", seed=0, randomize=randomize,
                               resample="mixed" if randomize else "bilinear", workers=1)
    return _png_bytes(lambda path: contact_sheet(real, sim, path, ncols=_SHEET_COLUMNS))


def _real_vs_simulated_directive():
    from docutils import nodes
    from docutils.parsers.rst import directives
    from sphinx.util.docutils import SphinxDirective

    from lsbg_classify.figures import png_data_uri

    class RealVsSimulated(SphinxDirective):
        """``.. real-vs-simulated:: FILE.npz`` (options ``:selection:``, ``:randomize:``); content: caption."""

        required_arguments = 1
        has_content = True
        option_spec = {"selection": directives.unchanged, "randomize": directives.flag}

        def run(self):
            png = real_vs_simulated_png(self.arguments[0], self.options.get("selection"),
                                        "randomize" in self.options)
            figure = nodes.figure()
            figure += nodes.image(uri=png_data_uri(png), width="100%",
                                  alt=f"real {self.arguments[0]} cutouts above simulated ones")
            if self.content:
                text = " ".join(self.content)
                caption, messages = self.state.inline_text(text, self.lineno)
                figure += nodes.caption(text, "", *caption)
                figure += messages
            return [figure]

    return RealVsSimulated


def setup(app):
    app.add_directive("real-vs-simulated", _real_vs_simulated_directive())


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
    "sphinx.ext.extlinks",
    "sphinx.ext.viewcode",
    "numpydoc",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = []
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
language = "en"

# Unresolved cross-references (e.g. to numpy or astropy objects when their
# inventories cannot be fetched) are not errors.
nitpicky = False

# -- intersphinx ---------------------------------------------------------------

# Links to the Python, NumPy, astropy and astroquery documentation.  The
# build must work offline: each project's last inventory location is an
# empty inventory written to a temporary file, so an unreachable site costs
# an informational message (and plain-text references), never a warning
# that ``-W`` would turn into an error.  Keras publishes no Sphinx
# inventory (keras.io is not built with Sphinx): the ``:keras:`` role below
# links to its API pages instead.
intersphinx_timeout = 5


def _empty_inventory():
    import tempfile
    import zlib

    path = os.path.join(tempfile.gettempdir(), "lsbg-classify-docs-empty-objects.inv")
    header = (b"# Sphinx inventory version 2\n# Project: offline\n# Version: 0\n"
              b"# The remainder of this file is compressed using zlib.\n")
    with open(path, "wb") as f:
        f.write(header + zlib.compress(b""))
    return path


_OFFLINE_INVENTORY = _empty_inventory()
intersphinx_mapping = {
    name: (url, (None, _OFFLINE_INVENTORY))
    for name, url in {
        "python": "https://docs.python.org/3/",
        "numpy": "https://numpy.org/doc/stable/",
        "astropy": "https://docs.astropy.org/en/stable/",
        "astroquery": "https://astroquery.readthedocs.io/en/latest/",
    }.items()
}

extlinks = {"keras": ("https://keras.io/api/%s", "%s")}

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

# The PyData theme (what astropy's documentation is built on) when the docs
# extra installed it, else Sphinx's default theme.
html_title = f"lsbg-classify {release}"
html_static_path = []
try:
    import pydata_sphinx_theme  # noqa: F401
except ImportError:
    html_theme = "alabaster"
    html_theme_options = {
        "description": "DeepShadows LSBG-vs-artifact classification of survey candidate catalogs",
        "fixed_sidebar": True,
    }
else:
    html_theme = "pydata_sphinx_theme"
    html_theme_options = {
        "navigation_with_keys": False,
        "show_toc_level": 2,
    }
