"""Generation over an atlas: steer, group into concepts, interpolate, and render the result as a strip.

A `GenerationSession` opens an atlas and loads, on first use, the models its config names (CLIP, SAE,
decoder). The functions below are what `atlas steer`, `atlas concepts`, `atlas interpolate` and the viewer
call; each returns a `Strip`: the rendered frames, a label per frame and the embeddings they came from.
Every frame of a strip is rendered with the same seed, so only the embedding changes along it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from atlas.concepts import Concept, image_concepts, without_concepts
from atlas.config import AtlasConfig, config_from_dict
from atlas.errors import AtlasError
from atlas.interpolation import interpolate, text_diff, text_diff_strip
from atlas.steering import direction_strip, feature_strip, group_scale_strip
from atlas.store import AtlasStore, vectors_to_numpy

MAX_UPLOAD_BYTES = 20 * 1024 * 1024


@dataclass
class Strip:
    images: list[Image.Image]
    labels: list[str]
    embeddings: np.ndarray
    notes: list[str] = field(default_factory=list)

    def to_image(self, tile: int = 128) -> Image.Image:
        """The frames side by side, each upscaled to `tile` px, with its label underneath."""
        return strip_image(self.images, self.labels, tile)

    def save(self, path: Path, tile: int = 128) -> Path:
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


class GenerationSession:
    """An atlas plus the models its config names, loaded lazily (the viewer caches one per atlas)."""

    def __init__(self, store: AtlasStore, config: AtlasConfig | None = None, device: str = "auto"):
        self.store = store
        if config is None:
            recorded = store.manifest().get("config")
            config = (
                config_from_dict(recorded, f"{store.manifest_path} (recorded config)") if recorded else AtlasConfig()
            )
        self.cfg = config
        self.device = device

    # ---- models ----------------------------------------------------------------------------------------
    @cached_property
    def embedder(self):
        from atlas.models.clip import load_embedder

        return load_embedder(self.cfg.models.clip, self.device)

    @cached_property
    def sae(self):
        from atlas.models.sae import load_sae

        return load_sae(self.store.sae_dir)

    @cached_property
    def renderer(self):
        from atlas.models.renderer import load_renderer

        return load_renderer(self.cfg.models.decoder, self.device, self.cfg.render.half_precision)

    @cached_property
    def zero_embedding(self) -> np.ndarray:
        return self.embedder.zero_embedding()

    # ---- atlas lookups ---------------------------------------------------------------------------------
    @cached_property
    def _features(self) -> dict[str, np.ndarray | list]:
        t = self.store.read_table("features", ["feature_id", "alive", "max_activation", "label"])
        return {c: t.column(c).to_pylist() for c in t.column_names}

    def labels(self) -> dict[int, str]:
        """feature_id -> label, for the features that have one."""
        f = self._features
        return {int(i): lab for i, lab in zip(f["feature_id"], f["label"], strict=True) if lab}

    def feature_unit(self, feature_id: int) -> float:
        """The feature's largest activation over the atlas: the step of a feature strip."""
        f = self._features
        n = self.sae.cfg.n_features
        if not 0 <= feature_id < n:
            raise AtlasError(f"feature {feature_id}: no such feature (this SAE has features 0..{n - 1})")
        i = f["feature_id"].index(feature_id) if feature_id in f["feature_id"] else None
        value = f["max_activation"][i] if i is not None else 0.0
        if not value:  # a dead feature: step by a typical activation instead
            alive = [v for v in f["max_activation"] if v]
            value = float(np.median(alive)) if alive else 1.0
        return float(value)

    def image_ids(self, limit: int = 1000) -> list[int]:
        """Some image ids of the atlas (for pickers)."""
        parts = self.store.parts("embeddings")
        ids: list[int] = []
        for p in parts:
            ids += pq.read_table(p, columns=["image_id"]).column("image_id").to_pylist()
            if len(ids) >= limit:
                break
        return ids[:limit]

    def embedding_of_id(self, image_id: int) -> np.ndarray:
        dim = self.store.embedding_dim()
        for p in self.store.parts("embeddings"):
            t = pq.read_table(p, filters=pc.field("image_id") == image_id)
            if t.num_rows:
                return vectors_to_numpy(t.column("embedding"), dim)[0]
        raise AtlasError(f"image_id {image_id}: not in the atlas {self.store.root}")

    def embedding_of_bytes(self, data: bytes, name: str = "upload") -> np.ndarray:
        """Decode image bytes safely (size limit, decompression-bomb guard) and embed them."""
        from atlas.images import decode_image

        if len(data) > MAX_UPLOAD_BYTES:
            raise AtlasError(f"{name}: image file too large ({len(data):,} bytes > {MAX_UPLOAD_BYTES:,})")
        try:
            decoded = decode_image(data, self.embedder.geometry.size, 64, self.cfg.data.max_image_pixels)
        except ValueError as e:
            raise AtlasError(f"{name}: {e}") from None
        return self.embedder.encode_pixels(decoded.pixels[None])[0]

    def embedding_of(self, image: str | int) -> np.ndarray:
        """The embedding of an image given as an image_id of the atlas or an image file path."""
        if isinstance(image, (int, np.integer)):
            return self.embedding_of_id(int(image))
        text = str(image).strip()
        path = Path(text)
        if not path.exists():
            try:
                return self.embedding_of_id(int(text))
            except ValueError:
                raise AtlasError(f"{text}: neither an image file nor an image_id of the atlas") from None
        try:
            data = path.read_bytes()
        except OSError as e:
            raise AtlasError(f"{text}: cannot read this file ({e.strerror or e})") from None
        return self.embedding_of_bytes(data, text)

    def embedding_of_text(self, texts: list[str]) -> np.ndarray:
        """Raw CLIP text embeddings [len(texts), d]."""
        return self.embedder.encode_texts(texts)

    def direction(self, name: str) -> np.ndarray:
        """The stored contrastive direction called `name` (e.g. red-blue)."""
        t = self.store.read_table("directions", ["name", "vector"])
        names = t.column("name").to_pylist()
        if name not in names:
            raise AtlasError(f"direction {name!r}: not in this atlas (known: {', '.join(names) or 'none'})")
        return vectors_to_numpy(t.column("vector"), self.store.embedding_dim())[names.index(name)]

    def direction_names(self) -> list[str]:
        if not self.store.parts("directions"):
            return []
        return self.store.read_table("directions", ["name"]).column("name").to_pylist()

    # ---- rendering -------------------------------------------------------------------------------------
    def render(self, embeddings: np.ndarray, seed: int = 0, latents=None) -> list[Image.Image]:
        """Render embeddings [B, d] with one seed for every frame (or explicit starting `latents`)."""
        rc = self.cfg.render
        out: list[Image.Image] = []
        for i in range(0, len(embeddings), rc.batch_size):
            chunk = embeddings[i : i + rc.batch_size]
            lat = None if latents is None else latents[i : i + rc.batch_size]
            out += self.renderer.render(
                chunk, self.zero_embedding, [seed] * len(chunk), rc.steps, rc.guidance_scale, rc.size, lat
            )
        return out


