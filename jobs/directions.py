"""Directions job: contrastive text directions for every word pair in config, in one Ray task holding the
CLIP text tower (on a GPU where there is one), mapped onto SAE features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import ray

from atlas.config import AtlasConfig
from atlas.directions import aligned_features, contrastive_direction, prompt_pairs
from atlas.models.clip import load_embedder
from atlas.models.sae.autoencoder import load_sae
from atlas.store import AtlasStore, table_from_rows
from jobs.runtime import actor_device, actor_options


def _directions_task(cfg: AtlasConfig, root: str, device: str) -> dict[str, Any]:
    store = AtlasStore(root)
    embedder = load_embedder(cfg.models.clip, device)
    sae = load_sae(Path(store.sae_dir))
    dc = cfg.directions
    rows: dict[str, list] = {k: [] for k in ("name", "positive", "negative", "n_pairs", "vector", "top_features")}
    for positive, negative in dc.pairs:
        pairs = prompt_pairs(positive, negative, dc)
        vector = contrastive_direction(embedder, pairs)
        rows["name"].append(f"{positive}-{negative}")
        rows["positive"].append(positive)
        rows["negative"].append(negative)
        rows["n_pairs"].append(len(pairs))
        rows["vector"].append(vector)
        rows["top_features"].append(aligned_features(sae, vector, dc.top_features))
    vectors = np.asarray(rows["vector"], dtype=np.float32).reshape(len(dc.pairs), embedder.dim)
    table = table_from_rows("directions", {**rows, "vector": vectors}, embedder.dim)
    store.write_part("directions", "part-00000", table)
    return {"rows": {"directions": table.num_rows}, "names": rows["name"]}


def run_directions(cfg: AtlasConfig, store: AtlasStore) -> dict[str, Any]:
    task = ray.remote(_directions_task).options(**actor_options(cfg))
    return ray.get(task.remote(cfg, str(store.root), actor_device(cfg)))
