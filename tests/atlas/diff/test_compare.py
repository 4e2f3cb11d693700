"""`diff_sides` on a small planted pair (the bench's construction) finds every planted role exactly, and an SAE
without activations is compared by its decoder alone."""

from __future__ import annotations

import json

import numpy as np

from atlas.diff.compare import DiffSettings, diff_sides
from atlas.diff.report import write_diff
from atlas.diff.sides import DiffSide, open_atlas_side
from atlas.planted import PlantedWorld
from atlas.store import AtlasStore
from jobs.bench_diff import derive_b, score_against_truth, write_planted_atlas


def test_every_planted_role_is_found(tmp_path):
    world = PlantedWorld(n_features=1024, dim=128, l0=20)
    dec_a, codes_a = world.dictionary(), world.codes(3000)
    dec_b, codes_b, truth = derive_b(world, dec_a, codes_a)
    write_planted_atlas(tmp_path / "a", dec_a, codes_a)
    write_planted_atlas(tmp_path / "b", dec_b, codes_b)
    result = diff_sides(
        open_atlas_side(tmp_path / "a"), open_atlas_side(tmp_path / "b"), DiffSettings(), say=lambda _: None
    )
    scores = score_against_truth(result.matches, json.loads(json.dumps(truth)))
    assert scores == {k: 1.0 for k in scores}, scores
    summary = {r["kind"]: r for r in result.summary.to_pylist()}
    assert summary["split"]["groups"] == 10 and summary["split"]["features_b"] == 20
    assert summary["merged"]["groups"] == 5 and summary["gone"]["features_a"] == 10
    record = write_diff(AtlasStore(tmp_path / "a"), result)
    assert record["summary"]["new"]["features_b"] == 10
    assert AtlasStore(tmp_path / "a").read_manifest().tables["diff_matches"] == ["part-00000.parquet"]


def test_without_activations_the_decoder_alone_decides():
    rng = np.random.default_rng(0)
    dec = rng.standard_normal((50, 16)).astype(np.float32)
    a = DiffSide("a", dec, np.ones(50, bool), (), ())
    b = DiffSide("b", dec[::-1].copy() * 3, np.ones(50, bool), (), ())  # reversed, rescaled
    result = diff_sides(a, b, DiffSettings(), say=lambda _: None)
    rows = result.matches.to_pylist()
    assert {(r["feature_a"], r["feature_b"]) for r in rows} == {(i, 49 - i) for i in range(50)}
    assert all(r["correlation"] is None for r in rows)
    assert result.info["shared_images"] == 0


def test_settings_out_of_range_are_one_line_errors():
    import pytest

    from atlas.errors import AtlasError

    with pytest.raises(AtlasError, match="memory_limit: not a size"):
        DiffSettings(memory_limit="lots")
    with pytest.raises(AtlasError, match="match_cosine must be in"):
        DiffSettings(match_cosine=1.5)
