"""Precomputed embeddings in clip-retrieval's layout: planning, reading by byte range, and every bad input as
one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from atlas.embed import passthrough_rows, split_outputs
from atlas.embedding_source import list_embedding_files, read_embedding_rows, shard_specs, write_embedding_folder
from atlas.errors import AtlasError
from atlas.images import image_id_for
from atlas.sources import check_source, plan_shards, source_kind
from atlas.store import vectors_to_numpy

DIM = 16


def _metadata(n: int, keys: bool = True, paths: list[str | None] | None = None) -> pa.Table:
    cols: dict[str, list] = {"caption": [f"caption {i}" for i in range(n)]}
    if keys:
        cols["key"] = [f"{i:09d}" for i in range(n)]
    cols["image_path"] = paths if paths is not None else [None] * n
    return pa.table(cols)


@pytest.fixture
def folder(tmp_path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    emb_nd = rng.normal(size=(21, DIM)).astype(np.float16)
    images = tmp_path / "pictures"
    images.mkdir()
    Image.new("RGB", (96, 48), (200, 30, 30)).save(images / "red.jpg")
    paths: list[str | None] = [None] * 21
    paths[0] = "pictures/red.jpg"  # relative to the root
    paths[1] = str(images / "red.jpg")  # absolute
    paths[2] = "pictures/missing.jpg"  # unreadable: no thumbnail, not an error
    write_embedding_folder(tmp_path, emb_nd, _metadata(21, paths=paths), rows_per_file=8)
    return tmp_path, emb_nd


def test_the_layout_is_recognised_with_or_without_its_prefix(folder):
    root, _ = folder
    assert source_kind(str(root)) == ("embeddings", str(root))
    assert source_kind(f"embeddings:{root}") == ("embeddings", str(root))
    assert sorted(p.name for p in (root / "img_emb").iterdir()) == ["img_emb_0.npy", "img_emb_1.npy", "img_emb_2.npy"]


def test_shards_cut_files_into_part_size_rows_in_order(folder):
    root, _ = folder
    shards = plan_shards(str(root), part_size=3, dim=DIM)
    assert [s.n_items for s in shards] == [3, 3, 2, 3, 3, 2, 3, 2]  # files of 8, 8, 5 rows
    assert [s.name for s in shards] == [f"part-{i:05d}" for i in range(8)]
    assert [s.n_items for s in plan_shards(str(root), part_size=3, limit=10, dim=DIM)] == [3, 3, 2, 2]


def test_rows_are_the_npy_values_exactly_with_their_metadata(folder):
    root, emb_nd = folder
    shards = plan_shards(str(root), part_size=5, dim=DIM)
    got = [read_embedding_rows(str(root), s.spec) for s in shards]
    np.testing.assert_array_equal(np.concatenate([g.embeddings_nd for g in got]), emb_nd.astype(np.float32))
    sources = [s for g in got for s in g.source]
    assert sources[0] == "metadata/metadata_0.parquet#000000000"
    assert sources[8] == "metadata/metadata_1.parquet#000000008"  # row 0 of the second file, named by its file
    assert [c for g in got for c in g.caption][20] == "caption 20"


def test_passthrough_rows_cut_thumbnails_where_the_image_can_be_read(folder):
    root, emb_nd = folder
    spec = plan_shards(str(root), part_size=8, dim=DIM)[0].spec
    rows = passthrough_rows(str(root), spec, thumbnail_size=32, max_pixels=10**8)
    assert rows.column("width").to_pylist()[:3] == [96, 96, 0] and rows.column("height").to_pylist()[:3] == [48, 48, 0]
    thumbs = rows.column("thumbnail").to_pylist()
    assert Image.open(__import__("io").BytesIO(thumbs[0])).size == (32, 16) and thumbs[2] == b"" == thumbs[3]
    images, embeddings, errors = split_outputs(rows, DIM)
    assert errors.num_rows == 0 and images.num_rows == 8
    assert images.column("image_id").to_pylist() == [image_id_for(s) for s in rows.column("source").to_pylist()]
    np.testing.assert_array_equal(vectors_to_numpy(embeddings.column("embedding"), DIM), emb_nd[:8].astype(np.float32))


def test_rows_that_are_not_finite_become_errors(tmp_path):
    emb_nd = np.ones((4, DIM), np.float32)
    emb_nd[1, 3], emb_nd[2, 0] = np.nan, np.inf
    write_embedding_folder(tmp_path, emb_nd, _metadata(4), rows_per_file=4, dtype="float32")
    rows = passthrough_rows(str(tmp_path), plan_shards(str(tmp_path), 4, dim=DIM)[0].spec, 32, 10**8)
    images, embeddings, errors = split_outputs(rows, DIM)
    assert errors.column("source").to_pylist() == [
        "metadata/metadata_0.parquet#000000001",
        "metadata/metadata_0.parquet#000000002",
    ]
    assert set(errors.column("error").to_pylist()) == {"embedding is not finite (NaN or Inf)"}
    assert embeddings.num_rows == 2 and np.isfinite(vectors_to_numpy(embeddings.column("embedding"), DIM)).all()


def test_without_a_key_column_rows_are_named_by_file_and_row(tmp_path):
    write_embedding_folder(tmp_path, np.zeros((3, DIM), np.float16), _metadata(3, keys=False), rows_per_file=3)
    rows = read_embedding_rows(str(tmp_path), plan_shards(str(tmp_path), 2, dim=DIM)[1].spec)
    assert rows.source == ["img_emb/img_emb_0.npy#2"]


def _corrupt(root: Path, how: str) -> str:
    """Break a good 2-file folder one way; the file the error must name."""
    emb, meta = root / "img_emb" / "img_emb_1.npy", root / "metadata" / "metadata_1.parquet"
    if how == "row count":
        pq.write_table(_metadata(3), meta)
        return "img_emb/img_emb_1.npy: 4 rows, but metadata/metadata_1.parquet has 3"
    if how == "width":
        np.save(emb, np.zeros((4, DIM + 1), np.float16))
        return f"img_emb/img_emb_1.npy: width {DIM + 1}, but models.clip embeds in {DIM} dimensions"
    if how == "missing metadata":
        meta.unlink()
        return "metadata/metadata_1.parquet: missing (img_emb/img_emb_1.npy has no metadata file)"
    if how == "not an array":
        emb.write_bytes(b"these bytes are not a numpy file")
        return "img_emb/img_emb_1.npy: not a .npy array"
    if how == "3-d":
        np.save(emb, np.zeros((4, 2, DIM), np.float16))
        return "img_emb/img_emb_1.npy: shape (4, 2, 16); embeddings are a 2-D array [n, d]"
    if how == "integers":
        np.save(emb, np.zeros((4, DIM), np.int64))
        return "img_emb/img_emb_1.npy: dtype int64; embeddings are float16 or float32"
    if how == "repeated key":
        pq.write_table(pa.table({"key": ["a", "b", "a", "c"], "caption": ["x"] * 4}), meta)
        return "metadata/metadata_1.parquet: key 'a' appears 2 times (keys name one row)"
    if how == "metadata not parquet":
        meta.write_bytes(b"not parquet")
        return "metadata/metadata_1.parquet: not a readable Parquet file"
    raise ValueError(how)


@pytest.mark.parametrize(
    "how",
    [
        "row count",
        "width",
        "missing metadata",
        "not an array",
        "3-d",
        "integers",
        "repeated key",
        "metadata not parquet",
    ],
)
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, how):
    write_embedding_folder(tmp_path, np.zeros((8, DIM), np.float16), _metadata(8), rows_per_file=4)
    expected = _corrupt(tmp_path, how)
    with pytest.raises(AtlasError) as e:
        check_source(str(tmp_path), dim=DIM)
    message = str(e.value)
    assert message.startswith(expected) and "\n" not in message
    with pytest.raises(AtlasError, match="^" + expected.split(":")[0]):
        plan_shards(str(tmp_path), 4, dim=DIM)


def test_a_folder_without_the_layout_is_refused(tmp_path):
    (tmp_path / "img_emb").mkdir()
    with pytest.raises(AtlasError, match="no img_emb/ and metadata/ folders"):
        list_embedding_files(str(tmp_path), DIM)
    (tmp_path / "metadata").mkdir()
    with pytest.raises(AtlasError, match="holds no img_emb_<i>.npy files"):
        check_source(str(tmp_path), dim=DIM)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    part_size=st.integers(1, 7),
    limit=st.integers(0, 40),
)
def test_shards_cover_the_first_limit_rows_once_in_order(sizes, part_size, limit):
    from atlas.embedding_source import EmbeddingFile

    files = [EmbeddingFile(f"img_emb/img_emb_{i}.npy", f"m{i}", n, DIM, "<f2", 128) for i, n in enumerate(sizes)]
    covered = []
    for spec, n in shard_specs(files, part_size, limit):
        s = json.loads(spec)
        assert 0 < n == s["stop"] - s["start"] <= part_size
        covered += [(s["emb"], r) for r in range(s["start"], s["stop"])]
    every = [(f.emb, r) for f in files for r in range(f.n_rows)]
    assert covered == every[: limit or len(every)]
