"""A progress line during long runs: the whole matrix runs for about an hour, and a harness
build, an Inductor compile or a hang otherwise gives minutes of pytest's dots, or none.

Every `interval` seconds (--conformance-progress) the run says how many tests are done
of how many, how many failed so far, which are running and for how long, and a rough
estimate of the time left (the mean time per test so far, times the tests left). Lines
come from the hooks as tests finish; when none finishes for an interval (a long compile,
a hang), a timer thread writes the line instead, naming what is running. Under
pytest-xdist it runs on the controller, which hears of every worker's tests.

The lines go to a copy of the terminal's file descriptor taken before any test runs:
while a test runs, pytest captures descriptor 1, and the line a hang needs most would
land in that test's captured output. Each line is one write, so it cannot be cut into
by pytest's own dots."""
from __future__ import annotations

import os
import sys
import threading
import time

import pytest

DEFAULT_INTERVAL_S = 60.0


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
    """The plugin object: counts from the hooks, a line at most every `interval`."""

    def __init__(self, config, interval_s: float = DEFAULT_INTERVAL_S, clock=time.monotonic):
        self.config, self.interval_s, self.clock = config, interval_s, clock
        self.total = self.done = 0
        self.failing: set[str] = set()  # node ids with a failed phase, each counted once
        self.running: dict[str, float] = {}  # node id -> when it started
        self.started = self.last_line = clock()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.out = terminal_descriptor()

    def pytest_collection_finish(self, session):
        self.total = len(session.items)

    @pytest.hookimpl(optionalhook=True)  # pytest-xdist's: absent without it
    def pytest_xdist_node_collection_finished(self, node, ids):
        self.total = max(self.total, len(ids))  # every worker collects every test

    def pytest_runtest_logstart(self, nodeid, location):
        with self.lock:
            self.running[nodeid] = self.clock()

    def pytest_runtest_logreport(self, report):
        with self.lock:
            if report.failed:
                self.failing.add(report.nodeid)
            # "???": pytest-xdist's report of a test whose worker died under it
            if report.when in ("teardown", "???"):
                self.done += 1
                self.running.pop(report.nodeid, None)
        self.maybe_write()

    def pytest_sessionstart(self, session):
        threading.Thread(target=self._watch, name="conformance-progress", daemon=True).start()

    def pytest_sessionfinish(self, session):
        self.stopped.set()

    def pytest_unconfigure(self, config):
        if self.out is not None:
            os.close(self.out)
            self.out = None

    def _watch(self) -> None:
        """While no test finishes, the hooks are quiet: say what is running."""
        while not self.stopped.wait(self.interval_s / 4):
            self.maybe_write()

    def maybe_write(self) -> None:
        with self.lock:
            now = self.clock()
            if now - self.last_line < self.interval_s or not self.total \
                    or self.done >= self.total:  # past the tests: the summary is on its way
                return
            self.last_line = now
            line = self.line(now)
        if self.out is not None:
            os.write(self.out, f"\n{line}\n".encode())
            return
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:  # none under -p no:terminal
            terminal.write_line(line)

    def line(self, now: float) -> str:
        """e.g. `progress: 1,204 of 2,745 tests (44%), 3 failed, 21m10s in, ~27m00s left;
        running: test_check[resnet18-onnx-op17-onnxruntime-cpu-generalizes] for 2m10s`"""
        elapsed = now - self.started
        left = (f", ~{duration(elapsed / self.done * (self.total - self.done))} left"
                if self.done else "")
        running = sorted(self.running.items(), key=lambda item: item[1])[:3]
        named = "; running: " + ", ".join(f"{nodeid.rsplit('::', 1)[-1]} for "
                                          f"{duration(now - since)}" for nodeid, since in running)
        return (f"progress: {self.done:,} of {self.total:,} tests "
                f"({100 * self.done / self.total:.0f}%), {len(self.failing)} failed, "
                f"{duration(elapsed)} in{left}" + (named if running else ""))


def terminal_descriptor() -> int | None:
    """A copy of the descriptor behind sys.stdout now (pytest's capture is suspended
    while plugins configure), or None where there is none (an in-process pytest run)."""
    try:
        return os.dup(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        return None
