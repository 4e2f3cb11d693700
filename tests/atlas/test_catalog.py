"""`atlas sql` is read-only and bounded: a tiny atlas, queried through atlas.catalog."""

import subprocess
import sys
import tempfile
import time

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from repo import ROOT

from atlas.catalog import SqlLimits, build_catalog, connect, query, run_read_only, still_running
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


# ---- bounds: memory, time, spilling ----------------------------------------------------------------------
BOMB = "SELECT max(l[1]) FROM (SELECT list(x) l FROM range(600000000) t(x))"  # 10 GB RSS before the limits
# One huge list built by a scalar function, folded by the planner: outside DuckDB's memory accounting and
# deaf to interrupts (100 s and 15 GB before the process cap).
SCALAR_BOMB = "SELECT list_sort(list_reverse(range(100000000)))[1] AS a"
SLOW = "SELECT count(*) FROM range(1000000000000) t(x) WHERE x % 7 = 3"  # little memory, hours of work
# Child that runs `atlas sql` and prints its peak RSS: a fresh process, so no other child's peak counts.
_PEAK = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """An atlas that has embedded (with one skipped file) but was never indexed: no atlas.duckdb."""
    s = AtlasStore(tmp_path_factory.mktemp("bare"))
    s.write_part(
        "embeddings",
        "part-00000",
        table_from_rows("embeddings", {"image_id": [1, 2], "embedding": [[1, 0], [0, 1]]}, 2),
    )
    errors = {"stage": ["embed"], "source": ["broken.png"], "error": ["truncated file"]}
    s.write_part("errors", "embed-00000", table_from_rows("errors", errors, 2))
    s.update_manifest(lambda m: m.setdefault("config", {}).update({"sql": {"memory_limit": "256MB"}}))
    assert not s.catalog_path.exists()
    return s


def _atlas_sql(store, sql, *args):
    """`atlas sql` in a child process: (exit status, stderr, seconds, peak RSS in MB)."""
    cmd = [sys.executable, "-m", "jobs.cli", "sql", "--atlas", str(store.root), *args, sql]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK, *cmd], capture_output=True, text=True, cwd=ROOT, timeout=120)
    seconds = time.perf_counter() - t0
    *out, peak_kb = proc.stdout.strip().splitlines()
    return proc.returncode, proc.stderr.strip(), seconds, int(peak_kb) / 1024, "\n".join(out)


@pytest.mark.parametrize("sql", [BOMB, SCALAR_BOMB], ids=["aggregate", "scalar"])
def test_a_memory_bomb_stops_at_the_memory_limit_and_the_process_stays_small(bare, sql):
    rc, err, seconds, peak_mb, _ = _atlas_sql(bare, sql, "--timeout", "20")  # the recorded sql.memory_limit: 256MB
    assert err == "error: SQL: stopped at the memory limit of 256 MB (sql.memory_limit)"
    assert rc == 2
    assert peak_mb < 1000, f"peak RSS {peak_mb:.0f} MB"  # 256 MB for DuckDB, ~150 MB of Python and libraries
    assert seconds < 15
    print(f"{sql}: peak RSS {peak_mb:.0f} MB, {seconds:.1f} s")


def test_atlas_sql_works_before_the_index_stage(bare):
    rc, err, _, _, out = _atlas_sql(bare, "SELECT stage, source, error FROM errors", "--format", "csv")
    assert (rc, err) == (0, "")
    assert out.splitlines() == ["stage,source,error", "embed,broken.png,truncated file"]
    assert query(bare, "SELECT count(*) AS n FROM features").column("n").to_pylist() == [0]  # no parts: empty
    assert not bare.catalog_path.exists()


def test_no_embeddings_is_still_a_one_line_error(tmp_path):
    empty = AtlasStore(tmp_path)
    empty.update_manifest(lambda m: None)
    with pytest.raises(AtlasError, match="no embeddings yet"):
        query(empty, "SELECT 1")


def _wait_for_background():
    t0 = time.perf_counter()
    while still_running():
        assert time.perf_counter() - t0 < 120
        time.sleep(0.1)


@pytest.mark.parametrize(
    "sql", [SLOW, "SELECT list_sort(list_reverse(range(5000000)))[1] AS a"], ids=["interruptible", "deaf"]
)
def test_a_slow_query_stops_within_a_second_of_its_time_limit(store, sql):
    t0 = time.perf_counter()
    with pytest.raises(AtlasError, match=r"^SQL: stopped at the time limit of 1 s"):
        query(store, sql, timeout=1.0)
    assert time.perf_counter() - t0 < 2.0
    _wait_for_background()  # the deaf one finishes in its thread, then closes its connection
    assert query(store, "SELECT count(*) AS n FROM features").column("n").to_pylist() == [50]


