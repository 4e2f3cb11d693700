"""Contrastive text directions: "a {medium} of a {word} {subject}" against the same prompt with the opposite
word, over every medium x subject; the direction is the mean difference of the L2-normalised CLIP text
embeddings. Each direction is mapped onto the SAE by cosine with the decoder directions."""

from __future__ import annotations

import numpy as np
import torch

from atlas.config import DirectionsConfig
from atlas.models.clip import ClipEmbedder
from atlas.models.sae.autoencoder import SparseAutoencoder


def prompt_pairs(positive: str, negative: str, cfg: DirectionsConfig) -> list[tuple[str, str]]:
    """(positive prompt, negative prompt) for every medium x subject."""
    return [
        (
            cfg.template.format(medium=m, word=positive, subject=s),
            cfg.template.format(medium=m, word=negative, subject=s),
        )
        for m in cfg.mediums
        for s in cfg.subjects
    ]


def _normalise(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)


def contrastive_direction(embedder: ClipEmbedder, pairs: list[tuple[str, str]]) -> np.ndarray:
    """Mean over pairs of normalise(text(positive)) - normalise(text(negative)), float32 [d]."""
    pos = _normalise(embedder.encode_texts([p for p, _ in pairs]).astype(np.float64))
    neg = _normalise(embedder.encode_texts([n for _, n in pairs]).astype(np.float64))
    return (pos - neg).mean(axis=0).astype(np.float32)


def aligned_features(sae: SparseAutoencoder, vector: np.ndarray, k: int) -> list[dict[str, float]]:
    """The k features whose decoder direction has the largest cosine with `vector`."""
    w = sae.W_dec.detach().double()
    v = torch.as_tensor(vector, dtype=torch.float64)
    cos = (w @ v) / (w.norm(dim=1).clamp_min(1e-12) * v.norm().clamp_min(1e-12))
    top = torch.topk(cos, min(k, len(cos)))
    return [{"feature_id": int(i), "cosine": float(c)} for c, i in zip(top.values, top.indices, strict=True)]
