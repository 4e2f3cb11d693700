"""The toy CLIP: a small open_clip model (a custom config, the same classes and loading path as real CLIPs)
trained contrastively on toy-world image/caption pairs, and its zero-shot evaluation per factor."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from atlas.models.clip import ClipEmbedder, clip_preprocess_cfg, geometry_of, save_local_clip
from atlas.toyworld.world import FACTOR_VALUES, FACTORS, Scene, render_array, scenes

TOY_CLIP_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4},
}
PREPROCESS = clip_preprocess_cfg(TOY_CLIP_CFG["vision_cfg"]["image_size"])


def new_toy_clip(seed: int = 0) -> torch.nn.Module:
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TOY_CLIP_CFG)
    model.visual.preprocess_cfg = dict(PREPROCESS)
    return model


@dataclass
class ClipTrainResult:
    steps: int
    seconds: float
    final_loss: float
    zero_shot: dict[str, float]


def train_toy_clip(
    out_dir: Path,
    steps: int = 2000,
    batch_size: int = 256,
    n_train: int = 40_000,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> ClipTrainResult:
    """Train the toy CLIP from scratch and save it to `out_dir` (open_clip folder format, fp16 weights).
    `log` gets progress lines (default: printed)."""
    log = log or functools.partial(print, flush=True)
    import open_clip
    from open_clip.loss import ClipLoss

    dev = torch.device(device)
    model = new_toy_clip(seed).to(dev).train()
    tokenizer = open_clip.get_tokenizer("RN50", context_length=TOY_CLIP_CFG["text_cfg"]["context_length"])
    t0 = time.perf_counter()
    train_scenes = scenes(n_train, seed + 1)
    pixels = torch.from_numpy(render_array(train_scenes))
    tokens = tokenizer([s.caption() for s in train_scenes])
    log(f"drew {n_train} training scenes in {time.perf_counter() - t0:.0f}s")
    mean = torch.tensor(PREPROCESS["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESS["std"]).view(1, 3, 1, 1)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "logit_scale" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    warmup = max(1, steps // 20)
    loss_fn = ClipLoss()
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    loss_value = float("nan")
    for step in range(steps):
        lr_now = (
            lr * (step + 1) / warmup
            if step < warmup
            else lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        )
        for group in opt.param_groups:
            group["lr"] = lr_now
        idx = torch.randint(0, n_train, (batch_size,), generator=g)
        x = (pixels[idx].permute(0, 3, 1, 2).float().div(255) - mean) / std
        img, txt, scale = model(x.to(dev), tokens[idx].to(dev))
        loss = loss_fn(img, txt, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        loss_value = float(loss)
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step:5d}  loss {loss_value:.3f}  lr {lr_now:.2e}  {time.perf_counter() - t0:.0f}s")
    seconds = time.perf_counter() - t0
    model.eval().cpu()
    half = model.half()
    save_local_clip(half, TOY_CLIP_CFG, out_dir)
    model.float()
    embedder = ClipEmbedder(model, tokenizer, geometry_of(model), torch.device("cpu"), str(out_dir))
    accuracy = zero_shot_accuracy(embedder, scenes(1000, seed + 2))
    return ClipTrainResult(steps, seconds, loss_value, accuracy)


def zero_shot_accuracy(
    embedder: ClipEmbedder, held_out: list[Scene], pixels: np.ndarray | None = None
) -> dict[str, float]:
    """For each factor: the share of images whose true caption beats every caption that differs from it
    only in that factor (cosine of normalised embeddings). `pixels` (uint8 [N, S, S, 3]) defaults to the
    scenes drawn; pass generated images to measure whether a decoder kept each factor."""
    if pixels is None:
        pixels = render_array(held_out, embedder.geometry.size)
    z_img = embedder.encode_pixels(pixels)
    z_img /= np.linalg.norm(z_img, axis=1, keepdims=True)
    result = {}
    for factor in FACTORS:
        values = FACTOR_VALUES[factor]
        captions = [_with(s, factor, v).caption() for s in held_out for v in values]
        z_txt = embedder.encode_texts(captions).reshape(len(held_out), len(values), -1)
        z_txt /= np.linalg.norm(z_txt, axis=2, keepdims=True)
        scores = np.einsum("nd,nvd->nv", z_img, z_txt)
        truth = np.array([values.index(getattr(s, factor)) for s in held_out])
        result[factor] = float((scores.argmax(axis=1) == truth).mean())
    return result


def _with(scene: Scene, factor: str, value: str) -> Scene:
    from dataclasses import replace

    return replace(scene, **{factor: value})
