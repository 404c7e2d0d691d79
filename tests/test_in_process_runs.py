"""The repository's conftest keeps installed libraries imported across in-process
pytester runs, and only them.

Each test runs pytest in a fresh process, in a directory holding a copy of the root
conftest (or none, for the control), so that nothing this worker imported earlier can
make the outcome: the failure these tests guard against depends on which test of a
worker first imports a library."""
from __future__ import annotations

from pathlib import Path

ROOT_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"

# The first test imports torch._dynamo inside an in-process run; the second then uses it
# in the outer process. Without the conftest, the run drops torch's modules when it
# ends, the second test imports torch._dynamo again, and torch refuses to register
# torch._inductor.test_operators's operator library a second time.
DYNAMO_AFTER_AN_IN_PROCESS_RUN = '''
import sys


def test_an_in_process_run_imports_dynamo(pytester):
    pytester.makepyfile(my_helper="VALUE = 1")
    pytester.makepyfile(test_inner="import torch._dynamo\\nimport my_helper\\n"
                                   "def test_inner():\\n    assert my_helper.VALUE == 1\\n")
    pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    KEPT.update(name for name in ("torch._dynamo", "my_helper") if name in sys.modules)


def test_dynamo_still_works_in_the_outer_process():
    import torch
    import torch._dynamo

    torch._dynamo.explain(lambda x: x + 1)(torch.ones(2))


def test_only_the_installed_library_was_kept():
    assert KEPT == {"torch._dynamo"}


KEPT = set()
'''


def run_in_a_fresh_process(pytester, with_root_conftest: bool):
    if with_root_conftest:
        pytester.makeconftest(ROOT_CONFTEST.read_text())
    pytester.makepyfile(test_outer=DYNAMO_AFTER_AN_IN_PROCESS_RUN)
    return pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider",
                                         "-p", "pytester", "test_outer.py")


def test_installed_libraries_survive_an_in_process_run_and_the_runs_own_modules_do_not(
        pytester):
    result = run_in_a_fresh_process(pytester, with_root_conftest=True)
    result.assert_outcomes(passed=3)


def test_without_the_conftest_a_second_import_of_dynamo_fails(pytester):
    result = run_in_a_fresh_process(pytester, with_root_conftest=False)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*Only a single TORCH_LIBRARY can be used*"])
