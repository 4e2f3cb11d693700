"""Exact feature co-occurrence: for every alive feature, the features that fire on the same images most often
(by count) and most specifically (by Jaccard), counted over every image of the atlas.

The image x image self-join that answers "what fires with feature f" in SQL costs a scan of every activation
per query (3.6 s for a feature on 2M of 5M images, benchmarks/scale.json); this pass pays that once, at index
time. It holds the activations as int32 twice (image-major and feature-major) plus a sparse CSR copy of the
image x feature matrix A (~20 B per activation in all), and computes C = A^T A one block of features at a
time as a sparse x sparse product (scipy on CPU, torch on CUDA), then keeps each row's best partners. The product
does N * L0^2 multiply-adds in all (18e9 at 5M images and L0 60); ranking a row's partners is linear in them.
"""

from __future__ import annotations

import ctypes
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse
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
    _csr: Any = field(default=None, repr=False)  # A, image x feature: a torch sparse CSR tensor, or scipy's on CPU
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
        if device.type == "cpu":
            # torch's CPU CSR x CSR product (MKL) keeps ~8 bytes per output non-zero after every call: 18 GB
            # over the 134 blocks of a 5M-image atlas. scipy's frees what it allocates.
            block = scipy.sparse.csr_matrix(
                (
                    np.ones(end - start, dtype=a.dtype),
                    self.feature_images[start:end].numpy(),
                    (self.feature_ptr[lo : hi + 1] - start).numpy(),
                ),
                shape=(hi - lo, self.n_images),
            )
            c = block @ a
            c.sort_indices()  # scipy leaves each row's columns unordered; torch's are sorted
            crow, col = torch.from_numpy(c.indptr), torch.from_numpy(c.indices)  # one index dtype: int32 or int64
            return _sparse_csr(crow, col, torch.from_numpy(c.data), (hi - lo, self.n_features))
        index = self.image_features.dtype
        block_t = _sparse_csr(
            (self.feature_ptr[lo : hi + 1] - start).to(index).to(device),
            self.feature_images[start:end].to(device),
            torch.ones(end - start, dtype=dtype, device=device),
            (hi - lo, self.n_images),
        )
        return block_t @ a

    def _image_major(self, device: torch.device, dtype: torch.dtype) -> Any:
        """A, image x feature (ones): scipy CSR on CPU, a torch sparse CSR tensor elsewhere; kept."""
        key = (device, dtype)
        if self._csr is not None and self._csr_key == key:
            return self._csr
        if device.type == "cpu":
            self._csr = scipy.sparse.csr_matrix(
                (
                    np.ones(len(self.image_features), dtype=np.float32 if dtype == torch.float32 else np.float64),
                    self.image_features.numpy(),
                    self.image_ptr.numpy(),
                ),
                shape=(self.n_images, self.n_features),
            )
        else:
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
EXACT_COUNTS = 128  # counts below this get a histogram bin each; larger ones share 8 bins per octave
N_BINS = 264  # EXACT_COUNTS + 8 bins for each octave 2^7 .. 2^24


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


def _top_per_row(
    row: torch.Tensor, crow: torch.Tensor, key_desc: torch.Tensor, bins: torch.Tensor, exact_below: int, k: int
) -> torch.Tensor:
    """Mask of the `k` entries with the largest `key_desc` (int64, >= 0, < 2^31) in each row, ties kept in
    entry order; entries are grouped by row, row i's at crow[i]:crow[i+1]. `bins` (0 .. N_BINS - 1) must rise
    with the key, one key value per bin below `exact_below`: the histogram finds each row's k-th bin, so only
    the entries at or above it (a few times k per row) are sorted, not all of them."""
    pick = torch.zeros_like(row, dtype=torch.bool)
    if len(row) == 0:
        return pick
    candidate = torch.nonzero(_at_or_above_kth_bin(row, crow, bins, exact_below, k)).flatten()
    r, key = row[candidate], key_desc[candidate]
    order = torch.argsort(r * (1 << 31) + ((1 << 31) - 1 - key), stable=True)
    r_sorted = r[order]
    first = torch.ones_like(r_sorted, dtype=torch.bool)
    first[1:] = r_sorted[1:] != r_sorted[:-1]
    position = torch.arange(len(r), device=row.device)
    start = torch.cummax(torch.where(first, position, 0), 0).values
    pick[candidate[order[position - start < k]]] = True
    return pick


