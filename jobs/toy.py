"""Training jobs for the toy world's models: the toy CLIP, then the toy decoder on the toy CLIP's embeddings.

Each writes its model folder and a MODEL_CARD.md with the command that made it, the data, steps, time and
metrics (and metrics.json). They run on the CPU in well under an hour each on 2 cores, or on a GPU.

    atlas toy train-clip --out atlas/toyworld/weights/toy-clip
    atlas toy train-decoder --clip atlas/toyworld/weights/toy-clip --out atlas/toyworld/weights/toy-decoder
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atlas.models.clip import load_embedder
from atlas.models.device import resolve_device
from atlas.toyworld.clip_model import TOY_CLIP_CFG, train_toy_clip, zero_shot_accuracy
from atlas.toyworld.decoder_model import new_toy_decoder, save_toy_decoder, train_toy_decoder
from atlas.toyworld.world import render_array, scenes


def _write_card(out: Path, title: str, facts: dict[str, Any], metrics: dict[str, Any]) -> None:
    command = "atlas " + " ".join(sys.argv[1:]) if sys.argv and "atlas" in Path(sys.argv[0]).name else " ".join(sys.argv)
    lines = [f"# {title}", "", f"Made by the project's own training job: `{command}`", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    lines += ["", "## Metrics", "", "```json", json.dumps(metrics, indent=2), "```", ""]
    (out / "MODEL_CARD.md").write_text("\n".join(lines))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def run_train_clip(out: Path, steps: int, batch_size: int, n_train: int, device: str) -> dict[str, Any]:
    dev = str(resolve_device(device))
    result = train_toy_clip(out, steps=steps, batch_size=batch_size, n_train=n_train, device=dev)
    metrics = {"zero_shot_accuracy": result.zero_shot, "final_loss": result.final_loss}
    _write_card(
        out,
        "Toy CLIP (open_clip, trained from scratch on the toy world)",
        {
            "architecture": f"open_clip CLIP {json.dumps(TOY_CLIP_CFG)}",
            "data": f"{n_train} toy-world scenes (seed 1), captions from the scene template",
            "held-out evaluation": "1000 scenes (seed 2): the true caption against captions differing in one factor",
            "steps": f"{result.steps} at batch {batch_size} (AdamW, lr 1e-3, warm-up then cosine)",
            "training time": f"{result.seconds / 60:.1f} min on {dev} ({platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads)",
            "weights": "fp16 safetensors (loaded as float32)",
        },
        metrics,
    )
    return metrics


def run_train_decoder(clip_dir: Path, out: Path, steps: int, batch_size: int, n_train: int, device: str) -> dict[str, Any]:
    dev = str(resolve_device(device))
    embedder = load_embedder(str(clip_dir), "cpu")
    t0 = time.perf_counter()
    train_scenes = scenes(n_train, 11)
    pixels = render_array(train_scenes)
    embeddings = np.concatenate([embedder.encode_pixels(pixels[i : i + 1024]) for i in range(0, n_train, 1024)])
    print(f"drew and embedded {n_train} scenes in {time.perf_counter() - t0:.0f}s", flush=True)
    held_out = scenes(240, 12)
    held_emb = embedder.encode_pixels(render_array(held_out))
    zero = embedder.zero_embedding()
    pipe = new_toy_decoder(embedder.dim, 32)
    history: list[dict[str, Any]] = []

    def evaluate(p, step: int, n: int = 96, sampling_steps: int = 15) -> dict[str, float]:
        acc = decoder_accuracy(p, embedder, held_out[:n], held_emb[:n], zero, dev, sampling_steps)
        history.append({"step": step, "n": n, **acc})
        print(f"step {step}: re-embedded accuracy on {n} held-out scenes {json.dumps(acc)}", flush=True)
        return acc

    result = train_toy_decoder(
        pipe, pixels, embeddings, zero, steps, batch_size=batch_size, device=dev, evaluate=evaluate, eval_every=max(400, steps // 5)
    )
    final = evaluate(pipe, steps, n=len(held_out), sampling_steps=25)
    pipe.to(torch.float16)
    save_toy_decoder(pipe, out)
    metrics = {"reembedded_accuracy": final, "history": history, "final_loss": result.final_loss}
    _write_card(
        out,
        "Toy decoder (diffusers UNet2DConditionModel conditioned on toy-CLIP image embeddings)",
        {
            "architecture": f"pixel-space UNet2DConditionModel, {sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.1f}M params, image_proj + image addition embedding (Kandinsky 2.2 style), v-prediction, cosine schedule, DDIM sampling",
            "conditioning": f"embeddings of {clip_dir} (L2-normalised x sqrt(d) inside the pipeline); 10% replaced by the zero embedding for guidance",
            "data": f"{n_train} toy-world scenes (seed 11)",
            "held-out evaluation": "240 scenes (seed 12): render from the scene's embedding (25 DDIM steps, guidance 3), re-embed with the toy CLIP, zero-shot classify each factor (history: 96 scenes, 15 steps)",
            "steps": f"{result.steps} at batch {batch_size} (AdamW 3e-4, EMA 0.999)",
            "training time": f"{result.seconds / 60:.1f} min on {dev} ({platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads)",
            "weights": "fp16 safetensors (loaded as float32 on the CPU)",
        },
        metrics,
    )
    return metrics


def decoder_accuracy(pipe, embedder, held_out, held_emb, zero, device: str, steps: int, guidance: float = 3.0) -> dict[str, float]:
    """Render each held-out scene from its embedding, re-embed the render, and zero-shot classify each factor."""
    pipe.to(device)
    gens = [torch.Generator().manual_seed(i) for i in range(len(held_out))]
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        images = pipe(
            torch.from_numpy(held_emb), torch.from_numpy(zero).expand(len(held_emb), -1),
            num_inference_steps=steps, guidance_scale=guidance, generator=gens, output_type="np",
        ).images  # fmt: skip
    pixels = (np.asarray(images) * 255).round().astype(np.uint8)
    return zero_shot_accuracy(embedder, held_out, pixels)
