"""`atlas build` from precomputed embeddings in clip-retrieval's layout, end to end through the real CLI: the
stored embeddings are the .npy values exactly, a NaN row is an `errors` row, thumbnails come from image_path,
every later stage runs on them (labels reach `atlas concepts`), and a bad folder is refused in one line before
the atlas exists."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from atlas.embedding_source import write_embedding_folder
from atlas.images import image_id_for
from atlas.models.clip import load_embedder
from atlas.store import AtlasStore, vectors_to_numpy
from atlas.toyworld import write_world

N_IMAGES, ROWS_PER_FILE, NAN_ROW = 2000, 700, 1405  # three files; the NaN row is row 5 of the third
NO_IMAGE = 10  # rows 0-9 have no image_path


def atlas_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, timeout=900)


def write_config(path: Path, source: Path) -> Path:
    path.write_text(
        f"""
[data]
source = "{source}"
[embed]
part_size = 256
[sae]
expansion_factor = 2
epochs = 4
batch_size = 64
log_every = 10
[featurize]
top_k = 5
[render]
steps = 2
batch_size = 8
max_features = 8
[directions]
pairs = [["red", "blue"]]
mediums = ["photo"]
subjects = ["circle", "square"]
"""
    )
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("emb")
    images = write_world(root / "world", N_IMAGES, 32, seed=5)
    names = sorted(p.name for p in images.glob("*.png"))
    embedder = load_embedder("builtin:toy-clip", "cpu")
    emb_nd = np.concatenate(
        [embedder.encode_images([Image.open(images / n) for n in names[i : i + 250]]) for i in range(0, N_IMAGES, 250)]
    ).astype(np.float16)
    emb_nd[NAN_ROW, 7] = np.nan
    metadata = pa.table(
        {
            "image_path": [None if i < NO_IMAGE else str(images / n) for i, n in enumerate(names)],
            "caption": [(images / n).with_suffix(".txt").read_text() for n in names],
            "key": [n.removesuffix(".png") for n in names],
        }
    )
    folder = root / "clip-retrieval"
    write_embedding_folder(folder, emb_nd, metadata, ROWS_PER_FILE)
    out = root / "atlas"
    proc = atlas_cli("build", "--config", str(write_config(root / "atlas.toml", folder)), "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"root": root, "out": out, "store": AtlasStore(out), "emb": emb_nd, "meta": metadata, "stdout": proc.stdout}


def _source(i: int) -> str:
    return f"metadata/metadata_{i // ROWS_PER_FILE}.parquet#{i:06d}"


def test_the_build_says_what_it_embedded_and_skipped(built):
    assert f"{N_IMAGES:,} listed, {N_IMAGES - 1:,} embedded, 1 skipped (see errors)" in built["stdout"]
    errors = built["store"].read_table("errors").to_pylist()
    assert [(e["stage"], e["source"], e["error"]) for e in errors] == [
        ("embed", _source(NAN_ROW), "embedding is not finite (NaN or Inf)")
    ]


def test_stored_embeddings_are_the_npy_values_exactly(built):
    t = built["store"].read_table("embeddings")
    got_nd = vectors_to_numpy(t.column("embedding"), 64)
    row_of = {image_id_for(_source(i)): i for i in range(N_IMAGES)}
    rows = np.array([row_of[i] for i in t.column("image_id").to_pylist()])
    assert len(rows) == N_IMAGES - 1 and NAN_ROW not in rows
    np.testing.assert_array_equal(got_nd, built["emb"][rows].astype(np.float32))


def test_images_carry_captions_and_thumbnails_from_image_path(built):
    images = built["store"].read_table("images").to_pylist()
    captions = built["meta"].column("caption").to_pylist()
    by_source = {r["source"]: r for r in images}
    for i in (NO_IMAGE, 699, 700, 1999):
        r = by_source[_source(i)]
        assert r["caption"] == captions[i] and (r["width"], r["height"]) == (32, 32)
        assert Image.open(io.BytesIO(r["thumbnail"])).size == (32, 32)
    r = by_source[_source(0)]
    assert (r["width"], r["height"], r["thumbnail"], r["caption"]) == (0, 0, b"", captions[0])


def test_the_viewer_shows_a_placeholder_for_images_without_a_thumbnail(built):
    from viewer import data

    ids = (image_id_for(_source(0)), image_id_for(_source(NO_IMAGE)))
    shown = data.images_by_id(built["store"], ids)
    assert shown["thumbnail"][0] == data.NO_THUMBNAIL and Image.open(io.BytesIO(shown["thumbnail"][0])).size == (64, 64)
    assert Image.open(io.BytesIO(shown["thumbnail"][1])).size == (32, 32)


def test_every_stage_ran_and_the_atlas_checks(built):
    proc = atlas_cli("check", "--atlas", str(built["out"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    store = built["store"]
    assert store.count_rows("features") == 128 and store.count_rows("icons") > 0 and store.count_rows("labels") > 0


def test_concepts_print_the_labels_of_the_labels_table(built):
    store = built["store"]
    labels = store.read_table("labels", ["feature_id", "rank", "word"]).to_pylist()
    best = {r["feature_id"]: r["word"] for r in labels if r["rank"] == 1}
    image_id = image_id_for(_source(3))
    proc = atlas_cli("concepts", "-a", str(built["out"]), "-i", str(image_id), "-o", str(built["root"] / "c.png"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.findall(r"label '([^']*)', features (\d+)", proc.stdout)
    assert found, proc.stdout
    for label, top in found:  # each concept is labelled by its strongest feature's best word
        assert label == best[int(top)] and not label.startswith("feature ")


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("rows", "img_emb/img_emb_1.npy: 4 rows, but metadata/metadata_1.parquet has 3"),
        ("width", "img_emb/img_emb_0.npy: width 32, but models.clip embeds in 64 dimensions"),
    ],
)
def test_a_bad_folder_is_one_line_and_no_atlas(tmp_path, how, message):
    width = 32 if how == "width" else 64
    write_embedding_folder(tmp_path / "src", np.zeros((8, width), np.float16), pa.table({"key": list("abcdefgh")}), 4)
    if how == "rows":
        pq.write_table(pa.table({"key": list("abc")}), tmp_path / "src" / "metadata" / "metadata_1.parquet")
    out = tmp_path / "atlas"
    proc = atlas_cli("build", "--config", str(write_config(tmp_path / "a.toml", tmp_path / "src")), "--out", str(out))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].endswith(message), proc.stderr
    assert not any(out.rglob("*"))  # refused before the atlas was touched: nothing written


def test_steer_names_the_feature_by_its_label(built):
    labels = built["store"].read_table("labels", ["feature_id", "rank", "word"]).to_pylist()
    feature, word = next((r["feature_id"], r["word"]) for r in labels if r["rank"] == 1)
    image_id = image_id_for(_source(3))
    args = ["-a", str(built["out"]), "-i", str(image_id), "--feature", str(feature), "--frames", "3"]
    proc = atlas_cli("steer", *args, "-o", str(built["root"] / "s.png"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"steered by feature {feature} ({word}) (step" in proc.stdout
