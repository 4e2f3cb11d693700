"""The train stage as a plain function: fit a ReLU + L1 SAE on streamed batches of embeddings.

Batches come from a callable that returns a fresh iterator for each epoch, each item a pair
(image_ids int64 [B], embeddings float32 [B, d]); `jobs/train.py` feeds it from Ray Data with a bounded
shuffle buffer, tests feed it from numpy. Images whose id falls in the held-out share (a hash of the id,
so the split is stable across runs) are never trained on and give the final evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from atlas.config import SAEConfigSection
from atlas.metrics import ReconstructionMetrics
from atlas.models.device import autocast
from atlas.models.sae import SAEConfig, SparseAutoencoder

Batch = tuple[np.ndarray, np.ndarray]
_HOLDOUT_BUCKETS = 10_000


def holdout_mask(image_ids: np.ndarray, fraction: float) -> np.ndarray:
    """True for images in the held-out split: a fixed share of the id space, stable across runs."""
    return np.mod(np.asarray(image_ids, dtype=np.int64), _HOLDOUT_BUCKETS) < round(fraction * _HOLDOUT_BUCKETS)


@dataclass
class TrainResult:
    sae: SparseAutoencoder
    log: list[dict[str, float]]  # rows of the train_log table
    holdout: dict[str, float]  # final evaluation on the held-out split (empty if there is none)
    steps: int
    samples: int


def _split(batches: Iterable[Batch], fraction: float, want_holdout: bool) -> Iterator[np.ndarray]:
    for ids, x in batches:
        mask = holdout_mask(ids, fraction)
        keep = mask if want_holdout else ~mask
        if keep.any():
            yield np.asarray(x[keep], dtype=np.float32)


def train_sae(
    epoch_batches: Callable[[int], Iterable[Batch]],
    d_in: int,
    n_rows: int,
    cfg: SAEConfigSection,
    device: torch.device,
    progress: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train an SAE with `cfg.expansion_factor * d_in` features for `cfg.epochs` passes."""
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)

    # Input scale (mean norm -> sqrt(d)) and b_dec (the data mean) from the first training rows.
    sample = []
    for x in _split(epoch_batches(0), cfg.holdout_fraction, want_holdout=False):
        sample.append(x)
        if sum(len(s) for s in sample) >= 8192:
            break
    if not sample:
        raise ValueError("no training rows (all embeddings fell in the held-out split)")
    xs = torch.from_numpy(np.concatenate(sample)).double()
    input_scale = math.sqrt(d_in) / float(xs.norm(dim=1).mean())
    sae_cfg = SAEConfig(
        d_in=d_in,
        n_features=cfg.expansion_factor * d_in,
        kind=cfg.kind,
        l1_coefficient=cfg.l1_coefficient,
        input_scale=input_scale,
    )
    sae = SparseAutoencoder(sae_cfg)
    sae.reset_parameters(g)
    with torch.no_grad():
        sae.b_dec.copy_((xs.mean(dim=0) * input_scale).float())
    sae.to(device).train()
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    n_train = max(1, round(n_rows * (1 - cfg.holdout_fraction)))
    total_steps = max(1, cfg.epochs * math.ceil(n_train / cfg.batch_size))

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 10%
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        t = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    last_fired = torch.zeros(sae_cfg.n_features, dtype=torch.long, device=device)
    log: list[dict[str, float]] = []
    window = ReconstructionMetrics()
    step = samples = 0
    for epoch in range(cfg.epochs):
        for x_np in _rebatch(_split(epoch_batches(epoch), cfg.holdout_fraction, False), cfg.batch_size):
            x = torch.from_numpy(x_np).to(device)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            with autocast(device):
                x_hat, a = sae(x)
            x_hat = x_hat.float()
            a = a.float()
            norms = sae.decoder_norms()
            # Loss in the scaled units the SAE works in, so l1_coefficient means the same for any CLIP.
            s = sae_cfg.input_scale
            mse = ((x_hat - x) * s).pow(2).sum(dim=1).mean()
            l1 = (a * norms).sum(dim=1).mean()
            loss = mse + cfg.l1_coefficient * l1
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            samples += len(x)
            fired = (a > 0).any(dim=0)
            last_fired[fired] = samples
            window.update(x * s, x_hat * s, a, norms)
            if step % cfg.log_every == 0:
                log.append(_log_row(step, samples, "train", window, cfg, last_fired))
                window = ReconstructionMetrics()
            if progress:
                progress(len(x))
    if window.n:
        log.append(_log_row(step, samples, "train", window, cfg, last_fired))

    sae.eval()
    holdout: dict[str, float] = {}
    if cfg.holdout_fraction > 0:
        metrics = ReconstructionMetrics()
        with torch.inference_mode():
            norms = sae.decoder_norms()
            fired_any = torch.zeros(sae_cfg.n_features, dtype=torch.bool, device=device)
            for x_np in _rebatch(_split(epoch_batches(0), cfg.holdout_fraction, True), 4096):
                x = torch.from_numpy(x_np).to(device)
                x_hat, a = sae(x)
                metrics.update(x * sae_cfg.input_scale, x_hat * sae_cfg.input_scale, a, norms)
                fired_any |= (a > 0).any(dim=0)
        if metrics.n:
            holdout = metrics.result(cfg.l1_coefficient)
            holdout["dead_fraction"] = float((~fired_any).float().mean())
            holdout["n"] = metrics.n
            log.append({"step": step, "samples": samples, "split": "holdout", **{k: holdout[k] for k in _METRICS}})
    return TrainResult(sae.cpu(), log, holdout, step, samples)


