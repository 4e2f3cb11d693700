"""Image sources and safe decoding: list an image folder, give each image a stable id, decode with guards.

Decoding never raises for a bad file: it returns the reason, which the embed stage records in `errors`.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def image_id_for(source: str) -> int:
    """A stable signed 64-bit id from the source string (a path relative to the source root, or a URI)."""
    digest = hashlib.blake2b(source.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


@dataclass(slots=True)
class DecodedImage:
    pixels: np.ndarray  # uint8 [S, S, 3], prepared for the model
    width: int
    height: int
    thumbnail: bytes  # JPEG


def decode_image(data: bytes, model_size: int, thumbnail_size: int, max_pixels: int) -> DecodedImage:
    """Decode image bytes, convert odd modes to RGB, and prepare model pixels and a thumbnail (both cut from
    the same decoded image). A JPEG is decoded at the smallest scale whose sides are still at least the model
    size and the thumbnail size (`Image.draft`: the DCT does the downscaling, 1/2 to 1/8), which is several
    times cheaper than a full decode; the pixels match the full decode within resampling error
    (tests/atlas/test_images_decode.py). `width`/`height` are the original image's.

    Raises ValueError with a one-line reason for anything that cannot be used."""
    from atlas.models.clip import prepare_image

    img, w, h = open_image(data, max_pixels, draft=max(model_size, thumbnail_size))
    img = to_rgb(img)
    pixels = prepare_image(img, model_size)  # first: the thumbnail shrinks img in place
    return DecodedImage(pixels, w, h, _thumbnail_jpeg(img, thumbnail_size))


def decode_thumbnail(data: bytes, thumbnail_size: int, max_pixels: int) -> tuple[int, int, bytes]:
    """(width, height, JPEG thumbnail) of image bytes, decoding a JPEG at a reduced scale (`Image.draft`)
    since only the thumbnail is wanted. Raises ValueError like `decode_image`."""
    img, w, h = open_image(data, max_pixels, draft=thumbnail_size)
    return w, h, _thumbnail_jpeg(to_rgb(img), thumbnail_size)


def open_image(data: bytes, max_pixels: int, draft: int | None = None) -> tuple[Image.Image, int, int]:
    """(loaded image, width, height) of untrusted bytes, refusing bombs; with `draft`, a JPEG is decoded at
    the smallest scale still at least `draft` pixels on each side. Raises ValueError with a one-line reason."""
    if not data:
        raise ValueError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ValueError(f"image too large ({w}x{h} pixels > data.max_image_pixels = {max_pixels})")
            if draft is not None:
                img.draft("RGB", (draft, draft))
            img.load()
    except ValueError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"decompression bomb refused ({e})") from None
    # Deliberately broad: the block above only runs PIL on untrusted bytes, and PIL's decoders raise many types
    # for crafted or corrupt data (OSError, SyntaxError, EOFError, struct.error, IndexError, TypeError, ...).
    # One such file must become a row of the `errors` table (atlas.embed.decode_items), not stop the build.
    except Exception as e:  # noqa: BLE001
        raise ValueError(
            f"not a decodable image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    if w == 0 or h == 0:
        raise ValueError("image has zero size")
    return img, w, h


def _thumbnail_jpeg(img: Image.Image, size: int) -> bytes:
    """A JPEG thumbnail of `img`, which it shrinks in place (callers are done with it)."""
    img.thumbnail((size, size), Image.Resampling.BILINEAR)  # bicubic costs twice as much at 96 px
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB from any PIL mode: alpha is composited on white, 16-bit and float are rescaled, CMYK converted."""
    ImageOps.exif_transpose(img, in_place=True)  # without in_place it returns a copy even when upright
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img if img.mode == "RGB" else img.convert("RGB")
