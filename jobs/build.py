"""The build DAG: which stages exist, what each depends on and writes, and when a stage can be skipped.

A stage's fingerprint hashes the config values it reads and the run ids of the stages it depends on. A stage
is skipped when the manifest records it done with the same fingerprint and its outputs are on disk. When the
fingerprint changed (new config, or an upstream stage ran again) its old outputs are removed and it runs
anew; when only outputs are missing (deleted by hand, or a crash) it runs again and resumes from the parts
that are still there. Either way everything downstream reruns, because its fingerprint holds this run's id.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from atlas.config import AtlasConfig
from atlas.store import AtlasStore


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    deps: tuple[str, ...]
    config: Callable[[AtlasConfig], Any]  # the config values this stage's output depends on
    tables: tuple[tuple[str, str], ...]  # (table, part-name prefix) it writes
    paths: tuple[str, ...]  # other files/folders it writes, relative to the atlas
    description: str


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "embed",
            (),
            lambda c: {
                "data": c.data,
                "world": c.world if c.data.source.startswith("builtin:") else None,
                "clip": c.models.clip,
                "part_size": c.embed.part_size,
            },
            (("images", ""), ("embeddings", ""), ("errors", "embed-")),
            (),
            "CLIP image embeddings of every image",
        ),
        Stage("train", ("embed",), lambda c: c.sae, (("train_log", ""),), ("sae",), "train the sparse autoencoder"),
        Stage(
            "featurize",
            ("embed", "train"),
            lambda c: c.featurize,
            (("activations", ""), ("features", ""), ("top_images", ""), ("quantile_samples", "")),
            (),
            "SAE activations, feature statistics, top images, quantile samples",
        ),
        Stage(
            "render",
            ("train", "featurize"),
            lambda c: {"render": c.render, "clip": c.models.clip, "decoder": c.models.decoder},
            (("icons", ""),),
            (),
            "an icon for every alive feature",
        ),
        Stage(
            "directions",
            ("train",),
            lambda c: {"directions": c.directions, "clip": c.models.clip},
            (("directions", ""),),
            (),
            "contrastive text directions",
        ),
        Stage(
            "index",
            ("embed", "train", "featurize", "render", "directions"),
            lambda c: c.index,
            (("labels", ""), ("cooccurrence", ""), ("feature_map", ""), ("caption_words", "")),
            ("atlas.duckdb", "index"),
            "labels, feature co-occurrence, feature map, caption words, DuckDB catalog and FAISS indexes",
        ),
    )
}


def downstream(name: str) -> list[str]:
    """`name` and every stage that depends on it, in run order."""
    out = [name]
    for s in STAGES.values():
        if any(d in out for d in s.deps) and s.name not in out:
            out.append(s.name)
    return out


def fingerprint(stage: Stage, cfg: AtlasConfig, store: AtlasStore) -> str:
    manifest = store.manifest()["stages"]
    value = stage.config(cfg)
    payload = {
        "config": _jsonable(value),
        "deps": {d: manifest.get(d, {}).get("run_id") for d in stage.deps},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def outputs_present(stage: Stage, store: AtlasStore) -> bool:
    tables_ok = all(store.parts(t, prefix) for t, prefix in stage.tables if prefix == "")
    paths_ok = all(store.exists(p) for p in stage.paths)
    return tables_ok and paths_ok


def clear_outputs(stage: Stage, store: AtlasStore) -> None:
    """Take a stage's old outputs away before it rewrites them. Table parts are retired, not deleted, so that
    readers keep a consistent snapshot of the old tables until the new ones are committed."""
    for table, prefix in stage.tables:
        store.retire_parts(table, prefix)
    for p in stage.paths:
        store.remove_path(p)


# A stage whose Ray work failed for a reason outside the project's code (a node or the object holding a
# block lost) runs again, resuming from its committed parts, at most this many times in all.
STAGE_ATTEMPTS = 3


def _retryable(e: BaseException) -> bool:
    import ray.exceptions

    from jobs.cli_common import atlas_cause
    from jobs.parts import IncompleteParts

    if atlas_cause(e) is not None or isinstance(e, ray.exceptions.RayTaskError):
        return False  # a user mistake or a bug in a task: running it again gives the same answer
    return isinstance(e, (ray.exceptions.RayError, IncompleteParts))


def _run_with_retries(name: str, run: Callable[[], dict[str, Any]], say: Callable[[str], None]) -> dict[str, Any]:
    for attempt in range(1, STAGE_ATTEMPTS + 1):
        try:
            return run()
        except Exception as e:
            if attempt == STAGE_ATTEMPTS or not _retryable(e):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            say(
                f"{name:<10} attempt {attempt} failed ({type(e).__name__}: {first[:200]}); "
                "resuming from its committed parts"
            )
    raise AssertionError("unreachable")


def run_stage(
    name: str, cfg: AtlasConfig, store: AtlasStore, run: Callable[[], dict[str, Any]], say: Callable[[str], None]
) -> bool:
    """Run one stage unless it is already done for this config; returns whether it ran."""
    stage = STAGES[name]
    for dep in stage.deps:
        store.require_stage(dep, f"'{name}'")
    fp = fingerprint(stage, cfg, store)
    info = store.stage(name)
    if _up_to_date(stage, info, fp, store):
        say(f"{name:<10} up to date, skipped")
        return False
    preflight(name, cfg)  # a bad input stops here, before anything in the atlas changes
    if info.get("fingerprint") not in (None, fp):
        say(f"{name:<10} inputs changed since the last run: removing its old outputs")
        clear_outputs(stage, store)

    def mark_running(m: dict[str, Any]) -> None:
        _record_build(m, cfg)
        m["stages"][name] = {"status": "running", "fingerprint": fp, "started": _now()}

    store.update_manifest(mark_running)
    t0 = time.perf_counter()
    try:
        summary = _run_with_retries(name, run, say)
    except BaseException as e:  # Ctrl-C included: the stage did not finish, and the manifest says why
        _record_failure(store, name, e, time.perf_counter() - t0)
        raise
    seconds = time.perf_counter() - t0

    def mark_done(m: dict[str, Any]) -> None:
        before = {t: m.get("parts", {}).get(t) for t, _ in stage.tables}
        store.record_tables(m, {t for t, _ in stage.tables})
        m["stages"][name] = {
            "status": "done",
            "fingerprint": fp,
            "run_id": _run_id(stage, info, fp, before, m.get("parts", {})),
            "started": m["stages"][name]["started"],
            "finished": _now(),
            "seconds": round(seconds, 2),
            "summary": summary,
        }

    store.update_manifest(mark_done)
    for table in {t for t, _ in stage.tables}:
        store.purge_retired(table)
    say(f"{name:<10} done in {seconds:.1f}s: {_short(summary)}")
    return True


def _run_id(stage: Stage, info: dict[str, Any], fp: str, before: dict[str, Any], after: dict[str, Any]) -> str:
    """A new run id; or, for a stage repaired by `atlas build --repair` that wrote back exactly the parts it had
    (same files, same checksums) and writes nothing else, its old one, so that the stages after it stay done."""
    old = info.get("run_id")
    repaired = info.get("repairing") is not None and info.get("fingerprint") == fp and not stage.paths
    if repaired and isinstance(old, str) and all(before[t] is not None and before[t] == after.get(t) for t in before):
        return old
    return uuid.uuid4().hex


def _up_to_date(stage: Stage, info: dict[str, Any], fp: str, store: AtlasStore) -> bool:
    """Whether the stage whose manifest record is `info` finished for fingerprint `fp` and its outputs are there."""
    return info.get("status") == "done" and info.get("fingerprint") == fp and outputs_present(stage, store)


def stages_to_run(names: list[str], store: AtlasStore, cfg: AtlasConfig) -> list[str]:
    """Which of `names` (in run order) a run would not skip: those not up to date, and everything after one
    that runs and depends on it."""
    out: list[str] = []
    for name in names:
        stage = STAGES[name]
        if any(d in out for d in stage.deps) or not _up_to_date(
            stage, store.stage(name), fingerprint(stage, cfg, store), store
        ):
            out.append(name)
    return out


def _record_failure(store: AtlasStore, name: str, e: BaseException, seconds: float) -> None:
    """Record stage `name` as failed, with the error's one line (a rerun resumes it like an unfinished one)."""
    from jobs.cli_common import one_line

    def mark_failed(m: dict[str, Any]) -> None:
        record = m["stages"][name]
        record.update(status="failed", finished=_now(), seconds=round(seconds, 2), error=one_line(e))

    try:
        store.update_manifest(mark_failed)
    except Exception:  # noqa: BLE001 - the stage's own error is what the caller raises and reports
        pass


