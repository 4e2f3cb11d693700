"""`atlas diff` on a small atlas built through the real CLI, with known answers: the atlas against itself, against
its SAE with the features permuted (imported with `atlas import-sae`, featurized), and against an SAE in which one
feature is replaced by two whose sum it is (given as a file: its activations are computed over A's images)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from sae_edits import as_state_dict, split_one_feature
from safetensors.torch import save_file

from atlas.models.sae.autoencoder import load_sae
from atlas.toyworld import write_world

CONFIG = """
[data]
source = "{source}"
[embed]
batch_size = 50
part_size = 100
[sae]
expansion_factor = 2
epochs = 4
batch_size = 64
[featurize]
top_k = 4
[render]
steps = 2
batch_size = 8
max_features = 16
[directions]
pairs = [["red", "blue"]]
mediums = ["small"]
subjects = ["circle"]
"""


def atlas_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, timeout=900)


def run_ok(*args: str) -> str:
    proc = atlas_cli(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("diff")
    images = write_world(root / "world", 200, 32, seed=5)
    (root / "atlas.toml").write_text(CONFIG.format(source=images))
    run_ok("build", "--config", str(root / "atlas.toml"), "--out", str(root / "a"))
    return root / "a"


def matches(out: Path) -> list[dict]:
    return pq.read_table(out / "diff" / "matches").to_pylist()


def alive(atlas: Path) -> set[int]:
    t = pq.read_table(atlas / "features").to_pylist()
    return {r["feature_id"] for r in t if r["alive"]}


def test_an_atlas_matches_itself_one_to_one(built, tmp_path):
    out = run_ok("diff", str(built), str(built), "--out", str(tmp_path / "d"))
    rows = matches(tmp_path / "d")
    assert {r["kind"] for r in rows} == {"matched"}
    assert {(r["feature_a"], r["feature_b"]) for r in rows} == {(f, f) for f in alive(built)}
    assert min(r["cosine"] for r in rows) > 0.9999
    assert min(r["correlation"] for r in rows) > 0.9999
    assert "matched" in out and "wrote diff_matches" in out
    sql = run_ok("sql", "--atlas", str(tmp_path / "d"), "SELECT kind, share_a FROM diff_summary WHERE kind = 'matched'")
    assert "1.0" in sql


def test_a_permuted_import_is_matched_back_to_its_permutation(built, tmp_path):
    sae = load_sae(built / "sae")
    perm = np.random.default_rng(0).permutation(sae.cfg.n_features)
    save_file(as_state_dict(sae, perm), str(tmp_path / "perm.safetensors"))
    b = Path(shutil.copytree(built, tmp_path / "b"))
    run_ok("import-sae", str(tmp_path / "perm.safetensors"), "--atlas", str(b))
    run_ok("featurize", "--atlas", str(b))
    run_ok("diff", str(built), str(b))  # written into A itself
    rows = matches(built)
    assert {r["kind"] for r in rows} == {"matched"}
    assert {(r["feature_a"], r["feature_b"]) for r in rows} == {(int(perm[j]), j) for j in alive(b)}
    assert min(r["correlation"] for r in rows) > 0.999
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["diff"]["b"] == str(b) and manifest["diff"]["shared_images"] == 200
    q = run_ok("sql", "--atlas", str(built), "SELECT count(*) AS n FROM diff_matches WHERE feature_a <> feature_b")
    assert str(sum(1 for r in rows if r["feature_a"] != r["feature_b"])) in q


def test_a_feature_replaced_by_two_rows_that_sum_to_it_is_reported_split(built, tmp_path):
    path, k, n = split_one_feature(built, tmp_path)
    run_ok("diff", str(built), str(path), "--out", str(tmp_path / "d"))  # an SAE file: encoded over A's images
    rows = matches(tmp_path / "d")
    split = [r for r in rows if r["kind"] == "split"]
    assert {(r["feature_a"], r["feature_b"]) for r in split} == {(k, k), (k, n)}
    assert all(r["group_cosine"] > 0.999 and r["group_correlation"] > 0.999 for r in split)
    assert [r["weight"] for r in split] == pytest.approx([2**-0.5, 2**-0.5], abs=1e-3)
    others = [r for r in rows if r["kind"] != "split"]
    assert {r["kind"] for r in others} == {"matched"}
    assert {(r["feature_a"], r["feature_b"]) for r in others} == {(f, f) for f in alive(built) - {k}}


def test_the_reverse_of_a_split_is_a_merge(built, tmp_path):
    path, k, n = split_one_feature(built, tmp_path)
    b = Path(shutil.copytree(built, tmp_path / "b"))
    run_ok("import-sae", str(path), "--atlas", str(b))
    run_ok("featurize", "--atlas", str(b))
    run_ok("diff", str(b), str(built), "--out", str(tmp_path / "d"))
    merged = [r for r in matches(tmp_path / "d") if r["kind"] == "merged"]
    assert {(r["feature_a"], r["feature_b"]) for r in merged} == {(k, k), (n, k)}
    summary = {r["kind"]: r for r in pq.read_table(tmp_path / "d" / "diff" / "summary").to_pylist()}
    assert (summary["merged"]["features_a"], summary["merged"]["features_b"], summary["merged"]["groups"]) == (2, 1, 1)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing", "no such atlas or SAE"),
        (lambda tmp: _wide_sae(tmp), "reads 32-d inputs but this atlas's embeddings are 64-d"),
        (lambda tmp: (tmp / "notes.txt").write_text("x") and tmp / "notes.txt", "not a plain state dict"),
    ],
)
def test_bad_b_is_one_line_and_writes_nothing(built, tmp_path, make, message):
    proc = atlas_cli("diff", str(built), str(make(tmp_path)), "--out", str(tmp_path / "d"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d" / "diff").exists()


def _wide_sae(tmp: Path) -> Path:
    sd = {"W_enc": torch.zeros(32, 8), "b_enc": torch.zeros(8), "W_dec": torch.zeros(8, 32), "b_dec": torch.zeros(32)}
    save_file(sd, str(tmp / "wide.safetensors"))
    return tmp / "wide.safetensors"
