"""`atlas sql` is read-only and bounded: a tiny atlas, queried through atlas.catalog."""

import time

import pytest

from atlas.catalog import build_catalog, query
from atlas.errors import AtlasError
from atlas.store import AtlasStore, table_from_rows


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = AtlasStore(tmp_path_factory.mktemp("catalog"))
    s.write_part(
        "embeddings",
        "part-00000",
        table_from_rows("embeddings", {"image_id": [1, 2, 3], "embedding": [[1, 0], [0, 1], [1, 1]]}, 2),
    )
    n = 50
    s.write_part("features", "part-00000", table_from_rows("features", {
        "feature_id": list(range(n)), "alive": [f % 3 != 0 for f in range(n)], "frequency": [f / n for f in range(n)],
        "mean_activation": [1.0] * n, "max_activation": [2.0] * n, "activation_mass": [float(f) for f in range(n)],
        "decoder_norm": [1.0] * n, "label": [None] * n,
    }))  # fmt: skip
    build_catalog(s, 2)
    return s


def test_queries_see_every_table_and_vectors_are_arrays(store):
    assert query(store, "SELECT count(*) AS n FROM features WHERE alive").column("n").to_pylist() == [33]
    assert query(store, "SELECT count(*) AS n FROM icons").column("n").to_pylist() == [0]  # no parts: empty view
    cos = query(
        store, "SELECT array_cosine_similarity(embedding, [1.0, 0.0]::FLOAT[2]) AS c FROM embeddings ORDER BY image_id"
    )
    assert cos.column("c").to_pylist() == pytest.approx([1.0, 0.0, 2**-0.5])


def test_row_limit(store):
    assert query(store, "SELECT * FROM features", limit=7).num_rows == 7


@pytest.mark.parametrize(
    "sql, message",
    [
        ("DROP VIEW features", "only read-only queries"),
        ("CREATE TABLE x AS SELECT 1", "only read-only queries"),
        ("INSERT INTO features SELECT * FROM features", "only read-only queries"),
        ("UPDATE features SET label = 'x'", "only read-only queries"),
        ("DELETE FROM features", "only read-only queries"),
        ("COPY features TO '/tmp/out.csv'", "only read-only queries"),
        ("COPY (SELECT * FROM features) TO 'features.parquet' (FORMAT parquet)", "only read-only queries"),
        ("EXPORT DATABASE '/tmp/atlas-export'", "only read-only queries"),
        ("ATTACH '/tmp/other.duckdb' AS o", "only read-only queries"),
        ("DETACH memory", "only read-only queries"),
        ("INSTALL vss", "only read-only queries"),
        ("FORCE INSTALL httpfs FROM core", "only read-only queries"),
        ("LOAD httpfs", "only read-only queries"),
        ("PRAGMA enable_profiling", "only read-only queries"),
        ("CALL pragma_version()", "only read-only queries"),
        ("SET enable_external_access = true", "only read-only queries"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SELECT * FROM read_csv('/etc/passwd')", "SQL:"),
        ("SELECT * FROM read_parquet('/etc/*.parquet')", "SQL:"),
        ("SELECT * FROM read_text('/etc/hostname')", "SQL:"),
        ("SELECT * FROM glob('/etc/*')", "SQL:"),
        ("SELEC nonsense", "SQL:"),
    ],
)
def test_writes_files_and_extensions_are_refused(store, sql, message):
    with pytest.raises(AtlasError, match=message) as e:
        query(store, sql)
    assert "\n" not in str(e.value)


def test_refused_copy_leaves_no_file(store, tmp_path):
    target = store.root / "copied.csv"
    with pytest.raises(AtlasError, match="only read-only queries"):
        query(store, f"COPY features TO '{target}'")
    assert not target.exists()


def test_a_long_query_stops_at_the_time_limit(store):
    t0 = time.perf_counter()
    with pytest.raises(AtlasError, match=r"time limit of 0.5 s") as e:
        query(store, "SELECT count(*) FROM range(100000000000) a, features b", timeout=0.5)
    assert time.perf_counter() - t0 < 10
    assert "\n" not in str(e.value)
    # the next query on a fresh connection is unaffected, and a quick one finishes under the same limit
    assert query(store, "SELECT count(*) AS n FROM features", timeout=0.5).column("n").to_pylist() == [50]


def test_the_time_limit_does_not_leak_into_the_next_query_on_a_kept_connection(store):
    from atlas.catalog import connect, run_read_only

    con = connect(store)
    try:
        assert run_read_only(con, "SELECT 1 AS one", timeout=0.2).column("one").to_pylist() == [1]
        time.sleep(0.4)  # the cancelled timer never fires
        assert run_read_only(con, "SELECT count(*) AS n FROM features").column("n").to_pylist() == [50]
    finally:
        con.close()


@pytest.mark.parametrize("limit, timeout, message", [(0, 1.0, "row limit"), (10, 0.0, "time limit")])
def test_bad_limits_are_user_errors(store, limit, timeout, message):
    with pytest.raises(AtlasError, match=message):
        query(store, "SELECT 1", limit=limit, timeout=timeout)
