"""Dead-feature tracking: a feature is dead once it has not fired for `window` training samples."""

from __future__ import annotations

import torch


class DeadFeatureTracker:
    """When each feature last fired, counted in training samples seen."""

    def __init__(self, n_features: int, window: int, device: torch.device | str = "cpu"):
        self.window = window
        self.last_fired_f = torch.zeros(n_features, dtype=torch.long, device=device)

    def update(self, acts_bf: torch.Tensor, samples: int) -> None:
        """Record the features that fired in a batch, `samples` being the count after it."""
        self.last_fired_f[(acts_bf > 0).any(dim=0)] = samples

    def dead_mask(self, samples: int) -> torch.Tensor:
        """Features silent for a whole window of samples (none before the first window has passed)."""
        return (samples - self.last_fired_f) >= self.window

    def dead_fraction(self, samples: int) -> float:
        """Share of features silent for the window, or ever when fewer samples than that have been seen."""
        return float(((samples - self.last_fired_f) >= min(self.window, samples)).float().mean())
