"""The atlas directory: Parquet tables written as atomic part files, the SAE folder, and manifest.json.

Every write goes to a temporary name in the destination folder and is renamed into place, so a reader
(or a rerun after a crash) sees either the whole part or nothing. Part names are deterministic
(`part-00042.parquet`), which is what makes reruns resume: a part that exists is finished work.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from atlas.errors import AtlasError
from schemas import FORMAT_VERSION, TABLES

MANIFEST = "manifest.json"
CATALOG = "atlas.duckdb"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


class AtlasStore:
    """Read and write one atlas directory: a local path, or a URI that `pyarrow.fs` understands
    (`file:///mnt/atlas/x`, `s3://bucket/x`, ...).

    Table parts and the manifest go through a pyarrow filesystem, so that any node of a cluster can write and
    read them. The SAE folder, the FAISS indexes and the DuckDB catalog are handed to libraries that need a
    POSIX path (`root`); on an object store they need the bucket mounted (see the README's cluster section).
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.uri = _normalise_uri(os.fspath(root))
        if "://" in self.uri:
            try:
                self.fs, base = pafs.FileSystem.from_uri(self.uri)
            except (pa.ArrowInvalid, ValueError, OSError) as e:
                raise AtlasError(f"{self.uri}: not a usable atlas location ({e})") from None
        else:
            self.fs, base = pafs.LocalFileSystem(), str(Path(self.uri).absolute())
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.base = base.rstrip("/") or "/"
        self._root = Path(self.base) if self.local else None

    @property
    def root(self) -> Path:
        """The atlas as a local (or mounted) folder (AtlasError for an object store)."""
        if self._root is None:
            raise AtlasError(
                f"{self.uri}: this step needs the atlas on a local or mounted filesystem (SAE weights, FAISS "
                "indexes and the DuckDB catalog are read by path); mount the bucket and give its path"
            )
        return self._root

    def __repr__(self) -> str:
        return f"AtlasStore({self.uri!r})"

    def _path(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def _out(self, path: str) -> Path | str:
        return Path(path) if self.local else path

    # ---- tables -------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        return self.root / TABLES[table].folder

    def parts(self, table: str, prefix: str = "") -> list[Path]:
        """The finished part files of `table` (optionally only those whose name starts with `prefix`);
        local paths for a local atlas, filesystem paths (without the scheme) otherwise."""
        names = self._part_files(TABLES[table].folder)
        return [self._out(f"{self.base}/{TABLES[table].folder}/{n}") for n in names if n.startswith(prefix)]

    def _part_files(self, folder: str) -> list[str]:
        selector = pafs.FileSelector(self._path(folder), allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except NotADirectoryError:
            return []
        return sorted(
            i.base_name
            for i in infos
            if i.type == pafs.FileType.File and i.base_name.endswith(".parquet") and not i.base_name.startswith(".")
        )

    def part_path(self, table: str, part: str) -> Path:
        return self._out(self._path(f"{TABLES[table].folder}/{part}.parquet"))

    def has_part(self, table: str, part: str) -> bool:
        info = self.fs.get_file_info(self._path(f"{TABLES[table].folder}/{part}.parquet"))
        return info.type == pafs.FileType.File

    def write_part(self, table: str, part: str, data: pa.Table) -> Path:
        """Atomically write one part file of `table`; the schema is checked against the contract.

        On a filesystem with renames (local, NFS) the file is written under a hidden temporary name and
        renamed into place; an object store's PUT is atomic by itself."""
        expected = TABLES[table].schema(_vector_width(data))
        if not data.schema.equals(expected, check_metadata=False):
            raise TypeError(f"{table}/{part}: schema {data.schema} does not match the contract {expected}")
        folder = self._path(TABLES[table].folder)
        final = f"{folder}/{part}.parquet"
        data = data.replace_schema_metadata(expected.metadata)
        self.fs.create_dir(folder, recursive=True)
        if not self.local:
            pq.write_table(data, final, filesystem=self.fs, compression="zstd")
            return self._out(final)
        tmp = f"{folder}/.{part}.{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(data, tmp, filesystem=self.fs, compression="zstd")
            self.fs.move(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)
            raise
        return self._out(final)

    def read_table(self, table: str, columns: list[str] | None = None) -> pa.Table:
        """The whole table (all parts). For large tables prefer DuckDB (`atlas.catalog`) or Ray Data."""
        parts = self.parts(table)
        if not parts:
            raise AtlasError(f"{self.uri}: table '{table}' has no data yet (run the stage that writes it)")
        return pa.concat_tables(pq.read_table(str(p), columns=columns, filesystem=self.fs) for p in parts)

    def embedding_dim(self) -> int:
        """The width of this atlas's embeddings (from the first embeddings part)."""
        parts = self.parts("embeddings")
        if not parts:
            raise AtlasError(f"{self.uri}: no embeddings yet (run `atlas embed` or `atlas build`)")
        return pq.read_schema(str(parts[0]), filesystem=self.fs).field("embedding").type.list_size

    def count_rows(self, table: str, prefix: str = "") -> int:
        total = 0
        for p in self.parts(table, prefix):
            with self.fs.open_input_file(str(p)) as f:
                total += pq.ParquetFile(f).metadata.num_rows
        return total

    def remove_parts(self, table: str, prefix: str = "") -> int:
        """Delete the parts of `table` starting with `prefix` (used when a stage's inputs changed)."""
        parts = self.parts(table, prefix)
        for p in parts:
            self.fs.delete_file(str(p))
        return len(parts)

    # ---- snapshots: what readers see while a build writes ---------------------------------------
    # The manifest lists, per table, the part files of its last finished stage run ("tables") with a
    # counter ("tables_version") bumped on every change. A reader builds its views over that list and checks
    # the counter after its query; a writer that must rewrite a table first keeps the old parts under hidden
    # `.retired` names (hard links on a local filesystem) and points the list at them, so the old snapshot
    # stays readable until the new one is complete.
    def snapshot(self) -> tuple[int, dict[str, list[Path]]]:
        """(tables_version, {table: committed part files}) as recorded in the manifest; tables the manifest
        does not list (atlases of older builds, tables written outside a stage) are their current parts."""
        m = self.manifest()
        recorded = m.get("tables", {})
        out: dict[str, list[Path]] = {}
        for table, spec in TABLES.items():
            if table in recorded:
                out[table] = [self._out(self._path(f"{spec.folder}/{name}")) for name in recorded[table]]
            else:
                out[table] = self.parts(table)
        return int(m.get("tables_version", 0)), out

    def record_tables(self, manifest: dict[str, Any], tables: Iterable[str]) -> None:
        """In a manifest being updated: record the current parts of `tables` as their committed snapshot."""
        recorded = manifest.setdefault("tables", {})
        for table in tables:
            recorded[table] = [p.rsplit("/", 1)[-1] for p in map(str, self.parts(table))]
        manifest["tables_version"] = int(manifest.get("tables_version", 0)) + 1

    def retire_parts(self, table: str, prefix: str = "") -> int:
        """Take the parts of `table` starting with `prefix` out of the table while keeping them readable: each
        is kept under a hidden `.retired` name that the manifest's snapshot then lists, and removed by
        `purge_retired` once the table's new parts are committed."""
        folder = self._path(TABLES[table].folder)
        every = [str(p).rsplit("/", 1)[-1] for p in self.parts(table)]
        names = [n for n in every if n.startswith(prefix)]
        if not names:
            return 0
        for name in names:
            src, dst = f"{folder}/{name}", f"{folder}/.{name}.retired"
            if self.local:
                Path(dst).unlink(missing_ok=True)
                os.link(src, dst)
            else:
                self.fs.copy_file(src, dst)

        def point_at_retired(m: dict[str, Any]) -> None:
            listed = m.setdefault("tables", {}).get(table)
            if listed is None:
                listed = every
            m["tables"][table] = [f".{n}.retired" if n in names else n for n in listed]
            m["tables_version"] = int(m.get("tables_version", 0)) + 1

        self.update_manifest(point_at_retired)
        for name in names:
            self.fs.delete_file(f"{folder}/{name}")
        return len(names)

    def purge_retired(self, table: str) -> int:
        """Delete the retired parts of `table` (after the manifest stopped listing them)."""
        selector = pafs.FileSelector(self._path(TABLES[table].folder), allow_not_found=True)
        retired = [i.path for i in self.fs.get_file_info(selector) if i.base_name.endswith(".retired")]
        for path in retired:
            self.fs.delete_file(path)
        return len(retired)

    def ensure_writable(self) -> None:
        """Create the atlas folder if needed and check that files can be written there (one error line if not)."""
        probe = self._path(f".write-test-{uuid.uuid4().hex}")
        try:
            self.fs.create_dir(self.base, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"")
            self.fs.delete_file(probe)
        except (OSError, pa.ArrowException) as e:
            reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
            raise AtlasError(f"{self.uri}: cannot write the atlas here ({reason})") from None

    # ---- other files -------------------------------------------------------------------------
    @property
    def sae_dir(self) -> Path:
        return self.root / "sae"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def catalog_path(self) -> Path:
        return self.root / CATALOG

    def exists(self, relative: str) -> bool:
        return self.fs.get_file_info(self._path(relative)).type != pafs.FileType.NotFound

    def remove_path(self, relative: str) -> None:
        path = self._path(relative)
        kind = self.fs.get_file_info(path).type
        if kind == pafs.FileType.Directory:
            self.fs.delete_dir(path)
        elif kind == pafs.FileType.File:
            self.fs.delete_file(path)

    # ---- manifest ----------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self._out(self._path(MANIFEST))

    def manifest(self) -> dict[str, Any]:
        """The manifest (an empty one for a new atlas). Refuses atlases written by a newer format."""
        try:
            with self.fs.open_input_stream(self._path(MANIFEST)) as f:
                raw = f.read()
        except FileNotFoundError:
            return {"format_version": FORMAT_VERSION, "stages": {}}
        except (OSError, pa.ArrowException) as e:
            try:
                missing = not self.is_atlas()
            except (OSError, pa.ArrowException):
                missing = False
            if missing:
                return {"format_version": FORMAT_VERSION, "stages": {}}
            raise AtlasError(f"{self.uri}/{MANIFEST}: unreadable manifest ({str(e).splitlines()[0]})") from None
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise AtlasError(f"{self.manifest_path}: unreadable manifest ({e})") from None
        if not isinstance(data, dict):
            raise AtlasError(f"{self.manifest_path}: unreadable manifest (not a JSON object)")
        version = data.get("format_version", 0)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise AtlasError(
                f"{self.manifest_path}: written by a newer atlas format (v{version}); this tool reads up to "
                f"v{FORMAT_VERSION}: upgrade clip-feature-atlas"
            )
        data.setdefault("stages", {})
        return data

    def update_manifest(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read, change and atomically rewrite the manifest (the driver is its only writer)."""
        data = self.manifest()
        change(data)
        data["format_version"] = FORMAT_VERSION
        data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        blob = (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()
        if self.local:
            atomic_write_bytes(Path(self._path(MANIFEST)), blob)
        else:
            with self.fs.open_output_stream(self._path(MANIFEST)) as f:
                f.write(blob)
        return data

    def stage(self, name: str) -> dict[str, Any]:
        return self.manifest()["stages"].get(name, {})

    def require_stage(self, name: str, for_what: str) -> dict[str, Any]:
        info = self.stage(name)
        if info.get("status") != "done":
            raise AtlasError(
                f"{self.uri}: {for_what} needs the '{name}' stage first (run `atlas {name}` or `atlas build`)"
            )
        return info

    def is_atlas(self) -> bool:
        return self.fs.get_file_info(self._path(MANIFEST)).type == pafs.FileType.File


def _normalise_uri(text: str) -> str:
    """A URI as given, or one that went through `pathlib.Path` on the way (`file:/x`, `s3:/b/x`) repaired."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):/+(.*)$", text)
    if not m:
        return text
    scheme, rest = m.group(1).lower(), m.group(2)
    if "://" in text and scheme != "file":
        return text
    if scheme == "file":
        return "file:///" + rest
    return f"{scheme}://{rest}"


def _vector_width(data: pa.Table) -> int | None:
    for field in data.schema:
        if pa.types.is_fixed_size_list(field.type):
            return field.type.list_size
    return None


def table_from_rows(table: str, columns: dict[str, Iterable[Any]], dim: int | None = None) -> pa.Table:
    """Build a contract-conforming Arrow table from column values (python lists or numpy arrays)."""
    schema = TABLES[table].schema(dim)
    arrays = []
    for field in schema:
        values = columns[field.name]
        if pa.types.is_fixed_size_list(field.type):
            import numpy as np

            flat = np.ascontiguousarray(np.asarray(values, dtype=np.float32).reshape(-1))
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), field.type.list_size))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def vectors_to_numpy(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """A fixed-size-list (or list, or tensor) column of vectors -> float32 [N, dim] without Python objects."""
    import numpy as np

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(arr.type, pa.ExtensionType):  # Ray's tensor extension type
        arr = arr.storage
    if len(arr) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
