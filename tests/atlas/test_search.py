"""Search and labels on a real (small) toy-world atlas: the toy CLIP, a trained SAE, the vocabulary. Ground
truth comes from the toy world's labels.csv, so "red" must find features whose top images are red."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from repo import ROOT
from toy_atlas import build_toy_atlas

from atlas.catalog import query
from atlas.errors import AtlasError
from atlas.labels import read_vocabulary, templates_for, vocabulary_for
from atlas.search import AtlasSearch
from atlas.session import ModelSession
from atlas.toyworld.world import FACTOR_VALUES, Scene, draw_scene, read_labels
from atlas.uploads import decode_upload
from atlas.vector_index import build_index, inner_index, is_exact, load_index, search, vector


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-search")
    store = build_toy_atlas(root, n_images=600, l1=4.0, epochs=20)
    return {
        "store": store,
        "truth": read_labels(root / "world" / "images"),
        "search": AtlasSearch(ModelSession(store, device="cpu")),
    }


def _top_image_sources(store, feature_id: int) -> list[str]:
    return (
        query(
            store,
            "SELECT i.source FROM top_images t JOIN images i USING (image_id) "
            f"WHERE t.feature_id = {int(feature_id)} ORDER BY t.rank",
        )
        .column(0)
        .to_pylist()
    )


def _share(toy, feature_id: int, factor: str, value: str) -> float:
    sources = _top_image_sources(toy["store"], feature_id)
    return sum(toy["truth"][s][factor] == value for s in sources) / max(len(sources), 1)


def test_the_vocabulary_is_large_and_holds_every_toy_world_word():
    words = read_vocabulary()
    assert len(words) >= 2000 and len(set(words)) == len(words)
    for values in FACTOR_VALUES.values():
        for value in values:
            if value not in ("plain", "one"):  # never written in a caption (plain = no pattern word)
                assert value in words and value in vocabulary_for("builtin:toy-clip")
    assert len(vocabulary_for("open_clip:ViT-B-32/openai")) == len(words)
    assert templates_for("open_clip:ViT-B-32/openai")[0] == "a photo of {}."


@pytest.mark.parametrize("word, factor", [("red", "colour"), ("blue", "colour"), ("striped", "pattern")])
def test_text_search_finds_features_whose_top_images_show_the_word(toy, word, factor):
    hits = toy["search"].features_for_text(word, 4).to_pylist()
    assert len(hits) == 4 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    shares = [_share(toy, h["feature_id"], factor, word) for h in hits]
    # chance is 1/8 for a colour and 1/3 for a pattern
    assert shares[0] >= 0.75, (hits, shares)
    assert sum(s >= 0.75 for s in shares) >= 2, (hits, shares)


def test_text_search_for_images_returns_red_images(toy):
    hits = toy["search"].images_for_text("red", 10)
    ids = hits.column("image_id").to_pylist()
    sources = dict(
        zip(
            *(
                toy["store"].read_table("images", ["image_id", "source"]).column(c).to_pylist()
                for c in ("image_id", "source")
            ),
            strict=True,
        )
    )
    red = [toy["truth"][sources[i]]["colour"] == "red" for i in ids]
    assert len(ids) == 10 and sum(red) >= 8, red


def test_labels_are_stored_in_sql_and_agree_with_the_top_images(toy):
    store = toy["store"]
    alive = query(store, "SELECT count(*) FROM features WHERE alive").column(0).to_pylist()[0]
    per_feature = query(
        store, "SELECT feature_id, count(*) AS n, min(rank) AS lo, max(rank) AS hi FROM labels GROUP BY 1"
    ).to_pylist()
    assert len(per_feature) == alive and all((r["n"], r["lo"], r["hi"]) == (5, 1, 5) for r in per_feature)
    mismatched = (
        query(
            store,
            "SELECT count(*) FROM features f JOIN labels l ON l.feature_id = f.feature_id AND l.rank = 1 "
            "WHERE f.label <> l.word",
        )
        .column(0)
        .to_pylist()
    )
    assert mismatched == [0]
    assert query(store, "SELECT count(*) FROM features WHERE NOT alive AND label IS NOT NULL").column(
        0
    ).to_pylist() == [0]
    scores = query(store, "SELECT feature_id, rank, score FROM labels ORDER BY feature_id, rank").to_pandas()
    assert (scores.groupby("feature_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()


def test_colour_labels_match_the_images(toy):
    store = toy["store"]
    colours = list(FACTOR_VALUES["colour"])
    rows = query(store, "SELECT feature_id, label FROM features WHERE alive AND label IN ("
                 + ", ".join(f"'{c}'" for c in colours) + ")").to_pylist()  # fmt: skip
    assert len(rows) >= 10
    right = [_share(toy, r["feature_id"], "colour", r["label"]) >= 0.5 for r in rows]
    assert np.mean(right) >= 0.6, list(zip(rows, right, strict=True))


def test_image_search_gives_the_features_that_fire_on_it(toy):
    scene = Scene("circle", "red", "plain", "gray", "big", "one", "middle", ((0.5, 0.5),))
    hits = toy["search"].features_for_image(draw_scene(scene, 32), 8).to_pylist()
    assert hits and all(h["activation"] > 0 for h in hits)
    assert [h["activation"] for h in hits] == sorted((h["activation"] for h in hits), reverse=True)
    labels = {h["label"] for h in hits}
    assert labels & {"red", "circle", "big", "gray", "gray background", "in the middle", "middle", "circles"}, hits


def test_nearest_features_are_alive_sorted_and_exclude_the_feature(toy):
    s = toy["search"]
    feature_id = s.features_for_text("red", 1).column("feature_id")[0].as_py()
    near = s.nearest_features(feature_id, 5).to_pylist()
    assert len(near) == 5 and feature_id not in [n["feature_id"] for n in near]
    assert all(s.alive[n["feature_id"]] for n in near)
    assert [n["score"] for n in near] == sorted((n["score"] for n in near), reverse=True)
    d = s.direction_of(feature_id)
    assert d is not None and np.linalg.norm(d) == pytest.approx(1.0, abs=1e-4)


def test_empty_text_is_a_user_error(toy):
    with pytest.raises(AtlasError, match="give some text"):
        toy["search"].features_for_text("   ")


def test_cli_search_features_and_images(toy):
    root = str(toy["store"].root)
    cmd = [sys.executable, "-m", "jobs.cli", "search", "red", "--atlas", root, "-k", "3", "--format", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    rows = json.loads(out)
    assert [r["feature_id"] for r in rows] == toy["search"].features_for_text("red", 3).column("feature_id").to_pylist()
    out = subprocess.run([sys.executable, "-m", "jobs.cli", "search", "red", "--atlas", root, "--images", "-k", "2"],
                         capture_output=True, text=True, timeout=300, check=True).stdout  # fmt: skip
    assert out.count(".png") == 2
    bad = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "search", "red", "--atlas", root, "-k", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error:")


def test_search_page_finds_features_for_red(toy, monkeypatch):
    from streamlit.testing.v1 import AppTest
    from strips import follow, shown

    monkeypatch.setenv("ATLAS_DIR", str(toy["store"].root))
    app = AppTest.from_file(str(ROOT / "viewer" / "app.py"), default_timeout=120).run()
    app.switch_page("views/search.py").run()
    app.text_input(key="search_text").input("red").run()
    assert not app.exception, [e.value for e in app.exception]
    features = shown(app, "text-feature")
    assert features[:4] == toy["search"].features_for_text("red", 4).column("feature_id").to_pylist()
    image_hits = toy["search"].images_for_text("red", 12).column("image_id").to_pylist()
    assert shown(app, "text-image") == image_hits  # the image results, each a link to its image page
    assert follow(app, "text-feature", 0) == features[0]
    assert app.title[0].value.startswith(f"Feature {features[0]}")
    import gc

    import streamlit as st

    st.cache_resource.clear()  # drop the viewer's DuckDB connection now, not at interpreter exit
    st.cache_data.clear()
    gc.collect()


# ---- the index itself ---------------------------------------------------------------------------
def test_large_sets_get_an_approximate_index_with_high_recall(tmp_path):
    from jobs.bench_search import synthetic_directions

    x = synthetic_directions(4000, 32)
    ids = np.arange(4000) * 7 + 3  # the atlas's own ids come back
    exact = build_index(x, ids, tmp_path / "exact.faiss")
    _, truth = search(exact, x[:50], 10)

    class _Store:  # load_index only needs the folder
        index_dir = tmp_path
        root = tmp_path

    # re-scored PQ codes between exact_max and compressed_max, IVF above
    for name, compressed_max, kind in (("pq.faiss", 10**6, "IndexRefineFlat"), ("ivf.faiss", 2000, "IndexIVFFlat")):
        approx = build_index(x, ids, tmp_path / name, exact_max=1000, compressed_max=compressed_max)
        assert is_exact(exact) and not is_exact(approx)
        assert type(inner_index(approx)).__name__ == kind
        _, found = search(approx, x[:50], 10)
        assert np.isin(found, ids).all()
        assert np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)]) >= 0.9, name
        loaded = load_index(_Store(), name)
        np.testing.assert_allclose(vector(loaded, 3 + 7 * 5), x[5], atol=1e-5)
        assert vector(loaded, 4) is None


def test_bench_search_writes_its_json(tmp_path):
    cmd = [sys.executable, "-m", "jobs.cli", "bench", "search", "--n", "2000", "--dim", "16", "--queries", "20"]
    proc = subprocess.run([*cmd, "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "search.json").read_text())
    assert result["n"] == 2000 and 0 <= result["recall_at_10"] <= 1
    for key in ("exact", "approximate"):
        assert result[key]["ms_per_query"] > 0 and result[key]["build_s"] >= 0
    assert result["approximate"]["index"].startswith("IVF") and result["speedup"] > 0


# ---- uploads ------------------------------------------------------------------------------------
def _png(size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_uploads_are_size_limited_and_decoded_safely():
    assert decode_upload(_png()).size == (8, 8)
    with pytest.raises(AtlasError, match="empty"):
        decode_upload(b"")
    with pytest.raises(AtlasError, match="limit is"):
        decode_upload(_png(), max_bytes=10)
    with pytest.raises(AtlasError, match="not a readable"):
        decode_upload(b"GIF89a" + b"\x00" * 100)
    with pytest.raises(AtlasError, match="not a readable"):
        decode_upload(_png()[:40])  # truncated
    with pytest.raises(AtlasError, match="pixels"):
        decode_upload(_png((200, 200)), max_pixels=1000)
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, format="GIF")
    with pytest.raises(AtlasError, match="not a readable"):
        decode_upload(gif.getvalue())  # only PNG, JPEG, WEBP


def test_the_readme_sql_examples_answer_on_a_toy_atlas(toy):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sql\n", 1)[1].split("```", 1)[0]
    statements = [s.strip() for s in block.split(";") if s.strip()]
    titles = [s.splitlines()[0] for s in statements]
    for needed in ("most frequent", "co-occur", "fire together", "dead-feature share", "labels mention"):
        assert any(needed in t for t in titles), needed
    for title, statement in zip(titles, statements, strict=True):
        rows = query(toy["store"], statement).num_rows
        assert rows > 0 or "skipped" in title, title  # the toy atlas has no errors; everything else answers