def _at_or_above_kth_bin(
    row: torch.Tensor, crow: torch.Tensor, bins: torch.Tensor, exact_below: int, k: int
) -> torch.Tensor:
    """Mask of a superset of each row's k best entries holding every entry strictly above the row's k-th: the
    bins above the k-th's bin, and of that bin all of it, or, where it holds one key value, its first entries
    up to k (ties keep entry order, as the stable sort does)."""
    n_rows = len(crow) - 1
    hist = torch.bincount(row * N_BINS + bins, minlength=n_rows * N_BINS).view(n_rows, N_BINS)
    at_or_above = hist.flip(1).cumsum(1).flip(1)  # entries of row r in bins >= b
    kth = ((at_or_above >= k).sum(1) - 1).clamp(min=0)  # the bin of the row's k-th entry (0: fewer than k)
    above = torch.cat([at_or_above, torch.zeros_like(at_or_above[:, :1])], 1).gather(1, (kth + 1)[:, None])
    kth_e = kth[row]
    on_kth = bins == kth_e
    # an entry's rank among its row's entries in the k-th bin: a running count, less its count before the row
    seen = torch.cumsum(on_kth, 0)
    before_row = (seen - on_kth.long())[crow[:-1].clamp(max=len(row) - 1)]
    room = k - above.flatten() + before_row  # entries on the k-th bin with seen <= room are kept
    return (bins > kth_e) | (on_kth & ((kth_e >= exact_below) | (seen <= room[row])))


def _count_bins(t: torch.Tensor) -> torch.Tensor:
    """A bin per count below EXACT_COUNTS, then 8 per octave (a float32's exponent and 3 mantissa bits)."""
    octaves = (t.float().view(torch.int32).long() >> 20) - (_FLOAT_BITS_OF_EXACT_COUNTS >> 20)
    return torch.where(t < EXACT_COUNTS, t, EXACT_COUNTS + octaves).clamp(0, N_BINS - 1)


def _jaccard_bins(jaccard_bits: torch.Tensor) -> torch.Tensor:
    """8 bins per octave of a Jaccard in (0, 1], given as its float32 bits (int64), 1 alone in the top bin;
    below 2^-32 all share the lowest."""
    return ((jaccard_bits >> 20) - (_FLOAT_BITS_OF_ONE >> 20) + N_BINS - 1).clamp(min=0)


_FLOAT_BITS_OF_ONE = int(torch.tensor(1.0).view(torch.int32))
_FLOAT_BITS_OF_EXACT_COUNTS = int(torch.tensor(float(EXACT_COUNTS)).view(torch.int32))


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
    (sparse CSR), by count and by Jaccard. Every step is one pass over the block's non-zeros."""
    crow = c.crow_indices().long()
    r = torch.repeat_interleave(torch.arange(c.shape[0], device=c.device), crow.diff())
    g, t = c.col_indices().long(), c.values()
    n = n_f.to(t.dtype)
    # t and n are exact integers, so dividing in t's dtype and casting gives the correctly rounded float32 Jaccard
    jaccard = (t / (n[lo:][r] + n[g] - t)).float()
    together = t.round().long()
    mine = g == r + lo  # a feature is not its own partner: its diagonal ranks last, and is dropped
    together[mine], jaccard[mine] = 0, 0.0
    by_count = _top_per_row(r, crow, together, _count_bins(together), EXACT_COUNTS, top_k)
    jaccard_bits = jaccard.view(torch.int32).long()  # ranks as the Jaccard does (positive floats)
    by_jaccard = _top_per_row(r, crow, jaccard_bits, _jaccard_bins(jaccard_bits), 0, top_k)
    pick = torch.nonzero((by_count | by_jaccard) & (together > 0)).flatten()
    return r[pick] + lo, g[pick], together[pick], jaccard[pick]


def _give_back_freed_memory() -> None:
    """Return freed heap to the OS between blocks: blocks of very different sizes otherwise fragment glibc's
    arenas until the process holds several times its live memory (24 GB at 5M images, killed)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc (macOS, musl): nothing to trim
    _LIBC = None
