"""The DuckDB catalog (`atlas.duckdb`): a view per table, and read-only SQL over it.

`build_catalog` writes the database file atomically (a temporary file, then a rename), with paths relative
to the atlas, for people who open it with DuckDB themselves (`cd <atlas> && duckdb atlas.duckdb`).
`connect` gives the same views over absolute paths in a locked, in-memory connection. `query` runs one
read-only statement with a row limit and a time limit: anything that is not a plain query is refused, the
connection cannot read or write files outside the atlas, and a query still running at the time limit is
interrupted (`DuckDBPyConnection.interrupt` from a timer thread).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from atlas.errors import AtlasError
from atlas.store import AtlasStore
from schemas import TABLES
from schemas.views import view_sql


def build_catalog(store: AtlasStore, dim: int) -> list[str]:
    """(Re)write `atlas.duckdb` with one view per table; returns the view names."""
    fd, tmp = tempfile.mkstemp(dir=store.root, prefix=".atlas.", suffix=".duckdb.tmp")
    os.close(fd)
    os.unlink(tmp)  # DuckDB wants to create the file itself
    try:
        con = duckdb.connect(tmp)
        con.execute(f"SET file_search_path = {_literal(str(store.root))}")
        for name, spec in TABLES.items():
            con.execute(view_sql(name, spec.schema(dim), has_parts=bool(store.parts(name))))
        con.close()
        os.replace(tmp, store.catalog_path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        Path(tmp + ".wal").unlink(missing_ok=True)
    return list(TABLES)


def connect(store: AtlasStore) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the catalog's views over this atlas (absolute paths), locked so that it
    cannot reach files outside the atlas. The views read the part files that the manifest lists as
    committed when the connection opens: a consistent snapshot, even while a build rewrites a table."""
    return connect_snapshot(store)[0]


def connect_snapshot(store: AtlasStore) -> tuple[duckdb.DuckDBPyConnection, int]:
    """`connect`, and the manifest's tables_version the views were built from (see `snapshot_changed`)."""
    if not store.catalog_path.exists():
        raise AtlasError(f"{store.root}: no catalog yet (run `atlas index --atlas {store.root}` or `atlas build`)")
    version, files = store.snapshot()
    if not files["embeddings"]:
        raise AtlasError(f"{store.root}: no embeddings yet (run `atlas embed` or `atlas build`)")
    dim = pq.read_schema(files["embeddings"][0]).field("embedding").type.list_size
    con = duckdb.connect()
    for name, spec in TABLES.items():
        con.execute(view_sql(name, spec.schema(dim), has_parts=False, files=[str(f) for f in files[name]]))
    con.execute(f"SET allowed_directories = [{_literal(str(store.root) + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con, version


def snapshot_changed(store: AtlasStore, version: int) -> bool:
    """Whether the committed tables changed since a connection's snapshot was taken (then a query that
    ran meanwhile may have read a file of the next snapshot: run it again)."""
    return store.snapshot()[0] != version


_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
DEFAULT_TIMEOUT_S = 30.0


def query(store: AtlasStore, sql: str, limit: int = 1000, timeout: float = DEFAULT_TIMEOUT_S) -> pa.Table:
    """Run one read-only SQL statement over the atlas; at most `limit` rows come back, and a statement still
    running after `timeout` seconds is stopped with an AtlasError that names the limit. The statement sees
    one committed snapshot of the tables: when a build committed new parts while it ran, it runs again."""
    for attempt in range(_SNAPSHOT_ATTEMPTS):
        con, version = connect_snapshot(store)
        try:
            result = run_read_only(con, sql, limit, timeout)
        except AtlasError:
            if attempt + 1 < _SNAPSHOT_ATTEMPTS and snapshot_changed(store, version):
                continue  # a retired part it was reading was removed: take the new snapshot
            raise
        finally:
            con.close()
        if not snapshot_changed(store, version):
            return result
    raise AtlasError("SQL: the atlas kept changing under the query (a build is committing); try again")


_SNAPSHOT_ATTEMPTS = 5


def run_read_only(
    con: duckdb.DuckDBPyConnection, sql: str, limit: int = 1000, timeout: float = DEFAULT_TIMEOUT_S
) -> pa.Table:
    """`query` on a connection from `connect` (the viewer keeps one open); the caller serialises its use."""
    if limit < 1:
        raise AtlasError(f"SQL: the row limit must be at least 1 (got {limit})")
    if not timeout > 0:
        raise AtlasError(f"SQL: the time limit must be positive (got {timeout})")
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise AtlasError(f"SQL: {_first_line(e)}") from None
    if len(statements) != 1:
        raise AtlasError(f"SQL: give exactly one statement (got {len(statements)})")
    kind = statements[0].type
    if kind not in _ALLOWED:
        raise AtlasError(f"SQL: only read-only queries are allowed here (got a {kind.name} statement)")
    timer = threading.Timer(timeout, con.interrupt)
    timer.daemon = True
    timer.start()
    try:
        rel = con.sql(sql)
        if rel is None:
            raise AtlasError("SQL: the statement returned no rows")
        return rel.limit(limit).to_arrow_table()
    except duckdb.InterruptException:
        raise AtlasError(
            f"SQL: stopped at the time limit of {timeout:g} s (simplify the query or add a LIMIT)"
        ) from None
    except duckdb.Error as e:
        if "interrupt" in str(e).lower() and not timer.is_alive():
            raise AtlasError(
                f"SQL: stopped at the time limit of {timeout:g} s (simplify the query or add a LIMIT)"
            ) from None
        raise AtlasError(f"SQL: {_first_line(e)}") from None
    finally:
        timer.cancel()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
