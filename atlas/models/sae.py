"""Sparse autoencoders: ReLU + L1 (the source study's vanilla SAE) and TopK (+ AuxK in training), saved as
safetensors + config.json.

Shapes in names: `x_bd` is a batch of inputs (B x d_in), `a_bf` activations (B x n_features).

Both variants share one set of weights (W_enc [d, f], b_enc [f], W_dec [f, d], b_dec [d]) and differ only in
the activation function, chosen in one place: `ACTIVATIONS[cfg.kind]`.

Inputs are multiplied by `input_scale` before encoding (chosen at training time so the mean input norm is
sqrt(d_in)) and reconstructions are divided by it again: `decode(encode(x))` is in the units of `x`.
`apply_b_dec_to_input` (true for SAEs trained here; SAELens makes it an option) says whether b_dec is
subtracted from the input before encoding.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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
    kind: str = "relu"  # a key of ACTIVATIONS
    l1_coefficient: float = 0.3
    k: int = 0  # active features per input (topk only)
    input_scale: float = 1.0
    apply_b_dec_to_input: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # training provenance, held-out evaluation


def _relu(pre_bf: torch.Tensor, cfg: SAEConfig) -> torch.Tensor:
    return torch.relu(pre_bf)


def _topk(pre_bf: torch.Tensor, cfg: SAEConfig) -> torch.Tensor:
    """Keep the k largest pre-activations of each row (ReLU'd), zero elsewhere."""
    k = min(cfg.k, pre_bf.shape[-1])
    values, indices = pre_bf.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre_bf).scatter_(-1, indices, torch.relu(values))


# The SAE variants, dispatched here and nowhere else.
ACTIVATIONS: dict[str, Callable[[torch.Tensor, SAEConfig], torch.Tensor]] = {"relu": _relu, "topk": _topk}


class SparseAutoencoder(nn.Module):
    def __init__(self, cfg: SAEConfig):
        super().__init__()
        if cfg.kind not in ACTIVATIONS:
            raise AtlasError(f"SAE kind {cfg.kind!r} is not known (known: {', '.join(ACTIVATIONS)})")
        if cfg.kind == "topk" and cfg.k < 1:
            raise AtlasError("a topk SAE needs k >= 1")
        self.cfg = cfg
        d, f = cfg.d_in, cfg.n_features
        self.W_enc = nn.Parameter(torch.empty(d, f))
        self.b_enc = nn.Parameter(torch.zeros(f))
        self.W_dec = nn.Parameter(torch.empty(f, d))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Decoder rows random (norm 0.1 for ReLU, unit for TopK), encoder = decoder transposed."""
        with torch.no_grad():
            w = torch.randn(self.cfg.n_features, self.cfg.d_in, generator=generator)
            w = (0.1 if self.cfg.kind == "relu" else 1.0) * w / w.norm(dim=1, keepdim=True)
            self.W_dec.copy_(w)
            self.W_enc.copy_(w.T)
            self.b_enc.zero_()
            self.b_dec.zero_()

    def pre_activations(self, x_bd: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations [B, n_features] of inputs in their own units."""
        x = x_bd * self.cfg.input_scale
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activate(self, pre_bf: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.cfg.kind](pre_bf, self.cfg)

    def encode(self, x_bd: torch.Tensor) -> torch.Tensor:
        """Inputs in their own units -> non-negative activations [B, n_features]."""
        return self.activate(self.pre_activations(x_bd))

    def decode(self, a_bf: torch.Tensor) -> torch.Tensor:
        """Activations -> reconstruction in the input's units."""
        return (a_bf @ self.W_dec + self.b_dec) / self.cfg.input_scale

    def forward(self, x_bd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, activations, pre-activations)."""
        pre = self.pre_activations(x_bd)
        a = self.activate(pre)
        return self.decode(a), a, pre

    def decoder_norms(self) -> torch.Tensor:
        return self.W_dec.norm(dim=1)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Unit-norm decoder rows (TopK training keeps them so; activations carry the scale)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

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
