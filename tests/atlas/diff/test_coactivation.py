"""Correlations from DuckDB's streaming sums equal numpy's Pearson correlation on the dense matrices."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from atlas.diff.coactivation import CoActivation, Group
from atlas.diff.decoder_match import Pairs
from atlas.diff.sides import DiffSide


def write_side(tmp, name, ids, dense):
    rows, cols = np.nonzero(dense)
    pq.write_table(
        pa.table(
            {"image_id": ids[rows], "feature_id": cols.astype(np.int32), "value": dense[rows, cols].astype(np.float32)}
        ),
        tmp / f"{name}-act.parquet",
    )
    pq.write_table(pa.table({"image_id": ids}), tmp / f"{name}-img.parquet")
    f = dense.shape[1]
    return DiffSide(
        name,
        np.eye(f, 4, dtype=np.float32),
        np.ones(f, bool),
        (str(tmp / f"{name}-act.parquet"),),
        (str(tmp / f"{name}-img.parquet"),),
    )


def sparse(rng, n, f, p):
    return np.where(rng.random((n, f)) < p, rng.lognormal(0, 0.5, (n, f)), 0.0).astype(np.float32)


def test_pair_and_group_correlations_equal_dense_pearson_over_the_shared_images(tmp_path):
    rng = np.random.default_rng(0)
    x_a, x_b = sparse(rng, 300, 5, 0.3), sparse(rng, 300, 6, 0.3)
    x_b[:, 0] = x_a[:, 0] * 2 + x_b[:, 0] * 0.1  # some real co-activation
    ids = np.arange(300, dtype=np.int64) * 7 + 11
    a = write_side(tmp_path, "a", ids[:250], x_a[:250])  # images 250.. only in b, 0..49 ...
    b = write_side(tmp_path, "b", ids[50:], x_b[50:])  # ... only in a: 200 shared
    co = CoActivation(a, b)
    try:
        assert co.n_images == 200
        pa_, pb_ = np.array([0, 1, 4, 2]), np.array([0, 5, 3, 0])
        got = co.pair_correlations(Pairs(pa_, pb_, np.zeros(4, np.float32)))
        sa, sb = x_a[50:250], x_b[50:250]
        want = [np.corrcoef(sa[:, i], sb[:, j])[0, 1] for i, j in zip(pa_, pb_, strict=True)]
        np.testing.assert_allclose(got, want, atol=1e-5)
        group = Group(whole=1, parts=np.array([0, 2, 3]), weights=np.array([1.0, 0.5, 2.0]))
        got_g = co.group_correlations([group], "a")
        want_g = np.corrcoef(sa[:, 1], sb[:, [0, 2, 3]] @ group.weights)[0, 1]
        np.testing.assert_allclose(got_g, [want_g], atol=1e-5)
        reverse = co.group_correlations([Group(whole=4, parts=np.array([1, 3]), weights=np.ones(2))], "b")
        np.testing.assert_allclose(reverse, [np.corrcoef(sb[:, 4], sa[:, [1, 3]].sum(1))[0, 1]], atol=1e-5)
    finally:
        co.close()
