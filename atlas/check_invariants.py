"""The invariants between an atlas's tables that `atlas check` verifies, one DuckDB query each over views of
the part files that read soundly (see `atlas.check`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb

from schemas import TABLES

MAX_LISTED = 10  # problems of one invariant listed one by one; the rest are counted


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong: in `part` of `table` (a part file name), or in the table as a whole (`part` None)."""

    table: str
    part: str | None
    what: str

    def line(self) -> str:
        return f"{self.table}: {TABLES[self.table].folder}/{self.part or ''}: {self.what}"


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _files_sql(files: list[str]) -> str:
    return "read_parquet([" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "], filename = true)"


def _listed(problems: list[Problem], table: str, total: int) -> list[Problem]:
    if total > len(problems):
        problems.append(Problem(table, None, f"... and {total - len(problems)} more like these"))
    return problems


Tables = dict[str, list[str]]  # table -> its sound part files


def _only_part(good: dict[str, list[str]], table: str) -> str | None:
    return _name(good[table][0]) if len(good[table]) == 1 else None


def unique_image_ids(con: duckdb.DuckDBPyConnection, cfg: dict[str, Any], good: Tables) -> list[Problem]:
    """No image_id twice in `images` or in `embeddings`."""
    out: list[Problem] = []
    for table in ("images", "embeddings"):
        if not good[table]:
            continue
        rows = con.execute(
            f"SELECT image_id, count(*) AS n, list(DISTINCT filename ORDER BY filename) FROM {_files_sql(good[table])} "
            "GROUP BY image_id HAVING n > 1 ORDER BY image_id"
        ).fetchall()
        found = [
            Problem(table, _name(f), f"image_id {image_id} appears {n} times in the table")
            for image_id, n, files in rows[:MAX_LISTED]
            for f in files
        ]
        out += _listed(found, table, len(found) + max(0, len(rows) - MAX_LISTED))
    return out


def embedding_per_image(
    con: duckdb.DuckDBPyConnection, cfg: dict[str, Any], good: dict[str, list[str]]
) -> list[Problem]:
    """Every image has an embedding and every embedding an image (parts of both share their names)."""
    out: list[Problem] = []
    for table, other in (("images", "embeddings"), ("embeddings", "images")):
        rows = con.execute(
            f"SELECT t.image_id, t.filename FROM {_files_sql(good[table])} t "
            f"ANTI JOIN {other} o ON o.image_id = t.image_id ORDER BY t.image_id"
        ).fetchall()
        found = [Problem(other, _name(f), f"no row for image_id {i}, which {table} has") for i, f in rows[:MAX_LISTED]]
        out += _listed(found, other, len(rows))
    return out


def frequencies(con: duckdb.DuckDBPyConnection, cfg: dict[str, Any], good: Tables) -> list[Problem]:
    """Each feature's alive flag, frequency, maximum and mass are what the activations give."""
    part = _only_part(good, "features")
    dup = con.execute("SELECT feature_id, count(*) n FROM features GROUP BY 1 HAVING n > 1 ORDER BY 1").fetchall()
    out = [Problem("features", part, f"feature {f} has {n} rows") for f, n in dup[:MAX_LISTED]]
    rows = con.execute(
        """
        WITH n AS (SELECT greatest(count(*), 1) AS n FROM embeddings),
        a AS (SELECT feature_id, count(*) AS c, max(value) AS mx, sum(value::DOUBLE) AS mass
              FROM activations GROUP BY feature_id)
        SELECT f.feature_id, f.alive, f.frequency, coalesce(a.c, 0) / n.n, f.max_activation, coalesce(a.mx, 0),
               f.activation_mass, coalesce(a.mass, 0)
        FROM features f LEFT JOIN a USING (feature_id), n
        WHERE f.alive <> (coalesce(a.c, 0) > 0)
           OR abs(f.frequency - coalesce(a.c, 0) / n.n) > 1e-9
           OR abs(f.max_activation - coalesce(a.mx, 0)) > 1e-6 * greatest(1, abs(f.max_activation))
           OR abs(f.activation_mass - coalesce(a.mass, 0)) > 1e-4 * greatest(1, abs(f.activation_mass))
        ORDER BY f.feature_id
        """
    ).fetchall()
    for fid, alive, freq, want_freq, mx, want_mx, mass, want_mass in rows[:MAX_LISTED]:
        out.append(
            Problem(
                "features",
                part,
                f"feature {fid}: alive {alive}, frequency {freq:.6g}, max {mx:.6g}, mass {mass:.6g}; the activations "
                f"give frequency {want_freq:.6g}, max {want_mx:.6g}, mass {want_mass:.6g}",
            )
        )
    return _listed(out, "features", len(dup) + len(rows))


def top_images(con: duckdb.DuckDBPyConnection, cfg: dict[str, Any], good: Tables) -> list[Problem]:
    """Each feature's top images are its k largest activations, ranked from 1, with the activation stored."""
    k = (cfg.get("featurize") or {}).get("top_k")
    if not isinstance(k, int):
        k = con.execute("SELECT coalesce(max(rank), 0) FROM top_images").fetchone()[0]  # type: ignore[index]
    rows = con.execute(
        f"""
        WITH r AS (SELECT feature_id, value,
                          row_number() OVER (PARTITION BY feature_id ORDER BY value DESC, image_id) AS rank
                   FROM activations QUALIFY rank <= {int(k)})
        SELECT coalesce(r.feature_id, t.feature_id) AS fid, coalesce(r.rank, t.rank) AS rk, r.value, t.value
        FROM r FULL JOIN top_images t ON r.feature_id = t.feature_id AND r.rank = t.rank
        WHERE r.value IS NULL OR t.value IS NULL OR r.value <> t.value
        UNION ALL
        SELECT t.feature_id, t.rank, a.value, t.value FROM top_images t
        LEFT JOIN activations a ON a.feature_id = t.feature_id AND a.image_id = t.image_id
        WHERE a.value IS NULL OR a.value <> t.value
        ORDER BY fid, rk
        """
    ).fetchall()
    part = _only_part(good, "top_images")
    found = [
        Problem("top_images", part, f"feature {f} rank {r}: value {t}, the activations give {a}")
        for f, r, a, t in rows[:MAX_LISTED]
    ]
    return _listed(found, "top_images", len(rows))


