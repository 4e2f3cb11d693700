"""Data access for the viewer: which atlas to show, and the few queries its pages run over the catalog.

One locked DuckDB connection per atlas (`atlas.catalog.connect`) is kept with `st.cache_resource`, and
query results with `st.cache_data`. Both are keyed on the atlas path and the catalog's modification time,
so a rebuilt atlas is picked up without restarting the viewer.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from atlas.catalog import connect
from atlas.errors import AtlasError
from atlas.store import AtlasStore
from schemas import TABLES

# Grid sort orders: label -> ORDER BY clause (never built from user text).
SORTS = {
    "frequency": "f.frequency DESC, f.feature_id",
    "activation_mass": "f.activation_mass DESC, f.feature_id",
    "max_activation": "f.max_activation DESC, f.feature_id",
    "feature_id": "f.feature_id",
}


def atlas_dir(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """The atlas directory from `--atlas DIR` in `argv`, else from `$ATLAS_DIR`, else None."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--atlas")
    args, _ = parser.parse_known_args(list(argv))
    return args.atlas or environ.get("ATLAS_DIR") or None


def current_store() -> AtlasStore:
    """The atlas this viewer was started on; AtlasError (one line) if none was given or it is not an atlas."""
    path = atlas_dir(sys.argv[1:], os.environ)
    if path is None:
        raise AtlasError("no atlas given: run `streamlit run viewer/app.py -- --atlas DIR` or set ATLAS_DIR")
    store = AtlasStore(path)
    if not store.is_atlas():
        raise AtlasError(f"{store.root} is not an atlas (no manifest.json): build one with `atlas build`")
    return store


def _store_key(store: AtlasStore) -> tuple[str, int]:
    try:
        mtime = store.catalog_path.stat().st_mtime_ns
    except FileNotFoundError:
        mtime = -1
    return str(store.root), mtime


_HASH = {AtlasStore: _store_key}


@st.cache_resource(hash_funcs=_HASH, show_spinner=False)
def _connection(store: AtlasStore) -> tuple[Any, threading.Lock]:
    """The catalog connection and the lock that serialises its use across sessions (threads)."""
    return connect(store), threading.Lock()


def _sql(store: AtlasStore, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
    con, lock = _connection(store)
    with lock:
        return con.execute(sql, list(params)).df()


def _as_bytes(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """DuckDB returns BLOBs as bytearray; Streamlit's st.image wants bytes."""
    frame[column] = [None if pd.isna(b) else bytes(b) for b in frame[column]]
    return frame


# ---- home ------------------------------------------------------------------------------------------------
def row_counts(store: AtlasStore) -> pd.DataFrame:
    """Rows and part files of every table (read from the Parquet footers, so always current)."""
    rows = [(name, store.count_rows(name), len(store.parts(name))) for name in TABLES]
    return pd.DataFrame(rows, columns=["table", "rows", "parts"])


def stages(manifest: Mapping[str, Any]) -> pd.DataFrame:
    """One row per stage of the manifest, in the order they ran."""
    rows = [
        {"stage": name, "status": info.get("status"), "seconds": info.get("seconds"), "finished": info.get("finished")}
        for name, info in manifest.get("stages", {}).items()
    ]
    frame = pd.DataFrame(rows, columns=["stage", "status", "seconds", "finished"])
    return frame.sort_values("finished", na_position="last", kind="stable").reset_index(drop=True)


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def train_curve(store: AtlasStore) -> pd.DataFrame:
    """The SAE training curve (split = 'train'): step, explained_variance, l0, mse."""
    return _sql(
        store, "SELECT step, explained_variance, l0, mse FROM train_log WHERE split = 'train' ORDER BY step"
    )


# ---- features --------------------------------------------------------------------------------------------
@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def feature_count(store: AtlasStore, alive_only: bool = False) -> int:
    """Number of features (only the alive ones if `alive_only`)."""
    where = "WHERE alive" if alive_only else ""
    return int(_sql(store, f"SELECT count(*) AS n FROM features {where}")["n"].iloc[0])


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def feature_page(store: AtlasStore, sort: str, alive_only: bool, limit: int, offset: int) -> pd.DataFrame:
    """One page of features with their icon (null for features without one), ordered by `sort` (a SORTS key)."""
    where = "WHERE f.alive" if alive_only else ""
    frame = _sql(
        store,
        f"""SELECT f.feature_id, f.alive, f.frequency, f.activation_mass, f.max_activation, i.image AS icon
            FROM features f LEFT JOIN icons i USING (feature_id)
            {where} ORDER BY {SORTS[sort]} LIMIT ? OFFSET ?""",
        [limit, offset],
    )
    return _as_bytes(frame, "icon")


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def first_alive_feature(store: AtlasStore) -> int:
    """The smallest alive feature id (0 if none is alive)."""
    value = _sql(store, "SELECT min(feature_id) AS f FROM features WHERE alive")["f"].iloc[0]
    return 0 if pd.isna(value) else int(value)


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def feature(store: AtlasStore, feature_id: int) -> dict[str, Any] | None:
    """The `features` row of one feature with its icon columns (icon, fidelity_rank, ...), or None."""
    frame = _sql(
        store,
        """SELECT f.*, i.image AS icon, i.fidelity_rank, i.feature_scale, i.seed, i.steps
           FROM features f LEFT JOIN icons i USING (feature_id) WHERE f.feature_id = ?""",
        [feature_id],
    )
    if frame.empty:
        return None
    row = _as_bytes(frame, "icon").iloc[0].to_dict()
    return {k: None if pd.isna(v) else v for k, v in row.items()}  # SQL NULLs as None


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def top_images(store: AtlasStore, feature_id: int) -> pd.DataFrame:
    """The top images of one feature, by rank: rank, image_id, value, caption, source, thumbnail."""
    frame = _sql(
        store,
        """SELECT t.rank, t.image_id, t.value, im.caption, im.source, im.thumbnail
           FROM top_images t JOIN images im USING (image_id)
           WHERE t.feature_id = ? ORDER BY t.rank""",
        [feature_id],
    )
    return _as_bytes(frame, "thumbnail")
