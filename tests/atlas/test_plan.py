"""`atlas.plan` against a hand-worked example, and its source labels and bad inputs."""

from __future__ import annotations

import json

import pytest

from atlas.errors import AtlasError
from atlas.plan import plan_atlas, read_benchmarks

BIGG = "open_clip:ViT-bigG-14/laion2b_s39b_b160k"
MEASURED = {
    "scale": {
        "device": "cpu (test)",
        "train": {"ratio": 0.9},
        "featurize": {"ratio": 0.8},
        "index": {"labels_seconds": 5, "catalog_seconds": 1, "feature_index_build_seconds": 4, "features": 81920},
        "disk": {"bytes_per_image": 5000, "bytes_per_feature": 16000},
        "sql": {"images": 1_000_000, "cooccurrence": {"seconds": 3.0}},
    }
}


def _plan(cpus_per_gpu=4, bench=MEASURED, **kw):
    args = dict(images=5_000_000, gpus=8, clip=BIGG, expansion_factor=64, epochs=1, icons=60_000, icon_size=512)
    return plan_atlas(**{**args, **kw}, cpus_per_gpu=cpus_per_gpu, bench=bench)


def test_the_5m_bigg_plan_matches_the_hand_worked_figures():
    p = _plan()
    s = {st.stage: st for st in p.stages}
    # embed: GPU 5e6 / (521 x 8) = 1,199.6 s; decode 5e6 / (97 x 4 cores x 8) = 1,610.8 s -> decode-bound
    assert s["embed"].seconds == pytest.approx(1610.8, abs=0.1) and "CPU decode" in s["embed"].bound
    # train: 153,000 x 0.9 = 137,700 samples/s on one GPU: 5e6 / 137,700 = 36.31 s
    assert s["train"].seconds == pytest.approx(36.31, abs=0.01)
    # featurize: 153,000 x 3 x 0.8 = 367,200 rows/s per GPU x 8: 1.702 s
    assert s["featurize"].seconds == pytest.approx(1.702, abs=0.001)
    # render: 60,000 / (10.7 x 8) = 700.9 s; index: 5 + 1 + 4 = 10 s at 81,920 features, co-occurrence
    # 3 s at 1M images x 5 = 15 s
    assert s["render"].seconds == pytest.approx(700.9, abs=0.1) and s["index"].seconds == pytest.approx(25.0)
    assert "co-occurrence 15 s" in s["index"].bound and "sql.cooccurrence" in s["index"].source
    assert p.total_seconds == pytest.approx(1610.8 + 36.31 + 1.702 + 700.9 + 25.0, abs=0.2)
    assert p.bottleneck.stage == "embed"
    # disk: 5e6 x 5,000 + 81,920 x 16,000 + 60,000 icons x 400,000 = 50.31 GB
    assert p.disk_bytes == pytest.approx(50.31e9, rel=1e-3)
    # memory: (2 x 1280 x 81,920 + 81,920 + 1280) params x 4 B x (weights, grads, Adam m, v) = 3.357 GB
    assert p.train_memory_gb == pytest.approx(3.357, abs=0.001)


def test_enough_decode_cores_make_embed_gpu_bound_and_sources_are_named():
    p = _plan(cpus_per_gpu=16)
    embed = p.stages[0]
    assert embed.seconds == pytest.approx(1199.6, abs=0.1) and embed.bound.startswith("GPU")
    assert all(st.source for st in p.stages)
    assert "shipped H100" in embed.source and "benchmarks/scale.json" in p.stages[1].source
    unmeasured = _plan(bench={})
    assert "none measured, taken as 1" in unmeasured.stages[1].source and "not measured" in unmeasured.stages[-1].source


def test_bad_inputs_are_one_line(tmp_path):
    with pytest.raises(AtlasError, match=r"--images = 0: must be positive"):
        _plan(images=0)
    with pytest.raises(AtlasError, match=r"--gpus = -1"):
        _plan(gpus=-1)
    with pytest.raises(AtlasError, match=r"models.clip = 'open_clip:RN50/openai': no throughput figure"):
        _plan(clip="open_clip:RN50/openai")
    (tmp_path / "scale.json").write_text("{not json")
    with pytest.raises(AtlasError, match=r"scale.json: not readable benchmark JSON"):
        read_benchmarks(tmp_path)


def test_the_cli_prints_the_projection_of_the_shipped_benchmarks(tmp_path):
    from repo import ROOT
    from typer.testing import CliRunner

    from jobs.cli import app

    config = ROOT / "jobs" / "configs" / "production.toml"
    args = ["plan", "--images", "5000000", "--gpus", "8", "--config", str(config), "--icons", "60000"]
    args += ["--benchmarks", str(ROOT / "benchmarks")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "81,920 features, 8 GPUs" in res.output and "bottleneck:" in res.output
    for stage in ("embed", "train", "featurize", "render", "index"):
        assert f"  {stage} " in res.output
    res = CliRunner().invoke(app, [*args, "--json"])
    data = json.loads(res.output)
    assert {s["stage"] for s in data["stages"]} == {"embed", "train", "featurize", "render", "index"}
