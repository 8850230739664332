"""The tree passes ``ruff check`` with the settings in ``pyproject.toml``."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff_main = pytest.importorskip("ruff.__main__", reason="ruff (test extra) is not installed")
    result = subprocess.run([ruff_main.find_ruff_bin(), "check", "--no-cache", str(ROOT)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