_METRICS = ("loss", "mse", "l1", "l0", "explained_variance", "dead_fraction")


def _log_row(step, samples, split, window: ReconstructionMetrics, cfg, last_fired) -> dict[str, float]:
    row = {"step": step, "samples": samples, "split": split, **window.result(cfg.l1_coefficient)}
    # dead = not fired in the last dead_window samples (or ever, early in training)
    row["dead_fraction"] = float(((samples - last_fired) >= min(cfg.dead_window, samples)).float().mean())
    return row


def _rebatch(chunks: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Exact batches of `batch_size` rows from chunks of any size (the last one may be short)."""
    buf: list[np.ndarray] = []
    have = 0
    for c in chunks:
        buf.append(c)
        have += len(c)
        while have >= batch_size:
            cat = np.concatenate(buf)
            yield cat[:batch_size]
            rest = cat[batch_size:]
            buf, have = ([rest] if len(rest) else []), len(rest)
    if have:
        yield np.concatenate(buf)


def parquet_batches(paths: list[str], batch_size: int, shuffle_buffer: int, seed: int) -> Iterator[Batch]:
    """Stream (image_ids, embeddings) from Parquet parts in a seeded random order, through a bounded
    shuffle buffer of `shuffle_buffer` rows: memory stays flat whatever the dataset size."""
    import pyarrow.parquet as pq

    from atlas.store import vectors_to_numpy

    rng = np.random.default_rng(seed)
    buf_ids: list[np.ndarray] = []
    buf_x: list[np.ndarray] = []
    have = 0
    for i in rng.permutation(len(paths)):
        f = pq.ParquetFile(paths[i])
        dim = f.schema_arrow.field("embedding").type.list_size
        for rb in f.iter_batches(batch_size=4096, columns=["image_id", "embedding"]):
            buf_ids.append(rb.column(0).to_numpy())
            buf_x.append(vectors_to_numpy(rb.column(1), dim))
            have += rb.num_rows
            while have >= shuffle_buffer + batch_size:
                ids, x = np.concatenate(buf_ids), np.concatenate(buf_x)
                perm = rng.permutation(len(ids))
                take, keep = perm[:batch_size], perm[batch_size:]
                yield ids[take], x[take]
                buf_ids, buf_x, have = [ids[keep]], [x[keep]], len(keep)
    if have:
        ids, x = np.concatenate(buf_ids), np.concatenate(buf_x)
        perm = rng.permutation(len(ids))
        for s in range(0, len(perm), batch_size):
            yield ids[perm[s : s + batch_size]], x[perm[s : s + batch_size]]
