"""The atlas directory: Parquet tables written as atomic part files, the SAE folder, and manifest.json.

Every write goes to a temporary name in the destination folder and is renamed into place, so a reader
(or a rerun after a crash) sees either the whole part or nothing. Part names are deterministic
(`part-00042.parquet`), which is what makes reruns resume: a part that exists is finished work.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
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
    """Read and write one atlas directory."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).absolute()

    # ---- tables -------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        return self.root / TABLES[table].folder

    def parts(self, table: str, prefix: str = "") -> list[Path]:
        """The finished part files of `table` (optionally only those whose name starts with `prefix`)."""
        folder = self.table_dir(table)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob(f"{prefix}*.parquet") if not p.name.startswith("."))

    def part_path(self, table: str, part: str) -> Path:
        return self.table_dir(table) / f"{part}.parquet"

    def has_part(self, table: str, part: str) -> bool:
        return self.part_path(table, part).exists()

    def write_part(self, table: str, part: str, data: pa.Table) -> Path:
        """Atomically write one part file of `table`; the schema is checked against the contract."""
        expected = TABLES[table].schema(_vector_width(data))
        if not data.schema.equals(expected, check_metadata=False):
            raise TypeError(f"{table}/{part}: schema {data.schema} does not match the contract {expected}")
        path = self.part_path(table, part)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{part}.", suffix=".tmp")
        os.close(fd)
        try:
            pq.write_table(data.replace_schema_metadata(expected.metadata), tmp, compression="zstd")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def read_table(self, table: str, columns: list[str] | None = None) -> pa.Table:
        """The whole table (all parts). For large tables prefer DuckDB (`atlas.catalog`) or Ray Data."""
        parts = self.parts(table)
        if not parts:
            raise AtlasError(f"{self.root}: table '{table}' has no data yet (run the stage that writes it)")
        return pa.concat_tables(pq.read_table(p, columns=columns) for p in parts)

    def embedding_dim(self) -> int:
        """The width of this atlas's embeddings (from the first embeddings part)."""
        parts = self.parts("embeddings")
        if not parts:
            raise AtlasError(f"{self.root}: no embeddings yet (run `atlas embed` or `atlas build`)")
        return pq.read_schema(parts[0]).field("embedding").type.list_size

    def count_rows(self, table: str, prefix: str = "") -> int:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self.parts(table, prefix))

    def remove_parts(self, table: str, prefix: str = "") -> int:
        """Delete the parts of `table` starting with `prefix` (used when a stage's inputs changed)."""
        parts = self.parts(table, prefix)
        for p in parts:
            p.unlink()
        return len(parts)

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

    def remove_path(self, relative: str) -> None:
        path = self.root / relative
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    # ---- manifest ----------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> dict[str, Any]:
        """The manifest (an empty one for a new atlas). Refuses atlases written by a newer format."""
        if not self.manifest_path.exists():
            return {"format_version": FORMAT_VERSION, "stages": {}}
        try:
            data = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as e:
            raise AtlasError(f"{self.manifest_path}: unreadable manifest ({e})") from None
        version = data.get("format_version", 0)
        if version > FORMAT_VERSION:
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
        atomic_write_json(self.manifest_path, data)
        return data

    def stage(self, name: str) -> dict[str, Any]:
        return self.manifest()["stages"].get(name, {})

    def require_stage(self, name: str, for_what: str) -> dict[str, Any]:
        info = self.stage(name)
        if info.get("status") != "done":
            raise AtlasError(f"{self.root}: {for_what} needs the '{name}' stage first (run `atlas {name}` or `atlas build`)")
        return info

    def is_atlas(self) -> bool:
        return self.manifest_path.exists()


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


def vectors_to_numpy(column: pa.ChunkedArray | pa.Array, dim: int) -> "np.ndarray":
    """A fixed-size-list (or list, or tensor) column of vectors -> float32 [N, dim] without Python objects."""
    import numpy as np

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(arr.type, pa.ExtensionType):  # Ray's tensor extension type
        arr = arr.storage
    if len(arr) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
