"""Cheap checks that a model spec can be loaded on this machine, made before a build touches the atlas: the
architecture and pretrained tag are ones open_clip knows, the weights are in the local cache (or may be
downloaded), a folder holds what its loader reads. Nothing is downloaded and no model is built; each check
returns the model's embedding width where its config says it (None where it does not).

A spec that passes can still fail to load (a corrupt weights file): the loader says so then, in one line.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

from atlas.builtin import SHIPPED_MODELS, builtin_model_dir
from atlas.errors import AtlasError

_CLIP_WEIGHTS = ("*.safetensors", "*.bin", "*.pth")  # what open_clip's local-dir: loader looks for


def _builtin_dir(spec: str) -> Path:
    if spec not in SHIPPED_MODELS:  # made on first use: their makers register when their modules are imported
        from atlas.models import clip, renderer  # noqa: F401 (torch: imported only for these)
    return builtin_model_dir(spec)


def hub_offline() -> bool:
    """Whether the Hugging Face hub may not be reached (HF_HUB_OFFLINE, as huggingface_hub reads it)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _offline_text() -> str:
    return f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '1')}"


def _known(values: list[str], got: str) -> str:
    close = difflib.get_close_matches(got, values, n=5, cutoff=0.5)
    return f"did you mean {', '.join(close)}?" if close else f"{len(values)} known"


def check_clip(spec: str, key: str = "models.clip") -> int | None:
    """Refuse a CLIP spec that cannot load here (AtlasError); its embedding width where known."""
    if spec.startswith("builtin:"):
        return _check_clip_folder(_builtin_dir(spec), key, spec)
    if spec.startswith("open_clip:"):
        return _check_open_clip(spec, key)
    if Path(spec).is_dir():
        return _check_clip_folder(Path(spec), key, spec)
    raise AtlasError(
        f"{key} = {spec!r}: no such model folder, and not an open_clip:<arch>/<pretrained> spec or builtin:*"
    )


def _check_clip_folder(path: Path, key: str, spec: str) -> int | None:
    config = path / "open_clip_config.json"
    if not config.is_file():
        raise AtlasError(f"{key} = {spec!r}: {path} is not an open_clip model folder (no open_clip_config.json)")
    if not any(any(path.glob(pattern)) for pattern in _CLIP_WEIGHTS):
        raise AtlasError(f"{key} = {spec!r}: {path} has no weights file (.safetensors, .bin or .pth)")
    try:
        width = json.loads(config.read_text())["model_cfg"]["embed_dim"]
    except (ValueError, KeyError, TypeError):
        raise AtlasError(f"{key} = {spec!r}: {config} is not a valid open_clip config") from None
    return int(width)


def _check_open_clip(spec: str, key: str) -> int:
    import open_clip

    arch, _, pretrained = spec.removeprefix("open_clip:").partition("/")
    if arch not in open_clip.list_models():
        raise AtlasError(
            f"{key} = {spec!r}: open_clip has no architecture {arch!r} "
            f"({_known(open_clip.list_models(), arch)}; see open_clip.list_models())"
        )
    width = int(open_clip.get_model_config(arch)["embed_dim"])
    if not pretrained:
        return width  # random weights, as open_clip makes them
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        if Path(pretrained).is_file():
            return width
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise AtlasError(
            f"{key} = {spec!r}: open_clip knows no pretrained tag {pretrained!r} for {arch} and it is no file "
            f"(tags for {arch}: {', '.join(tags) or 'none'})"
        )
    missing = _uncached(cfg)
    if missing and hub_offline():
        raise AtlasError(
            f"{key} = {spec!r}: weights not in the local cache ({missing}) and {_offline_text()} (download them "
            f"once with `python -c \"import open_clip; open_clip.create_model('{arch}', pretrained='{pretrained}')\"` "
            "where the network is reachable, or unset HF_HUB_OFFLINE)"
        )
    return width


def _uncached(cfg: dict[str, Any]) -> str | None:
    """Where open_clip would look for these weights, if they are not there yet (None when they are); the
    order is open_clip's own (`open_clip.pretrained.download_pretrained`): a file, the hub, a URL."""
    if "file" in cfg:
        return None if Path(cfg["file"]).is_file() else cfg["file"]
    if cfg.get("hf_hub"):
        from huggingface_hub import constants, try_to_load_from_cache
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo, filename = os.path.split(cfg["hf_hub"])
        names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        if any(isinstance(try_to_load_from_cache(repo, name), str) for name in names):
            return None
        return f"hub {repo} in {constants.HF_HUB_CACHE}"
    url = cfg.get("url", "")
    target = Path("~/.cache/clip").expanduser() / os.path.basename(url)
    return None if target.is_file() else str(target)


def check_decoder(spec: str, key: str = "models.decoder") -> int | None:
    """Refuse a decoder spec that cannot load here (AtlasError); the embedding width it takes where known."""
    if spec.startswith("builtin:"):
        return _check_decoder_folder(_builtin_dir(spec), key, spec)
    if Path(spec).exists():
        return _check_decoder_folder(Path(spec), key, spec)
    from huggingface_hub import try_to_load_from_cache

    try:
        index = try_to_load_from_cache(spec, "model_index.json")
    except ValueError:  # not a hub id either (huggingface_hub's HFValidationError)
        raise AtlasError(f"{key} = {spec!r}: no such folder, and not a Hugging Face hub model id") from None
    if isinstance(index, str):
        unet = try_to_load_from_cache(spec, "unet/config.json")
        return _width(Path(unet)) if isinstance(unet, str) else None
    if hub_offline():
        raise AtlasError(
            f"{key} = {spec!r}: no such folder, and not in the local Hugging Face cache with {_offline_text()} "
            f"(download it once with `huggingface-cli download {spec}` where the network is reachable, or unset "
            "HF_HUB_OFFLINE)"
        )
    return None


def _check_decoder_folder(path: Path, key: str, spec: str) -> int | None:
    index = path / "model_index.json"
    if not index.is_file():
        raise AtlasError(f"{key} = {spec!r}: not a diffusers pipeline folder (no model_index.json)")
    try:
        components = json.loads(index.read_text())
    except ValueError:
        raise AtlasError(f"{key} = {spec!r}: {index} is not valid JSON") from None
    for name, value in components.items():
        loaded = isinstance(value, list) and len(value) == 2 and value[0] is not None
        if not name.startswith("_") and loaded and not (path / name).is_dir():
            raise AtlasError(f"{key} = {spec!r}: model_index.json names a component {name!r} that has no folder")
    return _width(path / "unet" / "config.json")


def _width(unet_config: Path) -> int | None:
    try:
        width = json.loads(unet_config.read_text()).get("encoder_hid_dim")
    except (OSError, ValueError, AttributeError):
        return None
    return int(width) if isinstance(width, int) else None


def check_widths(clip: str, clip_width: int | None, decoder: str, decoder_width: int | None) -> None:
    """Refuse a decoder that takes embeddings of another width than the CLIP model gives."""
    if clip_width is not None and decoder_width is not None and clip_width != decoder_width:
        raise AtlasError(
            f"models.decoder = {decoder!r} takes {decoder_width}-d image embeddings but models.clip = {clip!r} "
            f"gives {clip_width}-d ones (use a decoder trained on this CLIP model's image embeddings)"
        )
