"""`atlas bench scale` at a tiny shape: every section runs the shipped code and checks itself against the
planted truth (the figures of the real shape are in benchmarks/scale.json); `atlas planted` writes a source."""

from __future__ import annotations

import json

from repo import ROOT
from typer.testing import CliRunner

from jobs.bench_scale import README_QUERIES


def _invoke(args):
    from jobs.cli import app

    return CliRunner().invoke(app, args)


def test_every_section_runs_at_a_small_shape_and_its_answers_are_exact(tmp_path):
    args = ["bench", "scale", "--out", str(tmp_path), "--images", "20000", "--features", "512", "--dim", "64"]
    args += ["--l0", "8", "--sql-images", "120000", "--icons", "2", "--icon-steps", "1"]
    args += ["--train-steps", "2", "--train-batch", "128", "--work", str(tmp_path)]
    res = _invoke(args)
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "scale.json").read_text())
    f = r["featurize"]
    assert f["n"]["rows"] == 20000 and f["n_over_4"]["rows"] < 20000
    assert f["n"]["exactness"]["top_k_mismatches"] == 0 and f["n"]["exactness"]["top_k_features_checked"] == 64
    assert f["n"]["exactness"]["dense_max_abs_difference"] < 1e-5
    assert 6 < f["l0"] <= 8  # TopK with k = L0: at most 8 active, a few rows hold fewer planted features
    assert r["train"]["pipeline_samples_per_s"] > 0 and r["train"]["bare_samples_per_s"] > 0
    # exact up to 16,384 features, re-scored PQ codes past it
    assert r["index"]["recall_at_10_vs_exact"] >= 0.95 and r["index"]["feature_index"] == "IndexFlatIP"
    assert r["disk"]["bytes_per_image_by_table"]["embeddings"] > 64 * 2  # at least float16 per value
    sql = r["sql"]
    assert sql["activations_rows"] > 120000 * 6 and sql["activations_parts"] == 3
    assert sql["queries"]["readme_features_7_and_12"]["feature_ids"] == [7, 12]
    for probe in sql["queries"].values():
        for name in [*README_QUERIES, "co_occurrence_join"]:
            assert probe[name]["exact"], (name, probe)
    assert sql["cooccurrence"]["rows"] > 0
    assert r["render"]["n_icons"] == 2
    assert r["shape"] == {"dim": 64, "features": 512, "l0": 8.0, "images": 20000}
    # a rerun of one section keeps the others
    res = _invoke([*args[:2], "--out", str(tmp_path), "--sections", "disk", *args[4:8], "--work", str(tmp_path)])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "scale.json").read_text())
    assert again["sql"] == sql and again["disk"]["bytes_per_image"] > 0
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # the work folder is removed


def test_the_readme_holds_the_queries_the_benchmark_times():
    readme = (ROOT / "README.md").read_text()
    for template in README_QUERIES.values():
        assert template.format(f=7, g=12) in readme


def test_bad_sections_and_sizes_get_one_line(tmp_path):
    res = _invoke(["bench", "scale", "--out", str(tmp_path), "--sections", "featurize,nope"])
    assert res.exit_code != 0 and "--sections: unknown nope" in res.output
    res = _invoke(["planted", str(tmp_path / "p"), "--images", "0"])
    assert res.exit_code != 0 and "--images = 0: must be positive" in res.output
    assert not (tmp_path / "p").exists()


def test_atlas_planted_writes_a_source_the_embed_stage_accepts(tmp_path):
    from atlas.sources import check_source, plan_shards

    out = tmp_path / "planted"
    res = _invoke(["planted", str(out), "--images", "1500", "--features", "256", "--dim", "32", "--l0", "6"])
    assert res.exit_code == 0, res.output
    assert "1,500 embeddings of width 32 in 1 files" in res.output
    check_source(f"embeddings:{out}", 32)
    assert len(plan_shards(f"embeddings:{out}", 512, dim=32)) == 3 and (out / "dictionary.npy").exists()
