"""Decoder geometry of two SAEs: each alive feature's nearest features on the other side (exact inner product
search over unit directions with FAISS), mutual nearest neighbours, and the candidate pairs that the
co-activation pass and the split/merge fits look at."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Neighbours:
    """For each alive feature of one side (`ids_q`), its `k` nearest alive features of the other side."""

    ids_q: np.ndarray  # int64 [q]: the querying side's feature ids
    ids_qk: np.ndarray  # int64 [q, k]: the other side's feature ids, nearest first (-1: none)
    cosine_qk: np.ndarray  # float32 [q, k]

    def best_cosine_q(self) -> np.ndarray:
        return np.where(self.ids_qk[:, 0] >= 0, self.cosine_qk[:, 0], 0.0).astype(np.float32)


def nearest(
    query_unit_fd: np.ndarray, ids_q: np.ndarray, base_unit_fd: np.ndarray, ids_b: np.ndarray, k: int
) -> Neighbours:
    """The `k` nearest of `base` (unit rows, ids `ids_b`) to each unit row of `query` (ids `ids_q`), exactly
    (FAISS brute-force inner product, blocked over the queries: no index copy of the base)."""
    import faiss

    k = max(1, min(k, len(ids_b)))
    if len(ids_q) == 0 or len(ids_b) == 0:
        empty = np.full((len(ids_q), k), -1, np.int64)
        return Neighbours(ids_q, empty, np.zeros((len(ids_q), k), np.float32))
    query = np.ascontiguousarray(query_unit_fd[ids_q], dtype=np.float32)
    base = np.ascontiguousarray(base_unit_fd[ids_b], dtype=np.float32)
    cos_qk, pos_qk = faiss.knn(query, base, k, metric=faiss.METRIC_INNER_PRODUCT)
    found = np.where(pos_qk >= 0, ids_b[np.maximum(pos_qk, 0)], -1)
    return Neighbours(ids_q, found, cos_qk.astype(np.float32))


def mutual_matches(
    a_to_b: Neighbours, b_to_a: Neighbours, free_a: np.ndarray, free_b: np.ndarray, min_cosine: float
) -> Pairs:
    """Every pair of free features that are each other's nearest free neighbour (within the k nearest) at
    cosine >= `min_cosine`."""
    a, b, cos = _nearest_free(a_to_b, free_a, free_b)
    b_back, a_back, _ = _nearest_free(b_to_a, free_b, free_a)
    best_a_of_b = np.full(len(free_b), -1, np.int64)
    best_a_of_b[b_back] = a_back
    keep = (b >= 0) & (cos >= min_cosine)
    keep[keep] = best_a_of_b[b[keep]] == a[keep]
    return Pairs(a[keep], b[keep], cos[keep])


def _nearest_free(
    nb: Neighbours, free_q: np.ndarray, free_other: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, its nearest free neighbour or -1, cosine) for each free query feature."""
    rows = free_q[nb.ids_q]
    ids_qk, cos_qk = nb.ids_qk[rows], nb.cosine_qk[rows]
    ok = (ids_qk >= 0) & free_other[np.maximum(ids_qk, 0)]
    first = ok.argmax(axis=1)
    picked = np.arange(len(ids_qk))
    found = np.where(ok[picked, first], ids_qk[picked, first], -1)
    return nb.ids_q[rows], found, np.where(found >= 0, cos_qk[picked, first], 0.0).astype(np.float32)


@dataclass(frozen=True)
class Pairs:
    """Pairs of features (one of A, one of B) with their decoder cosine, as parallel arrays."""

    a: np.ndarray  # int64
    b: np.ndarray  # int64
    cosine: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.a)


def candidate_pairs(a_to_b: Neighbours, b_to_a: Neighbours, min_cosine: float) -> Pairs:
    """Every pair among either side's `k` nearest neighbours at cosine >= `min_cosine`, once each."""
    pieces = []
    for nb, flip in ((a_to_b, False), (b_to_a, True)):
        keep = (nb.ids_qk >= 0) & (nb.cosine_qk >= min_cosine)
        q_idx, k_idx = np.nonzero(keep)
        q, other = nb.ids_q[q_idx], nb.ids_qk[q_idx, k_idx]
        pieces.append((other, q, nb.cosine_qk[q_idx, k_idx]) if flip else (q, other, nb.cosine_qk[q_idx, k_idx]))
    a = np.concatenate([p[0] for p in pieces]).astype(np.int64)
    b = np.concatenate([p[1] for p in pieces]).astype(np.int64)
    cos = np.concatenate([p[2] for p in pieces]).astype(np.float32)
    _, first = np.unique(np.stack([a, b], axis=1), axis=0, return_index=True)
    return Pairs(a[first], b[first], cos[first])
