"""The non-negative fit behind splits and merges, and the proposal of groups from candidate pairs."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas.diff.decoder_match import Pairs
from atlas.diff.groups import assign_groups, nonnegative_fit, propose_groups


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n_parts=st.integers(2, 6))
def test_a_nonnegative_combination_is_fitted_exactly(seed, n_parts):
    rng = np.random.default_rng(seed)
    parts = unit(rng.standard_normal((n_parts, 32)))
    coef = rng.uniform(0.2, 2.0, n_parts)
    found, cos = nonnegative_fit(coef @ parts, parts)
    assert cos > 0.9999
    np.testing.assert_allclose(found, coef, rtol=1e-6)


def test_a_part_that_would_need_a_negative_coefficient_is_left_out():
    e = np.eye(3)
    target = e[0] - 0.5 * e[1]  # the best unconstrained fit uses -0.5 of e1
    coef, cos = nonnegative_fit(target, e[:2])
    assert coef[1] == 0 and coef[0] == 1.0
    assert abs(cos - 1 / np.sqrt(1.25)) < 1e-12


def brute_force_nnls(target: np.ndarray, parts: np.ndarray) -> float:
    """The least residual over every subset of parts whose unconstrained fit is non-negative."""
    best = float(target @ target)
    for mask in itertools.product([False, True], repeat=len(parts)):
        if any(mask):
            w = np.linalg.lstsq(parts[list(mask)].T, target, rcond=None)[0]
            if (w >= 0).all():
                best = min(best, float(np.sum((parts[list(mask)].T @ w - target) ** 2)))
    return best


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n_parts=st.integers(1, 5), dim=st.integers(3, 8))
def test_the_fit_is_the_least_squares_optimum_over_nonnegative_coefficients(seed, n_parts, dim):
    rng = np.random.default_rng(seed)
    parts, target = rng.standard_normal((n_parts, dim)), rng.standard_normal(dim)
    coef, _ = nonnegative_fit(target, parts)
    assert (coef >= 0).all()
    assert np.sum((coef @ parts - target) ** 2) <= brute_force_nnls(target, parts) + 1e-9


def test_groups_are_proposed_only_where_the_parts_fit_better_than_any_one_part():
    rng = np.random.default_rng(0)
    whole = unit(rng.standard_normal((3, 16)))
    u = unit(rng.standard_normal(16) - whole[0] * (whole[0] @ rng.standard_normal(16)))
    parts = np.stack(
        [
            unit(whole[0] + 0.5 * u),  # 0 and 1: whole 0 split in two
            unit(whole[0] - 0.5 * u),
            whole[1],  # 2: an exact copy of whole 1
            unit(whole[1] + 0.3 * rng.standard_normal(16)),  # 3: a noisy near-copy of whole 1
        ]
    )
    cand = Pairs(
        np.array([0, 0, 1, 1]), np.array([0, 1, 2, 3]), (whole[[0, 0, 1, 1]] * parts).sum(1).astype(np.float32)
    )
    everyone = np.ones(4, bool)
    fits = propose_groups(cand, whole, parts, np.ones(4), everyone[:3], everyone, 8, 0.1, 0.9, 0.05)
    assert [(f.group.whole, sorted(f.group.parts.tolist())) for f in fits] == [(0, [0, 1])]
    assert fits[0].fit_cosine > 0.9999
    busy = everyone.copy()
    busy[1] = False  # a part already taken: no group
    assert propose_groups(cand, whole, parts, np.ones(4), everyone[:3], busy, 8, 0.1, 0.9, 0.05) == []


def test_a_part_joins_at_most_one_group():
    rng = np.random.default_rng(1)
    w = unit(rng.standard_normal((2, 8)))
    p = unit(rng.standard_normal((3, 8)))
    cand = Pairs(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2]), np.full(4, 0.5, np.float32))
    fits = propose_groups(
        cand,
        np.stack([p[0] + p[1], p[1] + p[2]]) / 2,
        p,
        np.ones(3),
        np.ones(2, bool),
        np.ones(3, bool),
        8,
        0.1,
        0.9,
        0.0,
    )
    assert len(fits) == 2
    kept = assign_groups(fits, 3)
    assert len(kept) == 1
    del w
