"""The package's layers import only downward (docs/design.md, "Layers"), checked from the source."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "moelab"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The moelab modules `path` imports (anywhere in the file, or at module level only)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("moelab"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)  # `from moelab.x import module`
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("moelab"))
    return out


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}

# a module of the first package may not import (anywhere in it) one of the second's
FORBIDDEN = [
    ("moelab.models", ("moelab.training", "moelab.run", "moelab.runs.weights", "moelab.probe", "moelab.sweeps",
                       "moelab.evaluation", "moelab.analysis", "moelab.cli", "moelab.continual", "moelab.checkpoint")),
    ("moelab.knowledge", ("moelab.models", "moelab.training", "moelab.run", "moelab.runs.weights", "moelab.probe",
                          "moelab.evaluation")),
    ("moelab.evaluation", ("moelab.run", "moelab.runs.weights", "moelab.probe", "moelab.training", "moelab.sweeps", "moelab.cli")),
    ("moelab.training", ("moelab.run", "moelab.runs.weights", "moelab.probe", "moelab.sweeps", "moelab.cli")),
    ("moelab.sweeps.store", ("moelab.run", "moelab.runs.weights", "moelab.training", "moelab.models")),
    ("moelab.design", ("moelab.run", "moelab.training", "moelab.probe", "moelab.sweeps", "moelab.cli")),
    ("moelab.config", ("moelab.models", "moelab.training", "moelab.run")),
    ("moelab.runs.folder", ("moelab.models", "moelab.training", "moelab.run", "moelab.runs.weights",
                            "moelab.evaluation", "moelab.checkpoint")),
    ("moelab.runs.weights", ("moelab.run", "moelab.probe", "moelab.sweeps", "moelab.cli", "moelab.evaluation")),
]


@pytest.mark.parametrize("package, below", FORBIDDEN, ids=[p for p, _ in FORBIDDEN])
def test_a_layer_imports_nothing_above_it(package, below):
    offenders = [f"{name} imports {target}" for name, path in MODULES.items()
                 if name == package or name.startswith(package + ".")
                 for target in imports(path) if any(target == b or target.startswith(b + ".") for b in below)]
    assert not offenders, offenders


def test_no_import_cycles_at_module_level():
    graph = {name: {t for t in imports(path, top_level_only=True) if t in MODULES and t != name}
             for name, path in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [node, nxt])
                                     if nxt in trail else f"import cycle through {node} -> {nxt}")
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_opening_a_store_or_reading_a_sweep_imports_no_torch():
    code = ("import sys, moelab.sweeps.store, moelab.sweeps.grid, moelab.config\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('moelab'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
