"""The viewer's SQL page is bounded: its own connection with the viewer's memory limit, and at most
sql.viewer_max_concurrent queries at once across all sessions (the rest are answered "busy" at once)."""

from __future__ import annotations

import threading
import time

import pytest

from atlas.errors import AtlasError
from atlas.store import AtlasStore, table_from_rows
from viewer import data

SLOW = "SELECT count(*) FROM range(1000000000000) t(x) WHERE x % 7 = 3"


@pytest.fixture()
def store(tmp_path):
    s = AtlasStore(tmp_path)
    s.write_part("embeddings", "part-00000", table_from_rows("embeddings", {"image_id": [1], "embedding": [[1, 0]]}, 2))
    sql = {"viewer_memory_limit": "256MB", "viewer_max_concurrent": 1, "memory_limit": "2GB"}
    s.update_manifest(lambda m: m.setdefault("config", {}).update({"sql": sql}))
    return s


def _setting(store: AtlasStore, name: str) -> object:
    return data.run_sql(store, f"SELECT current_setting('{name}') AS v", 1, 5.0)["v"].iloc[0]


def test_the_sql_page_has_its_own_connection_with_the_viewer_memory_limit(store):
    assert _setting(store, "memory_limit") == "244.1 MiB"  # 256 MB, shared by the page's cursors
    page_con, _ = data._connection(store)
    pages = page_con.execute("SELECT current_setting('memory_limit')").fetchall()
    assert pages == [("1.8 GiB",)]  # the other pages' queries keep sql.memory_limit
    assert data.SQL_SLOTS.running == 0


def test_with_the_cap_held_another_query_is_busy_at_once(store):
    outcome: dict[str, BaseException] = {}

    def slow() -> None:
        try:
            data.run_sql(store, SLOW, 1, 2.0)
        except AtlasError as e:
            outcome["error"] = e

    holder = threading.Thread(target=slow)
    holder.start()
    t0 = time.perf_counter()
    while data.SQL_SLOTS.running < 1:
        assert time.perf_counter() - t0 < 10
        time.sleep(0.01)
    t0 = time.perf_counter()
    with pytest.raises(AtlasError) as e:
        data.run_sql(store, "SELECT 1 AS one", 1, 5.0)
    assert time.perf_counter() - t0 < 0.2
    assert str(e.value) == "SQL: busy (1 queries running; viewer limit sql.viewer_max_concurrent), try again"
    holder.join(10)
    assert "time limit of 2 s" in str(outcome["error"])
    assert data.SQL_SLOTS.running == 0  # the slot came back: the next query runs
    assert data.run_sql(store, "SELECT 1 AS one", 1, 5.0)["one"].tolist() == [1]


def test_a_refused_statement_gives_its_slot_back(store):
    with pytest.raises(AtlasError, match="only read-only"):
        data.run_sql(store, "SET threads = 8", 1, 5.0)
    assert data.SQL_SLOTS.running == 0
