"""The featurize stage as plain functions: SAE-encode embeddings to sparse activations, then derive
per-feature statistics and top images from the `activations` table with DuckDB (out-of-core, never a
dense image x feature matrix)."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from atlas.models.device import autocast
from atlas.models.sae import SparseAutoencoder
from atlas.store import AtlasStore, table_from_rows


@torch.inference_mode()
def encode_sparse(sae: SparseAutoencoder, x_bd: np.ndarray, device: torch.device) -> tuple[pa.Array, pa.Array]:
    """Non-zero activations of each row: (feature_ids list<int32>, values list<float32>), one entry per row."""
    x = torch.from_numpy(np.array(x_bd, dtype=np.float32)).to(device)  # a copy: Arrow buffers are read-only
    with autocast(device):
        a = sae.encode(x)
    a = a.float()
    rows, cols = torch.nonzero(a > 0, as_tuple=True)
    vals = a[rows, cols].cpu().numpy().astype(np.float32)
    counts = torch.bincount(rows, minlength=len(x)).cpu().numpy()
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(cols.cpu().numpy().astype(np.int32)))
    values = pa.ListArray.from_arrays(pa.array(offsets), pa.array(vals))
    return ids, values


def activations_table(image_ids: pa.Array, feature_ids: pa.ListArray, values: pa.ListArray) -> pa.Table:
    """Explode per-image lists into the `activations` table (one row per non-zero activation)."""
    counts = pc.list_value_length(feature_ids).to_numpy(zero_copy_only=False)
    image_col = np.repeat(np.asarray(image_ids.to_numpy(zero_copy_only=False), dtype=np.int64), counts)
    return table_from_rows(
        "activations",
        {"image_id": image_col, "feature_id": feature_ids.flatten(), "value": values.flatten()},
    )


def feature_statistics(store: AtlasStore, sae: SparseAutoencoder, n_images: int) -> pa.Table:
    """The `features` table: one row per SAE feature, statistics over all images."""
    con = duckdb.connect()
    stats = con.sql(
        f"""
        SELECT feature_id, count(*) AS n_active, sum(value::DOUBLE) AS mass, max(value::DOUBLE) AS max_value
        FROM read_parquet({_parts_glob(store, "activations")})
        GROUP BY feature_id
        """
    ).to_arrow_table()
    n_features = sae.cfg.n_features
    n_active = np.zeros(n_features, dtype=np.int64)
    mass = np.zeros(n_features)
    max_value = np.zeros(n_features)
    fid = stats.column("feature_id").to_numpy()
    n_active[fid] = stats.column("n_active").to_numpy()
    mass[fid] = stats.column("mass").to_numpy()
    max_value[fid] = stats.column("max_value").to_numpy()
    mean = np.divide(mass, n_active, out=np.zeros(n_features), where=n_active > 0)
    return table_from_rows(
        "features",
        {
            "feature_id": np.arange(n_features, dtype=np.int32),
            "alive": n_active > 0,
            "frequency": n_active / max(n_images, 1),
            "mean_activation": mean,
            "max_activation": max_value,
            "activation_mass": mass,
            "decoder_norm": sae.decoder_norms().detach().double().cpu().numpy(),
            "label": [None] * n_features,
        },
    )


def top_images(store: AtlasStore, k: int) -> pa.Table:
    """The `top_images` table: each feature's k largest activations (ties broken by image_id)."""
    con = duckdb.connect()
    result = con.sql(
        f"""
        SELECT feature_id::INTEGER AS feature_id,
               row_number() OVER (PARTITION BY feature_id ORDER BY value DESC, image_id)::INTEGER AS rank,
               image_id, value
        FROM read_parquet({_parts_glob(store, "activations")})
        QUALIFY rank <= {int(k)}
        ORDER BY feature_id, rank
        """
    ).to_arrow_table()
    return table_from_rows("top_images", {c: result.column(c) for c in ("feature_id", "rank", "image_id", "value")})


def _parts_glob(store: AtlasStore, table: str) -> str:
    """A SQL string literal for the glob of a table's parts (quotes escaped)."""
    path = f"{store.table_dir(table)}/*.parquet".replace("'", "''")
    return f"'{path}'"
