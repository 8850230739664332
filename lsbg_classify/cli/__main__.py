"""``python -m lsbg_classify.cli``."""

import sys

from .main import main

sys.exit(main())
