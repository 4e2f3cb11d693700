"""Search an atlas: text -> features and images through the CLIP text encoder, an image -> its features,
a feature -> its nearest features. Used by the viewer's Search page and `atlas search`.

Text -> features compares the text embedding, centred like the label vocabulary (`atlas.labels`), with the
features' decoder directions (`index/features.faiss`), keeping alive features only. Text -> images is
ordinary CLIP retrieval: cosine between the text embedding and the image embeddings (`index/images.faiss`).
Models and indexes load on first use, so a caller that only needs nearest features never loads torch.
"""

from __future__ import annotations

import io
import warnings
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from atlas.errors import AtlasError
from atlas.labels import VOCABULARY_FILE, VocabularyEmbeddings
from atlas.store import AtlasStore
from atlas.vector_index import FEATURES, IMAGES, load_index, normalised, search, vector

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP")


def decode_upload(data: bytes, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS):
    """An uploaded image as an RGB PIL image; AtlasError (one line) if it is too big, not PNG/JPEG/WEBP, or
    undecodable. The format comes from the bytes, never from a file name."""
    from PIL import Image

    if not data:
        raise AtlasError("the upload is empty")
    if len(data) > max_bytes:
        raise AtlasError(f"the upload is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(UPLOAD_FORMATS))
            if img.width * img.height > max_pixels:
                raise AtlasError(f"the image is {img.width}x{img.height} pixels; the limit is {max_pixels:,} pixels")
            img.load()
    except AtlasError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise AtlasError(f"not a readable PNG, JPEG or WEBP image ({type(e).__name__})") from None
    return img.convert("RGB")


class AtlasSearch:
    """Searches over one atlas; models and indexes are loaded when first needed and then kept."""

    def __init__(self, store: AtlasStore, device: str = "auto"):
        self.store = store
        self.device = device

    # ---- what it loads ------------------------------------------------------------------------
    @cached_property
    def clip_spec(self) -> str:
        spec = self.store.manifest().get("models", {}).get("clip")
        if not spec:
            raise AtlasError(f"{self.store.manifest_path}: no CLIP model recorded (models.clip)")
        return spec

    @cached_property
    def embedder(self):
        from atlas.models.clip import load_embedder

        return load_embedder(self.clip_spec, self.device)

    @cached_property
    def vocabulary(self) -> VocabularyEmbeddings | None:
        path = self.store.index_dir / VOCABULARY_FILE
        return VocabularyEmbeddings.load(path) if path.exists() else None

    @cached_property
    def feature_index(self):
        return load_index(self.store, FEATURES, device=False)  # on the CPU: `vector` reads directions back

    @cached_property
    def image_index(self):
        return load_index(self.store, IMAGES)

    @cached_property
    def alive(self) -> np.ndarray:
        t = self.store.read_table("features", ["feature_id", "alive"])
        alive = np.zeros(len(t), dtype=bool)
        alive[t.column("feature_id").to_numpy()] = t.column("alive").to_numpy(zero_copy_only=False)
        return alive

    @cached_property
    def labels(self) -> dict[int, str]:
        if not self.store.parts("labels"):
            return {}
        t = self.store.read_table("labels")
        t = t.filter(pc.equal(t.column("rank"), 1))
        return dict(zip(t.column("feature_id").to_pylist(), t.column("word").to_pylist(), strict=True))

    @cached_property
    def sae(self):
        from atlas.models.sae import load_sae

        return load_sae(self.store.sae_dir)

    # ---- searches ------------------------------------------------------------------------------
    def text_embedding(self, text: str) -> np.ndarray:
        text = text.strip()
        if not text:
            raise AtlasError("search: give some text")
        return self.embedder.encode_texts([text[:300]])[0]

    def features_for_text(self, text: str, k: int = 10) -> pa.Table:
        """The k alive features whose decoder direction best matches `text`: feature_id, score, label."""
        query = self.text_embedding(text)
        query = self.vocabulary.centre(query) if self.vocabulary is not None else normalised(query)
        return self._features_near(query, k)

    def images_for_text(self, text: str, k: int = 10) -> pa.Table:
        """The k images whose CLIP embedding is closest to `text`'s: image_id, score."""
        scores, ids = search(self.image_index, self.text_embedding(text), k)
        keep = ids[0] != -1  # image ids are signed hashes: only -1 means "no result"
        return pa.table(
            {"image_id": pa.array(ids[0][keep], pa.int64()), "score": pa.array(scores[0][keep], pa.float32())}
        )

    def features_for_image(self, image, k: int = 10) -> pa.Table:
        """The features that fire on a PIL image (its SAE activations), strongest first: feature_id, activation, label."""
        import torch

        emb = self.embedder.encode_images([image])
        with torch.inference_mode():
            acts = self.sae.encode(torch.from_numpy(emb).float())[0].numpy()
        order = np.argsort(-acts)[:k]
        order = order[acts[order] > 0]
        return pa.table(
            {
                "feature_id": pa.array(order, pa.int32()),
                "activation": pa.array(acts[order], pa.float32()),
                "label": [self.labels.get(int(f)) for f in order],
            }
        )

    def nearest_features(self, feature_id: int, k: int = 10) -> pa.Table:
        """The k alive features whose decoder directions are closest to `feature_id`'s (itself excluded)."""
        direction = vector(self.feature_index, feature_id)
        if direction is None:
            raise AtlasError(f"feature {feature_id} is not in the feature index")
        near = self._features_near(direction, k + 1)
        return near.filter(pc.not_equal(near.column("feature_id"), feature_id)).slice(0, k)

    def direction_of(self, feature_id: int) -> np.ndarray | None:
        """The feature's unit decoder direction (from the index), or None."""
        return vector(self.feature_index, feature_id)

    def _features_near(self, query: np.ndarray, k: int) -> pa.Table:
        fetch = k
        alive = self.alive
        while True:  # widen the search until k alive features come back (dead ones are skipped)
            scores, ids = search(self.feature_index, query, min(fetch, self.feature_index.ntotal))
            keep = (ids[0] >= 0) & alive[np.clip(ids[0], 0, len(alive) - 1)]
            if keep.sum() >= k or fetch >= self.feature_index.ntotal:
                break
            fetch *= 4
        ids, scores = ids[0][keep][:k], scores[0][keep][:k]
        return pa.table(
            {
                "feature_id": pa.array(ids, pa.int32()),
                "score": pa.array(scores, pa.float32()),
                "label": [self.labels.get(int(f)) for f in ids],
            }
        )
