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
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from atlas.config import SqlConfig, normal_size, parse_size
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


@dataclass(frozen=True)
class SqlLimits:
    """What one connection may use: DuckDB memory, threads, disk to spill to ("0 B" = no spilling), and the
    config key of its memory limit (named when the limit is hit). Sizes as `atlas.config.parse_size` reads them."""

    memory: str = "4 GB"
    threads: int = 2
    max_temp: str = "1 GB"
    memory_key: str = "sql.memory_limit"

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory", normal_size(self.memory))
        object.__setattr__(self, "max_temp", normal_size(self.max_temp))

    @classmethod
    def of(cls, cfg: SqlConfig, viewer: bool = False) -> SqlLimits:
        """The limits of `atlas sql` (or, with `viewer`, of the viewer's SQL page) from the [sql] section."""
        if viewer:
            return cls(cfg.viewer_memory_limit, cfg.threads, cfg.max_temp_size, "sql.viewer_memory_limit")
        return cls(cfg.memory_limit, cfg.threads, cfg.max_temp_size)

    @property
    def memory_bytes(self) -> int:
        return parse_size(self.memory)


VIEWER_LIMITS = SqlLimits.of(SqlConfig(), viewer=True)


def connect(store: AtlasStore, limits: SqlLimits = SqlLimits()) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the catalog's views over this atlas (absolute paths), locked so that it
    cannot reach files outside the atlas nor change its `limits`. The views read the part files that the
    manifest lists as committed when the connection opens: a consistent snapshot, even while a build rewrites
    a table. It needs no `atlas.duckdb`: an atlas that has embeddings can be queried before the index stage."""
    return connect_snapshot(store, limits)[0]


def connect_snapshot(store: AtlasStore, limits: SqlLimits = SqlLimits()) -> tuple[duckdb.DuckDBPyConnection, int]:
    """`connect`, and the manifest's tables_version the views were built from (see `snapshot_changed`)."""
    version, files = store.snapshot()
    if not any(files.values()):
        raise AtlasError(f"{store.root}: no embeddings yet (run `atlas embed` or `atlas build`)")
    # A folder of `atlas diff` tables alone has no embeddings: its vector tables are empty views of width 1.
    dim = pq.read_schema(files["embeddings"][0]).field("embedding").type.list_size if files["embeddings"] else 1
    con = duckdb.connect()
    for name, spec in TABLES.items():
        con.execute(view_sql(name, spec.schema(dim), has_parts=False, files=[str(f) for f in files[name]]))
    _bound(con, limits)
    # Part files are immutable once committed: their footers can be kept, so a query by key that prunes
    # hundreds of parts (icons at 80k features) stops re-reading every footer.
    con.execute("SET parquet_metadata_cache = true")
    con.execute(f"SET allowed_directories = [{_literal(str(store.root) + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con, version


def _bound(con: duckdb.DuckDBPyConnection, limits: SqlLimits) -> None:
    """Memory, threads and spilling of a connection. It spills (at most `max_temp`) to a folder of its own
    that DuckDB creates on the first spill and removes when the connection closes."""
    con.execute(f"SET memory_limit = '{limits.memory_bytes}B'")
    con.execute(f"SET threads = {int(limits.threads)}")
    spill_bytes = parse_size(limits.max_temp)
    if spill_bytes == 0:
        con.execute("SET temp_directory = ''")
        return
    folder = Path(tempfile.gettempdir()) / f"atlas-sql-{uuid.uuid4().hex}"
    con.execute(f"SET temp_directory = {_literal(str(folder))}")
    con.execute(f"SET max_temp_directory_size = '{spill_bytes}B'")


def cap_process_memory(limits: SqlLimits) -> None:
    """Cap this process's data memory (RLIMIT_DATA) at what it holds now plus twice the SQL memory limit and
    512 MB: DuckDB's own limit does not count every allocation (one huge list built by a scalar function, the
    Arrow copy of a result); the kernel's does. Only for a process that does nothing else (`atlas sql`)."""
    import resource

    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return  # not Linux: DuckDB's limit only
    vm_data_kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmData:")), None)
    if vm_data_kb is None:
        return
    cap = vm_data_kb * 1024 + 2 * limits.memory_bytes + 512 * 2**20
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft == resource.RLIM_INFINITY or cap < soft:
        resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))


def snapshot_changed(store: AtlasStore, version: int) -> bool:
    """Whether the committed tables changed since a connection's snapshot was taken (then a query that
    ran meanwhile may have read a file of the next snapshot: run it again)."""
    return store.snapshot()[0] != version


_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
DEFAULT_TIMEOUT_S = 30.0


