"""The registry of built-in models: `builtin:<name>` specs that the project makes or ships itself, so the
embedded default needs no download.

This module is a leaf (it imports nothing of the project but `atlas.errors`). The model modules register
their makers here when they are imported, and the loaders (`atlas.models.clip`, `atlas.models.renderer`)
resolve specs here; dependencies point one way: models and toyworld -> builtin.

Made models are created once, deterministically, in a cache folder (`$ATLAS_CACHE`, default
`~/.cache/clip-feature-atlas`) and then loaded through exactly the code path of real models. Registered:

- `builtin:random-clip` (by `atlas.models.clip`): a small open_clip ViT (embed_dim 64, 32 px), seeded random;
  `builtin:random-clip-1280` the same towers projecting to 1280-d (ViT-bigG-14's width).
- `builtin:random-decoder` (by `atlas.models.renderer`): a small Kandinsky-2.2-shaped decoder, seeded random;
  `builtin:random-decoder-1280` conditioned on 1280-d embeddings, as Kandinsky 2.2's decoder is.
- `builtin:toy-clip`, `builtin:toy-decoder`: the toy world's CLIP and decoder, trained by `atlas toy ...` and
  shipped in `atlas/toyworld/weights/` (see each folder's MODEL_CARD.md).
- The toy world's image folder, `builtin:shapes`, is made by `atlas.toyworld.builtin_images_dir`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from atlas.errors import AtlasError

BUILTIN_VERSION = 1
SHIPPED = Path(__file__).resolve().parent / "toyworld" / "weights"
_SHIPPED = {"builtin:toy-clip": "toy-clip", "builtin:toy-decoder": "toy-decoder"}
_MAKERS: dict[str, Callable[[Path], None]] = {}
SHIPPED_MODELS = frozenset(_SHIPPED)  # the built-ins that need no maker (nor its module imported)


def cache_dir() -> Path:
    """Where made built-ins are cached: `$ATLAS_CACHE`, default `~/.cache/clip-feature-atlas`."""
    return Path(os.environ.get("ATLAS_CACHE", Path.home() / ".cache" / "clip-feature-atlas"))


def cached_folder(name: str, make: Callable[[Path], None]) -> Path:
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


def register_model(spec: str, make: Callable[[Path], None]) -> None:
    """Register the maker of a built-in model: `make(folder)` writes the model into an empty folder."""
    if not spec.startswith("builtin:"):
        raise ValueError(f"{spec!r}: built-in specs start with builtin:")
    _MAKERS[spec] = make


def known_models() -> list[str]:
    """The built-in model specs known now (shipped, and registered by the model modules imported so far)."""
    return sorted([*_MAKERS, *_SHIPPED])


def builtin_model_dir(spec: str) -> Path:
    """The local folder of a built-in model: shipped with the package, or made on first use."""
    if spec in _SHIPPED:
        folder = SHIPPED / _SHIPPED[spec]
        if not folder.is_dir():
            raise AtlasError(f"{spec}: its weights are missing from {folder} (train them with `atlas toy ...`)")
        return folder
    make = _MAKERS.get(spec)
    if make is None:
        raise AtlasError(f"unknown built-in model {spec!r} (known: {', '.join(known_models())})")
    return cached_folder(spec.removeprefix("builtin:"), make)
