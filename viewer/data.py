"""Data access for the viewer: which atlas to show, and the few queries its pages run over the catalog.

Two locked DuckDB connections per atlas (`atlas.catalog.connect`) are kept with `st.cache_resource`: one for
the pages' own queries, one with the viewer's SQL limits for the SQL page. Query results are kept with
`st.cache_data`. Both are keyed on the atlas path and the catalog's modification time,
so a rebuilt atlas is picked up without restarting the viewer.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from atlas.catalog import SqlLimits, connect
from atlas.config import SqlConfig, config_from_dict
from atlas.errors import AtlasError
from atlas.part_ranges import PartRanges
from atlas.session import ModelSession
from atlas.store import AtlasStore
from schemas import TABLES
from viewer.tiles import ICONS_PATH

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
        raise AtlasError("no atlas given: run `atlas view --atlas DIR` (or set ATLAS_DIR)")
    store = AtlasStore(path)
    if not store.is_atlas():
        raise AtlasError(f"{store.root} is not an atlas (no manifest.json): build one with `atlas build`")
    return store


def _mtime_ns(path: os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return -1


_VERSIONS: dict[tuple[str, int], int] = {}  # (manifest path, its mtime) -> tables_version


def _store_key(store: AtlasStore) -> tuple[str, int, int]:
    """Cached resources are per committed snapshot: a build that commits new parts bumps tables_version (and
    the index stage rewrites atlas.duckdb), so the next page opens views over the new part files. Every
    cached call hashes its store: the manifest (which lists every part) is parsed only when it changed."""
    stamp = (str(store.manifest_path), _mtime_ns(store.manifest_path))
    version = _VERSIONS.get(stamp)
    if version is None:
        version = _VERSIONS[stamp] = int(store.manifest().get("tables_version", 0))
    return str(store.root), version, _mtime_ns(store.catalog_path)


_HASH = {AtlasStore: _store_key}


@st.cache_resource(hash_funcs=_HASH, show_spinner=False)
def sql_config(store: AtlasStore) -> SqlConfig:
    """The [sql] section of the atlas's recorded config (the defaults when it records none)."""
    recorded = store.manifest().get("config")
    return config_from_dict(recorded, f"{store.manifest_path} (recorded config)").sql if recorded else SqlConfig()


@st.cache_resource(hash_funcs=_HASH, show_spinner=False)
def _connection(store: AtlasStore) -> tuple[Any, threading.Lock]:
    """The catalog connection of the pages' own queries (limits of `atlas sql`), and a lock for making cursors
    from it across sessions (threads)."""
    return connect(store, SqlLimits.of(sql_config(store))), threading.Lock()


@st.cache_resource(hash_funcs=_HASH, show_spinner=False)
def _sql_connection(store: AtlasStore) -> tuple[Any, threading.Lock]:
    """The SQL page's connection: its own database, so that its cursors share sql.viewer_memory_limit among
    themselves and a heavy query cannot take the memory the other pages' queries need."""
    return connect(store, SqlLimits.of(sql_config(store), viewer=True)), threading.Lock()


def _cursor(store: AtlasStore) -> Any:
    """A cursor of the shared locked connection: its own DuckDB connection to the same in-memory database
    (same views, same locked settings), so sessions query in parallel instead of queueing on one lock."""
    con, lock = _connection(store)
    with lock:
        return con.cursor()


