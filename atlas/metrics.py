"""Reconstruction metrics, defined once (here; the README's "The atlas directory" states the same) and
accumulated exactly in float64.

explained_variance = 1 - SSE/SST with SSE = sum ||x - x_hat||^2 and SST = sum ||x - mean(x)||^2, the mean
being per dimension over the whole evaluated set. SST is accumulated as sum x^2 - n * mean^2, so the mean
need not be known before the pass (a trap some SAE libraries fall into is measuring SST about zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ReconstructionMetrics:
    """Accumulates over batches; `result()` gives the metrics of everything seen."""

    n: int = 0
    sse: float = 0.0
    l1: float = 0.0
    l0: float = 0.0
    sum_x: torch.Tensor | None = None
    sum_sq: float = 0.0

    def update(
        self, x_bd: torch.Tensor, x_hat_bd: torch.Tensor, a_bf: torch.Tensor, decoder_norms_f: torch.Tensor
    ) -> None:
        x = x_bd.detach().double()
        self.n += x.shape[0]
        self.sse += float(((x - x_hat_bd.detach().double()) ** 2).sum())
        a = a_bf.detach()
        # a matrix-vector product and a count, not a float64 copy of batch x features (81,920 wide at scale)
        self.l1 += float((a @ decoder_norms_f.detach().to(a.dtype)).double().sum())
        self.l0 += float(torch.count_nonzero(a))
        s = x.sum(dim=0)
        self.sum_x = s if self.sum_x is None else self.sum_x + s
        self.sum_sq += float((x**2).sum())

    def result(self, l1_coefficient: float) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no inputs were evaluated")
        assert self.sum_x is not None
        mean = self.sum_x / self.n
        sst = self.sum_sq - self.n * float((mean**2).sum())
        mse = self.sse / self.n
        l1 = self.l1 / self.n
        return {
            "loss": mse + l1_coefficient * l1,
            "mse": mse,
            "l1": l1,
            "l0": self.l0 / self.n,
            "explained_variance": 1.0 - self.sse / sst if sst > 0 else float("nan"),
        }
