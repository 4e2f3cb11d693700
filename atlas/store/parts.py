"""Table parts: each table is a folder of Parquet part files, each written atomically under a deterministic name
(`part-00042.parquet`), which is what makes reruns resume: a part that exists is finished work."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from atlas.errors import AtlasError
from atlas.store.atomic import json_bytes
from atlas.store.manifest import ManifestStore
from schemas import TABLES, vector_width

if TYPE_CHECKING:
    import numpy as np


class TableParts(ManifestStore):
    """The tables of an atlas, as part files read and written through its filesystem."""

    def table_dir(self, table: str) -> Path:
        """The local folder of `table`."""
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
        """Where part `part` of `table` is (or would be) written."""
        return self._out(self._path(f"{TABLES[table].folder}/{part}.parquet"))

    def has_part(self, table: str, part: str) -> bool:
        """Whether part `part` of `table` is finished."""
        info = self.fs.get_file_info(self._path(f"{TABLES[table].folder}/{part}.parquet"))
        return info.type == pafs.FileType.File

    def write_part(self, table: str, part: str, data: pa.Table) -> Path:
        """Atomically write one part file of `table`; the schema is checked against the contract.

        On a filesystem with renames (local, NFS) the file is written under a hidden temporary name and
        renamed into place; an object store's PUT is atomic by itself. Its rows, bytes and sha256 go to a hidden
        sidecar (`.<part>.parquet.sum`), which the driver copies into the manifest when it commits the table
        (`record_tables`): a record of what was written, from whichever process wrote it. A table with a
        `PartLayout` (schemas/tables.py) is sorted and encoded as it says."""
        expected = TABLES[table].schema(vector_width(data.schema))
        if not data.schema.equals(expected, check_metadata=False):
            raise TypeError(f"{table}/{part}: schema {data.schema} does not match the contract {expected}")
        folder = self._path(TABLES[table].folder)
        final = f"{folder}/{part}.parquet"
        data = data.replace_schema_metadata(expected.metadata)
        self.fs.create_dir(folder, recursive=True)
        sink = pa.BufferOutputStream()
        layout = TABLES[table].layout
        if layout is None:
            pq.write_table(data, sink, compression="zstd")
        else:
            data = data.sort_by([(c, "ascending") for c in layout.sort_by])
            pq.write_table(
                data,
                sink,
                compression="zstd",
                row_group_size=layout.row_group_rows,
                use_dictionary=list(layout.dictionary),
            )
        blob = sink.getvalue()
        record = {"rows": data.num_rows, "bytes": blob.size, "sha256": hashlib.sha256(blob).hexdigest()}
        # the sidecar first: a part in place always has its record, whichever process wrote it
        self._write_file(f"{folder}/.{part}.parquet.sum", json_bytes(record))
        self._write_file(final, blob)
        return self._out(final)

    def _write_file(self, path: str, blob: bytes | pa.Buffer) -> None:
        """Write `path` whole: through a hidden temporary name and a rename on a filesystem with renames; an
        object store's PUT is atomic by itself."""
        if not self.local:
            with self.fs.open_output_stream(path) as f:
                f.write(blob)
            return
        folder, name = path.rsplit("/", 1)
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(blob)
            self.fs.move(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)
            raise

    def part_record(self, table: str, name: str) -> dict[str, Any]:
        """{rows, bytes, sha256} of part file `name` of `table` as `write_part` wrote it (its sidecar), or
        computed from the file as it is now (parts written before sidecars existed)."""
        folder = self._path(TABLES[table].folder)
        try:
            with self.fs.open_input_stream(f"{folder}/.{name}.sum") as f:
                record = json.loads(f.read())
            if isinstance(record, dict) and {"rows", "bytes", "sha256"} <= record.keys():
                return {k: record[k] for k in ("rows", "bytes", "sha256")}
        except (FileNotFoundError, ValueError):
            pass
        with self.fs.open_input_stream(f"{folder}/{name}") as f:
            blob = f.read()
        rows = pq.ParquetFile(pa.BufferReader(blob)).metadata.num_rows
        return {"rows": rows, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}

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
        """The rows of `table`'s finished parts (those starting with `prefix`), from the Parquet footers."""
        total = 0
        for p in self.parts(table, prefix):
            with self.fs.open_input_file(str(p)) as f:
                total += pq.ParquetFile(f).metadata.num_rows
        return total

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


def table_from_rows(table: str, columns: Mapping[str, Iterable[Any]], dim: int | None = None) -> pa.Table:
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
