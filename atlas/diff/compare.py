"""`atlas diff`: classify every alive feature of two SAEs as matched, split, merged, gone or new.

1. Decoder geometry: each alive feature's k nearest alive features on the other side (exact cosine, FAISS).
2. Matched: mutual nearest neighbours at cosine >= `match_cosine`; with shared images, also activations
   correlated at >= `match_correlation`.
3. Split (an A feature = several B features): among the features not matched, a non-negative fit of the A
   feature's unit direction by its candidate B neighbours reaches `group_cosine`, beats the best single
   neighbour by `group_gain`, and, with shared images, the A feature's activation correlates at
   >= `group_correlation` with the parts' activations summed (each times its decoder norm). Merged: the same
   with the sides swapped, over what is left.
4. Gone: A features left over; new: B features left over. Dead features (never fired) are counted, not compared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from atlas.config import parse_size
from atlas.diff.coactivation import CoActivation
from atlas.diff.decoder_match import Neighbours, Pairs, candidate_pairs, mutual_matches, nearest
from atlas.diff.groups import GroupFit, assign_groups, propose_groups
from atlas.diff.sides import DiffSide
from atlas.errors import AtlasError
from atlas.store import table_from_rows

KINDS = ("matched", "split", "merged", "gone", "new", "dead")
GROUP_SLACK = 0.02  # a group may correlate this much less than its best part (sampling noise)


@dataclass(frozen=True)
class DiffSettings:
    """Thresholds of `atlas diff` (see the module docstring for where each applies)."""

    k: int = 8  # nearest neighbours per feature: the candidate parts of a split or merge
    match_cosine: float = 0.7
    match_correlation: float = 0.3
    part_cosine: float = 0.3  # a candidate part's least decoder cosine to the whole
    min_part_share: float = 0.1  # a part's least share of the fit's coefficients
    group_cosine: float = 0.9
    group_gain: float = 0.05
    group_correlation: float = 0.7
    memory_limit: str = "2GB"  # DuckDB's, for the co-activation pass (it spills beyond it)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 64:
            raise AtlasError(f"diff: k must be 1..64, got {self.k}")
        for name in ("match_cosine", "part_cosine", "group_cosine"):
            if not -1 < getattr(self, name) <= 1:
                raise AtlasError(f"diff: {name} must be in (-1, 1], got {getattr(self, name)}")
        for name in ("match_correlation", "group_correlation"):
            if not -1 <= getattr(self, name) <= 1:
                raise AtlasError(f"diff: {name} must be in [-1, 1], got {getattr(self, name)}")
        try:
            parse_size(self.memory_limit)
        except ValueError as e:
            raise AtlasError(f"diff: memory_limit: {e}") from None


@dataclass
class DiffResult:
    matches: pa.Table
    summary: pa.Table
    cosines: pa.Table
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Rows:
    """The rows of `diff_matches`, built up kind by kind."""

    cols: dict[str, list] = field(
        default_factory=lambda: {
            k: []
            for k in (
                "kind",
                "group_id",
                "feature_a",
                "feature_b",
                "cosine",
                "correlation",
                "weight",
                "group_cosine",
                "group_correlation",
            )
        }
    )
    groups: int = 0

    def add(self, kind: str, a: Any, b: Any, cos: float, corr: Any, weight: Any, g_cos: Any, g_corr: Any) -> None:
        values = (kind, self.groups, a, b, cos, corr, weight, g_cos, g_corr)
        for col, v in zip(self.cols, values, strict=True):
            self.cols[col].append(None if isinstance(v, float) and np.isnan(v) else v)

    def table(self) -> pa.Table:
        return table_from_rows("diff_matches", self.cols)


def diff_sides(a: DiffSide, b: DiffSide, settings: DiffSettings, say: Callable[[str], None] = print) -> DiffResult:
    """Compare side `a` with side `b` (see the module docstring)."""
    if a.decoder_fd.shape[1] != b.decoder_fd.shape[1]:
        raise AtlasError(
            f"{b.where}: its SAE decodes to {b.decoder_fd.shape[1]}-d but {a.where}'s decodes to "
            f"{a.decoder_fd.shape[1]}-d: SAEs of different CLIP models cannot be compared"
        )
    t0 = time.perf_counter()
    ids_a, ids_b = np.flatnonzero(a.alive_f), np.flatnonzero(b.alive_f)
    say(f"diff       decoder cosines: {len(ids_a):,} x {len(ids_b):,} alive features, {settings.k} nearest each way")
    a_to_b = nearest(a.unit_fd, ids_a, b.unit_fd, ids_b, settings.k)
    b_to_a = nearest(b.unit_fd, ids_b, a.unit_fd, ids_a, settings.k)
    t_geometry = time.perf_counter() - t0
    co = CoActivation(a, b, settings.memory_limit) if a.has_activations and b.has_activations else None
    if co is not None and co.n_images == 0:
        co.close()
        co = None
    say(f"diff       co-activation over {co.n_images:,} shared images" if co else "diff       no shared images")
    try:
        result = _classify(a, b, a_to_b, b_to_a, co, settings)
    finally:
        if co is not None:
            co.close()
    result.info.update(
        a=a.where,
        b=b.where,
        features_a=a.n_features,
        features_b=b.n_features,
        alive_a=len(ids_a),
        alive_b=len(ids_b),
        shared_images=co.n_images if co else 0,
        settings=asdict(settings),
        seconds={"decoder": round(t_geometry, 3), "total": round(time.perf_counter() - t0, 3)},
    )
    return result


def _classify(
    a: DiffSide,
    b: DiffSide,
    a_to_b: Neighbours,
    b_to_a: Neighbours,
    co: CoActivation | None,
    s: DiffSettings,
) -> DiffResult:
    free_a, free_b = a.alive_f.copy(), b.alive_f.copy()
    candidates = candidate_pairs(a_to_b, b_to_a, s.part_cosine)
    splits = _groups(co, "a", candidates, a.unit_fd, b.unit_fd, b.norms_f, free_a, free_b, b.n_features, s)
    for g in splits:
        free_a[g.group.whole], free_b[g.group.parts] = False, False
    flipped = Pairs(candidates.b, candidates.a, candidates.cosine)
    merges = _groups(co, "b", flipped, b.unit_fd, a.unit_fd, a.norms_f, free_b, free_a, a.n_features, s)
    for g in merges:
        free_b[g.group.whole], free_a[g.group.parts] = False, False
    mutual = mutual_matches(a_to_b, b_to_a, free_a, free_b, s.match_cosine)
    mutual_corr = co.pair_correlations(mutual) if co else np.full(len(mutual), np.nan, np.float32)
    if co:
        ok = mutual_corr >= s.match_correlation  # NaN (one never fires on the shared images) is no match
        mutual, mutual_corr = Pairs(mutual.a[ok], mutual.b[ok], mutual.cosine[ok]), mutual_corr[ok]
    free_a[mutual.a], free_b[mutual.b] = False, False

    rows = _Rows()
    for i in range(len(mutual)):
        cos = float(mutual.cosine[i])
        rows.add(
            "matched", int(mutual.a[i]), int(mutual.b[i]), cos, float(mutual_corr[i]), 1.0, cos, float(mutual_corr[i])
        )
        rows.groups += 1
    _add_groups(rows, "split", splits, co, whole_is_a=True)
    _add_groups(rows, "merged", merges, co, whole_is_a=False)
    for kind, free, nb in (("gone", free_a, a_to_b), ("new", free_b, b_to_a)):
        best = dict(zip(nb.ids_q.tolist(), nb.best_cosine_q().tolist(), strict=True))
        for f in np.flatnonzero(free):
            fa, fb = (int(f), None) if kind == "gone" else (None, int(f))
            rows.add(kind, fa, fb, best.get(int(f), 0.0), None, None, None, None)
            rows.groups += 1
    matches = rows.table()
    return DiffResult(matches, _summary(matches, a, b), _cosine_histogram(a_to_b, b_to_a))


def _groups(
    co: CoActivation | None,
    whole_side: str,
    candidates: Pairs,
    whole_unit: np.ndarray,
    part_unit: np.ndarray,
    part_norms: np.ndarray,
    free_wholes: np.ndarray,
    free_parts: np.ndarray,
    n_parts: int,
    s: DiffSettings,
) -> list[GroupFit]:
    """Splits (whole_side "a") or merges ("b"): proposed by geometry, kept if their activations agree: the
    whole correlates with its parts' sum at >= `group_correlation`, and no worse than with its best part."""
    fit_args = (2 * s.k, s.min_part_share, s.group_cosine, s.group_gain)  # a whole's candidates come both ways
    fits = propose_groups(candidates, whole_unit, part_unit, part_norms, free_wholes, free_parts, *fit_args)
    if co is not None and fits:
        corr = co.group_correlations([f.group for f in fits], whole_side)
        part_corr = _part_correlations(co, fits, whole_is_a=whole_side == "a")
        best_part = [
            np.nanmax(c, initial=-1.0) for c in np.split(part_corr, np.cumsum([len(f.group.parts) for f in fits])[:-1])
        ]
        fits = [
            replace(f, correlation=float(c))
            for f, c, best in zip(fits, corr, best_part, strict=True)
            if c >= s.group_correlation and c >= best - GROUP_SLACK
        ]
    return assign_groups(fits, n_parts)


