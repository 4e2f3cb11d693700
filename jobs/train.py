"""Train job: `embeddings/` -> `sae/` (weights, config, train_log), in one Ray task on a GPU where there is one.

The task streams embeddings from the Parquet parts (parts in a random order per epoch, rows through a bounded
shuffle buffer), so memory does not grow with the dataset.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from tqdm import tqdm

from atlas.config import AtlasConfig
from atlas.errors import AtlasError
from atlas.models.device import resolve_device
from atlas.store import AtlasStore, table_from_rows
from atlas.train import parquet_batches, train_sae
from jobs.runtime import actor_device, actor_options


def _train_task(cfg: AtlasConfig, root: str, device: str) -> dict[str, Any]:
    store = AtlasStore(root)
    parts = [str(p) for p in store.parts("embeddings")]
    n_rows = store.count_rows("embeddings")
    dim = pq.ParquetFile(parts[0]).schema_arrow.field("embedding").type.list_size
    sc = cfg.sae

    def epoch_batches(epoch: int):
        return parquet_batches(parts, sc.batch_size, sc.shuffle_buffer, sc.seed + epoch)

    bar = tqdm(total=sc.epochs * n_rows, desc="train", unit="emb", dynamic_ncols=True)
    result = train_sae(epoch_batches, dim, n_rows, sc, resolve_device(device), progress=bar.update)
    bar.close()
    result.sae.save(
        store.sae_dir,
        extra={"steps": result.steps, "samples": result.samples, "holdout": result.holdout, "train": sc.model_dump()},
    )
    log = pa.Table.from_pylist(result.log)
    store.write_part(
        "train_log", "part-00000", table_from_rows("train_log", {c: log.column(c) for c in log.column_names})
    )
    last_train = [r for r in result.log if r["split"] == "train"][-1]
    return {
        "n_features": result.sae.cfg.n_features,
        "steps": result.steps,
        "samples": result.samples,
        "holdout": result.holdout,
        "final_train": {k: last_train[k] for k in ("mse", "l0", "explained_variance", "dead_fraction")},
    }


def run_train(cfg: AtlasConfig, store: AtlasStore) -> dict[str, Any]:
    if store.count_rows("embeddings") == 0:
        raise AtlasError(f"{store.root}: no embeddings to train on (did every image fail? see the errors table)")
    task = ray.remote(_train_task).options(**actor_options(cfg))
    return ray.get(task.remote(cfg, str(store.root), actor_device(cfg)))
