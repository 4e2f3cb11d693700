"""A planted world at the source study's shape, for scale runs with known answers: a dictionary of F known
unit directions in d dimensions, and sparse non-negative codes in which each sample holds about `l0` of them,
feature f with probability proportional to (f + 1)^-exponent (a power law, capped at `max_frequency`).

An embedding is its code times the dictionary plus Gaussian noise (`embeddings`); an ideal SAE's activations
are the codes themselves (what `atlas bench diff` compares).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SparseCodes:
    """Non-zero code entries, sorted by row: sample `rows[i]` holds feature `features[i]` at `values[i]`."""

    n_rows: int
    rows: np.ndarray  # int64 [nnz]
    features: np.ndarray  # int32 [nnz]
    values: np.ndarray  # float32 [nnz], > 0

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class PlantedWorld:
    n_features: int = 81_920
    dim: int = 1280
    l0: float = 60.0
    exponent: float = 0.8
    max_frequency: float = 0.5
    noise: float = 0.05  # std of the noise per dimension, relative to a unit direction's 1/sqrt(d)
    seed: int = 0

    def dictionary(self) -> np.ndarray:
        """The true directions, float32 [n_features, dim], unit rows."""
        rng = np.random.default_rng([self.seed, 1])
        d_fd = rng.standard_normal((self.n_features, self.dim), dtype=np.float32)
        d_fd /= np.linalg.norm(d_fd, axis=1, keepdims=True)
        return d_fd

    def frequencies(self) -> np.ndarray:
        """Probability that a sample holds feature f (float64 [n_features]); they sum to about `l0`."""
        p = (np.arange(self.n_features) + 1.0) ** -self.exponent
        p *= self.l0 / p.sum()
        for _ in range(20):  # capping moves mass: rescale the uncapped rest until the sum is l0 again
            capped = p >= self.max_frequency
            p = np.minimum(p, self.max_frequency)
            rest = p[~capped].sum()
            if rest <= 0 or abs(p.sum() - self.l0) < 1e-9:
                break
            p[~capped] *= (self.l0 - capped.sum() * self.max_frequency) / rest
        return np.minimum(p, self.max_frequency)

    def codes(self, n_rows: int, seed: int = 0) -> SparseCodes:
        """Codes of `n_rows` samples: feature f is held by Binomial(n_rows, p_f) random samples, with a
        log-normal magnitude around 1."""
        rng = np.random.default_rng([self.seed, 2, seed])
        counts = rng.binomial(n_rows, self.frequencies())
        features = np.repeat(np.arange(self.n_features, dtype=np.int32), counts)
        rows = rng.integers(0, n_rows, len(features))
        key = np.unique(rows * self.n_features + features)  # drops the rare duplicate draws; sorts by row
        rows, features = key // self.n_features, (key % self.n_features).astype(np.int32)
        values = rng.lognormal(0.0, 0.5, len(rows)).astype(np.float32)
        return SparseCodes(n_rows, rows.astype(np.int64), features, values)

    def embeddings(self, codes: SparseCodes, dictionary_fd: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Embeddings of samples start..stop-1: code @ dictionary + noise, float32 [stop - start, dim]."""
        import torch

        lo, hi = np.searchsorted(codes.rows, [start, stop])
        index_2n = np.stack([codes.rows[lo:hi] - start, codes.features[lo:hi].astype(np.int64)])
        code_nf = torch.sparse_coo_tensor(  # sorted by (row, feature) and without repeats: coalesced
            torch.from_numpy(index_2n),
            torch.from_numpy(codes.values[lo:hi]),
            size=(stop - start, self.n_features),
            check_invariants=False,
            is_coalesced=True,
        )
        x_nd = torch.sparse.mm(code_nf, torch.from_numpy(dictionary_fd)).numpy()
        rng = np.random.default_rng([self.seed, 3, start])
        return x_nd + rng.standard_normal(x_nd.shape, dtype=np.float32) * (self.noise / np.sqrt(self.dim))


def write_planted_folder(world: PlantedWorld, root: Path, n_images: int, rows_per_file: int = 100_000) -> dict:
    """`n_images` planted embeddings in clip-retrieval's layout (img_emb/ + metadata/, a source for
    `embeddings:<root>`), with the truth beside them: `dictionary.npy` [n_features, dim] and
    `codes/codes_<i>.parquet` (row, feature_id, value per non-zero code entry). Each file's codes are drawn
    on their own (seed = file index), so memory stays at one file's worth; returns counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from atlas.embedding_source import write_embedding_folder
    from atlas.store import atomic_path, atomic_write_bytes

    root.mkdir(parents=True, exist_ok=True)
    dictionary_fd = world.dictionary()
    buf = io.BytesIO()
    np.save(buf, dictionary_fd)
    atomic_write_bytes(root / "dictionary.npy", buf.getvalue())
    (root / "codes").mkdir(exist_ok=True)
    n_files = max(1, -(-n_images // rows_per_file))
    nnz = 0
    for i in range(n_files):
        lo, hi = i * rows_per_file, min((i + 1) * rows_per_file, n_images)
        codes = world.codes(hi - lo, seed=i)
        x_nd = world.embeddings(codes, dictionary_fd, 0, hi - lo)
        keys = [f"planted-{r:09d}" for r in range(lo, hi)]
        metadata = pa.table({"key": keys, "caption": pa.nulls(hi - lo, pa.string())})
        write_embedding_folder(root, x_nd, metadata, rows_per_file, dtype="float32", first_file=i, n_files=n_files)
        truth = pa.table({"row": codes.rows + lo, "feature_id": codes.features, "value": codes.values})
        with atomic_path(root / "codes" / f"codes_{str(i).zfill(len(str(n_files)))}.parquet") as tmp:
            pq.write_table(truth, tmp)
        nnz += len(codes)
    return {"images": n_images, "files": n_files, "nonzero_codes": nnz, "l0": nnz / max(n_images, 1)}
