"""Snapshots: what readers see while a build writes.

The manifest lists, per table, the part files of its last finished stage run ("tables") with a counter
("tables_version") bumped on every change. A reader builds its views over that list and checks the counter after
its query; a writer that must rewrite a table first keeps the old parts under hidden `.retired` names (hard links
on a local filesystem, see `TableParts.retire_parts`) and points the list at them, so the old snapshot stays
readable until the new one is complete."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from atlas.store.parts import TableParts
from schemas import TABLES


class Snapshots(TableParts):
    """The reader snapshot protocol over an atlas's tables and manifest."""

    def snapshot(self) -> tuple[int, dict[str, list[Path]]]:
        """(tables_version, {table: committed part files}) as recorded in the manifest; tables the manifest
        does not list (atlases of older builds, tables written outside a stage) are their current parts."""
        m = self.read_manifest()
        out: dict[str, list[Path]] = {}
        for table, spec in TABLES.items():
            if table in m.tables:
                out[table] = [self._out(self._path(f"{spec.folder}/{name}")) for name in m.tables[table]]
            else:
                out[table] = self.parts(table)
        return m.tables_version, out

    def record_tables(self, manifest: dict[str, Any], tables: Iterable[str]) -> None:
        """In a manifest being updated: record the current parts of `tables` as their committed snapshot, with
        each part's row count, size and sha256 (`parts`)."""
        recorded = manifest.setdefault("tables", {})
        records = manifest.setdefault("parts", {})
        for table in tables:
            recorded[table] = [p.rsplit("/", 1)[-1] for p in map(str, self.parts(table))]
            records[table] = {name: self.part_record(table, name) for name in recorded[table]}
        manifest["tables_version"] = int(manifest.get("tables_version", 0)) + 1
