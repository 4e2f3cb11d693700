"""The featurize stage as plain functions: SAE-encode embeddings batch by batch into sparse activations, and
fold each batch into mergeable per-feature statistics, top-k images and a uniform sample of the images each
feature fires on (`FeatureStats`), from which the quantile samples are drawn.

Nothing here holds more than one batch of dense activations (B x n_features): the dataset-sized image x
feature matrix is never built. `FeatureStats` is a commutative monoid: each Ray actor keeps its own
partial, and the driver merges the partials (`merge`), so the result does not depend on how the images
were split between actors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from atlas.models.device import autocast
from atlas.models.sae.autoencoder import SparseAutoencoder
from atlas.store import table_from_rows, vectors_to_numpy


@torch.inference_mode()
def encode_dense(sae: SparseAutoencoder, x_bd: np.ndarray, device: torch.device) -> torch.Tensor:
    """Activations [B, n_features] (float32, on `device`) of one batch of embeddings."""
    x = torch.from_numpy(np.array(x_bd, dtype=np.float32)).to(device)  # a copy: Arrow buffers are read-only
    with autocast(device):
        a = sae.encode(x)
    return a.float()


@dataclass
class SparseBatch:
    """The non-zero activations of one batch: row (image index in the batch), feature, value; row-major."""

    n_rows: int
    rows: torch.Tensor  # int64 [nnz]
    cols: torch.Tensor  # int64 [nnz]
    vals: torch.Tensor  # float32 [nnz]

    @classmethod
    def from_dense(cls, a_bf: torch.Tensor) -> SparseBatch:
        rows, cols = torch.nonzero(a_bf > 0, as_tuple=True)
        return cls(a_bf.shape[0], rows.cpu(), cols.cpu(), a_bf[rows, cols].float().cpu())

    def lists(self) -> tuple[pa.Array, pa.Array]:
        """(feature_ids list<int32>, values list<float32>), one entry per row."""
        counts = torch.bincount(self.rows, minlength=self.n_rows).numpy()
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        ids = pa.ListArray.from_arrays(offsets, pa.array(self.cols.numpy().astype(np.int32)))
        return ids, pa.ListArray.from_arrays(offsets, pa.array(self.vals.numpy()))


def activations_table(image_ids: pa.Array, feature_ids: pa.ListArray, values: pa.ListArray) -> pa.Table:
    """Explode per-image lists into the `activations` table (one row per non-zero activation)."""
    counts = pc.list_value_length(feature_ids).to_numpy(zero_copy_only=False)
    image_col = np.repeat(np.asarray(image_ids.to_numpy(zero_copy_only=False), dtype=np.int64), counts)
    return table_from_rows(
        "activations",
        {"image_id": image_col, "feature_id": feature_ids.flatten(), "value": values.flatten()},
    )


def featurize_batch(
    sae: SparseAutoencoder, image_ids: pa.Array, embeddings: pa.Array, device: torch.device, stats: FeatureStats
) -> pa.Table:
    """Encode one batch of embeddings, fold it into `stats` and return its `activations` rows."""
    sparse = SparseBatch.from_dense(encode_dense(sae, vectors_to_numpy(embeddings, sae.cfg.d_in), device))
    stats.update_sparse(image_ids.to_numpy(), sparse)
    return activations_table(image_ids, *sparse.lists())


def featurize_part(
    sae: SparseAutoencoder, path: str | Path, batch_size: int, device: torch.device, stats: FeatureStats
) -> tuple[pa.Table, int]:
    """Stream an embeddings part file in batches through `featurize_batch`: (its activations, its rows)."""
    f = pq.ParquetFile(path)
    pieces = [
        featurize_batch(sae, rb.column(0), rb.column(1), device, stats)
        for rb in f.iter_batches(batch_size=batch_size, columns=["image_id", "embedding"])
    ]
    if not pieces:
        empty_lists = pa.array([], pa.list_(pa.int32())), pa.array([], pa.list_(pa.float32()))
        return activations_table(pa.array([], pa.int64()), *empty_lists), 0
    return pa.concat_tables(pieces), f.metadata.num_rows


def sparse_from_activations(table: pa.Table) -> tuple[np.ndarray, SparseBatch]:
    """(image_ids [B], SparseBatch) back from an `activations` table slice (one part's rows): how a resumed
    run folds finished parts into the statistics without encoding them again."""
    img = table.column("image_id").to_numpy()
    ids, row = np.unique(img, return_inverse=True)
    return ids, SparseBatch(
        len(ids),
        torch.from_numpy(row.astype(np.int64)),
        torch.from_numpy(table.column("feature_id").to_numpy().astype(np.int64)),
        torch.from_numpy(table.column("value").to_numpy().astype(np.float32)),
    )


def sample_priority(image_ids: np.ndarray, feature_ids: np.ndarray) -> np.ndarray:
    """A uniform number in (0, 1] that depends only on (image, feature): splitmix64 of the pair. Keeping the
    s largest per feature is a uniform sample without replacement of the images it fires on, and the same
    sample however the images are split and merged (bottom-k sketch)."""
    with np.errstate(over="ignore"):
        z = np.asarray(image_ids, dtype=np.int64).view(np.uint64) ^ (
            np.asarray(feature_ids, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(40)).astype(np.float32) + 1) / np.float32(2**24)


def _batch_top_k(cols: np.ndarray, key: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each touched feature's (up to) k entries of largest `key` in one batch: (touched features [T],
    entry index into cols [n], rank [n], group [n]) for the kept entries."""
    order = np.lexsort((-key, cols))  # by feature, largest key first: each feature's entries contiguous
    c = cols[order]
    first = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    group = np.repeat(np.arange(len(first)), np.diff(np.r_[first, len(c)]))
    rank = np.arange(len(c)) - first[group]
    keep = rank < k
    return c[first], order[keep], rank[keep], group[keep]


def _merge_top_k(running: list[torch.Tensor], cand: list[torch.Tensor], cols: torch.Tensor | None = None) -> None:
    """Merge candidates [k', T] into running [k, F] columns `cols` (all when None) in place, by the first
    tensor of each list (the key); the others follow it."""
    k = running[0].shape[0]
    sel = slice(None) if cols is None else cols
    key = torch.cat([running[0][:, sel], cand[0]])
    best, pick = key.topk(k, dim=0)
    merged = [best] + [torch.cat([r[:, sel], c]).gather(0, pick) for r, c in zip(running[1:], cand[1:], strict=True)]
    for r, m in zip(running, merged, strict=True):
        r[:, sel] = m


@dataclass
class FeatureStats:
    """Per-feature statistics, top-k images and a uniform sample of s images over every image folded in so far.

    top_values / top_image_ids are [k, n_features]: column f holds feature f's k largest activations seen
    (0 where fewer than k images fired it). sample_keys / sample_image_ids / sample_values are [s, n_features]:
    column f holds the s images of largest `sample_priority` among those feature f fired on (key 0 = empty).
    Merging two partials = summing counts and masses, taking the max of maxima and the top k (top s) of the
    union of both candidate sets: exact, whatever the split."""

    n_images: int
    n_active: np.ndarray  # int64 [F]
    mass: np.ndarray  # float64 [F]
    max_value: np.ndarray  # float64 [F]
    top_values: torch.Tensor  # float32 [k, F]
    top_image_ids: torch.Tensor  # int64 [k, F]
    sample_keys: torch.Tensor  # float32 [s, F]
    sample_image_ids: torch.Tensor  # int64 [s, F]
    sample_values: torch.Tensor  # float32 [s, F]

    @classmethod
    def empty(cls, n_features: int, k: int, samples: int = 40) -> FeatureStats:
        return cls(
            0,
            np.zeros(n_features, np.int64),
            np.zeros(n_features),
            np.zeros(n_features),
            torch.zeros(k, n_features),
            torch.zeros(k, n_features, dtype=torch.int64),
            torch.zeros(samples, n_features),
            torch.zeros(samples, n_features, dtype=torch.int64),
            torch.zeros(samples, n_features),
        )

    @property
    def k(self) -> int:
        return self.top_values.shape[0]

    @property
    def samples(self) -> int:
        return self.sample_keys.shape[0]

    def update(self, image_ids_b: np.ndarray, a_bf: torch.Tensor) -> None:
        """Fold in one batch of dense activations (on any device)."""
        self.update_sparse(image_ids_b, SparseBatch.from_dense(a_bf))

    @torch.inference_mode()
    def update_sparse(self, image_ids_b: np.ndarray, batch: SparseBatch) -> None:
        """Fold in one batch of non-zero activations: O(nnz + k * features touched), never O(B * n_features)."""
        n_features = len(self.n_active)
        self.n_images += batch.n_rows
        if len(batch.cols) == 0:
            return
        cols = batch.cols.numpy()
        vals = batch.vals.numpy()
        self.n_active += np.bincount(cols, minlength=n_features)
        self.mass += np.bincount(cols, weights=vals.astype(np.float64), minlength=n_features)
        img = np.asarray(image_ids_b, dtype=np.int64)[batch.rows.numpy()]
        np.maximum.at(self.max_value, cols, vals)
        # the batch's candidates, merged with the running top k (top s) of just the touched features
        for key, running, payload in (
            (vals, [self.top_values, self.top_image_ids], [vals, img]),
            (sample_priority(img, cols), [self.sample_keys, self.sample_image_ids, self.sample_values], None),
        ):
            k = running[0].shape[0]
            touched, entry, rank, group = _batch_top_k(cols, key, k)
            cand = [torch.zeros(k, len(touched), dtype=r.dtype) for r in running]
            r, g = torch.from_numpy(rank), torch.from_numpy(group)
            for c, x in zip(cand, payload or [key, img, vals], strict=True):
                c[r, g] = torch.from_numpy(x[entry])
            _merge_top_k(running, cand, torch.from_numpy(touched))

    def merge(self, other: FeatureStats) -> FeatureStats:
        """This partial with `other` folded in (in place; returns self)."""
        self.n_images += other.n_images
        self.n_active += other.n_active
        self.mass += other.mass
        self.max_value = np.maximum(self.max_value, other.max_value)
        _merge_top_k([self.top_values, self.top_image_ids], [other.top_values, other.top_image_ids])
        _merge_top_k(
            [self.sample_keys, self.sample_image_ids, self.sample_values],
            [other.sample_keys, other.sample_image_ids, other.sample_values],
        )
        return self

    def features_table(self, decoder_norms_f: np.ndarray) -> pa.Table:
        """The `features` table: one row per SAE feature."""
        n = self.n_active
        return table_from_rows(
            "features",
            {
                "feature_id": np.arange(len(n), dtype=np.int32),
                "alive": n > 0,
                "frequency": n / max(self.n_images, 1),
                "mean_activation": np.divide(self.mass, n, out=np.zeros(len(n)), where=n > 0),
                "max_activation": self.max_value,
                "activation_mass": self.mass,
                "decoder_norm": np.asarray(decoder_norms_f, dtype=np.float64),
                "label": [None] * len(n),
            },
        )

    def top_images_table(self) -> pa.Table:
        """The `top_images` table: each feature's images by activation, rank 1 = largest (ties by image_id);
        only images where the feature fired."""
        v = self.top_values.numpy().T  # [F, k]
        ids = self.top_image_ids.numpy().T
        f_idx = np.repeat(np.arange(v.shape[0], dtype=np.int32), v.shape[1])
        v, ids = v.reshape(-1), ids.reshape(-1)
        order = np.lexsort((ids, -v, f_idx))
        f_idx, v, ids = f_idx[order], v[order], ids[order]
        keep = v > 0
        f_idx, v, ids = f_idx[keep], v[keep], ids[keep]
        starts = np.flatnonzero(np.r_[True, f_idx[1:] != f_idx[:-1]]) if len(f_idx) else np.array([], int)
        rank = np.arange(len(f_idx)) - np.repeat(starts, np.diff(np.r_[starts, len(f_idx)])) + 1
        return table_from_rows(
            "top_images", {"feature_id": f_idx, "rank": rank.astype(np.int32), "image_id": ids, "value": v}
        )

    def quantile_samples_table(self, bins: int) -> pa.Table:
        """The `quantile_samples` table: each feature's sampled images (uniform over the images it fires on)
        cut into `bins` equal-count bins by activation, bin 1 the weakest: bin b holds images from the b-th
        quantile range of the feature's activations."""
        keys = self.sample_keys.numpy().T.reshape(-1)  # [F * s]
        vals = self.sample_values.numpy().T.reshape(-1)
        ids = self.sample_image_ids.numpy().T.reshape(-1)
        f_idx = np.repeat(np.arange(self.sample_keys.shape[1], dtype=np.int32), self.samples)
        keep = keys > 0
        f_idx, vals, ids = f_idx[keep], vals[keep], ids[keep]
        order = np.lexsort((ids, vals, f_idx))  # by feature, weakest first
        f_idx, vals, ids = f_idx[order], vals[order], ids[order]
        starts = np.flatnonzero(np.r_[True, f_idx[1:] != f_idx[:-1]]) if len(f_idx) else np.array([], int)
        sizes = np.diff(np.r_[starts, len(f_idx)])
        pos = np.arange(len(f_idx)) - np.repeat(starts, sizes)
        qbin = (pos * bins // np.repeat(sizes, sizes)).astype(np.int32) + 1
        return table_from_rows("quantile_samples", {"feature_id": f_idx, "bin": qbin, "image_id": ids, "value": vals})

    def density_histogram(self, bins: int) -> dict[str, list]:
        """Features per log10(frequency) bin, over alive features (the 'feature density' plot of SAE papers);
        dead features are counted apart."""
        freq = self.n_active / max(self.n_images, 1)
        alive = freq > 0
        lo = math.floor(math.log10(1 / max(self.n_images, 1)))
        counts, edges = np.histogram(np.log10(freq[alive]), bins=bins, range=(lo, 0.0))
        return {
            "log10_frequency_edges": edges.round(4).tolist(),
            "counts": counts.tolist(),
            "dead": int((~alive).sum()),
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (what a Ray actor hands back to the driver)."""
        return {
            "n_images": np.array(self.n_images),
            "n_active": self.n_active,
            "mass": self.mass,
            "max_value": self.max_value,
            "top_values": self.top_values.numpy(),
            "top_image_ids": self.top_image_ids.numpy(),
            "sample_keys": self.sample_keys.numpy(),
            "sample_image_ids": self.sample_image_ids.numpy(),
            "sample_values": self.sample_values.numpy(),
        }

    @classmethod
    def from_arrays(cls, d: dict[str, np.ndarray]) -> FeatureStats:
        return cls(
            int(d["n_images"]),
            d["n_active"].copy(),
            d["mass"].copy(),
            d["max_value"].copy(),
            torch.from_numpy(d["top_values"].copy()),
            torch.from_numpy(d["top_image_ids"].copy()),
            torch.from_numpy(d["sample_keys"].copy()),
            torch.from_numpy(d["sample_image_ids"].copy()),
            torch.from_numpy(d["sample_values"].copy()),
        )
