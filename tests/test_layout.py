"""The house rules, read off the source: who may import whom, and how big a file or a function may get.

* The library (``fedalign/``) imports no Flower (nor Ray, which Flower brings).
* The server side (``fedalign/server/``) imports nothing of the client side (``fedalign.client``,
  ``fedalign.models``); the shared vocabulary imports neither side. ``fedalign.privacy`` (mechanisms,
  calibration, accounting) and ``fedalign.noise`` (where privacy noise comes from) are shared: clients
  noise their releases with them, the server sizes SecAgg+'s range, adds dp-fedavg's noise and reports epsilon.
* The Flower apps keep the sides apart too: the ServerApp (``server/``) imports neither the ClientApp
  (``clients/``) nor the client side of the library, the ClientApp neither the ServerApp nor the server side
  (an exception would be listed, with its reason, in :data:`APP_EXCEPTIONS`: none today).
* Code outside the library (benchmarks, deployment, docs hooks, the apps) imports no ``_private`` name of it.
* No file over 400 lines, no function over 60, in the whole tree (tests, virtual environments and build or
  run outputs excepted).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "fedalign"
CLIENT_SIDE = ("fedalign.client", "fedalign.models")
SERVER_SIDE = ("fedalign.server",)
ENGINES = (
    "fedalign.inprocess",
    "fedalign.runner",
    "fedalign.outputs",
    "fedalign.sweep",
    "fedalign.sweep_spec",
    "fedalign.runstore",
    "fedalign.weight_arms",
)
SHARED = (
    "fedalign.config",
    "fedalign.statistics",
    "fedalign.alignment",
    "fedalign.wire",
    "fedalign.schedules",
    "fedalign.data",
    "fedalign.seeds",
    "fedalign.files",
    "fedalign.aggregation",
    "fedalign.queries",
    "fedalign.provenance",
    "fedalign.public_layout",
    "fedalign.noise",
    "fedalign.privacy",
)


# Folders of the tree the size and import rules skip: tests, virtual environments, build and run outputs.
SKIPPED = {"tests", "site", "build", "dist", "outputs", "results", "node_modules", "__pycache__"}
SERVER_APP, CLIENT_APP = ("server",), ("clients",)
# (importing module, imported module prefix) -> why the Flower app may cross the line.
APP_EXCEPTIONS: dict[tuple[str, str], str] = {}


def tree_modules() -> list[Path]:
    """Every Python file of the project outside :data:`SKIPPED` folders and hidden or virtual-environment ones."""
    found = []
    for path in sorted(REPO.rglob("*.py")):
        parts = path.relative_to(REPO).parts[:-1]
        if any(p in SKIPPED or p.startswith(".") or p.endswith(".egg-info") for p in parts):
            continue
        found.append(path)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) for every import statement, relative ones resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.append((module, [alias.name for alias in node.names]))
    return found


def library_modules() -> list[Path]:
    return sorted(LIBRARY.rglob("*.py"))


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_the_library_imports_no_flower(path):
    bad = [m for m, _ in imports(path) if m.split(".")[0] in ("flwr", "ray", "fedalign_flower", "clients", "server")]
    assert not bad, f"{module_name(path)} imports {bad}"


def test_the_server_side_imports_no_client_code_and_the_shared_vocabulary_neither_side():
    checked = 0
    for path in library_modules():
        name = module_name(path)
        targets = [m for m, _ in imports(path)]
        if within(name, SERVER_SIDE):
            assert not [m for m in targets if within(m, CLIENT_SIDE + ENGINES)], name
            checked += 1
        if within(name, SHARED):
            assert not [m for m in targets if within(m, CLIENT_SIDE + SERVER_SIDE + ENGINES)], name
            checked += 1
        if within(name, CLIENT_SIDE):
            assert not [m for m in targets if within(m, SERVER_SIDE + ENGINES)], name
    assert checked >= 10


def test_the_flower_apps_keep_the_sides_apart():
    checked = 0
    for path in tree_modules():
        name = module_name(path)
        if within(name, SERVER_APP):
            forbidden = CLIENT_APP + CLIENT_SIDE
        elif within(name, CLIENT_APP):
            forbidden = SERVER_APP + SERVER_SIDE
        else:
            continue
        checked += 1
        allowed = tuple(prefix for (importer, prefix) in APP_EXCEPTIONS if importer == name)
        for module, _ in imports(path):
            assert not within(module, forbidden) or within(module, allowed), f"{name} imports {module}"
    assert checked >= 6


def test_the_exceptions_are_still_needed():
    for name, prefix in APP_EXCEPTIONS:
        path = REPO / (name.replace(".", "/") + ".py")
        assert any(within(m, (prefix,)) for m, _ in imports(path)), f"{name} no longer imports {prefix}"


def test_nothing_outside_the_library_imports_a_private_name_of_it():
    outside = [p for p in tree_modules() if not within(module_name(p), ("fedalign",))]
    assert any(p.parts[-2] == "bench" for p in outside)
    for path in outside:
        for module, names in imports(path):
            if module and within(module, ("fedalign",)):
                private = [n for n in names if n.startswith("_")]
                where = path.relative_to(REPO)
                assert not private, f"{where} imports {private} from {module}"
                assert not any(part.startswith("_") for part in module.split(".")), f"{where}: {module}"


def test_files_and_functions_stay_small():
    paths = tree_modules()
    assert {"fedalign", "bench", "deploy", "clients", "server"} <= {p.relative_to(REPO).parts[0] for p in paths}
    for path in paths:
        source = path.read_text()
        assert source.count("\n") <= 400, f"{path.relative_to(REPO)} has {source.count(chr(10))} lines"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 60, f"{path.relative_to(REPO)}:{node.name} has {length} lines"


def test_only_the_library_and_its_flower_edge_are_installed():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.split(".")[0] for p in include} == {"fedalign", "fedalign_flower"}
