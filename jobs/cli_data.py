"""Data-plane commands: importing SAEs trained elsewhere; benchmarks of embed, train and featurize."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this module's commands to the `atlas` app and its `bench` group."""
