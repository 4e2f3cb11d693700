import numpy as np
import pytest
import torch

from atlas.metrics import ReconstructionMetrics
from atlas.models.sae.autoencoder import SAEConfig, SparseAutoencoder, load_sae
from atlas.models.sae.registry import sae_settings
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
    cfg = sae_settings(
        expansion_factor=4, l1_coefficient=0.02, lr=3e-3, epochs=10, batch_size=128, log_every=10, warmup_steps=5
    )
    batches = lambda epoch: ((ids[s : s + 500], x[s : s + 500]) for s in range(0, len(x), 500))
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
        store.write_part(
            "embeddings", f"part-{p:05d}", table_from_rows("embeddings", {"image_id": ids, "embedding": x}, 4)
        )
    paths = [str(p) for p in store.parts("embeddings")]
    got = list(parquet_batches(paths, batch_size=32, shuffle_buffer=50, seed=3))
    seen = np.concatenate([i for i, _ in got])
    assert sorted(seen.tolist()) == sorted(np.concatenate(all_ids).tolist())
    assert all((x[:, 0] == i).all() for i, x in got)  # rows stay with their ids
    assert seen.tolist() != sorted(seen.tolist())  # shuffled


def test_topk_keeps_exactly_k_and_undoes_the_input_scale():
    sae = SparseAutoencoder(SAEConfig(d_in=6, n_features=24, kind="topk", k=3, input_scale=2.0))
    with torch.no_grad():
        sae.b_enc.fill_(5.0)  # every pre-activation positive: exactly k survive
    x = torch.randn(7, 6)
    a = sae.encode(x)
    pre = (x * 2.0 - sae.b_dec) @ sae.W_enc + sae.b_enc
    assert ((a > 0).sum(dim=1) == 3).all()
    top = pre.topk(3, dim=1).indices
    assert torch.equal(torch.sort(top, dim=1).values, torch.sort(torch.nonzero(a)[:, 1].view(7, 3), dim=1).values)
    assert torch.allclose(sae.decode(a), (a @ sae.W_dec + sae.b_dec) / 2.0)


def test_auxk_does_not_count_the_decoder_bias_twice():
    from atlas.models.sae.topk import auxk_loss

    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=4, n_features=8, kind="topk", k=1))
    with torch.no_grad():
        sae.b_dec.fill_(100.0)  # a large bias: counting it twice would dominate the loss
        sae.W_dec.copy_(torch.cat([torch.eye(4), torch.eye(4)]))
    x = torch.randn(16, 4) + 100.0
    x_hat = torch.full_like(x, 100.0)  # main reconstruction = b_dec only; residual = x - 100
    residual = x - x_hat
    pre = torch.cat(
        [torch.full((16, 4), -1.0), residual.clamp_min(0)], dim=1
    )  # dead 4..7 code the residual's positive part
    dead = torch.tensor([False] * 4 + [True] * 4)
    got = auxk_loss(sae, x, x_hat, pre, dead, aux_k=4)
    e_hat = residual.clamp_min(0)
    expected = (e_hat - residual).pow(2).sum(1).mean() / (residual - residual.mean(0)).pow(2).sum(1).mean()
    assert float(got.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(got.detach()) < 1.0  # with b_dec added again it would be ~ 4 * 100^2 / var


def test_topk_training_learns_with_exact_l0():
    ids, x = _sparse_data()
    cfg = sae_settings(
        kind="topk",
        k=6,
        expansion_factor=4,
        lr=3e-3,
        epochs=8,
        batch_size=128,
        log_every=10,
        warmup_steps=5,
        dead_window=1000,
    )
    batches = lambda epoch: ((ids[s : s + 500], x[s : s + 500]) for s in range(0, len(x), 500))
    result = train_sae(batches, 16, len(x), cfg, torch.device("cpu"))
    assert result.sae.cfg.kind == "topk" and result.sae.cfg.k == 6
    assert result.holdout["explained_variance"] > 0.8
    assert result.holdout["l0"] <= 6
    assert torch.allclose(result.sae.decoder_norms(), torch.ones(64), atol=1e-5)


_OWN_SETTINGS = {"relu": {"l1_coefficient": 0.02}, "topk": {"k": 4}, "batchtopk": {"k": 4}, "jumprelu": {}}


@pytest.mark.parametrize("kind", sorted(_OWN_SETTINGS))
def test_resume_from_a_checkpoint_gives_the_same_weights(tmp_path, kind):
    ids, x = _sparse_data(n=1200)
    cfg = sae_settings(
        kind=kind,
        **_OWN_SETTINGS[kind],
        expansion_factor=2,
        epochs=3,
        batch_size=64,
        log_every=4,
        checkpoint_every=5,
        warmup_steps=3,
        dead_window=300,
    )
    batches = lambda epoch: ((ids[s : s + 250], x[s : s + 250]) for s in range(0, len(x), 250))
    full = train_sae(batches, 16, len(x), cfg, torch.device("cpu"))

    calls = {"n": 0}

    def crash_after_23_steps(_n):
        calls["n"] += 1
        if calls["n"] == 23:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        train_sae(batches, 16, len(x), cfg, torch.device("cpu"), progress=crash_after_23_steps, checkpoint_dir=tmp_path)
    resumed = train_sae(batches, 16, len(x), cfg, torch.device("cpu"), checkpoint_dir=tmp_path)
    assert resumed.resumed_from_step == 20  # the last checkpoint before the crash
    assert resumed.steps == full.steps and resumed.samples == full.samples
    for name, w in full.sae.state_dict().items():
        assert torch.equal(w, resumed.sae.state_dict()[name]), name
    assert resumed.log == full.log
    # a different config does not continue from this checkpoint
    other = train_sae(
        batches, 16, len(x), cfg.model_copy(update={"lr": 1e-3}), torch.device("cpu"), checkpoint_dir=tmp_path
    )
    assert other.resumed_from_step == 0
