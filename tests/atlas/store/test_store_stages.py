"""Stage status (atlas.store.stages): a missing stage is a StageMissing that says what is missing; the CLI adds
which command to run."""

from __future__ import annotations

import pickle

import pytest
from typer.testing import CliRunner

from atlas.errors import AtlasError, StageMissing
from atlas.store import AtlasStore
from jobs.cli import app
from jobs.cli_common import report_failure, set_debug


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("ATLAS_DEBUG", raising=False)
    set_debug(False)


@pytest.fixture
def store(tmp_path) -> AtlasStore:
    store = AtlasStore(tmp_path / "atlas")
    store.update_manifest(lambda m: m["stages"].update(train={"status": "running", "fingerprint": "f"}))
    return store


@pytest.mark.parametrize("stage", ["embed", "train"])  # never ran; started but not finished
def test_a_missing_stage_names_it_and_not_the_command(store, stage):
    with pytest.raises(StageMissing) as info:
        store.require_stage(stage, "'featurize'")
    e = info.value
    assert isinstance(e, AtlasError) and (e.stage, e.for_what, e.atlas) == (stage, "'featurize'", store.uri)
    assert str(e) == f"{store.uri}: 'featurize' needs the '{stage}' stage first"
    assert "atlas build" not in str(e) and "run `" not in str(e)
    again = pickle.loads(pickle.dumps(e))  # how it comes back from a Ray task
    assert type(again) is StageMissing and str(again) == str(e) and again.stage == stage


def test_a_done_stage_is_its_record(store):
    store.update_manifest(lambda m: m["stages"].update(embed={"status": "done", "run_id": "r"}))
    assert store.require_stage("embed", "'train'") == {"status": "done", "run_id": "r"}
    assert store.stage("render") == {}


def test_report_failure_adds_the_command_hint(store, capsys):
    try:
        store.require_stage("embed", "'import-sae'")
    except StageMissing as e:
        assert report_failure(e) == 2
    assert capsys.readouterr().err == (
        f"error: {store.uri}: 'import-sae' needs the 'embed' stage first (run `atlas embed` or `atlas build`)\n"
    )
    assert report_failure(AtlasError("plain")) == 2
    assert capsys.readouterr().err == "error: plain\n"  # other user mistakes get no hint


def test_the_cli_prints_the_hint(store, tmp_path):
    res = CliRunner().invoke(app, ["import-sae", str(tmp_path / "no-sae"), "--atlas", str(store.root)])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {store.uri}: 'import-sae' needs the 'embed' stage first (run `atlas embed` or `atlas build`)"
    ]
