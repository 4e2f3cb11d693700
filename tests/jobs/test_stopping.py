"""SIGTERM becomes `StopRequested` in the main thread, never inside a lock holder and never lost."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jobs import stopping
from jobs.stopping import StopRequested


@pytest.fixture
def installed() -> Iterator[None]:
    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGALRM), sys.unraisablehook
    stopping.install()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGALRM, saved[1])
        sys.unraisablehook = saved[2]
        stopping._pending, stopping._deferrals = None, 0


def _wait_for_stop() -> StopRequested:
    with pytest.raises(StopRequested) as raised:
        time.sleep(2)
    return raised.value


def test_a_sigterm_stops_with_128_plus_its_number(installed: None) -> None:
    with pytest.raises(StopRequested) as raised:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(2)
    assert raised.value.code == 128 + signal.SIGTERM


def _signal_inside_logging(signum: int) -> None:
    """Run the handler in a frame whose code says it is logging's, as `_releaseLock` in an at-fork callback's."""
    scope: dict[str, Any] = {}
    source = "def inside_logging(handler, signum):\n    import sys\n    handler(signum, sys._getframe())\n"
    exec(compile(source, logging.__file__, "exec"), scope)
    scope["inside_logging"](stopping._on_signal, signum)


def test_a_sigterm_landing_inside_logging_is_deferred_then_delivered(installed: None) -> None:
    _signal_inside_logging(signal.SIGTERM)  # returns: nothing raised inside logging
    assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
    assert _wait_for_stop().code == 128 + signal.SIGTERM
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0, "no alarm is left to kill the process at exit"


def test_a_stop_is_deferred_a_bounded_number_of_times(installed: None) -> None:
    for _ in range(stopping._MAX_DEFERRALS):
        _signal_inside_logging(signal.SIGTERM)
    with pytest.raises(StopRequested):
        _signal_inside_logging(signal.SIGALRM)


def test_a_stop_the_interpreter_swallows_is_delivered_again(installed: None) -> None:
    class StoppedWhileCollected:
        def __del__(self) -> None:
            stopping._on_signal(signal.SIGTERM, sys._getframe())

    victim = StoppedWhileCollected()
    del victim  # the StopRequested raised in __del__ is "ignored" by the interpreter
    assert _wait_for_stop().code == 128 + signal.SIGTERM


def test_an_alarm_without_a_pending_stop_does_nothing(installed: None) -> None:
    os.kill(os.getpid(), signal.SIGALRM)
    time.sleep(0.05)  # would raise here if the alarm were taken for a stop


def test_ray_init_keeps_the_handler_and_a_stop_waits_for_it(installed: None) -> None:
    import ray._private.utils as ray_utils

    finished = False
    with pytest.raises(StopRequested), stopping.held_through_ray_init():
        ray_utils.set_sigterm_handler(lambda signum, frame: None)  # what ray.init does first
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # nothing raised here, half-way through ray.init
        finished = signal.getsignal(signal.SIGTERM) is stopping._on_signal
    assert finished
    ray_utils.set_sigterm_handler(signal.default_int_handler)  # and Ray's own call works again outside it
    assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler
