"""SAEs edited with known answers, for the `atlas diff` tests: the same SAE as a plain state dict with its
features permuted, or with one feature replaced by two whose sum it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file

from atlas.models.sae.autoencoder import load_sae


def as_state_dict(sae, perm: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """The SAE as plain W_enc/b_enc/W_dec/b_dec with its input scale and b_dec folded in (what
    `from_state_dict` reads), features reordered by `perm` (new feature j = old feature perm[j])."""
    s = sae.cfg.input_scale
    W_enc, b_enc, W_dec, b_dec = (t.detach().clone() for t in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    b_enc = b_enc - b_dec @ W_enc if sae.cfg.apply_b_dec_to_input else b_enc
    sd = {"W_enc": W_enc * s, "b_enc": b_enc, "W_dec": W_dec / s, "b_dec": b_dec / s}
    if perm is not None:
        p = torch.from_numpy(perm)
        sd = {"W_enc": sd["W_enc"][:, p], "b_enc": sd["b_enc"][p], "W_dec": sd["W_dec"][p], "b_dec": sd["b_dec"]}
    return {k: v.contiguous() for k, v in sd.items()}


def split_one_feature(built: Path, tmp_path: Path) -> tuple[Path, int, int]:
    """A state dict whose most frequent feature k is replaced by two rows d/2 + u and d/2 - u (u orthogonal to
    d, |u| = |d|/2), both with k's encoder: each fires exactly as k did, and together they decode to k."""
    sae = load_sae(built / "sae")
    freq = {r["feature_id"]: r["frequency"] for r in pq.read_table(built / "features").to_pylist()}
    k = max(freq, key=lambda f: freq[f])
    sd = as_state_dict(sae)
    d = sd["W_dec"][k]
    u = torch.randn(d.shape[0], generator=torch.Generator().manual_seed(0))
    u = u - (u @ d) / (d @ d) * d
    u = u / u.norm() * d.norm() / 2
    n = sae.cfg.n_features
    sd["W_dec"] = torch.cat([sd["W_dec"], (d / 2 - u)[None]])
    sd["W_dec"][k] = d / 2 + u
    sd["W_enc"] = torch.cat([sd["W_enc"], sd["W_enc"][:, k : k + 1]], dim=1)
    sd["b_enc"] = torch.cat([sd["b_enc"], sd["b_enc"][k : k + 1]])
    save_file({key: v.contiguous() for key, v in sd.items()}, str(tmp_path / "split.safetensors"))
    return tmp_path / "split.safetensors", k, n
