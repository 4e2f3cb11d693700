"""One upload policy (`atlas.uploads`) for every image a user hands in: the search path (`decode_upload`) and
the generation path (`ModelSession.embedding_of_bytes`, and `--image FILE` through `embedding_of`) refuse the
same files, each with one line, before any model loads."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from atlas.errors import AtlasError
from atlas.session import ModelSession
from atlas.store import AtlasStore
from atlas.uploads import UPLOADS, UploadPolicy, decode_upload


def _image(fmt: str, size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format=fmt)
    return buf.getvalue()


def _oversized() -> bytes:
    return _image("PNG") + b"\0" * UPLOADS.max_bytes


SMALL = UploadPolicy(max_pixels=1000)
BAD = [
    ("oversized", _oversized, UPLOADS, "too large"),
    ("too many pixels", lambda: _image("PNG", (100, 100)), SMALL, "pixels; the limit is 1,000 pixels"),
    ("GIF", lambda: _image("GIF"), UPLOADS, "not a readable PNG, JPEG or WEBP image"),
    ("BMP", lambda: _image("BMP"), UPLOADS, "not a readable PNG, JPEG or WEBP image"),
]


@pytest.fixture
def session(tmp_path) -> ModelSession:
    return ModelSession(AtlasStore(tmp_path), device="cpu")


@pytest.mark.parametrize("what, make, policy, message", BAD, ids=[b[0] for b in BAD])
def test_search_and_generation_refuse_the_same_uploads(session, what, make, policy, message):
    data = make()
    with pytest.raises(AtlasError, match=message) as search_error:
        decode_upload(data, "x", policy)
    session.uploads = policy
    with pytest.raises(AtlasError, match=message) as generation_error:
        session.embedding_of_bytes(data, "x")
    for e in (search_error, generation_error):
        assert "\n" not in str(e.value) and str(e.value).startswith("x: ")
    assert "embedder" not in session.__dict__  # refused before CLIP was loaded


def test_an_oversized_image_file_is_refused_before_it_is_read(session, tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_oversized())
    with pytest.raises(AtlasError, match="too large"):
        session.embedding_of(str(path))


def test_the_policy_describes_itself_for_the_widgets():
    assert UPLOADS.describe() == "PNG, JPEG or WEBP, at most 10 MiB"
    assert UPLOADS.extensions == ["png", "jpg", "jpeg", "webp"] and UPLOADS.max_mib == 10
    assert decode_upload(_image("WEBP")).size == (8, 8) and decode_upload(_image("JPEG")).mode == "RGB"


def test_a_png_with_a_broken_chunk_is_one_line() -> None:
    # found by test_uploads_properties: PIL raises SyntaxError for it, which is not an OSError
    data = (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x0c\x10\x00\x00\x00\x00\x1e\x1c\xbe\x1e"
        b"\x00\x00\x00\x15IDATx\x9ccdh`\xc0\x0b\x98\xf0" + b"\x89PNG" * 5
    )
    with pytest.raises(AtlasError, match=r"^upload: not a readable .* image \(SyntaxError\)$"):
        decode_upload(data)
