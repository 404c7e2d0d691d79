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


BROKEN_HARNESS = '''
import conformance.runtimes.libtorch as libtorch


def build(root, jobs=None):  # what a torch whose headers the harness does not compile with gives
    raise libtorch.HarnessError("building the libtorch harness failed at build; the end of "
                                "build.log:\\nerror: 'class at::Tensor' has no member 'data'")


libtorch.build = build
'''


def test_a_harness_that_does_not_build_against_this_torch_stops_the_session_at_the_start(
        pytester):
    pytester.makeconftest(BROKEN_HARNESS)
    result = pytester.runpytest_subprocess("-k", "my_cell and libtorch", "--require=libtorch",
                                           "-p", "no:cacheprovider", "--pyargs", "conformance")
    assert result.ret == 4  # a usage error: not one cell ran
    result.stderr.fnmatch_lines([
        "*this stack cannot run the suite:",
        "*- --require libtorch: the libtorch harness cannot be built with torch *: building "
        "the libtorch harness failed at build*", "*'class at::Tensor' has no member 'data'*"])
    assert "passed" not in result.stdout.str() and "failed" not in result.stdout.str()


def test_an_environment_that_resolves_to_another_environments_pinned_pair_is_refused(tmp_path):
    from conformance.stack import pinned_pairs, repeated_stack

    ini = tmp_path / "tox.ini"
    ini.write_text("[testenv:torch2.14]\ndeps =\n    torch==2.14.1\n    torchvision==0.29.1\n"
                   "    onnx==1.23.2\n[testenv:torch2.9]\ndeps =\n    torch===2.9.1\n"
                   "    torchvision===0.24.1\n[testenv:torch-newest]\ndeps =\n    torch\n"
                   "    torchvision\n[testenv:selftest]\ndeps =\n    torch==2.14.1\n"
                   "    torchvision==0.29.1\n")
    assert pinned_pairs(ini) == {"torch2.14": ("2.14.1", "0.29.1"), "torch2.9": ("2.9.1", "0.24.1")}
    newest = {"torch": "2.14.1+cu130", "torchvision": "0.29.1+cu130"}
    assert repeated_stack("torch-newest", ini, newest).startswith(
        "torch-newest resolved to torch 2.14.1+cu130 and torchvision 0.29.1+cu130, the pair "
        "torch2.14 pins: its run would repeat torch2.14's")
    assert repeated_stack("torch2.14", ini, newest) == ""  # its own pair
    assert repeated_stack("torch2.9", ini, newest).endswith(
        "Both environments pin that pair in tox.ini")
    assert repeated_stack("torch-newest", ini, {"torch": "2.15.0", "torchvision": "0.30.0"}) == ""


def test_the_tox_check_exits_1_with_one_message_for_a_repeated_stack(tmp_path, capsys):
    import conformance.stack as stack

    pinned = stack.builds()  # whatever this environment runs, pinned by another one
    ini = tmp_path / "tox.ini"
    ini.write_text(f"[testenv:torch2.14]\ndeps =\n    torch=={pinned['torch'].split('+')[0]}\n"
                   f"    torchvision=={pinned['torchvision'].split('+')[0]}\n")
    main = stack.main
    assert main(["--tox-env", "torch2.14", "--tox-ini", str(ini)]) == 0
    assert main(["--tox-env", "torch-newest", "--tox-ini", str(ini)]) == 1
    assert capsys.readouterr().err.count("conformance: torch-newest resolved to") == 1
