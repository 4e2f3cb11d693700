"""ReLU + L1: the source study's vanilla SAE. The L1 penalty weights each activation by its decoder row's
norm (Anthropic, April 2024), so shrinking the decoder cannot buy sparsity."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from atlas.models.sae.variant import SAEVariant, TrainStep

if TYPE_CHECKING:
    from torch import Tensor

    from atlas.models.sae.autoencoder import SparseAutoencoder


class ReLU(SAEVariant):
    """ReLU activations and a decoder-norm-weighted L1 penalty."""

    kind: Literal["relu"] = "relu"
    l1_coefficient: float = Field(0.2, ge=0, description="weight of the L1 penalty")

    decoder_init_norm: ClassVar[float] = 0.1
    unit_norm_decoder: ClassVar[bool] = False
    saelens_architectures: ClassVar[tuple[str, ...]] = ("standard",)

    def activate(self, pre_bf: Tensor, sae: SparseAutoencoder) -> Tensor:
        return pre_bf.relu()

    def sae_fields(self) -> dict[str, Any]:
        return {"l1_coefficient": self.l1_coefficient}

    def loss_terms(self, sae: SparseAutoencoder, step: TrainStep) -> dict[str, Tensor]:
        return {"l1": sae.cfg.l1_coefficient * (step.acts_bf * step.decoder_norms_f).sum(dim=1).mean()}

    def from_saelens(self, cfg: dict[str, Any], tensors: dict[str, Tensor], where: str) -> dict[str, Any]:
        return {"l1_coefficient": float(cfg.get("l1_coefficient", 0.0) or 0.0)}