def _scale_label(s: float) -> str:
    return "original" if s == 0 else f"{s:+.2g}"


def steer(
    session: GenerationSession,
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
        what = f"feature {feature} (step {unit:.3g} = its max activation)"
    else:
        concepts = image_concepts(session.sae, z, min_share=min_share, labels=session.labels())
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


def concept_along_direction(session: GenerationSession, concepts: list[Concept], direction: str) -> Concept:
    """The concept whose activation-weighted sum of decoder directions has the largest |cosine| with the
    stored direction: e.g. the concept that holds an object's colour, found with red-blue."""
    d = session.direction(direction).astype(np.float64)
    w_dec = session.sae.W_dec.detach().numpy().astype(np.float64)

    def alignment(c: Concept) -> float:
        v = np.asarray(c.activations) @ w_dec[list(c.feature_ids)]
        return abs(float(v @ d)) / max(np.linalg.norm(v) * np.linalg.norm(d), 1e-12)

    return max(concepts, key=alignment)


def concepts_strip(
    session: GenerationSession,
    image: str | int | np.ndarray,
    *,
    min_share: float = 0.1,
    k_max: int = 8,
    keep_error: bool = True,
    seed: int = 0,
) -> tuple[list[Concept], Strip]:
    """The image's concepts, and a strip: the unchanged image, then the image with each concept removed."""
    z = session.embedding_of(image) if not isinstance(image, np.ndarray) else image
    concepts = image_concepts(session.sae, z, min_share=min_share, k_max=k_max, labels=session.labels())
    rows = without_concepts(session.sae, z, concepts, keep_error)
    images = session.render(rows, seed)
    labels = ["original"] + [f"-c{c.concept_id}" for c in concepts]
    notes = [f"{len(concepts)} concepts (every one holds >= {min_share:.0%} of the activation mass)"]
    return concepts, Strip(images, labels, rows, notes)


def interpolate_strip(
    session: GenerationSession,
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
    import torch

    images = session.render(rows, seed, latents=torch.as_tensor(latents))
    return Strip(
        images,
        [f"{g:.2f}" for g in fractions],
        rows,
        [f"{method} between the noise of seeds {seed} and {noise_to_seed}"],
    )
