"""The libtorch harness: its build, its protocol, and its faults, each failing only
the request (and the cell) that met them."""
import json
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from conformance.checks import catalog as checks
from conformance.checks.catalog import CheckFailure
from conformance.checks.compare import compare
from conformance.checks.subject import CaseState, Subject
from conformance.layout import harness_build_dir
from conformance.runtimes import libtorch as harness
from conformance.runtimes.libtorch import Harness, HarnessError, LibtorchModel
from conformance.targets import Target
from tests import broken_models
from tests.patching import patch_exporter


@pytest.fixture(autouse=True)
def toolchain(request):
    """Tests that build the harness skip without cmake or a compiler, as the
    matrix's libtorch cells do, unless the run says --require=libtorch."""
    if request.node.get_closest_marker("no_toolchain_needed"):
        return
    problem = harness.toolchain_problem()
    if problem and "libtorch" in request.config.option.require:
        pytest.fail(f"--require libtorch: {problem}")
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def shared_harness():
    process = Harness(harness_build_dir(), timeout_s=120)
    yield process
    process.close()


class Pair(NamedTuple):
    first: torch.Tensor
    second: torch.Tensor


class Nested(torch.nn.Module):
    def forward(self, x, y):
        print("a stray print must not break the protocol")
        return x + y, [x, y * 2], {"total": x.sum()}, Pair(x, y)


def scripted(tmp_path, module, name="model.pt"):
    file = tmp_path / name
    broken_models.write_scripted(module, file)
    return file


def test_the_harness_runs_libtorch_of_the_python_torch_version(shared_harness):
    shared_harness.ensure_started()
    assert shared_harness.version == torch.__version__.split("+")[0]


def test_nested_outputs_come_back_as_tuples_lists_and_dicts(tmp_path, shared_harness):
    file = scripted(tmp_path, Nested())
    inputs = (torch.randn(2, 3), torch.randn(2, 3))
    got = LibtorchModel(shared_harness, file, "cpu")(*inputs)
    want = torch.jit.load(str(file))(*inputs)
    assert type(got[1]) is list and type(got[2]) is dict and type(got[3]) is tuple
    assert compare(got, tuple(want[:3]) + (tuple(want[3]),)).ok


def test_timed_runs_return_one_positive_sample_per_run(tmp_path, shared_harness):
    model = LibtorchModel(shared_harness, scripted(tmp_path, broken_models.Linear()), "cpu")
    samples = model.time((torch.randn(2, 4),), warmup=2, runs=5)
    assert len(samples) == 5 and all(s > 0 for s in samples)


def test_timing_the_same_inputs_again_saves_them_once(tmp_path, shared_harness):
    model = LibtorchModel(shared_harness, scripted(tmp_path, broken_models.Linear()), "cpu")
    inputs, before = (torch.randn(2, 4),), set(shared_harness.dir.glob("in-*.pt"))
    for _ in range(3):
        model.time(inputs, warmup=0, runs=1)
    model.loop(inputs, runs=1)
    assert len(set(shared_harness.dir.glob("in-*.pt")) - before) == 1
    model.close()
    assert set(shared_harness.dir.glob("in-*.pt")) <= before


def test_a_crash_fails_its_request_and_the_next_request_restarts_the_harness(tmp_path):
    process = Harness(harness_build_dir(), timeout_s=120)
    try:
        good = LibtorchModel(process, scripted(tmp_path, broken_models.Linear()), "cpu")
        crashing = LibtorchModel(process, scripted(tmp_path, broken_models.CrashesInKernel(),
                                                   "crashing.pt"), "cpu")
        with pytest.raises(HarnessError, match=r"(?s)run of crashing\.pt: .*signal SIGFPE"):
            crashing(torch.randn(2, 4))
        assert good(torch.randn(2, 4)).shape == (2, 3)  # loaded again in the new process
        assert process.starts == 2
    finally:
        process.close()


