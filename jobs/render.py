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
from atlas.icons import fidelity_ranks, icon_embeddings, icon_fidelity, png_bytes, template_embedding
from atlas.models.clip import load_embedder
from atlas.models.renderer import load_renderer
from atlas.models.sae import load_sae
from atlas.store import AtlasStore, table_from_rows
from jobs.parts import chunk, commit_parts
from jobs.runtime import actor_device, actor_options


class RenderActor:
    def __init__(self, clip_spec: str, decoder_spec: str, sae_dir: str, rc: RenderConfig, device: str):
        self.rc = rc
        self.embedder = load_embedder(clip_spec, device)
        self.renderer = load_renderer(decoder_spec, device)
        self.sae = load_sae(Path(sae_dir))  # the SAE maths is tiny next to diffusion: keep it on the CPU
        self.template = template_embedding(self.embedder, rc.template)
        self.negative = self.embedder.zero_embedding() if rc.negative == "zero" else self.template

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        rc = self.rc
        fids = batch["feature_id"].astype(np.int64)
        seeds = [rc.seed + int(f) for f in fids]  # a fixed seed per feature: icons are reproducible
        embeds = icon_embeddings(self.sae, self.template, fids, rc.template_scale, rc.feature_scale, rc.keep_error)
        images = self.renderer.render(embeds, self.negative, seeds, rc.steps, rc.guidance_scale, rc.size)
        ranks = fidelity_ranks(self.sae, self.embedder.encode_images(images), fids)
        return pa.table(
            {
                "part": batch["part"],
                "feature_id": fids.astype(np.int32),
                "image": pa.array([png_bytes(im) for im in images], pa.binary()),
                "seed": np.asarray(seeds, dtype=np.int64),
                "fidelity_rank": ranks,
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
        items = [{"feature_id": f, "part": p} for p, fids in pending for f in fids]
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(200, len(items) // rc.batch_size))).map_batches(
            RenderActor,
            batch_size=rc.batch_size,
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
                    "feature_scale": [rc.feature_scale] * n,
                    "seed": rows["seed"],
                    "steps": [rc.steps] * n,
                    "fidelity_rank": rows["fidelity_rank"],
                },
            )
            store.write_part("icons", part, icons)

        commit_parts(ds, {p: len(f) for p, f in pending}, commit, "render", "icon", key="feature_id")
    return {
        "rows": {"icons": store.count_rows("icons")},
        "parts_resumed": len(parts) - len(pending),
        "fidelity": icon_fidelity(store),
    }
