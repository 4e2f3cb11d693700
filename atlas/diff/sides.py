"""The two things `atlas diff` compares: each an SAE's decoder, which features are alive, and (where there are
any) its activations over images, as Parquet files of the `activations` schema.

Side A is always an atlas. Side B is an atlas, or an SAE file or folder that `atlas import-sae` reads: its
activations are then computed here, over A's embeddings, into a working folder that the caller removes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from atlas.errors import AtlasError
from atlas.models.sae.autoencoder import WEIGHTS
from atlas.store import AtlasStore


@dataclass(frozen=True)
class DiffSide:
    """One SAE as `atlas diff` sees it."""

    where: str  # the atlas or SAE path, for messages and the manifest
    decoder_fd: np.ndarray  # W_dec rows, float32 [features, d]
    alive_f: np.ndarray  # bool [features]: fired at least once (all True without activations)
    activations: tuple[str, ...]  # Parquet files (image_id, feature_id, value); empty: none
    images: tuple[str, ...]  # Parquet files with an image_id column: the images the activations cover
    store: AtlasStore | None = None  # the atlas, when the side is one

    @property
    def n_features(self) -> int:
        return int(self.decoder_fd.shape[0])

    @property
    def has_activations(self) -> bool:
        return bool(self.activations)

    @cached_property
    def unit_fd(self) -> np.ndarray:
        """Unit-norm decoder directions (a zero row stays zero)."""
        return self.decoder_fd / np.maximum(self.norms_f, 1e-12)[:, None].astype(np.float32)

    @cached_property
    def norms_f(self) -> np.ndarray:
        """Decoder row norms, float64 (summed in float64 without a float64 copy of the decoder)."""
        return np.sqrt(np.einsum("fd,fd->f", self.decoder_fd, self.decoder_fd, dtype=np.float64))


def open_atlas_side(path: Path) -> DiffSide:
    """An atlas with a trained (or imported) SAE; its activations if featurize has run."""
    store = AtlasStore(path)
    if not store.is_atlas():
        raise AtlasError(f"{path}: not an atlas (no manifest.json) nor an SAE file or folder")
    store.require_stage("train", "atlas diff")
    decoder = read_decoder(store.sae_dir / WEIGHTS)
    _, files = store.snapshot()
    if store.stage("featurize").get("status") != "done" or not files["features"]:
        return DiffSide(str(path), decoder, np.ones(len(decoder), bool), (), (), store)
    features = pq.read_table([str(p) for p in files["features"]], columns=["feature_id", "alive"])
    alive = np.zeros(len(decoder), bool)
    alive[features.column("feature_id").to_numpy()] = features.column("alive").to_numpy(zero_copy_only=False)
    return DiffSide(
        str(path),
        decoder,
        alive,
        tuple(str(p) for p in files["activations"]),
        tuple(str(p) for p in files["images"]),
        store,
    )


def read_decoder(weights: Path) -> np.ndarray:
    """W_dec [features, d] of an SAE saved by the atlas (only that tensor is read)."""
    from safetensors import safe_open

    if not weights.exists():
        raise AtlasError(f"{weights}: no trained SAE here")
    with safe_open(str(weights), framework="np") as f:
        return np.ascontiguousarray(f.get_tensor("W_dec"), dtype=np.float32)


def open_sae_side(path: Path, over: DiffSide, work: Path, batch_size: int = 4096) -> DiffSide:
    """An SAE read as `atlas import-sae` reads it, its activations computed over the embeddings of atlas
    `over` and written to `work` (one Parquet file per embeddings part)."""
    import torch

    from atlas.featurize import FeatureStats, featurize_part
    from atlas.import_sae import check_width, import_sae

    if over.store is None:
        raise AtlasError(f"{path}: an SAE is compared against an atlas, not against another SAE")
    sae = import_sae(path)
    check_width(sae, over.decoder_fd.shape[1], str(path))
    _, files = over.store.snapshot()
    if not files["embeddings"]:
        return DiffSide(str(path), sae.W_dec.detach().numpy().copy(), np.ones(sae.cfg.n_features, bool), (), ())
    work.mkdir(parents=True, exist_ok=True)
    stats = FeatureStats.empty(sae.cfg.n_features, 1)
    written = []
    for i, part in enumerate(files["embeddings"]):
        table, _ = featurize_part(sae, part, batch_size, torch.device("cpu"), stats)
        out = work / f"part-{i:05d}.parquet"
        pq.write_table(table, out)
        written.append(str(out))
    alive = stats.features_table(sae.decoder_norms().detach().numpy()).column("alive").to_numpy(zero_copy_only=False)
    images = tuple(str(p) for p in files["images"])
    return DiffSide(str(path), sae.W_dec.detach().numpy().copy(), np.asarray(alive, bool), tuple(written), images)
