"""Render job: an icon for every alive feature, through Ray actors that each hold the decoder, the CLIP model
(for the template and fidelity) and the SAE. Parts of `render.part_size` features are the unit of resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from atlas.config import AtlasConfig, RenderConfig
from atlas.icons import IconRenderer, icon_fidelity, icon_parameters, png_bytes
from atlas.models.clip import load_embedder
from atlas.models.renderer import load_renderer
from atlas.models.sae.autoencoder import load_sae
from atlas.store import AtlasStore, table_from_rows
from jobs.parts import chunk, commit_parts
from jobs.runtime import actor_device, actor_options, errors_on_call


@errors_on_call
class RenderActor:
    def __init__(self, clip_spec: str, decoder_spec: str, sae_dir: str, rc: RenderConfig, device: str):
        embedder = load_embedder(clip_spec, device)
        renderer = load_renderer(decoder_spec, device, rc.half_precision)
        sae = load_sae(Path(sae_dir))  # the SAE maths is tiny next to diffusion: keep it on the CPU
        self.icons = IconRenderer(embedder, renderer, sae, rc)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        # One row is one chunk of one part: a pipeline call always draws the same features together, so a
        # resumed render draws exactly the icons an uninterrupted one would (batched arithmetic rounds
        # differently with other batch-mates).
        parts, chunks = [], []
        for part, ids in zip(batch["part"], batch["feature_ids"], strict=True):
            chunks.append(np.asarray(ids, dtype=np.int64))
            parts += [part] * len(chunks[-1])
        fids = np.concatenate(chunks)
        images, ranks = [], []
        for ids in chunks:
            drawn, r = self.icons.render(ids, batch_size=len(ids))
            images += drawn
            ranks.append(r)
        return pa.table(
            {
                "part": parts,
                "feature_id": fids.astype(np.int32),
                "image": pa.array([png_bytes(im) for im in images], pa.binary()),
                "seed": np.asarray(self.icons.seeds(fids), dtype=np.int64),
                "fidelity_rank": np.concatenate(ranks),
            }
        )


def run_render(cfg: AtlasConfig, store: AtlasStore) -> dict[str, Any]:
    rc = cfg.render
    features = store.read_table("features", ["feature_id", "alive"])
    alive = features.filter(pc.field("alive")).column("feature_id").to_pylist()
    if rc.max_features:
        alive = alive[: rc.max_features]
    parts = chunk(alive, rc.part_size)
    pending = [(p, f) for p, f in parts if not store.has_part("icons", p)]
    if pending:
        items = [
            {"part": p, "feature_ids": fids[i : i + rc.batch_size]}
            for p, fids in pending
            for i in range(0, len(fids), rc.batch_size)
        ]
        ds = ray.data.from_items(items, override_num_blocks=min(200, len(items))).map_batches(
            RenderActor,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=cfg.compute.num_actors),
            fn_constructor_kwargs={
                "clip_spec": cfg.models.clip,
                "decoder_spec": cfg.models.decoder,
                "sae_dir": str(store.sae_dir),
                "rc": rc,
                "device": actor_device(cfg),
            },
            **actor_options(cfg),
        )

        def commit(part: str, rows: pa.Table) -> None:
            rows = rows.sort_by("feature_id")
            n = rows.num_rows
            icons = table_from_rows(
                "icons",
                {
                    "feature_id": rows["feature_id"],
                    "image": rows["image"],
                    "seed": rows["seed"],
                    "fidelity_rank": rows["fidelity_rank"],
                    **icon_parameters(rc, n),
                },
            )
            store.write_part("icons", part, icons)

        commit_parts(ds, {p: len(f) for p, f in pending}, commit, "render", "icon", key="feature_id")
    return {
        "rows": {"icons": store.count_rows("icons")},
        "parts_resumed": len(parts) - len(pending),
        "icons_rendered": sum(len(f) for _, f in pending),
        "fidelity": icon_fidelity(store),
    }
