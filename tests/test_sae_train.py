import numpy as np
import pytest
import torch

from atlas.config import SAEConfigSection
from atlas.metrics import ReconstructionMetrics
from atlas.models.sae import SAEConfig, SparseAutoencoder, load_sae
from atlas.train import holdout_mask, parquet_batches, train_sae


def test_explained_variance_is_measured_about_the_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 1.0, size=(500, 8))  # a large mean: SST about zero would be far too big
    x_hat = x + rng.normal(0, 0.3, size=x.shape)
    m = ReconstructionMetrics()
    for s in range(0, 500, 128):  # accumulated over uneven batches
        sl = slice(s, s + 128)
        m.update(torch.tensor(x[sl]), torch.tensor(x_hat[sl]), torch.zeros(len(x[sl]), 3), torch.ones(3))
    expected = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(axis=0)) ** 2).sum()
    assert m.result(0.0)["explained_variance"] == pytest.approx(expected, rel=1e-9)
    assert m.result(0.0)["mse"] == pytest.approx(((x - x_hat) ** 2).sum(axis=1).mean())


def test_encode_decode_undo_the_input_scale():
    sae = SparseAutoencoder(SAEConfig(d_in=4, n_features=8, input_scale=3.0))
    x = torch.randn(5, 4)
    a = sae.encode(x)
    manual = torch.relu((x * 3.0 - sae.b_dec) @ sae.W_enc + sae.b_enc)
    assert torch.allclose(a, manual)
    assert torch.allclose(sae.decode(a), (a @ sae.W_dec + sae.b_dec) / 3.0)


def _sparse_data(n=3000, d=16, k=24, seed=0):
    """Inputs that are sparse sums of k fixed directions: an SAE can explain them well."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(k, d))
    codes = rng.exponential(1.0, size=(n, k)) * (rng.random((n, k)) < 0.1)
    return rng.integers(-(2**62), 2**62, size=n), (codes @ dirs + 3.0).astype(np.float32)


def test_training_learns_and_logs_the_contract_metrics():
    ids, x = _sparse_data()
    cfg = SAEConfigSection(
        expansion_factor=4, l1_coefficient=0.02, lr=3e-3, epochs=10, batch_size=128, log_every=10, warmup_steps=5
    )
    batches = lambda epoch: ((ids[s : s + 500], x[s : s + 500]) for s in range(0, len(x), 500))  # noqa: E731
    result = train_sae(batches, 16, len(x), cfg, torch.device("cpu"))
    train_rows = [r for r in result.log if r["split"] == "train"]
    assert train_rows[-1]["mse"] < 0.5 * train_rows[0]["mse"]
    assert result.holdout["explained_variance"] > 0.8
    assert result.holdout["n"] == holdout_mask(ids, 0.1).sum()
    assert 0 < result.holdout["l0"] < 64
    for row in result.log:
        assert set(row) >= {"step", "samples", "loss", "mse", "l1", "l0", "explained_variance", "dead_fraction"}
        assert 0.0 <= row["dead_fraction"] <= 1.0


def test_holdout_split_is_stable_and_about_the_asked_share():
    ids = np.random.default_rng(1).integers(-(2**62), 2**62, size=20000)
    mask = holdout_mask(ids, 0.1)
    assert 0.08 < mask.mean() < 0.12
    assert (holdout_mask(ids[::-1], 0.1) == mask[::-1]).all()


def test_save_and_load_round_trip(tmp_path):
    sae = SparseAutoencoder(SAEConfig(d_in=6, n_features=12, input_scale=2.5))
    sae.save(tmp_path, extra={"note": "x"})
    back = load_sae(tmp_path)
    x = torch.randn(3, 6)
    assert torch.allclose(back.encode(x), sae.encode(x))
    assert back.cfg.input_scale == 2.5 and back.cfg.extra["note"] == "x"


def test_parquet_batches_stream_every_row_once(tmp_path):
    from atlas.store import AtlasStore, table_from_rows

    store = AtlasStore(tmp_path)
    all_ids = []
    for p in range(3):
        ids = np.arange(p * 100, p * 100 + 100 - p * 7, dtype=np.int64)
        all_ids.append(ids)
        x = np.repeat(ids[:, None], 4, axis=1).astype(np.float32)
        store.write_part("embeddings", f"part-{p:05d}", table_from_rows("embeddings", {"image_id": ids, "embedding": x}, 4))
    paths = [str(p) for p in store.parts("embeddings")]
    got = list(parquet_batches(paths, batch_size=32, shuffle_buffer=50, seed=3))
    seen = np.concatenate([i for i, _ in got])
    assert sorted(seen.tolist()) == sorted(np.concatenate(all_ids).tolist())
    assert all((x[:, 0] == i).all() for i, x in got)  # rows stay with their ids
    assert seen.tolist() != sorted(seen.tolist())  # shuffled
