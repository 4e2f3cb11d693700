"""The sparse autoencoder every stage uses, whatever its variant, saved as safetensors + config.json.

Shapes in names: `x_bd` is a batch of inputs (B x d_in), `a_bf` activations (B x n_features).

All variants share one set of weights (W_enc [d, f], b_enc [f], W_dec [f, d], b_dec [d]); a variant
(`variant.py`, looked up by `cfg.kind` in `registry.py`) adds its activation and any tensors of its own
(JumpReLU's thresholds).

Inputs are multiplied by `input_scale` before encoding (chosen at training time so the mean input norm is
sqrt(d_in)) and reconstructions are divided by it again: `decode(encode(x))` is in the units of `x`.
`apply_b_dec_to_input` (true for SAEs trained here; SAELens makes it an option) says whether b_dec is
subtracted from the input before encoding.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atlas.errors import AtlasError
from atlas.models.sae.registry import variant_for
from atlas.models.sae.variant import SAEVariant

WEIGHTS = "sae.safetensors"
CONFIG = "config.json"


@dataclass(frozen=True, slots=True)
class SAEConfig:
    """What encoding and decoding need; saved next to the weights."""

    d_in: int
    n_features: int
    kind: str = "relu"  # a key of registry.VARIANTS
    l1_coefficient: float = 0.3  # relu: reported in the `loss` metric
    k: int = 0  # active features per input (topk, batchtopk)
    input_scale: float = 1.0
    apply_b_dec_to_input: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # training provenance, held-out evaluation


class SparseAutoencoder(nn.Module):
    def __init__(self, cfg: SAEConfig, variant: SAEVariant | None = None):
        """`variant`: the configured variant when training (default: `cfg.kind` with default settings)."""
        super().__init__()
        variant = variant or variant_for(cfg.kind)
        if variant.kind != cfg.kind:
            raise AtlasError(f"SAE kind {cfg.kind!r} given the settings of a {variant.kind!r} SAE")
        if problem := variant.check(cfg):
            raise AtlasError(problem)
        self.cfg = cfg
        self.variant = variant
        d, f = cfg.d_in, cfg.n_features
        self.W_enc = nn.Parameter(torch.empty(d, f))
        self.b_enc = nn.Parameter(torch.zeros(f))
        self.W_dec = nn.Parameter(torch.empty(f, d))
        self.b_dec = nn.Parameter(torch.zeros(d))
        for name, (shape, trainable) in variant.extra_tensors(cfg).items():
            if trainable:
                self.register_parameter(name, nn.Parameter(torch.zeros(shape)))
            else:
                self.register_buffer(name, torch.zeros(shape))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Decoder rows random with the variant's norm, encoder = decoder transposed, then the variant's
        own tensors."""
        with torch.no_grad():
            w = torch.randn(self.cfg.n_features, self.cfg.d_in, generator=generator)
            w = self.variant.decoder_init_norm * w / w.norm(dim=1, keepdim=True)
            self.W_dec.copy_(w)
            self.W_enc.copy_(w.T)
            self.b_enc.zero_()
            self.b_dec.zero_()
            self.variant.initialize(self)

    def pre_activations(self, x_bd: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations [B, n_features] of inputs in their own units."""
        x = x_bd * self.cfg.input_scale
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activate(self, pre_bf: torch.Tensor) -> torch.Tensor:
        return self.variant.activate(pre_bf, self)

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
        """Unit-norm decoder rows (most variants keep them so in training; activations carry the scale)."""
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
