"""The learning-rate schedule: linear warm-up, then cosine decay to 10% of the peak."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LearningRateSchedule:
    peak: float
    warmup_steps: int
    total_steps: int

    def at(self, step: int) -> float:
        """The learning rate of optimiser step `step` (0-based)."""
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        t = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
