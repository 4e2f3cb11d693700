"""The SAE variants against reference implementations written here from the papers' formulas (the
autograd.Function form SAELens and Gemma Scope use), and the registry that makes each one a single file."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from atlas.config import config_from_dict
from atlas.errors import AtlasError
from atlas.models.sae.autoencoder import SAEConfig, SparseAutoencoder, load_sae
from atlas.models.sae.batchtopk import BatchTopK
from atlas.models.sae.jumprelu import JumpReLU
from atlas.models.sae.registry import VARIANTS, sae_settings
from atlas.models.sae.variant import TrainStep

BANDWIDTH = 0.05


def _rectangle(u):
    return ((u > -0.5) & (u < 0.5)).to(u)


class RefJumpReLU(torch.autograd.Function):
    """JumpReLU with the rectangle-kernel pseudo-derivative in the threshold (Rajamanoharan et al. 2024)."""

    @staticmethod
    def forward(ctx, x, threshold):
        ctx.save_for_backward(x, threshold)
        return x * (x > threshold)

    @staticmethod
    def backward(ctx, g):
        x, threshold = ctx.saved_tensors
        g_threshold = (-(threshold / BANDWIDTH) * _rectangle((x - threshold) / BANDWIDTH) * g).sum(dim=0)
        return (x > threshold) * g, g_threshold


class RefStep(torch.autograd.Function):
    """The Heaviside step with the same pseudo-derivative (the L0 penalty)."""

    @staticmethod
    def forward(ctx, x, threshold):
        ctx.save_for_backward(x, threshold)
        return (x > threshold).to(x)

    @staticmethod
    def backward(ctx, g):
        x, threshold = ctx.saved_tensors
        return None, (-(1.0 / BANDWIDTH) * _rectangle((x - threshold) / BANDWIDTH) * g).sum(dim=0)


def _jumprelu_sae(seed=0, d=6, f=12):
    settings = JumpReLU(bandwidth=BANDWIDTH, initial_threshold=0.3, l0_coefficient=0.7)
    sae = SparseAutoencoder(SAEConfig(d_in=d, n_features=f, kind="jumprelu"), settings)
    with torch.no_grad():  # thresholds of several sizes, some inputs near them
        sae.get_parameter("log_threshold").copy_(torch.linspace(0.05, 0.6, f).log())
    return sae.train(), settings


def test_jumprelu_activation_and_threshold_gradient_match_the_reference():
    sae, _ = _jumprelu_sae()
    torch.manual_seed(0)
    pre = torch.randn(64, 12) * 0.5
    g = torch.randn(64, 12)
    pre_ours = pre.clone().requires_grad_()
    a = sae.activate(pre_ours)
    (a * g).sum().backward()
    ours_theta = sae.get_parameter("log_threshold").grad.clone()

    log_theta = sae.get_parameter("log_threshold").detach().clone().requires_grad_()
    pre_ref = pre.clone().requires_grad_()
    a_ref = RefJumpReLU.apply(pre_ref, log_theta.exp())
    (a_ref * g).sum().backward()
    torch.testing.assert_close(a, a_ref)
    torch.testing.assert_close(pre_ours.grad, pre_ref.grad)
    torch.testing.assert_close(ours_theta, log_theta.grad)
    assert ours_theta.abs().sum() > 0  # some inputs fell inside the kernel: the test could fail


def test_jumprelu_l0_term_and_its_gradient_match_the_reference():
    sae, settings = _jumprelu_sae()
    torch.manual_seed(1)
    pre = torch.randn(64, 12) * 0.5
    zeros = torch.zeros(64, 6)
    step = TrainStep(zeros, zeros, sae.activate(pre), pre, torch.ones(12), torch.zeros(12, dtype=torch.bool))
    sae.zero_grad()
    term = settings.loss_terms(sae, step)["l0"]
    term.backward()
    log_theta = sae.get_parameter("log_threshold").detach().clone().requires_grad_()
    ref = 0.7 * RefStep.apply(pre, log_theta.exp()).sum(dim=-1).mean()
    ref.backward()
    torch.testing.assert_close(term, ref)
    torch.testing.assert_close(sae.get_parameter("log_threshold").grad, log_theta.grad)


def test_jumprelu_inference_is_a_plain_threshold():
    sae, _ = _jumprelu_sae()
    sae.eval()
    x = torch.randn(32, 6)
    pre = sae.pre_activations(x)
    theta = sae.get_parameter("log_threshold").exp()
    torch.testing.assert_close(sae.encode(x), pre * (pre > theta))
    assert (sae.encode(x) >= 0).all()


def _ref_batch_topk(pre, k):
    acts = pre.relu().flatten()
    top = acts.topk(k * pre.shape[0])
    return torch.zeros_like(acts).scatter(-1, top.indices, top.values).reshape(pre.shape)


def test_batchtopk_keeps_k_per_input_on_average_in_training_and_a_threshold_at_inference():
    settings = BatchTopK(k=3, threshold_lr=0.5)
    sae = SparseAutoencoder(SAEConfig(d_in=5, n_features=20, kind="batchtopk", k=3), settings).train()
    torch.manual_seed(2)
    x = torch.randn(40, 5)
    a = sae.encode(x)
    torch.testing.assert_close(a, _ref_batch_topk(sae.pre_activations(x), 3))
    assert int((a > 0).sum()) == 3 * 40 and len(set((a > 0).sum(dim=1).tolist())) > 1  # average k, not per row
    # the threshold follows the smallest kept activation (a moving average with rate 0.5 from 0)
    norms = sae.decoder_norms().detach()
    step = TrainStep(x, x, a, sae.pre_activations(x), norms, torch.zeros(20, dtype=torch.bool))
    with torch.no_grad():
        settings.after_step(sae, step)
    smallest = float(a[a > 0].min().detach())
    assert float(sae.get_buffer("threshold")) == pytest.approx(0.5 * smallest, rel=1e-6)
    sae.eval()
    pre = sae.pre_activations(x)
    torch.testing.assert_close(sae.encode(x), pre * (pre > 0.5 * smallest))


@pytest.mark.parametrize("kind", sorted(VARIANTS))
def test_every_variant_saves_and_loads_with_its_own_tensors(tmp_path, kind):
    own = {"relu": {}, "topk": {"k": 4}, "batchtopk": {"k": 4}, "jumprelu": {"initial_threshold": 0.2}}[kind]
    settings = sae_settings(kind=kind, **own)
    sae = SparseAutoencoder(SAEConfig(d_in=6, n_features=12, kind=kind, **settings.sae_fields()), settings)
    with torch.no_grad():
        for p in sae.buffers():
            p.fill_(0.25)
    sae.save(tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert loaded.cfg == sae.cfg
    for name, t in sae.state_dict().items():
        assert torch.equal(t, loaded.state_dict()[name]), name
    x = torch.randn(9, 6)
    torch.testing.assert_close(loaded.encode(x), sae.eval().encode(x))


def test_the_config_section_is_the_variant_and_refuses_another_variants_keys():
    cfg = config_from_dict({"sae": {"kind": "jumprelu", "l0_coefficient": 0.1, "bandwidth": 0.01}})
    assert isinstance(cfg.sae, JumpReLU) and cfg.sae.bandwidth == 0.01
    assert config_from_dict({}).sae.kind == "relu"
    with pytest.raises(AtlasError, match=r"unknown key 'sae.k' \(sae.kind = 'jumprelu'\)"):
        config_from_dict({"sae": {"kind": "jumprelu", "k": 8}})
    with pytest.raises(AtlasError, match="sae.kind: 'gated' is not a known SAE variant"):
        config_from_dict({"sae": {"kind": "gated"}})
    with pytest.raises(AtlasError, match="a topk SAE needs k >= 1"):
        SparseAutoencoder(SAEConfig(d_in=4, n_features=8, kind="topk", k=0))


def test_variants_and_the_config_load_without_torch():
    code = "import sys, atlas.config, atlas.models.sae.registry; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
