"""The rows of the train_log table: reconstruction metrics over a window of steps, one row per window."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from atlas.metrics import ReconstructionMetrics
from atlas.train.dead_features import DeadFeatureTracker

METRICS = ("loss", "mse", "l1", "l0", "explained_variance", "dead_fraction")


class TrainLog:
    """Accumulates each step's metrics and closes a row every `every` steps."""

    def __init__(self, every: int, l1_coefficient: float):
        self.every = every
        self.l1_coefficient = l1_coefficient
        self.rows: list[dict[str, Any]] = []
        self.window = ReconstructionMetrics()

    def update(
        self,
        x_bd: torch.Tensor,
        x_hat_bd: torch.Tensor,
        acts_bf: torch.Tensor,
        decoder_norms_f: torch.Tensor,
        step: int,
        samples: int,
        dead: DeadFeatureTracker,
    ) -> None:
        """Add one step (`step` and `samples` counted after it); close the window when it is full."""
        self.window.update(x_bd, x_hat_bd, acts_bf, decoder_norms_f)
        if step % self.every == 0:
            self.close_window(step, samples, dead)

    def close_window(self, step: int, samples: int, dead: DeadFeatureTracker) -> None:
        """Write the current window as a row (if it saw anything) and start a new one."""
        if not self.window.n:
            return
        row = {"step": step, "samples": samples, "split": "train", **self.window.result(self.l1_coefficient)}
        row["dead_fraction"] = dead.dead_fraction(samples)
        self.rows.append(row)
        self.window = ReconstructionMetrics()

    def state(self) -> dict[str, Any]:
        return {"log": self.rows, "window": asdict(self.window)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rows = state["log"]
        self.window = ReconstructionMetrics(**state["window"])
