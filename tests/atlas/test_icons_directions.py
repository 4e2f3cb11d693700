import numpy as np
import pytest
import torch

from atlas.config import DirectionsConfig
from atlas.directions import aligned_features, contrastive_direction, prompt_pairs
from atlas.icons import concept_icon_embeddings, fidelity_ranks, icon_embeddings
from atlas.models.clip import load_embedder
from atlas.models.sae.autoencoder import SAEConfig, SparseAutoencoder


@pytest.fixture(scope="module")
def sae():
    torch.manual_seed(0)
    s = SparseAutoencoder(SAEConfig(d_in=8, n_features=32, input_scale=1.7))
    with torch.no_grad():
        s.b_enc.fill_(0.05)
    return s.eval()


def test_icon_embedding_is_the_template_scaled_to_a_fifth_with_the_feature_set(sae):
    t = np.random.default_rng(0).normal(size=8).astype(np.float32)
    out = icon_embeddings(sae, t, np.array([3, 7]), template_scale=0.2, feature_scale=50.0)
    with torch.no_grad():
        a = sae.encode(torch.tensor(t)[None])[0].numpy()
        w, b, s = sae.W_dec.numpy(), sae.b_dec.numpy(), sae.cfg.input_scale
    for row, f in zip(out, (3, 7), strict=True):
        acts = 0.2 * a
        acts[f] = 50.0
        np.testing.assert_allclose(row, (acts @ w + b) / s, rtol=1e-5, atol=1e-5)


def test_a_concept_icon_sets_its_features_in_proportion_the_strongest_at_the_feature_scale(sae):
    t = np.random.default_rng(3).normal(size=8).astype(np.float32)
    groups = [([5, 9, 2], [2.0, 1.0, 0.5]), ([11], [0.3])]
    out = concept_icon_embeddings(sae, t, groups, template_scale=0.2, feature_scale=50.0)
    with torch.no_grad():
        a = sae.encode(torch.tensor(t)[None])[0].numpy()
        w, b, s = sae.W_dec.numpy(), sae.b_dec.numpy(), sae.cfg.input_scale
    acts = 0.2 * a
    acts[[5, 9, 2]] = [50.0, 25.0, 12.5]
    np.testing.assert_allclose(out[0], (acts @ w + b) / s, rtol=1e-5, atol=1e-5)
    # a one-feature concept is that feature's ordinary icon
    np.testing.assert_allclose(out[1], icon_embeddings(sae, t, np.array([11]), 0.2, 50.0)[0], rtol=1e-5, atol=1e-5)


def test_keep_error_adds_the_template_reconstruction_error(sae):
    t = np.random.default_rng(1).normal(size=8).astype(np.float32)
    plain = icon_embeddings(sae, t, np.array([0]), 0.2, 50.0, keep_error=False)
    kept = icon_embeddings(sae, t, np.array([0]), 0.2, 50.0, keep_error=True)
    with torch.no_grad():
        err = t - sae.decode(sae.encode(torch.tensor(t)[None]))[0].numpy()
    np.testing.assert_allclose(kept - plain, err[None], atol=1e-5)


def test_fidelity_rank_counts_stronger_features(sae):
    x = np.random.default_rng(2).normal(size=(4, 8)).astype(np.float32)
    with torch.no_grad():
        a = sae.encode(torch.tensor(x)).numpy()
    fids = np.array([0, 5, 9, 31])
    ranks = fidelity_ranks(sae, x, fids)
    for r, row, f in zip(ranks, a, fids, strict=True):
        assert r == 1 + int((row > row[f]).sum())
    top = a.argmax(axis=1)
    assert (fidelity_ranks(sae, x, top) == 1).all()


def test_direction_is_the_mean_of_normalised_pair_differences():
    emb = load_embedder("builtin:random-clip", "cpu")
    cfg = DirectionsConfig(
        mediums=["photo", "drawing"], subjects=["circle", "star", "dog"], template="a {medium} of a {word} {subject}"
    )
    pairs = prompt_pairs("red", "blue", cfg)
    assert len(pairs) == 6 and pairs[0] == ("a photo of a red circle", "a photo of a blue circle")
    v = contrastive_direction(emb, pairs)
    diffs = []
    for p, n in pairs:  # one prompt at a time: an independent computation
        zp, zn = emb.encode_texts([p])[0], emb.encode_texts([n])[0]
        diffs.append(zp / np.linalg.norm(zp) - zn / np.linalg.norm(zn))
    np.testing.assert_allclose(v, np.mean(diffs, axis=0), atol=1e-5)


def test_aligned_features_are_ranked_by_cosine(sae):
    v = sae.W_dec[11].detach().numpy() * 3.0
    top = aligned_features(sae, v, 5)
    assert top[0]["feature_id"] == 11 and top[0]["cosine"] == pytest.approx(1.0, abs=1e-6)
    cos = [t["cosine"] for t in top]
    assert cos == sorted(cos, reverse=True)


def test_direction_strip_middle_is_unchanged_and_steps_scale_with_the_norm():
    from atlas.steering import direction_strip

    z = np.array([3.0, 4.0], np.float32)  # norm 5
    d = np.array([0.0, 1.0], np.float32)
    strip = direction_strip(z, d, [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(strip[1], z)
    np.testing.assert_allclose(strip[2] - z, [0.0, 5.0])
    np.testing.assert_allclose(strip[0] - z, [0.0, -5.0])
