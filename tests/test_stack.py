"""The stack is checked before any cell runs: a torchvision of another torch, or of
another build, stops the session with one message."""
from conformance.stack import pairing_problem, stack_problems

MISMATCHED = '''
import conformance.stack as stack

# the pair of the tox environment that once failed every resnet18 cell on its own
stack.builds = lambda: {"torch": "2.13.0+cpu", "cuda": "none", "torch_git": "x",
                        "torchvision": "0.28.0"}
'''


def test_the_default_stack_passes_its_check():
    assert stack_problems() == []


def test_a_torchvision_of_another_torch_or_another_build_is_named():
    assert pairing_problem("2.14.1+cu130", "0.29.1+cu130") == ""
    assert pairing_problem("2.9.1", "0.24.1") == ""
    assert pairing_problem("2.14.1", "0.28.0") == ("torchvision 0.28.0 is not the release for "
                                                   "torch 2.14.1, which is torchvision 0.29.x")
    assert "another build" in pairing_problem("2.13.0+cpu", "0.28.0")
    assert "not installed" in pairing_problem("2.14.1", "not installed")


def test_a_mismatched_pair_stops_the_session_at_the_start_with_one_message(pytester):
    pytester.makeconftest(MISMATCHED)
    result = pytester.runpytest_subprocess("-k", "my_cell and trace-torch-cpu",
                                           "-p", "no:cacheprovider", "--pyargs", "conformance")
    assert result.ret == 4  # a usage error: not one cell ran
    result.stderr.fnmatch_lines(["*this stack cannot run the suite:",
                                 "*- torchvision 0.28.0 is another build than torch 2.13.0+cpu*"])
    assert "passed" not in result.stdout.str() and "failed" not in result.stdout.str()


def test_torchvision_operators_that_do_not_load_are_named(monkeypatch):
    import torch

    from conformance.stack import operators_problem

    assert operators_problem() == ""
    monkeypatch.setattr(torch.ops, "torchvision", object())  # what a build for another torch leaves
    assert operators_problem().startswith("torchvision's compiled operators do not load")
