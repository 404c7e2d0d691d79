"""The progress line of long runs: what it says, when it speaks, and that a hang is
named while nothing finishes."""
from types import SimpleNamespace

from conformance.progress import Progress, duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Terminal:
    def __init__(self):
        self.lines = []

    def write_line(self, line):
        self.lines.append(line)


def progress(interval=60.0):
    clock, terminal = Clock(), Terminal()
    config = SimpleNamespace(pluginmanager=SimpleNamespace(get_plugin=lambda name: terminal))
    found = Progress(config, interval, clock)
    found.out = None  # lines to the terminal reporter, which this test reads
    found.total = 100
    return found, clock, terminal.lines


def finish(found, nodeid, failed=False):
    found.pytest_runtest_logreport(SimpleNamespace(when="call", failed=failed, nodeid=nodeid))
    found.pytest_runtest_logreport(SimpleNamespace(when="teardown", failed=False, nodeid=nodeid))


def test_a_line_says_done_failed_running_and_the_time_left():
    found, clock, lines = progress()
    for i in range(25):
        found.pytest_runtest_logstart(f"t.py::test_check[c{i}]", None)
        finish(found, f"t.py::test_check[c{i}]", failed=i < 3)
    assert lines == []  # not before an interval has passed
    found.pytest_runtest_logstart("t.py::test_check[resnet18-compile]", None)
    clock.now = 300.0
    finish(found, "t.py::test_check[c99]")
    assert lines == ["progress: 25 of 100 tests (25%), 3 failed, 5m00s in, ~15m00s left; "
                     "running: test_check[resnet18-compile] for 5m00s"]


def test_a_hang_is_named_by_the_timer_while_no_test_finishes():
    found, clock, lines = progress(interval=10.0)
    found.pytest_runtest_logstart("t.py::test_check[hangs]", None)
    clock.now = 125.0
    found.maybe_write()  # what the timer thread calls
    assert lines == ["progress: 0 of 100 tests (0%), 0 failed, 2m05s in; running: "
                     "test_check[hangs] for 2m05s"]
    clock.now = 130.0
    found.maybe_write()
    assert len(lines) == 1  # at most one line an interval


def test_a_test_whose_worker_died_is_done_and_failed_not_running():
    found, clock, lines = progress(interval=10.0)
    found.pytest_runtest_logstart("t.py::test_check[srcnn-eats-memory]", None)
    found.pytest_runtest_logstart("t.py::test_check[next]", None)
    # what pytest-xdist reports, and nothing else, of a test its dead worker ran
    found.pytest_runtest_logreport(SimpleNamespace(
        when="???", failed=True, nodeid="t.py::test_check[srcnn-eats-memory]"))
    clock.now = 60.0
    found.maybe_write()
    assert lines == ["progress: 1 of 100 tests (1%), 1 failed, 1m00s in, ~1h39m left; "
                     "running: test_check[next] for 1m00s"]


def test_no_line_once_every_test_is_done():
    found, clock, lines = progress(interval=1.0)
    found.total = 1
    finish(found, "t.py::test_check[only]")
    clock.now = 50.0
    found.maybe_write()
    assert lines == [] and duration(3725) == "1h02m"


def test_a_hangs_line_reaches_the_terminal_while_pytest_captures_the_test(pytester):
    pytester.makepyfile(test_hangs="import time\n\ndef test_slow():\n    time.sleep(2.5)\n")
    result = pytester.runpytest_subprocess("--no-builtin-cases",
                                           "--conformance-progress=0.4", "-p",
                                           "no:cacheprovider", "test_hangs.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["progress: 0 of 1 tests (0%), 0 failed, *; running: "
                                 "test_slow for *"])
