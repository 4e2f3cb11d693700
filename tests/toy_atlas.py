"""A small toy-world atlas built in this process with the library's stage functions (no Ray): the toy CLIP
embeds generated images with known factors, a small SAE is trained on them, featurized and indexed.
Used by the search and browser tests (about 20 s on 2 CPU cores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from atlas.embed import decode_items, embed_batch, split_outputs
from atlas.featurize import FeatureStats, SparseBatch, activations_table, encode_dense
from atlas.models.clip import load_embedder
from atlas.models.sae.relu import ReLU
from atlas.sources import plan_shards, read_all
from atlas.store import AtlasStore, table_from_rows
from atlas.toyworld import write_world
from atlas.train import train_sae

CLIP = "builtin:toy-clip"


def build_toy_atlas(
    root: Path, n_images: int = 600, seed: int = 3, expansion: int = 4, epochs: int = 15, l1: float = 1.0
) -> AtlasStore:
    """Embed, train, featurize and index a toy-world atlas at `root` (images under `root/world/images`)."""
    images = write_world(root / "world", n_images, 32, seed=seed)
    store = AtlasStore(root / "atlas")
    embedder = load_embedder(CLIP, "cpu")
    items = list(read_all(str(images), plan_shards(str(images), n_images)))
    batch = decode_items(items, embedder.geometry.size, 64, 64_000_000)
    emb = embed_batch(embedder, batch)
    rows = pa.table(
        {
            k: pa.array(list(batch[k]))
            for k in ("source", "image_id", "caption", "width", "height", "thumbnail", "error")
        }
    )
    rows = rows.append_column("embedding", pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1]))
    img_t, emb_t, _ = split_outputs(rows, emb.shape[1])
    store.write_part("images", "part-00000", img_t)
    store.write_part("embeddings", "part-00000", emb_t)

    ids = img_t.column("image_id").to_numpy()
    cfg = ReLU(
        expansion_factor=expansion, epochs=epochs, l1_coefficient=l1, batch_size=64, log_every=10, warmup_steps=20
    )
    rng = np.random.default_rng(0)

    def epoch_batches(epoch: int):
        perm = rng.permutation(len(ids))
        return ((ids[perm[s : s + 64]], emb[perm[s : s + 64]]) for s in range(0, len(perm), 64))

    result = train_sae(epoch_batches, emb.shape[1], len(ids), cfg, torch.device("cpu"))
    result.sae.save(store.sae_dir, extra={"holdout": result.holdout})
    log = pa.Table.from_pylist(result.log)
    store.write_part(
        "train_log", "part-00000", table_from_rows("train_log", {c: log.column(c) for c in log.column_names})
    )

    sae = result.sae.eval().cpu()
    sparse = SparseBatch.from_dense(encode_dense(sae, emb, torch.device("cpu")))
    store.write_part(
        "activations", "part-00000", activations_table(img_t.column("image_id").combine_chunks(), *sparse.lists())
    )
    stats = FeatureStats.empty(sae.cfg.n_features, 8)
    stats.update_sparse(ids, sparse)
    store.write_part("features", "part-00000", stats.features_table(sae.decoder_norms().detach().double().numpy()))
    store.write_part("top_images", "part-00000", stats.top_images_table())
    store.write_part("quantile_samples", "part-00000", stats.quantile_samples_table(5))

    def manifest(m: dict) -> None:
        m["models"] = {"clip": CLIP, "decoder": "builtin:random-decoder"}
        m["config"] = {"data": {"source": str(images)}, "models": {"clip": CLIP}}
        for name in ("embed", "train", "featurize"):
            m["stages"][name] = {
                "status": "done",
                "seconds": 1.0,
                "summary": {"holdout": result.holdout} if name == "train" else {},
            }

    store.update_manifest(manifest)
    from jobs.index import run_index

    run_index(store)
    return store
