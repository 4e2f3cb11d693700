"""TopK (Gao et al. 2024): keep the k largest pre-activations of each input, with the AuxK loss that lets
dead features learn from the residual. Decoder rows stay unit-norm: activations carry the scale."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from atlas.models.sae.variant import SAEVariant, TrainStep

if TYPE_CHECKING:
    from torch import Tensor

    from atlas.models.sae.autoencoder import SAEConfig, SparseAutoencoder


def auxk_loss(
    sae: SparseAutoencoder, x_bd: Tensor, x_hat_bd: Tensor, pre_bf: Tensor, dead_f: Tensor, aux_k: int
) -> Tensor:
    """AuxK: the top `aux_k` dead features must reconstruct the residual of the main reconstruction (all in
    scaled units). The residual already has b_dec taken out (x_hat includes it), so the auxiliary
    reconstruction is `a_aux @ W_dec` with no bias: adding b_dec again would count it twice.
    Normalised by the residual's variance, so the coefficient is scale-free."""
    n_dead = int(dead_f.sum())
    if n_dead == 0:
        return pre_bf.new_zeros(())
    e_bd = (x_bd - x_hat_bd).detach()
    masked_bf = pre_bf.masked_fill(~dead_f, float("-inf"))
    values, indices = masked_bf.topk(min(aux_k, n_dead), dim=-1, sorted=False)
    a_aux_bf = pre_bf.new_zeros(pre_bf.shape).scatter_(-1, indices, values.relu())
    e_hat_bd = a_aux_bf @ sae.W_dec
    denom = (e_bd - e_bd.mean(dim=0)).pow(2).sum(dim=1).mean().clamp_min(1e-12)
    return (e_hat_bd - e_bd).pow(2).sum(dim=1).mean() / denom


class TopK(SAEVariant):
    """Exactly k active features per input (ReLU'd), trained with AuxK against dead features."""

    kind: Literal["topk"] = "topk"
    k: int = Field(8, ge=1, description="active features per input")
    aux_k: int = Field(0, ge=0, description="dead features the AuxK loss may use per input (0 = d_in / 2)")
    aux_coefficient: float = Field(1 / 32, ge=0, description="weight of the AuxK loss against dead features")

    saelens_architectures: ClassVar[tuple[str, ...]] = ("topk",)
    saelens_rescale_foldable: ClassVar[bool] = True

    def check(self, cfg: SAEConfig) -> str | None:
        return f"a {self.kind} SAE needs k >= 1" if cfg.k < 1 else None

    def activate(self, pre_bf: Tensor, sae: SparseAutoencoder) -> Tensor:
        k = min(sae.cfg.k, pre_bf.shape[-1])
        values, indices = pre_bf.topk(k, dim=-1, sorted=False)
        return pre_bf.new_zeros(pre_bf.shape).scatter_(-1, indices, values.relu())

    def sae_fields(self) -> dict[str, Any]:
        return {"k": self.k}

    def loss_terms(self, sae: SparseAutoencoder, step: TrainStep) -> dict[str, Tensor]:
        aux_k = self.aux_k or max(1, sae.cfg.d_in // 2)
        aux = auxk_loss(sae, step.x_bd, step.x_hat_bd, step.pre_bf, step.dead_f, aux_k)
        return {"auxk": self.aux_coefficient * aux}

    def from_saelens(self, cfg: dict[str, Any], tensors: dict[str, Tensor], where: str) -> dict[str, Any]:
        return {"k": round(float(cfg.get("k", 0)))}
