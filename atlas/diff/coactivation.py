"""Co-activation of two SAEs' features over the images both atlases hold, computed by DuckDB streaming over
the two `activations` tables (sparse: a join on image_id restricted to candidate pairs, never a dense
image x feature matrix), with a bounded memory that spills to disk.

Correlations are Pearson's over all shared images, zeros included: from the sums of x, x², y, y² and xy,
where the xy sums only need the images on which both features fire.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from atlas.config import parse_size
from atlas.diff.decoder_match import Pairs
from atlas.diff.sides import DiffSide


@dataclass(frozen=True)
class Moments:
    """Per-feature sums over the shared images."""

    sum_f: np.ndarray  # float64
    sumsq_f: np.ndarray  # float64


@dataclass(frozen=True)
class Group:
    """A split or merge: one feature (the whole) of one side, several of the other (parts) with weights."""

    whole: int
    parts: np.ndarray  # int64 [p]
    weights: np.ndarray  # float64 [p]: coefficient of each part's activation in the sum


def _files(paths: tuple[str, ...]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


class CoActivation:
    """One DuckDB connection over both sides' activations; side "a" and side "b" name the two tables."""

    def __init__(self, a: DiffSide, b: DiffSide, memory_limit: str = "2GB"):
        self.con = duckdb.connect()
        self._spill = tempfile.TemporaryDirectory(prefix="atlas-diff-")
        self.con.execute(f"SET memory_limit = '{parse_size(memory_limit)}B'")
        self.con.execute(f"SET threads = {os.cpu_count() or 1}")
        self.con.execute(f"SET temp_directory = '{self._spill.name}'")
        self.con.execute("SET preserve_insertion_order = false")
        for side, s in (("a", a), ("b", b)):
            self.con.execute(
                f"CREATE VIEW act_{side} AS SELECT image_id, feature_id, value::DOUBLE AS value "
                f"FROM read_parquet({_files(s.activations)})"
            )
            self.con.execute(f"CREATE VIEW img_{side} AS SELECT image_id FROM read_parquet({_files(s.images)})")
        self.con.execute("CREATE TEMP TABLE shared AS SELECT image_id FROM img_a INTERSECT SELECT image_id FROM img_b")
        self.n_images = int(self.con.execute("SELECT count(*) FROM shared").fetchone()[0])  # type: ignore[index]
        self.moments = {"a": self._moments("a", a.n_features), "b": self._moments("b", b.n_features)}

    def close(self) -> None:
        self.con.close()
        self._spill.cleanup()

    def _moments(self, side: str, n_features: int) -> Moments:
        t = self.con.execute(
            f"SELECT feature_id, sum(value) AS s, sum(value * value) AS ss FROM act_{side} "
            "SEMI JOIN shared USING (image_id) GROUP BY feature_id"
        ).fetchnumpy()
        sum_f, sumsq_f = np.zeros(n_features), np.zeros(n_features)
        ids = np.asarray(t["feature_id"], np.int64)
        sum_f[ids], sumsq_f[ids] = np.asarray(t["s"]), np.asarray(t["ss"])
        return Moments(sum_f, sumsq_f)

    def _correlation(
        self, sx: np.ndarray, sxx: np.ndarray, sy: np.ndarray, syy: np.ndarray, sxy: np.ndarray
    ) -> np.ndarray:
        n = max(self.n_images, 1)
        cov = sxy - sx * sy / n
        var = np.clip(sxx - sx * sx / n, 0, None) * np.clip(syy - sy * sy / n, 0, None)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.where(var > 0, cov / np.sqrt(var), np.nan)
        return np.clip(corr, -1, 1).astype(np.float32)

    def pair_correlations(self, pairs: Pairs) -> np.ndarray:
        """Correlation of each pair's activations (NaN where either never fires on the shared images)."""
        if len(pairs) == 0:
            return np.zeros(0, np.float32)
        table = pa.table({"i": np.arange(len(pairs)), "a": pairs.a, "b": pairs.b})
        self.con.register("pairs", table)
        t = self.con.execute(
            "SELECT p.i, sum(x.value * y.value) AS sxy FROM pairs p "
            "JOIN act_a x ON x.feature_id = p.a JOIN act_b y ON y.image_id = x.image_id AND y.feature_id = p.b "
            "GROUP BY p.i"
        ).fetchnumpy()
        self.con.unregister("pairs")
        sxy = np.zeros(len(pairs))
        sxy[np.asarray(t["i"], np.int64)] = np.asarray(t["sxy"])
        ma, mb = self.moments["a"], self.moments["b"]
        return self._correlation(ma.sum_f[pairs.a], ma.sumsq_f[pairs.a], mb.sum_f[pairs.b], mb.sumsq_f[pairs.b], sxy)

    def group_correlations(self, groups: list[Group], whole_side: str) -> np.ndarray:
        """Correlation of each group's whole (a feature of `whole_side`) with the weighted sum of its parts'
        activations (features of the other side)."""
        if not groups:
            return np.zeros(0, np.float32)
        part_side = "b" if whole_side == "a" else "a"
        members = pa.table(
            {
                "g": np.repeat(np.arange(len(groups)), [len(g.parts) for g in groups]),
                "part": np.concatenate([g.parts for g in groups]),
                "w": np.concatenate([g.weights for g in groups]).astype(np.float64),
            }
        )
        wholes = pa.table({"g": np.arange(len(groups)), "whole": np.array([g.whole for g in groups], np.int64)})
        self.con.register("members", members)
        self.con.register("wholes", wholes)
        t = self.con.execute(
            f"""
            WITH ys AS (
                SELECT m.g, y.image_id, sum(m.w * y.value) AS s
                FROM members m JOIN act_{part_side} y ON y.feature_id = m.part
                SEMI JOIN shared USING (image_id)
                GROUP BY m.g, y.image_id
            )
            SELECT ys.g, sum(ys.s) AS sy, sum(ys.s * ys.s) AS syy, sum(ys.s * coalesce(x.value, 0)) AS sxy
            FROM ys JOIN wholes w ON w.g = ys.g
            LEFT JOIN act_{whole_side} x ON x.image_id = ys.image_id AND x.feature_id = w.whole
            GROUP BY ys.g
            """
        ).fetchnumpy()
        self.con.unregister("members")
        self.con.unregister("wholes")
        sy, syy, sxy = np.zeros(len(groups)), np.zeros(len(groups)), np.zeros(len(groups))
        g = np.asarray(t["g"], np.int64)
        sy[g], syy[g], sxy[g] = np.asarray(t["sy"]), np.asarray(t["syy"]), np.asarray(t["sxy"])
        m = self.moments[whole_side]
        whole = np.array([grp.whole for grp in groups], np.int64)
        return self._correlation(m.sum_f[whole], m.sumsq_f[whole], sy, syy, sxy)
