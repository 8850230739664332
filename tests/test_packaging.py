"""Packaging metadata: PEP 621 in pyproject.toml, licence, citation, changelog, tox.

- The metadata lives in ``pyproject.toml`` (no ``setup.cfg`` metadata).
- ``LICENSE`` is the BSD 3-Clause text and is declared as a licence file.
- ``CITATION.cff`` names this version and cites DeepShadows as the method.
- ``.ci/oldest-constraints.txt`` pins each dependency at the minimum that
  ``pyproject.toml`` declares (regenerate with ``python .ci/oldest_deps.py``).
- tox has py311/py312/py313 environments and an oldestdeps one using it.
"""

import configparser
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from lsbg_classify.version import __version__

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def _oldest_deps():
    spec = importlib.util.spec_from_file_location("oldest_deps", ROOT / ".ci" / "oldest_deps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_metadata_is_pep621_in_pyproject():
    setup_cfg = ROOT / "setup.cfg"
    if setup_cfg.exists():
        parser = configparser.ConfigParser()
        parser.read(setup_cfg)
        assert not {"metadata", "options", "tool:pytest"} & set(parser.sections())
    assert PROJECT["name"] == "lsbg-classify"
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"] == (
        "lsbg_classify.version.__version__"
    )
    assert PROJECT["scripts"]["lsbg-classify"] == "lsbg_classify.cli:main"
    backends = PROJECT["entry-points"]["lsbg_classify.surveys"]
    assert set(backends) == {"legacysurvey", "hips", "local", "simulated"}
    assert {"test", "docs", "distributed"} <= set(PROJECT["optional-dependencies"])
    data = PYPROJECT["tool"]["setuptools"]["package-data"]["lsbg_classify"]
    assert "data/models/*.weights.h5" in data and "data/models/*.json" in data
    pytest_options = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert any(m.startswith("remote_data:") for m in pytest_options["markers"])
    assert pytest_options["filterwarnings"]


def test_authors_urls_and_classifiers():
    assert PROJECT["authors"] and all(a.get("name") for a in PROJECT["authors"])
    assert PROJECT["urls"] and all(u.startswith("https://") for u in PROJECT["urls"].values())
    classifiers = PROJECT["classifiers"]
    assert "Topic :: Scientific/Engineering :: Astronomy" in classifiers
    python_versions = {c.rsplit(" ", 1)[-1] for c in classifiers
                       if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    assert python_versions == {"3.11", "3.12", "3.13"}
    assert PROJECT["requires-python"] == ">=3.11"


def test_licence_file_is_bsd3_and_shipped():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "BSD 3-Clause License" in text and "lsbg-classify developers" in text
    assert "Neither the name of the copyright holder" in text
    assert PROJECT["license"] == "BSD-3-Clause"
    assert PROJECT["license-files"] == ["LICENSE"]


def test_citation_cff_cites_the_package_and_deepshadows():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["title"] == PROJECT["name"]
    assert str(cff["version"]) == __version__
    assert cff["license"] == PROJECT["license"]
    (method,) = [r for r in cff["references"] if r["type"] == "article"]
    assert method["doi"] == "10.1016/j.ascom.2020.100469"
    assert [a["family-names"] for a in method["authors"]] == [
        "Tanoglidis", "Ćiprijanović", "Drlica-Wagner"]
    assert method["journal"] == "Astronomy and Computing" and method["volume"] == 35


def test_changelog_has_this_version():
    text = (ROOT / "CHANGES.rst").read_text(encoding="utf-8")
    assert re.search(rf"^{re.escape(__version__)} \(", text, re.M)


def test_every_requirement_has_a_lower_bound():
    oldest = _oldest_deps()
    for requirement in oldest.requirements():
        name, version = oldest.minimum(requirement)
        assert name and version[0].isdigit(), requirement


def test_oldest_constraints_are_in_sync_with_the_metadata():
    oldest = _oldest_deps()
    text = (ROOT / ".ci" / "oldest-constraints.txt").read_text(encoding="utf-8")
    assert text == oldest.constraints(), (
        ".ci/oldest-constraints.txt is out of date: run python .ci/oldest_deps.py"
    )
    pins = dict(line.split("==") for line in text.splitlines() if not line.startswith("#"))
    assert pins["numpy"] == "1.26" and pins["astropy"] == "7.1"
    assert "scipy" in pins and "pandas" in pins and "galsim" in pins and "pytest" in pins
    # The distributed stack needs a newer astropy; oldestdeps leaves it out.
    assert "lsdb" not in pins and "dask" not in pins


def test_oldest_deps_rejects_a_requirement_without_minimum():
    oldest = _oldest_deps()
    with pytest.raises(ValueError, match="lower bound"):
        oldest.minimum("numpy")
    assert oldest.minimum("dask[distributed] >= 2024.1") == ("dask", "2024.1")
    assert oldest.minimum("Scikit_Image>=0.22,<1; python_version>'3'") == ("scikit-image", "0.22")


def test_tox_envs():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    envs = {e.strip() for e in tox["tox"]["envlist"].split(",")}
    assert {"py311", "py312", "py313", "oldestdeps"} <= envs
    oldest = tox["testenv:oldestdeps"]
    assert "PIP_CONSTRAINT" in oldest["set_env"]
    assert ".ci/oldest-constraints.txt" in oldest["set_env"]
    assert "oldest_deps.py --check" in oldest["commands_pre"]
    # TensorFlow (train) and the test tools, not the test extra's Dask/LSDB stack.
    assert oldest["extras"].strip() == "train"
