"""End to end: `atlas build` through local Ray on a small image folder with planted bad files, then every
table's counts and invariants, SQL, resume and bad input, all through the real CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from repo import ROOT

from atlas.store import AtlasStore
from atlas.toyworld import write_world
from schemas import TABLES

N_GOOD = 160


def atlas_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"atlas {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_config(path: Path, source: Path, extra: str = "") -> Path:
    path.write_text(
        f"""
[data]
source = "{source}"
[embed]
batch_size = 32
part_size = 50
[sae]
expansion_factor = 2
epochs = 4
batch_size = 64
log_every = 5
[featurize]
top_k = 5
[render]
steps = 2
batch_size = 8
part_size = 24
[directions]
pairs = [["red", "blue"]]
mediums = ["photo"]
subjects = ["circle", "square"]
{extra}
"""
    )
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    images = write_world(root / "world", N_GOOD, 32, seed=1)
    (images / "zero-bytes.png").write_bytes(b"")
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    cfg = write_config(root / "atlas.toml", images)
    out = root / "atlas"
    proc = atlas_cli("build", "--config", str(cfg), "--out", str(out))
    return {"out": out, "cfg": cfg, "stdout": proc.stdout, "store": AtlasStore(out), "root": root}


def sql(out: Path, query: str) -> list[dict]:
    return json.loads(atlas_cli("sql", "--atlas", str(out), "--format", "json", query).stdout)


def test_build_prints_a_summary_and_the_view_command(built):
    assert "View it with:  atlas view --atlas" in built["stdout"]
    assert "held-out explained variance" in built["stdout"]


def test_every_table_exists_with_the_contract_schema(built):
    store = built["store"]
    for name, spec in TABLES.items():
        if name in ("evaluation", "lists") or name.startswith("diff_"):  # `atlas eval`, the viewer, `atlas diff`
            continue
        parts = store.parts(name)
        assert parts, f"table {name} has no parts"
        schema = pq.read_schema(parts[0])
        assert schema.names == [c[0] for c in spec.columns], name
        dim = 64 if any(c[1] == "vector" for c in spec.columns) else None
        assert schema.remove_metadata().equals(spec.schema(dim).remove_metadata()), name
    assert (store.root / "atlas.duckdb").exists() and (store.index_dir / "features.faiss").exists()


def test_bad_files_are_recorded_and_good_ones_embedded_once(built):
    store = built["store"]
    errors = store.read_table("errors").to_pylist()
    assert sorted((e["source"], e["stage"]) for e in errors) == [("corrupt.jpg", "embed"), ("zero-bytes.png", "embed")]
    assert {e["source"]: e["error"] for e in errors}["zero-bytes.png"] == "empty file"
    ids = store.read_table("images", ["image_id"]).column("image_id").to_pylist()
    emb_ids = store.read_table("embeddings", ["image_id"]).column("image_id").to_pylist()
    assert len(ids) == N_GOOD == len(set(ids)) and sorted(ids) == sorted(emb_ids)


def test_feature_statistics_match_the_activations_table(built):
    con = duckdb.connect()
    out = built["out"]
    rows = con.sql(
        f"""
        WITH a AS (SELECT feature_id, count(*) n, sum(value) mass, max(value) mx
                   FROM read_parquet('{out}/activations/*.parquet') GROUP BY feature_id)
        SELECT f.feature_id, f.alive, f.frequency, f.activation_mass, f.max_activation,
               coalesce(a.n, 0) n, coalesce(a.mass, 0) mass, coalesce(a.mx, 0) mx
        FROM read_parquet('{out}/features/*.parquet') f LEFT JOIN a USING (feature_id)
        """
    ).fetchall()
    assert len(rows) == 128  # 2 x 64
    assert any(r[1] for r in rows)
    for fid, alive, freq, mass, mx, n, amass, amx in rows:
        assert alive == (n > 0), fid
        assert freq == pytest.approx(n / N_GOOD), fid
        assert mass == pytest.approx(amass, rel=1e-5) and mx == pytest.approx(amx, rel=1e-6)


def test_top_images_are_the_largest_activations(built):
    con = duckdb.connect()
    out = built["out"]
    acts = con.sql(f"SELECT feature_id, value FROM read_parquet('{out}/activations/*.parquet')").fetchnumpy()
    top = con.sql(f"SELECT feature_id, rank, value FROM read_parquet('{out}/top_images/*.parquet')").fetchnumpy()
    for fid in np.unique(acts["feature_id"]):
        expected = np.sort(acts["value"][acts["feature_id"] == fid])[::-1][:5]
        sel = top["feature_id"] == fid
        order = np.argsort(top["rank"][sel])
        np.testing.assert_array_equal(top["rank"][sel][order], np.arange(1, len(expected) + 1))
        np.testing.assert_allclose(top["value"][sel][order], expected)


def test_each_alive_feature_has_exactly_one_icon(built):
    store = built["store"]
    features = store.read_table("features", ["feature_id", "alive"]).to_pylist()
    alive = sorted(f["feature_id"] for f in features if f["alive"])
    icons = store.read_table("icons")
    assert sorted(icons.column("feature_id").to_pylist()) == alive
    assert all(img[:8] == b"\x89PNG\r\n\x1a\n" for img in icons.column("image").to_pylist())
    ranks = icons.column("fidelity_rank").to_numpy()
    assert ((ranks >= 1) & (ranks <= 128)).all()
    assert (icons.column("seed").to_numpy() == icons.column("feature_id").to_numpy()).all()


def test_train_log_and_directions(built):
    store = built["store"]
    log = store.read_table("train_log").to_pylist()
    assert [r["split"] for r in log].count("holdout") == 1 and len(log) >= 3
    assert all(0 <= r["dead_fraction"] <= 1 and r["l0"] >= 0 for r in log)
    d = store.read_table("directions").to_pylist()
    assert [(r["name"], r["n_pairs"], len(r["vector"]), len(r["top_features"])) for r in d] == [("red-blue", 2, 64, 10)]


def test_sql_over_the_catalog(built):
    out = built["out"]
    alive = sql(out, "SELECT count(*) AS n FROM features WHERE alive")[0]["n"]
    assert alive == built["store"].read_table("features").column("alive").to_pylist().count(True)
    joined = sql(
        out,
        "SELECT t.feature_id, t.rank, i.source FROM top_images t JOIN images i USING (image_id) "
        "WHERE t.rank = 1 ORDER BY t.feature_id LIMIT 3",
    )
    assert len(joined) == 3 and all(r["source"].endswith(".png") for r in joined)
    table = atlas_cli("sql", "--atlas", str(out), "SELECT feature_id, image FROM icons LIMIT 2").stdout
    assert "bytes>" in table
    refused = atlas_cli("sql", "--atlas", str(out), "DROP VIEW features", check=False)
    assert refused.returncode == 2 and "only read-only queries" in refused.stderr


def test_the_readme_sql_examples_run(built):
    from atlas.catalog import query

    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sql\n", 1)[1].split("```", 1)[0]
    statements = [s.strip() for s in block.split(";") if s.strip()]
    assert len(statements) >= 6
    for statement in statements:
        query(built["store"], statement)  # raises on any error


def test_eval_scores_the_atlas_against_the_toy_world_labels(built):
    proc = atlas_cli("eval", "--atlas", str(built["out"]))
    assert "factor values captured by a feature" in proc.stdout and "icon fidelity" in proc.stdout
    rows = sql(built["out"], "SELECT factor, value, auroc, best_feature_id FROM evaluation")
    assert {r["factor"] for r in rows} == {"shape", "colour", "pattern", "background", "size", "count", "position"}
    assert len(rows) >= 6 + 8 + 3 + 4 + 2 + 2 + 3 - 3  # a small sample may miss a rare value or two
    assert all(0.5 <= r["auroc"] <= 1.0 for r in rows)  # the best feature is never worse than chance
    probes = {(r["factor"], r["value"]): r["probe_auroc"] for r in sql(built["out"], "SELECT * FROM evaluation")}
    # The toy CLIP encodes the background (a flat colour) linearly: a probe separates it.
    assert np.nanmedian([v for (f, _), v in probes.items() if f == "background"]) >= 0.95
    assert "values a linear probe on the embeddings decodes" in proc.stdout


def test_info_reports_the_stages(built):
    text = atlas_cli("info", "--atlas", str(built["out"])).stdout
    for stage in ("embed", "train", "featurize", "render", "directions", "index"):
        assert stage in text


def test_rerun_does_no_work_then_redoes_only_a_deleted_stage(built):
    out, cfg, store = built["out"], built["cfg"], built["store"]
    before = store.manifest()["stages"]
    icons_before = store.read_table("icons").sort_by("feature_id")
    again = atlas_cli("build", "--config", str(cfg), "--out", str(out))
    assert "Nothing to do" in again.stdout
    assert store.manifest()["stages"] == before

    import shutil

    shutil.rmtree(out / "icons")
    third = atlas_cli("build", "--config", str(cfg), "--out", str(out))
    after = store.manifest()["stages"]
    rerun = {s for s in after if after[s]["run_id"] != before[s]["run_id"]}
    assert rerun == {"render", "index"}, third.stdout
    icons_after = store.read_table("icons").sort_by("feature_id")
    assert icons_after.column("feature_id").equals(icons_before.column("feature_id"))
    assert icons_after.column("image").equals(icons_before.column("image"))  # fixed seeds: identical icons


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such folder"),
        ("empty", "no images (jpg, png, webp)"),
        ("unknown-key", "unknown key 'sae.expansion'"),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, case, message):
    source = tmp_path / "images"
    if case == "empty":
        source.mkdir()
    extra = "[world]\n" if case != "unknown-key" else ""
    cfg = write_config(tmp_path / "c.toml", source, extra)
    if case == "unknown-key":
        cfg.write_text(cfg.read_text().replace("expansion_factor = 2", "expansion = 2"))
    proc = atlas_cli("build", "--config", str(cfg), "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0], proc.stderr
