"""BatchTopK (Bussmann et al. 2024): in training, keep the k * B largest activations of a batch of B inputs,
so k is an average and busy inputs may use more features than plain ones. At inference each input is
encoded on its own, with a threshold learnt in training (an exponential moving average of the smallest
activation kept), exactly as a JumpReLU with one threshold for all features."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from atlas.errors import AtlasError
from atlas.models.sae.topk import TopK
from atlas.models.sae.variant import TrainStep

if TYPE_CHECKING:
    from torch import Tensor

    from atlas.models.sae.autoencoder import SAEConfig, SparseAutoencoder


def batch_topk(pre_bf: Tensor, k: int) -> Tensor:
    """The k * B largest ReLU'd pre-activations of the whole batch, zero elsewhere."""
    acts_bf = pre_bf.relu()
    flat = acts_bf.flatten()
    values, indices = flat.topk(min(k * acts_bf.shape[0], flat.numel()), sorted=False)
    return flat.new_zeros(flat.shape).scatter_(-1, indices, values).reshape(acts_bf.shape)


class BatchTopK(TopK):
    """k active features per input on average over a batch; a learnt threshold at inference."""

    kind: Literal["batchtopk"] = "batchtopk"  # type: ignore[assignment]
    threshold_lr: float = Field(0.01, gt=0, le=1, description="rate of the threshold's moving average")

    saelens_architectures: ClassVar[tuple[str, ...]] = ("batchtopk",)

    def extra_tensors(self, cfg: SAEConfig) -> dict[str, tuple[tuple[int, ...], bool]]:
        return {"threshold": ((), False)}

    def activate(self, pre_bf: Tensor, sae: SparseAutoencoder) -> Tensor:
        if sae.training:
            return batch_topk(pre_bf, sae.cfg.k)
        return pre_bf * (pre_bf > sae.get_buffer("threshold").clamp_min(0))

    def after_step(self, sae: SparseAutoencoder, step: TrainStep) -> None:
        super().after_step(sae, step)
        kept = step.acts_bf[step.acts_bf > 0]
        if kept.numel():
            threshold = sae.get_buffer("threshold")
            ema = (1 - self.threshold_lr) * threshold.double() + self.threshold_lr * kept.min().double()
            threshold.copy_(ema)

    def from_saelens(self, cfg: dict[str, Any], tensors: dict[str, Tensor], where: str) -> dict[str, Any]:
        if "topk_threshold" not in tensors:
            raise AtlasError(f"{where}: a batchtopk SAE needs its topk_threshold tensor")
        tensors["threshold"] = tensors.pop("topk_threshold").reshape(())
        return super().from_saelens(cfg, tensors, where)
