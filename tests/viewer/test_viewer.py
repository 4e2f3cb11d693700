"""The Streamlit viewer against a tiny atlas written directly (no Ray, no models), driven with AppTest."""

from __future__ import annotations

import gc
import io
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import streamlit as st
from PIL import Image
from repo import ROOT
from streamlit.testing.v1 import AppTest
from strips import follow, strip_html
from strips import shown as card_ids

from atlas.catalog import build_catalog, query
from atlas.cooccurrence import ActivationSets, cooccurrence_table
from atlas.feature_map import feature_map_table
from atlas.store import AtlasStore, table_from_rows
from atlas.vector_index import FEATURES, IMAGES, build_index
from viewer.data import atlas_dir

APP = ROOT / "viewer" / "app.py"
DIM = 8
N_IMAGES = 30
N_FEATURES = 40
DEAD = {3, 17, 25, 31, 36, 39}  # features that never fired
TOP_K = 4


def _picture(color: tuple[int, int, int], fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AtlasStore]:
    """A tiny but complete atlas: every table the viewer reads, a manifest and the DuckDB catalog."""
    store = AtlasStore(tmp_path_factory.mktemp("viewer-atlas"))
    rng = np.random.default_rng(0)
    image_ids = list(range(1000, 1000 + N_IMAGES))
    store.write_part("images", "part-00000", table_from_rows("images", {
        "image_id": image_ids,
        "source": [f"shapes/{i}.png" for i in image_ids],
        "caption": [f"image {i}" if i % 2 else None for i in image_ids],
        "width": [32] * N_IMAGES,
        "height": [32] * N_IMAGES,
        "thumbnail": [_picture((i % 256, 80, 160), "JPEG") for i in image_ids],
    }))  # fmt: skip
    embeddings = rng.normal(size=(N_IMAGES, DIM)).astype(np.float32)
    store.write_part("embeddings", "part-00000", table_from_rows("embeddings", {
        "image_id": image_ids, "embedding": embeddings,
    }, dim=DIM))  # fmt: skip
    build_index(embeddings, np.asarray(image_ids), store.index_dir / IMAGES)
    steps = [10, 20, 30, 40, 50]
    store.write_part("train_log", "part-00000", table_from_rows("train_log", {
        "step": steps + [50],
        "samples": [s * 16 for s in steps] + [800],
        "split": ["train"] * len(steps) + ["holdout"],
        "loss": [1.0, 0.8, 0.6, 0.5, 0.45, 0.5],
        "mse": [0.9, 0.7, 0.5, 0.4, 0.35, 0.4],
        "l1": [0.3] * 6,
        "l0": [12.0, 10.0, 9.0, 8.5, 8.0, 8.2],
        "explained_variance": [0.1, 0.4, 0.6, 0.7, 0.75, 0.72],
        "dead_fraction": [0.0, 0.05, 0.1, 0.15, 0.15, 0.15],
    }))  # fmt: skip

    alive = [f for f in range(N_FEATURES) if f not in DEAD]
    frequency = {f: (0.0 if f in DEAD else float(rng.uniform(0.01, 0.5))) for f in range(N_FEATURES)}
    store.write_part("features", "part-00000", table_from_rows("features", {
        "feature_id": list(range(N_FEATURES)),
        "alive": [f not in DEAD for f in range(N_FEATURES)],
        "frequency": [frequency[f] for f in range(N_FEATURES)],
        "mean_activation": [0.0 if f in DEAD else 1.0 + f / 10 for f in range(N_FEATURES)],
        "max_activation": [0.0 if f in DEAD else 2.0 + f / 10 for f in range(N_FEATURES)],
        "activation_mass": [frequency[f] * N_IMAGES for f in range(N_FEATURES)],
        "decoder_norm": [1.0] * N_FEATURES,
        "label": ["round things" if f == 0 else None for f in range(N_FEATURES)],
    }))  # fmt: skip
    # feature f's top images: TOP_K of them, except feature 1 which only fired on two images
    top = [(f, r, image_ids[(f + r) % N_IMAGES], 3.0 - r / 10) for f in alive for r in range(1, TOP_K + 1)]
    top = [t for t in top if not (t[0] == 1 and t[1] > 2)]
    store.write_part("top_images", "part-00000", table_from_rows("top_images", {
        "feature_id": [t[0] for t in top], "rank": [t[1] for t in top],
        "image_id": [t[2] for t in top], "value": [t[3] for t in top],
    }))  # fmt: skip
    store.write_part("activations", "part-00000", table_from_rows("activations", {
        "image_id": [t[2] for t in top], "feature_id": [t[0] for t in top], "value": [t[3] for t in top],
    }))  # fmt: skip
    # co-occurrence by the shipped code (as `atlas index` computes it) over those activations
    sets = ActivationSets.from_parts([store.read_table("activations", ["image_id", "feature_id"])], N_FEATURES)
    store.write_part("cooccurrence", "part-00000", cooccurrence_table(sets, 3, n_images=N_IMAGES))
    store.write_part("icons", "part-00000", table_from_rows("icons", {
        "feature_id": alive,
        "image": [_picture((200, f * 5, 40), "PNG") for f in alive],
        "feature_scale": [50.0] * len(alive),
        "seed": alive,
        "steps": [4] * len(alive),
        "fidelity_rank": [1 + f % 7 for f in alive],
        "template": ["gray"] * len(alive), "template_scale": [0.2] * len(alive), "negative": ["zero"] * len(alive),
        "keep_error": [False] * len(alive), "guidance_scale": [4.0] * len(alive), "size": [32] * len(alive),
    }))  # fmt: skip

    # labels of the alive features: feature f's rank-1 word is "word-{f % 5}" (feature 0 keeps its stored label)
    store.write_part("labels", "part-00000", table_from_rows("labels", {
        "feature_id": [f for f in alive for _ in (1, 2)], "rank": [1, 2] * len(alive),
        "word": [w for f in alive for w in (f"word-{f % 5}", "extra")], "score": [0.5, 0.25] * len(alive),
    }))  # fmt: skip
    # decoder directions: feature f points along axis f % DIM, so its nearest features share f % DIM
    directions = np.zeros((N_FEATURES, DIM), dtype=np.float32)
    directions[np.arange(N_FEATURES), np.arange(N_FEATURES) % DIM] = 1.0
    directions += rng.normal(scale=0.01, size=directions.shape).astype(np.float32)
    build_index(directions, np.arange(N_FEATURES), store.index_dir / FEATURES)
    store.write_part("feature_map", "part-00000", feature_map_table(np.asarray(alive), directions[alive], 5))
    red_blue = np.zeros(DIM, dtype=np.float32)
    red_blue[2] = 1.0
    store.write_part("directions", "part-00000", table_from_rows("directions", {
        "name": ["red-blue"], "positive": ["red"], "negative": ["blue"], "n_pairs": [4], "vector": [red_blue],
        "top_features": [[{"feature_id": 2, "cosine": 0.99}, {"feature_id": 10, "cosine": 0.98}]],
    }, dim=DIM))  # fmt: skip

    def manifest(m: dict) -> None:
        m["models"] = {"clip": "builtin:random-clip", "decoder": "builtin:random-decoder"}
        holdout = {"explained_variance": 0.72, "l0": 8.2, "mse": 0.4, "dead_fraction": 0.15, "n": 3}
        for i, name in enumerate(("embed", "train", "featurize", "render", "index")):
            m["stages"][name] = {"status": "done", "seconds": 1.5 + i, "finished": f"2026-01-01T00:00:0{i}Z",
                                 "summary": {"holdout": holdout} if name == "train" else {}}  # fmt: skip

    store.update_manifest(manifest)
    build_catalog(store, DIM)
    yield store
    # Drop the viewer's cached DuckDB connection now, not at interpreter exit (where its bindings complain).
    st.cache_resource.clear()
    st.cache_data.clear()
    gc.collect()


