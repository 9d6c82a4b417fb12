"""The import rule: onnxbridge's modules import each other one way (see docs/architecture.md).

Module-level imports (those that run when a module is imported: at top level, or inside a
top-level ``if``/``try``, but not under ``if TYPE_CHECKING:``) must form no cycle. Imports inside
a function run later, when the function is called; they keep ``import onnxbridge`` light (torch,
sklearn) and may point anywhere that does not create a cycle at import time. They are checked
too, against a short list of known back-edges that must not grow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "onnxbridge"

# Function-level imports that point back up the module map (a deferred cycle), each with its
# reason. Keep this list short: a new entry needs a reason a reviewer accepts.
KNOWN_DEFERRED_CYCLES: dict[tuple[str, str], str] = {}


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (``onnxbridge.runtime.plan``)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(body: list[ast.stmt], *, deferred: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Import statements with whether each is deferred (inside a function body)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, deferred
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.orelse, deferred=deferred)  # the TYPE_CHECKING branch never runs
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _imports(node.body, deferred=True)
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    stmts = [s for s in inner if isinstance(s, ast.stmt)]
                    stmts += [s for h in inner if isinstance(h, ast.ExceptHandler) for s in h.body]
                    yield from _imports(stmts, deferred=deferred)


def import_edges(modules: dict[str, Path]) -> dict[str, dict[str, bool]]:
    """module -> {imported onnxbridge module: deferred?} (module-level wins over deferred)."""
    edges: dict[str, dict[str, bool]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        out: dict[str, bool] = {}
        for node, deferred in _imports(ast.parse(path.read_text(encoding="utf-8")).body,
                                       deferred=False):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the module's package
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join(package + ([base] if base else []))
                for alias in node.names:
                    # `from pkg import sub` imports the submodule sub; otherwise pkg itself
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                if target in modules and target != name:
                    out[target] = out.get(target, True) and deferred
        edges[name] = out
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in ``graph`` as a path that starts and ends on the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return [*path[path.index(w):], w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def module_level_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    edges = import_edges(module_names(root))
    return {m: {t for t, deferred in out.items() if not deferred} for m, out in edges.items()}


def test_module_level_imports_form_no_cycle() -> None:
    graph = module_level_graph()
    assert len(graph) > 20 and graph["onnxbridge.model"], "the import graph was not read"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle among onnxbridge's modules: " + " -> ".join(cycle or [])


def test_deferred_imports_add_no_cycle_beyond_the_known_ones() -> None:
    edges = import_edges(module_names())
    graph = {m: {t for t in out if (m, t) not in KNOWN_DEFERRED_CYCLES} for m, out in edges.items()}
    cycle = find_cycle(graph)
    assert cycle is None, ("a function-level import closes a cycle: " + " -> ".join(cycle or [])
                           + " (import from a lower module, or move the shared code down)")


def test_layers_point_down() -> None:
    """The map of docs/architecture.md: leaves import nothing above them."""
    graph = module_level_graph()
    leaves = ("onnxbridge.errors", "onnxbridge.signature", "onnxbridge._version")
    for leaf in leaves:
        assert not graph[leaf], f"{leaf} is a leaf but imports {sorted(graph[leaf])}"
    assert "onnxbridge.model" not in graph["onnxbridge.io"]
    for viz in (m for m in graph if m.startswith("onnxbridge.viz")):
        assert "onnxbridge.model" not in graph[viz], f"{viz} imports the model wrapper"


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "onnxbridge"


@pytest.mark.parametrize("files", [
    {"onnxbridge/__init__.py": "", "onnxbridge/a.py": "from onnxbridge.b import x\n",
     "onnxbridge/b.py": "import onnxbridge.a\nx = 1\n"},
    {"onnxbridge/__init__.py": "", "onnxbridge/p/__init__.py": "from onnxbridge.p import q\n",
     "onnxbridge/p/q.py": "try:\n    from onnxbridge import p\nexcept ImportError:\n    pass\n"},
    {"onnxbridge/__init__.py": "", "onnxbridge/a.py": "from . import b\n",
     "onnxbridge/b.py": "if True:\n    from .a import thing\n"},
])
def test_a_planted_cycle_is_found(tmp_path: Path, files: dict[str, str]) -> None:
    cycle = find_cycle(module_level_graph(_write(tmp_path, files)))
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 3


def test_type_checking_and_function_imports_are_not_module_level(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "onnxbridge/__init__.py": "",
        "onnxbridge/a.py": "from onnxbridge.b import x\n",
        "onnxbridge/b.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                            "    from onnxbridge.a import y\nx = 1\n"
                            "def f():\n    from onnxbridge.a import y\n    return y\n"),
    })
    assert find_cycle(module_level_graph(root)) is None
    edges = import_edges(module_names(root))
    assert edges["onnxbridge.b"] == {"onnxbridge.a": True}  # deferred, and only the function's
    assert find_cycle({m: set(out) for m, out in edges.items()}) == [
        "onnxbridge.a", "onnxbridge.b", "onnxbridge.a"]
