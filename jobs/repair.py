"""`atlas build --repair`: take away what `atlas check` found damaged so that the build redoes exactly that.

Parts are deterministic, so a damaged part file is deleted and its stage marked as not done: the stage's rerun
resumes from the parts that are still there and writes the missing ones again. A stage whose rerun writes
every part byte for byte as recorded keeps its run id (`jobs.build.run_stage`), so the stages after it stay
done; otherwise they rerun, as after any change upstream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from atlas.check import CheckReport
from atlas.store import AtlasStore
from jobs.build import STAGES
from schemas import TABLES

# The table whose part marks a stage's part finished (embed writes it last): removed with any damaged
# part of the same name, or the rerun would skip that part.
MARKERS = {"embed": "embeddings"}


def owner(table: str) -> tuple[str, str] | None:
    """(the stage that writes `table`, its part-name prefix), or None (a table written by another command)."""
    for stage in STAGES.values():
        for t, prefix in stage.tables:
            if t == table:
                return stage.name, prefix
    return None


def remove_damaged(store: AtlasStore, report: CheckReport, say: Callable[[str], None]) -> list[str]:
    """Delete the damaged part files of `report` (and their stages' markers) and mark their stages for a
    rerun; returns those stages, in run order."""
    stages: dict[str, list[str]] = {}
    for table, names in report.damaged().items():
        found = owner(table)
        removed = _remove(store, table, names)
        if found is None:
            say(f"repair     {table}: removed {', '.join(removed) or 'nothing'}; rerun the command that writes it")
            continue
        stage, prefix = found
        marker = MARKERS.get(stage)
        if marker and marker != table:
            stems = None if names is None else {n.removeprefix(prefix) for n in names}
            removed += _remove(store, marker, stems)
        stages.setdefault(stage, []).extend(removed)
    for stage, removed in stages.items():
        say(f"repair     {stage}: removed {', '.join(removed)}; the stage will write them again")
    store.update_manifest(lambda m: _mark_for_repair(m, stages))
    return [s for s in STAGES if s in stages]


def _remove(store: AtlasStore, table: str, names: set[str] | None) -> list[str]:
    folder = TABLES[table].folder
    chosen = sorted({str(p).rsplit("/", 1)[-1] for p in store.parts(table)} if names is None else names)
    for name in chosen:
        store.remove_path(f"{folder}/{name}")
        store.remove_path(f"{folder}/.{name}.sum")
    return [f"{folder}/{n}" for n in chosen]


def _mark_for_repair(m: dict[str, Any], stages: dict[str, list[str]]) -> None:
    for name, removed in stages.items():
        record = m["stages"].get(name)
        if record is not None:
            record["status"] = "running"
            record["repairing"] = removed
