"""The SAE trainer: fits an SAE of any variant on streamed batches of embeddings.

The trainer knows nothing of variants: the configured `SAEVariant` gives the activation (through the model),
the extra loss terms and what happens after each step. Its pieces live next to it: the learning-rate
schedule (`schedule.py`), dead-feature tracking (`dead_features.py`), the train_log rows (`train_log.py`) and
checkpoints (`checkpoint.py`). With a checkpoint folder, the whole state is saved every `checkpoint_every`
steps and a rerun goes on from the last one: same data order, same optimiser state, so the final weights
equal those of an uninterrupted run.

Batches come from a callable that returns a fresh iterator for each epoch (see `batches.py`); images whose id
falls in the held-out share are never trained on and give the final evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atlas.models.device import autocast
from atlas.models.sae.autoencoder import SAEConfig, SparseAutoencoder
from atlas.models.sae.variant import SAEVariant, TrainStep
from atlas.train.batches import Batch, rebatch, split_rows
from atlas.train.checkpoint import load_checkpoint, save_checkpoint
from atlas.train.dead_features import DeadFeatureTracker
from atlas.train.evaluate import evaluate_sae
from atlas.train.schedule import LearningRateSchedule
from atlas.train.train_log import METRICS, TrainLog

_INIT_SAMPLE_ROWS = 8192


@dataclass
class TrainResult:
    sae: SparseAutoencoder
    log: list[dict[str, Any]]  # rows of the train_log table
    holdout: dict[str, float]  # final evaluation on the held-out split (empty if there is none)
    steps: int
    samples: int
    resumed_from_step: int = 0  # 0 unless training went on from a checkpoint


@dataclass
class _Position:
    """Where training stands: steps and samples done, and the next batch of which epoch."""

    step: int = 0
    samples: int = 0
    epoch: int = 0
    batch: int = 0


@dataclass
class _Run:
    """The mutable state of one training run."""

    sae: SparseAutoencoder
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    dead: DeadFeatureTracker
    log: TrainLog
    pos: _Position = field(default_factory=_Position)


def total_loss(mse: torch.Tensor, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The training loss: reconstruction MSE plus the variant's terms."""
    loss = mse
    for term in terms.values():
        loss = loss + term
    return loss


def initial_sae(
    sample_bd: np.ndarray, d_in: int, settings: SAEVariant, input_scale: float | None = None
) -> SparseAutoencoder:
    """A fresh SAE of the configured variant: input scale (mean norm -> sqrt(d)) and b_dec (the data mean,
    in scaled units) from a sample of training rows."""
    xs = torch.from_numpy(np.asarray(sample_bd)).double()
    if input_scale is None:
        input_scale = math.sqrt(d_in) / float(xs.norm(dim=1).mean())
    fields = {"l1_coefficient": 0.0, **settings.sae_fields()}
    cfg = SAEConfig(
        d_in=d_in, n_features=settings.expansion_factor * d_in, kind=settings.kind, input_scale=input_scale, **fields
    )
    sae = SparseAutoencoder(cfg, settings)
    sae.reset_parameters(torch.Generator().manual_seed(settings.seed))
    with torch.no_grad():
        sae.b_dec.copy_((xs.mean(dim=0) * input_scale).float())
    return sae


