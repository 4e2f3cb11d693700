"""The CLIP embedder: an open_clip model loaded by a spec string, giving raw image and text embeddings.

Specs:
- `open_clip:<arch>/<pretrained>`, e.g. `open_clip:ViT-bigG-14/laion2b_s39b_b160k` (the image space of the
  Kandinsky 2.2 decoder; downloads from the hub, so only where the network allows it);
- a local directory in open_clip's own format (`open_clip_config.json` + `open_clip_model.safetensors`),
  written by `save_local_clip`, loaded through open_clip's `local-dir:` factory path;
- `builtin:<name>`: a model this project makes or ships (the registry `atlas.builtin`; this module registers
  `builtin:random-clip`).

Embeddings are returned raw (not L2-normalised): the Kandinsky 2.2 decoder takes the image encoder's raw
`image_embeds`. Preprocessing is split in two so that Ray CPU tasks can do the heavy part: `prepare_image`
(PIL resize + centre crop to uint8, on any CPU) and `encode_pixels` (normalise and run the tower, on the
model's device).
"""

from __future__ import annotations

import functools
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError

from atlas.builtin import builtin_model_dir, register_model
from atlas.errors import AtlasError
from atlas.models.device import autocast, resolve_device


def clip_preprocess_cfg(size: int) -> dict:
    """open_clip's preprocess config for a model trained from scratch here (OpenAI's mean and std)."""
    return {
        "size": size,
        "mode": "RGB",
        "mean": (0.48145466, 0.4578275, 0.40821073),
        "std": (0.26862954, 0.26130258, 0.27577711),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }


@dataclass(frozen=True, slots=True)
class ImageGeometry:
    """What the CPU side needs to prepare pixels for this model."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def prepare_image(img: Image.Image, size: int) -> np.ndarray:
    """Resize the shortest side to `size` (bicubic) and centre-crop: uint8 HWC, what open_clip's eval
    transform does before ToTensor/Normalize."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    if (w, h) != (size, size):
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


class ClipEmbedder:
    """An open_clip model on one device, with `encode_pixels`, `encode_images` and `encode_texts`."""

    def __init__(self, model: torch.nn.Module, tokenizer, geometry: ImageGeometry, device: torch.device, spec: str):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.geometry = geometry
        self.device = device
        self.spec = spec
        with torch.inference_mode():
            probe = torch.zeros(1, 3, geometry.size, geometry.size, device=device)
            self.dim = int(self.model.encode_image(probe).shape[-1])
        self._mean = torch.tensor(geometry.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(geometry.std, device=device).view(1, 3, 1, 1)

    @torch.inference_mode()
    def encode_pixels(self, pixels_bhwc: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 [B, H, W, 3] (from `prepare_image`) -> float32 [B, d] raw image embeddings."""
        x = torch.as_tensor(pixels_bhwc).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - self._mean) / self._std
        return self.encode_normalized(x)

    @torch.inference_mode()
    def encode_normalized(self, x_bchw: torch.Tensor) -> np.ndarray:
        """Already-normalised pixels [B, 3, S, S] -> float32 [B, d]."""
        with autocast(self.device):
            z = self.model.encode_image(x_bchw.to(self.device))
        return z.float().cpu().numpy()

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        """PIL images -> float32 [B, d] raw image embeddings."""
        return self.encode_pixels(np.stack([prepare_image(im, self.geometry.size) for im in images]))

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Strings -> float32 [B, d] raw text embeddings."""
        tokens = self.tokenizer(texts).to(self.device)
        with autocast(self.device):
            z = self.model.encode_text(tokens)
        return z.float().cpu().numpy()

    def zero_embedding(self) -> np.ndarray:
        """The image tower applied to an all-zeros (normalised) pixel tensor: Kandinsky 2.2's negative
        embedding (`KandinskyV22PriorPipeline.get_zero_embed`), not a vector of zeros."""
        size = self.geometry.size
        return self.encode_normalized(torch.zeros(1, 3, size, size))[0]


def load_embedder(spec: str, device: str = "auto") -> ClipEmbedder:
    """Load a CLIP embedder from a spec string (see the module docstring)."""
    import open_clip

    dev = resolve_device(device)
    if spec.startswith("builtin:"):
        spec_dir = builtin_model_dir(spec)
        return _load_local(spec_dir, dev, spec)
    if spec.startswith("open_clip:"):
        arch, _, pretrained = spec.removeprefix("open_clip:").partition("/")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None)
        except (RuntimeError, OSError, ValueError, pickle.UnpicklingError, SafetensorError) as e:  # unknown arch/tag
            raise AtlasError(f"models.clip = {spec!r}: open_clip could not load it ({_one_line(e)})") from None
        tokenizer = open_clip.get_tokenizer(arch)
        return ClipEmbedder(model, tokenizer, geometry_of(model), dev, spec)
    path = Path(spec)
    if path.is_dir():
        return _load_local(path, dev, spec)
    raise AtlasError(f"models.clip = {spec!r}: not an open_clip:<arch>/<pretrained> spec, builtin:*, or a model folder")


def _load_local(path: Path, device: torch.device, spec: str) -> ClipEmbedder:
    import open_clip

    if not (path / "open_clip_config.json").exists():
        raise AtlasError(f"{path}: not an open_clip model folder (no open_clip_config.json)")
    try:
        model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{path}")
        tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError, SafetensorError) as e:
        raise AtlasError(f"{path}: open_clip could not load this model folder ({_one_line(e)})") from None
    return ClipEmbedder(model, tokenizer, geometry_of(model), device, spec)


