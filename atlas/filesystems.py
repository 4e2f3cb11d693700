"""Local paths and pyarrow filesystem URIs (`s3://…`, `gs://…`, `file://…`) opened the same way."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs

from atlas.errors import AtlasError


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) of a local path or a URI; AtlasError naming data.source when it cannot open."""
    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as e:  # unknown scheme, no creds
            raise AtlasError(f"data.source = {uri!r}: cannot open this filesystem ({e})") from None
    return pafs.LocalFileSystem(), str(uri)
