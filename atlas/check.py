"""`atlas check`: the atlas's fsck.

Every part file the manifest lists as committed must exist, read as Parquet with its table's schema, and have
the row count and sha256 recorded when it was written (atlases built before checksums were recorded get a
note instead). Then the invariants between tables, as DuckDB queries over the parts that passed: unique image
ids, an embedding per image, feature statistics and top images that match the activations, one icon per alive
feature. An invariant whose stage has not run, or whose tables have damaged parts, is skipped with a note.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from atlas.check_invariants import CHECKS, Problem
from atlas.store import AtlasStore
from schemas import TABLES, vector_width
from schemas.views import view_sql


@dataclass
class CheckReport:
    """What `check_atlas` found: problems, notes (what could not be checked, and why) and what was checked."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parts: int = 0
    invariants: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def damaged(self) -> dict[str, set[str] | None]:
        """table -> its damaged part files, or None where the whole table is suspect."""
        out: dict[str, set[str] | None] = {}
        for p in self.problems:
            if p.part is None or out.get(p.table, set()) is None:
                out[p.table] = None
            else:
                out.setdefault(p.table, set()).add(p.part)  # type: ignore[union-attr]
        return out

    def summary(self) -> str:
        verdict = "clean" if self.ok else f"{len(self.problems)} problem(s)"
        return (
            f"checked {self.parts} part file(s) and {len(self.invariants)} invariant(s) "
            f"({', '.join(self.invariants) or 'none'}): {verdict}"
        )


def check_atlas(store: AtlasStore) -> CheckReport:
    """Check every committed part of the atlas and the invariants between its tables."""
    report = CheckReport()
    m = store.read_manifest()
    good: dict[str, list[str]] = {}
    unrecorded = []
    for table, spec in TABLES.items():
        names = m.tables.get(table)
        if names is None:
            names = [str(p).rsplit("/", 1)[-1] for p in store.parts(table)]
            if names:
                report.notes.append(f"{table}: not committed by a stage (no manifest entry): parts checked as found")
        records = {k: v.model_dump() for k, v in m.parts.get(table, {}).items()}
        good[table] = []
        for name in names:
            report.parts += 1
            record = records.get(name.removeprefix(".").removesuffix(".retired"))
            if record is None:
                unrecorded.append(f"{table}/{name}")
            if _check_part(store, table, name, record, report):
                good[table].append(f"{store.base}/{spec.folder}/{name}")
    if unrecorded:
        report.notes.append(
            f"no checksum recorded for {len(unrecorded)} part(s) (written before checksums were recorded), "
            f"e.g. {unrecorded[0]}: checked as Parquet only"
        )
    _check_invariants(store, m.model_dump(), good, report)
    return report


def _check_part(store: AtlasStore, table: str, name: str, record: dict[str, Any] | None, report: CheckReport) -> bool:
    """Check one part file (problems go to `report`); returns whether it reads with its table's schema, which
    is what the invariants between tables need."""
    path = f"{store.base}/{TABLES[table].folder}/{name}"

    def bad(what: str) -> bool:
        report.problems.append(Problem(table, name, what))
        return False

    try:
        with store.fs.open_input_stream(path) as f:
            blob = f.read()  # read once: hashed, then parsed (the decoded table is no smaller than its file)
    except FileNotFoundError:
        return bad("missing (the manifest lists it as committed)")
    size, digest = len(blob), hashlib.sha256(blob).hexdigest()
    if record is not None and (size, digest) != (record["bytes"], record["sha256"]):
        bad(
            f"checksum mismatch ({size} bytes, sha256 {digest[:12]}; recorded {record['bytes']} bytes, "
            f"sha256 {record['sha256'][:12]})"
        )
    try:
        data = pq.read_table(pa.BufferReader(blob))
    except (pa.ArrowException, OSError) as e:
        return bad(f"unreadable as Parquet ({str(e).splitlines()[0][:200]})")
    expected = TABLES[table].schema(vector_width(data.schema))
    if record is not None and data.num_rows != record["rows"]:
        bad(f"{data.num_rows} rows, {record['rows']} recorded")
    if not data.schema.equals(expected, check_metadata=False):
        return bad(f"schema does not match the contract ({_schema_diff(data.schema, expected)})")
    return True


def _schema_diff(got: pa.Schema, expected: pa.Schema) -> str:
    want = {f.name: f.type for f in expected}
    have = {f.name: f.type for f in got}
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    wrong = [f"{n} is {have[n]}, not {want[n]}" for n in want if n in have and have[n] != want[n]]
    return "; ".join([*(f"missing {n}" for n in missing), *(f"extra {n}" for n in extra), *wrong]) or "order"


# invariant -> (the stage it needs, the tables it reads)
INVARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "unique image ids": ("embed", ("images", "embeddings")),
    "an embedding per image": ("embed", ("images", "embeddings")),
    "frequencies match activations": ("featurize", ("embeddings", "activations", "features")),
    "top images are the largest activations": ("featurize", ("activations", "top_images")),
    "one icon per alive feature": ("render", ("features", "icons")),
    "co-occurrence counts agree": ("index", ("embeddings", "activations", "cooccurrence")),
    "the map places every alive feature": ("index", ("features", "feature_map")),
}


def _check_invariants(store: AtlasStore, m: dict[str, Any], good: dict[str, list[str]], report: CheckReport) -> None:
    if not store.local:
        report.notes.append("skipped the invariants between tables: the atlas is not on a local filesystem")
        return
    damaged = {p.table for p in report.problems}
    con = duckdb.connect()
    dim = vector_width(pq.read_schema(good["embeddings"][0], filesystem=store.fs)) if good["embeddings"] else 1
    for name, spec in TABLES.items():
        con.execute(view_sql(name, spec.schema(dim), has_parts=False, files=good[name]))
    for name, (stage, tables) in INVARIANTS.items():
        if m["stages"].get(stage, {}).get("status") != "done":
            report.notes.append(f"skipped '{name}': the {stage} stage has not run")
            continue
        hit = [t for t in tables if t in damaged]
        partial = name in ("unique image ids",)  # partial tables cannot make this one fail wrongly
        if hit and not partial:
            report.notes.append(f"skipped '{name}': {', '.join(hit)} has damaged parts (repair them first)")
            continue
        report.invariants.append(name)
        report.problems += CHECKS[name](con, m.get("config") or {}, good)
    con.close()