def _short(summary: dict[str, Any]) -> str:
    rows = summary.get("rows", {})
    if "listed" in summary:  # embed: every listed input is embedded or skipped with an `errors` row
        skipped = f", {rows['errors']:,} skipped (see errors)" if rows.get("errors") else ", none skipped"
        return f"{summary['listed']:,} listed, {rows['embeddings']:,} embedded{skipped}"
    return ", ".join(f"{k} {v:,}" for k, v in rows.items()) or "ok"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def preflight(name: str, cfg: AtlasConfig) -> None:
    """Check what a stage reads from outside the atlas before the stage touches the atlas (raises AtlasError)."""
    if name == "embed" and not cfg.data.source.startswith("builtin:"):
        from atlas.models.preflight import check_clip
        from atlas.sources import check_source, source_kind
        from jobs.embed import source_uri

        uri = source_uri(cfg)
        check_source(uri, check_clip(cfg.models.clip) if source_kind(uri)[0] == "embeddings" else None)


def check_models(names: list[str], cfg: AtlasConfig) -> None:
    """Refuse a model spec that these stages load and that cannot load here (an unknown built-in, an
    architecture or pretrained tag open_clip does not know, weights not cached while offline, a folder without
    its config), and a decoder of another width than the CLIP model: checked for all the stages of a build
    before the first one runs, not when an actor fails to start."""
    from atlas.models.preflight import check_clip, check_decoder, check_widths

    wanted = {spec for name in names for spec in MODELS.get(name, ())}
    clip_width = check_clip(cfg.models.clip) if "clip" in wanted else None
    if "decoder" in wanted:
        check_widths(cfg.models.clip, clip_width, cfg.models.decoder, check_decoder(cfg.models.decoder))


MODELS: dict[str, tuple[str, ...]] = {"embed": ("clip",), "render": ("clip", "decoder"), "directions": ("clip",)}


def _record_build(m: dict[str, Any], cfg: AtlasConfig) -> None:
    import importlib.metadata as md

    m["config"] = cfg.model_dump(mode="json")
    versions = {}
    for pkg in ("clip-feature-atlas", "torch", "open_clip_torch", "diffusers", "ray", "pyarrow", "duckdb", "faiss-cpu"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    m["versions"] = versions
    m["models"] = {"clip": cfg.models.clip, "decoder": cfg.models.decoder}
