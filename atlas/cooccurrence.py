"""Exact feature co-occurrence: for every alive feature, the features that fire on the same images most often
(by count) and most specifically (by Jaccard), counted over every image of the atlas.

The image x image self-join that answers "what fires with feature f" in SQL costs a scan of every activation
per query (3.6 s for a feature on 2M of 5M images, benchmarks/scale.json); this pass pays that once, at index
time. It holds the activations as int32 twice (image-major and feature-major) plus a sparse CSR copy of the
image x feature matrix A (~20 B per activation in all), and computes C = A^T A one block of features at a
time as a sparse x sparse product (torch, CPU or CUDA), then keeps each row's best partners. The product
does N * L0^2 multiply-adds in all (18e9 at 5M images and L0 60); the dense blocks cost n_features^2 cells.
"""

from __future__ import annotations

import ctypes
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from atlas.store import table_from_rows


def _sparse_csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # torch flags sparse CSR as beta on first use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=size)


@dataclass
class ActivationSets:
    """Which features fire on which images (values dropped), both ways round; rows are images 0..n_images-1."""

    n_images: int
    n_features: int
    image_ptr: torch.Tensor  # int64 [n_images + 1]: image r's features are image_features[ptr[r]:ptr[r+1]]
    image_features: torch.Tensor  # int32 [nnz], image-major
    feature_ptr: torch.Tensor  # int64 [n_features + 1]
    feature_images: torch.Tensor  # int32 [nnz], feature-major: the images each feature fires on
    _csr: torch.Tensor | None = field(default=None, repr=False)  # A, image x feature, as a sparse CSR tensor
    _csr_key: tuple | None = field(default=None, repr=False)

    @classmethod
    def from_parts(cls, parts: Iterable[pa.Table], n_features: int) -> ActivationSets:
        """From `activations` tables (image_id, feature_id), one per part; an image lives in one part. Each
        part is put in image order on its own, so the peak is one part's sort, not the whole table's."""
        features, counts, n_images = [], [], 0
        for table in parts:
            ids = table.column("image_id").to_numpy()
            unique, row = np.unique(ids, return_inverse=True)
            feature = table.column("feature_id").to_numpy().astype(np.int32)
            features.append(feature[np.lexsort((feature, row))])
            counts.append(np.bincount(row, minlength=len(unique)))
            n_images += len(unique)
        image_features = torch.from_numpy(np.concatenate(features) if features else np.zeros(0, np.int32))
        per_image = torch.from_numpy(np.concatenate(counts) if counts else np.zeros(0, np.int64))
        return cls._from_image_major(_ptr(per_image), image_features, n_images, n_features)

    @classmethod
    def from_pairs(cls, row_n: torch.Tensor, feature_n: torch.Tensor, n_images: int, n_features: int) -> ActivationSets:
        """From one (image row, feature) pair per activation, in any order."""
        by_image = torch.argsort(row_n.long() * n_features + feature_n.long())
        image_ptr = _ptr(torch.bincount(row_n.long(), minlength=n_images))
        return cls._from_image_major(image_ptr, feature_n.int()[by_image], n_images, n_features)

    @classmethod
    def _from_image_major(
        cls, image_ptr: torch.Tensor, image_features: torch.Tensor, n_images: int, n_features: int
    ) -> ActivationSets:
        rows = torch.repeat_interleave(torch.arange(n_images, dtype=torch.int32), image_ptr.diff())
        by_feature = torch.argsort(image_features, stable=True)  # images ascending within each feature
        return cls(
            n_images,
            n_features,
            image_ptr,
            image_features,
            _ptr(torch.bincount(image_features.long(), minlength=n_features)),
            rows[by_feature],
        )

    def counts(self) -> torch.Tensor:
        """Images per feature, int64 [n_features] (the diagonal of C)."""
        return self.feature_ptr.diff()

    def pairs_per_feature(self, images_per_step: int = 1 << 18) -> torch.Tensor:
        """int64 [n_features]: for each feature, the sum over its images of their number of features (the
        multiply-adds its row of C costs, and a bound on that row's non-zeros)."""
        per_image = self.image_ptr.diff()
        out = torch.zeros(self.n_features, dtype=torch.int64)
        for lo in range(0, self.n_images, images_per_step):
            hi = min(lo + images_per_step, self.n_images)
            a, b = int(self.image_ptr[lo]), int(self.image_ptr[hi])
            counts = per_image[lo:hi]
            out.index_add_(0, self.image_features[a:b].long(), torch.repeat_interleave(counts, counts))
        return out

    def block_counts(self, lo: int, hi: int, device: torch.device) -> torch.Tensor:
        """C[lo:hi, :] as a sparse CSR [hi - lo, n_features] tensor (float32 while counts stay exact in it,
        float64 beyond 2^24 images): images on which feature lo+i and feature j both fire. One sparse x sparse
        product (the block's rows of A^T times A), so no pair is ever materialised."""
        dtype = torch.float32 if self.n_images < 1 << 24 else torch.float64
        a = self._image_major(device, dtype)
        start, end = int(self.feature_ptr[lo]), int(self.feature_ptr[hi])
        index = self.image_features.dtype
        block_t = _sparse_csr(
            (self.feature_ptr[lo : hi + 1] - start).to(index).to(device),
            self.feature_images[start:end].to(device),
            torch.ones(end - start, dtype=dtype, device=device),
            (hi - lo, self.n_images),
        )
        return block_t @ a

    def _image_major(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (device, dtype)
        if self._csr is None or self._csr_key != key:
            self._csr = _sparse_csr(
                self.image_ptr.to(self.image_features.dtype).to(device),
                self.image_features.to(device),
                torch.ones(len(self.image_features), dtype=dtype, device=device),
                (self.n_images, self.n_features),
            )
            self._csr_key = key
        return self._csr


def _ptr(counts: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)])


