"""Model loading by spec string, through the same code paths as real models."""

import numpy as np
import pytest
import torch

from atlas.builtin import builtin_model_dir
from atlas.errors import AtlasError
from atlas.models.clip import clip_image_size, load_embedder, prepare_image
from atlas.models.renderer import load_renderer


def test_kandinsky_pipeline_path_renders_reproducibly_per_image():
    """The random Kandinsky-2.2-shaped decoder goes through diffusers' KandinskyV22Pipeline."""
    r = load_renderer("builtin:random-decoder", "cpu")
    assert type(r.pipe).__name__ == "KandinskyV22Pipeline"
    emb = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)
    neg = np.zeros(64, np.float32)
    batch = r.render(emb, neg, [5, 6, 7], steps=3, guidance_scale=4.0, size=64)
    alone = r.render(emb[2:], neg, [7], steps=3, guidance_scale=4.0, size=64)
    assert batch[0].size == (64, 64)
    assert np.abs(np.asarray(batch[2], dtype=int) - np.asarray(alone[0], dtype=int)).max() <= 1
    other = r.render(emb[2:], neg, [8], steps=3, guidance_scale=4.0, size=64)
    assert np.abs(np.asarray(other[0], dtype=int) - np.asarray(alone[0], dtype=int)).max() > 10


def test_local_open_clip_folder_loads_and_zero_embedding_is_the_tower_on_zeros():
    folder = builtin_model_dir("builtin:random-clip")
    emb = load_embedder(str(folder), "cpu")
    assert emb.dim == 64 and clip_image_size(str(folder)) == 32
    zero = emb.zero_embedding()
    assert np.linalg.norm(zero) > 0
    np.testing.assert_allclose(zero, emb.encode_normalized(torch.zeros(1, 3, 32, 32))[0])


def test_prepare_image_resizes_the_short_side_and_centre_crops():
    from PIL import Image

    img = Image.new("RGB", (100, 50), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 25, 50))  # a red band on the left, cropped away
    out = prepare_image(img, 32)
    assert out.shape == (32, 32, 3) and out[:, :, 0].max() < 30


@pytest.mark.parametrize(
    "spec, message",
    [
        ("open_clip:NoSuchArch/none", "open_clip could not load it"),
        ("builtin:nothing", "unknown built-in model"),
        ("/definitely/not/here", "not an open_clip"),
    ],
)
def test_bad_clip_specs_are_one_line_errors(spec, message):
    with pytest.raises(AtlasError, match=message) as e:
        load_embedder(spec, "cpu")
    assert "\n" not in str(e.value)


def test_folder_without_model_index_is_refused(tmp_path):
    with pytest.raises(AtlasError, match="not a diffusers pipeline folder"):
        load_renderer(str(tmp_path), "cpu")
