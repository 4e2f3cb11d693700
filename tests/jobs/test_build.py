"""The build's bookkeeping around a stage (jobs/build.py): a stage that raises is recorded as failed with its
one-line error, and a rerun runs it again; model specs are checked only for the stages a run will not skip."""

from __future__ import annotations

import pytest

from atlas.config import AtlasConfig, config_from_dict
from atlas.errors import AtlasError
from atlas.store import AtlasStore
from jobs.build import check_models, run_stage, stages_to_run


def _raise(e: BaseException):
    def run() -> dict:
        raise e

    return run


@pytest.mark.parametrize(
    "error, line",
    [
        (AtlasError("models.clip = 'x': no such model folder"), "models.clip = 'x': no such model folder"),
        (ZeroDivisionError("division by zero\nmore"), "ZeroDivisionError: division by zero"),
        (KeyboardInterrupt(), "interrupted (KeyboardInterrupt)"),
    ],
)
def test_a_stage_that_raises_is_recorded_failed_and_a_rerun_runs_it(tmp_path, error, line):
    store, cfg, said = AtlasStore(tmp_path / "atlas"), AtlasConfig(), []
    with pytest.raises(type(error)):
        run_stage("embed", cfg, store, _raise(error), said.append)
    record = store.read_manifest().stages["embed"]
    assert record.status == "failed" and record.error == line and record.finished and record.started
    with pytest.raises(AtlasError, match="needs the 'embed' stage first"):
        store.require_stage("embed", "'train'")  # a failed stage is not done
    assert run_stage("embed", cfg, store, lambda: {"rows": {}}, said.append)  # not skipped: it runs again
    record = store.read_manifest().stages["embed"]
    assert record.status == "done" and record.error is None


def test_models_are_checked_only_for_the_stages_that_will_run(tmp_path):
    store = AtlasStore(tmp_path / "atlas")
    cfg = config_from_dict({"models": {"clip": "open_clip:ViT-B-23/x", "decoder": str(tmp_path / "none")}})
    assert stages_to_run(["embed", "train"], store, cfg) == ["embed", "train"]
    check_models(["train", "featurize", "index"], cfg)  # these load no CLIP model or decoder
    with pytest.raises(AtlasError, match="models.clip = 'open_clip:ViT-B-23/x': open_clip has no architecture"):
        check_models(["embed"], cfg)
    with pytest.raises(AtlasError, match="models.decoder = .*none'"):
        check_models(["render"], config_from_dict({"models": {"decoder": str(tmp_path / "none")}}))
