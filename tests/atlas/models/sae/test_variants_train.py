"""Every SAE variant trains on the toy world (the toy CLIP's embeddings of generated scenes) and reaches
a sparse code that explains most of the variance, with the sparsity its own mechanism promises."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atlas.embed import decode_items, embed_batch
from atlas.models.clip import load_embedder
from atlas.models.sae.registry import sae_settings
from atlas.sources import plan_shards, read_all
from atlas.toyworld import write_world
from atlas.train import train_sae


@pytest.fixture(scope="module")
def toy_embeddings(tmp_path_factory):
    images = write_world(tmp_path_factory.mktemp("world"), 1200, 32, seed=5)
    embedder = load_embedder("builtin:toy-clip", "cpu")
    items = list(read_all(str(images), plan_shards(str(images), 1200)))
    batch = decode_items(items, embedder.geometry.size, 64, 64_000_000)
    return np.asarray(batch["image_id"], dtype=np.int64), embed_batch(embedder, batch)


SETTINGS = {
    "relu": {"l1_coefficient": 0.2},
    "topk": {"k": 8},
    "batchtopk": {"k": 8},
    "jumprelu": {"l0_coefficient": 0.02},
}


@pytest.mark.parametrize("kind", sorted(SETTINGS))
def test_variant_trains_on_the_toy_world(toy_embeddings, kind):
    ids, emb = toy_embeddings
    cfg = sae_settings(kind=kind, **SETTINGS[kind], epochs=12, batch_size=64, warmup_steps=20, log_every=20)
    rng = np.random.default_rng(0)

    def batches(epoch):
        perm = rng.permutation(len(ids))
        return ((ids[perm[s : s + 256]], emb[perm[s : s + 256]]) for s in range(0, len(perm), 256))

    result = train_sae(batches, emb.shape[1], len(ids), cfg, torch.device("cpu"))
    held = result.holdout
    assert result.sae.cfg.kind == kind
    assert held["explained_variance"] > 0.75, held  # k = 8 of 256 after 12 short epochs: ~0.8
    assert held["l0"] < 0.5 * result.sae.cfg.n_features, held  # a sparse code, not a dense one
    if kind == "topk":
        assert held["l0"] == pytest.approx(8)
    if kind == "batchtopk":  # inference uses the learnt threshold: about k on average, not exactly k
        assert 3 < held["l0"] < 20, held
        assert float(result.sae.get_buffer("threshold")) > 0
    if kind == "jumprelu":
        theta = result.sae.get_parameter("log_threshold").exp()
        assert not torch.allclose(theta, torch.full_like(theta, 0.01))  # the thresholds were learnt
