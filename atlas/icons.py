"""Feature icons by the "template scaled to 1/5" method, and their fidelity.

For feature f: SAE-encode a neutral template's embedding, multiply all its activations by
`template_scale` (1/5), set activation f to `feature_scale`, decode back to CLIP space (optionally adding
the template's SAE error back), and diffuse an image from that embedding. Fidelity: re-embed the icon,
SAE-encode it, and take the rank of f among the icon's activations (1 = f is the strongest feature).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atlas.config import RenderConfig
from atlas.errors import AtlasError
from atlas.models.clip import ClipEmbedder
from atlas.models.renderer import Renderer
from atlas.models.sae.autoencoder import SparseAutoencoder
from atlas.store import AtlasStore


def template_embedding(embedder: ClipEmbedder, template: str, prompt: str = "") -> np.ndarray:
    """The CLIP embedding [d] of the template: `gray` (a flat mid-gray image) or an image file; with a
    `prompt`, the prompt's text embedding rescaled to the norm of that image embedding (image embeddings
    are raw, and the decoder is sensitive to their norm)."""
    if template == "gray":
        img = Image.new("RGB", (embedder.geometry.size,) * 2, (128, 128, 128))
    else:
        path = Path(template)
        try:
            with Image.open(path) as opened:
                opened.load()
                img = opened.convert("RGB")
        except (OSError, ValueError) as e:
            raise AtlasError(f"render.template = {template!r}: cannot read this image ({e})") from None
    z_image = embedder.encode_images([img])[0]
    if not prompt:
        return z_image
    z_text = embedder.encode_texts([prompt])[0].astype(np.float64)
    return (z_text / max(np.linalg.norm(z_text), 1e-12) * np.linalg.norm(z_image)).astype(np.float32)


def template_label(rc: RenderConfig) -> str:
    """How an icon row names its template: gray, the image file, or prompt:<text>."""
    return f"prompt:{rc.template_prompt}" if rc.template_prompt else rc.template


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
    acts_bf, error = _scaled_template(sae, template_bd, template_scale, keep_error, len(feature_ids))
    ids = torch.as_tensor(np.asarray(feature_ids, dtype=np.int64))
    acts_bf[torch.arange(len(ids)), ids] = feature_scale
    return (sae.decode(acts_bf) + error).numpy().astype(np.float32)


@torch.inference_mode()
def concept_icon_embeddings(
    sae: SparseAutoencoder,
    template_bd: np.ndarray,
    members: Sequence[tuple[Sequence[int], Sequence[float]]],
    template_scale: float,
    feature_scale: float,
    keep_error: bool = False,
) -> np.ndarray:
    """The icon method for groups of features (an image's concepts): one embedding [len(members), d] per
    (feature ids, activations) group, the group's features set to their activations rescaled so that the
    strongest one is `feature_scale`, on the scaled template."""
    acts_bf, error = _scaled_template(sae, template_bd, template_scale, keep_error, len(members))
    for row, (ids, values) in enumerate(members):
        values_g = np.asarray(values, dtype=np.float32)
        acts_bf[row, torch.as_tensor(np.asarray(ids, dtype=np.int64))] = torch.from_numpy(
            values_g * (feature_scale / max(float(values_g.max()), 1e-12))
        )
    return (sae.decode(acts_bf) + error).numpy().astype(np.float32)


def _scaled_template(
    sae: SparseAutoencoder, template_bd: np.ndarray, template_scale: float, keep_error: bool, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The template's SAE activations times `template_scale`, n copies [n, F], and the reconstruction error
    to add back (zero unless `keep_error`)."""
    t = torch.as_tensor(np.asarray(template_bd, dtype=np.float32)).reshape(1, -1)
    a = sae.encode(t)
    error = t - sae.decode(a) if keep_error else torch.zeros_like(t)
    return (a * template_scale).repeat(n, 1), error


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


class IconRenderer:
    """Everything one worker needs to render icons: the CLIP model (template, negative, fidelity), the
    decoder and the SAE. `render` draws many features per pipeline call (`rc.batch_size`)."""

    def __init__(self, embedder: ClipEmbedder, renderer: Renderer, sae: SparseAutoencoder, rc: RenderConfig):
        self.embedder, self.renderer, self.sae, self.rc = embedder, renderer, sae, rc
        self.template = template_embedding(embedder, rc.template, rc.template_prompt)
        self.negative = embedder.zero_embedding() if rc.negative == "zero" else self.template

    def seeds(self, feature_ids: np.ndarray) -> list[int]:
        """A fixed seed per feature, so an icon does not depend on its batch-mates."""
        return [self.rc.seed + int(f) for f in feature_ids]

    def render(self, feature_ids: np.ndarray, batch_size: int | None = None) -> tuple[list[Image.Image], np.ndarray]:
        """Icons of `feature_ids` and their fidelity ranks."""
        rc = self.rc
        fids = np.asarray(feature_ids, dtype=np.int64)
        embeds = icon_embeddings(self.sae, self.template, fids, rc.template_scale, rc.feature_scale, rc.keep_error)
        seeds = self.seeds(fids)
        step = batch_size or rc.batch_size
        images: list[Image.Image] = []
        for i in range(0, len(fids), step):
            images += self.renderer.render(
                embeds[i : i + step], self.negative, seeds[i : i + step], rc.steps, rc.guidance_scale, rc.size
            )
        ranks = fidelity_ranks(self.sae, self.embedder.encode_images(images), fids) if images else np.zeros(0, np.int32)
        return images, ranks


def icon_parameters(rc: RenderConfig, n: int) -> dict[str, list]:
    """The icon-table columns that record how each of `n` icons was made (besides feature_id, seed, image)."""
    return {
        "feature_scale": [rc.feature_scale] * n,
        "steps": [rc.steps] * n,
        "template": [template_label(rc)] * n,
        "template_scale": [rc.template_scale] * n,
        "negative": [rc.negative] * n,
        "keep_error": [rc.keep_error] * n,
        "guidance_scale": [rc.guidance_scale] * n,
        "size": [rc.size] * n,
    }
