"""The embed stage as plain functions: decode a batch of raw images from a source (`atlas/sources.py`), embed
the good ones, split the result into the `images`, `embeddings` and `errors` tables; or, for precomputed
embeddings (`atlas/embedding_source.py`), pass a shard's rows through with thumbnails of their images.
`jobs/embed.py` runs these in Ray; they run without it too.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from atlas.embedding_source import read_embedding_rows
from atlas.filesystems import filesystem
from atlas.images import decode_image, decode_thumbnail, image_id_for
from atlas.models.clip import ClipEmbedder
from atlas.sources import RawImage
from atlas.store import table_from_rows, vectors_to_numpy

NOT_FINITE = "embedding is not finite (NaN or Inf)"


def decode_items(items: list[RawImage], model_size: int, thumbnail_size: int, max_pixels: int) -> dict[str, np.ndarray]:
    """Decode raw items of a source. Columns: source, image_id, caption, width, height, thumbnail, pixels
    (uint8 [B, S, S, 3], zeros for failures) and error (empty string when fine)."""
    n = len(items)
    out: dict[str, list] = {k: [] for k in ("source", "image_id", "caption", "width", "height", "thumbnail", "error")}
    pixels = np.zeros((n, model_size, model_size, 3), dtype=np.uint8)
    for i, item in enumerate(items):
        error = item.error
        w = h = 0
        thumb = b""
        if not error:
            try:
                decoded = decode_image(item.data, model_size, thumbnail_size, max_pixels)
                pixels[i], w, h, thumb = decoded.pixels, decoded.width, decoded.height, decoded.thumbnail
            except ValueError as e:
                error = str(e)
        out["source"].append(item.source)
        out["image_id"].append(image_id_for(item.source))
        out["caption"].append(item.caption or "")
        out["width"].append(w)
        out["height"].append(h)
        out["thumbnail"].append(thumb)
        out["error"].append(error)
    cols = {k: np.array(v, dtype=object) for k, v in out.items()}
    cols["image_id"] = np.array(out["image_id"], dtype=np.int64)
    cols["width"] = np.array(out["width"], dtype=np.int32)
    cols["height"] = np.array(out["height"], dtype=np.int32)
    cols["pixels"] = pixels
    return cols


def embed_batch(embedder: ClipEmbedder, batch: dict[str, np.ndarray]) -> np.ndarray:
    """Embeddings [B, d] for a decoded batch; rows that failed to decode get zeros (they are dropped later)."""
    ok = np.array([not e for e in batch["error"]], dtype=bool)
    emb = np.zeros((len(ok), embedder.dim), dtype=np.float32)
    if ok.any():
        emb[ok] = embedder.encode_pixels(batch["pixels"][ok])
    bad = ok & ~np.isfinite(emb).all(axis=1)
    if bad.any():  # a model that produced NaN/Inf for an input: record, never store
        errors = batch["error"].copy()
        errors[bad] = NOT_FINITE
        batch["error"] = errors
    return emb


def passthrough_rows(location: str, spec: str, thumbnail_size: int, max_pixels: int) -> pa.Table:
    """One shard of precomputed embeddings as embedded rows (the columns `split_outputs` reads): a row that is
    not finite gets an error; a thumbnail where the row's image can be read, else none and size 0."""
    rows = read_embedding_rows(location, spec)
    emb_nd = rows.embeddings_nd
    finite = np.isfinite(emb_nd).all(axis=1)
    width, height, thumbs = [], [], []
    for path in rows.image_path:
        w = h = 0
        thumb = b""
        if path is not None:
            try:
                fs, p = filesystem(path)
                with fs.open_input_stream(p) as f:
                    w, h, thumb = decode_thumbnail(f.read(), thumbnail_size, max_pixels)
            except (OSError, ValueError):  # a thumbnail is a convenience: the embedding is the data
                pass
        width.append(w)
        height.append(h)
        thumbs.append(thumb)
    error = ["" if ok else NOT_FINITE for ok in finite]
    emb_nd = np.where(finite[:, None], emb_nd, 0.0).astype(np.float32)
    return pa.table(
        {
            "source": rows.source,
            "image_id": pa.array([image_id_for(s) for s in rows.source], pa.int64()),
            "caption": [c or "" for c in rows.caption],
            "width": pa.array(width, pa.int32()),
            "height": pa.array(height, pa.int32()),
            "error": error,
            "thumbnail": pa.array(thumbs, pa.binary()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb_nd.reshape(-1)), emb_nd.shape[1]),
        }
    )


def split_outputs(rows: pa.Table, dim: int) -> tuple[pa.Table, pa.Table, pa.Table]:
    """A table of embedded rows (the columns of `decode_items` but pixels, plus `embedding`) -> the
    contract's images, embeddings and errors tables."""
    error = rows.column("error").to_pylist()
    ok = np.array([not e for e in error], dtype=bool)
    good = rows.filter(pa.array(ok))
    bad = rows.filter(pa.array(~ok))
    caption = [c or None for c in good.column("caption").to_pylist()]
    images = table_from_rows(
        "images",
        {
            "image_id": good.column("image_id"),
            "source": good.column("source"),
            "caption": caption,
            "width": good.column("width"),
            "height": good.column("height"),
            "thumbnail": good.column("thumbnail"),
        },
    )
    emb = vectors_to_numpy(good.column("embedding"), dim)
    embeddings = table_from_rows("embeddings", {"image_id": good.column("image_id"), "embedding": emb}, dim)
    errors = table_from_rows(
        "errors",
        {"stage": ["embed"] * len(bad), "source": bad.column("source"), "error": bad.column("error")},
    )
    return images, embeddings, errors
