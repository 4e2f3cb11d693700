"""The train stage as a plain function: fit an SAE (ReLU + L1, or TopK + AuxK) on streamed batches of embeddings.

Batches come from a callable that returns a fresh iterator for each epoch, each item a pair
(image_ids int64 [B], embeddings float32 [B, d]); `jobs/train.py` feeds it from Ray Data with a bounded
shuffle buffer, tests feed it from numpy. Images whose id falls in the held-out share (a hash of the id,
so the split is stable across runs) are never trained on and give the final evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

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
    resumed_from_step: int = 0  # 0 unless training went on from a checkpoint


def _split(batches: Iterable[Batch], fraction: float, want_holdout: bool) -> Iterator[np.ndarray]:
    for ids, x in batches:
        mask = holdout_mask(ids, fraction)
        keep = mask if want_holdout else ~mask
        if keep.any():
            yield np.asarray(x[keep], dtype=np.float32)


def auxk_loss(
    sae: SparseAutoencoder,
    x_scaled_bd: torch.Tensor,
    x_hat_scaled_bd: torch.Tensor,
    pre_bf: torch.Tensor,
    dead_f: torch.Tensor,
    aux_k: int,
) -> torch.Tensor:
    """AuxK (Gao et al. 2024): the top `aux_k` dead features must reconstruct the residual of the main
    reconstruction. The residual already has b_dec taken out (x_hat includes it), so the auxiliary
    reconstruction is `a_aux @ W_dec` with no bias: adding b_dec again would count it twice.
    Normalised by the residual's variance, so the coefficient is scale-free."""
    n_dead = int(dead_f.sum())
    if n_dead == 0:
        return pre_bf.new_zeros(())
    e = (x_scaled_bd - x_hat_scaled_bd).detach()
    masked = pre_bf.masked_fill(~dead_f, float("-inf"))
    values, indices = masked.topk(min(aux_k, n_dead), dim=-1, sorted=False)
    a_aux = torch.zeros_like(pre_bf).scatter_(-1, indices, torch.relu(values))
    e_hat = a_aux @ sae.W_dec
    denom = (e - e.mean(dim=0)).pow(2).sum(dim=1).mean().clamp_min(1e-12)
    return (e_hat - e).pow(2).sum(dim=1).mean() / denom


def initial_sae(
    sample_bd: np.ndarray, d_in: int, cfg: SAEConfigSection, input_scale: float | None = None
) -> SparseAutoencoder:
    """A fresh SAE of the configured kind: input scale (mean norm -> sqrt(d)) and b_dec (the data mean,
    in scaled units) from a sample of training rows."""
    xs = torch.from_numpy(np.asarray(sample_bd)).double()
    if input_scale is None:
        input_scale = math.sqrt(d_in) / float(xs.norm(dim=1).mean())
    sae_cfg = SAEConfig(
        d_in=d_in,
        n_features=cfg.expansion_factor * d_in,
        kind=cfg.kind,
        l1_coefficient=cfg.l1_coefficient if cfg.kind == "relu" else 0.0,
        k=cfg.k if cfg.kind == "topk" else 0,
        input_scale=input_scale,
    )
    sae = SparseAutoencoder(sae_cfg)
    sae.reset_parameters(torch.Generator().manual_seed(cfg.seed))
    with torch.no_grad():
        sae.b_dec.copy_((xs.mean(dim=0) * input_scale).float())
    return sae


