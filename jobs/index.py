"""Index job: feature labels from the vocabulary (the atlas's CLIP text encoder), feature co-occurrence, the
feature map (UMAP of the decoder directions), over-represented caption words, the DuckDB catalog (a view
per table) and the FAISS indexes (feature decoder directions, image embeddings). Runs on the driver: it
reads the finished tables and writes small files."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from atlas.caption_words import caption_words_table
from atlas.catalog import build_catalog, connect
from atlas.config import IndexConfig, parse_size
from atlas.cooccurrence import ActivationSets, cooccurrence_table
from atlas.feature_map import feature_map_table
from atlas.labels import VOCABULARY_FILE, embed_vocabulary, labels_table, templates_for, vocabulary_for
from atlas.models.device import resolve_device
from atlas.models.sae.autoencoder import load_sae
from atlas.session import clip_spec_of
from atlas.store import AtlasStore, vectors_to_numpy
from atlas.vector_index import FEATURES, IMAGES, build_index


def run_labels(store: AtlasStore, w_dec: np.ndarray, device: str = "auto") -> dict[str, Any]:
    """Embed the vocabulary with the atlas's CLIP, label every alive feature, write `labels` and the
    centred vocabulary embeddings (`index/vocabulary.npz`) that text search uses."""
    from atlas.models.clip import load_embedder

    spec = clip_spec_of(store)
    embedder = load_embedder(spec, device)
    words = vocabulary_for(spec)
    vocab = embed_vocabulary(embedder.encode_texts, words, templates_for(spec))
    vocab.save(store.index_dir / VOCABULARY_FILE)
    alive = store.read_table("features", ["feature_id", "alive"])
    ids = alive.column("feature_id").to_numpy()[alive.column("alive").to_numpy(zero_copy_only=False)]
    store.write_part("labels", "part-00000", labels_table(ids, w_dec[ids], vocab))
    return {"labels.features": int(len(ids)), "vocabulary": len(words)}


def run_cooccurrence(store: AtlasStore, cfg: IndexConfig, device: str = "auto") -> dict[str, Any]:
    """Count which features fire together over every image (atlas/cooccurrence.py) and write `cooccurrence`."""
    n_features = store.count_rows("features")
    parts = store.parts("activations")
    sets = ActivationSets.from_parts(
        (pq.read_table(p, columns=["image_id", "feature_id"], filesystem=store.fs) for p in parts), n_features
    )
    with tqdm(total=n_features, desc="co-occurrence", unit="feature", dynamic_ncols=True) as bar:
        table = cooccurrence_table(
            sets,
            cfg.cooccurrence_top_k,
            parse_size(cfg.cooccurrence_memory),
            resolve_device(device),
            n_images=store.count_rows("embeddings"),
            progress=lambda done: bar.update(done - bar.n),
        )
    store.write_part("cooccurrence", "part-00000", table)
    return {"cooccurrence": table.num_rows}


def run_feature_map(store: AtlasStore, w_dec: np.ndarray, cfg: IndexConfig) -> dict[str, Any]:
    """Lay out the alive features' decoder directions in 2-D (atlas/feature_map.py) and write `feature_map`."""
    alive = store.read_table("features", ["feature_id", "alive"])
    ids = alive.column("feature_id").to_numpy()[alive.column("alive").to_numpy(zero_copy_only=False)]
    table = feature_map_table(ids, w_dec[ids], cfg.map_neighbors, cfg.map_min_dist)
    store.write_part("feature_map", "part-00000", table)
    return {"feature_map": table.num_rows}


def run_caption_words(store: AtlasStore) -> dict[str, Any]:
    """Each feature's over-represented caption words (atlas/caption_words.py), written as `caption_words`."""
    con = connect(store)
    try:
        table = caption_words_table(con)
    finally:
        con.close()
    store.write_part("caption_words", "part-00000", table)
    return {"caption_words": table.num_rows}


def run_index(store: AtlasStore, cfg: IndexConfig | None = None, device: str = "auto") -> dict[str, Any]:
    sae = load_sae(store.sae_dir)
    dim = sae.cfg.d_in
    w_dec = sae.W_dec.detach().float().numpy()
    rows = run_labels(store, w_dec, device)
    cfg = cfg or IndexConfig()
    rows |= run_cooccurrence(store, cfg, device)
    rows |= run_feature_map(store, w_dec, cfg)
    rows |= run_caption_words(store)
    views = build_catalog(store, dim)
    build_index(w_dec, np.arange(len(w_dec)), store.index_dir / FEATURES)
    emb = store.read_table("embeddings")
    build_index(
        vectors_to_numpy(emb.column("embedding"), dim), emb.column("image_id").to_numpy(), store.index_dir / IMAGES
    )
    return {"views": views, "rows": {**rows, "index.features": len(w_dec), "index.images": emb.num_rows}}