def _sql(store: AtlasStore, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
    cur = _cursor(store)
    try:
        return cur.execute(sql, list(params)).df()
    finally:
        cur.close()


@st.cache_resource(hash_funcs=_HASH, show_spinner=False)
def _parts(store: AtlasStore, table: str) -> PartRanges:
    """The feature-id range of each row group of a feature-keyed table's committed parts (its footers are
    read once per snapshot)."""
    return PartRanges.of(store.snapshot()[1][table], "feature_id")


def _of_feature(store: AtlasStore, table: str, feature_id: int, columns: list[str]) -> pd.DataFrame:
    """One feature's rows of a table written in feature order (labels, top_images, quantile_samples,
    caption_words), read from the row groups that hold it: a fraction of a millisecond where a query over
    the view costs several."""
    return _parts(store, table).read([feature_id], columns).to_pandas().reindex(columns=columns)


def _with_icons(store: AtlasStore, frame: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    """`frame` with its features' icon (PNG bytes or None) and `extra` icons columns, read by feature id
    from only the icon parts that hold them (a join with the icons view opens every part)."""
    ids = [int(i) for i in frame["feature_id"]]
    found = _parts(store, "icons").read(ids, ["image", *extra]).to_pandas()
    found = found.drop_duplicates("feature_id", keep="last").set_index("feature_id")
    out = frame.copy()
    out["icon"] = [bytes(b) if isinstance(b, (bytes, bytearray)) else None for b in found["image"].reindex(ids)]
    for col in extra:
        out[col] = found[col].reindex(ids).to_numpy()
    return out


def _thumbnails(frame: pd.DataFrame) -> pd.DataFrame:
    """The thumbnail column as bytes, a grey placeholder where an image has none (precomputed embeddings
    whose image could not be read): st.image refuses empty bytes."""
    frame["thumbnail"] = [bytes(b) if _has_bytes(b) else NO_THUMBNAIL for b in frame.thumbnail]
    return frame


def _has_bytes(b: Any) -> bool:
    return isinstance(b, (bytes, bytearray)) and len(b) > 0


def _placeholder_png(size: int = 64) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (128, 128, 128)).save(buf, format="PNG")
    return buf.getvalue()


NO_THUMBNAIL = _placeholder_png()


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
    return _sql(store, "SELECT step, explained_variance, l0, mse FROM train_log WHERE split = 'train' ORDER BY step")


# ---- features --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridFilter:
    """What the feature grid shows: every value is bound as a SQL parameter, never spliced into the text."""

    alive_only: bool = True
    min_frequency: float = 0.0
    min_mass: float = 0.0
    label: str = ""  # substring of the label (case-insensitive)

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = ["f.frequency >= ?", "f.activation_mass >= ?"], [self.min_frequency, self.min_mass]
        if self.alive_only:
            clauses.append("f.alive")
        if self.label.strip():
            clauses.append("f.label ILIKE ? ESCAPE '\\'")
            params.append("%" + _escape_like(self.label.strip()) + "%")
        return "WHERE " + " AND ".join(clauses), params


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def feature_count(store: AtlasStore, alive_only: bool = False) -> int:
    """Number of features (only the alive ones if `alive_only`)."""
    where = "WHERE alive" if alive_only else ""
    return int(_sql(store, f"SELECT count(*) AS n FROM features {where}")["n"].iloc[0])


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def filtered_count(store: AtlasStore, flt: GridFilter) -> int:
    """Number of features that pass the grid filter."""
    where, params = flt.where()
    return int(_sql(store, f"SELECT count(*) AS n FROM features f {where}", params)["n"].iloc[0])


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def feature_page(store: AtlasStore, sort: str, flt: GridFilter, limit: int, offset: int) -> pd.DataFrame:
    """One page of features with label and icon (null for features without one), ordered by `sort` (a
    SORTS key). Only this page's icons are read."""
    where, params = flt.where()
    frame = _sql(
        store,
        f"""SELECT f.feature_id, f.alive, f.frequency, f.activation_mass, f.max_activation, f.label
            FROM features f {where} ORDER BY {SORTS[sort]} LIMIT ? OFFSET ?""",
        [*params, limit, offset],
    )
    return _with_icons(store, frame)


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def first_alive_feature(store: AtlasStore) -> int:
    """The smallest alive feature id (0 if none is alive)."""
    value = _sql(store, "SELECT min(feature_id) AS f FROM features WHERE alive")["f"].iloc[0]
    return 0 if pd.isna(value) else int(value)


@st.cache_resource(hash_funcs=_HASH, show_spinner=False)
def _features(store: AtlasStore) -> pd.DataFrame:
    """Every `features` row (labels filled in), indexed by feature_id, read once per snapshot: 81,920 rows are
    a few MB, and a lookup here takes microseconds where a query over the view takes ~10 ms. Never mutated."""
    return _sql(store, "SELECT * FROM features ORDER BY feature_id").set_index("feature_id", drop=False)


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def feature(store: AtlasStore, feature_id: int) -> dict[str, Any] | None:
    """The `features` row of one feature with its icon columns (icon, fidelity_rank, ...), or None."""
    features = _features(store)
    if feature_id not in features.index:
        return None
    frame = features.loc[[feature_id]].reset_index(drop=True)
    row = _with_icons(store, frame, ["fidelity_rank", "feature_scale", "seed", "steps"]).iloc[0].to_dict()
    return {k: None if pd.isna(v) else v for k, v in row.items()}  # SQL NULLs as None


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def top_images(store: AtlasStore, feature_id: int) -> pd.DataFrame:
    """The top images of one feature, by rank: rank, image_id, value, caption, source, thumbnail."""
    top = _of_feature(store, "top_images", feature_id, ["rank", "image_id", "value"]).sort_values("rank")
    return _with_images(store, top)


def _with_images(store: AtlasStore, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (with image_id) with each image's caption, source and thumbnail, in its order; rows whose
    image is not in the images table are left out."""
    shown = images_by_id(store, tuple(int(i) for i in frame["image_id"]))
    joined = pd.concat([frame.reset_index(drop=True), shown.drop(columns="image_id")], axis=1)
    return joined[joined["thumbnail"].notna()].reset_index(drop=True)


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def quantile_samples(store: AtlasStore, feature_id: int) -> pd.DataFrame:
    """A feature's sampled images by activation quantile bin (bin 1 = weakest), strongest first within a bin:
    bin, image_id, value, caption, source, thumbnail. Empty for an atlas featurized before the table existed."""
    samples = _of_feature(store, "quantile_samples", feature_id, ["bin", "image_id", "value"])
    samples = samples.sort_values(["bin", "value", "image_id"], ascending=[True, False, True])
    return _with_images(store, samples)


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def caption_words(store: AtlasStore, feature_id: int) -> pd.DataFrame:
    """A feature's over-represented caption words (`caption_words`, written by `atlas index`): word, images, lift."""
    words = _of_feature(store, "caption_words", feature_id, ["word", "images", "lift"])
    return words.sort_values(["lift", "images", "word"], ascending=[False, False, True]).reset_index(drop=True)


def feature_evaluation(store: AtlasStore, feature_id: int) -> pd.DataFrame:
    """The labelled factor values (`evaluation`, from `atlas eval`) this feature predicts best: factor, value,
    n_images, auroc, captured, probe_auroc. Empty where the atlas has no labelled factors."""
    every = _evaluation(store)
    return every[every["best_feature_id"] == feature_id].drop(columns="best_feature_id").reset_index(drop=True)


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def _evaluation(store: AtlasStore) -> pd.DataFrame:
    """The whole `evaluation` table (a row per labelled factor value: small), best first, once per snapshot."""
    return _sql(
        store,
        """SELECT best_feature_id, factor, value, n_images, auroc, captured, probe_auroc FROM evaluation
           ORDER BY auroc DESC, factor, value""",
    )


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def frequency_histogram(store: AtlasStore, bins: int = 40) -> pd.DataFrame:
    """Feature density: how many alive features fire at each log10 frequency (bin left edges)."""
    return _sql(
        store,
        f"""WITH l AS (SELECT log10(frequency) AS x FROM features WHERE alive AND frequency > 0),
                 r AS (SELECT min(x) AS lo, greatest(max(x) - min(x), 1e-9) AS w FROM l)
            SELECT round(lo + least(floor((x - lo) / w * {int(bins)}), {int(bins) - 1}) * w / {int(bins)}, 3)
                       AS log10_frequency, count(*) AS features
            FROM l, r GROUP BY 1 ORDER BY 1""",
    )


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def feature_labels(store: AtlasStore, feature_id: int) -> pd.DataFrame:
    """A feature's top vocabulary words: rank, word, score."""
    return (
        _of_feature(store, "labels", feature_id, ["rank", "word", "score"]).sort_values("rank").reset_index(drop=True)
    )


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def activation_histogram(store: AtlasStore, feature_id: int, bins: int = 30) -> pd.DataFrame:
    """How often the feature takes each activation value (non-zero only), binned in DuckDB: the
    activations themselves never leave the database."""
    return _sql(
        store,
        f"""WITH a AS (SELECT value FROM activations WHERE feature_id = ?),
                 r AS (SELECT min(value) AS lo, greatest(max(value) - min(value), 1e-9) AS w FROM a)
            SELECT round(lo + least(floor((value - lo) / w * {int(bins)}), {int(bins) - 1}) * w / {int(bins)}, 4)
                       AS activation, count(*) AS images
            FROM a, r GROUP BY 1 ORDER BY 1""",
        [feature_id],
    )


COOCCURRENCE_ORDERS = ("together", "jaccard", "pmi")


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def cooccurring(store: AtlasStore, feature_id: int, order: str, limit: int = 12) -> pd.DataFrame:
    """The features that fire with `feature_id` (from `cooccurrence`, written by `atlas index`), best `order`
    first: other_id, together, jaccard, pmi, and the partner's label and icon. Empty before the index stage."""
    if order not in COOCCURRENCE_ORDERS:
        raise ValueError(f"order must be one of {COOCCURRENCE_ORDERS}, not {order!r}")
    if not store.parts("cooccurrence"):
        return pd.DataFrame(columns=["other_id", "together", "jaccard", "pmi", "label", "icon"])
    frame = _sql(
        store,
        f"""SELECT c.other_id, c.together, c.jaccard, c.pmi, f.label
            FROM cooccurrence c JOIN features f ON f.feature_id = c.other_id
            WHERE c.feature_id = ? ORDER BY c.{order} DESC, c.other_id LIMIT {int(limit)}""",
        [feature_id],
    )
    icons = _with_icons(store, frame.rename(columns={"other_id": "feature_id"}))["icon"]
    return frame.assign(icon=icons.to_numpy())


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def feature_map(store: AtlasStore) -> pd.DataFrame:
    """Every feature on the map (`feature_map`, written by `atlas index`): feature_id, x, y, frequency, label,
    and the URL of its icon on the server's icon route (made here, once per snapshot, not per page). Empty
    before the index stage."""
    if not store.parts("feature_map"):
        return pd.DataFrame(columns=["feature_id", "x", "y", "frequency", "label", "icon"])
    return _sql(
        store,
        f"""SELECT m.feature_id, m.x, m.y, f.frequency, f.label, '{ICONS_PATH}/' || m.feature_id || '.png' AS icon
            FROM feature_map m JOIN features f USING (feature_id) ORDER BY m.feature_id""",
    )


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def features_by_id(store: AtlasStore, feature_ids: tuple[int, ...]) -> pd.DataFrame:
    """Label, frequency and icon of the given features, in the given order."""
    if not feature_ids:
        return pd.DataFrame(columns=["feature_id", "label", "frequency", "icon"])
    frame = _features(store)[["label", "frequency"]].reindex(list(feature_ids)).rename_axis("feature_id")
    return _with_icons(store, frame.reset_index())


def icon_png(store: AtlasStore, feature_id: int) -> bytes | None:
    """A feature's icon as PNG bytes (None if it has none), read from the one icon part that holds it."""
    found = _parts(store, "icons").read([feature_id], ["image"]).column("image").to_pylist()
    return bytes(found[-1]) if found and _has_bytes(found[-1]) else None


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def images_by_id(store: AtlasStore, image_ids: tuple[int, ...]) -> pd.DataFrame:
    """Source, caption and thumbnail of the given images, in the given order."""
    if not image_ids:
        return pd.DataFrame(columns=["image_id", "source", "caption", "thumbnail"])
    frame = _sql(
        store,
        "SELECT image_id, source, caption, thumbnail FROM images WHERE list_contains(?, image_id)",
        [list(image_ids)],
    )
    return _thumbnails(frame).set_index("image_id").reindex(list(image_ids)).reset_index()


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def image(store: AtlasStore, image_id: int) -> dict[str, Any] | None:
    """The `images` row of one image (image_id, source, caption, width, height, thumbnail), or None."""
    frame = _sql(store, "SELECT * FROM images WHERE image_id = ?", [image_id])
    if frame.empty:
        return None
    row = _thumbnails(frame).iloc[0].to_dict()
    return {k: None if not isinstance(v, bytes) and pd.isna(v) else v for k, v in row.items()}


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def image_features(store: AtlasStore, image_id: int) -> pd.DataFrame:
    """The features that fire on one image (`activations`), strongest first: feature_id, value, label."""
    frame = _sql(
        store,
        """SELECT a.feature_id, a.value, f.label
           FROM activations a JOIN features f USING (feature_id)
           WHERE a.image_id = ? ORDER BY a.value DESC, a.feature_id""",
        [image_id],
    )
    return frame


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def some_images(store: AtlasStore, limit: int) -> pd.DataFrame:
    """The first `limit` images by image_id (a picker's thumbnails): image_id, source, caption, thumbnail."""
    frame = _sql(
        store, "SELECT image_id, source, caption, thumbnail FROM images ORDER BY image_id LIMIT ?", [int(limit)]
    )
    return _thumbnails(frame)


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def directions(store: AtlasStore) -> pd.DataFrame:
    """Every contrastive direction: name, positive, negative, n_pairs, vector, top_features."""
    return _sql(store, "SELECT name, positive, negative, n_pairs, vector, top_features FROM directions ORDER BY name")


class QuerySlots:
    """How many SQL-page queries run now, across all sessions; `take` never waits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0

    def take(self, cap: int) -> None:
        """Take a slot, or raise the one-line "busy" AtlasError at once when `cap` queries are running."""
        with self._lock:
            if self.running >= cap:
                raise AtlasError(
                    f"SQL: busy ({self.running} queries running; viewer limit sql.viewer_max_concurrent), try again"
                )
            self.running += 1

    def give(self) -> None:
        with self._lock:
            self.running -= 1


SQL_SLOTS = QuerySlots()


def run_sql(store: AtlasStore, sql: str, limit: int, timeout: float) -> pd.DataFrame:
    """The SQL page: one read-only statement through `atlas.catalog` (refusals, row, time and memory limits),
    at most sql.viewer_max_concurrent at once. A slot is held until the statement has ended, even one that
    DuckDB could not stop at the time limit and that finishes after the page got its error."""
    from atlas.catalog import run_read_only

    cfg = sql_config(store)
    SQL_SLOTS.take(cfg.viewer_max_concurrent)
    try:
        con, lock = _sql_connection(store)
        with lock:
            cur = con.cursor()
    except BaseException:
        SQL_SLOTS.give()
        raise

    def done() -> None:
        cur.close()
        SQL_SLOTS.give()

    limits = SqlLimits.of(cfg, viewer=True)
    return run_read_only(cur, sql, limit, timeout, limits, done=done).to_pandas()


@st.cache_resource(hash_funcs=_HASH, show_spinner=False)
def model_session(store: AtlasStore) -> tuple[ModelSession, threading.Lock]:
    """One `ModelSession` per atlas, shared by all pages and browser sessions (search, steering, the image
    explorer), with its lock. Constructing it loads nothing: CLIP, SAE, decoder and FAISS load on first use."""
    return ModelSession(store), threading.Lock()


def search_call(store: AtlasStore, method: str, *args: Any) -> Any:
    """Call one `AtlasSearch` method over the atlas's session under its lock (torch models and lazy loading
    are not re-entrant). faiss (and torch, for text and image search) load here, on the first search."""
    from atlas.search import AtlasSearch  # faiss

    session, lock = model_session(store)
    with lock:
        return getattr(AtlasSearch(session), method)(*args)


# ---- lists -----------------------------------------------------------------------------------------------
@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def feature_lists(store: AtlasStore) -> dict[str, Any]:
    """Every saved feature list by name (`atlas.feature_lists`), for this snapshot: a save commits a new
    tables_version, so the next page sees it."""
    from atlas.feature_lists import read_lists

    return read_lists(store)


def save_feature_list(store: AtlasStore, name: str, feature_ids: Sequence[int], note: str = "") -> None:
    """Save a list as its new version (an empty one deletes it); AtlasError (one line) for a bad name or id."""
    from atlas.feature_lists import save_list

    save_list(store, name, feature_ids, note, n_features=feature_count(store))


# ---- diff ------------------------------------------------------------------------------------------------
def diff_record(store: AtlasStore) -> dict[str, Any] | None:
    """What `atlas diff` recorded in this folder's manifest (the two sides, settings, summary), or None."""
    return store.manifest().get("diff")


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def diff_summary(store: AtlasStore) -> pd.DataFrame:
    """The diff_summary table, in its kinds' order."""
    return _sql(store, "SELECT * FROM diff_summary")


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def diff_cosines(store: AtlasStore) -> pd.DataFrame:
    """Each side's best-cosine histogram: side, bin_low, features."""
    return _sql(store, "SELECT side, bin_low, features FROM diff_cosines ORDER BY side, bin_low")


DIFF_ORDERS = {
    "weakest first": "min(cosine), group_id",
    "strongest first": "min(cosine) DESC, group_id",
    "most parts first": "count(*) DESC, group_id",
}


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def diff_group_count(store: AtlasStore, kind: str) -> int:
    """How many groups of `kind` the diff holds."""
    return int(
        _sql(store, "SELECT count(DISTINCT group_id) AS n FROM diff_matches WHERE kind = ?", [kind])["n"].iloc[0]
    )


@st.cache_data(hash_funcs=_HASH, show_spinner=False)
def diff_groups(store: AtlasStore, kind: str, order: str, limit: int, offset: int) -> pd.DataFrame:
    """The rows of one page of the groups of `kind`, ordered by `order` (a DIFF_ORDERS key)."""
    return _sql(
        store,
        f"""WITH page AS (SELECT group_id, row_number() OVER (ORDER BY {DIFF_ORDERS[order]}) AS page_rank
                          FROM diff_matches WHERE kind = ? GROUP BY group_id
                          ORDER BY {DIFF_ORDERS[order]} LIMIT ? OFFSET ?)
            SELECT m.* FROM diff_matches m JOIN page USING (group_id)
            ORDER BY page.page_rank, m.feature_a, m.feature_b""",
        [kind, limit, offset],
    )


def side_store(path: str) -> AtlasStore | None:
    """The atlas at `path` (a side of a diff), or None when that side is an SAE file or is gone."""
    store = AtlasStore(path)
    return store if store.is_atlas() and store.parts("embeddings") else None


def compare_url() -> str:
    """The other diff side's viewer (`atlas view --compare-url`), or "" when none was given."""
    return os.environ.get("ATLAS_COMPARE_URL", "")
