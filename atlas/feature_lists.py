"""Named feature lists kept in the atlas (the `lists` table), for the viewer's Lists page and its URLs.

Append-only: saving a list writes one new part with the whole list as a new version and commits it to the
manifest; nothing is rewritten, so a save never loses another and every earlier version stays readable. A
list is the rows of its latest version; deleting one saves a version whose only row has no feature."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from atlas.errors import AtlasError
from atlas.store import AtlasStore, table_from_rows

NAME = re.compile(r"^[\w][\w .,:()+-]{0,79}$")
MAX_FEATURES = 10_000
# Viewer sessions are threads of one server: one save at a time, so two manifest updates never interleave.
_SAVING = threading.Lock()


@dataclass(frozen=True, slots=True)
class FeatureList:
    name: str
    version: int
    feature_ids: tuple[int, ...]
    note: str


def check_name(name: str) -> str:
    """The name stripped, or a one-line AtlasError saying what a list name may be."""
    name = name.strip()
    if not NAME.fullmatch(name):
        raise AtlasError(
            f"list name {name!r}: use 1-80 letters, digits, spaces and . , : ( ) + - _, starting with a letter or digit"
        )
    return name


def save_list(
    store: AtlasStore, name: str, feature_ids: Sequence[int], note: str = "", n_features: int | None = None
) -> FeatureList:
    """Save `feature_ids` (in order, duplicates dropped) as the new version of list `name`; an empty list
    deletes it. Feature ids outside 0..n_features-1 are refused."""
    name = check_name(name)
    ids = list(dict.fromkeys(int(f) for f in feature_ids))
    if len(ids) > MAX_FEATURES:
        raise AtlasError(f"list {name!r}: {len(ids)} features, at most {MAX_FEATURES} per list")
    n = store.count_rows("features") if n_features is None else n_features
    bad = [f for f in ids if not 0 <= f < n]
    if bad:
        raise AtlasError(f"list {name!r}: feature {bad[0]} is not a feature of this atlas (0..{n - 1})")
    version = time.time_ns()
    rows: list[int | None] = list(ids) or [None]
    table = table_from_rows(
        "lists",
        {
            "list_name": [name] * len(rows),
            "version": [version] * len(rows),
            "position": list(range(len(rows))),
            "feature_id": rows,
            "note": [note.strip()[:500]] * len(rows),
        },
    )
    with _SAVING:
        store.write_part("lists", f"part-{version}-{uuid.uuid4().hex[:8]}", table)
        store.update_manifest(lambda m: store.record_tables(m, ["lists"]))
    return FeatureList(name, version, tuple(ids), note.strip()[:500])


def read_lists(store: AtlasStore) -> dict[str, FeatureList]:
    """Every current (not deleted) list, by name, from the committed parts."""
    _, files = store.snapshot()
    if not files["lists"]:
        return {}
    table = pa.concat_tables(pq.read_table(str(p), filesystem=store.fs) for p in files["lists"])
    latest: dict[str, int] = {}
    for name, version in zip(table["list_name"].to_pylist(), table["version"].to_pylist(), strict=True):
        latest[name] = max(version, latest.get(name, version))
    rows: dict[str, list[tuple[int, int | None, str]]] = {}
    for name, version, position, feature_id, note in zip(
        *(table[c].to_pylist() for c in ("list_name", "version", "position", "feature_id", "note")), strict=True
    ):
        if version == latest[name]:
            rows.setdefault(name, []).append((position, feature_id, note))
    out = {}
    for name, members in sorted(rows.items()):
        members.sort()
        ids = tuple(int(f) for _, f, _ in members if f is not None)
        if ids:
            out[name] = FeatureList(name, latest[name], ids, members[0][2] or "")
    return out
