"""Render job: an icon for every alive feature, through Ray actors that each hold the decoder, the CLIP model
(for the template and fidelity) and the SAE. Parts of `render.part_size` features are the unit of resume."""

from __future__ import annotations

import os
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
from atlas.models.sae import load_sae
from atlas.store import AtlasStore, table_from_rows
from jobs.parts import chunk, commit_parts
from jobs.runtime import actor_device, actor_options


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


# ---- benchmark -------------------------------------------------------------------------------------------
# Measured on one H100 with random weights of the real Kandinsky 2.2 decoder shapes (UNet 1.25B + MoVQ),
# 12 steps, guidance 4, 512 px, fp16 (/work/shared/NOTES.md, 2026-11-23): the basis of the projection when
# the benchmark itself runs without a GPU.
H100_KANDINSKY_512PX = {"batch_1_icons_per_s": 1 / 0.59, "batch_32_icons_per_s": 10.7, "ratio": 6.3}
N_PROJECTED = 60_000


def run_bench_render(
    decoder: str, clip: str, n_icons: int, batch_size: int, steps: int, size: int, repeat: int, device: str
) -> dict[str, Any]:
    """Icons/s of `IconRenderer` drawing `batch_size` features per pipeline call against the same renderer
    calling the pipeline once per feature (everything else equal: icon embeddings, fidelity re-embedding),
    plus the bare pipeline at both batch sizes, and the projected time for 60,000 icons."""
    import torch

    from atlas.benchmark import best_rate, peak_rss_mb
    from atlas.models.sae import SAEConfig, SparseAutoencoder

    embedder = load_embedder(clip, device)
    renderer = load_renderer(decoder, device)
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=embedder.dim, n_features=4 * embedder.dim)).eval()
    rc = RenderConfig(steps=steps, size=size, batch_size=batch_size)
    icons = IconRenderer(embedder, renderer, sae, rc)
    fids = np.arange(n_icons) % sae.cfg.n_features

    def batched() -> int:
        return len(icons.render(fids, batch_size=batch_size)[0])

    def one_per_feature() -> int:
        return len(icons.render(fids, batch_size=1)[0])

    embeds = np.repeat(icons.template[None], n_icons, axis=0)

    def bare(bs: int) -> int:
        for i in range(0, n_icons, bs):
            renderer.render(
                embeds[i : i + bs], icons.negative, list(range(i, min(n_icons, i + bs))), steps, rc.guidance_scale, size
            )
        return n_icons

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    rate_batched = best_rate(lambda: (batched(), sync())[0], repeat)
    rate_single = best_rate(lambda: (one_per_feature(), sync())[0], repeat)
    bare_batched = best_rate(lambda: bare(batch_size), repeat)
    bare_single = best_rate(lambda: bare(1), repeat)
    on_gpu = device.startswith("cuda")
    if on_gpu:
        basis = f"measured here: batched icon renderer, {decoder}, {size} px, {steps} steps, batch {batch_size}"
        gpu_rate = rate_batched
    else:
        basis = (
            "no GPU in this run: the H100 figure in /work/shared/NOTES.md (Kandinsky-2.2-shaped decoder, random "
            "weights, fp16, 12 steps, guidance 4, 512 px, batch 32: 10.7 icons/s); 8 GPUs = 8 independent Ray "
            "actors, linear scaling (icons share no state), model loading and fidelity re-embedding not counted"
        )
        gpu_rate = H100_KANDINSKY_512PX["batch_32_icons_per_s"]
    return {
        "device_kind": "cuda" if on_gpu else "cpu",
        "decoder": decoder,
        "clip": clip,
        "n_icons": n_icons,
        "batch_size": batch_size,
        "steps": steps,
        "size": size,
        "batched_icons_per_s": rate_batched,
        "per_feature_icons_per_s": rate_single,
        "ratio": rate_batched / rate_single,
        "bare_pipeline_batched_icons_per_s": bare_batched,
        "bare_pipeline_per_feature_icons_per_s": bare_single,
        "bare_ratio": bare_batched / bare_single,
        "peak_rss_mb": peak_rss_mb(),
        "load_average_1min": os.getloadavg()[0],  # a shared machine's rates are only comparable within one run
        "projection_60k": {
            "basis": basis,
            "icons_per_s_per_gpu": gpu_rate,
            "one_gpu_hours": N_PROJECTED / gpu_rate / 3600,
            "eight_gpu_hours": N_PROJECTED / (8 * gpu_rate) / 3600,
            "h100_reference": H100_KANDINSKY_512PX,
        },
    }
