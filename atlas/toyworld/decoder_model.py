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
from diffusers import DDIMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor

# Classifier-free guidance for this model: above ~2 its samples oversaturate into the wrong colours (its
# unconditional branch saw only the 10% of dropped conditions), while 1-2 draw the scene the embedding shows.
GUIDANCE = 1.5


def _condition(e: torch.Tensor) -> torch.Tensor:
    return e / e.norm(dim=-1, keepdim=True).clamp_min(1e-6) * math.sqrt(e.shape[-1])


def _fold(unet: UNet2DConditionModel) -> int:
    """The space-to-depth factor of the pipeline's latents (1 for a UNet that works on the pixels)."""
    return math.isqrt(unet.config.in_channels // 3)


class ToyDecoderPipeline(DiffusionPipeline):
    """Image embeddings -> images, with KandinskyV22Pipeline's arguments."""

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DConditionModel, scheduler: DDIMScheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(channels, h, w) of the starting noise for `height` x `width` images: the pixels folded space-to-depth."""
        fold = _fold(self.unet)
        return 3 * fold * fold, height // fold, width // fold

    @torch.no_grad()
    def __call__(
        self,
        image_embeds: torch.Tensor,
        negative_image_embeds: torch.Tensor,
        height: int = 32,
        width: int = 32,
        num_inference_steps: int = 25,
        guidance_scale: float = GUIDANCE,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        device = self._execution_device
        dtype = self.unet.dtype
        pos = _condition(image_embeds.to(device, torch.float32)).repeat_interleave(num_images_per_prompt, 0)
        neg = _condition(negative_image_embeds.to(device, torch.float32)).repeat_interleave(num_images_per_prompt, 0)
        n, fold = pos.shape[0], _fold(self.unet)
        shape = (n, *self.latent_shape(height, width))
        x = latents if latents is not None else randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        x = x * self.scheduler.init_noise_sigma
        guided = guidance_scale > 1.0
        cond = torch.cat([neg, pos]).to(dtype) if guided else pos.to(dtype)
        for t in self.progress_bar(self.scheduler.timesteps):
            inp = torch.cat([x, x]) if guided else x
            out = self.unet(inp, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": cond}).sample
            if guided:
                uncond, cond_out = out.chunk(2)
                out = uncond + guidance_scale * (cond_out - uncond)
            x = self.scheduler.step(out, t, x, generator=generator).prev_sample
        images = (torch.nn.functional.pixel_shuffle(x.float(), fold) / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            result = images
        else:
            result = images.permute(0, 2, 3, 1).cpu().numpy()
            if output_type == "pil":
                result = self.numpy_to_pil(result)
        return ImagePipelineOutput(images=result) if return_dict else (result,)


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
    log: Callable[[str], None] = functools.partial(print, flush=True),
    evaluate: Callable[[ToyDecoderPipeline, int], None] | None = None,
    eval_every: int = 0,
    max_seconds: float = 0.0,
) -> DecoderTrainResult:
    """Train `pipe.unet` in place (its weights end as the EMA of training) on images and their embeddings,
    for `steps` steps or until `max_seconds` have passed (0 = no time limit; the learning-rate schedule ends
    with whichever comes first). Dropped conditions are replaced
    by `zero_embedding`, the negative used for guidance at sampling time. `evaluate(pipe, step)` sees the EMA
    weights every `eval_every` steps."""
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
