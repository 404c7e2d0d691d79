"""The self-tests' summary names the screenshots their browser tests took this run; under
pytest-xdist, the pytest runs the self-tests start share the cores as the workers do."""
import os
import time

from conformance.runtimes.thread_budget import share
from tests.browser import screenshot_dir

STARTED = time.time()


def pytest_configure(config):
    """A worker's own runtimes get its share of the cores from the plugin; the suite runs
    that its tests start as subprocesses would take every core each, and torch reads
    its thread count from this variable when it starts."""
    workers = getattr(config, "workerinput", {}).get("workercount")
    if workers and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(share(workers))


def pytest_terminal_summary(terminalreporter):
    if hasattr(terminalreporter.config, "workerinput"):
        return
    folder = screenshot_dir()
    taken = sorted(f for f in folder.glob("*.png") if f.stat().st_mtime >= STARTED)
    if taken:
        terminalreporter.section("screenshots")
        for file in taken:
            terminalreporter.write_line(str(file))
