"""The documentation keeps up with the command line and the README.

- Every subcommand of ``lsbg-classify`` has a user-guide page
  ``docs/cli/<name>.rst`` that mentions each of its long options, and the
  page is in the documentation's table of contents.
- The README's test command is the one ``.ci/run`` runs.
"""

import argparse
import re
from pathlib import Path

import pytest

from lsbg_classify.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Subcommands documented together on another command's page.
SHARED_PAGES = {"finetune": "train"}

README_TEST_PREFIX = 'python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]"'


def _subcommands():
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1, "expected one set of subcommands"
    return dict(actions[0].choices)


def _long_options(subparser):
    """The long options ``--help`` shows (old spellings kept as hidden aliases are not)."""
    options = []
    for action in subparser._actions:
        hidden = getattr(action, "hidden_aliases", ())
        for opt in action.option_strings:
            if opt.startswith("--") and opt != "--help" and opt not in hidden:
                options.append(opt)
    return options


def _mentions(text, option):
    # "--val" must not be satisfied by "--val-fraction".
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


SUBCOMMANDS = _subcommands()


def test_there_are_subcommands():
    assert "classify" in SUBCOMMANDS


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_a_page_with_all_its_options(name):
    page_name = SHARED_PAGES.get(name, name)
    page = DOCS / "cli" / f"{page_name}.rst"
    assert page.is_file(), f"subcommand {name!r} has no page docs/cli/{page_name}.rst"
    text = page.read_text(encoding="utf-8")
    assert name in text, f"{page.name} does not name {name!r}"
    missing = [opt for opt in _long_options(SUBCOMMANDS[name]) if not _mentions(text, opt)]
    assert not missing, f"docs/cli/{page_name}.rst does not mention {', '.join(missing)}"


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_page_is_in_the_toctree(name):
    page_name = SHARED_PAGES.get(name, name)
    index = (DOCS / "index.rst").read_text(encoding="utf-8")
    assert re.search(rf"^\s+cli/{re.escape(page_name)}\s*$", index, re.M), (
        f"cli/{page_name} is not in the toctree of docs/index.rst"
    )


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    commands = [line.strip() for line in readme if line.strip().startswith(README_TEST_PREFIX)]
    assert len(commands) == 1, "README.md should give exactly one test command"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert commands[0] in ci, (
        f"the README's test command is not a line of .ci/run:\n  {commands[0]}"
    )


def _tree_snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns)
                  for p in folder.rglob("*") if "__pycache__" not in p.parts)


@pytest.mark.slow
def test_docs_build_offline_without_writing_into_the_tree(tmp_path):
    """``sphinx-build -W`` passes with no network and leaves docs/ as it was.

    The proxies point at a closed loopback port, so every intersphinx
    inventory is unreachable; ``LSBG_CLASSIFY_REAL_DATA`` is unset, so the
    build must not look outside the repository for real cutouts.
    """
    pytest.importorskip("sphinx")
    pytest.importorskip("numpydoc")
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "LSBG_CLASSIFY_REAL_DATA"}
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
               no_proxy="", NO_PROXY="", PYTHONPATH=str(ROOT))
    before = _tree_snapshot(DOCS)
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(DOCS),
         str(tmp_path / "html"), "-d", str(tmp_path / "doctrees")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert _tree_snapshot(DOCS) == before, "the docs build wrote into docs/"
    html = tmp_path / "html"
    assert (html / "changes.html").is_file()
    assert "data:image/png;base64," in (html / "calibration.html").read_text(encoding="utf-8")


def test_docs_read_real_data_only_when_asked():
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    assert "shared" not in conf, "docs/conf.py must not default to a folder outside the repo"
    assert 'os.environ.get("LSBG_CLASSIFY_REAL_DATA")' in conf


def test_docs_link_the_astronomy_stack():
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    for site in ("docs.python.org", "numpy.org", "docs.astropy.org", "astroquery", "keras.io"):
        assert site in conf, site
    assert "intersphinx_timeout" in conf


def test_changelog_page_includes_changes_rst():
    page = (DOCS / "changes.rst").read_text(encoding="utf-8")
    assert ".. include:: ../CHANGES.rst" in page
    index = (DOCS / "index.rst").read_text(encoding="utf-8")
    assert re.search(r"^\s+changes\s*$", index, re.M)
