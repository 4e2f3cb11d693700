"""Concepts: the active SAE features of one image, grouped into a few units that can be scaled together.

Take the image's active features, their unit-normalised decoder directions and their activations; run
spherical k-means weighted by activation (FAISS) for every k in a range; keep the largest k for which every
cluster holds at least `min_share` of the image's activation mass. Each concept lists its member features
(strongest first), its mass share, and a representative label: the label of its strongest feature when the
features table has one, else `feature <id>`.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from atlas.errors import AtlasError
from atlas.models.sae.autoencoder import SparseAutoencoder
from atlas.steering import group_scale_strip, sae_activations


@dataclass(frozen=True, slots=True)
class Concept:
    concept_id: int
    feature_ids: tuple[int, ...]  # strongest first
    activations: tuple[float, ...]
    mass_share: float
    label: str


def cluster_shares(assignment: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Share of the total weight held by each of the k clusters."""
    mass = np.bincount(assignment, weights=weights, minlength=k)
    return mass / mass.sum()


def largest_valid_k(shares_by_k: dict[int, np.ndarray], min_share: float) -> int:
    """The largest k whose clusters all hold at least `min_share` (k = 1 always qualifies)."""
    valid = [k for k, shares in shares_by_k.items() if len(shares) == k and np.all(shares >= min_share)]
    return max(valid, default=1)


def spherical_kmeans(
    directions_fd: np.ndarray, weights_f: np.ndarray, k: int, seed: int = 0, niter: int = 25
) -> np.ndarray:
    """Cluster of each unit direction under activation-weighted spherical k-means (FAISS)."""
    x = np.ascontiguousarray(directions_fd, dtype=np.float32)
    if k == 1:
        return np.zeros(len(x), dtype=np.int64)
    km = faiss.Kmeans(
        x.shape[1], k, spherical=True, niter=niter, nredo=3, seed=seed, verbose=False, min_points_per_centroid=1
    )
    km.train(x, weights=np.ascontiguousarray(weights_f, dtype=np.float32))
    return np.argmax(x @ km.centroids.T, axis=1).astype(np.int64)


def group_features(
    directions_fd: np.ndarray, weights_f: np.ndarray, k_range: range, min_share: float, seed: int = 0
) -> tuple[int, np.ndarray]:
    """(chosen k, cluster of each feature): the largest k in `k_range` whose clusters each hold at least
    `min_share` of the weight. k never exceeds the number of features."""
    n = len(weights_f)
    results: dict[int, np.ndarray] = {1: np.zeros(n, dtype=np.int64)}
    shares: dict[int, np.ndarray] = {1: np.ones(1)}
    for k in k_range:
        if k < 2 or k > n:
            continue
        assign = spherical_kmeans(directions_fd, weights_f, k, seed)
        results[k] = assign
        shares[k] = cluster_shares(assign, weights_f, k)
    k = largest_valid_k(shares, min_share)
    return k, results[k]


def image_concepts(
    sae: SparseAutoencoder,
    embedding: np.ndarray,
    *,
    min_share: float = 0.1,
    k_max: int = 8,
    labels: dict[int, str] | None = None,
    seed: int = 0,
) -> list[Concept]:
    """The concepts of one image embedding, largest mass first (see the module docstring)."""
    if not 0 < min_share <= 1:
        raise AtlasError(f"min_share = {min_share}: must be in (0, 1]")
    acts = sae_activations(sae, embedding)
    fids = np.flatnonzero(acts > 0)
    if len(fids) == 0:
        return []
    w_dec = sae.W_dec.detach().numpy()[fids].astype(np.float64)
    directions = w_dec / np.maximum(np.linalg.norm(w_dec, axis=1, keepdims=True), 1e-12)
    weights = acts[fids].astype(np.float64)
    k, assign = group_features(directions, weights, range(1, k_max + 1), min_share, seed)
    shares = cluster_shares(assign, weights, k)
    concepts = []
    for c in range(k):
        members = fids[assign == c]
        member_acts = acts[members]
        order = np.argsort(-member_acts, kind="stable")
        members, member_acts = members[order], member_acts[order]
        top = int(members[0])
        label = (labels or {}).get(top) or f"feature {top}"
        concepts.append(
            Concept(0, tuple(int(f) for f in members), tuple(float(a) for a in member_acts), float(shares[c]), label)
        )
    concepts.sort(key=lambda c: -c.mass_share)
    return [Concept(i, c.feature_ids, c.activations, c.mass_share, c.label) for i, c in enumerate(concepts)]


def without_concepts(
    sae: SparseAutoencoder, embedding: np.ndarray, concepts: list[Concept], keep_error: bool = True
) -> np.ndarray:
    """[1 + len(concepts), d]: the embedding unchanged, then with each concept removed in turn."""
    rows = [np.asarray(embedding, np.float32)]
    for c in concepts:
        rows.append(group_scale_strip(sae, embedding, list(c.feature_ids), [-1.0], keep_error)[0])
    return np.stack(rows)
