"""`atlas bench train|featurize|embed` write result JSON of the agreed shape (tiny sizes: shapes, not speed)."""

from __future__ import annotations

import json

from typer.testing import CliRunner


def _run(args):
    from jobs.cli import app

    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def test_bench_train_json(tmp_path):
    _run(
        [
            "bench",
            "train",
            "--out",
            str(tmp_path),
            "--rows",
            "1024",
            "--dim",
            "16",
            "--expansion",
            "2",
            "--batch-size",
            "128",
            "--memory-rows",
            "256",
        ]
    )
    r = json.loads((tmp_path / "train.json").read_text())
    assert r["ratio"] > 0 and r["pipeline_samples_per_s"] > 0 and r["bare_samples_per_s"] > 0
    assert r["projected_h100_epoch"]["seconds_bf16"] > 0 and "assumption" in r["projected_h100_epoch"]
    m = r["memory"]
    assert set(m["runs"]) == {"n_256", "n_1024"} and m["peak_rss_ratio_4n_over_n"] > 0


def test_bench_featurize_json(tmp_path):
    _run(
        [
            "bench",
            "featurize",
            "--out",
            str(tmp_path),
            "--rows",
            "1024",
            "--dim",
            "16",
            "--expansion",
            "2",
            "--batch-size",
            "128",
            "--no-ray-job",
            "--memory-rows",
            "0",
        ]
    )
    r = json.loads((tmp_path / "featurize.json").read_text())
    assert r["ratio"] > 0 and r["target_ratio"] == 0.8 and r["l0"] > 0 and "device" in r
