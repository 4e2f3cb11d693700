"""Training rows: the held-out split by image id, exact batches, and streaming from Parquet parts.

A batch stream item is a pair (image_ids int64 [B], embeddings float32 [B, d]).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

Batch = tuple[np.ndarray, np.ndarray]
_HOLDOUT_BUCKETS = 10_000


def holdout_mask(image_ids: np.ndarray, fraction: float) -> np.ndarray:
    """True for images in the held-out split: a fixed share of the id space, stable across runs."""
    return np.mod(np.asarray(image_ids, dtype=np.int64), _HOLDOUT_BUCKETS) < round(fraction * _HOLDOUT_BUCKETS)


def split_rows(batches: Iterable[Batch], fraction: float, want_holdout: bool) -> Iterator[np.ndarray]:
    """The embeddings of the training split (or of the held-out one) of a batch stream."""
    for ids, x in batches:
        mask = holdout_mask(ids, fraction)
        keep = mask if want_holdout else ~mask
        if keep.any():
            yield np.asarray(x[keep], dtype=np.float32)


def rebatch(chunks: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Exact batches of `batch_size` rows from chunks of any size (the last one may be short)."""
    buf: list[np.ndarray] = []
    have = 0
    for c in chunks:
        buf.append(c)
        have += len(c)
        while have >= batch_size:
            cat = np.concatenate(buf)
            yield cat[:batch_size]
            rest = cat[batch_size:]
            buf, have = ([rest] if len(rest) else []), len(rest)
    if have:
        yield np.concatenate(buf)


def parquet_batches(paths: list[str], batch_size: int, shuffle_buffer: int, seed: int) -> Iterator[Batch]:
    """Stream (image_ids, embeddings) from Parquet parts in a seeded random order, through a bounded
    shuffle buffer of `shuffle_buffer` rows: memory stays flat whatever the dataset size."""
    import pyarrow.parquet as pq

    from atlas.store import vectors_to_numpy

    rng = np.random.default_rng(seed)
    buf_ids: list[np.ndarray] = []
    buf_x: list[np.ndarray] = []
    have = 0
    for i in rng.permutation(len(paths)):
        f = pq.ParquetFile(paths[i])
        dim = f.schema_arrow.field("embedding").type.list_size
        for rb in f.iter_batches(batch_size=4096, columns=["image_id", "embedding"]):
            buf_ids.append(rb.column(0).to_numpy())
            buf_x.append(vectors_to_numpy(rb.column(1), dim))
            have += rb.num_rows
            while have >= shuffle_buffer + batch_size:
                ids, x = np.concatenate(buf_ids), np.concatenate(buf_x)
                perm = rng.permutation(len(ids))
                take, keep = perm[:batch_size], perm[batch_size:]
                yield ids[take], x[take]
                buf_ids, buf_x, have = [ids[keep]], [x[keep]], len(keep)
    if have:
        ids, x = np.concatenate(buf_ids), np.concatenate(buf_x)
        perm = rng.permutation(len(ids))
        for s in range(0, len(perm), batch_size):
            yield ids[perm[s : s + batch_size]], x[perm[s : s + batch_size]]
