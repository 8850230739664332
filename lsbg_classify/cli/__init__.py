"""The ``lsbg-classify`` command line: one module per command, each a thin layer over the library.

``python -m lsbg_classify.cli`` runs it as the ``lsbg-classify`` script does.
"""

from .main import build_parser, main

__all__ = ["main", "build_parser"]
