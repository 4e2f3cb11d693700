"""The trainer's pieces on their own: schedule, dead-feature tracking, train_log rows, checkpoints and the
loss assembly."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from atlas.models.sae.registry import sae_settings
from atlas.train.checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint
from atlas.train.dead_features import DeadFeatureTracker
from atlas.train.schedule import LearningRateSchedule
from atlas.train.train_log import TrainLog
from atlas.train.trainer import total_loss


@given(peak=st.floats(1e-6, 1.0), warmup=st.integers(0, 50), extra=st.integers(1, 500))
def test_schedule_warms_up_linearly_then_decays_to_a_tenth(peak, warmup, extra):
    sched = LearningRateSchedule(peak, warmup, warmup + extra)
    rates = [sched.at(s) for s in range(warmup + extra + 3)]
    if warmup:
        assert rates[warmup - 1] == pytest.approx(peak)
        assert all(a < b for a, b in zip(rates[: warmup - 1], rates[1:warmup], strict=True))
    after = rates[warmup:]
    assert after[0] == pytest.approx(peak)
    assert all(b <= a + 1e-15 for a, b in zip(after, after[1:], strict=False))  # never rises again
    assert after[-1] == pytest.approx(0.1 * peak)  # and stays at 10% past the end
    assert all(0.1 * peak - 1e-12 <= r <= peak + 1e-12 for r in after)


def test_schedule_midpoint_is_the_cosine_midpoint():
    sched = LearningRateSchedule(1.0, 0, 100)
    assert sched.at(50) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))


def test_dead_features_are_those_silent_for_the_window():
    dead = DeadFeatureTracker(3, window=10)
    assert dead.dead_mask(0).tolist() == [False, False, False]  # no window has passed yet
    dead.update(torch.tensor([[1.0, 0.0, 0.0]] * 4), samples=4)
    dead.update(torch.tensor([[0.0, 2.0, 0.0]] * 4), samples=8)
    assert dead.dead_mask(8).tolist() == [False, False, False]  # nobody has been silent for 10 yet
    assert dead.dead_fraction(8) == pytest.approx(1 / 3)  # early on: never fired counts as dead
    assert dead.dead_mask(14).tolist() == [True, False, True]  # 0 silent since 4, 2 since the start
    assert dead.dead_fraction(30) == 1.0


def test_train_log_closes_a_row_every_n_steps_and_keeps_the_rest_for_the_end():
    log, dead = TrainLog(every=2, l1_coefficient=0.5), DeadFeatureTracker(2, window=100)
    x = torch.ones(4, 3)
    for step in range(1, 6):
        log.update(x, x * 0.5, torch.ones(4, 2), torch.ones(2), step=step, samples=4 * step, dead=dead)
    assert [r["step"] for r in log.rows] == [2, 4]
    log.close_window(5, 20, dead)
    assert [r["step"] for r in log.rows] == [2, 4, 5]
    row = log.rows[0]
    assert row["mse"] == pytest.approx(3 * 0.25) and row["l1"] == pytest.approx(2.0)
    assert row["loss"] == pytest.approx(0.75 + 0.5 * 2.0) and row["l0"] == 2.0
    log.close_window(5, 20, dead)
    assert len(log.rows) == 3  # an empty window writes nothing
    restored = TrainLog(every=2, l1_coefficient=0.5)
    restored.load_state(log.state())
    assert restored.rows == log.rows


def test_a_checkpoint_continues_only_the_config_that_wrote_it(tmp_path):
    cfg = sae_settings(kind="topk", k=4)
    save_checkpoint(tmp_path, cfg, {"step": 7, "model": {"w": torch.arange(3.0)}})
    got = load_checkpoint(tmp_path, cfg)
    assert got is not None and got["step"] == 7 and torch.equal(got["model"]["w"], torch.arange(3.0))
    assert load_checkpoint(tmp_path, sae_settings(kind="topk", k=5)) is None
    assert load_checkpoint(tmp_path, sae_settings(kind="batchtopk", k=4)) is None
    remove_checkpoint(tmp_path)
    assert load_checkpoint(tmp_path, cfg) is None


def test_loss_is_the_mse_plus_every_term():
    mse = torch.tensor(2.0)
    assert float(total_loss(mse, {})) == 2.0
    assert float(total_loss(mse, {"l1": torch.tensor(0.5), "auxk": torch.tensor(0.25)})) == 2.75
