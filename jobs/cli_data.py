"""Data-plane commands: importing SAEs trained elsewhere; benchmarks of embed, train and featurize."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from jobs.cli_common import AtlasDir, ConfigFile, config_for, existing_atlas, user_errors

if TYPE_CHECKING:
    from atlas.config import AtlasConfig
    from atlas.models.sae.autoencoder import SparseAutoencoder
    from atlas.store import AtlasStore


def import_sae_command(
    source: Annotated[
        Path, typer.Argument(help="a SAELens folder (cfg.json + sae_weights.safetensors) or a state-dict file")
    ],
    atlas: AtlasDir = Path("atlas-out"),
    config: ConfigFile = None,
    scaling_factor: Annotated[
        float | None,
        typer.Option(help="SAELens normalize_activations=expected_average_only_in: the input scaling factor"),
    ] = None,
) -> None:
    """Put an SAE trained elsewhere into an atlas (in place of `atlas train`); featurize/render/view then use it."""
    from atlas.import_sae import check_width, import_sae

    store = existing_atlas(atlas)
    store.require_stage("embed", "'import-sae'")
    cfg = config_for(store, config)
    sae = import_sae(source, scaling_factor)
    check_width(sae, store.embedding_dim(), str(source))
    metrics = _evaluate_on_atlas(sae, store)
    _write_as_trained(sae, metrics, store)
    summary = {"imported": str(source), "kind": sae.cfg.kind, "n_features": sae.cfg.n_features, "holdout": metrics}
    _mark_train_done(store, cfg, summary)
    typer.echo(
        f"imported {sae.cfg.kind} SAE ({sae.cfg.d_in} -> {sae.cfg.n_features}) into {store.root}: "
        f"on this atlas's {metrics['n']:,} embeddings explained variance {metrics['explained_variance']:.3f}, "
        f"l0 {metrics['l0']:.1f}, dead {metrics['dead_fraction']:.1%}; next: atlas featurize --atlas {atlas}"
    )


def _evaluate_on_atlas(sae: SparseAutoencoder, store: AtlasStore) -> dict[str, Any]:
    """The SAE's held-out metrics over every embedding of the atlas."""
    from atlas.models.device import resolve_device
    from atlas.train import evaluate_sae, parquet_batches

    parts = [str(p) for p in store.parts("embeddings")]
    return evaluate_sae(sae, (x for _, x in parquet_batches(parts, 4096, 1, 0)), resolve_device("cpu"))


def _write_as_trained(sae: SparseAutoencoder, metrics: dict[str, Any], store: AtlasStore) -> None:
    """Replace the train stage's outputs: the SAE (with its held-out metrics) and a one-row train log."""
    import numpy as np

    from atlas.store import table_from_rows
    from jobs.build import STAGES, clear_outputs

    clear_outputs(STAGES["train"], store)
    sae.save(store.sae_dir, extra={"holdout": metrics})
    row = {
        "step": 0,
        "samples": 0,
        "split": "holdout",
        **{k: metrics[k] for k in ("loss", "mse", "l1", "l0", "explained_variance", "dead_fraction")},
    }
    store.write_part(
        "train_log",
        "part-00000",
        table_from_rows("train_log", {k: np.array([v]) if not isinstance(v, str) else [v] for k, v in row.items()}),
    )


def _mark_train_done(store: AtlasStore, cfg: AtlasConfig, summary: dict[str, Any]) -> None:
    """Record the train stage as done: downstream stages see a new run id and rerun."""
    import uuid

    from jobs.build import STAGES, _now, fingerprint

    fp = fingerprint(STAGES["train"], cfg, store)

    def mark_done(m: dict) -> None:
        m["stages"]["train"] = {
            "status": "done",
            "fingerprint": fp,
            "run_id": uuid.uuid4().hex,
            "started": _now(),
            "finished": _now(),
            "seconds": 0.0,
            "summary": summary,
        }

    store.update_manifest(mark_done)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this module's commands to the `atlas` app and its `bench` group."""
    from jobs.bench_data import bench_embed, bench_featurize, bench_train

    app.command("import-sae")(user_errors(import_sae_command))
    bench.command("embed")(user_errors(bench_embed))
    bench.command("train")(user_errors(bench_train))
    bench.command("featurize")(user_errors(bench_featurize))
