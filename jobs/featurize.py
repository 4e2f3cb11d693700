"""Featurize job: `embeddings/` + `sae/` -> `activations/`, `features/`, `top_images/` in one streaming pass.

A pool of Ray actors (one GPU each where the cluster has GPUs) holds the SAE. Ray's ActorPool hands each idle
actor the next embeddings part; the actor streams the part's rows in batches, encodes them, writes the part's
non-zero activations (atomically: a part on disk is finished work) and folds each batch into its own
`FeatureStats` partial (counts, mass, max, top-k images). The driver merges the actors' partials. A rerun
skips the encoding of finished parts and folds their activations back in from disk, so the statistics
always cover every image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import ray
from ray.util import ActorPool
from tqdm import tqdm

from atlas.config import AtlasConfig
from atlas.featurize import FeatureStats, featurize_part, sparse_from_activations
from atlas.models.device import resolve_device
from atlas.models.sae.autoencoder import load_sae
from atlas.store import AtlasStore
from jobs.runtime import actor_device, actor_options, errors_on_call


@errors_on_call
class FeaturizeActor:
    """Holds the SAE and one `FeatureStats` partial; featurizes whole parts."""

    def __init__(self, root: str, device: str, top_k: int, batch_size: int, samples: int):
        self.store = AtlasStore(root)
        self.device = resolve_device(device)
        self.sae = load_sae(self.store.sae_dir, self.device)
        self.stats = FeatureStats.empty(self.sae.cfg.n_features, top_k, samples)
        self.batch_size = batch_size

    def run_part(self, name: str) -> int:
        """Featurize embeddings part `name` (or fold in its activations if already written); rows done."""
        if self.store.has_part("activations", name):
            table = pq.read_table(self.store.part_path("activations", name))
            ids, sparse = sparse_from_activations(table)
            # images with no active feature have no rows: they still count as images
            n_part = pq.ParquetFile(self.store.part_path("embeddings", name)).metadata.num_rows
            self.stats.update_sparse(ids, sparse)
            self.stats.n_images += n_part - len(ids)
            return n_part
        table, n_rows = featurize_part(
            self.sae, self.store.part_path("embeddings", name), self.batch_size, self.device, self.stats
        )
        self.store.write_part("activations", name, table)
        return n_rows

    def partial(self) -> dict[str, np.ndarray]:
        return self.stats.to_arrays()


def run_featurize(cfg: AtlasConfig, store: AtlasStore) -> dict[str, Any]:
    names = [p.stem for p in store.parts("embeddings")]
    n_resumed = sum(store.has_part("activations", n) for n in names)
    fc = cfg.featurize
    Actor = ray.remote(FeaturizeActor).options(**actor_options(cfg))
    actors = [
        Actor.remote(str(store.root), actor_device(cfg), fc.top_k, fc.batch_size, fc.samples)
        for _ in range(max(1, min(cfg.compute.num_actors, len(names))))
    ]
    total = store.count_rows("embeddings")
    with tqdm(total=total, desc="featurize", unit="img", dynamic_ncols=True) as bar:
        for n in ActorPool(actors).map_unordered(lambda a, name: a.run_part.remote(name), names):
            bar.update(n)
    partials = ray.get([a.partial.remote() for a in actors])
    for a in actors:
        ray.kill(a)
    stats = FeatureStats.from_arrays(partials[0])
    for p in partials[1:]:
        stats.merge(FeatureStats.from_arrays(p))

    sae = load_sae(Path(store.sae_dir))
    features = stats.features_table(sae.decoder_norms().detach().double().numpy())
    store.write_part("features", "part-00000", features)
    store.write_part("top_images", "part-00000", stats.top_images_table())
    store.write_part("quantile_samples", "part-00000", stats.quantile_samples_table(fc.quantile_bins))
    n_activations = store.count_rows("activations")
    alive = int(features.column("alive").to_numpy(zero_copy_only=False).sum())
    return {
        "rows": {
            "activations": n_activations,
            "features": features.num_rows,
            "top_images": store.count_rows("top_images"),
            "quantile_samples": store.count_rows("quantile_samples"),
        },
        "images": stats.n_images,
        "parts_resumed": n_resumed,
        "actors": len(actors),
        "alive": alive,
        "dead_fraction": 1 - alive / features.num_rows,
        "l0": n_activations / max(stats.n_images, 1),
        "density_histogram": stats.density_histogram(fc.histogram_bins),
    }
