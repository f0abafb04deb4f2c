"""The package's layers hold: a module imports only from lower layers or from its own subpackage.

Layers, lowest first (docs/architecture.md):
  0 core, schemas   errors, atomic files, logging, config, image I/O, metrics, checkpoints, runtime helpers
  1 geometry        rays and camera poses
  2 data | models   scene loaders and view stores | networks, rendering, FLOPs, inference loaders
                    (siblings: neither imports the other)
  3 report          tables and figures
  4 stages          one module per rule file: teacher, pseudo_data, student, evaluate
  5 workflow, bench the glue for Snakemake scripts; the benchmark of ``r2l bench`` (siblings)
  6 cli             the ``r2l`` command (and ``python -m r2l``)
Imports under ``if TYPE_CHECKING:`` are annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "r2l"

LAYERS = {
    "r2l.core": 0,
    "r2l.schemas": 0,
    "r2l.geometry": 1,
    "r2l.data": 2,
    "r2l.models": 2,
    "r2l.report": 3,
    "r2l.stages": 4,
    "r2l.workflow": 5,
    "r2l.bench": 5,  # the benchmark: uses stages (4), used by the cli (6)
    "r2l.cli": 6,
    "r2l.__main__": 7,
    "r2l": 7,  # r2l/__init__.py
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The layered unit a module belongs to: its subpackage (``r2l.data``) or top-level module (``r2l.cli``)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def r2l_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, module)`` of every r2l import at any depth, skipping ``if TYPE_CHECKING:`` blocks."""
    found = []

    def visit(node):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "r2l")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "r2l":
            if node.module == "r2l":  # from r2l import x: x is a subpackage or module
                found.extend((node.lineno, f"r2l.{a.name}") for a in node.names)
            else:
                found.append((node.lineno, node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def violations(files: dict[str, str]) -> list[str]:
    """Every import that crosses the layers downwards-up or sideways, as readable lines."""
    out = []
    for module, source in files.items():
        mine = unit(module)
        for line, target in r2l_imports(ast.parse(source)):
            theirs = unit(target)
            if theirs == mine:
                continue
            if theirs not in LAYERS:
                out.append(f"{module}:{line} imports {target}, which has no layer")
            elif LAYERS[theirs] >= LAYERS[mine]:
                out.append(f"{module}:{line} (layer {LAYERS[mine]}) imports {target} (layer {LAYERS[theirs]})")
    return out


def package_sources() -> dict[str, str]:
    return {module_name(p): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    missing = sorted({unit(m) for m in package_sources()} - set(LAYERS))
    assert not missing, f"modules without a layer (add them to LAYERS and docs/architecture.md): {missing}"


def test_no_module_imports_a_higher_or_sibling_layer():
    assert violations(package_sources()) == []


@pytest.mark.parametrize(
    "module, source, expected",
    [
        ("r2l.data.blender", "from r2l.stages.teacher import x", ["r2l.data.blender:1 (layer 2) imports r2l.stages.teacher (layer 4)"]),
        ("r2l.data.blender", "def f():\n    import r2l.models.nerf", ["r2l.data.blender:2 (layer 2) imports r2l.models.nerf (layer 2)"]),
        ("r2l.core.log", "from r2l import report", ["r2l.core.log:1 (layer 0) imports r2l.report (layer 3)"]),
        ("r2l.models.teacher", "if TYPE_CHECKING:\n    from r2l.data.scene import Scene", []),
        ("r2l.stages.teacher", "from r2l.data.scene import Scene\nfrom r2l.stages.evaluate import x", []),
        ("r2l.cli", "import r2l.nowhere", ["r2l.cli:1 imports r2l.nowhere, which has no layer"]),
    ],
)
def test_the_checker_sees_crossings(module, source, expected):
    assert violations({module: source}) == expected
