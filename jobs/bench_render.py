"""`atlas bench render`: icons/s of the batched icon renderer (`atlas.icons.IconRenderer`, what the render
stage's actors run) against the same renderer calling the pipeline once per feature, and the bare pipeline at
both batch sizes; plus the projected wall time for 60,000 icons on 1 and 8 GPUs."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from atlas.config import RenderConfig
from atlas.icons import IconRenderer
from atlas.models.clip import load_embedder
from atlas.models.renderer import load_renderer

# Measured on one H100 on 2026-11-23 with random weights of the real Kandinsky 2.2 decoder shapes (UNet 1.25B +
# MoVQ), 12 steps, guidance 4, 512 px, fp16: 0.59 s for one icon, 10.7 icons/s in batches of 32. The basis of
# the projection when the benchmark itself runs without a GPU.
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
    from atlas.models.sae.autoencoder import SAEConfig, SparseAutoencoder

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
        "projection_60k": _projection(rate_batched if on_gpu else None, decoder, size, steps, batch_size),
    }


def _projection(gpu_rate: float | None, decoder: str, size: int, steps: int, batch_size: int) -> dict[str, Any]:
    """Hours for 60,000 icons on 1 and 8 GPUs, from the batched rate measured here on a GPU, or else (None)
    from the H100 figure."""
    if gpu_rate is not None:
        basis = f"measured here: batched icon renderer, {decoder}, {size} px, {steps} steps, batch {batch_size}"
    else:
        basis = (
            "no GPU in this run: the figure measured on one H100 on 2026-11-23 (Kandinsky-2.2-shaped decoder, random "
            "weights, fp16, 12 steps, guidance 4, 512 px, batch 32: 10.7 icons/s); 8 GPUs = 8 independent Ray "
            "actors, linear scaling (icons share no state), model loading and fidelity re-embedding not counted"
        )
        gpu_rate = H100_KANDINSKY_512PX["batch_32_icons_per_s"]
    return {
        "basis": basis,
        "icons_per_s_per_gpu": gpu_rate,
        "one_gpu_hours": N_PROJECTED / gpu_rate / 3600,
        "eight_gpu_hours": N_PROJECTED / (8 * gpu_rate) / 3600,
        "h100_reference": H100_KANDINSKY_512PX,
    }
