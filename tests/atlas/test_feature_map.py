"""The feature map: similar decoder directions sit together, every feature once, the same map on a rebuild."""

from __future__ import annotations

import numpy as np
import pytest

from atlas.feature_map import MIN_UMAP_FEATURES, feature_map_table, layout_xy


def clustered_directions(n_clusters: int, per_cluster: int, dim: int, noise: float, seed: int = 0):
    """Decoder rows drawn around `n_clusters` random directions (scaled arbitrarily: the map is of directions)."""
    rng = np.random.default_rng(seed)
    centres_cd = rng.standard_normal((n_clusters, dim))
    cluster_n = np.repeat(np.arange(n_clusters), per_cluster)
    w_nd = centres_cd[cluster_n] + noise * rng.standard_normal((len(cluster_n), dim))
    w_nd *= rng.uniform(0.2, 5.0, (len(cluster_n), 1))
    return w_nd.astype(np.float32), cluster_n


def nearest_in_same_cluster(xy_n2: np.ndarray, cluster_n: np.ndarray) -> float:
    d_nn = np.linalg.norm(xy_n2[:, None] - xy_n2[None], axis=-1)
    np.fill_diagonal(d_nn, np.inf)
    return float(np.mean(cluster_n[d_nn.argmin(axis=1)] == cluster_n))


def test_umap_map_puts_similar_directions_together_and_is_reproducible() -> None:
    w_nd, cluster_n = clustered_directions(5, 24, 64, noise=0.3)
    xy = layout_xy(w_nd, n_neighbors=10, min_dist=0.1)
    assert xy.shape == (len(w_nd), 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    assert nearest_in_same_cluster(xy, cluster_n) >= 0.95
    np.testing.assert_array_equal(layout_xy(w_nd, n_neighbors=10, min_dist=0.1), xy)


def test_a_few_features_are_placed_on_their_principal_plane() -> None:
    w_nd, cluster_n = clustered_directions(2, 4, 16, noise=0.05)
    assert len(w_nd) < MIN_UMAP_FEATURES
    xy = layout_xy(w_nd, n_neighbors=15, min_dist=0.1)
    assert nearest_in_same_cluster(xy, cluster_n) == 1.0
    assert layout_xy(w_nd[:1], 15, 0.1).tolist() == [[0.0, 0.0]]


def test_table_has_one_row_per_feature_in_order() -> None:
    w_nd, _ = clustered_directions(3, 10, 32, noise=0.2)
    ids = np.arange(100, 100 + len(w_nd)) * 3
    table = feature_map_table(ids, w_nd, n_neighbors=5)
    assert table.column_names == ["feature_id", "x", "y"]
    assert table.column("feature_id").to_pylist() == ids.tolist()
    assert feature_map_table(ids[:0], w_nd[:0]).num_rows == 0
    with pytest.raises(ValueError, match="2 feature ids for 30 decoder rows"):
        feature_map_table(ids[:2], w_nd)
