"""What every `atlas` command shares: the user-error wrapper, common options, opening an existing atlas,
printing a table. Command modules (`jobs/cli*.py`) import from here; `jobs/cli.py` assembles the app."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from atlas.config import AtlasConfig, config_from_dict, load_config
from atlas.errors import AtlasError
from atlas.store import AtlasStore

AtlasDir = Annotated[Path, typer.Option("--atlas", "-a", help="the atlas directory")]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config (default: the atlas's own, else the embedded default)"),
]


def user_errors(fn: Callable) -> Callable:
    """Turn user mistakes into one line on stderr and exit status 2, wherever they were raised (Ray included)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AtlasError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except Exception as e:
            cause = atlas_cause(e)
            if cause is None:
                raise
            typer.echo(f"error: {cause}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def atlas_cause(e: BaseException) -> AtlasError | None:
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, AtlasError):
            return e
        e = getattr(e, "cause", None) or e.__cause__  # RayTaskError carries the remote exception as .cause
        seen += 1
    return None


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
