"""The self-tests' summary names the screenshots their browser tests took this run."""
import time

from tests.browser import screenshot_dir

STARTED = time.time()


def pytest_terminal_summary(terminalreporter):
    if hasattr(terminalreporter.config, "workerinput"):
        return
    folder = screenshot_dir()
    taken = sorted(f for f in folder.glob("*.png") if f.stat().st_mtime >= STARTED)
    if taken:
        terminalreporter.section("screenshots")
        for file in taken:
            terminalreporter.write_line(str(file))
