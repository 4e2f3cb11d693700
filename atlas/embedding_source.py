"""Precomputed CLIP embeddings as a source, in the layout clip-retrieval's `clip inference` writes and released
LAION embedding sets use:

    <root>/img_emb/img_emb_<i>.npy          [n_i, d] float16 or float32, one row per image
    <root>/metadata/metadata_<i>.parquet    n_i rows in the same order: image_path or url, caption, key, ...

File `i` of one folder pairs with file `i` of the other by the suffix after the last `_` (clip-retrieval pads
it with zeros to the width of the partition count). The embed stage becomes a validated pass-through: the
width must be the configured CLIP model's, the row counts of each pair must agree, and a key must not repeat
within a file. Those are checked for every file before the atlas is touched, each failure one line naming the
file. A row that is not finite becomes an `errors` row. Thumbnails come from `image_path` where it can be read
(absolute, or relative to `<root>`); images without one have an empty thumbnail and width and height 0.

Every file is cut into shards of `part_size` consecutive rows, read by byte range (the `.npy` header says
where each row starts) and by the Parquet row groups that hold those rows, so a 1M-row file never has to fit
in memory and works the same on object stores.

The source key of a row is `metadata/<file>#<key>` where the metadata has a `key` column (img2dataset's
sample key), else `img_emb/<file>#<row>`.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from atlas.errors import AtlasError
from atlas.filesystems import filesystem
from atlas.store import atomic_path

EMB_DIR, META_DIR = "img_emb", "metadata"
CAPTION_COLUMNS = ("caption", "text", "TEXT", "txt")  # of Parquet sources too
PATH_COLUMNS = ("image_path", "path", "filepath")
EMBEDDING_DTYPES = (np.dtype("float16"), np.dtype("float32"))


@dataclass(frozen=True, slots=True)
class EmbeddingFile:
    """One `img_emb_<i>.npy` with its metadata file and what its header says."""

    emb: str  # relative to the root, e.g. img_emb/img_emb_0.npy
    meta: str
    n_rows: int
    dim: int
    dtype: str
    data_offset: int  # byte offset of row 0 in the .npy


@dataclass(slots=True)
class EmbeddingRows:
    """Rows [start, stop) of one file: embeddings [n, d] float32 and their metadata, in order."""

    source: list[str]
    caption: list[str | None]
    image_path: list[str | None]  # where to read each row's image (resolve_image_path), None: nowhere
    embeddings_nd: np.ndarray


def is_embedding_folder(fs: pafs.FileSystem, path: str) -> bool:
    """Whether `path` holds the clip-retrieval layout (an img_emb/ and a metadata/ folder)."""
    infos = fs.get_file_info([posixpath.join(path, EMB_DIR), posixpath.join(path, META_DIR)])
    return all(i.type == pafs.FileType.Directory for i in infos)


def _suffix(name: str, prefix: str, ext: str) -> str | None:
    base = posixpath.basename(name)
    if not (base.startswith(prefix) and base.endswith(ext)):
        return None
    return base[len(prefix) : -len(ext)] or None


def _listing(fs: pafs.FileSystem, folder: str, prefix: str, ext: str) -> dict[str, str]:
    """suffix -> file name of the files `<prefix><suffix><ext>` directly in `folder`."""
    infos = fs.get_file_info(pafs.FileSelector(folder))
    found = {}
    for info in infos:
        if info.type == pafs.FileType.File and (s := _suffix(info.path, prefix, ext)) is not None:
            found[s] = posixpath.basename(info.path)
    return found


def _order(suffix: str) -> tuple[int, int | str]:
    return (0, int(suffix)) if suffix.isdigit() else (1, suffix)


def read_npy_header(f, name: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) of a .npy file opened for reading; AtlasError if it is not one."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except (ValueError, OSError, SyntaxError, EOFError) as e:
        raise AtlasError(
            f"{name}: not a .npy array ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    if fortran and len(shape) > 1:
        raise AtlasError(f"{name}: a Fortran-ordered array; save it C-ordered (np.ascontiguousarray)")
    return tuple(shape), dtype, f.tell()


def list_embedding_files(location: str, dim: int | None) -> tuple[pafs.FileSystem, str, list[EmbeddingFile]]:
    """(fs, root, files) of a clip-retrieval folder, every pair checked (AtlasError, one line naming the file):
    metadata present, a 2-D float16/float32 array of width `dim` (unchecked when None), the same row count in
    both, no repeated key."""
    fs, root = filesystem(location)
    if not is_embedding_folder(fs, root):
        raise AtlasError(f"data.source = {location!r}: no {EMB_DIR}/ and {META_DIR}/ folders (clip-retrieval layout)")
    embs = _listing(fs, posixpath.join(root, EMB_DIR), "img_emb_", ".npy")
    metas = _listing(fs, posixpath.join(root, META_DIR), "metadata_", ".parquet")
    if not embs:
        raise AtlasError(f"data.source = {location!r}: {EMB_DIR}/ holds no img_emb_<i>.npy files")
    files = []
    for s in sorted(embs, key=_order):
        emb, meta = f"{EMB_DIR}/{embs[s]}", f"{META_DIR}/metadata_{s}.parquet"
        if s not in metas:
            raise AtlasError(f"{meta}: missing ({emb} has no metadata file)")
        with fs.open_input_file(posixpath.join(root, emb)) as f:
            shape, dtype, offset = read_npy_header(f, emb)
        if len(shape) != 2:
            raise AtlasError(f"{emb}: shape {shape}; embeddings are a 2-D array [n, d]")
        if dtype not in EMBEDDING_DTYPES:
            raise AtlasError(f"{emb}: dtype {dtype}; embeddings are float16 or float32")
        if dim is not None and shape[1] != dim:
            raise AtlasError(f"{emb}: width {shape[1]}, but models.clip embeds in {dim} dimensions")
        try:
            with fs.open_input_file(posixpath.join(root, meta)) as f:
                pf = pq.ParquetFile(f)
                n_meta, cols = pf.metadata.num_rows, pf.schema_arrow.names
                keys = pf.read(columns=["key"]).column("key") if "key" in cols else None
        except (pa.ArrowInvalid, OSError) as e:
            raise AtlasError(f"{meta}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
        if n_meta != shape[0]:
            raise AtlasError(f"{emb}: {shape[0]:,} rows, but {meta} has {n_meta:,}")
        if keys is not None:
            _check_keys(keys, meta)
        files.append(EmbeddingFile(emb, meta, int(shape[0]), int(shape[1]), dtype.str, offset))
    return fs, root, files


def _check_keys(keys: pa.ChunkedArray, meta: str) -> None:
    if keys.null_count:
        raise AtlasError(f"{meta}: column key has {keys.null_count:,} null values (row {_first_null(keys)} first)")
    counts = pc.value_counts(keys.cast(pa.string()))
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        k = repeated[0]["values"].as_py()
        raise AtlasError(f"{meta}: key {k!r} appears {repeated[0]['counts'].as_py()} times (keys name one row)")


def _first_null(keys: pa.ChunkedArray) -> int:
    return int(pc.index(pc.is_null(keys), True).as_py())


def shard_specs(files: list[EmbeddingFile], part_size: int, limit: int = 0) -> list[tuple[str, int]]:
    """(spec JSON, rows) of every shard: `part_size` consecutive rows of one file; with `limit`, the first
    `limit` rows of the source."""
    out: list[tuple[str, int]] = []
    left = limit or sum(f.n_rows for f in files)
    for f in files:
        for start in range(0, f.n_rows, part_size):
            if left <= 0:
                return out
            stop = min(start + part_size, f.n_rows, start + left)
            spec = {"emb": f.emb, "meta": f.meta, "start": start, "stop": stop, "dim": f.dim}
            spec |= {"dtype": f.dtype, "offset": f.data_offset}
            out.append((json.dumps(spec), stop - start))
            left -= stop - start
    return out


def read_embedding_rows(location: str, spec_json: str) -> EmbeddingRows:
    """The rows of one shard: the embeddings by byte range, the metadata from the row groups that hold them."""
    fs, root = filesystem(location)
    spec = json.loads(spec_json)
    start, stop, dim, dtype = spec["start"], spec["stop"], spec["dim"], np.dtype(spec["dtype"])
    row_bytes = dim * dtype.itemsize
    with fs.open_input_file(posixpath.join(root, spec["emb"])) as f:
        f.seek(spec["offset"] + start * row_bytes)
        raw = f.read((stop - start) * row_bytes)
    if len(raw) != (stop - start) * row_bytes:
        raise AtlasError(f"{spec['emb']}: file ends before row {stop:,} (truncated?)")
    emb_nd = np.frombuffer(raw, dtype=dtype).reshape(stop - start, dim).astype(np.float32)
    meta = _metadata_rows(fs, posixpath.join(root, spec["meta"]), start, stop)
    cols = meta.column_names
    caption_col = next((c for c in CAPTION_COLUMNS if c in cols), None)
    path_col = next((c for c in PATH_COLUMNS if c in cols), None)
    if "key" in cols:
        source = [f"{spec['meta']}#{k}" for k in meta.column("key").to_pylist()]
    else:
        source = [f"{spec['emb']}#{r}" for r in range(start, stop)]
    n = stop - start
    caption = meta.column(caption_col).to_pylist() if caption_col else [None] * n
    paths = meta.column(path_col).to_pylist() if path_col else [None] * n
    return EmbeddingRows(source, [c or None for c in caption], [resolve_image_path(root, p) for p in paths], emb_nd)


def _metadata_rows(fs: pafs.FileSystem, path: str, start: int, stop: int) -> pa.Table:
    """Rows [start, stop) of a Parquet file, reading only the row groups that hold them."""
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        cols = [c for c in pf.schema_arrow.names if c in ("key", *CAPTION_COLUMNS, *PATH_COLUMNS)]
        groups, first, at = [], None, 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if at + n > start and at < stop:
                groups.append(g)
                first = at if first is None else first
            at += n
        if not groups:
            return pa.table({c: pa.array([], pf.schema_arrow.field(c).type) for c in cols})
        table = pf.read_row_groups(groups, columns=cols)
    return table.slice(start - (first or 0), stop - start)


def resolve_image_path(root: str, image_path: str | None) -> str | None:
    """Where to read the image of a row: an absolute path or URI as it is, a relative one under the root."""
    if not image_path or image_path.startswith(("http://", "https://")):
        return None  # never downloaded at build time
    return image_path if "://" in image_path or image_path.startswith("/") else posixpath.join(root, image_path)


def write_embedding_folder(
    root: Path,
    embeddings_nd: np.ndarray,
    metadata: pa.Table,
    rows_per_file: int,
    dtype: str = "float16",
    first_file: int = 0,
    n_files: int | None = None,
) -> list[Path]:
    """Write embeddings and their metadata in the clip-retrieval layout (for tests, planted worlds and exports),
    as files `first_file`, `first_file + 1`, ... of a folder of `n_files` (zero-padded alike; default: these
    rows are the whole folder), each file through a temporary name; returns the .npy files written."""
    if embeddings_nd.shape[0] != metadata.num_rows:
        raise ValueError("one metadata row per embedding")
    (root / EMB_DIR).mkdir(parents=True, exist_ok=True)
    (root / META_DIR).mkdir(parents=True, exist_ok=True)
    count = max(1, -(-len(embeddings_nd) // rows_per_file))
    width = len(str(n_files if n_files is not None else count))
    written = []
    for j in range(count):
        lo, hi = j * rows_per_file, min((j + 1) * rows_per_file, len(embeddings_nd))
        s = str(first_file + j).zfill(width)
        path = root / EMB_DIR / f"img_emb_{s}.npy"
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(embeddings_nd[lo:hi], dtype=dtype))
        with atomic_path(root / META_DIR / f"metadata_{s}.parquet") as tmp:
            pq.write_table(metadata.slice(lo, hi - lo), tmp)
        written.append(path)
    return written
