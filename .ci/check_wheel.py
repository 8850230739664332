"""Build the wheel and check what it ships: the licence, the bundled weights, the entry points.

Usage: ``python .ci/check_wheel.py`` from anywhere (needs pip; builds in a
temporary directory, writes nothing into the repository but setuptools'
own ``build/`` folder, which is git-ignored).
"""

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = (
    ".dist-info/licenses/LICENSE",
    "lsbg_classify/data/models/des.weights.h5",
    "lsbg_classify/data/models/des.json",
    "lsbg_classify/data/models/hsc.weights.h5",
    "lsbg_classify/data/models/hsc.json",
    "lsbg_classify/data/models/des.onnx",
    "lsbg_classify/data/models/hsc.onnx",
    ".dist-info/entry_points.txt",
)


def main():
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out,
                        str(ROOT)], check=True)
        (wheel,) = Path(out).glob("lsbg_classify-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            entry_points = next(zf.read(n).decode() for n in names
                                if n.endswith(".dist-info/entry_points.txt"))
    missing = [r for r in REQUIRED if not any(n.endswith(r) for n in names)]
    if "lsbg_classify.surveys" not in entry_points:
        missing.append("the lsbg_classify.surveys entry points")
    if missing:
        print(f"{wheel.name} lacks: {', '.join(missing)}", file=sys.stderr)
        return 1
    # Silent on success: the test run's summary stays the last line CI prints.
    return 0


if __name__ == "__main__":
    sys.exit(main())
