"""Nearest neighbours, mutual matches and candidate pairs over two decoders."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas.diff.decoder_match import candidate_pairs, mutual_matches, nearest


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 60))
def test_a_permuted_noisy_copy_is_matched_back_to_its_permutation(seed, n):
    rng = np.random.default_rng(seed)
    a = unit(rng.standard_normal((n, 48)))
    perm = rng.permutation(n)  # b's feature j is a's feature perm[j]
    b = unit(a[perm] + 0.01 * rng.standard_normal((n, 48)))  # cosine ~0.998 to its original
    ids = np.arange(n)
    a_to_b, b_to_a = nearest(a, ids, b, ids, 4), nearest(b, ids, a, ids, 4)
    m = mutual_matches(a_to_b, b_to_a, np.ones(n, bool), np.ones(n, bool), 0.9)
    assert sorted(zip(m.a.tolist(), m.b.tolist(), strict=True)) == sorted((int(perm[j]), j) for j in range(n))


def test_only_alive_and_free_features_take_part():
    a = np.eye(4, dtype=np.float32)
    b = np.eye(4, dtype=np.float32)
    alive_a, alive_b = np.array([0, 1, 2]), np.array([0, 1, 2, 3])
    a_to_b, b_to_a = nearest(a, alive_a, b, alive_b, 2), nearest(b, alive_b, a, alive_a, 2)
    assert 3 not in a_to_b.ids_qk[:, 0]  # feature 3 of a is dead: nobody's neighbour
    free_a, free_b = np.ones(4, bool), np.ones(4, bool)
    free_b[1] = False
    m = mutual_matches(a_to_b, b_to_a, free_a, free_b, 0.5)
    assert sorted(zip(m.a.tolist(), m.b.tolist(), strict=True)) == [(0, 0), (2, 2)]


def test_candidate_pairs_are_each_pair_once_above_the_cosine():
    rng = np.random.default_rng(0)
    a = unit(rng.standard_normal((30, 8)))
    b = unit(a + 0.3 * rng.standard_normal((30, 8)))
    ids = np.arange(30)
    pairs = candidate_pairs(nearest(a, ids, b, ids, 5), nearest(b, ids, a, ids, 5), 0.2)
    keys = list(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True))
    assert len(keys) == len(set(keys))
    np.testing.assert_allclose(pairs.cosine, (a[pairs.a] * b[pairs.b]).sum(1), atol=1e-5)
    assert pairs.cosine.min() >= 0.2
