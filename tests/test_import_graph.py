"""The project's import graph, read with `ast` (every import, also those inside functions): no cycles between
modules, and no layer imports upward.

Layers: schemas (bottom) < atlas < jobs, and atlas < viewer. schemas imports nothing of ours; atlas never
imports jobs or viewer; viewer never imports jobs. Inside atlas: `atlas.errors` and `atlas.builtin` (the
built-in model registry) import nothing of ours but `atlas.errors`; `atlas.models` (the model code) imports
only itself, `atlas.errors`, `atlas.builtin` and `atlas.store` (atomic writes, by the SAE), never a stage
module nor `atlas.toyworld` (toyworld builds on models, not the other way round).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "atlas", "jobs", "viewer")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that `name` (a dotted import target) names or lies in."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _type_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:`: imports for annotations only, never run."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    return skip


def _targets(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that `module` imports at run time (`from a import b` counts a.b when it is a
    module)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    type_only = _type_only(tree)
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            target = _resolve(name, known)
            if target and target != module:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    modules = _modules()
    known = set(modules)
    return {m: _targets(m, p, known) for m, p in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a chain [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def _in(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def allowed(src: str, dst: str) -> bool:
    """May module `src` import module `dst`? (The layer rules of the module docstring.)"""
    top_src, top_dst = src.split(".")[0], dst.split(".")[0]
    if top_src == "schemas":
        return top_dst == "schemas"
    if top_src == "atlas" and top_dst in ("jobs", "viewer"):
        return False
    if top_src == "viewer" and top_dst == "jobs":
        return False
    if src in ("atlas.errors", "atlas.builtin"):
        return dst == "atlas.errors"
    if _in(src, "atlas.models"):
        return any(_in(dst, ok) for ok in ("atlas.models", "atlas.errors", "atlas.builtin", "atlas.store"))
    return True


def _chain(graph: dict[str, set[str]], start: str, goal: str) -> list[str]:
    """A shortest import chain from `start` to `goal` (for messages)."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        if path[-1] == goal:
            return path
        for t in sorted(graph.get(path[-1], ())):
            if t not in seen:
                seen.add(t)
                paths.append([*path, t])
    return [start, goal]


def test_the_graph_sees_the_project():
    graph = import_graph()
    assert {"atlas.session", "atlas.builtin", "jobs.cli", "viewer.app", "schemas.tables"} <= set(graph)
    assert "atlas.errors" in graph["atlas.session"] and "atlas.store" in graph["jobs.cli"]


def test_no_import_cycles():
    cycle = _cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_layer_imports_upward():
    graph = import_graph()
    bad = [(s, d) for s, targets in graph.items() for d in sorted(targets) if not allowed(s, d)]
    assert not bad, "upward imports:\n" + "\n".join(f"  {s} -> {d}" for s, d in bad)


def test_no_layer_reaches_upward_transitively():
    """atlas never reaches jobs or viewer, viewer never reaches jobs, schemas reaches nothing of ours, and
    atlas.models never reaches atlas.toyworld, through any chain of imports."""
    graph = import_graph()
    rules = [("schemas", ("atlas", "jobs", "viewer")), ("atlas", ("jobs", "viewer")), ("viewer", ("jobs",)),
             ("atlas.models", ("atlas.toyworld",))]  # fmt: skip
    for src_prefix, forbidden in rules:
        for src in (m for m in graph if _in(m, src_prefix)):
            reach, todo = set(), [src]
            while todo:
                for t in graph.get(todo.pop(), ()):
                    if t not in reach:
                        reach.add(t)
                        todo.append(t)
            for dst in sorted(reach):
                if any(_in(dst, f) for f in forbidden):
                    raise AssertionError("upward chain: " + " -> ".join(_chain(graph, src, dst)))


def test_imports_for_annotations_only_are_not_edges(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import atlas.a\nimport atlas.b\n")
    assert _targets("atlas.m", src, {"atlas.a", "atlas.b", "atlas.m"}) == {"atlas.b"}
