"""Clean shutdown: stopping a long-running command stops what it started.

`atlas view` hands its process to the Streamlit server (exec), so SIGTERM to the pid a user or a supervisor
holds frees the port; a build stopped with SIGTERM shuts its local Ray down and leaves no stage "running"."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from atlas.store import AtlasStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the viewer exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the viewer did not answer on {url} within {timeout:.0f} s")


@pytest.fixture
def tiny_atlas(tmp_path: Path) -> AtlasStore:
    """An atlas with a manifest and nothing else: enough for the server to start."""
    store = AtlasStore(tmp_path / "atlas")
    store.update_manifest(lambda m: None)
    return store


def test_sigterm_to_atlas_view_frees_the_port(tiny_atlas: AtlasStore) -> None:
    port = _free_port()
    # Not its own session: the signal goes to this one pid, as `kill <pid>` from a user would.
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "view", "--atlas", str(tiny_atlas.root), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        while (_port_in_use(port) or proc.poll() is None) and time.monotonic() - t0 < 5:
            time.sleep(0.1)
        assert not _port_in_use(port), "the port is still held 5 s after SIGTERM to `atlas view`"
        assert proc.poll() is not None, "`atlas view` is still running 5 s after SIGTERM"
        left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not left, f"processes left behind: {[c.cmdline() for c in left]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ray_processes_under(pid: int) -> list[psutil.Process]:
    try:
        return [c for c in psutil.Process(pid).children(recursive=True) if c.is_running()]
    except psutil.NoSuchProcess:
        return []


def test_sigterm_to_a_build_stops_its_ray_and_records_the_stage(tmp_path: Path) -> None:
    out = tmp_path / "atlas"
    config = tmp_path / "config.toml"
    config.write_text('[data]\nsource = "builtin:shapes"\n[world]\nn_images = 600\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "build", "--config", str(config), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        manifest = out / "manifest.json"
        while time.monotonic() < deadline:  # wait until a stage runs under Ray
            assert proc.poll() is None, f"the build ended before it could be stopped: {proc.stdout.read()}"
            if manifest.exists() and "running" in manifest.read_text() and _ray_processes_under(proc.pid):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("no stage started running within 240 s")
        children = _ray_processes_under(proc.pid)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        psutil.wait_procs(children, timeout=30)
        left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not left, f"Ray processes left behind: {[' '.join(c.cmdline())[:80] for c in left]}"
        # it exits with 128 + the signal (jobs.stopping's handler, installed again after ray.init replaced it),
        # rather than dying of the signal (a negative return code) with its finally blocks skipped
        assert proc.returncode == 128 + signal.SIGTERM, output
        stages = json.loads(manifest.read_text())["stages"]
        assert all(s["status"] != "running" for s in stages.values()), stages
        assert "Traceback" not in output, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