def geometry_of(model: torch.nn.Module) -> ImageGeometry:
    """Input size, mean and std from an open_clip model's preprocess config."""
    cfg = model.visual.preprocess_cfg
    size = cfg["size"]
    size = size[0] if isinstance(size, (tuple, list)) else size
    return ImageGeometry(int(size), tuple(cfg["mean"]), tuple(cfg["std"]))


def save_local_clip(model: torch.nn.Module, model_cfg: dict, out_dir: Path) -> None:
    """Save an open_clip model in the folder format that `load_embedder` (and open_clip's `local-dir:`) reads."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"model_cfg": model_cfg, "preprocess_cfg": model.visual.preprocess_cfg}
    (out_dir / "open_clip_config.json").write_text(json.dumps(cfg, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "open_clip_model.safetensors"))


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def clip_image_size(spec: str) -> int:
    """The model's input size, read from its config without loading weights (for the CPU decode tasks)."""
    import open_clip

    if spec.startswith("builtin:"):
        spec = str(builtin_model_dir(spec))
    if spec.startswith("open_clip:"):
        cfg = open_clip.get_model_config(spec.removeprefix("open_clip:").partition("/")[0])
        if cfg is None:
            raise AtlasError(f"models.clip = {spec!r}: open_clip has no model of that name")
        size = cfg["vision_cfg"]["image_size"]
    else:
        path = Path(spec) / "open_clip_config.json"
        if not path.exists():
            raise AtlasError(f"models.clip = {spec!r}: not an open_clip model folder (no open_clip_config.json)")
        cfg = json.loads(path.read_text())
        size = cfg.get("preprocess_cfg", {}).get("size") or cfg["model_cfg"]["vision_cfg"]["image_size"]
    return int(size[0] if isinstance(size, (list, tuple)) else size)


RANDOM_CLIP_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def make_random_clip(out: Path, embed_dim: int = 64) -> None:
    """Write `builtin:random-clip` (seeded random weights; `embed_dim` wide embeddings) into `out`."""
    import open_clip

    torch.manual_seed(0)
    cfg = {**RANDOM_CLIP_CFG, "embed_dim": embed_dim}
    model = open_clip.CLIP(**cfg)
    model.visual.preprocess_cfg = clip_preprocess_cfg(cfg["vision_cfg"]["image_size"])
    save_local_clip(model, cfg, out)


register_model("builtin:random-clip", make_random_clip)
# the same tiny towers projecting to the 1280-d embeddings of ViT-bigG-14 (scale benchmarks)
register_model("builtin:random-clip-1280", functools.partial(make_random_clip, embed_dim=1280))
