"""Featurize: mergeable per-feature statistics and top-k (exact whatever the split), and the Ray job's tables
checked against the activations it wrote, including a resumed run."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
import torch

from atlas.config import AtlasConfig
from atlas.featurize import FeatureStats
from atlas.models.sae.autoencoder import SAEConfig, SparseAutoencoder
from atlas.store import AtlasStore, table_from_rows


def _sparse_acts(n=300, f=12, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random((n, f)).astype(np.float32) * (rng.random((n, f)) < 0.2)
    a[:, 3] = 0  # a dead feature
    return np.arange(1000, 1000 + n, dtype=np.int64) * 7, a


def test_merged_partials_equal_the_statistics_of_the_whole_set():
    ids, a = _sparse_acts()
    k = 5
    rng = np.random.default_rng(1)
    owner = rng.integers(0, 3, size=len(ids))  # images dealt to 3 "actors", in uneven batches
    partials = []
    for p in range(3):
        s = FeatureStats.empty(a.shape[1], k)
        rows = np.flatnonzero(owner == p)
        for chunk in np.array_split(rows, 4):
            s.update(ids[chunk], torch.from_numpy(a[chunk]))
        partials.append(s)
    merged = partials[2].merge(partials[0]).merge(partials[1])

    assert merged.n_images == len(ids)
    np.testing.assert_array_equal(merged.n_active, (a > 0).sum(axis=0))
    np.testing.assert_allclose(merged.mass, a.astype(np.float64).sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(merged.max_value, a.max(axis=0), rtol=1e-6)
    top = merged.top_images_table().to_pylist()
    for f in range(a.shape[1]):
        fired = np.flatnonzero(a[:, f] > 0)
        want = sorted((-a[i, f], ids[i]) for i in fired)[:k]
        got = [(r["rank"], r["image_id"], r["value"]) for r in top if r["feature_id"] == f]
        assert [g[0] for g in got] == list(range(1, len(want) + 1))
        assert [g[1] for g in got] == [w[1] for w in want]
    features = merged.features_table(np.ones(a.shape[1])).to_pylist()
    assert [r["alive"] for r in features] == list((a > 0).any(axis=0))
    hist = merged.density_histogram(10)
    assert sum(hist["counts"]) + hist["dead"] == a.shape[1] and hist["dead"] == 1


def test_the_sample_is_the_same_whatever_the_split_and_cut_into_quantile_bins():
    from atlas.featurize import sample_priority

    ids, a = _sparse_acts(n=400)
    s_size, bins = 10, 5
    whole = FeatureStats.empty(a.shape[1], 3, s_size)
    whole.update(ids, torch.from_numpy(a))
    rng = np.random.default_rng(2)
    owner = rng.integers(0, 3, size=len(ids))
    parts = []
    for p in range(3):
        s = FeatureStats.empty(a.shape[1], 3, s_size)
        for chunk in np.array_split(np.flatnonzero(owner == p), 3):
            s.update(ids[chunk], torch.from_numpy(a[chunk]))
        parts.append(s)
    merged = parts[1].merge(parts[2]).merge(parts[0])
    table = merged.quantile_samples_table(bins)
    assert table.equals(whole.quantile_samples_table(bins))  # a sketch, not an accident of the split

    rows = table.to_pylist()
    for f in range(a.shape[1]):
        fired = np.flatnonzero(a[:, f] > 0)
        # the sample: the s images of largest priority among those f fired on, with their activations
        pri = sample_priority(ids[fired], np.full(len(fired), f))
        want = set(ids[fired[np.argsort(-pri, kind="stable")[:s_size]]].tolist())
        got = [r for r in rows if r["feature_id"] == f]
        assert {r["image_id"] for r in got} == want
        assert all(r["value"] == pytest.approx(a[list(ids).index(r["image_id"]), f]) for r in got)
        # equal-count bins in activation order: every value of bin b is <= every value of bin b + 1
        by_bin = {b: sorted(r["value"] for r in got if r["bin"] == b) for b in range(1, bins + 1)}
        sizes = [len(v) for v in by_bin.values()]
        assert max(sizes) - min(sizes) <= 1 or len(got) < bins
        filled = [v for v in by_bin.values() if v]
        assert all(lo[-1] <= hi[0] for lo, hi in zip(filled, filled[1:], strict=False))
    assert not [r for r in rows if r["feature_id"] == 3]  # a dead feature has no samples


def test_sample_priorities_are_uniform_and_differ_by_feature():
    from atlas.featurize import sample_priority

    ids = np.arange(-50_000, 50_000, dtype=np.int64) * 1_000_003
    p0 = sample_priority(ids, np.zeros(len(ids), dtype=np.int64))
    p1 = sample_priority(ids, np.ones(len(ids), dtype=np.int64))
    assert p0.min() > 0 and p0.max() <= 1
    counts, _ = np.histogram(p0, bins=10, range=(0, 1))
    assert np.all(np.abs(counts - len(ids) / 10) < 5 * np.sqrt(len(ids) / 10))  # 5 sigma
    assert abs(np.corrcoef(p0, p1)[0, 1]) < 0.02  # features sample independently


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def test_featurize_job_counts_match_the_activations_table_and_resume(tmp_path, ray_local):
    from jobs.featurize import run_featurize

    store = AtlasStore(tmp_path)
    rng = np.random.default_rng(0)
    d = 8
    for p in range(4):
        n = 40 + 5 * p
        ids = rng.integers(-(2**62), 2**62, size=n)
        x = rng.normal(size=(n, d)).astype(np.float32)
        store.write_part(
            "embeddings", f"part-{p:05d}", table_from_rows("embeddings", {"image_id": ids, "embedding": x}, d)
        )
    sae = SparseAutoencoder(SAEConfig(d_in=d, n_features=32))
    with torch.no_grad():
        sae.W_enc.mul_(10)
        sae.b_enc.fill_(-0.6)  # sparse
        sae.b_enc[:5] = -1e4  # and these never fire
    sae.save(store.sae_dir)
    cfg = AtlasConfig.model_validate(
        {"compute": {"num_actors": 2, "actor_cpus": 0.5}, "featurize": {"top_k": 4, "batch_size": 16}}
    )

    first = run_featurize(cfg, store)
    glob = f"'{store.root}/activations/*.parquet'"
    con = duckdb.connect()
    counts = dict(con.sql(f"SELECT feature_id, count(*) FROM read_parquet({glob}) GROUP BY 1").fetchall())
    features = store.read_table("features").to_pylist()
    n_images = store.count_rows("embeddings")
    assert first["images"] == n_images
    for r in features:
        n = counts.get(r["feature_id"], 0)
        assert r["alive"] == (n > 0)
        assert r["frequency"] == pytest.approx(n / n_images)
    assert 0 < first["alive"] < 32
    ref = con.sql(
        f"""SELECT feature_id, row_number() OVER (PARTITION BY feature_id ORDER BY value DESC, image_id) AS rank,
                   image_id FROM read_parquet({glob}) QUALIFY rank <= 4 ORDER BY feature_id, rank"""
    ).fetchall()
    top = [(r["feature_id"], r["rank"], r["image_id"]) for r in store.read_table("top_images").to_pylist()]
    assert top == ref
    samples = store.read_table("quantile_samples")
    fired = {
        (f, i): v for f, i, v in con.sql(f"SELECT feature_id, image_id, value FROM read_parquet({glob})").fetchall()
    }
    assert samples.num_rows == sum(min(n, cfg.featurize.samples) for n in counts.values())
    assert all(fired[(r["feature_id"], r["image_id"])] == r["value"] for r in samples.to_pylist())

    # a crash lost one activations part: the rerun encodes only that part and gives the same tables
    store.part_path("activations", "part-00002").unlink()
    before = store.read_table("features")
    second = run_featurize(cfg, store)
    assert second["parts_resumed"] == 3
    assert store.read_table("features").equals(before)
    assert store.read_table("quantile_samples").equals(samples)  # the sample folds back in from disk
    assert [(r["feature_id"], r["rank"], r["image_id"]) for r in store.read_table("top_images").to_pylist()] == ref
