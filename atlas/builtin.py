"""Built-in models and data that the project makes itself, so the embedded default needs no download.

Each is created once, deterministically, in a cache folder (`$ATLAS_CACHE`, default
`~/.cache/clip-feature-atlas`) and then loaded through exactly the code path of real models: open_clip's
`local-dir:` factory for CLIP, diffusers' `from_pretrained` for the decoder.

- `builtin:random-clip`: a small open_clip ViT (embed_dim 64, 32 px) with seeded random weights.
- `builtin:random-decoder`: a small Kandinsky-2.2-shaped decoder (UNet2DConditionModel with image-embedding
  conditioning + a spatially-normalised VQ "MoVQ" + DDIM), seeded random weights, conditioned on 64-d embeddings.
- `builtin:shapes`: the toy world's image folder (`atlas.toyworld`).
- `builtin:toy-clip`, `builtin:toy-decoder`: the toy world's CLIP and decoder, trained by `atlas toy ...` and
  shipped in `atlas/toyworld/weights/` (see each folder's MODEL_CARD.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from atlas.errors import AtlasError

BUILTIN_VERSION = 1

RANDOM_CLIP_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def cache_dir() -> Path:
    return Path(os.environ.get("ATLAS_CACHE", Path.home() / ".cache" / "clip-feature-atlas"))


def _cached(name: str, make: Callable[[Path], None]) -> Path:
    """The folder `name` in the cache, made by `make(tmp_dir)` and renamed into place if missing."""
    final = cache_dir() / f"v{BUILTIN_VERSION}" / name
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{name}."))
    try:
        make(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process made it first
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _make_random_clip(out: Path) -> None:
    import open_clip
    import torch

    from atlas.models.clip import clip_preprocess_cfg, save_local_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(**RANDOM_CLIP_CFG)
    model.visual.preprocess_cfg = clip_preprocess_cfg(RANDOM_CLIP_CFG["vision_cfg"]["image_size"])
    save_local_clip(model, RANDOM_CLIP_CFG, out)


def _make_random_decoder(out: Path) -> None:
    import torch
    from diffusers import DDIMScheduler, KandinskyV22Pipeline, UNet2DConditionModel, VQModel

    torch.manual_seed(0)
    emb_dim = RANDOM_CLIP_CFG["embed_dim"]
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


_MODELS = {"builtin:random-clip": _make_random_clip, "builtin:random-decoder": _make_random_decoder}
SHIPPED = Path(__file__).resolve().parent / "toyworld" / "weights"
_SHIPPED = {"builtin:toy-clip": "toy-clip", "builtin:toy-decoder": "toy-decoder"}


def builtin_model_dir(spec: str) -> Path:
    """The local folder of a built-in model: shipped with the package, or made on first use."""
    if spec in _SHIPPED:
        folder = SHIPPED / _SHIPPED[spec]
        if not folder.is_dir():
            raise AtlasError(f"{spec}: its weights are missing from {folder} (train them with `atlas toy ...`)")
        return folder
    make = _MODELS.get(spec)
    if make is None:
        known = ", ".join(sorted([*_MODELS, *_SHIPPED]))
        raise AtlasError(f"unknown built-in model {spec!r} (known: {known})")
    return _cached(spec.removeprefix("builtin:"), make)


def builtin_images_dir(spec: str, n_images: int, image_size: int, seed: int) -> Path:
    """The image folder of a built-in dataset (`builtin:shapes`), made on first use."""
    if spec != "builtin:shapes":
        raise AtlasError(f"data.source = {spec!r}: unknown built-in dataset (known: builtin:shapes)")
    from atlas.toyworld import write_world

    name = f"shapes-n{n_images}-s{image_size}-seed{seed}"
    return _cached(name, lambda out: write_world(out, n_images, image_size, seed)) / "images"
