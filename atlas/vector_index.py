"""FAISS indexes over the atlas: feature decoder directions (nearest features) and image embeddings
(nearest images), both as exact inner-product search over L2-normalised vectors (cosine). Exact search is
enough at atlas sizes (~10^5 vectors: ~2 ms a query on 2 CPU cores)."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from atlas.errors import AtlasError
from atlas.store import AtlasStore

FEATURES = "features.faiss"
IMAGES = "images.faiss"


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def build_index(vectors: np.ndarray, ids: np.ndarray, path: Path) -> faiss.Index:
    """An exact cosine index over `vectors` [N, d], returning `ids` (int64) from searches; written atomically."""
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(_normalised(vectors), np.asarray(ids, dtype=np.int64))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    faiss.write_index(index, str(tmp))
    tmp.replace(path)
    return index


def load_index(store: AtlasStore, name: str) -> faiss.Index:
    path = store.index_dir / name
    if not path.exists():
        raise AtlasError(f"{store.root}: no vector index {name} (run `atlas index`)")
    return faiss.read_index(str(path))


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores [Q, k] and ids [Q, k] of the nearest vectors (ids are -1 where fewer than k exist)."""
    scores, ids = index.search(_normalised(np.atleast_2d(queries)), k)
    return scores, ids
