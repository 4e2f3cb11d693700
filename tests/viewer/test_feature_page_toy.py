"""The feature page's quantile samples, caption words and label search on a toy-world atlas built by the
library's stage functions (featurize's sample, the index stage's caption-word SQL), not a written fixture."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from strips import shown
from toy_atlas import build_toy_atlas

from atlas.store import AtlasStore

APP = Path(__file__).resolve().parents[2] / "viewer" / "app.py"


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> AtlasStore:
    return build_toy_atlas(tmp_path_factory.mktemp("toy-feature-page"), n_images=400, l1=4.0, epochs=10)


def _caption_words_by_hand(store: AtlasStore, min_images: int = 2, per_feature: int = 10) -> dict[int, list]:
    """The lift table computed in Python from the tables it is made of."""
    images = store.read_table("images", ["image_id", "caption"]).to_pylist()
    words = {r["image_id"]: {w for w in re.split(r"[^a-z0-9]+", r["caption"].lower()) if len(w) > 1}
             for r in images if r["caption"]}  # fmt: skip
    words = {i: w for i, w in words.items() if w}
    overall = Counter(w for ws in words.values() for w in ws)
    shown: dict[int, set] = {}
    for table in ("top_images", "quantile_samples"):
        for r in store.read_table(table, ["feature_id", "image_id"]).to_pylist():
            if r["image_id"] in words:
                shown.setdefault(r["feature_id"], set()).add(r["image_id"])
    out = {}
    for f, ids in shown.items():
        counts = Counter(w for i in ids for w in words[i])
        rows = [(w, c, (c / len(ids)) / (overall[w] / len(words))) for w, c in counts.items()]
        rows = [r for r in rows if r[1] >= min_images and r[2] > 1]
        rows.sort(key=lambda r: (-r[2], -r[1], r[0]))
        if rows:
            out[f] = rows[:per_feature]
    return out


def test_caption_words_are_the_lift_of_the_feature_images_captions(toy: AtlasStore) -> None:
    got: dict[int, list] = {}
    for r in toy.read_table("caption_words").to_pylist():
        got.setdefault(r["feature_id"], []).append((r["word"], r["images"], r["lift"]))
    want = _caption_words_by_hand(toy)
    assert got.keys() == want.keys() and len(got) > 0
    for f, rows in want.items():  # the same words, counts and lifts (ties in lift may order either way)
        assert {w: c for w, c, _ in got[f]} == {w: c for w, c, _ in rows}, f
        lifts = {w: lift for w, _, lift in rows}
        assert [lift for *_, lift in got[f]] == pytest.approx([lifts[w] for w, *_ in got[f]], rel=1e-5)


def test_feature_page_shows_quantile_bins_caption_words_and_a_label_search(
    toy: AtlasStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = toy.read_table("quantile_samples").to_pandas()
    words = toy.read_table("caption_words").to_pandas()
    feature_id = int(words["feature_id"].value_counts().index[0])  # a feature with caption words
    mine = samples[samples.feature_id == feature_id]
    monkeypatch.setenv("ATLAS_DIR", str(toy.root))
    app = AppTest.from_file(str(APP), default_timeout=120).run()
    app.query_params["feature"] = str(feature_id)
    app.switch_page("views/feature.py").run()
    assert not app.exception, [e.value for e in app.exception]

    (bins,) = [m.value for m in app.markdown if 'data-strip="bin-' in m.value]  # every bin in one element
    assert re.findall(r'data-strip="bin-(\d+)"', bins) == [str(b) for b in sorted(mine.bin.unique(), reverse=True)]
    for b, rows in mine.groupby("bin"):  # each bin's eight strongest images linked
        want = rows.sort_values(["value", "image_id"], ascending=[False, True]).image_id.head(8).tolist()
        assert shown(app, f"bin-{b}") == want, b
    assert len(mine.bin.unique()) == 5 and mine.value.min() < mine.value.max()

    table = next(df.value for df in app.dataframe if "lift" in df.value.columns)
    expected = words[words.feature_id == feature_id].sort_values(
        ["lift", "images", "word"], ascending=[False, False, True]
    )
    assert table["word"].tolist() == expected["word"].tolist()

    label = toy.read_table("labels").to_pandas().query(f"feature_id == {feature_id} and rank == 1").word.iloc[0]
    links = [(p.proto.page, p.proto.query_string) for p in app.get("page_link")]
    assert ("search", "q=" + label.replace(" ", "+")) in links
