"""Ray start-up and resource choices shared by every job.

`init_ray` joins the cluster when the job runs under `ray job submit` (the job's driver gets RAY_ADDRESS) or
RAY_ADDRESS is set; otherwise it starts a private local Ray on this machine (the embedded default), even when
some other Ray instance runs here: a plain `ray.init()` would join whatever cluster `ray start` last recorded
in /tmp/ray.

Model-holding actors take `num_gpus=1` when the cluster has GPUs and the config allows CUDA, and a fraction of
a CPU otherwise (on a 2-core machine, whole-CPU actors starve Ray Data's read tasks and the pipeline deadlocks).
"""

from __future__ import annotations

import copyreg
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import ray
from ray.exceptions import UserCodeException

from atlas.config import AtlasConfig
from atlas.errors import AtlasError
from jobs import stopping
from jobs.cli_common import atlas_cause

T = TypeVar("T", bound=type)


def init_ray() -> None:
    """Connect to the cluster named by RAY_ADDRESS, or start a local Ray with this machine's CPUs."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    with stopping.held_through_ray_init():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(**kwargs)  # the address comes from the environment: a cluster, or the job's own
        else:
            # address="local": a new local Ray, never a cluster someone started on this machine with `ray start`
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows one tqdm bar per stage instead
    ctx.print_on_execution_start = False
    quiet_user_mistakes()


class _UserMistakes(logging.Filter):
    """Drops a console log record about a failure that is a user mistake (an AtlasError, however wrapped):
    the CLI reports it itself, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        raised = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return raised is None or atlas_cause(raised) is None


def quiet_user_mistakes() -> None:
    """Keep Ray Data's console logging (and its log file as it is) but not its reports of user mistakes."""
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not any(
            isinstance(f, _UserMistakes) for f in handler.filters
        ):
            handler.addFilter(_UserMistakes())


def _reduce_user_code_exception(e: UserCodeException) -> tuple[Any, ...]:
    # Ray Data raises a UDF's exception to the driver as `UserCodeException(...) from e`, and pickling drops
    # `__cause__`: keep it when it is a user mistake, so that the CLI finds it and says it in one line.
    cause = e.__cause__ if isinstance(e.__cause__, AtlasError) else None
    return _user_code_exception, (type(e), e.args, cause)


def _user_code_exception(cls: type[UserCodeException], args: tuple[Any, ...], cause: AtlasError | None) -> Exception:
    e = cls(*args)
    e.__cause__ = cause
    return e


copyreg.pickle(UserCodeException, _reduce_user_code_exception)  # in every process that imports the jobs


def errors_on_call(cls: T) -> T:
    """Make an actor class keep an AtlasError its constructor raises and raise it from each call instead.

    An actor whose constructor raises dies, and Ray prints its traceback from the worker, from the raylet
    (for every retried call to the dead actor) and from Ray Data; a call that raises is one error, carried
    to the driver, which the CLI reports as one line. The class defines its own `__init__`."""
    init = vars(cls)["__init__"]

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        self._init_error = None
        try:
            init(self, *args, **kwargs)
        except AtlasError as e:
            self._init_error = e

    setattr(cls, "__init__", __init__)  # noqa: B010 - mypy refuses assigning to a method
    for name, method in list(vars(cls).items()):
        if callable(method) and (name == "__call__" or not name.startswith("_")):
            setattr(cls, name, _raising_init_error(method))
    return cls


def _raising_init_error(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self._init_error is not None:
            raise self._init_error
        return method(self, *args, **kwargs)

    return call


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
