"""Training jobs for the toy world's models: the toy CLIP, then the toy decoder on the toy CLIP's embeddings.

Each writes its model folder and a MODEL_CARD.md with the command that made it, the data, steps, time and
metrics (and metrics.json). On 2 CPU cores the CLIP takes ~27 min (4,000 steps at batch 128); the decoder
runs at ~0.75 s a step at batch 64, so `--max-minutes 55` keeps it under an hour (~4,000 steps; the shipped
weights had 6,100, in three runs chained with `--init`). On a GPU both take minutes.

    atlas toy train-clip --out atlas/toyworld/weights/toy-clip
    atlas toy train-decoder --clip atlas/toyworld/weights/toy-clip --out atlas/toyworld/weights/toy-decoder
"""

from __future__ import annotations

import copy
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
from atlas.toyworld.decoder_model import (
    GUIDANCE,
    ToyDecoderPipeline,
    new_toy_decoder,
    save_toy_decoder,
    train_toy_decoder,
)
from atlas.toyworld.world import render_array, scenes


def _write_card(out: Path, title: str, facts: dict[str, Any], metrics: dict[str, Any]) -> None:
    lines = [f"# {title}", "", f"Made by the project's own training job: `{_command()}`", ""]
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
            "training time": f"{result.seconds / 60:.1f} min on {_device_words(dev)}",
            "weights": "fp16 safetensors (loaded as float32)",
        },
        metrics,
    )
    return metrics


def run_train_decoder(
    clip_dir: Path,
    out: Path,
    steps: int,
    batch_size: int,
    n_train: int,
    device: str,
    max_minutes: float = 0.0,
    lr: float = 5e-4,
    init: Path | None = None,
) -> dict[str, Any]:
    """Train the toy decoder (from scratch, or on from the weights in `init`) and write it with its model card."""
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
    pipe = ToyDecoderPipeline.from_pretrained(init, dtype=torch.float32) if init else new_toy_decoder(embedder.dim, 32)
    earlier = json.loads((init / "metrics.json").read_text()).get("runs", []) if init else []
    history: list[dict[str, Any]] = []
    t_train = time.perf_counter()

    def save(p, step: int, reembedded: dict[str, float], final_loss: float) -> dict[str, Any]:
        run = {"command": _command(), "steps": step, "batch_size": batch_size, "lr": lr,
               "init": str(init) if init else None, "minutes": round((time.perf_counter() - t_train) / 60, 1),
               "device": _device_words(dev)}  # fmt: skip
        metrics = {
            "reembedded_accuracy": reembedded,
            "history": history,
            "final_loss": final_loss,
            "runs": [*earlier, run],
        }
        _write_decoder(copy.deepcopy(p).to(torch.float16), out, clip_dir, n_train, metrics)
        return metrics

    def evaluate(p, step: int, n: int = 96, sampling_steps: int = 15) -> dict[str, float]:
        acc = decoder_accuracy(p, embedder, held_out[:n], held_emb[:n], zero, dev, sampling_steps)
        history.append({"step": step, "n": n, **acc})
        print(f"step {step}: re-embedded accuracy on {n} held-out scenes {json.dumps(acc)}", flush=True)
        save(p, step, acc, float("nan"))  # a stopped run still leaves usable weights
        return acc

    result = train_toy_decoder(
        pipe, pixels, embeddings, zero, steps, batch_size=batch_size, lr=lr, device=dev,
        evaluate=evaluate, eval_every=max(400, steps // 8), max_seconds=max_minutes * 60,
    )  # fmt: skip
    final = decoder_accuracy(pipe, embedder, held_out, held_emb, zero, dev, 25)
    return save(pipe, result.steps, final, result.final_loss)


def _write_decoder(pipe, out: Path, clip_dir: Path, n_train: int, metrics: dict[str, Any]) -> None:
    save_toy_decoder(pipe, out)
    runs = metrics["runs"]
    _write_card(
        out,
        "Toy decoder (diffusers UNet2DConditionModel conditioned on toy-CLIP image embeddings)",
        {
            "architecture": "UNet2DConditionModel on 2x2 space-to-depth pixels (16x16x12), "
            f"{sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.1f}M params, image_proj + image addition "
            "embedding (Kandinsky 2.2 style), v-prediction, cosine schedule, DDIM sampling",
            "conditioning": f"embeddings of {clip_dir} (L2-normalised x sqrt(d) inside the pipeline); 10% replaced "
            "by the zero embedding for guidance",
            "data": f"{n_train} toy-world scenes (seed 11)",
            "held-out evaluation": "240 scenes (seed 12): render from the scene's embedding (25 DDIM steps, "
            f"guidance {GUIDANCE}), re-embed with the toy CLIP, zero-shot classify each factor (history: 96 scenes, "
            "15 steps)",
            "steps": f"{sum(r['steps'] for r in runs)} in {len(runs)} run(s), each going on from the last one's "
            "weights (AdamW, warm-up then cosine to 10%, EMA 0.999):"
            + "".join(
                f"\n  - `{r['command']}`: {r['steps']} steps at batch {r['batch_size']}, lr {r['lr']:g}, "
                f"{r['minutes']} min on {r['device']}"
                for r in runs
            ),
            "weights": "fp16 safetensors (loaded as float32 on the CPU)",
        },
        metrics,
    )


def _command() -> str:
    return "atlas " + " ".join(sys.argv[1:]) if sys.argv and "atlas" in Path(sys.argv[0]).name else " ".join(sys.argv)


def _device_words(dev: str) -> str:
    cpu = platform.processor() or platform.machine()
    return f"{dev} ({cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads)"


def decoder_accuracy(
    pipe, embedder, held_out, held_emb, zero, device: str, steps: int, guidance: float = GUIDANCE
) -> dict[str, float]:
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
