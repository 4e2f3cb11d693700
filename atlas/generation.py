"""Generation over an atlas: steer, group into concepts, interpolate, and render the result as a strip.

The models come from a `ModelSession` (`atlas.session`: the atlas's CLIP, SAE, decoder and labels, each
loaded on first use). The functions below are what `atlas steer`, `atlas concepts`, `atlas interpolate` and
the viewer call; each returns a `Strip`: the rendered frames, a label per frame and the embeddings they came from.
Every frame of a strip is rendered with the same seed, so only the embedding changes along it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from atlas.concepts import Concept, image_concepts, without_concepts
from atlas.errors import AtlasError
from atlas.interpolation import interpolate, text_diff, text_diff_strip
from atlas.session import ModelSession
from atlas.steering import direction_strip, feature_strip, group_scale_strip


@dataclass
class Strip:
    """Rendered frames, a label per frame, the embeddings [frames, d] they came from, and notes."""

    images: list[Image.Image]
    labels: list[str]
    embeddings: np.ndarray
    notes: list[str] = field(default_factory=list)

    def to_image(self, tile: int = 128) -> Image.Image:
        """The frames side by side, each upscaled to `tile` px, with its label underneath."""
        return strip_image(self.images, self.labels, tile)

    def save(self, path: Path, tile: int = 128) -> Path:
        """Write the strip as a PNG (AtlasError, one line, if it cannot be written)."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.to_image(tile).save(path, format="PNG")
        except OSError as e:
            raise AtlasError(f"{path}: cannot write the strip here ({e.strerror or e})") from None
        return path


