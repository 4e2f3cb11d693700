"""Shared test set-up: no network, built-in models cached once per test session."""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def atlas_cache(tmp_path_factory: pytest.TempPathFactory):
    """Built-in models and data are made once for the session, in a temporary cache."""
    path = tmp_path_factory.mktemp("atlas-cache")
    os.environ["ATLAS_CACHE"] = str(path)
    return path