def test_a_hang_is_killed_after_the_timeout(tmp_path):
    process = Harness(harness_build_dir(), timeout_s=3)
    try:
        spinning = LibtorchModel(process, scripted(tmp_path, broken_models.Spins(), "spins.pt"),
                                 "cpu")
        with pytest.raises(HarnessError, match=r"spins\.pt: .*gave no answer in 3 s and was killed"):
            spinning(torch.randn(2, 4))
        good = LibtorchModel(process, scripted(tmp_path, broken_models.Linear()), "cpu")
        assert good(torch.randn(2, 4)).shape == (2, 3)
    finally:
        process.close()


def test_a_file_that_is_no_artifact_gives_a_clear_error(tmp_path, shared_harness):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"these bytes are no TorchScript archive")
    with pytest.raises(HarnessError, match=r"load of corrupt\.pt: .*corrupt\.pt is not a "
                       r"TorchScript module that torch::jit::load can load on cpu: "
                       r"PytorchStreamReader failed"):
        LibtorchModel(shared_harness, corrupt, "cpu")


def libtorch_subject(case, tmp_path, process) -> Subject:
    state = CaseState(case, "cpu", tmp_path, harness=lambda: process)
    return Subject(state, Target("script", "libtorch"), reproduce="pytest <nodeid>")


def test_matches_eager_on_libtorch_passes_for_a_sound_script(tmp_path, shared_harness):
    subject = libtorch_subject(broken_models.linear_case(), tmp_path, shared_harness)
    assert checks.matches_eager(subject)["max_abs"] <= 1e-5
    assert checks.generalizes(subject)["max_abs"] <= 1e-5


def test_matches_eager_on_libtorch_fails_when_the_artifact_computes_something_else(
        tmp_path, shared_harness, monkeypatch):
    def other_weights(model, example, file, options):
        torch.manual_seed(123)
        broken_models.write_scripted(broken_models.Linear().eval(), file)

    patch_exporter(monkeypatch, "script", other_weights)
    subject = libtorch_subject(broken_models.linear_case(), tmp_path, shared_harness)
    with pytest.raises(CheckFailure, match="target script-libtorch-cpu, check matches_eager"):
        checks.matches_eager(subject)


# A session whose script exporter writes a broken artifact for three cases: the
# harness crashes on one, hangs on one and cannot load the third. Each fails its
# own cells; the sound case after them passes in the restarted harness.
BROKEN_EXPORTS = """
import dataclasses

import pytest
from conformance.exporters.table import PATHS
from tests import broken_models

sound_script = PATHS["script"].export


def script_or_break(model, example, file, options):
    breaking = getattr(model, "write_broken_artifact", None)
    (breaking or (lambda file: sound_script(model, example, file, options)))(file)


@pytest.fixture(autouse=True, scope="session")
def broken_exporter():
    PATHS["script"] = dataclasses.replace(PATHS["script"], export=script_or_break)
"""

BROKEN_CASES = """
import torch
from conformance import Case, random_inputs
from tests import broken_models


class Crashing(broken_models.Linear):
    def write_broken_artifact(self, file):
        broken_models.write_scripted(broken_models.CrashesInKernel(), file)


class Hanging(broken_models.Linear):
    def write_broken_artifact(self, file):
        broken_models.write_scripted(broken_models.Spins(), file)


class Corrupt(broken_models.Linear):
    def write_broken_artifact(self, file):
        open(file, "wb").write(b"no archive")


CASES = [Case(name, model, example=random_inputs((2, 4)))
         for name, model in (("crashing", Crashing), ("hanging", Hanging),
                             ("corrupt", Corrupt), ("sound", broken_models.Linear))]
"""


REPOSITORY = str(Path(__file__).parents[1])  # for `tests.broken_models` in the sessions below


