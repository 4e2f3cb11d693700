"""viewer/steer.py driven with Streamlit's AppTest on a tiny atlas written directly (random CLIP, random SAE,
the random decoder): the image explorer shows an image's concepts and renders, the steering panel renders."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from atlas.config import AtlasConfig
from atlas.models.sae.autoencoder import SAEConfig, SparseAutoencoder
from atlas.store import AtlasStore, table_from_rows

DIM, N_FEATURES, N_IMAGES = 64, 32, 6


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> AtlasStore:
    from atlas.models.clip import load_embedder

    store = AtlasStore(tmp_path_factory.mktemp("steer-atlas"))
    embedder = load_embedder("builtin:random-clip", "cpu")
    pictures = [Image.new("RGB", (32, 32), (40 * i, 200 - 30 * i, 90)) for i in range(N_IMAGES)]
    z = embedder.encode_images(pictures)
    torch.manual_seed(0)
    sae = SparseAutoencoder(
        SAEConfig(d_in=DIM, n_features=N_FEATURES, input_scale=float(np.sqrt(DIM) / np.linalg.norm(z, axis=1).mean()))
    )
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
    sae.save(store.sae_dir)
    ids = list(range(500, 500 + N_IMAGES))
    store.write_part("embeddings", "part-00000", table_from_rows("embeddings", {"image_id": ids, "embedding": z}, DIM))
    fids = list(range(N_FEATURES))
    store.write_part("features", "part-00000", table_from_rows("features", {
        "feature_id": fids, "alive": [True] * N_FEATURES, "frequency": [0.5] * N_FEATURES,
        "mean_activation": [0.5] * N_FEATURES, "max_activation": [1.0] * N_FEATURES,
        "activation_mass": [1.0] * N_FEATURES,
        "decoder_norm": [0.1] * N_FEATURES, "label": [f"thing {f}" if f % 2 == 0 else None for f in fids],
    }))  # fmt: skip
    cfg = AtlasConfig.model_validate(
        {"models": {"clip": "builtin:random-clip", "decoder": "builtin:random-decoder"}, "render": {"steps": 1}}
    )
    store.update_manifest(lambda m: m.update(config=cfg.model_dump(mode="json")))
    return store


def _explorer(root: str) -> None:
    from atlas.store import AtlasStore
    from viewer.steer import image_explorer_page

    image_explorer_page(AtlasStore(root))


def _panel(root: str, feature_id: int) -> None:
    from atlas.store import AtlasStore
    from viewer.steer import steering_panel

    steering_panel(AtlasStore(root), feature_id)


def test_image_explorer_shows_concepts_and_renders(store):
    at = AppTest.from_function(_explorer, args=(str(store.root),), default_timeout=120).run()
    assert not at.exception, at.exception
    concept_sliders = [s for s in at.slider if s.key.startswith("explorer_concept_")]
    assert concept_sliders and all(s.value == 1.0 for s in concept_sliders)
    assert "concept 0" in concept_sliders[0].label
    concept_sliders[0].set_value(0.0)
    at.button(key="explorer_render").click().run()
    assert not at.exception, at.exception
    assert len(at.image) == 1


def test_image_explorer_refuses_a_bad_upload_id(store):
    at = AppTest.from_function(_explorer, args=(str(store.root),), default_timeout=60).run()
    at.text_input(key="explorer_image_id").input("424242").run()
    assert not at.exception
    assert any("424242" in e.value and "not in the atlas" in e.value for e in at.error)


def test_steering_panel_renders_a_feature_on_the_template_and_on_an_image(store):
    at = AppTest.from_function(_panel, args=(str(store.root), 3), default_timeout=120).run()
    assert not at.exception, at.exception
    at.slider(key="steer_scale_3").set_value(2.0)
    at.button(key="steer_render_3").click().run()
    assert not at.exception, at.exception
    assert len(at.image) == 1
    at.radio(key="steer_target_3").set_value("an image").run()
    at.button(key="steer_render_3").click().run()
    assert not at.exception, at.exception
    assert len(at.image) == 1


def test_upload_is_decoded_safely(store):
    from atlas.errors import AtlasError
    from atlas.session import ModelSession

    session = ModelSession(store, device="cpu")
    buf = io.BytesIO()
    Image.new("RGBA", (40, 20), (10, 200, 30, 128)).save(buf, format="PNG")
    assert session.embedding_of_bytes(buf.getvalue()).shape == (DIM,)
    with pytest.raises(AtlasError, match="not a readable PNG, JPEG or WEBP image"):
        session.embedding_of_bytes(b"GIF89a broken", "x.gif")
    with pytest.raises(AtlasError, match="too large"):
        session.embedding_of_bytes(b"\0" * (10 * 1024 * 1024 + 1), "huge.png")
