"""FAISS indexes over the atlas: feature decoder directions (nearest features) and image embeddings (nearest
images), inner product over L2-normalised vectors (cosine).

One small interface whatever the size and device: `build_index` writes an exact index (`IndexFlatIP`) up to
`EXACT_MAX` vectors; up to `COMPRESSED_MAX`, a scan over 4-bit product-quantised codes (fast-scan PQ, d/4
sub-vectors) whose best `REFINE_FACTOR` x k candidates are re-scored exactly (`PQ<d/4>x4fs,RFlat`): an exact
scan of 81,920 x 1280 floats reads 420 MB a query (23 ms here), the codes 13 MB (0.5 ms), with the same top
10 on the planted world (benchmarks/scale.json), and it needs no cluster structure, which decoder directions
need not have; above that an inverted-file index (`IVF<sqrt N>,Flat`, `DEFAULT_NPROBE` lists probed).
`load_index` reads an index back and moves it to the GPU when a GPU build of FAISS (faiss-gpu) sees CUDA
and holds that index type, otherwise it stays on the CPU (faiss-cpu). Ids are the atlas's own (`feature_id`,
`image_id`) through `IndexIDMap2`, which also gives `vector(index, id)` back.
"""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

from atlas.errors import AtlasError
from atlas.store import AtlasStore

FEATURES = "features.faiss"
IMAGES = "images.faiss"
EXACT_MAX = 16_384  # an exact scan of 16k x 1280 floats is ~5 ms a query on one core
COMPRESSED_MAX = 1_000_000  # past this a scan of the codes is slower than IVF's few lists
REFINE_FACTOR = 10
PQ_TRAIN = 65_536  # the PQ codebooks train on a seeded sample of at most this many vectors
DEFAULT_NPROBE = 16
TRAIN_PER_LIST = 64  # IVF k-means trains on at most this many vectors per list


def normalised(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32 and contiguous."""
    x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def new_index(dim: int, n: int, exact_max: int = EXACT_MAX, compressed_max: int = COMPRESSED_MAX) -> faiss.Index:
    """An empty cosine index for `n` vectors: exact up to `exact_max`, re-scored fast-scan PQ up to
    `compressed_max` (when `dim` splits into an even number of 4-d sub-vectors), IVF with sqrt(n) lists
    above; the last two must be trained before adding."""
    if n <= exact_max:
        inner = faiss.IndexFlatIP(dim)
    elif n <= compressed_max and dim % 8 == 0:
        inner = faiss.index_factory(dim, f"PQ{dim // 4}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
        faiss.downcast_index(inner).k_factor = REFINE_FACTOR
    else:
        nlist = max(1, int(math.sqrt(n)))
        inner = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    return faiss.IndexIDMap2(inner)


def fill_index(index: faiss.Index, vectors: np.ndarray, ids, nprobe: int = DEFAULT_NPROBE) -> faiss.Index:
    """Train (approximate indexes only) and add `vectors` with `ids`."""
    x = normalised(vectors)
    if not index.is_trained:
        ivf = _ivf(index)
        sample = PQ_TRAIN if ivf is None else TRAIN_PER_LIST * ivf.nlist
        if len(x) > sample:  # training on a seeded sample: enough for the codebooks, a fraction of the time
            x_train = x[np.random.default_rng(0).choice(len(x), sample, replace=False)]
        else:
            x_train = x
        index.train(x_train)
        set_nprobe(index, nprobe)
    index.add_with_ids(x, np.asarray(ids, dtype=np.int64))
    return index


def build_index(
    vectors: np.ndarray,
    ids,
    path: Path,
    exact_max: int = EXACT_MAX,
    nprobe: int = DEFAULT_NPROBE,
    compressed_max: int = COMPRESSED_MAX,
) -> faiss.Index:
    """A cosine index over `vectors` [N, d], returning `ids` (int64) from searches; written atomically."""
    index = fill_index(new_index(vectors.shape[1], len(vectors), exact_max, compressed_max), vectors, ids, nprobe)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    faiss.write_index(index, str(tmp))
    tmp.replace(path)
    return index


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    """Lists probed per query by an IVF index (no effect on an exact one)."""
    ivf = _ivf(index)
    if ivf is not None:
        ivf.nprobe = nprobe


def inner_index(index: faiss.Index) -> faiss.Index:
    """The index under the id map: IndexFlatIP, IndexRefineFlat (PQ codes re-scored) or IndexIVFFlat."""
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index


def is_exact(index: faiss.Index) -> bool:
    """Whether searches scan every stored vector exactly (no codes, no lists)."""
    return isinstance(inner_index(index), faiss.IndexFlat)


def _ivf(index: faiss.Index):
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees a CUDA device."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def to_device(index: faiss.Index) -> faiss.Index:
    """The index on the GPU (faiss-gpu with CUDA), else unchanged. Falls back to the CPU if the GPU build
    cannot hold this index type."""
    if not gpu_available():
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except RuntimeError:
        return index


def load_index(store: AtlasStore, name: str, device: bool = True) -> faiss.Index:
    """Read `index/<name>`; on a GPU build with CUDA it is moved to the GPU (`device=False` keeps the CPU)."""
    path = store.index_dir / name
    if not path.exists():
        raise AtlasError(f"{store.root}: no vector index {name} (run `atlas index`)")
    index = faiss.read_index(str(path))
    ivf = _ivf(index)
    if ivf is not None:
        ivf.make_direct_map()  # so that `vector(index, id)` works on IVF too
    return to_device(index) if device else index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores [Q, k] and ids [Q, k] of the nearest vectors (ids are -1 where fewer than k exist)."""
    scores, ids = index.search(normalised(queries), k)
    return scores, ids


def vector(index: faiss.Index, item_id: int) -> np.ndarray | None:
    """The stored (normalised) vector of `item_id`, or None if the index does not hold it."""
    try:
        return index.reconstruct(int(item_id))
    except RuntimeError:
        return None
