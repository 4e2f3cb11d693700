"""`atlas check` and `atlas build --repair` on a small atlas built through the real CLI (local Ray): a clean atlas
passes, each kind of damage is reported by table and part file, and a repair redoes exactly the damaged parts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from atlas.store import AtlasStore
from atlas.toyworld import write_world
from schemas import TABLES

CONFIG = """
[data]
source = "{source}"
[embed]
batch_size = 32
part_size = 40
[sae]
expansion_factor = 2
epochs = 3
batch_size = 64
log_every = 5
[featurize]
top_k = 5
[render]
steps = 2
batch_size = 8
part_size = 32
max_features = 64
[directions]
pairs = [["red", "blue"]]
mediums = ["photo"]
subjects = ["circle"]
"""


def atlas_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("check")
    images = write_world(root / "world", 100, 32, seed=2)
    cfg = root / "atlas.toml"
    cfg.write_text(CONFIG.format(source=images))
    proc = atlas_cli("build", "--config", str(cfg), "--out", str(root / "atlas"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root / "atlas"


@pytest.fixture
def atlas(built, tmp_path) -> Path:
    """A copy of the built atlas, to damage."""
    return Path(shutil.copytree(built, tmp_path / "atlas"))


def contents(out: Path) -> dict[str, pa.Table]:
    """Every table, rows in a canonical order (its columns that sort, in order)."""
    store = AtlasStore(out)
    tables = {}
    for name in TABLES:
        if not store.parts(name):
            continue
        t = store.read_table(name)
        keys = [f.name for f in t.schema if pa.types.is_integer(f.type) or pa.types.is_string(f.type)]
        tables[name] = t.sort_by([(k, "ascending") for k in keys])
    return tables


def test_a_clean_atlas_passes(built):
    proc = atlas_cli("check", "--atlas", str(built))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "clean" in proc.stdout and "7 invariant(s)" in proc.stdout
    assert "no checksum recorded" not in proc.stdout
    m = json.loads((built / "manifest.json").read_text())
    assert set(m["parts"]["embeddings"]) == {"part-00000.parquet", "part-00001.parquet", "part-00002.parquet"}
    record = m["parts"]["embeddings"]["part-00001.parquet"]
    assert record["rows"] == 40 and record["bytes"] == (built / "embeddings/part-00001.parquet").stat().st_size


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def duplicate_row(path: Path) -> None:
    t = pq.read_table(path)
    pq.write_table(pa.concat_tables([t, t.slice(3, 1)]), path, compression="zstd")


DAMAGE = {
    "truncated": (truncate, "images", "part-00001", "unreadable as Parquet"),
    "flipped byte": (flip_byte, "embeddings", "part-00002", "checksum mismatch"),
    "missing": (Path.unlink, "activations", "part-00000", "missing"),
    "duplicated row": (duplicate_row, "images", "part-00000", "41 rows, 40 recorded"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damage_is_reported_by_table_and_part(atlas, case):
    damage, table, part, message = DAMAGE[case]
    damage(atlas / TABLES[table].folder / f"{part}.parquet")
    proc = atlas_cli("check", "--atlas", str(atlas))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if f"{table}/{part}.parquet" in line]
    assert lines and any(message in line for line in lines), proc.stdout
    assert lines[0].startswith(f"{table}: ") and "problem(s)" in proc.stdout.splitlines()[-1]


def test_an_atlas_without_checksums_is_checked_by_its_invariants(atlas):
    m = json.loads((atlas / "manifest.json").read_text())
    del m["parts"]
    (atlas / "manifest.json").write_text(json.dumps(m))
    proc = atlas_cli("check", "--atlas", str(atlas))
    assert proc.returncode == 0 and "no checksum recorded" in proc.stdout, proc.stdout + proc.stderr
    duplicate_row(atlas / "images/part-00002.parquet")
    proc = atlas_cli("check", "--atlas", str(atlas))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "images: images/part-00002.parquet: image_id" in proc.stdout and "appears 2 times" in proc.stdout


def _drop_icons(store: AtlasStore) -> None:
    (store.table_dir("icons") / "part-00001.parquet").unlink()


def _halve_frequency(store: AtlasStore) -> None:
    t = store.read_table("features")
    t = t.set_column(2, "frequency", pc.multiply(t["frequency"], 0.5))
    store.write_part("features", "part-00000", t)


def _swap_top_values(store: AtlasStore) -> None:
    t = store.read_table("top_images")
    t = t.set_column(3, "value", pa.array(t["value"].to_numpy()[::-1].copy()))
    store.write_part("top_images", "part-00000", t)


def _double_a_count(store: AtlasStore) -> None:
    t = store.read_table("cooccurrence")
    together = t["together"].to_numpy().copy()
    together[0] *= 2
    store.write_part("cooccurrence", "part-00000", t.set_column(2, "together", pa.array(together)))


def _drop_a_map_point(store: AtlasStore) -> None:
    t = store.read_table("feature_map")
    store.write_part("feature_map", "part-00000", t.slice(1))


@pytest.mark.parametrize(
    "change, table, message",
    [
        (_drop_icons, "icons", "has 0 icon(s)"),
        (_halve_frequency, "features", "the activations give frequency"),
        (_swap_top_values, "top_images", "the activations give"),
        (_double_a_count, "cooccurrence", "the activations give"),
        (_drop_a_map_point, "feature_map", "(alive) is placed 0 time(s)"),
    ],
)
def test_invariants_catch_tables_that_disagree(atlas, change, table, message):
    """Tables rewritten and committed with fresh checksums, but wrong: only the invariants can tell."""
    store = AtlasStore(atlas)
    change(store)
    store.update_manifest(lambda m: store.record_tables(m, [table]))
    proc = atlas_cli("check", "--atlas", str(atlas))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert any(line.startswith(f"{table}: ") and message in line for line in proc.stdout.splitlines()), proc.stdout
    assert "checksum" not in proc.stdout


def test_repair_redoes_exactly_the_damaged_parts(built, atlas):
    before = json.loads((built / "manifest.json").read_text())
    flip_byte(atlas / "images/part-00001.parquet")
    (atlas / "activations/part-00002.parquet").unlink()
    truncate(atlas / "icons/part-00001.parquet")
    proc = atlas_cli("build", "--repair", "--out", str(atlas))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "repair     embed: removed images/part-00001.parquet, embeddings/part-00001.parquet" in proc.stdout
    assert "repair     featurize: removed activations/part-00002.parquet" in proc.stdout
    assert "repair     render: removed icons/part-00001.parquet" in proc.stdout
    assert "after the repair:" in proc.stdout and "clean" in proc.stdout.splitlines()[-1]
    assert "train      up to date, skipped" in proc.stdout  # the embeddings came back byte for byte
    after = json.loads((atlas / "manifest.json").read_text())
    assert after["parts"] == before["parts"]
    assert {s: r["run_id"] for s, r in after["stages"].items()} == {s: r["run_id"] for s, r in before["stages"].items()}
    original, repaired = contents(built), contents(atlas)
    assert original.keys() == repaired.keys()
    for name, table in original.items():
        assert repaired[name].equals(table), name
    assert atlas_cli("check", "--atlas", str(atlas)).returncode == 0


def test_repair_rewrites_a_table_that_disagrees_with_the_others(built, atlas):
    store = AtlasStore(atlas)
    _halve_frequency(store)
    store.update_manifest(lambda m: store.record_tables(m, ["features"]))
    proc = atlas_cli("build", "--repair", "--out", str(atlas))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "repair     featurize: removed features/part-00000.parquet" in proc.stdout
    assert "clean" in proc.stdout.splitlines()[-1]
    assert contents(atlas)["features"].equals(contents(built)["features"])


def test_repair_of_a_clean_atlas_does_nothing(built):
    proc = atlas_cli("build", "--repair", "--out", str(built))
    assert proc.returncode == 0 and "nothing to repair" in proc.stdout, proc.stdout + proc.stderr