def test_an_interrupt_does_not_leak_into_the_next_query_on_a_kept_connection(store):
    con = connect(store)
    try:
        with pytest.raises(AtlasError, match="time limit"):
            run_read_only(con, SLOW, timeout=0.3)
        assert run_read_only(con, "SELECT count(*) AS n FROM features").column("n").to_pylist() == [50]
    finally:
        con.close()


SORT = "SELECT count(*) AS n FROM (SELECT x, x::VARCHAR AS s FROM range({n}) t(x) ORDER BY x DESC)"


def test_spilling_stays_in_a_folder_of_its_own_and_within_its_bound(store, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = sorted(p.name for p in store.root.rglob("*"))
    spills = SqlLimits(memory="64MB", max_temp="1GB")
    con = connect(store, spills)
    try:  # more than 64 MB to sort: it spills, to our folder, and finishes
        assert run_read_only(con, SORT.format(n=10_000_000), limits=spills).column("n").to_pylist() == [10_000_000]
        assert [p.name[:10] for p in tmp_path.iterdir()] == ["atlas-sql-"]
    finally:
        con.close()
    assert list(tmp_path.iterdir()) == []  # removed with the connection
    for limits, message in [
        (
            SqlLimits(memory="64MB", max_temp="32MB"),
            "SQL: stopped at the spill limit of 32 MB on disk (sql.max_temp_size)",
        ),
        (SqlLimits(memory="64MB", max_temp="0"), "SQL: stopped at the memory limit of 64 MB (sql.memory_limit)"),
    ]:
        con = connect(store, limits)
        try:
            with pytest.raises(AtlasError) as e:
                run_read_only(con, SORT.format(n=30_000_000), limits=limits)
            assert str(e.value) == message
        finally:
            con.close()
    assert list(tmp_path.iterdir()) == []
    assert sorted(p.name for p in store.root.rglob("*")) == before


def test_limits_are_locked(store):
    con = connect(store, SqlLimits(memory="64MB", threads=1))
    try:
        for sql in ["SET memory_limit = '10GB'", "RESET threads", "PRAGMA threads = 8"]:
            with pytest.raises(AtlasError, match="only read-only"):
                run_read_only(con, sql)
        with pytest.raises(duckdb.Error):
            con.execute("SET memory_limit = '10GB'")  # not even through the raw connection
        settings_now = con.execute("SELECT current_setting('memory_limit'), current_setting('threads')").fetchall()
        assert settings_now == [("61.0 MiB", 1)]
    finally:
        con.close()


# ---- statement classification ----------------------------------------------------------------------------
KEYWORDS = [
    "INSERT INTO features", "COPY features TO", "COPY (SELECT 1) TO", "ATTACH", "DETACH", "INSTALL", "FORCE INSTALL",
    "LOAD", "PRAGMA", "SET", "SET GLOBAL", "RESET", "CREATE TABLE t AS", "CREATE OR REPLACE VIEW features AS",
    "CREATE SECRET", "CREATE MACRO m() AS", "DROP VIEW", "EXPORT DATABASE", "IMPORT DATABASE", "CALL",
    "UPDATE features SET", "DELETE FROM features", "CHECKPOINT", "VACUUM", "USE", "BEGIN", "COMMIT", "SELECT",
    "EXPLAIN", "WITH x AS (SELECT 1)", "SUMMARIZE", "DESCRIBE", "FROM", "PIVOT",
]  # fmt: skip


@pytest.fixture(scope="module")
def kept(store):
    con = connect(store, SqlLimits(memory="256MB", threads=1))
    yield con
    con.close()


def _tails(root):
    inside = [f"'{root}/out.csv'", f"'{root}/x.duckdb'", "'out.parquet'", "'/tmp/atlas-hyp.csv'", "'httpfs'"]
    return st.one_of(st.sampled_from(inside), st.text(alphabet=" ;'\"()*,.=0123456789abcxyz/_-", max_size=30))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_text_is_a_result_or_one_atlas_error_and_nothing_else_runs(store, kept, data):
    statement = st.builds(lambda k, t: f"{k} {t}", st.sampled_from(KEYWORDS), _tails(store.root))
    script = data.draw(st.lists(st.one_of(statement, st.text(max_size=40)), min_size=1, max_size=3).map(";".join))
    before = sorted(p.name for p in store.root.rglob("*"))
    try:
        run_read_only(kept, script, limit=10, timeout=2.0, limits=SqlLimits(memory="256MB", threads=1))
    except AtlasError as e:
        assert "\n" not in str(e)
    assert sorted(p.name for p in store.root.rglob("*")) == before
    assert run_read_only(kept, "SELECT count(*) AS n FROM features").column("n").to_pylist() == [50]
    limits = run_read_only(kept, "SELECT current_setting('memory_limit') AS m, current_setting('threads') AS t")
    assert limits.to_pylist() == [{"m": "244.1 MiB", "t": 1}]
