"""One model session per atlas: the models and lookups that search, generation and the viewer share, each
loaded on first use and then kept.

`ModelSession(store, config=None, device="auto")` holds the atlas's CLIP embedder, SAE, decoder (renderer)
and its zero embedding, the labels (from the `labels` table), feature stats, the vocabulary embeddings and
the FAISS indexes. Constructing one imports nothing heavy: torch, diffusers and faiss load with the first
model or index asked for, so the viewer's light pages never pay for them.

The CLIP spec has one rule (`clip_spec_of`): the one the build recorded in the manifest (`models.clip`), the
CLIP that embedded the atlas; else the config's.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from atlas.config import AtlasConfig, config_from_dict
from atlas.errors import AtlasError
from atlas.store import AtlasStore, vectors_to_numpy
from atlas.uploads import UPLOADS, UploadPolicy, decode_upload


def recorded_config(store: AtlasStore) -> AtlasConfig:
    """The config the atlas was built with (recorded in its manifest), else the defaults."""
    recorded = store.manifest().get("config")
    return config_from_dict(recorded, f"{store.manifest_path} (recorded config)") if recorded else AtlasConfig()


def clip_spec_of(store: AtlasStore, config: AtlasConfig | None = None) -> str:
    """The atlas's CLIP: the spec recorded in the manifest by the build (`models.clip`), else the config's
    (`config`, or the recorded one)."""
    spec = store.manifest().get("models", {}).get("clip")
    if not spec:
        spec = (config or recorded_config(store)).models.clip
    if not spec:
        raise AtlasError(f"{store.manifest_path}: no CLIP model recorded (models.clip); rebuild with `atlas build`")
    return spec


class ModelSession:
    """An atlas plus its models and lookups, loaded lazily (the viewer keeps one per atlas)."""

    def __init__(
        self,
        store: AtlasStore,
        config: AtlasConfig | None = None,
        device: str = "auto",
        uploads: UploadPolicy = UPLOADS,
    ):
        self.store = store
        self.cfg = config if config is not None else recorded_config(store)
        self.device = device
        self.uploads = uploads

    # ---- models ----------------------------------------------------------------------------------------
    @cached_property
    def clip_spec(self) -> str:
        return clip_spec_of(self.store, self.cfg)

    @cached_property
    def embedder(self):
        from atlas.models.clip import load_embedder  # torch

        return load_embedder(self.clip_spec, self.device)

    @cached_property
    def sae(self):
        from atlas.models.sae.autoencoder import load_sae  # torch

        return load_sae(self.store.sae_dir)

    @cached_property
    def renderer(self):
        from atlas.models.renderer import load_renderer  # torch, diffusers

        return load_renderer(self.cfg.models.decoder, self.device, self.cfg.render.half_precision)

    @cached_property
    def zero_embedding(self) -> np.ndarray:
        """The decoder's negative embedding (the image tower on all-zero pixels), [d]."""
        return self.embedder.zero_embedding()

    # ---- indexes ---------------------------------------------------------------------------------------
    @cached_property
    def vocabulary(self):
        """The centred vocabulary embeddings that text search uses (`index/vocabulary.npz`), or None."""
        from atlas.labels import VOCABULARY_FILE, VocabularyEmbeddings  # faiss

        path = self.store.index_dir / VOCABULARY_FILE
        return VocabularyEmbeddings.load(path) if path.exists() else None

    @cached_property
    def feature_index(self):
        from atlas.vector_index import FEATURES, load_index  # faiss

        return load_index(self.store, FEATURES, device=False)  # on the CPU: `vector` reads directions back

    @cached_property
    def image_index(self):
        from atlas.vector_index import IMAGES, load_index  # faiss

        return load_index(self.store, IMAGES)

    # ---- features --------------------------------------------------------------------------------------
    @cached_property
    def labels(self) -> dict[int, str]:
        """feature_id -> its best label (rank 1 of the `labels` table); empty when the atlas has no labels."""
        if not self.store.parts("labels"):
            return {}
        t = self.store.read_table("labels", ["feature_id", "rank", "word"])
        t = t.filter(pc.equal(t.column("rank"), 1))
        return dict(zip(t.column("feature_id").to_pylist(), t.column("word").to_pylist(), strict=True))

    @cached_property
    def feature_stats(self) -> dict[str, np.ndarray]:
        """Per-feature arrays indexed by feature_id: `alive` [F] bool and `max_activation` [F] float."""
        t = self.store.read_table("features", ["feature_id", "alive", "max_activation"])
        ids_f = t.column("feature_id").to_numpy()
        n = int(ids_f.max()) + 1 if len(ids_f) else 0
        alive_f, max_f = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.float64)
        alive_f[ids_f] = t.column("alive").to_numpy(zero_copy_only=False)
        max_f[ids_f] = t.column("max_activation").fill_null(0.0).to_numpy(zero_copy_only=False)
        return {"alive": alive_f, "max_activation": max_f}

    @property
    def alive(self) -> np.ndarray:
        """[F] bool: which features are alive."""
        return self.feature_stats["alive"]

    def feature_unit(self, feature_id: int) -> float:
        """The feature's largest activation over the atlas: the step of a feature strip."""
        n = self.sae.cfg.n_features
        if not 0 <= feature_id < n:
            raise AtlasError(f"feature {feature_id}: no such feature (this SAE has features 0..{n - 1})")
        max_f = self.feature_stats["max_activation"]
        value = float(max_f[feature_id]) if feature_id < len(max_f) else 0.0
        if not value:  # a dead feature: step by a typical activation instead
            alive = max_f[max_f != 0]
            value = float(np.median(alive)) if len(alive) else 1.0
        return value

    # ---- images and embeddings -------------------------------------------------------------------------
    def image_ids(self, limit: int = 1000) -> list[int]:
        """Some image ids of the atlas (for pickers)."""
        ids: list[int] = []
        for p in self.store.parts("embeddings"):
            ids += pq.read_table(p, columns=["image_id"]).column("image_id").to_pylist()
            if len(ids) >= limit:
                break
        return ids[:limit]

    def embedding_of_id(self, image_id: int) -> np.ndarray:
        """The stored embedding [d] of an image of the atlas."""
        dim = self.store.embedding_dim()
        for p in self.store.parts("embeddings"):
            t = pq.read_table(p, filters=pc.field("image_id") == image_id)
            if t.num_rows:
                return vectors_to_numpy(t.column("embedding"), dim)[0]
        raise AtlasError(f"image_id {image_id}: not in the atlas {self.store.root}")

    def embedding_of_image(self, image: Image.Image) -> np.ndarray:
        """The CLIP image embedding [d] of a PIL image."""
        return self.embedder.encode_images([image])[0]

    def embedding_of_bytes(self, data: bytes, name: str = "upload") -> np.ndarray:
        """Decode image bytes under the upload policy (`atlas.uploads`) and embed them: [d]."""
        return self.embedding_of_image(decode_upload(data, name, self.uploads))

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
            self.uploads.check_size(path.stat().st_size, text)
            data = path.read_bytes()
        except OSError as e:
            raise AtlasError(f"{text}: cannot read this file ({e.strerror or e})") from None
        return self.embedding_of_bytes(data, text)

    def embedding_of_text(self, texts: list[str]) -> np.ndarray:
        """Raw CLIP text embeddings [len(texts), d]."""
        return self.embedder.encode_texts(texts)

    # ---- directions ------------------------------------------------------------------------------------
    def direction(self, name: str) -> np.ndarray:
        """The stored contrastive direction called `name` (e.g. red-blue): [d]."""
        t = self.store.read_table("directions", ["name", "vector"])
        names = t.column("name").to_pylist()
        if name not in names:
            raise AtlasError(f"direction {name!r}: not in this atlas (known: {', '.join(names) or 'none'})")
        return vectors_to_numpy(t.column("vector"), self.store.embedding_dim())[names.index(name)]

    def direction_names(self) -> list[str]:
        """The names of the stored contrastive directions."""
        if not self.store.parts("directions"):
            return []
        return self.store.read_table("directions", ["name"]).column("name").to_pylist()

    # ---- rendering -------------------------------------------------------------------------------------
    def render(self, emb_bd: np.ndarray, seed: int = 0, latents: Any = None) -> list[Image.Image]:
        """Render embeddings [B, d] with one seed for every frame (or explicit starting `latents`)."""
        rc = self.cfg.render
        out: list[Image.Image] = []
        for i in range(0, len(emb_bd), rc.batch_size):
            chunk_bd = emb_bd[i : i + rc.batch_size]
            lat = None if latents is None else latents[i : i + rc.batch_size]
            out += self.renderer.render(
                chunk_bd, self.zero_embedding, [seed] * len(chunk_bd), rc.steps, rc.guidance_scale, rc.size, lat
            )
        return out
