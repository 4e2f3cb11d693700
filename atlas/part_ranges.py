"""Rows of a table by key, read from only the row groups whose key range can hold them.

Each row group's footer statistics give the min and max of the key column. Tables written in key order
with small row groups (icons: 8 rows, schemas/tables.py) then answer one feature's row with one row group's
read, where a scan of the view opens every part (625 icon parts at 80,000 features) and reads whole column
chunks. A row group without statistics is always read: the answer is the same, only slower.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


@dataclass(frozen=True)
class PartRanges:
    """The key range [lo_g, hi_g] of each row group g, which lies in part file files[file_g] as its
    group_g-th row group."""

    key: str
    files: tuple[str, ...]
    footers: tuple[pq.FileMetaData, ...]  # kept: a read then parses no footer again
    file_g: np.ndarray
    group_g: np.ndarray
    lo_g: np.ndarray
    hi_g: np.ndarray

    @classmethod
    def of(cls, files: Sequence[str | Path], key: str) -> PartRanges:
        """Ranges from the footers of `files` (one footer read each)."""
        file_g, group_g, lo, hi, footers = [], [], [], [], []
        for i, f in enumerate(files):
            meta = pq.read_metadata(f)
            footers.append(meta)
            col = meta.schema.names.index(key)
            for g in range(meta.num_row_groups):
                stats = meta.row_group(g).column(col).statistics
                known = stats is not None and stats.has_min_max
                file_g.append(i)
                group_g.append(g)
                lo.append(stats.min if known else -np.inf)
                hi.append(stats.max if known else np.inf)
        return cls(
            key, tuple(str(f) for f in files), tuple(footers),
            np.asarray(file_g, dtype=np.int64), np.asarray(group_g, np.int64),
            np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64),
        )  # fmt: skip

    def groups_for(self, keys: Sequence[int]) -> dict[int, list[int]]:
        """The row groups (by file index) whose range holds at least one of `keys`."""
        if not len(keys) or not len(self.lo_g):
            return {}
        k = np.unique(np.asarray(keys, dtype=np.float64))
        # a group holds a key when the first key >= lo is <= hi
        first = np.searchsorted(k, self.lo_g, side="left")
        hit = (first < len(k)) & (k[np.minimum(first, len(k) - 1)] <= self.hi_g)
        out: dict[int, list[int]] = {}
        for f, g in zip(self.file_g[hit], self.group_g[hit], strict=True):
            out.setdefault(int(f), []).append(int(g))
        return out

    def read(self, keys: Sequence[int], columns: Sequence[str]) -> pa.Table:
        """The rows whose key is in `keys` (columns `key` and `columns`), from the row groups that can hold
        them; an empty table of null columns when none can."""
        cols = [self.key, *[c for c in columns if c != self.key]]
        groups = self.groups_for(keys)
        if not groups:
            return pa.table({c: pa.array([], pa.null()) for c in cols})
        wanted = pa.array(np.unique(np.asarray(keys, dtype=np.int64)))
        parts = []
        for f, gs in groups.items():
            # a few small row groups: threads and pre-buffering cost more than they save (2.4x here)
            part = pq.ParquetFile(self.files[f], metadata=self.footers[f], pre_buffer=False)
            t = part.read_row_groups(gs, columns=cols, use_threads=False)
            parts.append(t.filter(pc.is_in(t[self.key], value_set=wanted.cast(t.schema.field(self.key).type))))
        return pa.concat_tables(parts)
