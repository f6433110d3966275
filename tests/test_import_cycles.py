"""No import cycles between amod_bench's modules, imports inside functions included.

A function-level import hides a cycle from Python until that function runs,
but the two modules still depend on each other; the graph here has an edge for
every import statement anywhere in a module. A package's `__init__` is the
module `pkg`; `from pkg import name` is an import of `pkg.name` when that is a
module, else of `pkg`; relative imports are resolved against the importing
module's package.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "amod_bench"


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, list[Path]]:
    """Dotted module name -> its source files (two while a module `x.py` is being split into `x/`)."""
    out: dict[str, list[Path]] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.setdefault(".".join(parts), []).append(path)
    return out


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module named by a `from X import ...` statement in `module`."""
    if not node.level:
        return node.module
    anchor = module.split(".") if is_package else module.split(".")[:-1]
    anchor = anchor[:len(anchor) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


def imported_modules(module: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that `module` (source file `path`) imports anywhere."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, is_package, node)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != module}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {m: set().union(*(imported_modules(m, path, set(files)) for path in paths)) for m, paths in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "amod_bench.routers._registry" in graph["amod_bench.routers"]  # `from ._registry import` in __init__
    assert "amod_bench.models.routed_vit" in graph["amod_bench.models"]  # inside build_model
    assert "amod_bench.routers.traits" in graph["amod_bench.flops"]


def test_cycle_finder_reports_a_cycle_through_a_function_level_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    lines = [" <-> ".join(c) + "\n    " + "; ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c)
             for c in found]
    assert not found, "import cycles:\n  " + "\n  ".join(lines)