class SAETrainer:
    """Trains one SAE with `settings.expansion_factor * d_in` features for `settings.epochs` passes.

    `wrap_model` (e.g. Ray Train's `prepare_model`, DDP) wraps the SAE for the forward/backward pass; only
    the chief process writes checkpoints."""

    def __init__(
        self,
        settings: SAEVariant,
        d_in: int,
        n_rows: int,
        device: torch.device,
        *,
        checkpoint_dir: Path | None = None,
        wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
        input_scale: float | None = None,
        is_chief: bool = True,
        progress: Callable[[int], None] | None = None,
    ):
        self.settings, self.d_in, self.device = settings, d_in, device
        self.checkpoint_dir, self.wrap_model, self.input_scale = checkpoint_dir, wrap_model, input_scale
        self.is_chief, self.progress = is_chief, progress
        n_train = max(1, round(n_rows * (1 - settings.holdout_fraction)))
        total_steps = max(1, settings.epochs * math.ceil(n_train / settings.batch_size))
        self.schedule = LearningRateSchedule(settings.lr, settings.warmup_steps, total_steps)

    def fit(self, epoch_batches: Callable[[int], Iterable[Batch]]) -> TrainResult:
        """Train (or go on from a checkpoint), then evaluate on the held-out split."""
        s = self.settings
        torch.manual_seed(s.seed)
        ckpt = load_checkpoint(self.checkpoint_dir, s) if self.checkpoint_dir else None
        run = self._start(epoch_batches, ckpt)
        resumed_from, start_epoch, start_batch = run.pos.step, run.pos.epoch, run.pos.batch
        for epoch in range(start_epoch, s.epochs):
            stream = rebatch(split_rows(epoch_batches(epoch), s.holdout_fraction, False), s.batch_size)
            for b, x_np in enumerate(stream):
                if epoch == start_epoch and b < start_batch:
                    continue  # done before the checkpoint: the stream is deterministic, so skip, not redo
                self.train_step(run, torch.from_numpy(x_np).to(self.device))
                run.pos.epoch, run.pos.batch = epoch, b + 1
                if self._checkpoint_due(run.pos.step):
                    save_checkpoint(self.checkpoint_dir, s, self._state(run))  # type: ignore[arg-type]
                if self.progress:
                    self.progress(len(x_np))
        run.log.close_window(run.pos.step, run.pos.samples, run.dead)
        holdout = self._evaluate(run, epoch_batches)
        return TrainResult(run.sae.cpu(), run.log.rows, holdout, run.pos.step, run.pos.samples, resumed_from)

    def train_step(self, run: _Run, x_bd: torch.Tensor) -> None:
        """One optimiser step on a batch of inputs in their own units."""
        sae, pos = run.sae, run.pos
        for group in run.opt.param_groups:
            group["lr"] = self.schedule.at(pos.step)
        with autocast(self.device):
            x_hat, a, pre = run.model(x_bd)
        x_hat, a, pre = x_hat.float(), a.float(), pre.float()
        s = sae.cfg.input_scale
        norms = sae.decoder_norms()
        # Loss in the scaled units the SAE works in, so coefficients mean the same for any CLIP.
        mse = ((x_hat - x_bd) * s).pow(2).sum(dim=1).mean()
        step = TrainStep(x_bd * s, x_hat * s, a, pre, norms, run.dead.dead_mask(pos.samples))
        loss = total_loss(mse, self.settings.loss_terms(sae, step))
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        with torch.no_grad():
            self.settings.after_step(sae, step)
        pos.step += 1
        pos.samples += len(x_bd)
        run.dead.update(a, pos.samples)
        run.log.update(step.x_bd, step.x_hat_bd, a, norms, pos.step, pos.samples, run.dead)

    def _start(self, epoch_batches: Callable[[int], Iterable[Batch]], ckpt: dict[str, Any] | None) -> _Run:
        s = self.settings
        if ckpt is not None:
            sae = SparseAutoencoder(SAEConfig(**ckpt["sae_cfg"]), s)
            sae.load_state_dict(ckpt["model"])
        else:
            sae = initial_sae(self._first_rows(epoch_batches), self.d_in, s, self.input_scale)
        sae.to(self.device).train()
        model = self.wrap_model(sae) if self.wrap_model else sae
        opt = torch.optim.Adam(sae.parameters(), lr=s.lr, betas=(0.9, 0.999))
        run = _Run(
            sae,
            model,
            opt,
            DeadFeatureTracker(sae.cfg.n_features, s.dead_window, self.device),
            TrainLog(s.log_every, sae.cfg.l1_coefficient),
        )
        if ckpt is not None:
            run.opt.load_state_dict(ckpt["optimizer"])
            run.dead.last_fired_f = ckpt["last_fired"].to(self.device)
            run.log.load_state(ckpt)
            run.pos = _Position(ckpt["step"], ckpt["samples"], ckpt["epoch"], ckpt["batch"])
        return run

    def _first_rows(self, epoch_batches: Callable[[int], Iterable[Batch]]) -> np.ndarray:
        """Up to `_INIT_SAMPLE_ROWS` training rows, for the input scale and b_dec."""
        sample: list[np.ndarray] = []
        for x in split_rows(epoch_batches(0), self.settings.holdout_fraction, want_holdout=False):
            sample.append(x)
            if sum(len(c) for c in sample) >= _INIT_SAMPLE_ROWS:
                break
        if not sample:
            raise ValueError("no training rows (all embeddings fell in the held-out split)")
        return np.concatenate(sample)

    def _checkpoint_due(self, step: int) -> bool:
        every = self.settings.checkpoint_every
        return bool(self.checkpoint_dir and self.is_chief and every and step % every == 0)

    def _state(self, run: _Run) -> dict[str, Any]:
        """Everything needed to go on exactly (see checkpoint.py for what the file may hold)."""
        return {
            "sae_cfg": asdict(run.sae.cfg),
            "model": {k: v.detach().cpu() for k, v in run.sae.state_dict().items()},
            "optimizer": run.opt.state_dict(),
            "last_fired": run.dead.last_fired_f.cpu(),
            **run.log.state(),
            **asdict(run.pos),
        }

    def _evaluate(self, run: _Run, epoch_batches: Callable[[int], Iterable[Batch]]) -> dict[str, float]:
        """Metrics on the held-out split (also appended to the log), or {} when there is none."""
        hf = self.settings.holdout_fraction
        run.sae.eval()
        if hf <= 0 or not any(True for _ in split_rows(epoch_batches(0), hf, True)):
            return {}
        holdout = evaluate_sae(run.sae, split_rows(epoch_batches(0), hf, True), self.device)
        pos = run.pos
        run.log.rows.append(
            {"step": pos.step, "samples": pos.samples, "split": "holdout", **{k: holdout[k] for k in METRICS}}
        )
        return holdout


def train_sae(
    epoch_batches: Callable[[int], Iterable[Batch]],
    d_in: int,
    n_rows: int,
    settings: SAEVariant,
    device: torch.device,
    **options: Any,
) -> TrainResult:
    """`SAETrainer(settings, d_in, n_rows, device, **options).fit(epoch_batches)`."""
    return SAETrainer(settings, d_in, n_rows, device, **options).fit(epoch_batches)
