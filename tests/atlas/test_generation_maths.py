"""The generation maths against independent formulas: interpolation, text diffs, concept grouping, SAE edits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atlas.concepts import cluster_shares, group_features, image_concepts, largest_valid_k
from atlas.interpolation import apply_text_diff, interpolate, linear, normalized_linear, slerp, text_diff
from atlas.models.sae.autoencoder import SAEConfig, SparseAutoencoder
from atlas.steering import edit_activations, feature_strip, group_scale_strip, symmetric_scales


def _angle(u: np.ndarray, v: np.ndarray) -> float:
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    return float(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1)))


# ---- interpolation -------------------------------------------------------------------------------------
def test_slerp_hits_both_endpoints():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=32), 3 * rng.normal(size=32)
    np.testing.assert_allclose(slerp(a, b, 0.0), a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(slerp(a, b, 1.0), b, rtol=1e-5, atol=1e-5)


def test_slerp_turns_by_constant_angle_steps_and_moves_the_norm_linearly():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=16), 2.5 * rng.normal(size=16)
    omega = _angle(a, b)
    gs = np.linspace(0, 1, 9)
    path = interpolate(a, b, list(gs), "slerp")
    steps = [_angle(path[i], path[i + 1]) for i in range(len(gs) - 1)]
    np.testing.assert_allclose(steps, omega / 8, atol=1e-5)
    for g, p in zip(gs, path, strict=True):
        assert _angle(a, p) == pytest.approx(g * omega, abs=1e-5)
        assert np.linalg.norm(p) == pytest.approx((1 - g) * np.linalg.norm(a) + g * np.linalg.norm(b), rel=1e-5)


def test_slerp_stays_in_the_plane_of_its_endpoints():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=10), rng.normal(size=10)
    p = slerp(a, b, 0.3).astype(np.float64)
    coef, *_ = np.linalg.lstsq(np.stack([a, b], 1), p, rcond=None)
    np.testing.assert_allclose(np.stack([a, b], 1) @ coef, p, atol=1e-5)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_slerp_is_finite_for_parallel_and_antiparallel_vectors(sign):
    a = np.array([1.0, 2.0, -0.5, 0.25])
    b = sign * 2 * a
    for g in np.linspace(0, 1, 11):
        p = slerp(a, b, g)
        assert np.all(np.isfinite(p))
        assert np.linalg.norm(p) == pytest.approx((1 - g) * np.linalg.norm(a) + g * np.linalg.norm(b), rel=1e-5)
    np.testing.assert_allclose(slerp(a, b, 1.0), b, atol=1e-5)
    if sign < 0:  # half-way round an anti-parallel pair is at right angles to both ends
        assert _angle(slerp(a, b, 0.5), a) == pytest.approx(np.pi / 2, abs=1e-5)
        steps = [_angle(slerp(a, b, g), slerp(a, b, g + 0.25)) for g in (0, 0.25, 0.5, 0.75)]
        np.testing.assert_allclose(steps, np.pi / 4, atol=1e-5)


def test_linear_and_normalized_linear_formulas():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    np.testing.assert_allclose(linear(a, b, 0.25), [0.75, 0.5])
    np.testing.assert_allclose(
        normalized_linear(a, b, 0.25), np.array([0.75, 0.5]) / np.sqrt(0.75**2 + 0.25**2), rtol=1e-6
    )


def test_normalized_linear_keeps_unit_variance_for_independent_gaussians():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=200_000), rng.normal(size=200_000)
    for g in (0.1, 0.3, 0.5, 0.8):
        assert np.var(normalized_linear(a, b, g)) == pytest.approx(1.0, abs=0.015)
    assert np.var(linear(a, b, 0.5)) == pytest.approx(0.5, abs=0.01)  # what the normalisation fixes


def test_interpolation_of_noise_latents_keeps_their_shape():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(4, 8, 8)), rng.normal(size=(4, 8, 8))
    out = interpolate(a, b, [0, 0.5, 1], "slerp")
    assert out.shape == (3, 4, 8, 8)
    np.testing.assert_allclose(out[0], a, atol=1e-5)


def test_text_diff_is_the_normalised_difference_and_slerp_keeps_the_image_norm():
    rng = np.random.default_rng(5)
    t, t0, z = rng.normal(size=8), rng.normal(size=8), 7 * rng.normal(size=8)
    d = text_diff(t, t0)
    expected = t / np.linalg.norm(t) - t0 / np.linalg.norm(t0)
    np.testing.assert_allclose(d, expected / np.linalg.norm(expected), rtol=1e-5)
    np.testing.assert_allclose(apply_text_diff(z, d, 0.0), z, rtol=1e-5)
    moved = apply_text_diff(z, d, 0.5)
    assert np.linalg.norm(moved) == pytest.approx(np.linalg.norm(z), rel=1e-5)
    assert _angle(moved, z) == pytest.approx(0.5 * _angle(z, d), abs=1e-5)


# ---- concepts ------------------------------------------------------------------------------------------
def test_largest_valid_k_rule():
    shares = {
        1: np.array([1.0]),
        2: np.array([0.6, 0.4]),
        3: np.array([0.5, 0.3, 0.2]),
        4: np.array([0.4, 0.3, 0.25, 0.05]),
    }
    assert largest_valid_k(shares, 0.2) == 3
    assert largest_valid_k(shares, 0.05) == 4
    assert largest_valid_k(shares, 0.35) == 2
    assert largest_valid_k(shares, 0.7) == 1
    # not monotone in k: the largest qualifying k wins even when a smaller one fails
    assert largest_valid_k({1: np.ones(1), 2: np.array([0.95, 0.05]), 3: np.array([0.4, 0.3, 0.3])}, 0.2) == 3


def _three_groups(masses=(0.5, 0.3, 0.2), per=5, d=16, seed=0):
    rng = np.random.default_rng(seed)
    dirs, weights, truth = [], [], []
    for g, m in enumerate(masses):
        pts = np.eye(d)[g] + 0.05 * rng.normal(size=(per, d))
        dirs.append(pts / np.linalg.norm(pts, axis=1, keepdims=True))
        weights += [m / per] * per
        truth += [g] * per
    return np.concatenate(dirs), np.array(weights), np.array(truth)


def test_weighted_spherical_kmeans_finds_separated_groups_and_respects_the_threshold():
    dirs, w, truth = _three_groups()
    k, assign = group_features(dirs, w, range(1, 7), min_share=0.15)
    assert k == 3
    for g in range(3):  # each true group is one cluster
        assert len(set(assign[truth == g])) == 1
    np.testing.assert_allclose(sorted(cluster_shares(assign, w, k)), [0.2, 0.3, 0.5], atol=1e-9)
    k2, assign2 = group_features(dirs, w, range(1, 7), min_share=0.25)
    assert k2 < 3 and np.all(cluster_shares(assign2, w, k2) >= 0.25)


def test_activation_weights_decide_the_clusters_mass():
    dirs, _, truth = _three_groups()
    w = np.where(truth == 2, 1.0, 0.01)  # one group holds almost all the mass
    k, _ = group_features(dirs, w, range(1, 7), min_share=0.1)
    assert k == 1


@pytest.fixture(scope="module")
def sae():
    torch.manual_seed(0)
    s = SparseAutoencoder(SAEConfig(d_in=16, n_features=48, input_scale=1.3))
    with torch.no_grad():
        s.b_enc.fill_(0.02)
        s.b_dec.normal_(0, 0.1)
    return s.eval()


def test_image_concepts_partition_the_active_features(sae):
    z = np.random.default_rng(6).normal(size=16).astype(np.float32) * 3
    labels = {i: f"label-{i}" for i in range(0, 48, 2)}
    concepts = image_concepts(sae, z, min_share=0.1, k_max=6, labels=labels)
    with torch.no_grad():
        a = sae.encode(torch.tensor(z)[None])[0].numpy()
    active = set(np.flatnonzero(a > 0).tolist())
    members = [f for c in concepts for f in c.feature_ids]
    assert sorted(members) == sorted(active) and len(members) == len(set(members))
    assert sum(c.mass_share for c in concepts) == pytest.approx(1.0)
    for c in concepts:
        assert c.mass_share >= 0.1
        assert c.mass_share == pytest.approx(sum(a[f] for f in c.feature_ids) / a.sum(), rel=1e-5)
        assert list(c.activations) == sorted(c.activations, reverse=True)
        top = c.feature_ids[0]
        assert c.label == labels.get(top, f"feature {top}")
    assert [c.mass_share for c in concepts] == sorted((c.mass_share for c in concepts), reverse=True)


# ---- SAE edits -----------------------------------------------------------------------------------------
def test_edits_with_the_error_kept_move_by_the_decoder_rows(sae):
    z = np.random.default_rng(7).normal(size=16).astype(np.float32) * 3
    with torch.no_grad():
        a = sae.encode(torch.tensor(z)[None])[0].numpy()
    w, s = sae.W_dec.detach().numpy(), sae.cfg.input_scale
    np.testing.assert_allclose(edit_activations(sae, z), z, atol=1e-6)  # an empty edit is the identity
    f = int(np.argmax(a))
    np.testing.assert_allclose(edit_activations(sae, z, scale={f: 0.0}), z - a[f] * w[f] / s, atol=1e-5)
    np.testing.assert_allclose(edit_activations(sae, z, set_to={3: 2.0}), z + (2.0 - a[3]) * w[3] / s, atol=1e-5)
    recon = edit_activations(sae, z, keep_error=False)
    np.testing.assert_allclose(recon, (a @ w + sae.b_dec.detach().numpy()) / s, atol=1e-5)


def test_strips_have_the_unchanged_embedding_in_the_middle(sae):
    z = np.random.default_rng(8).normal(size=16).astype(np.float32) * 3
    scales = symmetric_scales(1.0, 4)
    assert scales == [-1.0, -0.5, 0.0, 0.5, 1.0]
    fs = feature_strip(sae, z, 5, 2.0, scales)
    np.testing.assert_allclose(fs[2], z, atol=1e-6)
    w = sae.W_dec.detach().numpy()[5] / sae.cfg.input_scale
    np.testing.assert_allclose(fs[4] - z, 2.0 * w, atol=1e-5)  # +1 x unit 2.0 along the decoder row
    with torch.no_grad():
        a = sae.encode(torch.tensor(z)[None])[0].numpy()
    members = list(np.flatnonzero(a > 0)[:3])
    gs = group_scale_strip(sae, z, members, scales)
    np.testing.assert_allclose(gs[2], z, atol=1e-6)
    removed = z - sum(a[f] * sae.W_dec.detach().numpy()[f] for f in members) / sae.cfg.input_scale
    np.testing.assert_allclose(gs[0], removed, atol=1e-5)  # scale -1 removes the group
