"""Featurize job: `embeddings/` + `sae/` -> `activations/` (Ray actors holding the SAE, one activations part per
embeddings part), then `features/` and `top_images/` from the activations with DuckDB."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import ray

from atlas.config import AtlasConfig
from atlas.featurize import activations_table, encode_sparse, feature_statistics, top_images
from atlas.models.device import resolve_device
from atlas.models.sae import load_sae
from atlas.store import AtlasStore, vectors_to_numpy
from jobs.parts import commit_parts
from jobs.runtime import actor_device, actor_options


class EncodeActor:
    """Holds the SAE; turns embedding rows into per-image lists of non-zero activations."""

    def __init__(self, sae_dir: str, device: str):
        from pathlib import Path

        self.device = resolve_device(device)
        self.sae = load_sae(Path(sae_dir), self.device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        x = vectors_to_numpy(batch.column("embedding"), self.sae.cfg.d_in)
        ids, values = encode_sparse(self.sae, x, self.device)
        parts = [p.rsplit("/", 1)[-1].removesuffix(".parquet") for p in batch.column("path").to_pylist()]
        return pa.table({"part": parts, "image_id": batch.column("image_id"), "feature_ids": ids, "values": values})


def run_featurize(cfg: AtlasConfig, store: AtlasStore) -> dict[str, Any]:
    parts = {p.stem: p for p in store.parts("embeddings")}
    pending = {name: path for name, path in parts.items() if not store.has_part("activations", name)}
    if pending:
        ds = ray.data.read_parquet([str(p) for p in pending.values()], include_paths=True).map_batches(
            EncodeActor,
            batch_size=cfg.featurize.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=cfg.compute.num_actors),
            fn_constructor_kwargs={"sae_dir": str(store.sae_dir), "device": actor_device(cfg)},
            **actor_options(cfg),
        )

        def commit(part: str, rows: pa.Table) -> None:
            store.write_part("activations", part, activations_table(rows["image_id"], rows["feature_ids"].combine_chunks(), rows["values"].combine_chunks()))

        expected = {name: _num_rows(path) for name, path in pending.items()}
        empty = [name for name, n in expected.items() if n == 0]
        for name in empty:  # a part whose images all failed: nothing to stream, still finished
            store.write_part("activations", name, activations_table(pa.array([], pa.int64()), pa.array([], pa.list_(pa.int32())), pa.array([], pa.list_(pa.float32()))))
            expected.pop(name)
        if expected:
            commit_parts(ds, expected, commit, "featurize", "img", key="image_id")

    sae = load_sae(store.sae_dir)
    n_images = store.count_rows("embeddings")
    features = feature_statistics(store, sae, n_images)
    store.write_part("features", "part-00000", features)
    store.write_part("top_images", "part-00000", top_images(store, cfg.featurize.top_k))
    alive = int(np.sum(features.column("alive").to_numpy(zero_copy_only=False)))
    return {
        "rows": {
            "activations": store.count_rows("activations"),
            "features": features.num_rows,
            "top_images": store.count_rows("top_images"),
        },
        "alive": alive,
        "dead_fraction": 1 - alive / features.num_rows,
        "l0": store.count_rows("activations") / max(n_images, 1),
    }


def _num_rows(path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
