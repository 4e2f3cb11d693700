"""decode_image decodes JPEGs at a reduced scale: its pixels match a full decode within resampling error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from atlas.images import decode_image, open_image, to_rgb
from atlas.models.clip import prepare_image
from jobs.bench_data import photo_like_jpeg


def _full_decode_pixels(data: bytes, size: int) -> np.ndarray:
    img, _, _ = open_image(data, 10**9)
    return prepare_image(to_rgb(img), size)


@pytest.mark.parametrize(("w", "h", "orientation"), [(640, 480, None), (1000, 750, None), (480, 640, 6)])
def test_reduced_scale_pixels_match_a_full_decode(w, h, orientation):
    data = photo_like_jpeg(w, h, orientation=orientation)
    d = decode_image(data, 224, 96, 10**8)
    full = _full_decode_pixels(data, 224)
    assert d.pixels.shape == full.shape == (224, 224, 3)
    diff = np.abs(d.pixels.astype(int) - full.astype(int))
    # measured: mean 1.6-2.6 of 255 (DCT downscaling against bicubic from the full image)
    assert diff.mean() < 4.0 and np.percentile(diff, 99) < 40
    assert (d.width, d.height) == (w, h)  # the original size, not the reduced one
    thumb = Image.open(io.BytesIO(d.thumbnail))
    assert max(thumb.size) == 96
    # EXIF orientation 6 turns a 480 x 640 file into a landscape picture, in the thumbnail too
    assert (thumb.size[0] > thumb.size[1]) == (orientation == 6 or w > h)


def test_the_reduced_scale_really_is_reduced():
    data = photo_like_jpeg(1600, 1200)
    img, w, h = open_image(data, 10**9, draft=224)
    assert (w, h) == (1600, 1200) and img.size == (400, 300)  # 1/4: the smallest scale still >= 224 a side
