"""A third-party backend made exactly as the README says.

The README's backend module and its ``pyproject.toml`` entry point are
taken from README.md itself, installed as a tiny distribution on
``sys.path`` (an ``entry_points.txt`` made from that TOML), and used
through the public API: the class sets no ``name`` and no ``layer``.
"""

import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from lsbg_classify import classify_catalog, status
from lsbg_classify.pipeline.catalog.read import PROVENANCE_KEY
from lsbg_classify.pipeline.model import load_model
from lsbg_classify.surveys import ENTRY_POINT_GROUP, SurveyBackend, available_backends, get_backend

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_block(language, must_contain):
    blocks = re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"),
                        re.S | re.M)
    found = [b for b in blocks if must_contain in b]
    assert len(found) == 1, f"README.md should have one {language} block with {must_contain!r}"
    return found[0]


@pytest.fixture
def readme_plugin(tmp_path, monkeypatch):
    """Install the README's plugin package into a temporary site directory."""
    code = _readme_block("python", "class MySurveyBackend(SurveyBackend)")
    module_path = re.match(r"# (\S+\.py)\n", code).group(1)
    project = tomllib.loads(_readme_block("toml", "[project.entry-points."))
    group = project["project"]["entry-points"][ENTRY_POINT_GROUP]
    site = tmp_path / "site"
    target = site / module_path
    target.parent.mkdir(parents=True)
    (target.parent / "__init__.py").write_text("")
    target.write_text(code)
    dist = site / "mypackage-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mypackage\nVersion: 0.1\n")
    lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{k} = {v}" for k, v in group.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(site))
    yield next(iter(group))
    for name in [m for m in sys.modules if m == "mypackage" or m.startswith("mypackage.")]:
        monkeypatch.delitem(sys.modules, name)


def test_readme_backend_sets_no_name(readme_plugin):
    backend = get_backend(readme_plugin)
    assert type(backend).name is None  # the README snippet, literally


def test_name_defaults_to_the_entry_point_name(readme_plugin, tmp_path):
    assert readme_plugin in available_backends()
    backend = get_backend(readme_plugin, folder=tmp_path)
    assert backend.name == readme_plugin
    key = backend.cache_key(10.0, -5.0)  # a TypeError when name was None
    assert key.startswith(f"{readme_plugin}-des-")
    direct = type(backend)(folder=tmp_path)  # built without get_backend: same name
    assert direct.name == readme_plugin and direct.cache_key(10.0, -5.0) == key


def test_provenance_has_no_inherited_layer(readme_plugin, tmp_path):
    described = get_backend(readme_plugin, folder=tmp_path).describe()
    assert described["backend"] == readme_plugin
    assert "layer" not in described
    assert "des-dr1" not in described.values()


def test_readme_backend_classifies_a_catalog(readme_plugin, tmp_path, weights):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    simulated = get_backend("simulated", survey="des")
    ra, dec = [10.5, 20.25, 30.125], [-45.0, -50.5, -40.0]
    for r, d in zip(ra[:2], dec[:2]):
        (folder / f"{r:.6f}_{d:.6f}.jpg").write_bytes(simulated.download(r, d).data)
    scored = classify_catalog(Table({"ra": ra, "dec": dec}), backend=readme_plugin,
                              backend_options={"folder": str(folder)},
                              model=load_model(weights), cache=None)
    assert list(scored["lsbg_status"]) == [status.OK, status.OK, status.NO_COVERAGE]
    assert np.all(np.isfinite(scored["lsbg_prob"][:2]))
    prov = scored.meta[PROVENANCE_KEY]
    assert prov["backend"] == readme_plugin
    assert "des-dr1" not in prov.values()


def test_unregistered_backend_is_named_after_its_class():
    class PlainBackend(SurveyBackend):
        def request_url(self, ra, dec):
            return ""

        def download(self, ra, dec):
            raise NotImplementedError

    backend = PlainBackend()
    assert backend.name == "plainbackend"
    assert backend.cache_key(1.0, 2.0).startswith("plainbackend-des-")
    assert "layer" not in backend.describe()


def test_builtin_backends_keep_their_layers():
    assert get_backend("legacysurvey", survey="hsc").describe()["layer"] == "hsc2"
    assert get_backend("simulated").describe()["layer"] == "simulated-des"
