"""Ground-truth evaluation of an atlas built on labelled data (the toy world's `labels.csv`).

For every factor value (colour=red, ...): the single SAE feature whose activation best predicts it, and that
feature's AUROC; the share of factor values some feature captures (AUROC >= 0.95); and icon fidelity from
the icons table (share of icons whose own feature ranks first, or in the top 5, when the icon is re-embedded).

Next to each feature's AUROC stands a linear probe's: a logistic regression on the CLIP embeddings, fitted on
one split of the images and scored on the other. A feature is a ReLU of a linear function of the embedding,
so it can hardly separate a value better than the probe does: the probe tells an SAE that missed a value
from an embedding that does not encode it linearly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from atlas.errors import AtlasError
from atlas.store import AtlasStore, table_from_rows, vectors_to_numpy
from atlas.toyworld.world import FACTORS, read_labels
from atlas.train import holdout_mask

CAPTURED_AUROC = 0.95
PROBE_TEST_FRACTION = 0.3


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


def probe_auroc(x_nd: np.ndarray, positive_n: np.ndarray, test_n: np.ndarray, l2: float = 1e-3) -> float:
    """Held-out AUROC of an L2-regularised logistic regression fitted on the rows not in `test_n`."""
    train = ~test_n
    if positive_n[train].all() or not positive_n[train].any():
        return float("nan")
    mean, std = x_nd[train].mean(0), x_nd[train].std(0) + 1e-6
    x = torch.from_numpy((x_nd - mean) / std).float()
    y = torch.from_numpy(positive_n[train].astype(np.float32))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(x[train] @ w + b, y) + l2 * w.square().sum()
        value.backward()
        return value

    opt.step(loss)
    with torch.no_grad():
        scores = (x[test_n] @ w).numpy()
    return float(auroc_matrix(scores[:, None], positive_n[test_n])[0])


def read_embeddings(store: AtlasStore, image_ids: np.ndarray) -> np.ndarray:
    """[n_images, d] embeddings of the given images, in their order. For small atlases."""
    table = store.read_table("embeddings", ["image_id", "embedding"])
    row_of = {int(i): r for r, i in enumerate(table.column("image_id").to_numpy())}
    vectors = vectors_to_numpy(table.column("embedding"), store.embedding_dim())
    return vectors[[row_of[int(i)] for i in image_ids]]


def evaluate_factors(store: AtlasStore, image_root: Path, n_features: int) -> pa.Table:
    """The `evaluation` table: best feature and AUROC for every factor value present in the labels."""
    labels_path = image_root / "labels.csv"
    if not labels_path.exists():
        raise AtlasError(
            f"{image_root}: no ground-truth labels.csv next to the images (atlas eval needs toy-world data)"
        )
    labels = read_labels(image_root)
    images = store.read_table("images", ["image_id", "source"])
    sources = images.column("source").to_pylist()
    known = np.array([s in labels for s in sources])
    if not known.any():
        raise AtlasError(f"{labels_path}: none of the atlas's images have labels here")
    image_ids = images.column("image_id").to_numpy()[known]
    rows = [labels[s] for s, k in zip(sources, known, strict=True) if k]
    dense = dense_activations(store, image_ids, n_features)
    embeddings = read_embeddings(store, image_ids)
    test = holdout_mask(image_ids, PROBE_TEST_FRACTION)
    columns = ("factor", "value", "n_images", "best_feature_id", "auroc", "captured", "probe_auroc")
    out: dict[str, list] = {k: [] for k in columns}
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
            out["probe_auroc"].append(probe_auroc(embeddings, truth == value, test))
    return table_from_rows("evaluation", out)
