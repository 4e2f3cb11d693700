"""The typed manifest (atlas.store.manifest): a round trip keeps every key and value, a malformed manifest is one
AtlasError line naming the file and the bad key, a newer format is refused, and a manifest written by the
pre-typed store still reads and is rewritten with the same content."""

from __future__ import annotations

import json

import pytest

from atlas.errors import AtlasError
from atlas.store import MANIFEST, AtlasStore, Manifest, StageRecord
from schemas import FORMAT_VERSION

# A manifest as the store wrote it before it was typed (the keys `atlas build`, `atlas eval` and the snapshot
# protocol write), including an unknown top-level key and an unknown stage key, which must survive.
OLD = {
    "config": {"data": {"source": "toy"}, "models": {"clip": "builtin:toy-clip"}},
    "evaluation": {"n": 12, "top5": 0.5},
    "format_version": 1,
    "models": {"clip": "builtin:toy-clip", "decoder": "builtin:toy-decoder"},
    "stages": {
        "embed": {
            "fingerprint": "0123456789abcdef",
            "finished": "2026-01-01T00:00:01Z",
            "run_id": "a" * 32,
            "seconds": 1,
            "started": "2026-01-01T00:00:00Z",
            "status": "done",
            "summary": {"images": 10, "errors": 0, "parts_resumed": 0},
        },
        "train": {"fingerprint": "fedcba9876543210", "started": "2026-01-01T00:00:02Z", "status": "running"},
        "index": {"status": "done", "seconds": 0.0, "finished": "synthetic", "written_by": "an older build"},
    },
    "tables": {"embeddings": ["part-00000.parquet", ".part-00001.parquet.retired"]},
    "tables_version": 3,
    "updated": "2026-01-01T00:00:03Z",
    "versions": {"pyarrow": "19.0.0", "ray": "2.40.0"},
    "something_new": [1, 2, 3],
}


def _write(tmp_path, data) -> AtlasStore:
    (tmp_path / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return AtlasStore(tmp_path)


def test_an_old_manifest_still_reads_and_is_rewritten_with_the_same_content(tmp_path):
    store = _write(tmp_path, OLD)
    assert store.manifest() == OLD
    typed = store.read_manifest()
    assert isinstance(typed, Manifest) and isinstance(typed.stages["embed"], StageRecord)
    assert typed.stages["embed"].status == "done" and typed.stages["train"].run_id is None
    assert typed.tables_version == 3 and typed.models["decoder"] == "builtin:toy-decoder"
    assert store.stage("index")["written_by"] == "an older build"  # unknown keys are kept

    store.update_manifest(lambda m: None)
    rewritten = json.loads((tmp_path / MANIFEST).read_text())
    assert rewritten.pop("updated") != "" and rewritten == {k: v for k, v in OLD.items() if k != "updated"}
    assert isinstance(rewritten["stages"]["embed"]["seconds"], int)  # values are written as they were, not coerced


def test_round_trip_through_update_manifest(tmp_path):
    store = AtlasStore(tmp_path)
    assert store.manifest() == {"format_version": FORMAT_VERSION, "stages": {}}

    def change(m):
        m["models"] = {"clip": "builtin:random-clip", "decoder": "builtin:random-decoder"}
        m["stages"]["embed"] = {"status": "done", "fingerprint": "f", "run_id": "r", "seconds": 2.5, "summary": {}}

    written = store.update_manifest(change)
    assert store.manifest() == written
    assert set(written) == {"format_version", "models", "stages", "updated"}  # no keys added by the model
    assert set(written["stages"]["embed"]) == {"status", "fingerprint", "run_id", "seconds", "summary"}
    typed = store.read_manifest()
    assert typed.format_version == FORMAT_VERSION and typed.stages["embed"].seconds == 2.5


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"stages": {"embed": {"status": "done", "seconds": "soon"}}}, "stages.embed.seconds"),
        ({"stages": {"embed": {"status": "finished"}}}, "stages.embed.status"),
        ({"stages": {"embed": {"seconds": 1.0}}}, "stages.embed.status"),
        ({"stages": ["embed"]}, "stages"),
        ({"tables": {"embeddings": "part-00000.parquet"}}, "tables.embeddings"),
        ({"tables_version": "3"}, "tables_version"),
    ],
)
def test_a_malformed_manifest_is_one_line_naming_the_file_and_the_key(tmp_path, bad, key):
    store = _write(tmp_path, {"format_version": FORMAT_VERSION, **bad})
    for read in (store.manifest, store.read_manifest, lambda: store.stage("embed")):
        with pytest.raises(AtlasError) as info:
            read()
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"{tmp_path / MANIFEST}: malformed manifest") and f"'{key}'" in message


def test_a_change_that_breaks_the_manifest_writes_nothing(tmp_path):
    store = AtlasStore(tmp_path)
    store.update_manifest(lambda m: None)
    before = (tmp_path / MANIFEST).read_bytes()
    with pytest.raises(ValueError, match="stages.embed.status"):
        store.update_manifest(lambda m: m["stages"].update(embed={"status": 1}))
    assert (tmp_path / MANIFEST).read_bytes() == before


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, "2"])
def test_a_newer_format_is_refused_before_the_model_is_checked(tmp_path, version):
    store = _write(tmp_path, {"format_version": version, "stages": "whatever a newer format keeps here"})
    for read in (store.manifest, store.read_manifest):
        with pytest.raises(AtlasError) as info:
            read()
        assert str(info.value) == (
            f"{tmp_path / MANIFEST}: written by a newer atlas format (v{version}); this tool reads up to "
            f"v{FORMAT_VERSION}: upgrade clip-feature-atlas"
        )
