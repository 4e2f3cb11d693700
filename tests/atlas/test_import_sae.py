"""Importing SAEs trained elsewhere: SAELens folders and plain state dicts encode like their own formulas
(written here independently), unsafe files are refused, and `atlas import-sae` puts the SAE into an atlas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from atlas.errors import AtlasError
from atlas.import_sae import import_sae
from atlas.models.sae.autoencoder import load_sae
from atlas.store import AtlasStore, table_from_rows

D, F = 8, 24


def _weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(D, F, generator=g),
        "b_enc": torch.randn(F, generator=g) * 0.5,
        "W_dec": torch.randn(F, D, generator=g),
        "b_dec": torch.randn(D, generator=g),
    }


def _saelens_folder(tmp: Path, w, **cfg) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(w, str(tmp / "sae_weights.safetensors"))
    base = {
        "d_in": D,
        "d_sae": F,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "architecture": "standard",
        "metadata": {"sae_lens_version": "6.0.0", "hook_name": "clip.image_embeds"},
    }
    (tmp / "cfg.json").write_text(json.dumps({**base, **cfg}))
    return tmp


@pytest.mark.parametrize(
    ("arch", "apply_b_dec", "norm", "factor"),
    [
        ("standard", True, "none", None),
        ("standard", False, "none", None),
        ("topk", True, "none", None),
        ("standard", True, "expected_average_only_in", 0.37),
    ],
)
def test_saelens_sae_encodes_like_the_saelens_formula(tmp_path, arch, apply_b_dec, norm, factor):
    w = _weights()
    folder = _saelens_folder(
        tmp_path / "sl", w, architecture=arch, apply_b_dec_to_input=apply_b_dec, normalize_activations=norm, k=5
    )
    sae = import_sae(folder, scaling_factor=factor)
    x = torch.randn(16, D) * 3
    c = factor or 1.0
    pre = (x * c - w["b_dec"] * apply_b_dec) @ w["W_enc"] + w["b_enc"]
    if arch == "topk":
        top = pre.topk(5, dim=-1)
        expected = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    else:
        expected = torch.relu(pre)
    a = sae.encode(x)
    torch.testing.assert_close(a, expected)
    torch.testing.assert_close(sae.decode(a), (expected @ w["W_dec"] + w["b_dec"]) / c)


def test_saelens_options_that_cannot_be_honoured_are_refused(tmp_path):
    w = _weights()
    with pytest.raises(AtlasError, match="scaling-factor"):
        import_sae(_saelens_folder(tmp_path / "a", w, normalize_activations="expected_average_only_in"))
    with pytest.raises(AtlasError, match="constant_norm_rescale"):
        import_sae(_saelens_folder(tmp_path / "b", w, normalize_activations="constant_norm_rescale"))
    with pytest.raises(AtlasError, match="jumprelu"):
        import_sae(_saelens_folder(tmp_path / "c", w, architecture="jumprelu"))


@pytest.mark.parametrize("with_pre_bias", [False, True])
def test_state_dict_relu_sae_encodes_like_its_linear_layers(tmp_path, with_pre_bias):
    torch.manual_seed(1)
    enc, dec = torch.nn.Linear(D, F), torch.nn.Linear(F, D)
    sd = {
        "encoder.weight": enc.weight,
        "encoder.bias": enc.bias,
        "decoder.weight": dec.weight,
        "decoder.bias": dec.bias,
    }
    pre_bias = torch.randn(D)
    if with_pre_bias:
        sd["pre_bias"] = pre_bias
    path = tmp_path / "sae.pt"
    torch.save({k: v.detach() for k, v in sd.items()}, path)
    sae = import_sae(path)
    x = torch.randn(10, D)
    with torch.no_grad():
        x_in = x - pre_bias if with_pre_bias else x
        a = torch.relu(enc(x_in))
        x_hat = dec(a) + (pre_bias if with_pre_bias else 0)
    torch.testing.assert_close(sae.encode(x), a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.decode(sae.encode(x)), x_hat, rtol=1e-5, atol=1e-5)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"encoder.weight": torch.zeros(F, D), "x": _Evil()}, path)
    with pytest.raises(AtlasError, match="safely"):
        import_sae(path)


def _atlas_with_embeddings(root: Path, d: int) -> AtlasStore:
    store = AtlasStore(root)
    rng = np.random.default_rng(0)
    ids = rng.integers(-(2**62), 2**62, size=50)
    store.write_part(
        "embeddings",
        "part-00000",
        table_from_rows("embeddings", {"image_id": ids, "embedding": rng.normal(size=(50, d)).astype(np.float32)}, d),
    )
    store.update_manifest(
        lambda m: m["stages"].update({"embed": {"status": "done", "run_id": "r1", "fingerprint": "f"}})
    )
    return store


def test_cli_imports_into_an_atlas_and_refuses_a_width_mismatch(tmp_path):
    from jobs.cli import app

    store = _atlas_with_embeddings(tmp_path / "atlas", D)
    w = _weights(3)
    folder = _saelens_folder(tmp_path / "sl", w)
    runner = CliRunner()
    res = runner.invoke(app, ["import-sae", str(folder), "--atlas", str(store.root)])
    assert res.exit_code == 0, res.output
    sae = load_sae(store.sae_dir)
    x = torch.randn(4, D)
    torch.testing.assert_close(sae.encode(x), torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]))
    train = store.stage("train")
    assert train["status"] == "done" and train["summary"]["holdout"]["n"] == 50
    assert store.count_rows("train_log") == 1

    wide = _atlas_with_embeddings(tmp_path / "wide", D + 4)
    res = runner.invoke(app, ["import-sae", str(folder), "--atlas", str(wide.root)])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "8-d inputs" in lines[0] and "12-d" in lines[0]


def test_saelens_jumprelu_encodes_like_the_saelens_formula(tmp_path):
    w = {**_weights(1), "threshold": torch.rand(F) * 0.8}
    w["threshold"][:3] = 0.0  # SAELens allows zero thresholds: plain ReLU there
    sae = import_sae(_saelens_folder(tmp_path / "j", w, architecture="jumprelu"))
    x = torch.randn(32, D) * 2
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    expected = torch.relu(pre) * (pre > w["threshold"])
    torch.testing.assert_close(sae.encode(x), expected)
    torch.testing.assert_close(sae.decode(sae.encode(x)), expected @ w["W_dec"] + w["b_dec"])
    assert sae.cfg.kind == "jumprelu" and load_sae_roundtrip(sae, tmp_path).cfg.kind == "jumprelu"


def test_saelens_batchtopk_training_folder_folds_the_decoder_norms_and_uses_its_threshold(tmp_path):
    w = {**_weights(2), "topk_threshold": torch.tensor(0.9, dtype=torch.float64)}
    folder = _saelens_folder(tmp_path / "b", w, architecture="batchtopk", k=4.0, rescale_acts_by_decoder_norm=True)
    sae = import_sae(folder)
    x = torch.randn(32, D) * 2
    # SAELens BatchTopK at inference (saved as JumpReLU): hidden_pre scaled by |W_dec row|, the learnt threshold,
    # then decoded with the activations divided by the norms again
    norms = w["W_dec"].norm(dim=1)
    pre = ((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]) * norms
    acts = torch.relu(pre) * (pre > 0.9)
    expected_out = (acts / norms) @ w["W_dec"] + w["b_dec"]
    torch.testing.assert_close(sae.encode(x), acts)
    torch.testing.assert_close(sae.decode(sae.encode(x)), expected_out)
    assert sae.cfg.kind == "batchtopk" and sae.cfg.k == 4
    with pytest.raises(AtlasError, match="topk_threshold"):
        import_sae(_saelens_folder(tmp_path / "c", _weights(), architecture="batchtopk", k=4))


def load_sae_roundtrip(sae, tmp_path):
    sae.save(tmp_path / "saved")
    loaded = load_sae(tmp_path / "saved")
    x = torch.randn(5, D)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    return loaded
