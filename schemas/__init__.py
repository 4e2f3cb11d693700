"""Arrow schemas of every atlas table and the DuckDB views over them: the contract between stages, viewer and SQL."""

from schemas.tables import FORMAT_VERSION, TABLES, TableSpec, embedding_type, schema_for, vector_width

__all__ = ["FORMAT_VERSION", "TABLES", "TableSpec", "embedding_type", "schema_for", "vector_width"]
