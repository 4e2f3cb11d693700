"""Steering in CLIP image-embedding space: add a contrastive direction, or edit SAE features and concepts.

Directions are differences of L2-normalised text embeddings, while image embeddings are raw (the decoder's
input), so the scale is relative to the embedding's own norm. Every strip is built from scales symmetric
about 0, and scale 0 is the unchanged embedding: the middle of a strip is the original image.
"""

from __future__ import annotations

import numpy as np
import torch

from atlas.models.sae.autoencoder import SparseAutoencoder


def add_direction(embedding: np.ndarray, direction: np.ndarray, scale: float) -> np.ndarray:
    """embedding + scale * ||embedding|| * direction (row-wise for a batch [B, d])."""
    e = np.asarray(embedding, dtype=np.float32)
    norm = np.linalg.norm(e, axis=-1, keepdims=True)
    return (e + scale * norm * np.asarray(direction, dtype=np.float32)).astype(np.float32)


def direction_strip(embedding: np.ndarray, direction: np.ndarray, scales: list[float]) -> np.ndarray:
    """[len(scales), d]: the embedding moved along `direction` by each scale (the middle scale 0 is unchanged)."""
    return np.stack([add_direction(embedding, direction, s) for s in scales])


def symmetric_scales(max_scale: float, n: int) -> list[float]:
    """`n` scales evenly from -max_scale to max_scale; n is made odd so the middle one is exactly 0."""
    n = max(1, n | 1)
    if n == 1:
        return [0.0]
    half = n // 2
    return [max_scale * i / half for i in range(-half, half + 1)]


@torch.inference_mode()
def sae_activations(sae: SparseAutoencoder, embedding: np.ndarray) -> np.ndarray:
    """The SAE activations [n_features] of one embedding [d]."""
    return sae.encode(torch.tensor(np.asarray(embedding, np.float32)).reshape(1, -1))[0].numpy()


@torch.inference_mode()
def edit_activations(
    sae: SparseAutoencoder,
    embedding: np.ndarray,
    *,
    scale: dict[int, float] | None = None,
    add: dict[int, float] | None = None,
    set_to: dict[int, float] | None = None,
    keep_error: bool = True,
) -> np.ndarray:
    """Change some SAE activations of `embedding` and decode: multiply (`scale`), add to (`add`, clipped at 0)
    or overwrite (`set_to`) the activations of the given features. With `keep_error` the SAE's reconstruction
    error is kept, so an empty edit returns the embedding itself; without it, the SAE's reconstruction."""
    x = np.asarray(embedding, np.float32)
    a = sae_activations(sae, x)
    edited = a.copy()
    for f, s in (scale or {}).items():
        edited[f] *= s
    for f, v in (add or {}).items():
        edited[f] = max(0.0, edited[f] + v)
    for f, v in (set_to or {}).items():
        edited[f] = v
    if keep_error:  # x + decode(edited) - decode(a): the bias and the error cancel exactly
        delta = torch.as_tensor(edited - a)[None] @ sae.W_dec / sae.cfg.input_scale
        return (x + delta[0].numpy()).astype(np.float32)
    return sae.decode(torch.as_tensor(edited)[None])[0].numpy().astype(np.float32)


def feature_strip(
    sae: SparseAutoencoder,
    embedding: np.ndarray,
    feature_id: int,
    unit: float,
    scales: list[float],
    keep_error: bool = True,
) -> np.ndarray:
    """[len(scales), d]: the feature's activation raised (or lowered) by scale x unit; scale 0 is unchanged."""
    return np.stack(
        [edit_activations(sae, embedding, add={feature_id: s * unit}, keep_error=keep_error) for s in scales]
    )


def group_scale_strip(
    sae: SparseAutoencoder, embedding: np.ndarray, feature_ids: list[int], scales: list[float], keep_error: bool = True
) -> np.ndarray:
    """[len(scales), d]: a group of features (a concept) multiplied as a unit by 1 + scale (-1 removes it,
    0 is unchanged, 1 doubles it)."""
    rows = []
    for s in scales:
        factor = max(0.0, 1.0 + s)
        rows.append(
            edit_activations(sae, embedding, scale={int(f): factor for f in feature_ids}, keep_error=keep_error)
        )
    return np.stack(rows)