@pytest.fixture
def app(atlas: AtlasStore, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The app on the test atlas, after its first run (the summary page)."""
    monkeypatch.setenv("ATLAS_DIR", str(atlas.root))
    return AppTest.from_file(str(APP), default_timeout=60).run()


def _exceptions(at: AppTest) -> list[str]:
    """The exceptions the run raised, as text (so a failing assert shows them)."""
    return [e.value for e in at.exception]


def _sql_column(store: AtlasStore, sql: str) -> list:
    return query(store, sql).column(0).to_pylist()


def test_atlas_dir_from_argument_or_environment() -> None:
    assert atlas_dir(["--atlas", "/a"], {"ATLAS_DIR": "/b"}) == "/a"
    assert atlas_dir(["--atlas=/a", "-q"], {}) == "/a"
    assert atlas_dir(["-q", "tests"], {"ATLAS_DIR": "/b"}) == "/b"
    assert atlas_dir([], {}) is None


@pytest.mark.parametrize("where", ["unset", "not-an-atlas"])
def test_missing_atlas_is_a_clear_error(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if where == "unset":
        monkeypatch.delenv("ATLAS_DIR", raising=False)
    else:
        monkeypatch.setenv("ATLAS_DIR", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert len(at.error) == 1
    assert ("no atlas given" if where == "unset" else "is not an atlas") in at.error[0].value


def test_home_shows_models_stages_row_counts_and_metrics(app: AppTest, atlas: AtlasStore) -> None:
    assert not _exceptions(app)
    tables = {}
    for frame in app.dataframe:
        if "table" in frame.value.columns:
            tables = dict(zip(frame.value["table"], frame.value["rows"], strict=True))
    assert tables["images"] == N_IMAGES
    assert tables["features"] == N_FEATURES
    assert tables["icons"] == N_FEATURES - len(DEAD)
    assert tables["top_images"] == atlas.count_rows("top_images")
    assert tables["directions"] == 1
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["explained variance"] == "0.720"
    assert metrics["dead features"] == "15.0%"
    assert any("builtin:random-clip" in md.value for md in app.markdown)


def test_grid_pages_through_alive_features_by_frequency(app: AppTest, atlas: AtlasStore) -> None:
    app.switch_page("views/grid.py").run()
    assert not _exceptions(app)
    expected = _sql_column(atlas, "SELECT feature_id FROM features WHERE alive ORDER BY frequency DESC, feature_id")
    assert strip_html(app, "grid").count("<img ") == 24  # the default page size
    assert card_ids(app, "grid") == expected[:24]

    app.number_input(key="grid_page").set_value(2).run()
    assert not _exceptions(app)
    assert card_ids(app, "grid") == expected[24:] and app.query_params["page"] == "2"

    app.checkbox(key="grid_alive").uncheck().run()  # dead features too; back to page 1
    assert app.number_input(key="grid_page").value == 1
    app.selectbox(key="grid_sort").select("feature_id").run()
    assert card_ids(app, "grid") == list(range(24))
    assert strip_html(app, "grid").count("<img ") == 24 - len(DEAD & set(range(24)))  # dead features have no icon
    assert strip_html(app, "grid").count("dead feature") == len(DEAD & set(range(24)))


def test_a_grid_url_reopens_the_same_grid_page(app: AppTest, atlas: AtlasStore) -> None:
    app.switch_page("views/grid.py").run()
    app.selectbox(key="grid_sort").select("feature_id").run()
    app.checkbox(key="grid_alive").uncheck().run()
    app.number_input(key="grid_page").set_value(2).run()
    shown = card_ids(app, "grid")
    assert shown == list(range(24, N_FEATURES))
    params = dict(app.query_params)
    assert params == {"sort": "feature_id", "alive": "0", "page": "2"}  # defaults stay out of the URL

    fresh = AppTest.from_file(str(APP), default_timeout=60)  # another browser opening that URL
    for k, v in params.items():
        fresh.query_params[k] = v
    fresh.switch_page("views/grid.py").run()
    assert not _exceptions(fresh) and card_ids(fresh, "grid") == shown

    bad = AppTest.from_file(str(APP), default_timeout=60)  # a hand-edited URL falls back to the defaults
    for k, v in {"sort": "nope", "size": "7", "alive": "x", "min_freq": "2", "min_mass": "nan", "page": "-1"}.items():
        bad.query_params[k] = v
    bad.switch_page("views/grid.py").run()
    default = _sql_column(atlas, "SELECT feature_id FROM features WHERE alive ORDER BY frequency DESC, feature_id")
    assert not _exceptions(bad) and card_ids(bad, "grid") == default[:24]


def test_grid_cards_link_to_the_feature_page(app: AppTest, atlas: AtlasStore) -> None:
    app.switch_page("views/grid.py").run()
    feature_id = follow(app, "grid", 0)
    assert app.number_input(key="feature_id").value == feature_id
    assert app.query_params["feature"] == str(feature_id)
    assert app.title[0].value.startswith(f"Feature {feature_id}")


@pytest.mark.parametrize("feature_id", [0, 1, 3])
def test_feature_page_shows_icon_stats_and_top_images(app: AppTest, atlas: AtlasStore, feature_id: int) -> None:
    app.query_params["feature"] = str(feature_id)
    app.switch_page("views/feature.py").run()
    assert not _exceptions(app)
    assert app.number_input(key="feature_id").value == feature_id
    expected = _sql_column(atlas, f"SELECT rank FROM top_images WHERE feature_id = {feature_id} ORDER BY rank")
    strips = [m.value for m in app.markdown if 'href="./image?image=' in m.value]
    tops = re.findall(r">(#\d+ · [^<]*)</div>", strips[0]) if strips else []  # the top images' notes
    if feature_id in DEAD:
        assert expected == [] and tops == []
        assert not [img for img in app.image if img.captions and img.captions[0].startswith("icon")]  # no icon either
        return
    assert [c.split(" ")[0] for c in tops] == [f"#{r}" for r in expected]
    icon = [img for img in app.image if img.captions and img.captions[0].startswith("icon")]
    rank = _sql_column(atlas, f"SELECT fidelity_rank FROM icons WHERE feature_id = {feature_id}")[0]
    assert icon[0].captions == [f"icon · fidelity rank {rank}"]
    stats = app.dataframe[0].value
    assert int(stats["feature_id"].iloc[0]) == feature_id
    if feature_id == 0:
        assert app.title[0].value == "Feature 0: round things"


def test_feature_page_follows_the_number_input(app: AppTest, atlas: AtlasStore) -> None:
    app.switch_page("views/feature.py").run()
    assert app.number_input(key="feature_id").value == 0  # the first alive feature
    app.number_input(key="feature_id").set_value(7).run()
    assert not _exceptions(app)
    assert app.query_params["feature"] == "7"
    assert app.title[0].value == "Feature 7: word-2"  # its label from the labels table


def test_viewer_loads_no_models_ray_or_jobs() -> None:
    code = (
        "import sys, viewer.data; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'jobs', 'diffusers', 'open_clip'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _frame_with(at: AppTest, column: str):
    """The first dataframe that has `column`."""
    return next(f.value for f in at.dataframe if column in f.value.columns)


def test_home_has_a_density_histogram_and_links(app: AppTest) -> None:
    assert not _exceptions(app)
    assert any(el.type == "arrow_vega_lite_chart" or "chart" in el.type for el in app.main)
    assert "Feature density" in [h.value for h in app.subheader]


def test_grid_filters_by_label_frequency_and_mass(app: AppTest, atlas: AtlasStore) -> None:
    app.switch_page("views/grid.py").run()
    app.text_input(key="grid_label").input("WORD-3").run()  # case-insensitive substring of the label
    assert not _exceptions(app)
    expected = _sql_column(
        atlas, "SELECT feature_id FROM features WHERE alive AND label = 'word-3' ORDER BY frequency DESC, feature_id"
    )
    assert expected and card_ids(app, "grid") == expected
    assert any("word-3" in md.value for md in app.markdown)

    app.text_input(key="grid_label").input("%").run()  # LIKE wildcards are matched literally
    assert card_ids(app, "grid") == [] and app.info

    app.text_input(key="grid_label").input("").run()
    app.number_input(key="grid_min_freq").set_value(0.25).run()
    expected = _sql_column(
        atlas, "SELECT feature_id FROM features WHERE alive AND frequency >= 0.25 ORDER BY frequency DESC, feature_id"
    )
    assert card_ids(app, "grid") == expected[:24]
    app.number_input(key="grid_min_mass").set_value(10.0).run()
    expected = _sql_column(
        atlas,
        "SELECT feature_id FROM features WHERE alive AND frequency >= 0.25 AND activation_mass >= 10 "
        "ORDER BY frequency DESC, feature_id",
    )
    assert card_ids(app, "grid") == expected[:24]

    app.number_input(key="grid_min_freq").set_value(0.0).run()
    app.number_input(key="grid_min_mass").set_value(0.0).run()
    app.selectbox(key="grid_sort").select("activation_mass").run()
    expected = _sql_column(
        atlas, "SELECT feature_id FROM features WHERE alive ORDER BY activation_mass DESC, feature_id"
    )
    assert card_ids(app, "grid") == expected[:24]


def test_feature_page_shows_labels_histogram_nearest_features_and_directions(app: AppTest, atlas: AtlasStore) -> None:
    app.query_params["feature"] = "2"
    app.switch_page("views/feature.py").run()
    assert not _exceptions(app)
    assert app.title[0].value == "Feature 2: word-2"
    assert any(md.value.startswith("**Labels**") and "word-2 (0.50)" in md.value for md in app.markdown)
    assert "Activation histogram" in [h.value for h in app.subheader]
    near = card_ids(app, "near")
    alive_same_axis = [f for f in range(N_FEATURES) if f % DIM == 2 and f != 2 and f not in DEAD]
    assert near[: len(alive_same_axis)] and set(near[: len(alive_same_axis)]) == set(alive_same_axis)
    assert not set(near) & DEAD
    aligned = _frame_with(app, "cosine")
    assert list(aligned["name"]) == ["red-blue"] and aligned["cosine"].iloc[0] == pytest.approx(1.0, abs=0.05)

    assert follow(app, "near", 0) == near[0]  # a neighbour's card opens its page
    assert app.query_params["feature"] == str(near[0])
    assert app.title[0].value.startswith(f"Feature {near[0]}")


def test_feature_page_shows_cooccurring_features_as_the_self_join_counts_them(app: AppTest, atlas: AtlasStore) -> None:
    app.query_params["feature"] = "2"
    app.switch_page("views/feature.py").run()
    assert not _exceptions(app)
    pairs = query(
        atlas,
        "SELECT b.feature_id AS g, count(*) AS t, any_value(fa.c + fb.c) AS both_n FROM activations a "
        "JOIN activations b USING (image_id) "
        "JOIN (SELECT feature_id, count(*) AS c FROM activations GROUP BY 1) fa ON fa.feature_id = a.feature_id "
        "JOIN (SELECT feature_id, count(*) AS c FROM activations GROUP BY 1) fb ON fb.feature_id = b.feature_id "
        "WHERE a.feature_id = 2 AND b.feature_id <> 2 GROUP BY 1",
    ).to_pylist()
    count = {p["g"]: p["t"] for p in pairs}
    jaccard = {p["g"]: p["t"] / (p["both_n"] - p["t"]) for p in pairs}
    shown = card_ids(app, "cooc")
    # the table keeps the 3 best by count and the 3 best by Jaccard (which of tied partners is free)
    assert set(shown) <= set(count) and len(shown) >= 3
    assert [count[g] for g in shown[:3]] == sorted(count.values(), reverse=True)[:3]
    assert all(count[a] >= count[b] for a, b in zip(shown, shown[1:], strict=False))
    app.radio(key="cooccurrence_order").set_value("jaccard").run()
    shown = card_ids(app, "cooc")
    assert [jaccard[g] for g in shown[:3]] == pytest.approx(sorted(jaccard.values(), reverse=True)[:3])
    assert follow(app, "cooc", 1) == shown[1]
    assert app.title[0].value.startswith(f"Feature {shown[1]}")


def test_directions_page_lists_directions_and_their_features(app: AppTest) -> None:
    app.switch_page("views/directions.py").run()
    assert not _exceptions(app)
    assert list(_frame_with(app, "n_pairs")["name"]) == ["red-blue"]
    assert card_ids(app, "dir") == [2, 10]
    assert follow(app, "dir", 1) == 10 and app.title[0].value.startswith("Feature 10")


def test_sql_page_runs_read_only_queries_with_limits(app: AppTest, atlas: AtlasStore) -> None:
    app.switch_page("views/sql.py").run()
    assert not _exceptions(app)
    app.text_area(key="sql_text").input(
        "SELECT feature_id, thumbnail FROM features JOIN icons USING (feature_id) ORDER BY 1"
    ).run()
    app.text_area(key="sql_text").input("SELECT image_id, thumbnail FROM images ORDER BY image_id").run()
    app.number_input(key="sql_limit").set_value(5).run()
    app.button(key="sql_run").click().run()
    assert not _exceptions(app) and not app.error
    result = _frame_with(app, "thumbnail")
    assert len(result) == 5 and all(v.endswith("bytes>") for v in result["thumbnail"])
    for refused, message in [("DROP VIEW features", "only read-only"), ("COPY features TO 'x.csv'", "only read-only"),
                             ("ATTACH 'x.duckdb'", "only read-only"), ("INSTALL vss", "only read-only")]:  # fmt: skip
        app.text_area(key="sql_text").input(refused).run()
        assert app.error and message in app.error[0].value
    assert _sql_column(atlas, "SELECT count(*) FROM features") == [N_FEATURES]  # nothing was dropped


def test_search_page_renders_without_a_query(app: AppTest) -> None:
    app.switch_page("views/search.py").run()
    assert not _exceptions(app)
    assert app.text_input(key="search_text").value == ""


def test_bench_view_writes_latencies_for_every_page(tmp_path: Path) -> None:
    """Tiny sizes: a 300-feature synthetic atlas, a real `streamlit run` server, 2 sessions (shape only)."""
    import json

    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "bench", "view", "--features", "300", "--sessions", "2", "--requests", "1",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "view.json").read_text())
    assert result["features"] == 300 and set(result["latency_ms"]) == {"1 session", "2 sessions"}
    for mode, n in (("1 session", 1), ("2 sessions", 2)):
        for page in ("grid", "feature", "map", "image"):
            stats = result["latency_ms"][mode][page]
            assert stats["n"] == n and 0 < stats["p50"] <= stats["p95"]
    assert result["baseline_health_ms"]["p50"] > 0
    browser = result["browser_ms"]
    if shutil.which("chromium") is None:
        assert "chromium" in browser["skipped"]
    else:  # the map in Chromium: every point drawn, a hover's icon loaded, against the Summary page
        assert 0 < browser["points"] <= 300, browser  # the alive features, all on the map
        for step in ("summary page (baseline)", "map drawn", "hover icon"):
            assert browser[step]["n"] == 3 and 0 < browser[step]["p50"] <= browser[step]["p95"], browser
    leftover = subprocess.run(["pgrep", "-f", "atlas-bench-view-"], capture_output=True, text=True).stdout.strip()
    assert leftover == ""  # the server was stopped


def _chart_rows(at: AppTest) -> pa.Table:
    """The data of the page's one Vega-Lite chart, as the browser receives it (Arrow IPC)."""
    (chart,) = at.get("vega_lite_chart")
    (dataset,) = chart.proto.datasets
    return pa.ipc.open_stream(dataset.data.data).read_all()


def test_map_page_places_every_alive_feature_and_shows_the_picked_one(app: AppTest, atlas: AtlasStore) -> None:
    app.switch_page("views/map.py").run()
    assert not _exceptions(app)
    assert app.title[0].value == "Feature map"
    rows = _chart_rows(app)
    alive = _sql_column(atlas, "SELECT feature_id FROM features WHERE alive ORDER BY feature_id")
    assert rows.column("feature_id").to_pylist() == alive
    xy = np.stack([rows.column("x").to_numpy(), rows.column("y").to_numpy()], axis=1)
    # the fixture's features point along axis f % DIM: each one's nearest neighbour on the map shares its axis
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    axis = np.asarray(alive) % DIM
    assert np.mean(axis[d.argmin(axis=1)] == axis) >= 0.9
    assert "click a point" in " ".join(c.value for c in app.caption)

    app.radio(key="map_colour").set_value("label").run()
    app.text_input(key="map_label").input("word-4").run()
    rows = _chart_rows(app)
    ids, match = rows.column("feature_id").to_pylist(), rows.column("match").to_pylist()
    matched = [f for f, m in zip(ids, match, strict=True) if m]
    assert matched == _sql_column(atlas, "SELECT feature_id FROM features WHERE label = 'word-4' ORDER BY 1")

    app.query_params["feature"] = "2"  # what a click on feature 2 writes to the URL
    app.run()
    assert any(md.value.startswith("**#2** · word-2") for md in app.markdown)
    link = app.get("page_link")[-1].proto
    assert (link.page, link.query_string) == ("feature", "feature=2")


def test_image_page_shows_the_image_its_features_and_its_nearest_images(app: AppTest, atlas: AtlasStore) -> None:
    image_id = 1003
    app.query_params["image"] = str(image_id)
    app.switch_page("views/image.py").run()
    assert not _exceptions(app)
    assert app.title[0].value == f"Image {image_id}"
    assert any("image 1003" in md.value and "shapes/1003.png" in md.value for md in app.markdown)
    fired = _sql_column(
        atlas, f"SELECT feature_id FROM activations WHERE image_id = {image_id} ORDER BY value DESC, feature_id"
    )
    assert fired and card_ids(app, "image-feature") == fired[:12]  # the strongest as tiles
    if len(fired) > 12:  # and every one in the table, each with a link to its page
        table = app.dataframe[-1].value
        assert table["feature_id"].tolist() == fired
        assert table["page"].tolist() == [f"/feature?feature={f}" for f in fired]
    emb = query(atlas, "SELECT image_id, embedding FROM embeddings ORDER BY image_id").to_pydict()
    unit = np.asarray(emb["embedding"]) / np.linalg.norm(emb["embedding"], axis=1, keepdims=True)
    cos = unit @ unit[emb["image_id"].index(image_id)]
    nearest = [emb["image_id"][i] for i in np.argsort(-cos) if emb["image_id"][i] != image_id][:12]
    assert card_ids(app, "similar") == nearest
    link = app.get("page_link")[-1].proto
    assert (link.page, link.query_string) == ("explorer", f"image={image_id}")

    assert follow(app, "similar", 0) == nearest[0]  # every image opens its page
    assert app.title[0].value == f"Image {nearest[0]}"
    feature_id = follow(app, "image-feature", 0)
    assert app.title[0].value.startswith(f"Feature {feature_id}")


def test_feature_page_top_images_link_to_their_image_page(app: AppTest, atlas: AtlasStore) -> None:
    app.query_params["feature"] = "2"
    app.switch_page("views/feature.py").run()
    top = _sql_column(atlas, "SELECT image_id FROM top_images WHERE feature_id = 2 ORDER BY rank")
    strip = next(m.value for m in app.markdown if 'href="./image?image=' in m.value)  # the first strip: top images
    assert [int(i) for i in re.findall(r'href="\./image\?image=(-?\d+)"', strip)] == top
    app.query_params["image"] = str(top[0])  # what following the link opens
    app.switch_page("views/image.py").run()
    assert app.title[0].value == f"Image {top[0]}"


def test_image_page_says_when_an_image_is_not_in_the_atlas(app: AppTest) -> None:
    app.query_params["image"] = "77"
    app.switch_page("views/image.py").run()
    assert not _exceptions(app) and "Image 77 is not in the images table." in [w.value for w in app.warning]


def test_a_list_is_saved_from_a_feature_page_and_reopened_by_its_url(
    atlas: AtlasStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from atlas.feature_lists import read_lists

    copy = AtlasStore(shutil.copytree(atlas.root, tmp_path / "atlas"))  # saving writes to the atlas
    monkeypatch.setenv("ATLAS_DIR", str(copy.root))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    for feature_id in (5, 2):
        at.query_params["feature"] = str(feature_id)
        at.switch_page("views/feature.py").run()
        at.text_input(key="add_list_name").input("round things").run()
        at.button(key="add_to_list").click().run()
        assert not _exceptions(at) and not at.error
    assert read_lists(copy)["round things"].feature_ids == (5, 2)
    links = [(p.proto.page, p.proto.query_string) for p in at.get("page_link")]
    assert ("lists", "list=round+things") in links

    at.text_input(key="add_list_name").input("../x").run()
    at.button(key="add_to_list").click().run()
    assert [e.value for e in at.error] and at.error[0].value.startswith("list name '../x'")

    fresh = AppTest.from_file(str(APP), default_timeout=60)  # another browser opening the list's URL
    fresh.query_params["list"] = "round things"
    fresh.switch_page("views/lists.py").run()
    assert not _exceptions(fresh)
    assert fresh.selectbox(key="list_name").value == "round things"
    assert card_ids(fresh, "list-feature") == [5, 2]
    fresh.multiselect(key="list_remove").select(5).run()
    fresh.button(key="list_save_removed").click().run()
    assert card_ids(fresh, "list-feature") == [2] and read_lists(copy)["round things"].feature_ids == (2,)
    fresh.button(key="list_delete").click().run()
    assert read_lists(copy) == {} and fresh.info


def test_a_search_url_reopens_the_query(app: AppTest) -> None:
    app.query_params["q"] = "red"
    app.switch_page("views/search.py").run()
    assert app.text_input(key="search_text").value == "red"
    app.text_input(key="search_text").input("blue").run()
    assert app.query_params["q"] == "blue" and app.text_input(key="search_text").value == "blue"