def test_a_crash_a_hang_and_a_corrupt_file_fail_only_their_own_cells(pytester, monkeypatch):
    pytester.makeconftest(BROKEN_EXPORTS)
    pytester.makepyfile(broken_cases=BROKEN_CASES,
                        test_matrix="def test_check(conformance_cell):\n"
                                    "    conformance_cell.check()\n")
    monkeypatch.setenv("PYTHONPATH", REPOSITORY)
    result = pytester.runpytest_subprocess(
        "--no-builtin-cases", "--cases=broken_cases.py", "-k", "script-libtorch-cpu",
        "--harness-timeout=5", "--no-artifact-cache", "--conformance-results=records.jsonl",
        "-p", "no:randomly", "-p", "no:cacheprovider")
    outcomes = {(r["case"], r["check"]): r for r in
                map(json.loads, (pytester.path / "records.jsonl").read_text().splitlines())}
    for case, symptom in (("crashing", "signal SIGFPE"), ("hanging", "gave no answer in 5 s"),
                          ("corrupt", "is not a TorchScript module")):
        record = outcomes[(case, "matches_eager")]
        assert record["outcome"] == "failed" and symptom in record["message"], record
        assert f"{case}-script-" in record["message"]  # the artifact's name
    assert outcomes[("sound", "matches_eager")]["outcome"] == "passed"
    assert outcomes[("sound", "generalizes")]["outcome"] == "passed"
    result.assert_outcomes(passed=2, failed=6)


@pytest.mark.no_toolchain_needed
def test_without_a_toolchain_libtorch_cells_skip_and_require_stops_the_session(
        pytester, monkeypatch):
    pytester.makepyfile(cases=BROKEN_CASES.replace("broken_models.Linear))]",
                                                   "broken_models.Linear))][-1:]"),
                        test_matrix="def test_check(conformance_cell):\n"
                                    "    conformance_cell.check()\n")
    monkeypatch.setenv("PYTHONPATH", REPOSITORY)
    monkeypatch.setenv("PATH", str(pytester.path))  # no cmake, no compiler
    args = ("--no-builtin-cases", "--cases=cases.py", "-k", "libtorch-cpu", "-p", "no:randomly",
            "--conformance-results=records.jsonl")
    skipped = pytester.runpytest_subprocess(*args, "-rs")
    # trace, script and aoti, and their tuned variants: 2 checks each
    skipped.assert_outcomes(skipped=12)
    skipped.stdout.fnmatch_lines(["*the libtorch harness needs cmake*"])
    required = pytester.runpytest_subprocess(*args, "--require=libtorch")
    assert required.ret == 4  # one usage error before any cell, not a failure per cell
    required.stderr.fnmatch_lines(["*this stack cannot run the suite:",
                                   "*- --require libtorch: the libtorch harness cannot be built "
                                   "with torch *: the libtorch harness needs cmake*"])


def test_a_failed_build_fails_every_libtorch_cell_with_the_build_log(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", shutil.which("false"))  # a "compiler" that fails every test
    process = Harness(tmp_path / "builds", timeout_s=60)
    try:
        for _ in range(2):  # the failure is remembered, not rebuilt for every cell
            with pytest.raises(HarnessError, match=r"(?s)building the libtorch harness failed "
                                                   r"at configure.*build\.log"):
                process.ensure_started()
    finally:
        process.close()


def test_the_thread_budget_reaches_the_harness_at_every_start(tmp_path):
    from conformance.runtimes.thread_budget import Budget

    # 3: neither libtorch's default on a 2-core machine nor the 2 set below.
    process = Harness(harness_build_dir(), timeout_s=120, budget=Budget(threads=3))
    try:
        process.ensure_started()
        assert process.request("settings", 0, 0) == ["3"]  # 0 threads: leave as set
        assert process.request("settings", 2, 0) == ["2"]
        process.close()
        process.ensure_started()  # a restart applies the budget again
        assert process.request("settings", 0, 0) == ["3"]
    finally:
        process.close()


def test_the_bare_loop_and_the_per_run_samples_time_the_same_calls(tmp_path, shared_harness):
    model = LibtorchModel(shared_harness, scripted(tmp_path, broken_models.Linear()), "cpu")
    inputs = (torch.randn(2, 4),)
    samples = model.time(inputs, warmup=20, runs=200)
    # The fastest of three loops: a loop's mean takes every stall of a busy machine.
    total = min(model.loop(inputs, runs=200) for _ in range(3))
    assert 0 < total and all(s > 0 for s in samples)
    # The same calls, with and without a clock pair each: one figure within a factor
    # of the other (a sample that timed something else, a whole request or nothing,
    # would be orders of magnitude off).
    bare, sampled = total / 200, sorted(samples)[100]
    assert bare / 2 < sampled < bare * 2, (bare, sampled)
    assert shared_harness.peak_memory_kib() > 10_000  # libtorch alone takes tens of MiB