def _part_correlations(co: CoActivation, fits: list[GroupFit], whole_is_a: bool) -> np.ndarray:
    """The correlation of each (whole, part) pair of `fits`, in order."""
    wholes = np.concatenate([np.full(len(f.group.parts), f.group.whole) for f in fits])
    parts = np.concatenate([f.group.parts for f in fits])
    zeros = np.zeros(len(parts), np.float32)
    return co.pair_correlations(Pairs(wholes, parts, zeros) if whole_is_a else Pairs(parts, wholes, zeros))


def _add_groups(rows: _Rows, kind: str, fits: list[GroupFit], co: CoActivation | None, whole_is_a: bool) -> None:
    """One row per (whole, part) of each group, with the pair's own correlation where there are shared images."""
    if not fits:
        return
    n_rows = sum(len(f.group.parts) for f in fits)
    pair_corr = iter(_part_correlations(co, fits, whole_is_a).tolist() if co is not None else [None] * n_rows)
    for fit in fits:
        g_corr = fit.correlation if co is not None else None
        for part, coef, cos in zip(
            fit.group.parts.tolist(), fit.coefficients.tolist(), fit.part_cosines.tolist(), strict=True
        ):
            fa, fb = (fit.group.whole, part) if whole_is_a else (part, fit.group.whole)
            rows.add(kind, fa, fb, cos, next(pair_corr), coef, fit.fit_cosine, g_corr)
        rows.groups += 1