def train_sae(
    epoch_batches: Callable[[int], Iterable[Batch]],
    d_in: int,
    n_rows: int,
    cfg: SAEConfigSection,
    device: torch.device,
    progress: Callable[[int], None] | None = None,
    checkpoint_dir: Path | None = None,
    wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    input_scale: float | None = None,
    is_chief: bool = True,
) -> TrainResult:
    """Train an SAE with `cfg.expansion_factor * d_in` features for `cfg.epochs` passes.

    With `checkpoint_dir`, the whole training state is saved there every `cfg.checkpoint_every` steps and a
    rerun goes on from the last checkpoint: same data order, same optimiser state, so the final weights
    equal those of an uninterrupted run. `wrap_model` (e.g. Ray Train's `prepare_model`, DDP) wraps the
    SAE for the forward/backward pass; only the chief process writes checkpoints."""
    torch.manual_seed(cfg.seed)
    ckpt = _load_checkpoint(checkpoint_dir, cfg) if checkpoint_dir else None
    if ckpt is not None:
        sae = SparseAutoencoder(SAEConfig(**ckpt["sae_cfg"]))
        sae.load_state_dict(ckpt["model"])
    else:
        sample = []
        for x in _split(epoch_batches(0), cfg.holdout_fraction, want_holdout=False):
            sample.append(x)
            if sum(len(s) for s in sample) >= 8192:
                break
        if not sample:
            raise ValueError("no training rows (all embeddings fell in the held-out split)")
        sae = initial_sae(np.concatenate(sample), d_in, cfg, input_scale)
    sae_cfg = sae.cfg
    sae.to(device).train()
    model = wrap_model(sae) if wrap_model else sae
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    n_train = max(1, round(n_rows * (1 - cfg.holdout_fraction)))
    total_steps = max(1, cfg.epochs * math.ceil(n_train / cfg.batch_size))
    aux_k = cfg.aux_k or max(1, d_in // 2)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 10%
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        t = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    last_fired = torch.zeros(sae_cfg.n_features, dtype=torch.long, device=device)
    log: list[dict[str, float]] = []
    window = ReconstructionMetrics()
    step = samples = 0
    start_epoch = start_batch = 0
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        last_fired = ckpt["last_fired"].to(device)
        log = ckpt["log"]
        window = ReconstructionMetrics(**ckpt["window"])
        step, samples, start_epoch, start_batch = ckpt["step"], ckpt["samples"], ckpt["epoch"], ckpt["batch"]
    resumed_from = step
    s = sae_cfg.input_scale
    l1_coefficient = sae_cfg.l1_coefficient
    for epoch in range(start_epoch, cfg.epochs):
        stream = _rebatch(_split(epoch_batches(epoch), cfg.holdout_fraction, False), cfg.batch_size)
        for b, x_np in enumerate(stream):
            if epoch == start_epoch and b < start_batch:
                continue  # done before the checkpoint: the stream is deterministic, so skip, not redo
            x = torch.from_numpy(x_np).to(device)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            with autocast(device):
                x_hat, a, pre = model(x)
            x_hat, a, pre = x_hat.float(), a.float(), pre.float()
            norms = sae.decoder_norms()
            # Loss in the scaled units the SAE works in, so coefficients mean the same for any CLIP.
            mse = ((x_hat - x) * s).pow(2).sum(dim=1).mean()
            if sae_cfg.kind == "relu":
                loss = mse + l1_coefficient * (a * norms).sum(dim=1).mean()
            else:
                dead = (samples - last_fired) >= cfg.dead_window
                loss = mse + cfg.aux_coefficient * auxk_loss(sae, x * s, x_hat * s, pre, dead, aux_k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sae_cfg.kind == "topk":
                sae.normalize_decoder()
            step += 1
            samples += len(x)
            fired = (a > 0).any(dim=0)
            last_fired[fired] = samples
            window.update(x * s, x_hat * s, a, norms)
            if step % cfg.log_every == 0:
                log.append(_log_row(step, samples, "train", window, l1_coefficient, cfg.dead_window, last_fired))
                window = ReconstructionMetrics()
            if checkpoint_dir and is_chief and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                _save_checkpoint(checkpoint_dir, cfg, sae, opt, last_fired, log, window, step, samples, epoch, b + 1)
            if progress:
                progress(len(x))
    if window.n:
        log.append(_log_row(step, samples, "train", window, l1_coefficient, cfg.dead_window, last_fired))

    sae.eval()
    holdout: dict[str, float] = {}
    if cfg.holdout_fraction > 0 and any(True for _ in _split(epoch_batches(0), cfg.holdout_fraction, True)):
        holdout = evaluate_sae(sae, _split(epoch_batches(0), cfg.holdout_fraction, True), device)
        log.append({"step": step, "samples": samples, "split": "holdout", **{k: holdout[k] for k in _METRICS}})
    return TrainResult(sae.cpu(), log, holdout, step, samples, resumed_from)


_METRICS = ("loss", "mse", "l1", "l0", "explained_variance", "dead_fraction")


@torch.inference_mode()
def evaluate_sae(sae: SparseAutoencoder, chunks: Iterable[np.ndarray], device: torch.device) -> dict[str, float]:
    """The contract metrics (DESIGN.md) of `sae` over every row of `chunks`, in the SAE's scaled units;
    dead_fraction = features that never fired on these rows."""
    sae = sae.to(device).eval()
    s = sae.cfg.input_scale
    metrics = ReconstructionMetrics()
    norms = sae.decoder_norms()
    fired_any = torch.zeros(sae.cfg.n_features, dtype=torch.bool, device=device)
    for x_np in _rebatch(chunks, 4096):
        x = torch.from_numpy(np.asarray(x_np, dtype=np.float32)).to(device)
        x_hat, a, _ = sae(x)
        metrics.update(x * s, x_hat * s, a, norms)
        fired_any |= (a > 0).any(dim=0)
    out = metrics.result(sae.cfg.l1_coefficient)
    out["dead_fraction"] = float((~fired_any).float().mean())
    out["n"] = metrics.n
    return out


CHECKPOINT = "checkpoint.pt"


def _save_checkpoint(folder: Path, cfg, sae, opt, last_fired, log, window, step, samples, epoch, batch) -> None:
    """Everything needed to go on exactly: tensors, numbers, strings, dicts and lists only, so the file
    loads with `torch.load(weights_only=True)` (no arbitrary unpickling)."""
    import io

    from atlas.store import atomic_write_bytes

    state = {
        "train_cfg": cfg.model_dump(mode="json"),
        "sae_cfg": asdict(sae.cfg),
        "model": {k: v.detach().cpu() for k, v in sae.state_dict().items()},
        "optimizer": opt.state_dict(),
        "last_fired": last_fired.cpu(),
        "log": log,
        "window": asdict(window),
        "step": step,
        "samples": samples,
        "epoch": epoch,
        "batch": batch,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(Path(folder) / CHECKPOINT, buf.getvalue())


def _load_checkpoint(folder: Path, cfg: SAEConfigSection) -> dict | None:
    """The checkpoint in `folder` if there is one written with this same training config, else None."""
    path = Path(folder) / CHECKPOINT
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("train_cfg") != cfg.model_dump(mode="json"):
        return None  # another config: its state does not continue this run
    return state


def remove_checkpoint(folder: Path) -> None:
    (Path(folder) / CHECKPOINT).unlink(missing_ok=True)


def _log_row(
    step, samples, split, window: ReconstructionMetrics, l1_coefficient, dead_window, last_fired
) -> dict[str, float]:
    row = {"step": step, "samples": samples, "split": split, **window.result(l1_coefficient)}
    # dead = not fired in the last dead_window samples (or ever, early in training)
    row["dead_fraction"] = float(((samples - last_fired) >= min(dead_window, samples)).float().mean())
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
