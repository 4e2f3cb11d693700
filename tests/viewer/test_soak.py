"""The soak test: the viewer under 20 concurrent sessions plus hostile ones (malformed query strings, SQL past
its time limit, oversized uploads). Long, so skipped unless ATLAS_SOAK=1; `atlas bench soak --minutes 10`
is the recorded run (benchmarks/soak.json)."""

from __future__ import annotations

import os

import pytest

pytestmark = [
    pytest.mark.soak,
    pytest.mark.skipif(os.environ.get("ATLAS_SOAK") != "1", reason="long: set ATLAS_SOAK=1 (and ATLAS_SOAK_MINUTES)"),
]


def test_the_viewer_survives_load_and_hostile_input_without_leaking() -> None:
    from jobs.bench_soak import run_soak

    result = run_soak(float(os.environ.get("ATLAS_SOAK_MINUTES", "2")), sessions=20, hostile=3)
    assert result["server_answers_after"]
    assert result["n_tracebacks"] == 0, result["tracebacks_seen"]
    assert not result["session_failures"] and not result["unclean_finishes"], result
    assert result["oversized_uploads"]["accepted"] == 0
    assert any("time limit" in m for m in result["messages_shown"]), result["messages_shown"]
    assert result["rss_growth"] <= 1.10, result["server_rss_mb"]
