"""Resumable checkpoints: the whole training state in one file, written atomically.

Tensors, numbers, strings, dicts and lists only, so the file loads with `torch.load(weights_only=True)`
(no arbitrary unpickling). A checkpoint written under another training config is ignored.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from atlas.models.sae.variant import SAEVariant

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(folder: Path, settings: SAEVariant, state: dict[str, Any]) -> None:
    """Write `state` (with the config that produced it) to `folder/checkpoint.pt`."""
    from atlas.store import atomic_write_bytes

    buf = io.BytesIO()
    torch.save({"train_cfg": settings.model_dump(mode="json"), **state}, buf)
    atomic_write_bytes(Path(folder) / CHECKPOINT, buf.getvalue())


def load_checkpoint(folder: Path, settings: SAEVariant) -> dict[str, Any] | None:
    """The checkpoint in `folder` if there is one written with these same settings, else None."""
    path = Path(folder) / CHECKPOINT
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("train_cfg") != settings.model_dump(mode="json"):
        return None  # another config: its state does not continue this run
    return state


def remove_checkpoint(folder: Path) -> None:
    (Path(folder) / CHECKPOINT).unlink(missing_ok=True)
