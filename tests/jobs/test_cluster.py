"""A real multi-node Ray cluster on this machine: a head and worker nodes started with `ray start` (separate
processes, their own resources), `atlas build` submitted with `ray job submit`, then faults: a worker node
killed in the middle of embed and again in the middle of render, and the job's driver killed midway and the
job submitted again. Every run must end with every image and every icon exactly once, and the same tables
as an uninterrupted run.

The head has no CPUs, so every Ray task and actor runs on a worker node; a killed node is replaced by a fresh
one (what the autoscaler does on a real cluster). Every process a test starts is stopped by the fixture,
process group by process group (never `ray stop`, which would stop other Ray instances on the machine).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from repo import ROOT

from atlas.store import AtlasStore
from atlas.toyworld import write_world

pytestmark = pytest.mark.cluster

BIN = Path(sys.executable).parent
N_IMAGES = 240
EMBED_PART = 4  # many small parts: embed commits over seconds, so a node can be killed while parts are in flight
STARTUP_S = 90
JOB_S = 420
# The head notices a dead node after about period x threshold; the defaults (3 s x 5 after a 5 s delay) only
# slow the test down.
FAST_HEALTH = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "1000",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRayCluster:
    """A head node and worker nodes, each a `ray start --block` process group of its own."""

    def __init__(self, work: Path):
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: unix socket paths are limited
        self.logs = work / "ray-logs"
        self.logs.mkdir()
        self.env = {
            **os.environ,
            **FAST_HEALTH,
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "HF_HUB_OFFLINE": "1",
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.gcs_port = _free_port()
        self.dashboard_port = _free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.nodes: dict[str, subprocess.Popen] = {}

    def _ports(self) -> list[str]:
        return [
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
        ]

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "w")
        self.nodes[name] = subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", f"--temp-dir={self.temp_dir}", *args, *self._ports()],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: raylet, workers and all, killed together
        )

    def start_head(self) -> None:
        self._start(
            "head",
            [
                "--head",
                f"--port={self.gcs_port}",
                "--num-cpus=0",  # the driver lives here; every task and actor goes to a worker node
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={_free_port()}",
            ],
        )
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.address}/api/version", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"the Ray head did not answer within {STARTUP_S}s:\n{self.log('head')}")

    def add_worker(self, name: str, attempts: int = 3) -> None:
        """Start a worker node and wait until `ray start` reports it up. On a loaded machine a raylet can miss
        `ray start`'s fixed 30 s registration window, and that node then exits: start it again."""
        for _attempt in range(attempts):
            self._start(name, [f"--address=127.0.0.1:{self.gcs_port}", "--num-cpus=2"])
            proc = self.nodes[name]
            self.wait_for(
                lambda p=proc: p.poll() is not None or "Ray runtime started" in self.log(name),
                f"worker {name} to start",
            )
            if proc.poll() is None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        raise RuntimeError(f"worker {name} did not start in {attempts} attempts:\n{self.log(name)}")

    def kill(self, name: str) -> None:
        """The abrupt loss of a node: SIGKILL to its raylet, its workers and everything else it started."""
        os.killpg(self.nodes[name].pid, signal.SIGKILL)
        self.nodes[name].wait(timeout=30)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def wait_for(self, condition, what: str, timeout: float = STARTUP_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise TimeoutError(f"waited {timeout}s for {what}")

    # ---- jobs ----------------------------------------------------------------------------------
    def ray(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "ray"), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def submit(self, *entrypoint: str) -> str:
        submission = f"atlas-{os.urandom(4).hex()}"
        proc = self.ray(
            "job", "submit", "--address", self.address, "--submission-id", submission, "--no-wait", "--", *entrypoint
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return submission

    def job(self, submission: str) -> dict:
        with urllib.request.urlopen(f"{self.address}/api/jobs/{submission}", timeout=10) as r:
            return json.load(r)

    def wait_job(self, submission: str, timeout: float = JOB_S) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job(submission)
            if info["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
                return info
            time.sleep(1)
        self.ray("job", "stop", "--address", self.address, submission)
        raise TimeoutError(f"job {submission} still running after {timeout}s:\n{self.logs_of(submission)}")

    def logs_of(self, submission: str) -> str:
        return self.ray("job", "logs", "--address", self.address, submission).stdout

    def stop(self) -> None:
        for proc in self.nodes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.nodes.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # anything the node left behind in its group
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster")
    c = LocalRayCluster(work)
    try:
        c.start_head()
        c.add_worker("worker-1")
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cluster-data")
    images = write_world(root / "world", N_IMAGES, 32, seed=3)
    path = root / "atlas.toml"
    path.write_text(
        f"""
[data]
source = "{images}"
[compute]
device = "cpu"
[embed]
batch_size = 4
part_size = {EMBED_PART}
[sae]
expansion_factor = 2
epochs = 3
batch_size = 64
[featurize]
top_k = 4
[render]
steps = 2
batch_size = 3
part_size = 6
[directions]
pairs = [["red", "blue"]]
mediums = ["small"]
subjects = ["circle", "square"]
"""
    )
    return path


def build_command(config: Path, out: str) -> list[str]:
    return [str(BIN / "python"), "-m", "jobs.cli", "build", "--config", str(config), "--out", out]


def parts_done(out: Path, table: str) -> int:
    folder = out / table
    return len([p for p in folder.glob("*.parquet") if not p.name.startswith(".")]) if folder.is_dir() else 0


def expected_parts(n: int, size: int) -> int:
    return -(-n // size)


def tables(out: Path) -> dict[str, list[dict]]:
    """Every table's rows, sorted by their key, with float vectors as numpy arrays for comparison."""
    store = AtlasStore(out)
    keys = {
        "images": ["image_id"], "embeddings": ["image_id"], "activations": ["image_id"],
        "features": ["feature_id"], "top_images": ["feature_id", "rank"], "icons": ["feature_id"],
        "directions": ["name"], "train_log": ["step", "split"],
    }  # fmt: skip
    return {t: store.read_table(t).sort_by([(k, "ascending") for k in ks]).to_pylist() for t, ks in keys.items()}


def assert_same_tables(a: dict, b: dict) -> None:
    """Equal tables: the same rows, floats to 1e-5, icons pixel for pixel (a part's features are always drawn
    in the same pipeline calls, so a resumed render draws the very icons an uninterrupted one does)."""
    for name in a:
        assert len(a[name]) == len(b[name]), name
        for ra, rb in zip(a[name], b[name], strict=True):
            for col, va in ra.items():
                vb = rb[col]
                if name == "icons" and col == "image":
                    diff = np.abs(_pixels(va) - _pixels(vb)).max()
                    assert diff == 0, f"icon of feature {ra['feature_id']} differs by {diff} grey levels"
                elif isinstance(va, float) or (isinstance(va, list) and va and isinstance(va[0], float)):
                    np.testing.assert_allclose(va, vb, rtol=1e-5, atol=1e-6, err_msg=f"{name}.{col}")
                else:
                    assert va == vb, f"{name}.{col}: {va!r} != {vb!r}"


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.int16)


def assert_exactly_once(out: Path) -> None:
    store = AtlasStore(out)
    sources = store.read_table("images", ["source"]).column("source").to_pylist()
    assert len(sources) == N_IMAGES == len(set(sources))
    emb_ids = store.read_table("embeddings", ["image_id"]).column("image_id").to_pylist()
    assert sorted(emb_ids) == sorted(store.read_table("images", ["image_id"]).column("image_id").to_pylist())
    acts = store.read_table("activations", ["image_id", "feature_id"])
    assert len(set(zip(*acts.to_pydict().values(), strict=True))) == acts.num_rows  # no (image, feature) twice
    features = store.read_table("features", ["feature_id", "alive"]).to_pylist()
    alive = sorted(f["feature_id"] for f in features if f["alive"])
    icons = store.read_table("icons", ["feature_id"]).column("feature_id").to_pylist()
    assert sorted(icons) == alive and len(icons) == len(set(icons))
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.retired"))
    assert all(s["status"] == "done" for s in store.manifest()["stages"].values())


@pytest.fixture(scope="module")
def reference(cluster, config, tmp_path_factory) -> Path:
    """An uninterrupted build, submitted to the cluster; the atlas is written through a file:// URI."""
    out = tmp_path_factory.mktemp("ref") / "atlas"
    job = cluster.submit(*build_command(config, f"file://{out}"))
    info = cluster.wait_job(job)
    logs = cluster.logs_of(job)
    assert info["status"] == "SUCCEEDED", logs
    assert "View it with:  atlas view" in logs
    return out


def test_submitted_build_writes_a_complete_atlas(reference):
    assert_exactly_once(reference)
    store = AtlasStore(reference)
    assert pq.read_schema(store.parts("embeddings")[0]).field("embedding").type.list_size == 64
    assert (reference / "atlas.duckdb").exists() and (reference / "index" / "features.faiss").exists()
    from atlas.catalog import query

    n = query(store, "SELECT count(*) AS n FROM images JOIN embeddings USING (image_id)").column("n")[0].as_py()
    assert n == N_IMAGES


def test_losing_a_worker_node_in_embed_and_in_render(cluster, config, reference, tmp_path):
    out = tmp_path / "atlas"
    job = cluster.submit(*build_command(config, str(out)))
    n_embed = expected_parts(N_IMAGES, EMBED_PART)

    cluster.wait_for(lambda: 1 <= parts_done(out, "embeddings") < n_embed, "embed to be midway", JOB_S)
    cluster.kill("worker-1")
    embed_at_kill = parts_done(out, "embeddings")
    cluster.add_worker("worker-2")

    cluster.wait_for(lambda: parts_done(out, "icons") >= 1, "render to start committing", JOB_S)
    icon_parts = expected_parts(len(_alive(out)), 6)
    assert parts_done(out, "icons") < icon_parts, "render finished before the node could be killed"
    cluster.kill("worker-2")
    icons_at_kill = parts_done(out, "icons")
    cluster.add_worker("worker-3")

    info = cluster.wait_job(job)
    logs = cluster.logs_of(job)
    assert info["status"] == "SUCCEEDED", logs
    assert embed_at_kill < n_embed and icons_at_kill < icon_parts
    assert_exactly_once(out)
    assert_same_tables(tables(reference), tables(out))


def test_killed_driver_resubmitted_resumes_to_the_same_tables(cluster, config, reference, tmp_path):
    out = tmp_path / "atlas"
    command = build_command(config, str(out))
    first = cluster.submit(*command)
    cluster.wait_for(lambda: parts_done(out, "icons") >= 1, "render to start committing", JOB_S)
    pid = int(cluster.job(first)["driver_info"]["pid"])
    assert str(out) in Path(f"/proc/{pid}/cmdline").read_bytes().decode().replace("\0", " ")
    os.kill(pid, signal.SIGKILL)
    info = cluster.wait_job(first, timeout=120)
    assert info["status"] == "FAILED"
    store = AtlasStore(out)
    assert store.stage("render").get("status") == "running"
    committed = parts_done(out, "icons")
    assert committed < expected_parts(len(_alive(out)), 6)

    second = cluster.submit(*command)
    info = cluster.wait_job(second)
    logs = cluster.logs_of(second)
    assert info["status"] == "SUCCEEDED", logs
    for stage in ("embed", "train", "featurize"):
        assert f"{stage:<10} up to date, skipped" in logs
    assert store.stage("render")["summary"]["parts_resumed"] == committed
    assert_exactly_once(out)
    assert_same_tables(tables(reference), tables(out))


def _alive(out: Path) -> list[int]:
    store = AtlasStore(out)
    rows = store.read_table("features", ["feature_id", "alive"]).to_pylist()
    return [r["feature_id"] for r in rows if r["alive"]]


def test_ray_cluster_yaml_passes_the_launchers_own_schema():
    """`ray up` validates the config against Ray's schema before it starts anything: so do we."""
    import yaml
    from ray.autoscaler._private.util import validate_config

    cfg = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    validate_config(cfg)
    head = cfg["available_node_types"][cfg["head_node_type"]]
    workers = [t for name, t in cfg["available_node_types"].items() if name != cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and any(t["resources"].get("GPU") == 1 for t in workers)
    setup = " ".join(cfg["setup_commands"])
    assert "pip install" in setup and "/mnt/atlas" in setup
    assert any("--head" in c for c in cfg["head_start_ray_commands"])
