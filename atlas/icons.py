"""Feature icons by the "template scaled to 1/5" method, and their fidelity.

For feature f: SAE-encode a neutral template's embedding, multiply all its activations by
`template_scale` (1/5), set activation f to `feature_scale`, decode back to CLIP space (optionally adding
the template's SAE error back), and diffuse an image from that embedding. Fidelity: re-embed the icon,
SAE-encode it, and take the rank of f among the icon's activations (1 = f is the strongest feature).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atlas.errors import AtlasError
from atlas.models.clip import ClipEmbedder
from atlas.models.sae import SparseAutoencoder
from atlas.store import AtlasStore


def template_embedding(embedder: ClipEmbedder, template: str) -> np.ndarray:
    """The CLIP embedding [d] of the template: `gray` (a flat mid-gray image) or an image file."""
    if template == "gray":
        img = Image.new("RGB", (embedder.geometry.size,) * 2, (128, 128, 128))
    else:
        path = Path(template)
        try:
            img = Image.open(path)
            img.load()
        except (OSError, ValueError) as e:
            raise AtlasError(f"render.template = {template!r}: cannot read this image ({e})") from None
    return embedder.encode_images([img])[0]


@torch.inference_mode()
def icon_embeddings(
    sae: SparseAutoencoder,
    template_bd: np.ndarray,
    feature_ids: np.ndarray,
    template_scale: float,
    feature_scale: float,
    keep_error: bool = False,
) -> np.ndarray:
    """CLIP-space embeddings [len(feature_ids), d], one per target feature."""
    t = torch.as_tensor(np.asarray(template_bd, dtype=np.float32)).reshape(1, -1)
    a = sae.encode(t)
    error = t - sae.decode(a) if keep_error else torch.zeros_like(t)
    ids = torch.as_tensor(np.asarray(feature_ids, dtype=np.int64))
    acts = (a * template_scale).repeat(len(ids), 1)
    acts[torch.arange(len(ids)), ids] = feature_scale
    return (sae.decode(acts) + error).numpy().astype(np.float32)


@torch.inference_mode()
def fidelity_ranks(sae: SparseAutoencoder, icon_embeddings_bd: np.ndarray, feature_ids: np.ndarray) -> np.ndarray:
    """Rank (1 = top) of each target feature among the SAE activations of its re-embedded icon."""
    a = sae.encode(torch.as_tensor(np.asarray(icon_embeddings_bd, dtype=np.float32)))
    ids = torch.as_tensor(np.asarray(feature_ids, dtype=np.int64))
    target = a[torch.arange(len(ids)), ids]
    return (1 + (a > target[:, None]).sum(dim=1)).numpy().astype(np.int32)


def icon_fidelity(store: AtlasStore) -> dict[str, float]:
    """Over the icons table: how many icons, and the share whose own feature ranks first / in the top 5."""
    if not store.parts("icons"):
        return {}
    ranks = store.read_table("icons", ["fidelity_rank"]).column("fidelity_rank").to_numpy()
    return {"icons": len(ranks), "rank1": float(np.mean(ranks == 1)), "top5": float(np.mean(ranks <= 5))}


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
