"""Ray start-up and resource choices shared by every job.

`init_ray` joins the cluster when the job runs under `ray job submit` (the job's driver gets RAY_ADDRESS) or
RAY_ADDRESS is set; otherwise it starts a private local Ray on this machine (the embedded default), even when
some other Ray instance runs here: a plain `ray.init()` would join whatever cluster `ray start` last recorded
in /tmp/ray.

Model-holding actors take `num_gpus=1` when the cluster has GPUs and the config allows CUDA, and a fraction of
a CPU otherwise (on a 2-core machine, whole-CPU actors starve Ray Data's read tasks and the pipeline deadlocks).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ray

from atlas.config import AtlasConfig


def init_ray() -> None:
    """Connect to the cluster named by RAY_ADDRESS, or start a local Ray with this machine's CPUs."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**kwargs)  # the address comes from the environment: a cluster, or the job's own
    else:
        # address="local": a new local Ray, never a cluster someone started on this machine with `ray start`
        ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows one tqdm bar per stage instead
    ctx.print_on_execution_start = False


def use_gpus(cfg: AtlasConfig) -> bool:
    if cfg.compute.device == "cpu":
        return False
    return ray.cluster_resources().get("GPU", 0) > 0


def actor_options(cfg: AtlasConfig) -> dict[str, Any]:
    """Ray resources for one model-holding actor or task."""
    if use_gpus(cfg):
        return {"num_gpus": 1, "num_cpus": cfg.compute.actor_cpus}
    return {"num_gpus": 0, "num_cpus": cfg.compute.actor_cpus}


def actor_device(cfg: AtlasConfig) -> str:
    """What the actor passes to the model loaders: cuda on a GPU actor, cpu otherwise."""
    return "cuda" if use_gpus(cfg) else "cpu"
