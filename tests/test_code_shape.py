"""Conventions of the code itself (CONTRIBUTING.md): no function over 60 lines outside the benchmarks
(`jobs/bench_*.py`) and the training scripts of the toy models (`atlas/toyworld/*: train_toy_*`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 60


def _exempt(path: Path, name: str) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return rel.startswith("jobs/bench_") or (rel.startswith("atlas/toyworld/") and name.startswith("train_toy_"))


def long_functions() -> list[str]:
    found = []
    for pkg in ("atlas", "jobs", "viewer", "schemas"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno:
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_LINES and not _exempt(path, node.name):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_over_60_lines():
    assert long_functions() == []


def test_the_check_sees_long_functions(tmp_path, monkeypatch):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES + 1))
    (tmp_path / "atlas").mkdir()
    (tmp_path / "atlas" / "long.py").write_text(f"def too_long():\n{body}\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert [f.split(" ")[1] for f in long_functions()] == ["too_long"]
