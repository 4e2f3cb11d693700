"""atlas/cooccurrence.py: the co-occurrence table against a brute-force count on random activation sets."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas.cooccurrence import (
    EXACT_COUNTS,
    ActivationSets,
    _count_bins,
    _jaccard_bins,
    _top_per_row,
    cooccurrence_table,
    feature_blocks,
)


def _random_sets(seed: int, n_images: int, n_features: int, max_l0: int):
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    p = 1 / np.arange(1, n_features + 1) ** 0.8  # power-law frequencies, as SAE features have
    for r in range(n_images):
        f = rng.choice(n_features, size=int(rng.integers(0, max_l0 + 1)), replace=False, p=p / p.sum())
        rows += [r] * len(f)
        feats += list(f)
    a = np.zeros((n_images, n_features), np.int64)
    a[rows, feats] = 1
    return np.array(rows, np.int32), np.array(feats, np.int32), a


def _check(table: pa.Table, a_if: np.ndarray, top_k: int, n_images: int) -> None:
    c = a_if.T @ a_if
    n_f = np.diag(c).copy()
    np.fill_diagonal(c, 0)
    union = n_f[:, None] + n_f[None, :] - c
    jac = np.divide(c, union, out=np.zeros(c.shape), where=union > 0).astype(np.float32)
    d = table.to_pydict()
    f, g, t = (np.array(d[k], dtype=np.int64) for k in ("feature_id", "other_id", "together"))
    assert np.array_equal(t, c[f, g]) and (t > 0).all() and (f != g).all()
    assert np.allclose(d["jaccard"], jac[f, g], rtol=1e-6)
    assert np.allclose(d["pmi"], np.log2(t * n_images / (n_f[f] * n_f[g])), rtol=1e-5)
    assert len(set(zip(f.tolist(), g.tolist(), strict=True))) == len(f)  # each pair once
    for feature in range(c.shape[0]):
        mine = f == feature
        for score in (c[feature], jac[feature]):
            want = np.sort(score[score > 0])[::-1][:top_k]
            got = np.sort(score[g[mine]])[::-1][: len(want)]
            # the k best scores are all there (which of several tied partners is kept is free)
            assert np.array_equal(got, want), feature
            if len(want) == top_k:  # everything strictly better than the k-th is kept
                assert set(np.flatnonzero(score > want[-1])) <= set(g[mine].tolist())


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_images=st.integers(1, 300),
    n_features=st.integers(2, 60),
    max_l0=st.integers(0, 12),
    top_k=st.integers(1, 8),
    block_bytes=st.sampled_from([1, 1 << 12, 1 << 30]),
)
def test_the_table_is_the_brute_force_count_whatever_the_blocks(seed, n_images, n_features, max_l0, top_k, block_bytes):
    rows, feats, a = _random_sets(seed, n_images, n_features, min(max_l0, n_features))
    sets = ActivationSets.from_pairs(torch.from_numpy(rows), torch.from_numpy(feats), n_images, n_features)
    _check(cooccurrence_table(sets, top_k, memory_bytes=block_bytes), a, top_k, n_images)


def test_from_parts_equals_from_pairs_and_counts_images_without_features():
    rows, feats, a = _random_sets(3, 400, 40, 9)
    ids = np.random.default_rng(0).integers(-(2**63), 2**63 - 1, 400, dtype=np.int64)
    parts = []
    for lo, hi in ((0, 150), (150, 400)):  # an image lives in one part; rows within a part feature-sorted
        m = (rows >= lo) & (rows < hi)
        order = np.lexsort((ids[rows[m]], feats[m]))
        parts.append(pa.table({"image_id": ids[rows[m]][order], "feature_id": feats[m][order]}))
    sets = ActivationSets.from_parts(parts, 40)
    assert sets.n_images == len(np.unique(rows))
    assert torch.equal(sets.counts(), torch.from_numpy(a.sum(0)))
    dense = sets.block_counts(0, 40, torch.device("cpu")).to_dense().numpy()
    assert np.array_equal(dense, a.T @ a)
    # PMI over every image embedded, not only those with an activation
    table = cooccurrence_table(sets, 5, n_images=1000)
    _check_pmi = np.array(table.column("pmi"))
    f, g = np.array(table.column("feature_id")), np.array(table.column("other_id"))
    t, n_f = np.array(table.column("together")), a.sum(0)
    assert np.allclose(_check_pmi, np.log2(t * 1000 / (n_f[f] * n_f[g])), rtol=1e-5)


def test_no_activations_give_an_empty_table():
    sets = ActivationSets.from_pairs(torch.zeros(0, dtype=torch.int32), torch.zeros(0, dtype=torch.int32), 5, 8)
    assert cooccurrence_table(sets, 4).num_rows == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_gpu_gives_the_cpu_table():
    rows, feats, _ = _random_sets(1, 500, 50, 10)
    sets = ActivationSets.from_pairs(torch.from_numpy(rows), torch.from_numpy(feats), 500, 50)
    cpu = cooccurrence_table(sets, 6).sort_by([("feature_id", "ascending"), ("other_id", "ascending")])
    gpu = cooccurrence_table(sets, 6, device=torch.device("cuda"))
    assert gpu.sort_by([("feature_id", "ascending"), ("other_id", "ascending")]).equals(cpu)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_rows=st.integers(1, 6),
    per_row=st.integers(0, 400),
    scale=st.sampled_from([3, 200, 1 << 20]),  # heavy ties in exact bins / exact and shared bins / shared bins
    k=st.integers(1, 40),
    as_jaccard=st.booleans(),
)
def test_the_histogram_pruned_top_k_is_the_stable_sort_top_k(seed, n_rows, per_row, scale, k, as_jaccard):
    rng = np.random.default_rng(seed)
    row = np.sort(rng.integers(0, n_rows, per_row * n_rows))
    t = rng.integers(1, scale + 1, len(row))
    if as_jaccard:  # keys are a Jaccard's float32 bits, as the table ranks them
        jaccard = torch.from_numpy((t / (t + rng.integers(0, 3 * scale, len(row)))).astype(np.float32))
        key = jaccard.view(torch.int32).long()
        bins, exact = _jaccard_bins(key), 0
    else:
        key, bins, exact = torch.from_numpy(t), _count_bins(torch.from_numpy(t)), EXACT_COUNTS
    crow = torch.from_numpy(np.concatenate([[0], np.cumsum(np.bincount(row, minlength=n_rows))]))
    got = _top_per_row(torch.from_numpy(row), crow, key, bins, exact, k).numpy()
    want = np.zeros(len(row), bool)
    for r in np.unique(row):
        mine = np.flatnonzero(row == r)
        want[mine[np.argsort(-key.numpy()[mine], kind="stable")[:k]]] = True
    assert np.array_equal(got, want)


def test_blocks_cover_every_feature_once_and_bound_the_product():
    rows, feats, a = _random_sets(2, 400, 60, 10)
    sets = ActivationSets.from_pairs(torch.from_numpy(rows), torch.from_numpy(feats), 400, 60)
    pairs = sets.pairs_per_feature(images_per_step=37)
    assert torch.equal(pairs, torch.from_numpy((a * a.sum(1, keepdims=True)).sum(0)))
    blocks = feature_blocks(sets, 60 * 48 * 3)
    assert [lo for lo, _ in blocks] == [0] + [hi for _, hi in blocks[:-1]] and blocks[-1][1] == 60
    for lo, hi in blocks:
        nnz = sets.block_counts(lo, hi, torch.device("cpu")).values().numel()
        assert hi - lo == 1 or nnz * 48 <= 60 * 48 * 3
