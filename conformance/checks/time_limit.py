"""Time limits inside the suite's own process: a cell, and eager on one input.

A hanging model must cost one limit, not one per cell, and its message must name
what hung. The limit is a SIGALRM timer, the mechanism pytest-timeout uses too:
it interrupts Python code (a model's endless loop, a sleep, a wait on a helper
process) where a thread could not. A limit nests inside an outer timer (pytest-
timeout's, or another limit): the earlier deadline fires, and the outer timer is
given back what is left of it afterwards.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time


class TimeLimitExceeded(BaseException):
    """Raised in the main thread when a limit runs out. A BaseException, so that
    the suite's `except Exception` handlers (a runtime error is a cell's failure)
    do not mistake it for the model's own error."""

    def __init__(self, what: str, seconds: float):
        super().__init__(f"{what} ran past its limit of {seconds:g} s")
        self.what = what
        self.seconds = seconds


class TimedOut(Exception):
    """What a limit interrupted, remembered: the next cell that needs it fails at once
    instead of waiting for the limit again."""

    kind = "timeout"

    def __init__(self, exceeded: TimeLimitExceeded):
        super().__init__(f"{exceeded} in an earlier cell, and is not tried again")


def _usable(seconds: float | None) -> bool:
    return (bool(seconds) and seconds > 0 and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread())


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str):
    """Raise TimeLimitExceeded(what) if the block runs longer than `seconds`.
    Without a limit, off the main thread or without SIGALRM, the block just runs."""
    if not _usable(seconds):
        yield
        return
    outer_handler = signal.getsignal(signal.SIGALRM)
    outer_left, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    outer_first = 0 < outer_left < seconds

    def expired(signum, frame):
        if outer_first and callable(outer_handler):
            outer_handler(signum, frame)  # the outer limit's turn (pytest-timeout's)
        raise TimeLimitExceeded(what, seconds)

    signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, outer_left if outer_first else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_left > 0:
            left = max(outer_left - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)
