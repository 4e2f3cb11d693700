"""What every `atlas` command shares: the error reporting wrapper, common options, opening an existing atlas,
printing a table. Command modules (`jobs/cli*.py`) import from here; `jobs/cli.py` assembles the app."""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.exceptions import TyperException

from atlas.config import AtlasConfig, config_from_dict, load_config
from atlas.errors import AtlasError, StageMissing
from atlas.store import AtlasStore

AtlasDir = Annotated[Path, typer.Option("--atlas", "-a", help="the atlas directory")]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config (default: the atlas's own, else the embedded default)"),
]


def user_errors(fn: Callable) -> Callable:
    """Report what a command raises: a user mistake (AtlasError, wherever it was raised, Ray included) as one
    line on stderr and exit status 2; anything else is a bug: one line that says so and exit status 1, or the
    full traceback with --debug / ATLAS_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException):
            raise  # the command line's own exits and usage errors
        # Deliberately broad: this is the top of a command, where every failure is reported, none swallowed.
        except Exception as e:  # noqa: BLE001
            raise typer.Exit(report_failure(e)) from None

    return wrapper


def report_failure(e: BaseException) -> int:
    """Print a failure as the CLI reports it (see `user_errors`); returns the exit status."""
    cause = atlas_cause(e)
    if cause is not None:
        typer.echo(f"error: {cause}{_hint(cause)}", err=True)
        return 2
    if debug_enabled():
        traceback.print_exception(e, file=sys.stderr)
        return 1
    root = remote_cause(e)
    typer.echo(
        f"error: {type(root).__name__}: {_first_line(root)} — this is a bug, rerun with --debug "
        "(or ATLAS_DEBUG=1) for the traceback",
        err=True,
    )
    return 1


def _hint(e: AtlasError) -> str:
    """What to type about a user mistake, where the CLI knows: the command that runs a missing stage."""
    if isinstance(e, StageMissing):
        return f" (run `atlas {e.stage}` or `atlas build`)"
    return ""


_debug = False


def set_debug(on: bool) -> None:
    global _debug
    _debug = on


def debug_enabled() -> bool:
    """Whether failures that are not user mistakes print their traceback: `atlas --debug ...` or ATLAS_DEBUG=1."""
    return _debug or os.environ.get("ATLAS_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def remote_cause(e: BaseException) -> BaseException:
    """The exception a Ray task or actor raised, out of the RayTaskError(s) that carry it to the driver (as
    `.cause`; `ray.get` raises a subclass of both RayTaskError and the cause's type, whose str() is the whole
    remote traceback), and out of the ActorDiedError of an actor whose constructor raised (it holds that
    task's RayTaskError as its only argument)."""
    for _ in range(10):
        inner = getattr(e, "cause", None)
        if not isinstance(inner, BaseException) and getattr(e, "actor_init_failed", False) and e.args:
            inner = e.args[0]
        if not isinstance(inner, BaseException) or inner is e:
            break
        e = inner
    return e


def atlas_cause(e: BaseException | None) -> AtlasError | None:
    """The AtlasError that caused `e`, unwrapped from Ray's wrappers and `raise ... from` chains; None if none."""
    for _ in range(10):
        if e is None:
            return None
        e = remote_cause(e)
        if isinstance(e, AtlasError):
            return e
        e = e.__cause__
    return None


def one_line(e: BaseException) -> str:
    """A failure in one line: a user mistake's message, else the type and first line of what was raised."""
    cause = atlas_cause(e)
    if cause is not None:
        return str(cause)
    root = remote_cause(e)
    if isinstance(root, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    return f"{type(root).__name__}: {_first_line(root)}"[:500]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def config_for(store: AtlasStore, config: Path | None) -> AtlasConfig:
    if config is not None:
        return load_config(config)
    recorded = store.manifest().get("config") if store.is_atlas() else None
    return config_from_dict(recorded, f"{store.manifest_path} (recorded config)") if recorded else AtlasConfig()


def existing_atlas(atlas: Path) -> AtlasStore:
    store = AtlasStore(atlas)
    if not store.is_atlas():
        raise AtlasError(f"{atlas}: not an atlas (no manifest.json); build one with `atlas build --out {atlas}`")
    store.manifest()
    return store


def format_table(table, fmt: str) -> str:
    import pyarrow as pa

    cols = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            cols[name] = [None if v is None else f"<{len(v)} bytes>" for v in col.to_pylist()]
        else:
            cols[name] = col.to_pylist()
    if fmt == "json":
        rows = [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)] if cols else []
        return json.dumps(rows, default=str, indent=None)
    import pandas as pd

    df = pd.DataFrame(cols)
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    return df.to_string(index=False, max_colwidth=60) if len(df) else f"(no rows; columns: {', '.join(cols)})"
