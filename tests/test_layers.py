"""The package's layers, read from the source with ``ast``.

Every module gets a layer from its path; a module may import its own layer
and those below it, never one above.  Imports inside functions count (they
are how a lower layer would sneak a dependency in without an import-time
cost), relative imports are resolved, and no module may reach for another
module's private name.  The subpackages must not import each other in a
circle either.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = "lsbg_classify"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

#: Layer of each first-level room of the package, lowest first.  Rooms on
#: the same layer may use each other as long as they make no circle.
LAYERS = {
    "shared": 0,
    "surveys": 1,
    "pipeline": 2,
    "simulation": 3,
    "testing": 4,
    "training": 5,
    "diagnostics": 5,
    "reproduction": 6,
    "cli": 7,
    # The top-level package is the public facade over everything.
    "": 7,
}
#: The leaf modules at the top of the package that everything may use.
SHARED = {"version", "status", "limits", "atomic", "colour", "figures", "resume"}


def module_names(root, package):
    """``{dotted name: path}`` of every module below ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package,) + path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def room(module, package=PACKAGE):
    """The first-level room a module belongs to (``"shared"`` for the leaves)."""
    parts = module.split(".")[1:]
    if not parts:
        return ""
    if parts[0] in SHARED:
        return "shared"
    return parts[0]


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _target(module, path, node):
    """Absolute name of the module an ``ImportFrom`` node reads from."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_edges(root, package=PACKAGE):
    """Every import between the package's modules.

    Returns
    -------
    edges : list of (importer, imported, line)
    privates : list of str
        One message per use of another module's private name.
    """
    modules = module_names(root, package)
    edges, privates = [], []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        aliases = {}  # local name -> package module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        edges.append((module, alias.name, node.lineno))
                        if alias.asname:
                            aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                target = _target(module, path, node)
                if target not in modules:
                    continue
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    if submodule in modules:
                        edges.append((module, submodule, node.lineno))
                        aliases[alias.asname or alias.name] = submodule
                        continue
                    edges.append((module, target, node.lineno))
                    if _private(alias.name) and target != module:
                        privates.append(f"{module} line {node.lineno}: imports private name "
                                        f"{alias.name} from {target}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and _private(node.attr)):
                privates.append(f"{module} line {node.lineno}: uses private name {node.attr} "
                                f"of {aliases[node.value.id]}")
    return edges, privates


def layer_violations(edges, package=PACKAGE):
    """Messages for imports of a higher layer, and modules without a layer."""
    out = []
    for importer, imported, line in edges:
        low, high = room(importer, package), room(imported, package)
        for name in (low, high):
            if name not in LAYERS:
                out.append(f"{importer}: room {name!r} has no layer in tests/test_layers.py")
        if low in LAYERS and high in LAYERS and LAYERS[low] < LAYERS[high]:
            out.append(f"{importer} line {line} ({low}, layer {LAYERS[low]}) imports "
                       f"{imported} ({high}, layer {LAYERS[high]})")
    return sorted(set(out))


def room_cycles(edges, package=PACKAGE):
    """Circles in the graph of imports between rooms, each as a list of rooms."""
    graph = {}
    for importer, imported, _ in edges:
        a, b = room(importer, package), room(imported, package)
        if a != b:
            graph.setdefault(a, set()).add(b)
    cycles, done = [], set()

    def visit(node, trail):
        if node in trail:
            cycles.append(trail[trail.index(node):] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, trail + [node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return cycles


@pytest.fixture(scope="module")
def package_imports():
    return import_edges(PACKAGE_DIR)


def test_every_module_has_a_layer_and_imports_none_above_it(package_imports):
    edges, _ = package_imports
    assert len(edges) > 100  # the walk found the package's imports, lazy ones too
    bad = layer_violations(edges)
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_module_uses_another_modules_private_names(package_imports):
    _, privates = package_imports
    assert not privates, "private names used across modules:\n" + "\n".join(privates)


def test_rooms_import_each_other_in_no_circle(package_imports):
    edges, _ = package_imports
    cycles = room_cycles(edges)
    assert not cycles, "circles between subpackages: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_pipeline_leaves_the_tools_and_the_simulator_alone(package_imports):
    # The rule the layers exist for: scoring a real catalog never needs them.
    edges, _ = package_imports
    used = {imported for importer, imported, _ in edges
            if room(importer) in ("pipeline", "surveys")}
    assert not {room(m) for m in used} & {"simulation", "testing", "training", "diagnostics",
                                          "reproduction", "cli"}


def _write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checks_catch_a_lazy_upward_import_a_private_name_and_a_circle(tmp_path):
    root = tmp_path / PACKAGE
    _write(root, {
        "__init__.py": "",
        "status.py": "OK = 'ok'\n",
        "pipeline/__init__.py": "",
        "pipeline/model.py": "def load():\n    from ..simulation.render import render\n",
        "pipeline/cache.py": "from .. import status as st\nX = st._hidden\n",
        "simulation/__init__.py": "",
        "simulation/render.py": "from ..pipeline.model import _private\n",
        "training/__init__.py": "from ..diagnostics import x\n",
        "diagnostics/__init__.py": "from ..training import y\n",
    })
    edges, privates = import_edges(root)
    bad = layer_violations(edges)
    assert bad == [f"{PACKAGE}.pipeline.model line 2 (pipeline, layer 2) imports "
                   f"{PACKAGE}.simulation.render (simulation, layer 3)"]
    assert sorted(privates) == [
        f"{PACKAGE}.pipeline.cache line 2: uses private name _hidden of {PACKAGE}.status",
        f"{PACKAGE}.simulation.render line 1: imports private name _private from "
        f"{PACKAGE}.pipeline.model",
    ]
    assert ["diagnostics", "training", "diagnostics"] in room_cycles(edges)
