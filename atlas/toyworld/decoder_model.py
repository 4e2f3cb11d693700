"""The toy decoder: a pixel-space diffusion model conditioned on CLIP image embeddings the way the Kandinsky
2.2 decoder is (a diffusers UNet2DConditionModel with `encoder_hid_dim_type="image_proj"` and
`addition_embed_type="image"`, classifier-free guidance against a negative image embedding), trained on
toy-world images from the toy CLIP's embeddings.

`ToyDecoderPipeline` is a diffusers `DiffusionPipeline` with KandinskyV22Pipeline's call signature, saved and
loaded with `save_pretrained` / `from_pretrained`, so the renderer uses it exactly as it uses Kandinsky.
Its "latents" are the pixels folded space-to-depth (`pixel_unshuffle`: 32x32x3 -> 16x16x12), a lossless
stand-in for Kandinsky's MoVQ that lets the UNet work at 16/8/4 px, about 4x cheaper than at 32 px for the same
widths, which is what makes it trainable on a 2-core CPU. It L2-normalises the conditioning embeddings
(times sqrt(d)) itself, so steering changes what an embedding points at, not how loud it is.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, UNet2DConditionModel

from atlas.models.toy_decoder import GUIDANCE as GUIDANCE  # re-exported: the toy decoder's guidance
from atlas.models.toy_decoder import ToyDecoderPipeline, _condition, _fold


def new_toy_decoder(embed_dim: int = 64, image_size: int = 32, seed: int = 0, fold: int = 2) -> ToyDecoderPipeline:
    """A fresh toy decoder whose UNet works on `fold`x`fold` space-to-depth pixels."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=image_size // fold,
        in_channels=3 * fold * fold,
        out_channels=3 * fold * fold,
        # One resnet per level, cross-attention only at the coarsest: what a 2-core CPU can train in an hour.
        layers_per_block=1,
        block_out_channels=(32, 64, 128),
        down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        encoder_hid_dim_type="image_proj",
        encoder_hid_dim=embed_dim,
        addition_embed_type="image",
        cross_attention_dim=128,
        attention_head_dim=32,
        resnet_time_scale_shift="scale_shift",
        norm_num_groups=32,
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=True,
        set_alpha_to_one=True,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
    )
    return ToyDecoderPipeline(unet=unet.eval(), scheduler=scheduler)


@dataclass
class DecoderTrainResult:
    steps: int
    seconds: float
    final_loss: float


def train_toy_decoder(
    pipe: ToyDecoderPipeline,
    pixels_bhwc: np.ndarray,
    embeddings: np.ndarray,
    zero_embedding: np.ndarray,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-4,
    cond_dropout: float = 0.1,
    ema_decay: float = 0.999,
    seed: int = 0,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    evaluate: Callable[[ToyDecoderPipeline, int], None] | None = None,
    eval_every: int = 0,
    max_seconds: float = 0.0,
) -> DecoderTrainResult:
    """Train `pipe.unet` in place (its weights end as the EMA of training) on images and their embeddings,
    for `steps` steps or until `max_seconds` have passed (0 = no time limit; the learning-rate schedule ends
    with whichever comes first). Dropped conditions are replaced
    by `zero_embedding`, the negative used for guidance at sampling time. `evaluate(pipe, step)` sees the EMA
    weights every `eval_every` steps."""
    log = log or functools.partial(print, flush=True)
    dev = torch.device(device)
    unet = pipe.unet.to(dev).train().requires_grad_(True)  # a trained pipeline holds its frozen EMA copy
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    sched = pipe.scheduler
    alphas = sched.alphas_cumprod.to(dev)
    pixels = torch.from_numpy(pixels_bhwc).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    x_all = torch.nn.functional.pixel_unshuffle(pixels, _fold(unet))
    e_all = _condition(torch.from_numpy(np.asarray(embeddings, dtype=np.float32)))
    e_zero = _condition(torch.from_numpy(np.asarray(zero_embedding, dtype=np.float32)).reshape(1, -1))
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    warmup = 200
    t0 = time.perf_counter()
    loss_value, done = float("nan"), 0
    for step in range(steps):
        elapsed = time.perf_counter() - t0
        if max_seconds and elapsed > max_seconds:
            log(f"time limit reached after {step} steps")
            break
        # Warm-up, then cosine to 10% over the steps or the time limit, whichever runs out first.
        progress = max(step / steps, elapsed / max_seconds if max_seconds else 0.0)
        lr_now = lr * min(1.0, (step + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * progress))
        for group in opt.param_groups:
            group["lr"] = lr_now
        idx = torch.randint(0, len(x_all), (batch_size,), generator=g)
        x0, e = x_all[idx].to(dev), e_all[idx].clone()
        drop = torch.rand(batch_size, generator=g) < cond_dropout
        e[drop] = e_zero
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), generator=g).to(dev)
        noise = torch.randn(x0.shape, generator=g).to(dev)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        v = a.sqrt() * noise - (1 - a).sqrt() * x0
        pred = unet(xt, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": e.to(dev)}).sample
        loss = torch.nn.functional.mse_loss(pred, v)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        loss_value, done = loss.item(), step + 1
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step:5d}  loss {loss_value:.4f}  {time.perf_counter() - t0:.0f}s")
        if evaluate and eval_every and step and step % eval_every == 0:
            pipe.unet = ema
            evaluate(pipe, step)
            pipe.unet = unet
    pipe.unet = ema.cpu()
    return DecoderTrainResult(done, time.perf_counter() - t0, loss_value)


def save_toy_decoder(pipe: ToyDecoderPipeline, out_dir: Path) -> None:
    pipe.save_pretrained(out_dir, safe_serialization=True)
