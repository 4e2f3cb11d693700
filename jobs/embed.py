"""Embed job: an image source (folder, WebDataset shards, Parquet; see atlas/sources.py) -> `images/`,
`embeddings/`, `errors/` through Ray Data. Precomputed embeddings (clip-retrieval's layout) pass through CPU
tasks that check each row and cut thumbnails, with no model.

One CPU task per pending shard reads it and decodes its images (and makes thumbnails), yielding batches as it
goes; a pool of actors, each holding the CLIP model (one GPU each where the cluster has GPUs), embeds batches of
prepared pixels; the driver commits each part when all its rows have arrived. A part whose `embeddings` file
exists is finished (it is written last), so a rerun after a kill redoes only unfinished shards, and since
parts and image ids are deterministic, no image is lost or stored twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from atlas.config import AtlasConfig
from atlas.embed import decode_items, embed_batch, passthrough_rows, split_outputs
from atlas.models.clip import clip_image_size, load_embedder
from atlas.models.preflight import check_clip
from atlas.sources import Shard, plan_shards, read_shard, source_kind
from atlas.store import AtlasStore
from atlas.toyworld import builtin_images_dir
from jobs.parts import commit_parts
from jobs.runtime import actor_device, actor_options, errors_on_call


def source_root(cfg: AtlasConfig) -> Path:
    """The image folder of a built-in dataset (generated on first use), or data.source itself."""
    if cfg.data.source.startswith("builtin:"):
        w = cfg.world
        return builtin_images_dir(cfg.data.source, w.n_images, w.image_size, w.seed)
    return Path(cfg.data.source)


def source_uri(cfg: AtlasConfig) -> str:
    """data.source as a source URI (built-in datasets become the folder they are generated in)."""
    return f"folder:{source_root(cfg)}" if cfg.data.source.startswith("builtin:") else cfg.data.source


def _decode_shard(batch: dict[str, np.ndarray], uri: str, size: int, thumb: int, max_pixels: int, batch_size: int):
    """Read one shard (a row: part, spec) and yield decoded batches of `batch_size` rows."""
    for part, spec in zip(batch["part"], batch["spec"], strict=True):
        items = []
        for item in read_shard(uri, spec):
            items.append(item)
            if len(items) == batch_size:
                yield _with_part(decode_items(items, size, thumb, max_pixels), part)
                items = []
        if items:
            yield _with_part(decode_items(items, size, thumb, max_pixels), part)


def _with_part(cols: dict[str, Any], part: str) -> dict[str, Any]:
    cols["part"] = np.array([part] * len(cols["source"]), dtype=object)
    return cols


@errors_on_call
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


def _passthrough_shard(batch: dict[str, np.ndarray], location: str, thumb: int, max_pixels: int):
    """Read one shard of precomputed embeddings (a row: part, spec) as embedded rows."""
    for part, spec in zip(batch["part"], batch["spec"], strict=True):
        rows = passthrough_rows(location, spec, thumb, max_pixels)
        yield rows.append_column("part", pa.array([part] * rows.num_rows, pa.string()))


def _passthrough_stream(cfg: AtlasConfig, location: str, pending: list[Shard]) -> ray.data.Dataset:
    return _shard_rows(pending).map_batches(
        _passthrough_shard,
        batch_size=1,
        num_cpus=cfg.compute.decode_cpus,
        fn_kwargs={"location": location, "thumb": cfg.data.thumbnail_size, "max_pixels": cfg.data.max_image_pixels},
    )


def _embed_stream(cfg: AtlasConfig, uri: str, pending: list[Shard]) -> ray.data.Dataset:
    return (
        _shard_rows(pending)
        .map_batches(
            _decode_shard,
            batch_size=1,
            num_cpus=cfg.compute.decode_cpus,
            fn_kwargs={
                "uri": uri,
                "size": clip_image_size(cfg.models.clip),
                "thumb": cfg.data.thumbnail_size,
                "max_pixels": cfg.data.max_image_pixels,
                "batch_size": cfg.embed.batch_size,
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


def _shard_rows(pending: list[Shard]) -> ray.data.Dataset:
    return ray.data.from_items([{"part": s.name, "spec": s.spec} for s in pending], override_num_blocks=len(pending))


def run_embed(cfg: AtlasConfig, store: AtlasStore) -> dict[str, Any]:
    uri = source_uri(cfg)
    kind, location = source_kind(uri)
    dim = check_clip(cfg.models.clip) if kind == "embeddings" else None
    shards = plan_shards(uri, cfg.embed.part_size, cfg.data.limit, dim)
    # a shard with no items (an empty tar, say) has nothing to write: it is never pending
    pending = [s for s in shards if s.n_items and not store.has_part("embeddings", s.name)]
    if pending:
        if kind == "embeddings":
            ds = _passthrough_stream(cfg, location, pending)
        else:
            ds = _embed_stream(cfg, uri, pending)

        def commit(part: str, rows: pa.Table) -> None:
            dim = rows.schema.field("embedding").type.list_size
            images, embeddings, errors = split_outputs(rows, dim)
            if errors.num_rows:
                store.write_part("errors", f"embed-{part}", errors)
            store.write_part("images", part, images)
            store.write_part("embeddings", part, embeddings)  # last: its presence marks the part finished

        commit_parts(ds, {s.name: s.n_items for s in pending}, commit, "embed", "img", key="source")
    return {
        "source": uri,
        "parts": len(shards),
        "parts_resumed": len(shards) - len(pending),
        "listed": sum(s.n_items for s in shards),
        "rows": {
            "images": store.count_rows("images"),
            "embeddings": store.count_rows("embeddings"),
            "errors": store.count_rows("errors", "embed-"),
        },
    }
