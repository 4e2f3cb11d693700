"""Generation-plane commands: steering, concepts, interpolation; the render benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from atlas.errors import AtlasError
from atlas.session import ModelSession
from jobs.cli_common import AtlasDir, existing_atlas, user_errors

ImageRef = Annotated[str, typer.Option("--image", "-i", help="an image file, or an image_id of the atlas")]
OutFile = Annotated[Path, typer.Option("--out", "-o", help="the PNG strip to write")]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda")]


def _scales(scales: str | None, max_scale: float, frames: int) -> list[float]:
    from atlas.steering import symmetric_scales

    if scales is None:
        return symmetric_scales(max_scale, frames)
    try:
        values = [float(s) for s in scales.split(",") if s.strip()]
    except ValueError:
        raise AtlasError(f"--scales {scales!r}: give comma-separated numbers, e.g. -1,0,1") from None
    if not values:
        raise AtlasError("--scales: no scales given")
    return values


def _session(atlas: Path, device: str) -> ModelSession:
    return ModelSession(existing_atlas(atlas), device=device)


def _report(strip, out: Path) -> None:
    strip.save(out)
    for note in strip.notes:
        typer.echo(note)
    typer.echo(f"wrote {out}: {len(strip.images)} frames ({', '.join(strip.labels)})")


def steer(
    atlas: AtlasDir = Path("atlas-out"),
    image: ImageRef = "",
    direction: Annotated[str | None, typer.Option(help="a stored contrastive direction, e.g. red-blue")] = None,
    feature: Annotated[
        int | None, typer.Option(help="an SAE feature: raise its activation by scale x its max activation")
    ] = None,
    concept: Annotated[
        int | None, typer.Option(help="a concept of the image (see `atlas concepts`): multiply it by 1 + scale")
    ] = None,
    concept_along: Annotated[
        str | None, typer.Option(help="the concept most aligned with this stored direction (e.g. red-blue: the colour)")
    ] = None,
    max_scale: Annotated[
        float, typer.Option(help="strip scales run from -max to +max (the middle, 0, is unchanged)")
    ] = 1.0,
    frames: Annotated[int, typer.Option(help="frames in the strip (made odd)")] = 5,
    scales: Annotated[
        str | None, typer.Option(help="explicit comma-separated scales instead of --max-scale/--frames")
    ] = None,
    keep_error: Annotated[bool, typer.Option(help="keep the SAE reconstruction error when editing features")] = True,
    min_share: Annotated[float, typer.Option(help="concepts: minimum activation-mass share per concept")] = 0.1,
    seed: int = 0,
    out: OutFile = Path("steer.png"),
    device: Device = "auto",
) -> None:
    """Steer an image along a direction, a feature or one of its concepts and write the rendered strip."""
    from atlas.generation import steer as run

    if not image:
        raise AtlasError("--image: give an image file or an image_id of the atlas")
    strip = run(
        _session(atlas, device), image, direction=direction, feature=feature, concept=concept,
        concept_along=concept_along, scales=_scales(scales, max_scale, frames), keep_error=keep_error,
        min_share=min_share, seed=seed,
    )  # fmt: skip
    _report(strip, out)


def concepts(
    atlas: AtlasDir = Path("atlas-out"),
    image: ImageRef = "",
    min_share: Annotated[
        float, typer.Option(help="every concept holds at least this share of the activation mass")
    ] = 0.1,
    k_max: Annotated[int, typer.Option(help="the largest number of concepts tried")] = 8,
    keep_error: Annotated[bool, typer.Option(help="keep the SAE reconstruction error when removing a concept")] = True,
    seed: int = 0,
    out: OutFile = Path("concepts.png"),
    device: Device = "auto",
) -> None:
    """Group an image's active features into concepts; write a strip of the image with each concept removed."""
    from atlas.generation import concepts_strip

    if not image:
        raise AtlasError("--image: give an image file or an image_id of the atlas")
    if k_max < 1:
        raise AtlasError(f"--k-max {k_max}: must be at least 1")
    found, strip = concepts_strip(
        _session(atlas, device), image, min_share=min_share, k_max=k_max, keep_error=keep_error, seed=seed
    )
    for c in found:
        members = ", ".join(f"{f} ({a:.2f})" for f, a in zip(c.feature_ids, c.activations, strict=True))
        typer.echo(f"concept {c.concept_id}: {c.mass_share:6.1%} of the mass, label {c.label!r}, features {members}")
    _report(strip, out)


