"""Stopping a job with SIGTERM: the signal becomes `SystemExit` in the main thread where raising is safe.

Raised as an exception, a SIGTERM lets `finally` blocks and atexit run, so the local Ray is shut down and the
stage that was running is recorded as stopped (the default action kills the driver and leaves both behind).
But a handler that raises wherever the signal lands can lose the stop and wedge the process: landing in
logging's at-fork callback, the exception is swallowed ("Exception ignored in: <function _releaseLock>")
and logging's lock stays held, so the build neither stops nor finishes (seen in CI). So the handler
- defers the stop by a few milliseconds (a SIGALRM) when the signal lands inside logging, whose module lock
  a stray exception would leave held (a bounded number of times: a stop is never put off for good), and
- delivers it again when the interpreter swallows it anyway (a `__del__`, an at-fork or weakref callback).
`ray.init` would install a driver handler of its own that raises wherever it lands; and a stop raised half-way
through it leaves processes behind that the Ray shutdown at exit does not know of. So `init_ray` keeps this
handler through `ray.init` and holds a stop until it returns (`held_through_ray_init`).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

# Files whose functions hold a lock across bytecodes without a `try` that would release it. Not threading:
# its waits release their locks in `finally`, and a main thread blocked in one is where most stops land.
_HOLDS_LOCKS = frozenset({logging.__file__})
_DEFER_S = 0.02
_MAX_DEFERRALS = 50


class StopRequested(SystemExit):
    """The SystemExit a SIGTERM becomes; its code is 128 + the signal number, as a shell reports it."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


_pending: int | None = None
_deferrals = 0
_holding = False
_previous_unraisablehook = sys.unraisablehook


def _deliver_later() -> None:
    signal.setitimer(signal.ITIMER_REAL, _DEFER_S)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _pending, _deferrals
    if signum == signal.SIGTERM:
        _pending = signum
    if _pending is None or _holding:  # a SIGALRM that is not ours, or a stop held for later
        return
    if frame is not None and frame.f_code.co_filename in _HOLDS_LOCKS and _deferrals < _MAX_DEFERRALS:
        _deferrals += 1
        _deliver_later()
        return
    signum, _pending, _deferrals = _pending, None, 0
    signal.setitimer(signal.ITIMER_REAL, 0)  # an alarm left pending would kill the process once Python exits
    raise StopRequested(signum)


def _on_unraisable(unraisable: Any) -> None:
    global _pending
    if isinstance(unraisable.exc_value, StopRequested):
        _pending = unraisable.exc_value.signum
        _deliver_later()
        return
    _previous_unraisablehook(unraisable)


def install() -> None:
    """Make SIGTERM stop this process as `StopRequested`; only the main thread can install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)
    sys.unraisablehook = _on_unraisable


@contextmanager
def held_through_ray_init() -> Iterator[None]:
    """Keep this module's SIGTERM handler while `ray.init` runs, and deliver a stop it gets only once it returned."""
    global _holding
    import ray._private.utils as ray_utils

    replace = ray_utils.set_sigterm_handler
    ray_utils.set_sigterm_handler = lambda handler: None
    _holding = True
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = replace
        _holding = False
    # Ray's core worker installs a C++ failure-signal handler for SIGTERM as it connects, over Python's (it
    # printed "*** SIGTERM received" and ended the build with exit code 1): take the signal back. A stop
    # during the train or featurize stage can still end with 1 (cleanly: stage recorded, Ray shut down).
    install()
    if _pending is not None:
        _on_signal(_pending, None)
