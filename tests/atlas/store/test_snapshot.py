"""Readers see a consistent snapshot while a build writes the same atlas: a stage that rewrites its tables
(its config changed) keeps the old parts readable under retired names until the new ones are committed, and
`atlas sql` / the viewer's connection read the part list the manifest recorded, never a half-written stage."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from atlas.catalog import build_catalog, connect, query
from atlas.config import AtlasConfig, FeaturizeConfig
from atlas.store import AtlasStore, table_from_rows
from jobs.build import run_stage

DIM = 8
N_FEATURES_PER_PART = 5


def features_part(first: int, generation: float):
    n = N_FEATURES_PER_PART
    ids = list(range(first, first + n))
    return table_from_rows(
        "features",
        {
            "feature_id": ids, "alive": [True] * n, "frequency": [generation] * n, "mean_activation": [0.1] * n,
            "max_activation": [1.0] * n, "activation_mass": [1.0] * n, "decoder_norm": [1.0] * n, "label": [None] * n,
        },
    )  # fmt: skip


def other_tables(store: AtlasStore, generation: float) -> None:
    import pyarrow as pa

    from atlas.featurize import activations_table

    ids = pa.array([1, 2], pa.int64())
    acts = activations_table(
        ids, pa.array([[0], [1]], pa.list_(pa.int32())), pa.array([[generation], [generation]], pa.list_(pa.float32()))
    )
    store.write_part("activations", "part-00000", acts)
    top = table_from_rows("top_images", {"feature_id": [0], "rank": [1], "image_id": [1], "value": [generation]})
    store.write_part("top_images", "part-00000", top)


@pytest.fixture
def store(tmp_path):
    store = AtlasStore(tmp_path / "atlas")
    emb = np.random.default_rng(0).normal(size=(2, DIM)).astype(np.float32)
    store.write_part(
        "embeddings", "part-00000", table_from_rows("embeddings", {"image_id": [1, 2], "embedding": emb}, DIM)
    )

    def upstream_done(m):
        for name in ("embed", "train"):
            m["stages"][name] = {"status": "done", "run_id": name, "fingerprint": name}

    store.update_manifest(upstream_done)
    build_catalog(store, DIM)
    return store


def generation_seen(store: AtlasStore) -> tuple:
    row = query(store, "SELECT count(*) AS n, min(frequency) AS lo, max(frequency) AS hi FROM features").to_pylist()[0]
    return row["n"], row["lo"], row["hi"]


def test_queries_see_the_last_committed_tables_while_a_stage_rewrites_them(store):
    def write_generation(generation: float, halfway: threading.Event | None = None, go: threading.Event | None = None):
        def run():
            for i in range(3):
                store.write_part("features", f"part-{i:05d}", features_part(i * N_FEATURES_PER_PART, generation))
                if i == 0 and halfway is not None:
                    halfway.set()
                    assert go.wait(60)
            other_tables(store, generation)
            return {"rows": {"features": 3 * N_FEATURES_PER_PART}}

        return run

    say = lambda msg: None
    cfg1 = AtlasConfig()
    assert run_stage("featurize", cfg1, store, write_generation(1.0), say)
    assert generation_seen(store) == (15, 1.0, 1.0)

    # The same stage again with another config: its old outputs are retired, then rewritten part by part.
    cfg2 = cfg1.model_copy(update={"featurize": FeaturizeConfig(top_k=3)})
    halfway, go = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def rewrite():
        try:
            run_stage("featurize", cfg2, store, write_generation(2.0, halfway, go), say)
        except BaseException as e:  # surfaced below
            errors.append(e)

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        assert halfway.wait(60)
        assert len(store.parts("features")) == 1  # the new table is half written...
        assert generation_seen(store) == (15, 1.0, 1.0)  # ...but readers see the whole old one
        cli = subprocess.run(
            [sys.executable, "-m", "jobs.cli", "sql", "--atlas", str(store.root), "--format", "csv",
             "SELECT count(*) AS n, max(frequency) AS hi, (SELECT max(value) FROM activations) AS act FROM features"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.splitlines()[1] == "15,1.0,1.0"
        held = connect(store)  # a viewer's connection, opened on the old snapshot
        assert held.execute("SELECT count(*) FROM features").fetchone() == (15,)
    finally:
        go.set()
        writer.join(60)
    assert not errors, errors
    assert generation_seen(store) == (15, 2.0, 2.0)
    assert query(store, "SELECT max(value) AS v FROM activations").column("v")[0].as_py() == 2.0
    assert not list(store.root.rglob("*.retired"))  # the old snapshot is removed once the new one is committed
    assert store.stage("featurize")["status"] == "done"
    with pytest.raises(Exception):  # the held connection's files are gone: the viewer must reconnect
        held.execute("SELECT count(*) FROM features").fetchone()


def test_a_killed_rewrite_keeps_the_old_snapshot_until_the_rerun_commits(store):
    say = lambda msg: None

    def generation(g: float, fail_after: int | None = None):
        def run():
            for i in range(3):
                if fail_after is not None and i == fail_after:
                    raise KeyboardInterrupt  # the driver dies midway
                store.write_part("features", f"part-{i:05d}", features_part(i * N_FEATURES_PER_PART, g))
            other_tables(store, g)
            return {"rows": {}}

        return run

    cfg1 = AtlasConfig()
    run_stage("featurize", cfg1, store, generation(1.0), say)
    cfg2 = cfg1.model_copy(update={"featurize": FeaturizeConfig(top_k=3)})
    with pytest.raises(KeyboardInterrupt):
        run_stage("featurize", cfg2, store, generation(2.0, fail_after=2), say)
    record = store.stage("featurize")
    assert record["status"] == "failed" and record["error"] == "interrupted (KeyboardInterrupt)", record
    assert generation_seen(store) == (15, 1.0, 1.0)
    run_stage("featurize", cfg2, store, generation(2.0), say)  # the rerun: same fingerprint, resumes
    assert generation_seen(store) == (15, 2.0, 2.0)
    assert not list(store.root.rglob("*.retired"))
