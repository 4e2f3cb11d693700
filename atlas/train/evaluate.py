"""Held-out evaluation of an SAE: the contract metrics over every row of a stream."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from atlas.metrics import ReconstructionMetrics
from atlas.models.sae.autoencoder import SparseAutoencoder
from atlas.train.batches import rebatch


@torch.inference_mode()
def evaluate_sae(sae: SparseAutoencoder, chunks: Iterable[np.ndarray], device: torch.device) -> dict[str, float]:
    """The contract metrics (README, "The atlas directory") of `sae` over every row of `chunks`, in the SAE's
    scaled units; dead_fraction = features that never fired on these rows."""
    sae = sae.to(device).eval()
    s = sae.cfg.input_scale
    metrics = ReconstructionMetrics()
    norms = sae.decoder_norms()
    fired_any = torch.zeros(sae.cfg.n_features, dtype=torch.bool, device=device)
    for x_np in rebatch(chunks, 4096):
        x = torch.from_numpy(np.asarray(x_np, dtype=np.float32)).to(device)
        x_hat, a, _ = sae(x)
        metrics.update(x * s, x_hat * s, a, norms)
        fired_any |= (a > 0).any(dim=0)
    out = metrics.result(sae.cfg.l1_coefficient)
    out["dead_fraction"] = float((~fired_any).float().mean())
    out["n"] = metrics.n
    return out