BYTES_PER_ENTRY = 48  # one non-zero of a block's product with the ranking temporaries (measured peak / nnz)
DENSE_SHARE = 8  # a row of C with more than n_features / 8 non-zeros is ranked dense (torch.topk), not sorted


def feature_blocks(sets: ActivationSets, memory_bytes: int) -> list[tuple[int, int]]:
    """Consecutive feature ranges whose product rows fit in `memory_bytes` together: row f has at most
    min(pairs_f, n_features) non-zeros, where pairs_f sums the feature counts of f's images. Frequent
    features get blocks of their own; a block always holds at least one feature."""
    cost_f = torch.minimum(sets.pairs_per_feature(), torch.tensor(sets.n_features)) * BYTES_PER_ENTRY
    blocks, lo, used = [], 0, 0
    for f, cost in enumerate(cost_f.tolist()):
        if f > lo and used + cost > memory_bytes:
            blocks.append((lo, f))
            lo, used = f, 0
        used += cost
    if lo < sets.n_features:
        blocks.append((lo, sets.n_features))
    return blocks


def _top_per_row(row: torch.Tensor, key_desc: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the `k` entries with the largest `key_desc` (int64, >= 0, < 2^31) in each row; `row` >= 0."""
    order = torch.argsort(row * (1 << 31) + ((1 << 31) - 1 - key_desc), stable=True)
    row_sorted = row[order]
    first = torch.ones_like(row_sorted, dtype=torch.bool)
    first[1:] = row_sorted[1:] != row_sorted[:-1]
    start = torch.cummax(torch.where(first, torch.arange(len(row), device=row.device), 0), 0).values
    mask = torch.zeros_like(row, dtype=torch.bool)
    mask[order[torch.arange(len(row), device=row.device) - start < k]] = True
    return mask


def cooccurrence_table(
    sets: ActivationSets,
    top_k: int,
    memory_bytes: int = 2 << 30,
    device: torch.device | None = None,
    n_images: int | None = None,
    progress=None,
) -> pa.Table:
    """The `cooccurrence` table: for each feature that fires, its `top_k` partners by count and its `top_k` by
    Jaccard (the union), with the count, Jaccard and PMI of each pair; partners that never co-fire are left
    out. PMI counts `n_images` images (default: those with an activation; pass every image embedded).
    `progress(features_done)` is called after each block."""
    device = device or torch.device("cpu")
    n_f = sets.counts().to(device)
    out: dict[str, list[np.ndarray]] = {c: [] for c in ("feature_id", "other_id", "together", "jaccard", "pmi")}
    for lo, hi in feature_blocks(sets, memory_bytes):
        f, g, t, jaccard = _block_partners(sets.block_counts(lo, hi, device), lo, n_f, top_k)
        pmi = torch.log2(t.double() * (n_images or sets.n_images) / (n_f[f].double() * n_f[g].double()))
        out["feature_id"].append(f.int().cpu().numpy())
        out["other_id"].append(g.int().cpu().numpy())
        out["together"].append(t.cpu().numpy())
        out["jaccard"].append(jaccard.cpu().numpy())
        out["pmi"].append(pmi.float().cpu().numpy())
        _give_back_freed_memory()
        if progress is not None:
            progress(hi)
    return table_from_rows("cooccurrence", {name: np.concatenate(v) for name, v in out.items()})


def _block_partners(c: torch.Tensor, lo: int, n_f: torch.Tensor, top_k: int) -> tuple[torch.Tensor, ...]:
    """(feature, partner, together, jaccard) of each row's best partners in the block C[lo:lo + rows, :]
    (sparse CSR): rows with many non-zeros are ranked dense with torch.topk, the rest by one sort."""
    rows, n_features = c.shape
    device = c.device
    row_nnz = c.crow_indices().diff().long()
    r = torch.repeat_interleave(torch.arange(rows, device=device), row_nnz)
    g, t = c.col_indices().long(), c.values()
    dense_row = row_nnz > n_features // DENSE_SHARE
    picked = []
    if dense_row.any():
        picked.append(_dense_partners(r, g, t, dense_row, lo, n_f, top_k))
    sparse = ~dense_row[r]
    if sparse.any():
        picked.append(_sparse_partners(r[sparse], g[sparse], t[sparse].round().long(), lo, n_f, top_k))
    if not picked:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, empty, torch.zeros(0, dtype=torch.float32, device=device)
    return tuple(torch.cat(parts) for parts in zip(*picked, strict=True))


def _jaccard(t: torch.Tensor, n_f: torch.Tensor, n_g: torch.Tensor) -> torch.Tensor:
    # float64 then float32 rounds as a float32 division would (double rounding is harmless for division)
    return (t.double() / (n_f + n_g - t).double()).float()


def _sparse_partners(r, g, t, lo, n_f, top_k):
    f = r + lo
    keep = (g != f) & (t > 0)  # a feature is not its own partner
    f, g, t = f[keep], g[keep], t[keep]
    jaccard = _jaccard(t, n_f[f], n_f[g])
    pick = _top_per_row(f, t, top_k) | _top_per_row(f, jaccard.view(torch.int32).long(), top_k)
    return f[pick], g[pick], t[pick], jaccard[pick]


def _dense_partners(r, g, t, dense_row, lo, n_f, top_k):
    n_features = len(n_f)
    slot = torch.cumsum(dense_row.long(), 0) - 1  # a dense row's index in the dense block
    mine = dense_row[r]
    which = torch.nonzero(dense_row).flatten()
    counts = torch.zeros(len(which), n_features, dtype=t.dtype, device=t.device)
    counts[slot[r[mine]], g[mine]] = t[mine]
    counts[torch.arange(len(which), device=t.device), which + lo] = 0  # a feature is not its own partner
    k = min(top_k, n_features)
    by_count = torch.topk(counts, k, dim=1).indices
    n_row = n_f[which + lo].to(t.dtype)[:, None]
    by_jaccard = torch.topk(counts / (n_f.to(t.dtype)[None, :] + (n_row - counts)), k, dim=1).indices
    slots = torch.arange(len(which), device=t.device)[:, None].expand(-1, k)
    key = torch.unique(torch.cat([slots * n_features + by_count, slots * n_features + by_jaccard]).flatten())
    s, other = key // n_features, key % n_features
    together = counts[s, other].round().long()
    keep = together > 0
    s, other, together = s[keep], other[keep], together[keep]
    f = which[s] + lo
    return f, other, together, _jaccard(together, n_f[f], n_f[other])


def _give_back_freed_memory() -> None:
    """Return freed heap to the OS between blocks: blocks of very different sizes otherwise fragment glibc's
    arenas until the process holds several times its live memory (24 GB at 5M images, killed)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc (macOS, musl): nothing to trim
    _LIBC = None
