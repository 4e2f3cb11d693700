"""`atlas sql` is read-only and bounded: a tiny atlas, queried through atlas.catalog."""

import pytest

from atlas.catalog import build_catalog, query
from atlas.errors import AtlasError
from atlas.store import AtlasStore, table_from_rows


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = AtlasStore(tmp_path_factory.mktemp("catalog"))
    s.write_part("embeddings", "part-00000", table_from_rows("embeddings", {"image_id": [1, 2, 3], "embedding": [[1, 0], [0, 1], [1, 1]]}, 2))
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
    cos = query(store, "SELECT array_cosine_similarity(embedding, [1.0, 0.0]::FLOAT[2]) AS c FROM embeddings ORDER BY image_id")
    assert cos.column("c").to_pylist() == pytest.approx([1.0, 0.0, 2**-0.5])


def test_row_limit(store):
    assert query(store, "SELECT * FROM features", limit=7).num_rows == 7


@pytest.mark.parametrize(
    "sql, message",
    [
        ("DROP VIEW features", "only read-only queries"),
        ("CREATE TABLE x AS SELECT 1", "only read-only queries"),
        ("INSERT INTO features SELECT * FROM features", "only read-only queries"),
        ("COPY features TO '/tmp/out.csv'", "only read-only queries"),
        ("ATTACH '/tmp/other.duckdb' AS o", "only read-only queries"),
        ("INSTALL vss", "only read-only queries"),
        ("SET enable_external_access = true", "only read-only queries"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SELECT * FROM read_csv('/etc/passwd')", "SQL:"),
        ("SELECT * FROM read_parquet('/etc/*.parquet')", "SQL:"),
        ("SELEC nonsense", "SQL:"),
    ],
)
def test_writes_files_and_extensions_are_refused(store, sql, message):
    with pytest.raises(AtlasError, match=message) as e:
        query(store, sql)
    assert "\n" not in str(e.value)
