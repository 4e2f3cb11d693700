"""Search an atlas: text -> features and images through the CLIP text encoder, an image -> its features and
its nearest images, a feature -> its nearest features. Used by the viewer's Search and Feature pages and `atlas search`.

Text -> features compares the text embedding, centred like the label vocabulary (`atlas.labels`), with the
features' decoder directions (`index/features.faiss`), keeping alive features only. Text -> images is
ordinary CLIP retrieval: cosine between the text embedding and the image embeddings (`index/images.faiss`).
Models, labels and indexes come from a `ModelSession` (`atlas.session`), which loads each on first use, so a
caller that only needs nearest features never loads torch.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from atlas.errors import AtlasError
from atlas.session import ModelSession
from atlas.vector_index import normalised, search, vector


class AtlasSearch:
    """Searches over one atlas, through its model session (shared with generation and the viewer)."""

    def __init__(self, session: ModelSession):
        self.session = session

    @property
    def alive(self) -> np.ndarray:
        """[F] bool: which features are alive."""
        return self.session.alive

    # ---- searches ------------------------------------------------------------------------------
    def text_embedding(self, text: str) -> np.ndarray:
        """The raw CLIP embedding [d] of `text` (stripped, at most 300 characters)."""
        text = text.strip()
        if not text:
            raise AtlasError("search: give some text")
        return self.session.embedder.encode_texts([text[:300]])[0]

    def features_for_text(self, text: str, k: int = 10) -> pa.Table:
        """The k alive features whose decoder direction best matches `text`: feature_id, score, label."""
        query = self.text_embedding(text)
        query = self.session.vocabulary.centre(query) if self.session.vocabulary is not None else normalised(query)
        return self._features_near(query, k)

    def images_for_text(self, text: str, k: int = 10) -> pa.Table:
        """The k images whose CLIP embedding is closest to `text`'s: image_id, score."""
        scores, ids = search(self.session.image_index, self.text_embedding(text), k)
        keep = ids[0] != -1  # image ids are signed hashes: only -1 means "no result"
        return pa.table(
            {"image_id": pa.array(ids[0][keep], pa.int64()), "score": pa.array(scores[0][keep], pa.float32())}
        )

    def similar_images(self, image_id: int, k: int = 10) -> pa.Table:
        """The k images of the atlas closest to image `image_id` by CLIP embedding (itself excluded):
        image_id, score."""
        scores, ids = search(self.session.image_index, self.session.embedding_of_id(image_id), k + 1)
        keep = (ids[0] != -1) & (ids[0] != image_id)
        return pa.table(
            {"image_id": pa.array(ids[0][keep][:k], pa.int64()), "score": pa.array(scores[0][keep][:k], pa.float32())}
        )

    def features_for_image(self, image, k: int = 10) -> pa.Table:
        """The features that fire on a PIL image (its SAE activations), strongest first: feature_id, activation,
        label."""
        import torch  # only when an image is searched

        emb_1d = self.session.embedder.encode_images([image])
        with torch.inference_mode():
            acts_f = self.session.sae.encode(torch.from_numpy(emb_1d).float())[0].numpy()
        order = np.argsort(-acts_f)[:k]
        order = order[acts_f[order] > 0]
        return pa.table(
            {
                "feature_id": pa.array(order, pa.int32()),
                "activation": pa.array(acts_f[order], pa.float32()),
                "label": [self.session.labels.get(int(f)) for f in order],
            }
        )

    def nearest_features(self, feature_id: int, k: int = 10) -> pa.Table:
        """The k alive features whose decoder directions are closest to `feature_id`'s (itself excluded)."""
        direction = vector(self.session.feature_index, feature_id)
        if direction is None:
            raise AtlasError(f"feature {feature_id} is not in the feature index")
        near = self._features_near(direction, k + 1)
        return near.filter(pc.not_equal(near.column("feature_id"), feature_id)).slice(0, k)

    def direction_of(self, feature_id: int) -> np.ndarray | None:
        """The feature's unit decoder direction (from the index), or None."""
        return vector(self.session.feature_index, feature_id)

    def _features_near(self, query: np.ndarray, k: int) -> pa.Table:
        fetch = k
        alive = self.session.alive
        while True:  # widen the search until k alive features come back (dead ones are skipped)
            scores, ids = search(self.session.feature_index, query, min(fetch, self.session.feature_index.ntotal))
            keep = (ids[0] >= 0) & alive[np.clip(ids[0], 0, len(alive) - 1)]
            if keep.sum() >= k or fetch >= self.session.feature_index.ntotal:
                break
            fetch *= 4
        ids, scores = ids[0][keep][:k], scores[0][keep][:k]
        return pa.table(
            {
                "feature_id": pa.array(ids, pa.int32()),
                "score": pa.array(scores, pa.float32()),
                "label": [self.session.labels.get(int(f)) for f in ids],
            }
        )
