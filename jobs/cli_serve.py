"""Serving-plane commands: search over features and images; the search and viewer benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from atlas.errors import AtlasError
from atlas.session import ModelSession
from jobs.cli_common import AtlasDir, existing_atlas, format_table, user_errors

BenchOut = Annotated[Path, typer.Option("--out", help="folder for the result JSON")]


def search(
    text: Annotated[str, typer.Argument(help="words to search for, e.g. red")],
    atlas: AtlasDir = Path("atlas-out"),
    images: Annotated[bool, typer.Option("--images", help="search images instead of features")] = False,
    k: Annotated[int, typer.Option("-k", help="how many results")] = 10,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json")] = "table",
) -> None:
    """Text search through the atlas's CLIP: the features (or images) that best match TEXT."""
    from atlas.search import AtlasSearch  # faiss

    if format not in ("table", "csv", "json"):
        raise AtlasError(f"--format {format!r}: use table, csv or json")
    if not 1 <= k <= 1000:
        raise AtlasError(f"-k {k}: give 1 to 1000")
    store = existing_atlas(atlas)
    searcher = AtlasSearch(ModelSession(store))
    if images:
        hits = searcher.images_for_text(text, k)
        sources = dict(
            zip(
                *(
                    store.read_table("images", ["image_id", "source"]).column(c).to_pylist()
                    for c in ("image_id", "source")
                ),
                strict=True,
            )
        )
        hits = hits.append_column("source", [[sources.get(i) for i in hits.column("image_id").to_pylist()]])
    else:
        hits = searcher.features_for_text(text, k)
    typer.echo(format_table(hits, format))


def bench_search(
    n: Annotated[int, typer.Option(help="vectors in the synthetic set")] = 80_000,
    dim: Annotated[int, typer.Option(help="vector width")] = 1280,
    queries: Annotated[int, typer.Option(help="queries timed and scored")] = 200,
    nprobe: Annotated[int, typer.Option(help="IVF lists probed per query")] = 16,
    out: BenchOut = Path("benchmarks"),
) -> None:
    """Recall@10 and query latency of the approximate (IVF) index against exact search, on a synthetic
    clustered set of N x DIM unit vectors."""
    from atlas.benchmark import write_result
    from jobs.bench_search import run_search_bench

    result = run_search_bench(n, dim, queries, nprobe)
    path = write_result(out, "search", result)
    typer.echo(
        f"{n:,} x {dim}: recall@10 {result['recall_at_10']:.3f}; "
        f"per query exact {result['exact']['ms_per_query']:.2f} ms, "
        f"IVF {result['approximate']['ms_per_query']:.2f} ms ({result['speedup']:.1f}x); written to {path}"
    )


def bench_view(
    features: Annotated[int, typer.Option(help="features in the synthetic atlas")] = 80_000,
    sessions: Annotated[int, typer.Option(help="concurrent sessions in the load run")] = 20,
    requests: Annotated[int, typer.Option(help="page renders per session and page")] = 3,
    out: BenchOut = Path("benchmarks"),
) -> None:
    """p50/p95 page-render latency of the grid, feature, map and image pages on a synthetic atlas, one session
    and SESSIONS concurrent sessions, against a real `atlas view` server on loopback; then the map in Chromium."""
    from atlas.benchmark import write_result
    from jobs.bench_view import run_view_bench

    result = run_view_bench(features, sessions, requests)
    path = write_result(out, "view", result)
    for mode, pages in result["latency_ms"].items():
        line = ", ".join(f"{page} p50 {v['p50']:.0f} ms p95 {v['p95']:.0f} ms" for page, v in pages.items())
        typer.echo(f"{mode}: {line}")
    browser = result["browser_ms"]
    if "skipped" in browser:
        typer.echo(f"Chromium: skipped ({browser['skipped']})")
    else:
        line = ", ".join(
            f"{step} p50 {browser[step]['p50']:.0f} ms"
            for step in ("summary page (baseline)", "map drawn", "hover icon")
        )
        typer.echo(f"Chromium, {browser['points']:,} map points: {line}")
    typer.echo(f"written to {path}")


def bench_soak(
    minutes: Annotated[float, typer.Option(help="how long the load runs")] = 10.0,
    sessions: Annotated[int, typer.Option(help="well-behaved concurrent sessions")] = 20,
    hostile: Annotated[int, typer.Option(help="sessions sending malformed queries and slow SQL")] = 3,
    features: Annotated[int, typer.Option(help="features in the synthetic atlas")] = 80_000,
    out: BenchOut = Path("benchmarks"),
) -> None:
    """The viewer under SESSIONS concurrent sessions and hostile input for MINUTES: pages served, tracebacks
    seen, the server's memory growth; exits 1 if a session saw a traceback or memory grew over 10 %."""
    from atlas.benchmark import write_result
    from jobs.bench_soak import run_soak

    result = run_soak(minutes, sessions, hostile, features)
    path = write_result(out, "soak", result)
    rss = result["server_rss_mb"]
    typer.echo(
        f"{result['pages']:,} pages in {minutes:g} min ({result['pages_per_s']:.1f}/s, p95 "
        f"{result['latency_ms']['p95']:.0f} ms); tracebacks {result['n_tracebacks']}, failed sessions "
        f"{len(result['session_failures'])}; server RSS {rss['after_warmup']:.0f} -> {rss['after_run']:.0f} MiB "
        f"({result['rss_growth']:.3f}x); written to {path}"
    )
    ok = result["server_answers_after"] and not result["n_tracebacks"] and not result["session_failures"]
    if not ok or result["rss_growth"] > 1.10:
        raise typer.Exit(1)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this module's commands to the `atlas` app and its `bench` group."""
    app.command("search")(user_errors(search))
    bench.command("search")(user_errors(bench_search))
    bench.command("view")(user_errors(bench_view))
    bench.command("soak")(user_errors(bench_soak))
