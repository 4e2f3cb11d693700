"""Steering in CLIP image-embedding space: add a contrastive direction to an embedding.

Directions are differences of L2-normalised text embeddings, while image embeddings are raw (the decoder's
input), so the scale is relative to the embedding's own norm: scale 0 is the unchanged image.
"""

from __future__ import annotations

import numpy as np


def add_direction(embedding: np.ndarray, direction: np.ndarray, scale: float) -> np.ndarray:
    """embedding + scale * ||embedding|| * direction (row-wise for a batch [B, d])."""
    e = np.asarray(embedding, dtype=np.float32)
    norm = np.linalg.norm(e, axis=-1, keepdims=True)
    return (e + scale * norm * np.asarray(direction, dtype=np.float32)).astype(np.float32)


def direction_strip(embedding: np.ndarray, direction: np.ndarray, scales: list[float]) -> np.ndarray:
    """[len(scales), d]: the embedding moved along `direction` by each scale (the middle scale 0 is unchanged)."""
    return np.stack([add_direction(embedding, direction, s) for s in scales])
