"""`atlas diff`: compare two atlases' SAEs (or an atlas and an SAE file); `atlas bench diff` at the seed's shape."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from jobs.cli_common import format_table, user_errors


def diff_command(
    a: Annotated[Path, typer.Argument(help="atlas A")],
    b: Annotated[Path, typer.Argument(help="atlas B, or an SAE that `atlas import-sae` reads (run over A's images)")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="folder for the diff tables (default: atlas A itself)")
    ] = None,
    k: Annotated[int, typer.Option(help="nearest decoder neighbours per feature (candidate parts)")] = 8,
    match_cosine: Annotated[float, typer.Option(help="least decoder cosine of a one-to-one match")] = 0.7,
    match_correlation: Annotated[float, typer.Option(help="least activation correlation of a match")] = 0.3,
    group_cosine: Annotated[float, typer.Option(help="least cosine of a split/merge fit")] = 0.9,
    group_correlation: Annotated[float, typer.Option(help="least correlation of a whole with its parts' sum")] = 0.7,
    memory_limit: Annotated[str, typer.Option(help="DuckDB memory for the co-activation pass")] = "2GB",
) -> None:
    """Which features two SAEs share (matched), which split, merged, appeared (new) or died (gone)."""
    from atlas.diff.compare import DiffSettings, diff_sides
    from atlas.diff.report import write_diff
    from atlas.diff.sides import open_atlas_side, open_sae_side
    from atlas.errors import AtlasError
    from atlas.store import AtlasStore

    settings = DiffSettings(
        k=k,
        match_cosine=match_cosine,
        match_correlation=match_correlation,
        group_cosine=group_cosine,
        group_correlation=group_correlation,
        memory_limit=memory_limit,
    )
    target = AtlasStore(out or a)
    target.manifest()  # refuses a newer format before any work
    target.ensure_writable()
    side_a = open_atlas_side(a)
    if not b.exists():
        raise AtlasError(f"{b}: no such atlas or SAE")
    with tempfile.TemporaryDirectory(prefix="atlas-diff-") as work:
        is_atlas = AtlasStore(b).is_atlas()
        side_b = open_atlas_side(b) if is_atlas else open_sae_side(b, side_a, Path(work))
        result = diff_sides(side_a, side_b, settings, say=typer.echo)
    record = write_diff(target, result)
    typer.echo(format_table(result.summary, "table"))
    typer.echo(
        f"wrote diff_matches ({result.matches.num_rows:,} rows), diff_summary, diff_cosines to {target.root} in "
        f"{record['seconds']['total']:.1f} s; query them with `atlas sql --atlas {out or a} ...`"
    )


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this module's commands to the `atlas` app and its `bench` group."""
    from jobs.bench_diff import bench_diff

    app.command("diff")(user_errors(diff_command))
    bench.command("diff")(user_errors(bench_diff))
