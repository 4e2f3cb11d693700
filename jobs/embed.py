"""Embed job: image folder -> `images/`, `embeddings/`, `errors/` through Ray Data.

CPU tasks read and decode files (and make thumbnails); a pool of actors, each holding the CLIP model
(one GPU each where the cluster has GPUs), embeds batches of prepared pixels; the driver commits each part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from atlas.builtin import builtin_images_dir
from atlas.config import AtlasConfig
from atlas.embed import decode_batch, embed_batch, split_outputs
from atlas.images import list_image_folder
from atlas.models.clip import clip_image_size, load_embedder
from atlas.store import AtlasStore
from jobs.parts import chunk, commit_parts
from jobs.runtime import actor_device, actor_options


def source_root(cfg: AtlasConfig) -> Path:
    """The image folder named by data.source (built-in datasets are generated on first use)."""
    if cfg.data.source.startswith("builtin:"):
        w = cfg.world
        return builtin_images_dir(cfg.data.source, w.n_images, w.image_size, w.seed)
    return Path(cfg.data.source)


def _decode(batch: dict[str, np.ndarray], root: str, size: int, thumb: int, max_pixels: int) -> dict[str, Any]:
    out = decode_batch(list(batch["source"]), Path(root), size, thumb, max_pixels)
    out["part"] = batch["part"]
    return out


class EmbedActor:
    """Holds one CLIP model; turns decoded batches into rows with embeddings."""

    def __init__(self, clip_spec: str, device: str):
        self.embedder = load_embedder(clip_spec, device)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        emb = embed_batch(self.embedder, batch)
        d = emb.shape[1]
        cols = {k: batch[k] for k in ("part", "source", "image_id", "caption", "width", "height", "error")}
        table = pa.table({k: pa.array(list(v) if v.dtype == object else v) for k, v in cols.items()})
        table = table.append_column("thumbnail", pa.array(list(batch["thumbnail"]), pa.binary()))
        return table.append_column("embedding", pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), d))


def run_embed(cfg: AtlasConfig, store: AtlasStore) -> dict[str, Any]:
    root = source_root(cfg)
    sources = list_image_folder(root)
    if cfg.data.limit:
        sources = sources[: cfg.data.limit]
    parts = chunk(sources, cfg.embed.part_size)
    pending = [(p, s) for p, s in parts if not store.has_part("embeddings", p)]
    if pending:
        items = [{"source": s, "part": p} for p, srcs in pending for s in srcs]
        size = clip_image_size(cfg.models.clip)
        ds = (
            ray.data.from_items(items, override_num_blocks=max(1, min(200, len(items) // cfg.embed.batch_size)))
            .map_batches(
                _decode,
                batch_size=cfg.embed.batch_size,
                num_cpus=cfg.compute.decode_cpus,
                fn_kwargs={
                    "root": str(root),
                    "size": size,
                    "thumb": cfg.data.thumbnail_size,
                    "max_pixels": cfg.data.max_image_pixels,
                },
            )
            .map_batches(
                EmbedActor,
                batch_size=cfg.embed.batch_size,
                compute=ray.data.ActorPoolStrategy(size=cfg.compute.num_actors),
                fn_constructor_kwargs={"clip_spec": cfg.models.clip, "device": actor_device(cfg)},
                **actor_options(cfg),
            )
        )

        def commit(part: str, rows: pa.Table) -> None:
            dim = rows.schema.field("embedding").type.list_size
            images, embeddings, errors = split_outputs(rows, dim)
            if errors.num_rows:
                store.write_part("errors", f"embed-{part}", errors)
            store.write_part("images", part, images)
            store.write_part("embeddings", part, embeddings)  # last: its presence marks the part finished

        commit_parts(ds, dict((p, len(s)) for p, s in pending), commit, "embed", "img", key="source")
    return {
        "source": str(root),
        "parts": len(parts),
        "parts_resumed": len(parts) - len(pending),
        "rows": {
            "images": store.count_rows("images"),
            "embeddings": store.count_rows("embeddings"),
            "errors": store.count_rows("errors", "embed-"),
        },
    }
