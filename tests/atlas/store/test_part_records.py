"""Each part's rows, bytes and sha256 are recorded when `write_part` writes it (a hidden `.sum` sidecar, which works
from any process) and copied into the manifest's `parts` when the driver commits the table (`record_tables`)."""

from __future__ import annotations

import hashlib

from atlas.check import check_atlas
from atlas.store import AtlasStore, table_from_rows


def errors_part(n: int):
    return table_from_rows(
        "errors", {"stage": ["embed"] * n, "source": [f"{i}.png" for i in range(n)], "error": ["x"] * n}
    )


def test_the_commit_records_what_was_written_not_what_is_there_now(tmp_path):
    store = AtlasStore(tmp_path)
    store.write_part("errors", "embed-part-00000", errors_part(3))
    path = store.part_path("errors", "embed-part-00000")
    written = path.read_bytes()
    path.write_bytes(written[:-5])  # damaged between the write and the commit
    store.update_manifest(lambda m: store.record_tables(m, ["errors"]))
    record = store.read_manifest().parts["errors"]["embed-part-00000.parquet"]
    assert (record.rows, record.bytes, record.sha256) == (3, len(written), hashlib.sha256(written).hexdigest())
    lines = [p.line() for p in check_atlas(store).problems]
    assert any(line.startswith("errors: errors/embed-part-00000.parquet: checksum mismatch") for line in lines), lines


def test_a_part_without_a_sidecar_is_recorded_from_the_file(tmp_path):
    store = AtlasStore(tmp_path)
    store.write_part("errors", "embed-part-00001", errors_part(2))
    (store.table_dir("errors") / ".embed-part-00001.parquet.sum").unlink()  # as written before sidecars
    store.update_manifest(lambda m: store.record_tables(m, ["errors"]))
    blob = store.part_path("errors", "embed-part-00001").read_bytes()
    record = store.read_manifest().parts["errors"]["embed-part-00001.parquet"]
    assert (record.rows, record.bytes, record.sha256) == (2, len(blob), hashlib.sha256(blob).hexdigest())
    report = check_atlas(store)
    assert report.ok, [p.line() for p in report.problems]
    assert any("skipped 'unique image ids': the embed stage has not run" in n for n in report.notes), report.notes
