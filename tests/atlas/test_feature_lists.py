"""Feature lists: saved append-only as versions, read back as the latest, deleted by an empty save."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas.errors import AtlasError
from atlas.feature_lists import check_name, read_lists, save_list
from atlas.store import AtlasStore, table_from_rows

N_FEATURES = 50


@pytest.fixture
def store(tmp_path) -> AtlasStore:
    store = AtlasStore(tmp_path / "atlas")
    store.write_part("embeddings", "part-00000", table_from_rows("embeddings", {
        "image_id": [1, 2], "embedding": np.zeros((2, 4), np.float32)}, dim=4))  # fmt: skip
    store.write_part("features", "part-00000", table_from_rows("features", {
        "feature_id": np.arange(N_FEATURES), "alive": [True] * N_FEATURES, "frequency": [0.1] * N_FEATURES,
        "mean_activation": [1.0] * N_FEATURES, "max_activation": [1.0] * N_FEATURES,
        "activation_mass": [1.0] * N_FEATURES, "decoder_norm": [1.0] * N_FEATURES, "label": [None] * N_FEATURES,
    }))  # fmt: skip
    store.update_manifest(lambda m: store.record_tables(m, ["embeddings", "features"]))
    return store


def test_the_latest_version_is_the_list_and_earlier_parts_stay(store: AtlasStore) -> None:
    save_list(store, "reds", [4, 2, 4, 9], note="red things")
    save_list(store, "shapes", [1])
    save_list(store, "reds", [2, 7])
    lists = read_lists(store)
    assert {n: fl.feature_ids for n, fl in lists.items()} == {"reds": (2, 7), "shapes": (1,)}
    assert lists["reds"].note == ""
    assert len(store.parts("lists")) == 3  # append-only: every save is a part
    assert len(store.manifest()["tables"]["lists"]) == 3  # and each is committed with its checksum
    save_list(store, "reds", [])
    assert list(read_lists(store)) == ["shapes"]


def test_duplicates_keep_their_first_place(store: AtlasStore) -> None:
    assert save_list(store, "a", [3, 1, 3, 2, 1]).feature_ids == (3, 1, 2)
    assert read_lists(store)["a"].feature_ids == (3, 1, 2)


@pytest.mark.parametrize(
    "name, ids, message",
    [
        ("", [1], "list name ''"),
        ("../etc", [1], "list name '../etc'"),
        ("x" * 81, [1], "use 1-80 letters"),
        ("ok", [N_FEATURES], f"feature {N_FEATURES} is not a feature of this atlas (0..{N_FEATURES - 1})"),
        ("ok", [-1], "feature -1 is not a feature"),
    ],
)
def test_bad_names_and_features_are_refused_before_anything_is_written(
    store: AtlasStore, name: str, ids: list[int], message: str
) -> None:
    with pytest.raises(AtlasError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        save_list(store, name, ids)
    assert store.parts("lists") == []


def test_concurrent_saves_from_viewer_sessions_are_all_kept(store: AtlasStore) -> None:
    threads = [threading.Thread(target=save_list, args=(store, f"list {i}", [i])) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {n: fl.feature_ids for n, fl in read_lists(store).items()} == {f"list {i}": (i,) for i in range(8)}


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=100))
def test_a_name_is_accepted_only_if_it_matches_the_rule(name: str) -> None:
    try:
        checked = check_name(name)
    except AtlasError as e:
        assert str(e).startswith("list name ") and "\n" not in str(e)
    else:
        assert checked == name.strip() and 1 <= len(checked) <= 80 and "/" not in checked
