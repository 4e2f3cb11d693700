"""The renderer: a diffusion decoder conditioned on CLIP image embeddings (diffusers' KandinskyV22Pipeline).

Specs: a diffusers model id (`kandinsky-community/kandinsky-2-2-decoder`, needs the network or a filled
hub cache), a local folder written by `save_pretrained`, or `builtin:<name>` (a model this project makes or
ships, resolved by the registry `atlas.builtin`; this module registers `builtin:random-decoder`), saved and
loaded through the same `from_pretrained` path. A folder whose model_index.json names `ToyDecoderPipeline`
loads the toy world's decoder (`atlas.models.toy_decoder`), which has KandinskyV22Pipeline's call signature.

Batches use one seeded `torch.Generator` per image, so every image in a batch is reproducible on its own
(a single generator for the whole batch would make only the first image independent of its batch-mates).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atlas.builtin import builtin_model_dir, register_model
from atlas.errors import AtlasError
from atlas.models.clip import RANDOM_CLIP_CFG
from atlas.models.device import resolve_device


class Renderer:
    """Diffuse images from CLIP image embeddings."""

    def __init__(self, pipe, device: torch.device, spec: str):
        self.pipe = pipe
        self.device = device
        self.spec = spec
        self.pipe.set_progress_bar_config(disable=True)
        self.dim = int(pipe.unet.config.encoder_hid_dim)

    @torch.inference_mode()
    def render(
        self,
        image_embeds: np.ndarray,
        negative_embeds: np.ndarray,
        seeds: list[int],
        steps: int,
        guidance_scale: float,
        size: int,
        latents: torch.Tensor | None = None,
    ) -> list[Image.Image]:
        """One image per row of `image_embeds` [B, d] in one pipeline call; `negative_embeds` is [d] or [B, d];
        `latents` (optional, [B, ...]) replace the seeded starting noise."""
        n = len(image_embeds)
        if len(seeds) != n:
            raise ValueError("one seed per embedding")
        dtype = self.pipe.unet.dtype
        pos = torch.tensor(np.asarray(image_embeds, dtype=np.float32)).to(self.device, dtype)
        neg = torch.tensor(np.asarray(negative_embeds, dtype=np.float32)).to(self.device, dtype)
        if neg.ndim == 1:
            neg = neg.expand(n, -1)
        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        out = self.pipe(
            image_embeds=pos,
            negative_image_embeds=neg,
            height=size,
            width=size,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=generators,
            latents=None if latents is None else latents.to(self.device, dtype),
            output_type="pil",
        )
        return list(out.images)

    def initial_noise(self, seeds: list[int], size: int) -> torch.Tensor:
        """The starting noise the pipeline would draw for these seeds at this size ([B, C, h, w], float32),
        so that noise can be interpolated and passed back as `latents`."""
        shape = self.latent_shape(size)
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])

    def latent_shape(self, size: int) -> tuple[int, int, int]:
        """(channels, height, width) of the pipeline's starting noise for `size`-pixel images."""
        if hasattr(self.pipe, "latent_shape"):  # the toy decoder: its latents are folded pixels
            return self.pipe.latent_shape(size, size)
        channels = int(self.pipe.unet.config.in_channels)
        movq = self.pipe.movq
        factor = 2 ** (len(movq.config.block_out_channels) - 1)
        side = -(-size // factor**2) * factor  # Kandinsky rounds the latent side up to a multiple of the factor
        return channels, side, side


def load_renderer(spec: str, device: str = "auto", half_precision: bool = True) -> Renderer:
    """Load a renderer from a spec string (see the module docstring): fp16 weights on a GPU when
    `half_precision`, float32 on a CPU."""
    from diffusers import KandinskyV22Pipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    dev = resolve_device(device)
    source: str | Path = spec
    if spec.startswith("builtin:"):
        source = builtin_model_dir(spec)
    elif Path(spec).exists() and not (Path(spec) / "model_index.json").exists():
        raise AtlasError(f"models.decoder = {spec!r}: not a diffusers pipeline folder (no model_index.json)")
    dtype = torch.float16 if dev.type == "cuda" and half_precision else torch.float32
    pipeline_class = KandinskyV22Pipeline
    index = Path(source) / "model_index.json"
    if index.exists() and json.loads(index.read_text()).get("_class_name") == "ToyDecoderPipeline":
        from atlas.models.toy_decoder import ToyDecoderPipeline  # diffusers: loaded only here

        pipeline_class = ToyDecoderPipeline
    try:
        pipe = pipeline_class.from_pretrained(str(source), dtype=dtype)
    except (OSError, ValueError) as e:  # unknown id, no network (OSError/EnvironmentError), wrong folder
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise AtlasError(
            f"models.decoder = {spec!r}: diffusers could not load it ({type(e).__name__}: {first[:200]})"
        ) from None
    pipe.to(dev)
    return Renderer(pipe, dev, spec)


def make_random_decoder(out: Path, emb_dim: int = RANDOM_CLIP_CFG["embed_dim"]) -> None:
    """Write `builtin:random-decoder` (seeded random weights, conditioned on `emb_dim`-d embeddings) into `out`."""
    from diffusers import DDIMScheduler, KandinskyV22Pipeline, UNet2DConditionModel, VQModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=8,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        encoder_hid_dim_type="image_proj",
        encoder_hid_dim=emb_dim,
        addition_embed_type="image",
        cross_attention_dim=64,
        attention_head_dim=16,
        resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
        norm_num_groups=8,
    ).eval()
    movq = VQModel(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
        up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        norm_type="spatial",
        num_vq_embeddings=256,
        vq_embed_dim=4,
    ).eval()
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
        timestep_spacing="leading",
    )
    KandinskyV22Pipeline(unet=unet, scheduler=scheduler, movq=movq).save_pretrained(out)


register_model("builtin:random-decoder", make_random_decoder)
# conditioned on the 1280-d embeddings of ViT-bigG-14, as Kandinsky 2.2's decoder is (scale benchmarks)
register_model("builtin:random-decoder-1280", functools.partial(make_random_decoder, emb_dim=1280))
