"""Image sources named by a URI: an image folder, WebDataset tar shards (as img2dataset writes them), Parquet
files with image bytes or paths and captions (LAION-style), or precomputed embeddings in clip-retrieval's layout
(`atlas/embedding_source.py`). Local paths and any pyarrow filesystem URI
(`s3://…`, `gs://…`, `file://…`) work the same way through `pyarrow.fs.FileSystem.from_uri`.

A source is cut into **shards**, the unit of work and of resume: one tar file, one Parquet file,
`part_size` consecutive files of a folder, or `part_size` consecutive rows of an embedding file. Each shard
knows how many items it holds before it is read, so the embed job can tell when a part is complete. Every
item has a **source key** that names it for good (a folder path relative to the root, `<tar>/<key>`,
`<parquet file>#<row>` or the Parquet `key` column, `<metadata file>#<key>` or `<npy file>#<row>`), and
`image_id = image_id_for(source key)`: a rerun gives every image the same id.

URI forms: `folder:<path>`, `webdataset:<path or dir>`, `parquet:<path or dir>`, `embeddings:<dir>`, or a bare
path/URI whose kind is guessed (a `.tar`/`.parquet` file, a folder holding img_emb/ and metadata/, a folder
holding .tar or .parquet files, else an image folder).
"""

from __future__ import annotations

import json
import os
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs

from atlas.embedding_source import CAPTION_COLUMNS, is_embedding_folder, list_embedding_files, shard_specs
from atlas.errors import AtlasError
from atlas.filesystems import filesystem
from atlas.images import IMAGE_EXTENSIONS

WDS_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
PARQUET_IMAGE_COLUMNS = ("jpg", "image", "image_bytes", "img", "png", "webp")
PARQUET_PATH_COLUMNS = ("path", "image_path", "filepath", "file")


@dataclass(frozen=True, slots=True)
class Shard:
    name: str  # the part name its outputs are written under
    spec: str  # what to read (JSON), given back to `read_shard`
    n_items: int


@dataclass(slots=True)
class RawImage:
    source: str  # the stable source key
    data: bytes
    caption: str | None
    error: str = ""  # set when the bytes could not even be read


def source_kind(uri: str) -> tuple[str, str]:
    """(kind, location) of a data.source URI: kind in folder, webdataset, parquet, embeddings."""
    for kind in ("folder", "webdataset", "parquet", "embeddings"):
        if uri.startswith(kind + ":"):
            return kind, uri[len(kind) + 1 :]
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise AtlasError(f"data.source = {uri!r}: no such folder or file")
    if info.type == pafs.FileType.File:
        if path.endswith(".tar"):
            return "webdataset", uri
        if path.endswith(".parquet"):
            return "parquet", uri
        raise AtlasError(f"data.source = {uri!r}: a file that is neither .tar (WebDataset) nor .parquet")
    if is_embedding_folder(fs, path):
        return "embeddings", uri
    names = [f.path for f in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if f.type == pafs.FileType.File]
    if any(n.endswith(".tar") for n in names):
        return "webdataset", uri
    if any(n.endswith(".parquet") for n in names) and not any(n.lower().endswith(IMAGE_EXTENSIONS) for n in names):
        return "parquet", uri
    return "folder", uri


