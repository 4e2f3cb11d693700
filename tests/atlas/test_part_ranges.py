"""Rows by key from only the row groups that can hold them: the same rows as a filter over every part."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas.part_ranges import PartRanges
from atlas.store import AtlasStore, table_from_rows


def _write_parts(root, parts: list[list[int]], row_group: int) -> list[str]:
    files = []
    for i, ids in enumerate(parts):
        path = root / f"part-{i}.parquet"
        t = pa.table(
            {
                "feature_id": pa.array(ids, pa.int32()),
                "image": pa.array([f"png-{k}".encode() for k in ids], pa.binary()),
            }
        )
        pq.write_table(t, path, row_group_size=row_group)
        files.append(str(path))
    return files


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(st.lists(st.integers(0, 200), max_size=30), min_size=1, max_size=6),
    keys=st.lists(st.integers(-5, 205), max_size=12),
    row_group=st.integers(1, 9),
    sort=st.booleans(),
)
def test_read_finds_exactly_the_rows_of_the_keys(tmp_path_factory, parts, keys, row_group, sort) -> None:
    root = tmp_path_factory.mktemp("parts")
    parts = [sorted(p) if sort else p for p in parts]  # unsorted parts: wide ranges, still right
    ranges = PartRanges.of(_write_parts(root, parts, row_group), "feature_id")
    got = ranges.read(keys, ["image"]).to_pydict()
    want = sorted((k, f"png-{k}".encode()) for p in parts for k in p if k in set(keys))
    assert sorted(zip(got["feature_id"], got["image"], strict=True)) == want


def test_one_key_reads_one_row_group_of_icons_written_by_the_store(tmp_path) -> None:
    store = AtlasStore(tmp_path / "atlas")
    for start in range(0, 256, 128):  # as render writes them: parts of 128 features
        ids = np.arange(start, start + 128, dtype=np.int32)[::-1]  # any order in; the icons layout sorts
        n = len(ids)
        store.write_part("icons", f"part-{start // 128:05d}", table_from_rows("icons", {
            "feature_id": ids, "image": [b"x%d" % i for i in ids], "feature_scale": np.ones(n),
            "seed": ids.astype(np.int64), "steps": np.ones(n, dtype=np.int32), "fidelity_rank": np.ones(n, np.int32),
            "template": ["gray"] * n, "template_scale": np.full(n, 0.2), "negative": ["zero"] * n,
            "keep_error": np.zeros(n, dtype=bool), "guidance_scale": np.ones(n), "size": np.full(n, 64, np.int32),
        }))  # fmt: skip
    ranges = PartRanges.of(sorted(str(p) for p in store.parts("icons")), "feature_id")
    assert len(ranges.lo_g) == 256 // 8  # row groups of 8
    assert ranges.groups_for([130]) == {1: [0]}  # 128..135: the first group of the second part
    assert ranges.read([130, 7], ["image"]).sort_by("feature_id").column("image").to_pylist() == [b"x7", b"x130"]
    assert ranges.read([999], ["image"]).num_rows == 0
