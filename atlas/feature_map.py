"""The feature map: a 2-D layout of the alive features' decoder directions (UMAP over cosine distance), so that
features that write similar directions into the embedding sit together. Computed once at the index stage and
stored as the `feature_map` table; the viewer's Map page only reads it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from atlas.store import table_from_rows

# Below this many alive features UMAP's neighbour graph is degenerate: the map is then the top two principal
# components of the unit directions (still deterministic, still "similar directions sit together").
MIN_UMAP_FEATURES = 16


def unit_rows(w_fd: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(w_fd, axis=1, keepdims=True)
    return (w_fd / np.maximum(norms, 1e-12)).astype(np.float32)


def principal_plane(w_fd: np.ndarray) -> np.ndarray:
    """Coordinates of the rows on their top two principal components, [n, 2] (zeros where a component
    does not exist)."""
    centred = w_fd - w_fd.mean(axis=0, keepdims=True)
    out = np.zeros((len(w_fd), 2), dtype=np.float32)
    if len(w_fd) > 1:
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        k = min(2, len(s))
        out[:, :k] = u[:, :k] * s[:k]
    return out


def layout_xy(w_fd: np.ndarray, n_neighbors: int, min_dist: float, seed: int = 0) -> np.ndarray:
    """2-D coordinates, [n, 2] float32, of decoder directions `w_fd`: UMAP with cosine distance (one thread
    with a fixed seed, so a rebuild draws the same map), or the principal plane for very few features."""
    unit_fd = unit_rows(w_fd)
    if len(unit_fd) < MIN_UMAP_FEATURES:
        return principal_plane(unit_fd)
    import umap  # numba: a few seconds of compilation on first use, so imported only here

    reducer = umap.UMAP(
        n_neighbors=min(n_neighbors, len(unit_fd) - 1),
        min_dist=min_dist,
        metric="cosine",
        random_state=seed,
        n_jobs=1,
        low_memory=True,
    )
    return np.asarray(reducer.fit_transform(unit_fd), dtype=np.float32)


def feature_map_table(
    feature_ids: np.ndarray, w_fd: np.ndarray, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0
) -> pa.Table:
    """The `feature_map` table of the features `feature_ids` with decoder rows `w_fd` (same order)."""
    if len(feature_ids) != len(w_fd):
        raise ValueError(f"{len(feature_ids)} feature ids for {len(w_fd)} decoder rows")
    xy = layout_xy(w_fd, n_neighbors, min_dist, seed) if len(w_fd) else np.zeros((0, 2), np.float32)
    return table_from_rows(
        "feature_map", {"feature_id": np.asarray(feature_ids, dtype=np.int32), "x": xy[:, 0], "y": xy[:, 1]}
    )
