"""JumpReLU (Rajamanoharan et al. 2024, Gemma Scope): a feature fires only above its own learnt threshold,
and the L0 itself is the sparsity penalty. The step function has no gradient, so threshold gradients come
from a straight-through estimator with a rectangle kernel of width `bandwidth` around the threshold.
The threshold is kept as its logarithm (always positive); SAELens folders store it plainly."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from atlas.errors import AtlasError
from atlas.models.sae.variant import SAEVariant, TrainStep

if TYPE_CHECKING:
    from torch import Tensor

    from atlas.models.sae.autoencoder import SAEConfig, SparseAutoencoder

_SMALLEST_THRESHOLD = 1e-30  # SAELens thresholds <= 0 mean plain ReLU; log needs a positive number


def _rectangle(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


def straight_through(theta_f: Tensor, grad_bf: Tensor) -> Tensor:
    """Zero in value, `grad_bf` summed over the batch as theta's gradient: how a pseudo-derivative
    is attached to a function whose true derivative in theta is zero (or a Dirac delta)."""
    return (theta_f - theta_f.detach()) * grad_bf.detach()


class JumpReLU(SAEVariant):
    """Per-feature thresholds, trained with an L0 penalty through a straight-through estimator."""

    kind: Literal["jumprelu"] = "jumprelu"
    l0_coefficient: float = Field(0.02, ge=0, description="weight of the L0 penalty (expected active features)")
    initial_threshold: float = Field(0.01, gt=0, description="every feature's threshold at the start")
    bandwidth: float = Field(0.05, gt=0, description="width of the straight-through estimator's kernel")

    saelens_architectures: ClassVar[tuple[str, ...]] = ("jumprelu",)

    def extra_tensors(self, cfg: SAEConfig) -> dict[str, tuple[tuple[int, ...], bool]]:
        return {"log_threshold": ((cfg.n_features,), True)}

    def initialize(self, sae: SparseAutoencoder) -> None:
        sae.get_parameter("log_threshold").fill_(self.initial_threshold).log_()

    def activate(self, pre_bf: Tensor, sae: SparseAutoencoder) -> Tensor:
        theta_f = sae.get_parameter("log_threshold").exp()
        acts_bf = pre_bf * (pre_bf > theta_f)
        if not sae.training:
            return acts_bf
        kernel_bf = _rectangle((pre_bf.detach() - theta_f.detach()) / self.bandwidth)
        return acts_bf + straight_through(theta_f, -(theta_f.detach() / self.bandwidth) * kernel_bf)

    def loss_terms(self, sae: SparseAutoencoder, step: TrainStep) -> dict[str, Tensor]:
        theta_f = sae.get_parameter("log_threshold").exp()
        pre_bf = step.pre_bf.detach()
        kernel_bf = _rectangle((pre_bf - theta_f.detach()) / self.bandwidth)
        fired_bf = (pre_bf > theta_f.detach()).to(pre_bf.dtype)
        l0_bf = fired_bf + straight_through(theta_f, -kernel_bf / self.bandwidth)
        return {"l0": self.l0_coefficient * l0_bf.sum(dim=-1).mean()}

    def from_saelens(self, cfg: dict[str, Any], tensors: dict[str, Tensor], where: str) -> dict[str, Any]:
        if "threshold" not in tensors:
            raise AtlasError(f"{where}: a jumprelu SAE needs its threshold tensor")
        tensors["log_threshold"] = tensors.pop("threshold").float().clamp_min(_SMALLEST_THRESHOLD).log()
        return {}
