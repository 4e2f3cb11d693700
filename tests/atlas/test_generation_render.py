"""The render stage through Ray on a tiny atlas: every alive feature gets one icon with its parameters; a rerun
does no work; a run killed midway resumes without duplicates and redraws exactly the missing icons."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import ray
import torch
from PIL import Image

from atlas.config import AtlasConfig, RenderConfig
from atlas.models.sae.autoencoder import SAEConfig, SparseAutoencoder
from atlas.store import AtlasStore, table_from_rows
from jobs.render import run_render

N_FEATURES = 24
DEAD = {2, 9, 17, 23}


@pytest.fixture(scope="module")
def ray_local():
    # address="local": a fresh Ray for this test even when another cluster runs on the machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture()
def store(tmp_path) -> AtlasStore:
    store = AtlasStore(tmp_path / "atlas")
    torch.manual_seed(0)
    SparseAutoencoder(SAEConfig(d_in=64, n_features=N_FEATURES)).save(store.sae_dir)
    ids = list(range(N_FEATURES))
    store.write_part("features", "part-00000", table_from_rows("features", {
        "feature_id": ids, "alive": [i not in DEAD for i in ids], "frequency": [0.1] * N_FEATURES,
        "mean_activation": [1.0] * N_FEATURES, "max_activation": [2.0] * N_FEATURES,
        "activation_mass": [3.0] * N_FEATURES, "decoder_norm": [0.1] * N_FEATURES, "label": [None] * N_FEATURES,
    }))  # fmt: skip
    return store


def _cfg(**render) -> AtlasConfig:
    return AtlasConfig.model_validate({
        "models": {"clip": "builtin:random-clip", "decoder": "builtin:random-decoder"},
        "compute": {"device": "cpu"},
        "render": {"steps": 2, "size": 32, "batch_size": 4, "part_size": 5, "feature_scale": 7.5, **render},
    })  # fmt: skip


def _mtimes(store: AtlasStore) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in store.parts("icons")}


def test_render_resumes_after_a_kill_without_duplicates(store, ray_local, monkeypatch):
    cfg = _cfg(keep_error=True, negative="template")
    alive = [i for i in range(N_FEATURES) if i not in DEAD]

    first = run_render(cfg, store)
    assert first["icons_rendered"] == len(alive) and first["parts_resumed"] == 0
    icons = store.read_table("icons").sort_by("feature_id")
    assert icons.column("feature_id").to_pylist() == alive
    assert len(store.parts("icons")) == 4  # 20 alive features in parts of 5
    row = icons.slice(0, 1).to_pylist()[0]
    assert (row["feature_scale"], row["template"], row["template_scale"], row["negative"], row["keep_error"]) == (
        7.5, "gray", pytest.approx(0.2), "template", True,
    )  # fmt: skip
    assert (row["steps"], row["guidance_scale"], row["size"], row["seed"]) == (
        2,
        RenderConfig().guidance_scale,
        32,
        row["feature_id"],
    )

    # A rerun finds every part on disk: nothing is rendered, no file is rewritten.
    before = _mtimes(store)
    again = run_render(cfg, store)
    assert again["icons_rendered"] == 0 and again["parts_resumed"] == 4
    assert _mtimes(store) == before

    # A kill: two parts lost, plus the temporary file of a write that never finished; the next run is
    # interrupted after writing one part.
    lost = [store.parts("icons")[1], store.parts("icons")[3]]
    for p in lost:
        p.unlink()
    (store.table_dir("icons") / ".part-00003.abc.tmp").write_bytes(b"PAR1 half a parquet file")
    real_write = AtlasStore.write_part
    writes = []

    def write_then_die(self, table, part, data):
        if writes:
            raise KeyboardInterrupt  # the job is killed after its first part
        writes.append(part)
        return real_write(self, table, part, data)

    monkeypatch.setattr(AtlasStore, "write_part", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_render(cfg, store)
    monkeypatch.setattr(AtlasStore, "write_part", real_write)
    assert len(store.parts("icons")) == 3

    resumed = run_render(cfg, store)
    assert resumed["icons_rendered"] == 5 and resumed["parts_resumed"] == 3
    after = store.read_table("icons").sort_by("feature_id")
    ids = after.column("feature_id").to_pylist()
    assert ids == alive and len(ids) == len(set(ids))  # every alive feature once
    untouched = {p.name for p in store.parts("icons")} - {p.name for p in lost}
    assert all(_mtimes(store)[n] == before[n] for n in untouched)
    # fixed seeds per feature, and a part's features always drawn in the same pipeline calls: the redrawn
    # icons are exactly the first ones
    for new, old in zip(after.column("image").to_pylist(), icons.column("image").to_pylist(), strict=True):
        assert np.array_equal(_pixels(new), _pixels(old))


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_prompt_template_is_recorded(store, ray_local):
    cfg = _cfg(template_prompt="a small red circle", max_features=3)
    summary = run_render(cfg, store)
    assert summary["rows"]["icons"] == 3
    assert set(store.read_table("icons").column("template").to_pylist()) == {"prompt:a small red circle"}
    assert os.path.basename(store.parts("icons")[0]) == "part-00000.parquet"
