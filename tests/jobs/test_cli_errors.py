"""How the CLI reports failures: a user mistake (AtlasError, also from inside a Ray task) is one line and exit
status 2; anything else is a bug: one line that says so and exit status 1, or the full traceback with
`--debug` or ATLAS_DEBUG=1."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

import jobs.toy
from atlas.errors import AtlasError
from jobs.cli import app
from jobs.cli_common import atlas_cause, report_failure, set_debug


def _boom(*args, **kwargs):
    return 1 / 0


def _user_mistake(*args, **kwargs):
    raise AtlasError("toy.steps = -1: must be positive")


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("ATLAS_DEBUG", raising=False)
    set_debug(False)  # `--debug` sets it for the rest of the process
    yield
    set_debug(False)


@pytest.fixture
def bug(monkeypatch):
    monkeypatch.setattr(jobs.toy, "run_train_clip", _boom)


def test_a_bug_is_one_line_that_says_so_and_exit_1(bug):
    res = CliRunner().invoke(app, ["toy", "train-clip", "--steps", "1"])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert _error_lines(res.output) == [
        "error: ZeroDivisionError: division by zero — this is a bug, rerun with --debug (or ATLAS_DEBUG=1) "
        "for the traceback"
    ]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_prints_the_traceback(bug, monkeypatch, how):
    args = ["toy", "train-clip", "--steps", "1"]
    if how == "flag":
        args = ["--debug", *args]
    else:
        monkeypatch.setenv("ATLAS_DEBUG", "1")
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    assert "Traceback (most recent call last)" in res.output
    assert "in _boom" in res.output and "ZeroDivisionError: division by zero" in res.output
    assert "this is a bug" not in res.output


def test_a_user_mistake_stays_one_line_with_exit_2(monkeypatch):
    monkeypatch.setattr(jobs.toy, "run_train_clip", _user_mistake)
    for args in (["toy", "train-clip"], ["--debug", "toy", "train-clip"]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, res.output
        assert "Traceback" not in res.output
        assert _error_lines(res.output) == ["error: toy.steps = -1: must be positive"]


def test_an_atlas_error_from_a_ray_task_is_unwrapped(capsys):
    from ray.exceptions import RayTaskError

    try:
        _user_mistake()
    except AtlasError as e:
        cause = e
    wrapped = RayTaskError("remote_fn", "Traceback (most recent call last):\n  ...\nAtlasError: ...", cause)
    dual = wrapped.as_instanceof_cause()  # what ray.get raises: a RayTaskError that is also an AtlasError
    assert isinstance(dual, AtlasError) and "\n" in str(dual)
    for e in (wrapped, dual):
        assert atlas_cause(e) is cause
        assert report_failure(e) == 2
        assert capsys.readouterr().err == "error: toy.steps = -1: must be positive\n"

    bug = RayTaskError("remote_fn", "Traceback ...", ZeroDivisionError("division by zero")).as_instanceof_cause()
    assert report_failure(bug) == 1
    assert capsys.readouterr().err.startswith("error: ZeroDivisionError: division by zero — this is a bug")


def test_the_real_command_line_reports_a_bug_in_one_line_or_a_traceback(tmp_path):
    """Through `python -m jobs.cli` (the `atlas` script's main), with a bug planted by a sitecustomize hook."""
    (tmp_path / "sitecustomize.py").write_text(
        "import jobs.toy\ndef _boom(*args, **kwargs):\n    return 1 / 0\njobs.toy.run_train_clip = _boom\n"
    )
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    env.pop("ATLAS_DEBUG", None)
    cmd = [sys.executable, "-m", "jobs.cli", "toy", "train-clip", "--steps", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ZeroDivisionError: division by zero — this is a bug")
    assert "rerun with --debug (or ATLAS_DEBUG=1)" in lines[0]

    proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, "ATLAS_DEBUG": "1"}, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr and "in _boom" in proc.stderr


def test_an_atlas_error_from_an_actor_constructor_is_unwrapped(capsys):
    """What a driver gets from an actor whose constructor raised: an ActorDiedError holding the creation task's
    RayTaskError; and from a Ray Data UDF: a RayTaskError(UserCodeException) whose cause, pickled on the way,
    jobs.runtime keeps."""
    import pickle

    from ray.exceptions import ActorDiedError, RayTaskError, UserCodeException

    import jobs.runtime  # noqa: F401 (registers how a UserCodeException is pickled)

    cause = AtlasError("models.clip = 'x': corrupt weights")
    died = pickle.loads(pickle.dumps(ActorDiedError(RayTaskError("A.__init__", "Traceback ...", cause))))
    assert atlas_cause(died) is not None and str(atlas_cause(died)) == str(cause)
    assert report_failure(died) == 2
    assert capsys.readouterr().err == "error: models.clip = 'x': corrupt weights\n"

    try:
        raise UserCodeException("UDF failed to process a data block.") from cause
    except UserCodeException as e:
        wrapped = RayTaskError("map", "Traceback ...", e).as_instanceof_cause()
    from ray import cloudpickle

    assert str(atlas_cause(cloudpickle.loads(cloudpickle.dumps(wrapped)))) == str(cause)
