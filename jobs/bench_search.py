"""`atlas bench search`: the approximate index (IVF) against exact search (the bare baseline, IndexFlatIP),
on a synthetic set shaped like an atlas's decoder directions: N unit vectors in DIM dimensions drawn around
N/80 random centres (real embeddings are clustered; uniform random vectors would make any IVF look bad).

Reports recall@10 of IVF against exact, per-query latency (one query at a time, as the viewer asks) for
both, batched throughput, and build times; on a GPU build of FAISS with CUDA both run on the GPU."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from atlas.vector_index import fill_index, gpu_available, new_index, normalised, search, to_device


def synthetic_directions(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """N unit vectors around max(1, N/80) random unit centres (cosine to the centre about 0.7)."""
    rng = np.random.default_rng(seed)
    centres = normalised(rng.standard_normal((max(1, n // 80), dim), dtype=np.float32))
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    return normalised(x)


def _per_query_ms(index, queries: np.ndarray, k: int) -> float:
    search(index, queries[:5], k)  # warm-up
    t0 = time.perf_counter()
    for q in queries:
        search(index, q, k)
    return (time.perf_counter() - t0) / len(queries) * 1000


def _batched_qps(index, queries: np.ndarray, k: int) -> float:
    t0 = time.perf_counter()
    search(index, queries, k)
    return len(queries) / max(time.perf_counter() - t0, 1e-9)


def run_search_bench(n: int, dim: int, n_queries: int, nprobe: int, k: int = 10) -> dict[str, Any]:
    x = synthetic_directions(n, dim)
    rng = np.random.default_rng(1)
    queries = normalised(
        x[rng.choice(n, n_queries, replace=False)]
        + rng.standard_normal((n_queries, dim), dtype=np.float32) / np.sqrt(dim)
    )
    ids = np.arange(n)

    t0 = time.perf_counter()
    exact = to_device(fill_index(new_index(dim, n, exact_max=n), x, ids))
    exact_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    approx = to_device(fill_index(new_index(dim, n, exact_max=0), x, ids, nprobe=nprobe))
    approx_build = time.perf_counter() - t0

    _, truth = search(exact, queries, k)
    _, found = search(approx, queries, k)
    recall = float(np.mean([len(set(t) & set(f)) / k for t, f in zip(truth, found, strict=True)]))
    exact_ms = _per_query_ms(exact, queries, k)
    approx_ms = _per_query_ms(approx, queries, k)
    return {
        "n": n,
        "dim": dim,
        "queries": n_queries,
        "k": k,
        "data": "synthetic: unit vectors around n/80 random centres",
        "faiss_gpu": gpu_available(),
        "recall_at_10": recall,
        "exact": {
            "index": "IndexFlatIP",
            "build_s": exact_build,
            "ms_per_query": exact_ms,
            "batched_qps": _batched_qps(exact, queries, k),
        },
        "approximate": {
            "index": f"IVF{int(np.sqrt(n))},Flat",
            "nprobe": nprobe,
            "build_s": approx_build,
            "ms_per_query": approx_ms,
            "batched_qps": _batched_qps(approx, queries, k),
        },
        "speedup": exact_ms / max(approx_ms, 1e-9),
    }
