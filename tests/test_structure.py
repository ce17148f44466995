"""The package's structure holds: dependencies point one way, every package ships, and the
architecture page names every module (docs/architecture.md)."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PKG = ROOT / "stac2cube"


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path, *, top_level_only: bool) -> set[str]:
    """The stac2cube modules ``name`` imports (at module level only, when asked: imports inside
    functions and under ``if TYPE_CHECKING`` do not run when the module is imported)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                found.add(sub if sub in MODULES else mod)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("stac2cube")}


def test_product_code_never_imports_the_test_fixtures() -> None:
    offenders = {
        name: sorted(m for m in _imports(name, path, top_level_only=False) if ".testing" in m)
        for name, path in MODULES.items()
        if not name.startswith("stac2cube.testing")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_cube_views_only_read() -> None:
    for name, path in MODULES.items():
        if name.startswith("stac2cube.cube"):
            imported = _imports(name, path, top_level_only=False)
            assert not any(
                m.startswith(("stac2cube.pipeline", "stac2cube.steps")) for m in imported
            )


def test_no_import_cycle_between_modules() -> None:
    graph = {n: _imports(n, p, top_level_only=True) & set(MODULES) for n, p in MODULES.items()}
    # a package's __init__ re-exporting its modules is not a cycle through them
    for n in graph:
        graph[n] = {m for m in graph[n] if not n.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(m) :], m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_every_package_is_shipped() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    packages = {n for n, p in MODULES.items() if p.name == "__init__.py"}
    assert packages - listed == set()


def test_the_architecture_page_names_every_module() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`([a-z_/]+(?:\.py|/))`", page))
    missing = []
    for path in MODULES.values():
        rel = path.relative_to(PKG)
        if rel.name == "__init__.py" and len(rel.parts) == 1:
            continue
        parents = ["/".join(rel.parts[: i + 1]) + "/" for i in range(len(rel.parts) - 1)]
        if str(rel) in named or any(p in named for p in parents):
            continue  # named, or inside a package named as a whole
        if rel.name == "__init__.py" and any(n.startswith(parents[-1]) for n in named):
            continue  # a package whose modules are named one by one
        missing.append(str(rel))
    assert missing == []
