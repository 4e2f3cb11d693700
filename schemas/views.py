"""The DuckDB catalog: one view per table, reading the table's Parquet parts by a path relative to the atlas.

Paths are relative so that an atlas can be moved or mounted elsewhere: open the catalog with
`SET file_search_path = '<atlas>'` (what `atlas.catalog.connect` does), or run `duckdb atlas.duckdb` from
inside the atlas directory.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.tables import TABLES

_DUCKDB_TYPES = {
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.string(): "VARCHAR",
    pa.binary(): "BLOB",
}


def duckdb_type(t: pa.DataType) -> str:
    """The DuckDB type of an Arrow type used in the atlas schemas."""
    if pa.types.is_fixed_size_list(t):
        return f"{duckdb_type(t.value_type)}[{t.list_size}]"
    if pa.types.is_list(t):
        return f"{duckdb_type(t.value_type)}[]"
    if pa.types.is_struct(t):
        inner = ", ".join(f"{f.name} {duckdb_type(f.type)}" for f in t)
        return f"STRUCT({inner})"
    return _DUCKDB_TYPES[t]


# Columns a view fills from another view when the table's own value is null: (table, column) ->
# (other view, its column, join key, condition). The `features` view takes each feature's label from the
# `labels` table (rank 1), which the index stage writes after `features` exists; `labels` comes before
# `features` in TABLES, so its view is defined first.
FILLED_FROM = {("features", "label"): ("labels", "word", "feature_id", "rank = 1")}


def view_sql(name: str, schema: pa.Schema, has_parts: bool, root: str = "", files: list[str] | None = None) -> str:
    """CREATE VIEW for one table, reading `<root><folder>/*.parquet` (root "" = relative to the atlas), or
    exactly the part `files` when given (a committed snapshot). Vector columns are cast to fixed-size arrays
    so that `array_cosine_similarity` works; a table with no parts yet is an empty view with the same columns."""
    if files is not None:
        has_parts = bool(files)
    if has_parts:
        if files is not None:
            source = "read_parquet([" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "])"
        else:
            glob = f"{root}{TABLES[name].folder}/*.parquet".replace("'", "''")
            source = f"read_parquet('{glob}')"
        cols = [f'CAST(t."{f.name}" AS {duckdb_type(f.type)}) AS "{f.name}"' for f in schema]
    else:
        source = "(SELECT 1 WHERE false)"
        cols = [f'CAST(NULL AS {duckdb_type(f.type)}) AS "{f.name}"' for f in schema]
    joins = []
    for i, f in enumerate(schema):
        filled = FILLED_FROM.get((name, f.name))
        if filled is None:
            continue
        other, other_col, key, condition = filled
        alias = f"j{i}"
        own = f't."{f.name}"' if has_parts else "NULL"
        cols[i] = f'CAST(coalesce({own}, {alias}."{other_col}") AS {duckdb_type(f.type)}) AS "{f.name}"'
        key_expr = f't."{key}"' if has_parts else "NULL"
        joins.append(f'LEFT JOIN {other} {alias} ON {alias}."{key}" = {key_expr} AND {alias}.{condition}')
    sql = f"CREATE OR REPLACE VIEW {name} AS SELECT {', '.join(cols)} FROM {source} t"
    return " ".join([sql, *joins]) if joins else (sql if has_parts else sql + " WHERE false")
