"""The `atlas` command line: build the whole atlas or one stage, query it, describe it, view it.

User mistakes (a config value, a missing folder, bad SQL) end with one line on stderr and exit status 2. Any
other failure is a bug: one line that says so and exit status 1, or its traceback with `atlas --debug ...` or
ATLAS_DEBUG=1 in the environment.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from atlas.config import AtlasConfig, load_config
from atlas.errors import AtlasError
from atlas.store import AtlasStore
from atlas.uploads import UPLOADS
from jobs import cli_data, cli_diff, cli_generate, cli_scale, cli_serve, stopping
from jobs.cli_common import (
    AtlasDir,
    ConfigFile,
    config_for,
    existing_atlas,
    format_table,
    report_failure,
    set_debug,
    user_errors,
)

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="CLIP Feature Atlas: SAE features of CLIP embeddings, browsable."
)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="print the full traceback of a failure that is not a user mistake")
    ] = False,
) -> None:
    set_debug(debug)


def _say(msg: str) -> None:
    typer.echo(msg)


def _runners() -> dict[str, Callable[[AtlasConfig, AtlasStore], dict[str, Any]]]:
    from jobs.directions import run_directions
    from jobs.embed import run_embed
    from jobs.featurize import run_featurize
    from jobs.index import run_index
    from jobs.render import run_render
    from jobs.train import run_train

    return {
        "embed": run_embed,
        "train": run_train,
        "featurize": run_featurize,
        "render": run_render,
        "directions": run_directions,
        "index": lambda cfg, store: run_index(store, cfg.index),
    }


def _open_for_writing(out: Path) -> AtlasStore:
    store = AtlasStore(out)  # a local path, or a URI (file://, s3://, ...) through pyarrow filesystems
    store.manifest()  # refuses atlases of a newer format before anything is written
    store.ensure_writable()
    store.root  # noqa: B018 - the SAE, indexes and catalog need a POSIX path: refuse an unmounted bucket now
    return store


def _run_stages(names: list[str], cfg: AtlasConfig, store: AtlasStore) -> int:
    from jobs.build import check_models, run_stage, stages_to_run
    from jobs.runtime import init_ray

    check_models(stages_to_run(names, store, cfg), cfg)
    runners = _runners()  # the config and versions are recorded when a stage first runs (jobs.build)
    ran = 0
    ray_started = False
    for name in names:

        def run(name: str = name) -> dict[str, Any]:
            nonlocal ray_started
            if not ray_started and name != "index":
                init_ray()
                ray_started = True
            return runners[name](cfg, store)

        ran += run_stage(name, cfg, store, run, _say)
    return ran


@app.command()
@user_errors
def build(
    config: ConfigFile = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="the atlas directory to write")] = Path("atlas-out"),
    repair: Annotated[
        bool, typer.Option("--repair", help="run `atlas check` first and redo exactly the damaged parts")
    ] = False,
) -> None:
    """Run every stage (skipping finished work) and print a summary."""
    from jobs.build import STAGES

    store = _open_for_writing(out)
    cfg = config_for(store, config) if repair else load_config(config)
    if repair and not _remove_damaged(store):
        return
    t0 = time.perf_counter()
    ran = _run_stages(list(STAGES), cfg, store)
    elapsed = time.perf_counter() - t0
    if ran == 0:
        typer.echo(f"\nNothing to do: {out} is up to date.")
    typer.echo("")
    typer.echo(_summary(store))
    typer.echo(f"\n{'built' if ran else 'checked'} in {elapsed:.1f}s. View it with:  atlas view --atlas {out}")
    if repair:
        _report_check(store, "after the repair")


def _remove_damaged(store: AtlasStore) -> bool:
    """The first half of `build --repair`: check, and take the damaged parts away; whether to build."""
    from atlas.check import check_atlas
    from jobs.repair import remove_damaged

    if not store.is_atlas():
        raise AtlasError(f"{store.uri}: not an atlas (no manifest.json): nothing to repair")
    report = check_atlas(store)
    for problem in report.problems:
        typer.echo(problem.line())
    if report.ok:
        typer.echo(f"{report.summary()}: nothing to repair")
        return False
    remove_damaged(store, report, _say)
    return True


def _report_check(store: AtlasStore, when: str) -> None:
    from atlas.check import check_atlas

    report = check_atlas(store)
    for problem in report.problems:
        typer.echo(problem.line())
    for note in report.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"{when}: {report.summary()}")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@user_errors
def check(atlas: AtlasDir = Path("atlas-out")) -> None:
    """Check the atlas (fsck): every committed part is there, reads, and has its recorded rows, checksum and
    schema; the tables agree with each other. Exit status 1 when anything is wrong."""
    _report_check(existing_atlas(atlas), str(atlas))


def _stage_command(name: str) -> None:
    from jobs.build import STAGES, downstream

    def command(atlas: AtlasDir = Path("atlas-out"), config: ConfigFile = None) -> None:
        store = _open_for_writing(atlas)
        cfg = config_for(store, config)
        _run_stages([name], cfg, store)
        later = [s for s in downstream(name)[1:]]
        if later:
            typer.echo(f"stages that depend on it and will rerun with `atlas build`: {', '.join(later)}")

    command.__doc__ = f"Run the {name} stage: {STAGES[name].description}."
    command.__name__ = name
    app.command(name=name)(user_errors(command))


for _name in ("embed", "train", "featurize", "render", "directions", "index"):
    _stage_command(_name)


@app.command()
@user_errors
def sql(
    query: Annotated[str, typer.Argument(help="one read-only SQL statement over the atlas views")],
    atlas: AtlasDir = Path("atlas-out"),
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
    limit: Annotated[int, typer.Option(help="at most this many rows")] = 1000,
    timeout: Annotated[float, typer.Option(help="stop the query after this many seconds")] = 30.0,
    config: ConfigFile = None,
) -> None:
    """Query the atlas with SQL (read-only; memory, threads and spilling as in the config's [sql] section)."""
    from atlas.catalog import SqlLimits, cap_process_memory, still_running
    from atlas.catalog import query as run_query

    if format not in ("table", "csv", "json"):
        raise AtlasError(f"--format {format!r}: use table, csv or json")
    store = existing_atlas(atlas)
    limits = SqlLimits.of(config_for(store, config).sql)
    cap_process_memory(limits)
    try:
        result = run_query(store, query, limit=limit, timeout=timeout, limits=limits)
    except AtlasError as e:
        if still_running():  # a statement DuckDB could not interrupt: exit without tearing it down
            code = report_failure(e)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        raise
    typer.echo(format_table(result, format))


@app.command("eval")
@user_errors
def evaluate(atlas: AtlasDir = Path("atlas-out")) -> None:
    """Score the atlas against ground-truth labels (toy-world data): best feature per factor value, icon fidelity."""
    from jobs.evaluate import run_eval

    store = existing_atlas(atlas)
    result = run_eval(config_for(store, None), store)
    typer.echo(format_table(result["table"].drop_columns(["n_images"]), "table"))
    by_factor = ", ".join(f"{f} {v:.0%}" for f, v in result["captured_by_factor"].items())
    typer.echo(f"\nfactor values captured by a feature (AUROC >= 0.95): {result['captured']:.0%} ({by_factor})")
    if result["captured_of_decodable"] is not None:
        typer.echo(
            f"values a linear probe on the embeddings decodes (AUROC >= 0.95): {result['decodable']:.0%}; "
            f"captured by a feature among those: {result['captured_of_decodable']:.0%}"
        )
    fid = result["icon_fidelity"]
    if fid:
        typer.echo(f"icon fidelity over {fid['icons']} icons: rank 1 {fid['rank1']:.1%}, top 5 {fid['top5']:.1%}")
    typer.echo(f"written to {store.table_dir('evaluation')}")


@app.command()
@user_errors
def info(atlas: AtlasDir = Path("atlas-out"), as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Describe an atlas: stages, row counts, SAE metrics, models."""
    store = existing_atlas(atlas)
    if as_json:
        typer.echo(json.dumps(store.manifest(), indent=2, default=str))
    else:
        typer.echo(_summary(store))


def _summary(store: AtlasStore) -> str:
    m = store.manifest()
    stages = m.get("stages", {})
    lines = [f"atlas {store.root}"]
    models = m.get("models", {})
    if models:
        lines.append(f"  models: clip {models.get('clip')}, decoder {models.get('decoder')}")
    from jobs.build import STAGES

    for name in sorted(stages, key=lambda n: list(STAGES).index(n) if n in STAGES else len(STAGES)):
        s = stages[name]
        error = f"  {s['error']}" if s.get("status") == "failed" and s.get("error") else ""
        lines.append(f"  {name:<10} {s.get('status', '?'):<8} {s.get('seconds') or 0:>7.1f}s{error}")
    from schemas import TABLES

    counts = {t: store.count_rows(t) for t in TABLES}
    lines.append("  rows: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    train = stages.get("train", {}).get("summary", {})
    hold = train.get("holdout") or {}
    if train:
        lines.append(
            f"  SAE: {train.get('n_features', '?')} features; held-out explained variance "
            f"{hold.get('explained_variance', float('nan')):.3f}, L0 {hold.get('l0', float('nan')):.1f}, "
            f"mse {hold.get('mse', float('nan')):.4g}"
        )
    feat = stages.get("featurize", {}).get("summary", {})
    if feat:
        lines.append(
            f"  features: {feat['alive']:,} alive ({feat['dead_fraction']:.1%} dead), "
            f"L0 {feat['l0']:.1f} over all images"
        )
    fid = stages.get("render", {}).get("summary", {}).get("fidelity")
    if fid:
        lines.append(f"  icons: fidelity rank 1 for {fid['rank1']:.1%}, top 5 for {fid['top5']:.1%}")
    return "\n".join(lines)


@app.command()
@user_errors
def view(
    atlas: AtlasDir = Path("atlas-out"),
    port: Annotated[int, typer.Option(help="port to serve on")] = 8501,
    address: Annotated[str, typer.Option(help="address to bind (loopback by default)")] = "127.0.0.1",
    compare_url: Annotated[
        str, typer.Option(help="the viewer of the other atlas of a diff: the Diff page links its features there")
    ] = "",
) -> None:
    """Open the atlas in the Streamlit viewer."""
    store = existing_atlas(atlas)
    app_path = Path(__file__).resolve().parent.parent / "viewer" / "server.py"
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(app_path),
        "--server.headless", "true", "--server.address", address, "--server.port", str(port),
        "--browser.gatherUsageStats", "false", "--server.maxUploadSize", str(UPLOADS.max_mib),
        "--client.toolbarMode", "viewer",  # no Deploy, rerun or clear-cache: a served atlas is not a dev session
        # Streamlit forces a full gc.collect() after every page run: with torch and faiss in the heap that is a
        # third of the server's time under many sessions (py-spy); Python's own generational collector stays on.
        "--runner.postScriptGC", "false",
        "--server.fileWatcherType", "none",  # served code does not change; the watcher's threads cost CPU
        "--", "--atlas", str(store.root),
    ]  # fmt: skip
    typer.echo(f"serving {store.root} on http://{address}:{port}")
    sys.stdout.flush()
    # The server replaces this process (exec): a signal to `atlas view` reaches the server itself, so stopping
    # it frees the port (a child server would outlive a SIGTERM to its parent).
    env = {**os.environ, "ATLAS_DIR": str(store.root)}
    if compare_url:
        env["ATLAS_COMPARE_URL"] = compare_url.rstrip("/")
    os.execve(sys.executable, cmd, env)


toy = typer.Typer(no_args_is_help=True, help="Train the toy world's models (the embedded default's CLIP and decoder).")
app.add_typer(toy, name="toy")


@toy.command("train-clip")
@user_errors
def toy_train_clip(
    out: Annotated[Path, typer.Option("--out", help="model folder to write")] = Path("atlas/toyworld/weights/toy-clip"),
    steps: int = 2000,
    batch_size: int = 256,
    n_train: int = 40_000,
    device: str = "auto",
) -> None:
    """Train the toy CLIP from scratch on toy-world image/caption pairs."""
    from jobs.toy import run_train_clip

    metrics = run_train_clip(out, steps, batch_size, n_train, device)
    typer.echo(f"wrote {out}: zero-shot accuracy {json.dumps(metrics['zero_shot_accuracy'])}")


@toy.command("train-decoder")
@user_errors
def toy_train_decoder(
    clip: Annotated[Path, typer.Option("--clip", help="the toy CLIP folder")] = Path("atlas/toyworld/weights/toy-clip"),
    out: Annotated[Path, typer.Option("--out", help="model folder to write")] = Path(
        "atlas/toyworld/weights/toy-decoder"
    ),
    steps: int = 6000,
    batch_size: int = 64,
    n_train: int = 40_000,
    max_minutes: Annotated[float, typer.Option(help="stop training after this many minutes (0 = run all steps)")] = 0.0,
    lr: float = 5e-4,
    init: Annotated[
        Path | None, typer.Option(help="go on training from this toy-decoder folder instead of from scratch")
    ] = None,
    device: str = "auto",
) -> None:
    """Train the toy decoder on the toy CLIP's image embeddings."""
    from jobs.toy import run_train_decoder

    metrics = run_train_decoder(clip, out, steps, batch_size, n_train, device, max_minutes, lr, init)
    typer.echo(f"wrote {out}: re-embedded accuracy {json.dumps(metrics['reembedded_accuracy'])}")


bench = typer.Typer(
    no_args_is_help=True, help="Benchmarks: ratios against a bare baseline run in the same process, written as JSON."
)
app.add_typer(bench, name="bench")

# Commands that live in their own modules, one per plane.
for _module in (cli_data, cli_diff, cli_generate, cli_scale, cli_serve):
    _module.register(app, bench)


def main() -> None:
    stopping.install()
    try:
        app()
    # Deliberately broad: the last line of reporting, for what fails outside a command (its options, say).
    except Exception as e:  # noqa: BLE001
        sys.exit(report_failure(e))


if __name__ == "__main__":
    main()