def icons(con: duckdb.DuckDBPyConnection, cfg: dict[str, Any], good: Tables) -> list[Problem]:
    """Exactly one icon per alive feature (the first `render.max_features` of them when that is set)."""
    most = (cfg.get("render") or {}).get("max_features")
    limit = f"LIMIT {int(most)}" if isinstance(most, int) and most > 0 else ""
    rows = con.execute(
        f"""
        WITH e AS (SELECT feature_id FROM features WHERE alive ORDER BY feature_id {limit}),
        i AS (SELECT feature_id, count(*) AS n FROM icons GROUP BY feature_id)
        SELECT coalesce(e.feature_id, i.feature_id) AS fid, e.feature_id IS NOT NULL, coalesce(i.n, 0)
        FROM e FULL JOIN i USING (feature_id)
        WHERE e.feature_id IS NULL OR coalesce(i.n, 0) <> 1 ORDER BY fid
        """
    ).fetchall()
    found = [
        Problem("icons", None, f"feature {f} ({'alive' if alive else 'not alive or not rendered'}) has {n} icon(s)")
        for f, alive, n in rows[:MAX_LISTED]
    ]
    return _listed(found, "icons", len(rows))


def cooccurrence(con: duckdb.DuckDBPyConnection, cfg: dict[str, Any], good: Tables) -> list[Problem]:
    """Each co-occurrence row names two different features that fire, once; its count is at most either's image
    count, the same both ways round, and its Jaccard and PMI are what the count and the image counts give. (A
    recount of every pair would join every activation with 64 partners; atlas/cooccurrence.py's tests do that.)"""
    rows = con.execute(
        """
        WITH n AS (SELECT greatest(count(*), 1)::DOUBLE AS n FROM embeddings),
        a AS (SELECT feature_id, count(*) AS c FROM activations GROUP BY feature_id),
        r AS (SELECT c.*, coalesce(af.c, 0) AS nf, coalesce(ag.c, 0) AS ng,
                     count(*) OVER (PARTITION BY c.feature_id, c.other_id) AS copies
              FROM cooccurrence c LEFT JOIN a af ON af.feature_id = c.feature_id
              LEFT JOIN a ag ON ag.feature_id = c.other_id)
        SELECT r.feature_id, r.other_id, r.together, r.nf, r.ng, r.jaccard, r.pmi, r.copies, back.together
        FROM r LEFT JOIN cooccurrence back ON back.feature_id = r.other_id AND back.other_id = r.feature_id, n
        WHERE r.feature_id = r.other_id OR r.copies > 1 OR r.together < 1 OR r.together > least(r.nf, r.ng)
           OR back.together <> r.together
           OR abs(r.jaccard - r.together / (r.nf + r.ng - r.together)) > 1e-6
           OR abs(r.pmi - log2(r.together * n.n / (r.nf::DOUBLE * r.ng))) > 1e-4 * greatest(1, abs(r.pmi))
        ORDER BY r.feature_id, r.other_id
        """
    ).fetchall()
    found = [
        Problem(
            "cooccurrence",
            _only_part(good, "cooccurrence"),
            f"features {f} and {g}: together {t}, jaccard {j:.6g}, pmi {p:.6g} ({copies} row(s); {g} the other way "
            f"round: {back}); the activations give {nf} and {ng} images",
        )
        for f, g, t, nf, ng, j, p, copies, back in rows[:MAX_LISTED]
    ]
    return _listed(found, "cooccurrence", len(rows))


def feature_map(con: duckdb.DuckDBPyConnection, cfg: dict[str, Any], good: Tables) -> list[Problem]:
    """The map places every alive feature once, at finite coordinates, and no other feature."""
    rows = con.execute(
        """
        WITH e AS (SELECT feature_id FROM features WHERE alive),
        m AS (SELECT feature_id, count(*) AS n, bool_and(isfinite(x) AND isfinite(y)) AS finite
              FROM feature_map GROUP BY feature_id)
        SELECT coalesce(e.feature_id, m.feature_id) AS fid, e.feature_id IS NOT NULL, coalesce(m.n, 0), m.finite
        FROM e FULL JOIN m USING (feature_id)
        WHERE e.feature_id IS NULL OR coalesce(m.n, 0) <> 1 OR NOT m.finite ORDER BY fid
        """
    ).fetchall()
    found = [
        Problem(
            "feature_map",
            _only_part(good, "feature_map"),
            f"feature {f} ({'alive' if alive else 'not alive'}) is placed {n} time(s)"
            + ("" if finite is not False else " at a non-finite point"),
        )
        for f, alive, n, finite in rows[:MAX_LISTED]
    ]
    return _listed(found, "feature_map", len(rows))


Check = Callable[[duckdb.DuckDBPyConnection, dict[str, Any], Tables], list[Problem]]
CHECKS: dict[str, Check] = {
    "unique image ids": unique_image_ids,
    "an embedding per image": embedding_per_image,
    "frequencies match activations": frequencies,
    "top images are the largest activations": top_images,
    "one icon per alive feature": icons,
    "co-occurrence counts agree": cooccurrence,
    "the map places every alive feature": feature_map,
}
