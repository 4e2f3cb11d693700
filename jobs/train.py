"""Train job: `embeddings/` -> `sae/` (weights, config, train_log), in one Ray task on a GPU where there is one,
or data-parallel over every GPU with Ray Train when the cluster has more than one.

The task streams embeddings from the Parquet parts (parts in a random order per epoch, rows through a bounded
shuffle buffer), so memory does not grow with the dataset. It checkpoints to `sae/checkpoint/` every
`sae.checkpoint_every` steps; a rerun after a kill goes on from there and ends with the same weights.
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
from atlas.train import TrainResult, initial_sae, parquet_batches, remove_checkpoint, train_sae
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
    ckpt_dir = store.sae_dir / "checkpoint"
    result = train_sae(
        epoch_batches, dim, n_rows, sc, resolve_device(device), progress=bar.update, checkpoint_dir=ckpt_dir
    )
    bar.close()
    return _save_result(store, sc, result)


def _save_result(store: AtlasStore, sc, result: TrainResult) -> dict[str, Any]:
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
        "kind": result.sae.cfg.kind,
        "steps": result.steps,
        "samples": result.samples,
        "resumed_from_step": result.resumed_from_step,
        "holdout": result.holdout,
        "final_train": {k: last_train[k] for k in ("mse", "l0", "explained_variance", "dead_fraction")},
    }


def run_train(cfg: AtlasConfig, store: AtlasStore) -> dict[str, Any]:
    if store.count_rows("embeddings") == 0:
        raise AtlasError(f"{store.root}: no embeddings to train on (did every image fail? see the errors table)")
    if cfg.compute.device != "cpu" and ray.cluster_resources().get("GPU", 0) > 1:
        return run_train_data_parallel(cfg, store, int(ray.cluster_resources()["GPU"]))
    task = ray.remote(_train_task).options(**actor_options(cfg))
    summary = ray.get(task.remote(cfg, str(store.root), actor_device(cfg)))
    remove_checkpoint(store.sae_dir / "checkpoint")
    return summary


def run_train_data_parallel(cfg: AtlasConfig, store: AtlasStore, num_gpus: int) -> dict[str, Any]:
    """Data-parallel training with Ray Train: one worker per GPU, each streaming its shard of the embeddings
    (Ray Data splits the Parquet dataset), gradients averaged by DDP (`prepare_model`). The input scale and
    b_dec come from one sample on the driver so every worker starts from the same SAE. Rank 0 checkpoints and
    saves. Not exercised by the tests: this machine has no GPU (the single-process path is what they check)."""
    import ray.train
    import ray.train.torch
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from atlas.store import vectors_to_numpy
    from atlas.train import holdout_mask

    sc = cfg.sae
    parts = [str(p) for p in store.parts("embeddings")]
    n_rows = store.count_rows("embeddings")
    dim = store.embedding_dim()
    first = next(parquet_batches(parts, 8192, 1, sc.seed))
    input_scale = initial_sae(first[1][~holdout_mask(first[0], sc.holdout_fraction)], dim, sc).cfg.input_scale
    ds = ray.data.read_parquet(parts, columns=["image_id", "embedding"])

    def worker_loop(_: dict) -> None:
        shard = ray.train.get_dataset_shard("train")
        ctx = ray.train.get_context()

        def epoch_batches(epoch: int):
            for b in shard.iter_batches(
                batch_size=sc.batch_size,
                batch_format="pyarrow",
                local_shuffle_buffer_size=sc.shuffle_buffer,
                local_shuffle_seed=sc.seed + epoch,
            ):
                yield b.column("image_id").to_numpy(), vectors_to_numpy(b.column("embedding"), dim)

        result = train_sae(
            epoch_batches,
            dim,
            n_rows // num_gpus,
            sc,
            ray.train.torch.get_device(),
            checkpoint_dir=store.sae_dir / "checkpoint",
            wrap_model=ray.train.torch.prepare_model,
            input_scale=input_scale,
            is_chief=ctx.get_world_rank() == 0,
        )
        if ctx.get_world_rank() == 0:
            _save_result(store, sc, result)

    TorchTrainer(
        worker_loop,
        scaling_config=ScalingConfig(num_workers=num_gpus, use_gpu=True),
        datasets={"train": ds},
    ).fit()
    remove_checkpoint(store.sae_dir / "checkpoint")
    return {"data_parallel_workers": num_gpus, **_summary_from_disk(store)}


def _summary_from_disk(store: AtlasStore) -> dict[str, Any]:
    import json

    saved = json.loads((store.sae_dir / "config.json").read_text())
    return {"n_features": saved["n_features"], "kind": saved["kind"], "holdout": saved["extra"].get("holdout", {})}