def _files(location: str, suffixes: tuple[str, ...], what: str) -> tuple[pafs.FileSystem, str, list[str]]:
    """(fs, base folder, sorted file paths relative to it) of the files under `location` with these suffixes."""
    fs, path = filesystem(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise AtlasError(f"data.source = {location!r}: no such folder or file")
    if info.type == pafs.FileType.File:
        return fs, posixpath.dirname(path), [posixpath.basename(path)]
    if isinstance(fs, pafs.LocalFileSystem):
        found = _local_files(path, suffixes)
    else:
        found = sorted(
            posixpath.relpath(f.path, path)
            for f in fs.get_file_info(pafs.FileSelector(path, recursive=True))
            if f.type == pafs.FileType.File
            and f.path.lower().endswith(suffixes)
            and not posixpath.basename(f.path).startswith(".")
        )
    if not found:
        raise AtlasError(f"data.source = {location!r}: no {what} here")
    return fs, path, found


def _local_files(root: str, suffixes: tuple[str, ...]) -> list[str]:
    """The files under a local folder with these suffixes, relative to it, sorted, broken symbolic links and
    folders that cannot be listed included: reading them fails, so each becomes an `errors` row instead of
    vanishing from the source (pyarrow's listing drops both without a word)."""
    found: list[str] = []

    def unlistable(e: OSError) -> None:
        if e.filename and os.path.realpath(e.filename) != os.path.realpath(root):
            found.append(os.path.relpath(e.filename, root))

    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, onerror=unlistable, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a symbolic link back up the tree
            dirs.clear()
            continue
        seen.add(real)
        found.extend(
            os.path.relpath(os.path.join(folder, f), root)
            for f in files
            if f.lower().endswith(suffixes) and not f.startswith(".")
        )
    return sorted(found)


def plan_shards(uri: str, part_size: int, limit: int = 0, dim: int | None = None) -> list[Shard]:
    """The shards of a source, in a fixed order; with `limit`, only the first `limit` items. `dim` is the
    embedding width precomputed embeddings must have (None: unchecked)."""
    kind, location = source_kind(uri)
    if kind == "embeddings":
        specs = shard_specs(list_embedding_files(location, dim)[2], part_size, limit)
        return [Shard(f"part-{i:05d}", spec, n) for i, (spec, n) in enumerate(specs)]
    if kind == "folder":
        _, _, files = _files(location, IMAGE_EXTENSIONS, "images (jpg, png, webp)")
        files = files[:limit] if limit else files
        shards = [
            Shard(f"part-{i // part_size:05d}", json.dumps(files[i : i + part_size]), len(files[i : i + part_size]))
            for i in range(0, len(files), part_size)
        ]
    elif kind == "webdataset":
        fs, base, tars = _files(location, (".tar",), "WebDataset shards (.tar)")
        shards = []
        for i, t in enumerate(tars):
            with fs.open_input_file(posixpath.join(base, t)) as f:
                n = len(_wds_keys(tarfile.open(fileobj=f, mode="r:")))
            shards.append(Shard(f"part-{i:05d}", json.dumps({"file": t, "skip_after": n}), n))
    else:
        import pyarrow.parquet as pq

        fs, base, files = _files(location, (".parquet",), "Parquet files")
        shards = []
        for i, p in enumerate(files):
            with fs.open_input_file(posixpath.join(base, p)) as f:
                pf = pq.ParquetFile(f)
                _parquet_image_columns(p, pf.schema_arrow.names)
                n = pf.metadata.num_rows
            shards.append(Shard(f"part-{i:05d}", json.dumps({"file": p, "skip_after": n}), n))
    return _limit(shards, limit) if kind != "folder" else shards


def check_source(uri: str, dim: int | None = None) -> None:
    """Cheap checks before a run touches the atlas: the source exists and holds files of its kind, a
    Parquet source's first file has an image column (every file is checked again when the run plans), and
    every file of precomputed embeddings is of width `dim` with its metadata (headers and footers only)."""
    kind, location = source_kind(uri)
    if kind == "embeddings":
        list_embedding_files(location, dim)
        return
    suffixes, what = {
        "folder": (IMAGE_EXTENSIONS, "images (jpg, png, webp)"),
        "webdataset": ((".tar",), "WebDataset shards (.tar)"),
        "parquet": ((".parquet",), "Parquet files"),
    }[kind]
    fs, base, files = _files(location, suffixes, what)
    if kind == "parquet":
        import pyarrow.parquet as pq

        with fs.open_input_file(posixpath.join(base, files[0])) as f:
            _parquet_image_columns(files[0], pq.ParquetFile(f).schema_arrow.names)


def _limit(shards: list[Shard], limit: int) -> list[Shard]:
    if not limit:
        return shards
    out, left = [], limit
    for s in shards:
        if left <= 0:
            break
        n = min(s.n_items, left)
        spec = json.loads(s.spec)
        spec["skip_after"] = n
        out.append(Shard(s.name, json.dumps(spec), n))
        left -= n
    return out


def read_shard(uri: str, spec: str) -> Iterator[RawImage]:
    """The items of one shard, in order, as raw bytes with their source key and caption."""
    kind, location = source_kind(uri)
    if kind == "folder":
        fs, base = filesystem(location)
        for rel in json.loads(spec):
            path = posixpath.join(base, rel)
            try:
                with fs.open_input_stream(path) as f:
                    data = f.read()
            except OSError as e:
                yield RawImage(rel, b"", None, _unreadable(fs, path, e))
                continue
            yield RawImage(rel, data, _sidecar_caption(fs, path))
    elif kind == "webdataset":
        yield from _read_wds(location, json.loads(spec))
    else:
        yield from _read_parquet(location, json.loads(spec))


def _unreadable(fs: pafs.FileSystem, path: str, e: OSError) -> str:
    """Why a listed file could not be read, for its `errors` row."""
    if isinstance(fs, pafs.LocalFileSystem):
        if os.path.islink(path) and not os.path.exists(path):
            return f"broken symbolic link (to {os.readlink(path)!r})"
        if os.path.isdir(path):
            try:
                os.listdir(path)
            except OSError as why:
                return f"unreadable folder ({why.strerror or why})"
    return f"unreadable file ({e})"


def _sidecar_caption(fs: pafs.FileSystem, image_path: str) -> str | None:
    txt = posixpath.splitext(image_path)[0] + ".txt"
    try:
        with fs.open_input_stream(txt) as f:
            return f.read().decode("utf-8", errors="replace").strip() or None
    except (OSError, FileNotFoundError):
        return None


def _wds_keys(tar: tarfile.TarFile) -> list[str]:
    """Sample keys of a WebDataset tar (a sample = the files sharing a key; those with no image count too,
    so a sample whose image is missing is reported, not silently lost)."""
    keys: dict[str, None] = {}
    for m in tar.getmembers():
        if m.isfile():
            key, _, ext = posixpath.basename(m.name).partition(".")
            if ext and not key.startswith("_"):
                keys[posixpath.join(posixpath.dirname(m.name), key)] = None
    return list(keys)


def _read_wds(location: str, spec: dict) -> Iterator[RawImage]:
    fs, base, _ = _files(location, (".tar",), "WebDataset shards (.tar)")
    name = spec["file"]
    with fs.open_input_file(posixpath.join(base, name)) as f:
        tar = tarfile.open(fileobj=f, mode="r:")
        by_key: dict[str, dict[str, tarfile.TarInfo]] = {}
        for m in tar.getmembers():
            if m.isfile():
                key, _, ext = posixpath.basename(m.name).partition(".")
                if ext and not key.startswith("_"):
                    by_key.setdefault(posixpath.join(posixpath.dirname(m.name), key), {})[ext.lower()] = m
        for key in list(by_key)[: spec["skip_after"]]:
            members = by_key[key]
            source = f"{name}/{key}"
            caption = None
            if "txt" in members:
                caption = tar.extractfile(members["txt"]).read().decode("utf-8", errors="replace").strip() or None
            elif "json" in members:
                try:
                    meta = json.loads(tar.extractfile(members["json"]).read())
                    caption = meta.get("caption") if isinstance(meta, dict) else None
                except ValueError:
                    pass
            img = next((members[e] for e in WDS_IMAGE_EXTENSIONS if e in members), None)
            if img is None:
                yield RawImage(source, b"", caption, f"sample has no image ({', '.join(sorted(members))})")
                continue
            yield RawImage(source, tar.extractfile(img).read(), caption)


def _parquet_image_columns(name: str, cols: list[str]) -> tuple[str | None, str | None]:
    """(image bytes column, image path column) of a Parquet source file; AtlasError when it has neither."""
    image_col = next((c for c in PARQUET_IMAGE_COLUMNS if c in cols), None)
    path_col = next((c for c in PARQUET_PATH_COLUMNS if c in cols), None)
    if image_col is None and path_col is None:
        raise AtlasError(
            f"{name}: no image column (bytes in one of {', '.join(PARQUET_IMAGE_COLUMNS)}, "
            f"or paths in one of {', '.join(PARQUET_PATH_COLUMNS)})"
        )
    return image_col, path_col


def _read_parquet(location: str, spec: dict) -> Iterator[RawImage]:
    import pyarrow.parquet as pq

    fs, base, _ = _files(location, (".parquet",), "Parquet files")
    name = spec["file"]
    with fs.open_input_file(posixpath.join(base, name)) as f:
        pf = pq.ParquetFile(f)
        cols = pf.schema_arrow.names
        image_col, path_col = _parquet_image_columns(name, cols)
        caption_col = next((c for c in CAPTION_COLUMNS if c in cols), None)
        key_col = "key" if "key" in cols else None
        wanted = [c for c in (image_col, path_col, caption_col, key_col) if c]
        row = 0
        for batch in pf.iter_batches(batch_size=256, columns=wanted):
            d = batch.to_pydict()
            for i in range(batch.num_rows):
                if row >= spec["skip_after"]:
                    return
                source = f"{name}#{d[key_col][i]}" if key_col else f"{name}#{row}"
                caption = d[caption_col][i] if caption_col else None
                row += 1
                value = d[image_col][i] if image_col else None
                if isinstance(value, dict):  # Hugging Face datasets' Image feature: {bytes, path}
                    value = value.get("bytes")
                if value:
                    yield RawImage(source, bytes(value), caption)
                elif path_col and d[path_col][i]:
                    rel = d[path_col][i]
                    path = (
                        rel
                        if "://" in rel or rel.startswith("/")
                        else posixpath.join(base, posixpath.dirname(name), rel)
                    )
                    pfs, ppath = filesystem(path)
                    try:
                        with pfs.open_input_stream(ppath) as img:
                            yield RawImage(source, img.read(), caption)
                    except (OSError, FileNotFoundError) as e:
                        yield RawImage(source, b"", caption, f"unreadable file {rel!r} ({e})")
                else:
                    yield RawImage(source, b"", caption, "empty file")


def read_all(uri: str, shards: list[Shard]) -> Iterator[RawImage]:
    """Every item of these shards (for small sources and tests)."""
    for s in shards:
        yield from read_shard(uri, s.spec)
