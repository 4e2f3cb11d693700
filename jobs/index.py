"""Index job: the DuckDB catalog (a view per table) and the FAISS indexes (feature decoder directions,
image embeddings). Runs on the driver: it reads the finished tables and writes small files."""

from __future__ import annotations

from typing import Any

from atlas.catalog import build_catalog
from atlas.models.sae import load_sae
from atlas.store import AtlasStore, vectors_to_numpy
from atlas.vector_index import FEATURES, IMAGES, build_index


def run_index(store: AtlasStore) -> dict[str, Any]:
    sae = load_sae(store.sae_dir)
    dim = sae.cfg.d_in
    views = build_catalog(store, dim)
    w_dec = sae.W_dec.detach().numpy()
    build_index(w_dec, range(len(w_dec)), store.index_dir / FEATURES)
    emb = store.read_table("embeddings")
    build_index(vectors_to_numpy(emb.column("embedding"), dim), emb.column("image_id").to_numpy(), store.index_dir / IMAGES)
    return {"views": views, "rows": {"index.features": len(w_dec), "index.images": emb.num_rows}}
