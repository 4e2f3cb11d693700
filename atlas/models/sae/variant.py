"""What an SAE architecture is: `SAEVariant`, the `[sae]` config section that trains it and the behaviour
that sets it apart (activation, initialisation, extra loss terms, the SAELens mapping).

The split that keeps the rest of the code variant-blind:
- `SAEConfig` (autoencoder.py) holds what encode/decode need and is saved with the weights (`k`, ...);
- the variant's fields hold what only training needs (coefficients, bandwidths, AuxK settings);
- every hook takes the model, so one loaded SAE and one configured variant are all a caller needs.

A loaded SAE carries its variant with default settings (`variant_for(kind)`); the trainer hands the
configured one to the model it trains. This module and the variants import no torch: tensors are used
through their methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from torch import Tensor

    from atlas.models.sae.autoencoder import SAEConfig, SparseAutoencoder


@dataclass(frozen=True)
class TrainStep:
    """The tensors of one training step, in the SAE's scaled units (inputs times `input_scale`)."""

    x_bd: Tensor
    x_hat_bd: Tensor
    acts_bf: Tensor
    pre_bf: Tensor
    decoder_norms_f: Tensor
    dead_f: Tensor  # bool: features that have not fired in the last `dead_window` samples


class SAEVariant(BaseModel):
    """One SAE architecture, as the `[sae]` config section that trains it.

    Subclasses set `kind: Literal["..."]`, add their own fields and override the hooks they need. The
    fields here are the training settings every variant shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    expansion_factor: int = Field(4, ge=1, description="n_features = expansion_factor * embedding width")
    lr: float = Field(3e-3, gt=0, description="peak Adam learning rate")
    warmup_steps: int = Field(100, ge=0, description="linear learning-rate warm-up, then cosine decay to 10%")
    batch_size: int = Field(128, ge=1, description="training rows per optimiser step")
    epochs: int = Field(30, ge=1, description="passes over the training split")
    log_every: int = Field(25, ge=1, description="steps between train_log rows")
    checkpoint_every: int = Field(200, ge=0, description="steps between resumable checkpoints (0 = none)")
    holdout_fraction: float = Field(0.1, ge=0, lt=1, description="share of images (by id hash) kept for evaluation")
    dead_window: int = Field(5000, ge=1, description="samples without firing after which a feature counts as dead")
    shuffle_buffer: int = Field(4096, ge=1, description="rows in the streaming shuffle buffer")
    seed: int = Field(0, description="initialisation and data-order seed")

    decoder_init_norm: ClassVar[float] = 1.0  # norm of the random initial decoder rows
    unit_norm_decoder: ClassVar[bool] = True  # renormalise decoder rows after every step
    saelens_architectures: ClassVar[tuple[str, ...]] = ()  # SAELens `architecture` values this variant reads
    saelens_rescale_foldable: ClassVar[bool] = False  # rescale_acts_by_decoder_norm folds exactly into weights

    # ---- the model (also on loaded SAEs) ----------------------------------------------------------
    def check(self, cfg: SAEConfig) -> str | None:
        """What is wrong with `cfg` for this variant, or None."""
        return None

    def extra_tensors(self, cfg: SAEConfig) -> dict[str, tuple[tuple[int, ...], bool]]:
        """Tensors beyond W_enc/b_enc/W_dec/b_dec: name -> (shape, trainable). Created as zeros."""
        return {}

    def activate(self, pre_bf: Tensor, sae: SparseAutoencoder) -> Tensor:
        """Pre-activations -> non-negative activations (may read `sae.training`)."""
        raise NotImplementedError

    # ---- training ----------------------------------------------------------------------------------
    def sae_fields(self) -> dict[str, Any]:
        """The `SAEConfig` fields this variant sets from its settings (`k`, `l1_coefficient`)."""
        return {}

    def initialize(self, sae: SparseAutoencoder) -> None:
        """Initial values of the extra tensors (the shared weights are initialised by the model)."""

    def loss_terms(self, sae: SparseAutoencoder, step: TrainStep) -> dict[str, Tensor]:
        """Terms added to the reconstruction MSE, by name."""
        return {}

    def after_step(self, sae: SparseAutoencoder, step: TrainStep) -> None:
        """Runs without gradients after each optimiser step."""
        if self.unit_norm_decoder:
            sae.normalize_decoder()

    # ---- SAELens -------------------------------------------------------------------------------------
    def from_saelens(self, cfg: dict[str, Any], tensors: dict[str, Tensor], where: str) -> dict[str, Any]:
        """`SAEConfig` fields from a SAELens cfg.json of this architecture. May replace entries of `tensors`
        (SAELens names) with this variant's extra tensors, in the scaled units of the folded weights."""
        return {}