def _summary(matches: pa.Table, a: DiffSide, b: DiffSide) -> pa.Table:
    """One row per kind: its groups, features of each side, their share of the alive features, median cosine."""
    alive_a, alive_b = max(int(a.alive_f.sum()), 1), max(int(b.alive_f.sum()), 1)
    cols: dict[str, list] = {
        k: [] for k in ("kind", "groups", "features_a", "features_b", "share_a", "share_b", "median_cosine")
    }
    for k in KINDS:
        if k == "dead":
            n_a, n_b, groups, median = int((~a.alive_f).sum()), int((~b.alive_f).sum()), 0, None
            share_a, share_b = n_a / max(a.n_features, 1), n_b / max(b.n_features, 1)
        else:
            t = matches.filter(pc.equal(matches.column("kind"), k))
            n_a = pc.count_distinct(t.column("feature_a")).as_py()
            n_b = pc.count_distinct(t.column("feature_b")).as_py()
            groups = pc.count_distinct(t.column("group_id")).as_py()
            median = float(np.median(t.column("cosine").to_numpy())) if t.num_rows else None
            share_a, share_b = n_a / alive_a, n_b / alive_b
        for col, v in zip(cols, (k, groups, n_a, n_b, share_a, share_b, median), strict=True):
            cols[col].append(v)
    return table_from_rows("diff_summary", cols)


def _cosine_histogram(a_to_b: Neighbours, b_to_a: Neighbours, bins: int = 20) -> pa.Table:
    """Counts of each alive feature's best cosine to the other side in `bins` bins over [0, 1] (negative
    cosines fall in the first)."""
    edges = np.linspace(0, 1, bins + 1)
    cols: dict[str, list] = {"side": [], "bin_low": [], "bin_high": [], "features": []}
    for side, nb in (("a", a_to_b), ("b", b_to_a)):
        counts, _ = np.histogram(np.clip(nb.best_cosine_q(), 0, 1), edges)
        cols["side"] += [side] * bins
        cols["bin_low"] += edges[:-1].tolist()
        cols["bin_high"] += edges[1:].tolist()
        cols["features"] += counts.tolist()
    return table_from_rows("diff_cosines", cols)
