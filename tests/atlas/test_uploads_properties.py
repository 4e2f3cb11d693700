"""Property tests of upload decoding: whatever bytes a user uploads, `decode_upload` gives an RGB image within
the policy's limits or one AtlasError line, never another exception."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from atlas.errors import AtlasError
from atlas.uploads import UploadPolicy, decode_upload

POLICY = UploadPolicy(max_bytes=64 * 1024, max_pixels=4096)


def _valid(fmt: str, size: tuple[int, int], mode: str) -> bytes:
    buf = io.BytesIO()
    img = Image.new(mode, size, 128)
    img.save(buf, format=fmt)
    return buf.getvalue()


VALID = [
    _valid(fmt, size, mode)
    for fmt, mode in (("PNG", "RGBA"), ("PNG", "P"), ("PNG", "I;16"), ("JPEG", "L"), ("WEBP", "RGB"), ("GIF", "L"))
    for size in ((1, 1), (16, 12), (80, 80))
]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """Real image files with bytes flipped, cut, spliced or repeated: the inputs a decoder's parser meets."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "repeat"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(max_size=16))
        else:
            data += data[at : at + draw(st.integers(1, 64))] * draw(st.integers(1, 50))
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(mutated_images() | st.binary(max_size=256))
def test_any_upload_is_an_rgb_image_within_limits_or_one_line(data: bytes) -> None:
    try:
        img = decode_upload(data, "upload.png", POLICY)
    except AtlasError as e:
        assert str(e).startswith("upload.png: ") and "\n" not in str(e), str(e)
        return
    assert img.mode == "RGB" and img.width * img.height <= POLICY.max_pixels
    assert len(data) <= POLICY.max_bytes
