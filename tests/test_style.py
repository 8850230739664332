"""Style: ``ruff check`` passes (settings in ``pyproject.toml``) and functions stay short."""

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff_main = pytest.importorskip("ruff.__main__", reason="ruff (test extra) is not installed")
    result = subprocess.run([ruff_main.find_ruff_bin(), "check", "--no-cache", str(ROOT)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


#: Longest function body, in lines of code (docstring, comments and blank
#: lines not counted): past it a function does several jobs.
MAX_FUNCTION_LINES = 80


def _code_lines(lines, node):
    body = node.body
    first = body[0]
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        if len(body) == 1:
            return 0
        first = body[1]
    return sum(1 for line in lines[first.lineno - 1:node.end_lineno]
               if line.strip() and not line.strip().startswith("#"))


def test_no_function_is_longer_than_the_limit():
    long = set()
    for path in sorted((ROOT / "lsbg_classify").rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and _code_lines(lines, node) > MAX_FUNCTION_LINES):
                long.add(f"{path.relative_to(ROOT).as_posix()}:{node.name}")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {sorted(long)}"
