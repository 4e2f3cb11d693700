"""`atlas eval`: score an atlas built on labelled (toy-world) data against its ground truth."""

from __future__ import annotations

from typing import Any

import numpy as np

from atlas.catalog import build_catalog
from atlas.config import AtlasConfig
from atlas.evaluation import CAPTURED_AUROC, evaluate_factors
from atlas.icons import icon_fidelity
from atlas.models.sae.autoencoder import load_sae
from atlas.store import AtlasStore
from jobs.embed import source_root


def run_eval(cfg: AtlasConfig, store: AtlasStore) -> dict[str, Any]:
    store.require_stage("featurize", "atlas eval")
    sae = load_sae(store.sae_dir)
    table = evaluate_factors(store, source_root(cfg), sae.cfg.n_features)
    store.write_part("evaluation", "part-00000", table)
    build_catalog(store, sae.cfg.d_in)
    captured = table.column("captured").to_numpy(zero_copy_only=False)
    factors = table.column("factor").to_pylist()
    per_factor = {
        f: float(np.mean([c for c, g in zip(captured, factors, strict=True) if g == f])) for f in dict.fromkeys(factors)
    }
    decodable = table.column("probe_auroc").to_numpy() >= CAPTURED_AUROC
    summary = {
        "captured": float(captured.mean()),
        "captured_by_factor": per_factor,
        "decodable": float(decodable.mean()),
        "captured_of_decodable": float(captured[decodable].mean()) if decodable.any() else None,
        "icon_fidelity": icon_fidelity(store),
    }
    store.update_manifest(lambda m: m.__setitem__("evaluation", summary))
    return {"table": table, **summary}
