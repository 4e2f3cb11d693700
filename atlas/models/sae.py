"""The sparse autoencoder: ReLU + L1 (the source study's vanilla SAE), saved as safetensors + config.json.

Shapes in names: `x_bd` is a batch of inputs (B x d_in), `a_bf` activations (B x n_features).

Inputs are multiplied by `input_scale` before encoding (chosen at training time so the mean input norm is
sqrt(d_in)) and reconstructions are divided by it again: `decode(encode(x))` is in the units of `x`.
The L1 penalty weights each activation by its decoder row's norm, so the model cannot shrink activations
by growing decoder norms.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atlas.errors import AtlasError

WEIGHTS = "sae.safetensors"
CONFIG = "config.json"


@dataclass(frozen=True, slots=True)
class SAEConfig:
    d_in: int
    n_features: int
    kind: str = "relu"
    l1_coefficient: float = 0.3
    input_scale: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)  # training provenance, held-out evaluation


class SparseAutoencoder(nn.Module):
    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        d, f = cfg.d_in, cfg.n_features
        self.W_enc = nn.Parameter(torch.empty(d, f))
        self.b_enc = nn.Parameter(torch.zeros(f))
        self.W_dec = nn.Parameter(torch.empty(f, d))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Decoder rows random with norm 0.1, encoder = decoder transposed (a common, stable start)."""
        with torch.no_grad():
            w = torch.randn(self.cfg.n_features, self.cfg.d_in, generator=generator)
            w = 0.1 * w / w.norm(dim=1, keepdim=True)
            self.W_dec.copy_(w)
            self.W_enc.copy_(w.T)
            self.b_enc.zero_()
            self.b_dec.zero_()

    def encode(self, x_bd: torch.Tensor) -> torch.Tensor:
        """Inputs in their own units -> non-negative activations [B, n_features]."""
        x = x_bd * self.cfg.input_scale
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, a_bf: torch.Tensor) -> torch.Tensor:
        """Activations -> reconstruction in the input's units."""
        return (a_bf @ self.W_dec + self.b_dec) / self.cfg.input_scale

    def forward(self, x_bd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.encode(x_bd)
        return self.decode(a), a

    def decoder_norms(self) -> torch.Tensor:
        return self.W_dec.norm(dim=1)

    def save(self, out_dir: Path, extra: dict[str, Any] | None = None) -> None:
        """Write weights and config to `out_dir` (atomically, file by file)."""
        from safetensors.torch import save

        from atlas.store import atomic_write_bytes, atomic_write_json

        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(out_dir / WEIGHTS, save(state))
        cfg = asdict(self.cfg)
        if extra:
            cfg["extra"] = {**cfg["extra"], **extra}
        atomic_write_json(out_dir / CONFIG, cfg)


def load_sae(sae_dir: Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load an SAE saved by `SparseAutoencoder.save` (safetensors only: no unpickling)."""
    from safetensors.torch import load_file

    cfg_path, w_path = sae_dir / CONFIG, sae_dir / WEIGHTS
    if not cfg_path.exists() or not w_path.exists():
        raise AtlasError(f"{sae_dir}: no trained SAE here (expected {CONFIG} and {WEIGHTS})")
    raw = json.loads(cfg_path.read_text())
    cfg = SAEConfig(**raw)
    sae = SparseAutoencoder(cfg)
    sae.load_state_dict(load_file(str(w_path)))
    return sae.to(device).eval()
