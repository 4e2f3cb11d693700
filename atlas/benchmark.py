"""Shared parts of `atlas bench …`: where results go, what every result records, timing and memory probes.

A benchmark compares the pipeline against a bare baseline run in the same process on the same device, and
reports the ratio; absolute numbers are recorded too, with the device they were measured on.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atlas.store import atomic_write_json


def device_name(device: str = "cpu") -> str:
    """A human name for the device a figure was measured on (GPU model, or CPU model and thread count)."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    cpu = platform.processor() or platform.machine()
    return f"cpu ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_rate(fn: Callable[[], int], repeat: int = 3, warmup: int = 1) -> float:
    """Items per second of `fn` (which returns how many items it processed): the best of `repeat` runs."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / max(time.perf_counter() - t0, 1e-9))
    return max(rates)


def write_result(out_dir: Path, name: str, result: dict[str, Any], device: str = "cpu") -> Path:
    """Write `out_dir/<name>.json` atomically with the result and what it was measured on."""
    import torch

    payload = {
        "benchmark": name,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        **result,
    }
    path = Path(out_dir) / f"{name}.json"
    atomic_write_json(path, payload)
    return path