def query(
    store: AtlasStore,
    sql: str,
    limit: int = 1000,
    timeout: float = DEFAULT_TIMEOUT_S,
    limits: SqlLimits = SqlLimits(),
) -> pa.Table:
    """Run one read-only SQL statement over the atlas; at most `limit` rows come back, and a statement still
    running after `timeout` seconds, or past a memory or spill limit of `limits`, is stopped with an AtlasError
    that names the limit. The statement sees one committed snapshot of the tables: when a build committed new
    parts while it ran, it runs again."""
    for attempt in range(_SNAPSHOT_ATTEMPTS):
        con, version = connect_snapshot(store, limits)
        try:
            result = run_read_only(con, sql, limit, timeout, limits, done=con.close)
        except AtlasError:
            if attempt + 1 < _SNAPSHOT_ATTEMPTS and snapshot_changed(store, version):
                continue  # a retired part it was reading was removed: take the new snapshot
            raise
        if not snapshot_changed(store, version):
            return result
    raise AtlasError("SQL: the atlas kept changing under the query (a build is committing); try again")


_SNAPSHOT_ATTEMPTS = 5
# How long a statement may take to stop after `interrupt`. DuckDB checks for an interrupt between the chunks
# of a pipeline, not inside one step: the planner folding a constant such as list_sort(range(1e8)), or an
# aggregate's finalize building one huge list, runs to its end. Past the grace the caller gets the time-limit
# error anyway and the statement finishes in its worker thread, which then calls `done`.
_GRACE_S = 0.5
_background = threading.Semaphore(0)  # one release per statement still running past its time limit


def still_running() -> bool:
    """Whether a statement that hit its time limit is still finishing in the background (then a process
    that is about to exit should `os._exit`: DuckDB cannot be torn down under a running query)."""
    if _background.acquire(blocking=False):
        _background.release()
        return True
    return False


def run_read_only(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    limit: int = 1000,
    timeout: float = DEFAULT_TIMEOUT_S,
    limits: SqlLimits = SqlLimits(),
    done: Callable[[], object] | None = None,
) -> pa.Table:
    """`query` on a connection from `connect` (the viewer keeps one open); the caller serialises its use.
    `limits` are the connection's (for the messages). `done` is called once the statement has ended, even
    when that is after this returned at the time limit: it is where the caller closes a cursor."""
    try:
        _check(con, sql, limit, timeout)
    except BaseException:
        if done is not None:
            done()
        raise
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["table"] = _execute(con, sql, limit)
        except BaseException as e:  # noqa: BLE001 -- handed to the caller's thread
            box["error"] = e
        finally:
            if done is not None:
                done()
            with _LATE:
                box["finished"] = True
                if box.get("abandoned"):
                    _background.acquire()

    worker = threading.Thread(target=work, name="atlas-sql", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        box["interrupted"] = True
        con.interrupt()
        worker.join(_GRACE_S)
    with _LATE:
        if not box.get("finished"):
            box["abandoned"] = True
            _background.release()
            raise AtlasError(_time_message(timeout))
    if "error" in box:
        raise _user_error(box["error"], timeout, limits, bool(box.get("interrupted"))) from None
    table: pa.Table = box["table"]
    return table


_LATE = threading.Lock()


def _check(con: duckdb.DuckDBPyConnection, sql: str, limit: int, timeout: float) -> None:
    """Refuse bad limits, more than one statement, and any statement that is not a plain query."""
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


def _execute(con: duckdb.DuckDBPyConnection, sql: str, limit: int) -> pa.Table:
    rel = con.sql(sql)
    if rel is None:
        raise AtlasError("SQL: the statement returned no rows")
    return rel.limit(limit).to_arrow_table()


def _time_message(timeout: float) -> str:
    return f"SQL: stopped at the time limit of {timeout:g} s (simplify the query or add a LIMIT)"


def _user_error(e: BaseException, timeout: float, limits: SqlLimits, interrupted: bool) -> BaseException:
    """The one-line AtlasError for what a statement raised; anything that is not DuckDB's is a bug."""
    if isinstance(e, AtlasError):
        return e
    if isinstance(e, duckdb.InterruptException) or (interrupted and "interrupt" in str(e).lower()):
        return AtlasError(_time_message(timeout))
    if isinstance(e, duckdb.OutOfMemoryException) and "max_temp_directory_size" in str(e):
        return AtlasError(f"SQL: stopped at the spill limit of {limits.max_temp} on disk (sql.max_temp_size)")
    if isinstance(e, (duckdb.OutOfMemoryException, MemoryError)):
        return AtlasError(f"SQL: stopped at the memory limit of {limits.memory} ({limits.memory_key})")
    if isinstance(e, duckdb.Error):
        return AtlasError(f"SQL: {_first_line(e)}")
    return e


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
