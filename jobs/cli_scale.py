"""The seed's scale: `atlas planted` (a planted world in clip-retrieval's layout, with its truth), `atlas bench
scale` (every stage at that shape) and `atlas plan` (what a whole atlas will cost, from those figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jobs.cli_common import user_errors


def planted_command(
    out: Annotated[Path, typer.Argument(help="folder to write (img_emb/, metadata/, dictionary.npy, codes/)")],
    images: Annotated[int, typer.Option(help="embeddings to write")] = 200_000,
    features: Annotated[int, typer.Option(help="known unit directions (the true dictionary)")] = 81_920,
    dim: Annotated[int, typer.Option(help="embedding width")] = 1280,
    l0: Annotated[float, typer.Option(help="mean number of directions per embedding")] = 60.0,
    exponent: Annotated[float, typer.Option(help="feature f is drawn with probability ~ (f + 1)^-exponent")] = 0.8,
    noise: Annotated[float, typer.Option(help="Gaussian noise per dimension, relative to 1/sqrt(dim)")] = 0.05,
    rows_per_file: int = 100_000,
    seed: int = 0,
) -> None:
    """Write a planted world at the source study's shape: sparse non-negative combinations of known unit
    directions with power-law frequencies, plus noise, readable as the source `embeddings:<out>`."""
    from atlas.errors import AtlasError
    from atlas.planted import PlantedWorld, write_planted_folder

    for name, value in (
        ("--images", images),
        ("--features", features),
        ("--dim", dim),
        ("--rows-per-file", rows_per_file),
    ):
        if value <= 0:
            raise AtlasError(f"{name} = {value}: must be positive")
    if not 0 < l0 <= features:
        raise AtlasError(f"--l0 = {l0}: must be in (0, --features]")
    world = PlantedWorld(n_features=features, dim=dim, l0=l0, exponent=exponent, noise=noise, seed=seed)
    summary = write_planted_folder(world, out, images, rows_per_file)
    typer.echo(
        f"wrote {out}: {summary['images']:,} embeddings of width {dim} in {summary['files']} files, "
        f"L0 {summary['l0']:.1f} of {features:,} directions (dictionary.npy, codes/)"
    )


def plan_command(
    images: Annotated[int, typer.Option(help="images in the atlas")] = 5_000_000,
    gpus: Annotated[int, typer.Option(help="GPUs (H100) in the cluster")] = 8,
    config: Annotated[
        Path | None, typer.Option("--config", help="atlas config TOML (default: the embedded one)")
    ] = None,
    benchmarks: Annotated[Path, typer.Option(help="folder of benchmark JSON measured on this machine")] = Path(
        "benchmarks"
    ),
    icons: Annotated[int | None, typer.Option(help="icons to render (default: every feature)")] = None,
    icon_size: Annotated[int, typer.Option(help="icon size in pixels (256 or 512)")] = 512,
    cpus_per_gpu: Annotated[int, typer.Option(help="CPU cores decoding JPEGs for each GPU")] = 16,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
) -> None:
    """The time of each stage and of the whole atlas, its bottleneck, disk and memory, each figure with its
    source (the benchmark JSON measured here, or the shipped H100 figures)."""
    import json

    from atlas.config import load_config
    from atlas.plan import CLIP_WIDTH, clip_arch, plan_atlas, read_benchmarks

    cfg = load_config(config)
    n_features = CLIP_WIDTH.get(clip_arch(cfg.models.clip), 0) * cfg.sae.expansion_factor
    plan = plan_atlas(
        images,
        gpus,
        cfg.models.clip,
        cfg.sae.expansion_factor,
        cfg.sae.epochs,
        n_features if icons is None else icons,
        icon_size,
        cpus_per_gpu,
        read_benchmarks(benchmarks),
    )
    if as_json:
        typer.echo(json.dumps(plan.to_dict(), indent=2))
        return
    typer.echo(f"{images:,} images, {cfg.models.clip}, {n_features:,} features, {gpus} GPUs")
    for s in plan.stages:
        typer.echo(f"  {s.stage:<10} {s.seconds:9,.0f} s  {s.bound}  [{s.source}]")
    b = plan.bottleneck
    typer.echo(
        f"  {'total':<10} {plan.total_seconds:9,.0f} s  ({plan.total_seconds / 3600:.2f} h), bottleneck: {b.stage}"
    )
    typer.echo(f"  disk       {plan.disk_bytes / 1e9:9.1f} GB [{plan.disk_source}]")
    typer.echo(f"  memory     {plan.train_memory_gb:9.1f} GB SAE weights, gradients and Adam state in training")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this module's commands to the `atlas` app and its `bench` group."""
    from jobs.bench_scale import bench_scale

    app.command("planted")(user_errors(planted_command))
    app.command("plan")(user_errors(plan_command))
    bench.command("scale")(user_errors(bench_scale))
