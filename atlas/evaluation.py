"""Ground-truth evaluation of an atlas built on labelled data (the toy world's `labels.csv`).

For every factor value (colour=red, ...): the single SAE feature whose activation best predicts it, and that
feature's AUROC; the share of factor values some feature captures (AUROC >= 0.95); and icon fidelity from
the icons table (share of icons whose own feature ranks first, or in the top 5, when the icon is re-embedded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from atlas.errors import AtlasError
from atlas.store import AtlasStore, table_from_rows
from atlas.toyworld.world import FACTORS, read_labels

CAPTURED_AUROC = 0.95


def auroc_matrix(scores_nf: np.ndarray, positive_n: np.ndarray) -> np.ndarray:
    """AUROC of every column of `scores_nf` at separating `positive_n` (Mann-Whitney U, ties averaged)."""
    n_pos = int(positive_n.sum())
    n_neg = len(positive_n) - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.full(scores_nf.shape[1], np.nan)
    ranks = pd.DataFrame(scores_nf).rank(method="average").to_numpy()
    u = ranks[positive_n].sum(axis=0) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def dense_activations(store: AtlasStore, image_ids: np.ndarray, n_features: int) -> np.ndarray:
    """[n_images, n_features] float32 activations of the given images (zeros where inactive). For small atlases."""
    acts = store.read_table("activations")
    row_of = {int(i): r for r, i in enumerate(image_ids)}
    rows = np.array([row_of.get(int(i), -1) for i in acts.column("image_id").to_numpy()])
    keep = rows >= 0
    dense = np.zeros((len(image_ids), n_features), dtype=np.float32)
    dense[rows[keep], acts.column("feature_id").to_numpy()[keep]] = acts.column("value").to_numpy()[keep]
    return dense


def evaluate_factors(store: AtlasStore, image_root: Path, n_features: int) -> pa.Table:
    """The `evaluation` table: best feature and AUROC for every factor value present in the labels."""
    labels_path = image_root / "labels.csv"
    if not labels_path.exists():
        raise AtlasError(f"{image_root}: no ground-truth labels.csv next to the images (atlas eval needs toy-world data)")
    labels = read_labels(image_root)
    images = store.read_table("images", ["image_id", "source"])
    sources = images.column("source").to_pylist()
    known = np.array([s in labels for s in sources])
    if not known.any():
        raise AtlasError(f"{labels_path}: none of the atlas's images have labels here")
    image_ids = images.column("image_id").to_numpy()[known]
    rows = [labels[s] for s, k in zip(sources, known, strict=True) if k]
    dense = dense_activations(store, image_ids, n_features)
    out: dict[str, list] = {k: [] for k in ("factor", "value", "n_images", "best_feature_id", "auroc", "captured")}
    for factor in FACTORS:
        truth = np.array([r[factor] for r in rows])
        for value in sorted(set(truth)):
            auc = auroc_matrix(dense, truth == value)
            best = int(np.nanargmax(auc))
            out["factor"].append(factor)
            out["value"].append(value)
            out["n_images"].append(int((truth == value).sum()))
            out["best_feature_id"].append(best)
            out["auroc"].append(float(auc[best]))
            out["captured"].append(bool(auc[best] >= CAPTURED_AUROC))
    return table_from_rows("evaluation", out)