def interpolate(
    atlas: AtlasDir = Path("atlas-out"),
    image: ImageRef = "",
    to: Annotated[str | None, typer.Option(help="the other image (file or image_id)")] = None,
    text: Annotated[str | None, typer.Option(help="unCLIP text diff: the target text")] = None,
    text0: Annotated[str, typer.Option(help="unCLIP text diff: the baseline text")] = "",
    noise_to_seed: Annotated[
        int | None, typer.Option(help="interpolate the starting noise towards this seed's")
    ] = None,
    method: Annotated[str, typer.Option(help="linear, normalized_linear or slerp")] = "slerp",
    frames: Annotated[int, typer.Option(help="frames in the strip, endpoints included")] = 5,
    theta_max: Annotated[float, typer.Option(help="text diff: the largest slerp angle fraction")] = 0.5,
    seed: int = 0,
    out: OutFile = Path("interpolate.png"),
    device: Device = "auto",
) -> None:
    """Interpolate an image to another image, along a text diff, or between two noises; write the strip."""
    from atlas.generation import interpolate_strip

    if not image:
        raise AtlasError("--image: give an image file or an image_id of the atlas")
    strip = interpolate_strip(
        _session(atlas, device), image, to=to, text=text, text0=text0 if text is not None else None,
        noise_to_seed=noise_to_seed, method=method, frames=frames, theta_max=theta_max, seed=seed,
    )  # fmt: skip
    _report(strip, out)


def bench_render(
    out: Annotated[Path, typer.Option("--out", help="folder for render.json")] = Path("benchmarks"),
    decoder: Annotated[str, typer.Option(help="decoder spec")] = "builtin:random-decoder",
    clip: Annotated[str, typer.Option(help="CLIP spec (for the template and fidelity)")] = "builtin:random-clip",
    n_icons: Annotated[int, typer.Option(help="icons per timed run")] = 32,
    batch_size: Annotated[int, typer.Option(help="icons per pipeline call in the batched run")] = 16,
    steps: int = 12,
    size: int = 32,
    repeat: int = 2,
    device: Device = "auto",
) -> None:
    """Icons/s of the batched icon renderer against one pipeline call per feature, and the projected wall
    time for 60,000 icons on 1 and 8 GPUs."""
    from atlas.benchmark import write_result
    from atlas.models.device import resolve_device
    from jobs.bench_render import run_bench_render

    dev = str(resolve_device(device))
    result = run_bench_render(decoder, clip, n_icons, batch_size, steps, size, repeat, dev)
    path = write_result(out, "render", result, dev)
    typer.echo(
        f"batched {result['batched_icons_per_s']:.2f} icons/s vs one call per feature "
        f"{result['per_feature_icons_per_s']:.2f} icons/s: {result['ratio']:.2f}x on {result['device_kind']}"
    )
    proj = result["projection_60k"]
    typer.echo(
        f"60,000 icons: {proj['one_gpu_hours']:.2f} h on 1 GPU, {proj['eight_gpu_hours']:.2f} h on 8 ({proj['basis']})"
    )
    typer.echo(f"wrote {path}")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this module's commands to the `atlas` app and its `bench` group."""
    app.command("steer")(user_errors(steer))
    app.command("concepts")(user_errors(concepts))
    app.command("interpolate")(user_errors(interpolate))
    bench.command("render")(user_errors(bench_render))
