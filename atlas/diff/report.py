"""Where `atlas diff` writes: the `diff_matches`, `diff_summary` and `diff_cosines` tables (one part each,
each written atomically) and a `diff` record in the folder's manifest, so that `atlas sql` and the viewer's
Diff page read them. The folder is atlas A by default, or any folder (it then holds only the diff)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from atlas.diff.compare import DiffResult
from atlas.store import AtlasStore

DIFF_TABLES = ("diff_matches", "diff_summary", "diff_cosines")


def write_diff(store: AtlasStore, result: DiffResult) -> dict[str, Any]:
    """Write the result's tables and record it in `store`'s manifest; returns the record."""
    store.write_part("diff_matches", "part-00000", result.matches)
    store.write_part("diff_summary", "part-00000", result.summary)
    store.write_part("diff_cosines", "part-00000", result.cosines)
    summary = {
        row["kind"]: {k: row[k] for k in ("groups", "features_a", "features_b", "share_a", "share_b")}
        for row in result.summary.to_pylist()
    }
    record = {**result.info, "summary": summary, "written": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}

    def commit(m: dict[str, Any]) -> None:
        store.record_tables(m, DIFF_TABLES)
        m["diff"] = record

    store.update_manifest(commit)
    return record