def strip_image(images: list[Image.Image], labels: list[str], tile: int = 128) -> Image.Image:
    """Frames side by side (nearest-neighbour upscaled, so small renders stay crisp) with labels below."""
    gap, text_h = 4, 14
    canvas = Image.new("RGB", (len(images) * (tile + gap) + gap, tile + text_h + 2 * gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (im, label) in enumerate(zip(images, labels, strict=True)):
        x = gap + i * (tile + gap)
        canvas.paste(im.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST), (x, gap))
        draw.text((x, gap + tile + 1), label[: tile // 6], fill=(0, 0, 0))
    return canvas


def _scale_label(s: float) -> str:
    return "original" if s == 0 else f"{s:+.2g}"


def steer(
    session: ModelSession,
    image: str | int | np.ndarray,
    *,
    direction: str | None = None,
    feature: int | None = None,
    concept: int | None = None,
    concept_along: str | None = None,
    scales: list[float],
    keep_error: bool = True,
    min_share: float = 0.1,
    seed: int = 0,
) -> Strip:
    """A strip of `image` steered by exactly one of: a stored direction (added with scale x the embedding's
    norm), a feature (activation raised by scale x its max activation), or a concept of the image (its
    features multiplied by 1 + scale), given by number or as the concept most aligned with a stored direction
    (`concept_along`, e.g. the colour concept via red-blue). Scale 0, the middle of a symmetric strip, is the
    unchanged image."""
    if sum(x is not None for x in (direction, feature, concept, concept_along)) != 1:
        raise AtlasError("steer: give exactly one of --direction, --feature, --concept, --concept-along")
    z = session.embedding_of(image) if not isinstance(image, np.ndarray) else image
    if direction is not None:
        rows = direction_strip(z, session.direction(direction), scales)
        what = f"direction {direction}"
    elif feature is not None:
        unit = session.feature_unit(feature)
        rows = feature_strip(session.sae, z, feature, unit, scales, keep_error)
        label = session.labels.get(feature)
        what = f"feature {feature}{f' ({label})' if label else ''} (step {unit:.3g} = its max activation)"
    else:
        concepts = image_concepts(session.sae, z, min_share=min_share, labels=session.labels)
        if not concepts:
            raise AtlasError("this image has no active SAE features, hence no concepts")
        if concept_along is not None:
            concept = concept_along_direction(session, concepts, concept_along).concept_id
        if not 0 <= concept < len(concepts):
            raise AtlasError(f"concept {concept}: this image has concepts 0..{len(concepts) - 1}")
        c = concepts[concept]
        rows = group_scale_strip(session.sae, z, list(c.feature_ids), scales, keep_error)
        what = f"concept {concept} ({c.label}; features {', '.join(map(str, c.feature_ids))}) x (1 + scale)"
    images = session.render(rows, seed)
    labels = [_scale_label(s) for s in scales]
    return Strip(images, labels, rows, [f"steered by {what} at scales {', '.join(f'{s:g}' for s in scales)}"])


def concept_along_direction(session: ModelSession, concepts: list[Concept], direction: str) -> Concept:
    """The concept whose activation-weighted sum of decoder directions has the largest |cosine| with the
    stored direction: e.g. the concept that holds an object's colour, found with red-blue."""
    d = session.direction(direction).astype(np.float64)
    w_dec = session.sae.W_dec.detach().numpy().astype(np.float64)

    def alignment(c: Concept) -> float:
        v = np.asarray(c.activations) @ w_dec[list(c.feature_ids)]
        return abs(float(v @ d)) / max(np.linalg.norm(v) * np.linalg.norm(d), 1e-12)

    return max(concepts, key=alignment)


def concepts_strip(
    session: ModelSession,
    image: str | int | np.ndarray,
    *,
    min_share: float = 0.1,
    k_max: int = 8,
    keep_error: bool = True,
    seed: int = 0,
) -> tuple[list[Concept], Strip]:
    """The image's concepts, and a strip: the unchanged image, then the image with each concept removed."""
    z = session.embedding_of(image) if not isinstance(image, np.ndarray) else image
    concepts = image_concepts(session.sae, z, min_share=min_share, k_max=k_max, labels=session.labels)
    rows = without_concepts(session.sae, z, concepts, keep_error)
    images = session.render(rows, seed)
    labels = ["original"] + [f"-c{c.concept_id}" for c in concepts]
    notes = [f"{len(concepts)} concepts (every one holds >= {min_share:.0%} of the activation mass)"]
    return concepts, Strip(images, labels, rows, notes)


def interpolate_strip(
    session: ModelSession,
    image: str | int | np.ndarray,
    *,
    to: str | int | None = None,
    text: str | None = None,
    text0: str | None = None,
    noise_to_seed: int | None = None,
    method: str = "slerp",
    frames: int = 5,
    theta_max: float = 0.5,
    seed: int = 0,
) -> Strip:
    """Interpolate from `image` to another image (`to`, by `method`), along an unCLIP text diff
    (`text` vs `text0`, slerp with theta from 0 to theta_max), or between the starting noise of `seed` and
    `noise_to_seed` (same embedding, by `method`)."""
    if sum(x is not None for x in (to, text, noise_to_seed)) != 1:
        raise AtlasError("interpolate: give exactly one of --to, --text, --noise-to-seed")
    if frames < 2:
        raise AtlasError(f"frames = {frames}: need at least 2")
    z = session.embedding_of(image) if not isinstance(image, np.ndarray) else image
    fractions = [i / (frames - 1) for i in range(frames)]
    if to is not None:
        rows = interpolate(z, session.embedding_of(to), fractions, method)
        return Strip(
            session.render(rows, seed), [f"{g:.2f}" for g in fractions], rows, [f"{method} from the image to {to}"]
        )
    if text is not None:
        z_t = session.embedding_of_text([text, text0 or ""])
        z_d = text_diff(z_t[0], z_t[1])
        thetas = [theta_max * g for g in fractions]
        rows = text_diff_strip(z, z_d, thetas)
        note = f"unCLIP text diff normalize(z({text!r}) - z({text0 or ''!r})) by slerp, theta 0..{theta_max:g}"
        return Strip(session.render(rows, seed), [f"t={t:.2f}" for t in thetas], rows, [note])
    size = session.cfg.render.size
    noise = session.renderer.initial_noise([seed, int(noise_to_seed)], size).numpy()
    latents = interpolate(noise[0], noise[1], fractions, method)
    rows = np.repeat(np.asarray(z, np.float32)[None], frames, axis=0)
    images = session.render(rows, seed, latents=torch.as_tensor(latents))
    return Strip(
        images,
        [f"{g:.2f}" for g in fractions],
        rows,
        [f"{method} between the noise of seeds {seed} and {noise_to_seed}"],
    )
