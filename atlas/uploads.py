"""The one upload policy: size, pixel and format limits for every image a user hands in (the viewer's Search
and Image explorer uploads, the CLI's `--image FILE`), and the safe decoder that applies them.

The format comes from the bytes, never from a file name; a refusal is an AtlasError with one line.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from atlas.errors import AtlasError
from atlas.images import to_rgb


@dataclass(frozen=True, slots=True)
class UploadPolicy:
    """Limits on an uploaded image: file size, pixel count, and the formats accepted."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP")

    @property
    def max_mib(self) -> int:
        """The size limit in whole MiB (Streamlit's `server.maxUploadSize`)."""
        return max(1, self.max_bytes // 2**20)

    @property
    def extensions(self) -> list[str]:
        """File-name extensions for upload widgets (a hint only: decoding checks the bytes)."""
        ext = {"PNG": ["png"], "JPEG": ["jpg", "jpeg"], "WEBP": ["webp"]}
        return [e for f in self.formats for e in ext.get(f, [f.lower()])]

    def format_names(self) -> str:
        """E.g. 'PNG, JPEG or WEBP'."""
        *first, last = self.formats
        return f"{', '.join(first)} or {last}" if first else last

    def describe(self) -> str:
        """E.g. 'PNG, JPEG or WEBP, at most 10 MiB'."""
        return f"{self.format_names()}, at most {self.max_mib} MiB"

    def check_size(self, n_bytes: int, name: str = "upload") -> None:
        """AtlasError if a file of `n_bytes` is over the size limit (before reading it)."""
        if n_bytes > self.max_bytes:
            raise AtlasError(
                f"{name}: too large ({n_bytes / 2**20:.1f} MiB); the limit is {self.max_bytes / 2**20:.0f} MiB"
            )


UPLOADS = UploadPolicy()
MAX_UPLOAD_BYTES = UPLOADS.max_bytes
MAX_UPLOAD_PIXELS = UPLOADS.max_pixels
UPLOAD_FORMATS = UPLOADS.formats


def decode_upload(
    data: bytes,
    name: str = "upload",
    policy: UploadPolicy = UPLOADS,
    *,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """An uploaded image as an RGB PIL image (alpha composited on white); AtlasError (one line) if it is empty,
    too big, too many pixels, not one of the policy's formats, or undecodable."""
    policy = UploadPolicy(max_bytes or policy.max_bytes, max_pixels or policy.max_pixels, policy.formats)
    if not data:
        raise AtlasError(f"{name}: the upload is empty")
    policy.check_size(len(data), name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(policy.formats))
            if img.width * img.height > policy.max_pixels:
                raise AtlasError(
                    f"{name}: the image is {img.width}x{img.height} pixels; the limit is {policy.max_pixels:,} pixels"
                )
            img.load()
    except AtlasError:
        raise
    # broad, as in atlas.images.decode_image: PIL's decoders raise many types for crafted bytes (OSError,
    # SyntaxError for a broken PNG chunk, EOFError, struct.error, ...), and each is the upload's fault
    except Exception as e:  # noqa: BLE001
        raise AtlasError(f"{name}: not a readable {policy.format_names()} image ({type(e).__name__})") from None
    return to_rgb(img)
