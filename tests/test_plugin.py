"""The plugin end to end, through pytester: user cases, ids, records, expectations."""
import json
import re
import shlex

import pytest

from conformance.runtimes import thread_budget

USER_CASES = '''
import torch
from conformance import Case, random_inputs
class Branchy(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 10


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x)


CASES = [
    Case("branchy", Branchy, example=lambda: (torch.ones(2, 3),),
         probes=lambda: [(-torch.ones(2, 3),)], tags={"control-flow"}),
    Case("small", Small, example=random_inputs((3, 4)), batch_sizes=(2,)),
]
'''

TRACE_BAKES_BRANCH = '''
[[expect]]
case = "branchy"
target = "trace-*"
check = "generalizes"
kind = "mismatch"
match = "diverges from eager on the probe input"
reason = "tracing bakes the branch"

[[expect]]
case = "branchy"
target = "trace-*"
check = "keeps_branches"
kind = "property"
reason = "a trace has no prim::If"
'''

MATRIX = "def test_check(conformance_cell):\n    conformance_cell.check()\n"
LATENCY = "def test_latency(latency_cell, benchmark):\n    latency_cell.measure(benchmark)\n"


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(my_models=USER_CASES, test_matrix=MATRIX, test_timing=LATENCY)
    pytester.makefile(".toml", expectations=TRACE_BAKES_BRANCH)

    def run(*args, expectations=True):
        extra = ["--expectations", "expectations.toml"] if expectations else []
        return pytester.runpytest("--no-builtin-cases", "--cases", "my_models.py",
                                  "--conformance-results", "records.jsonl", "-p", "no:randomly",
                                  "--artifacts-dir=artifacts", *extra, *args)

    return run


def records(pytester) -> list[dict]:
    text = (pytester.path / "records.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_ids_put_case_path_runtime_device_and_check_in_separate_words(suite):
    result = suite("--co", "-q")
    result.stdout.fnmatch_lines([
        "test_matrix.py::test_check[branchy-trace-torch-cpu-matches_eager]",
        "test_matrix.py::test_check[branchy-script-torch-cpu-keeps_branches]",
        "test_matrix.py::test_check[small-onnx-op17-onnxruntime-cpu-graph_valid]",
        "test_matrix.py::test_check[small-onnx-dynamo-op20-onnxruntime-noopt-cpu-generalizes]",
        "test_matrix.py::test_check[small-script-torch-cuda-fresh_process]",
    ])


def test_k_selects_by_case_and_path(suite):
    result = suite("--co", "-q", "-k", "branchy and script and cpu and not tuned")
    selected = [line for line in result.stdout.lines if "::test_check[" in line]
    # `torch` is a substring of `libtorch`: -k matches parts of ids, not whole words.
    assert len(selected) == 7
    assert sum("branchy-script-torch-cpu-" in line for line in selected) == 5
    assert sum("branchy-script-libtorch-cpu-" in line for line in selected) == 2


def test_the_torchscript_matrix_of_a_case(suite):
    result = suite("--co", "-q", "-k", "small and (trace or script) and not tuned")
    # small has no control flow, so no keeps_branches: 2 paths x 2 devices x 4 checks
    # on torch (fresh_process and mutates_like_eager besides the two output checks), and
    # x 2 checks on libtorch (whose artifact is always loaded from its file).
    assert len([line for line in result.stdout.lines if "::test_check[" in line]) == 24


def test_trace_of_a_branch_is_an_expected_failure_and_everything_else_passes(suite):
    result = suite("-k", "cpu and (trace or script) and not libtorch and not tuned", "-rx")
    result.assert_outcomes(passed=16, xfailed=2)
    result.stdout.fnmatch_lines(["*XFAIL*branchy-trace-torch-cpu-generalizes*tracing bakes the "
                                 "branch*observed mismatch:*diverges from eager on the probe "
                                 "input*"])


def test_every_check_writes_one_record(suite, pytester):
    suite("-k", "cpu and (trace or script) and not libtorch and not tuned")
    written = records(pytester)
    assert len(written) == 18
    by_id = {f"{r['case']}-{r['target']}-{r['check']}": r for r in written}
    baked = by_id["branchy-trace-torch-cpu-generalizes"]
    assert baked["outcome"] == "xfailed"
    assert "diverges from eager" in baked["message"]
    assert baked["expectation"]["reason"] == "tracing bakes the branch"
    assert baked["expectation"]["kind"] == baked["failure_kind"] == "mismatch"
    assert baked["metrics"]["max_abs"] > 1
    passed = by_id["small-script-torch-cpu-matches_eager"]
    assert passed["outcome"] == "passed" and passed["metrics"]["max_abs"] <= 1e-5
    assert passed["versions"]["torch"] and "eager_s" in passed["timings"]


def test_the_summary_counts_outcomes_by_target(suite):
    result = suite("-k", "cpu and (trace or script) and not libtorch and not tuned")
    result.stdout.fnmatch_lines([
        "*conformance by target*",
        "target * passed * failed * error * xfailed * xpassed * skipped",
        "script-torch-cpu * 9 * 0 * 0 * 0 * 0 * 0",
        "trace-torch-cpu * 7 * 0 * 0 * 2 * 0 * 0",
    ])


def test_records_come_back_from_xdist_workers(suite, pytester):
    result = suite("-n", "2", "-k", "cpu and (trace or script) and not libtorch and not tuned")
    result.assert_outcomes(passed=16, xfailed=2)
    written = records(pytester)
    assert len(written) == 18
    assert {r["outcome"] for r in written} == {"passed", "xfailed"}
    # one run, one session, however many workers; each record knows the session's size
    assert len({(r["run"], r["session"], r["session_cells"]) for r in written}) == 1
    assert written[0]["session_cells"] == 18
    # two workers split the cores instead of each running every runtime on all of them
    share = thread_budget.share(2)
    result.stdout.fnmatch_lines([f"conformance threads: {share} per runtime, in each of 2 "
                                 "pytest-xdist workers"])
    assert {r["budget"]["threads"] for r in written} == {share}


DYING_CASE = """
import os
import signal

import torch
from conformance import Case, random_inputs


class Dying(torch.nn.Module):
    def forward(self, x):  # as the kernel ends a process that runs out of memory
        os.kill(os.getpid(), signal.SIGKILL)


CASES = [Case("dying", Dying, example=random_inputs((2, 3)))]
"""


def test_a_cell_whose_worker_dies_is_recorded_as_an_error_without_a_verdict(pytester):
    pytester.makepyfile(dying_models=DYING_CASE)
    result = pytester.runpytest_subprocess(
        "--pyargs", "conformance", "--no-builtin-cases", "--cases=dying_models.py", "-n", "1",
        "-p", "no:cacheprovider", "--conformance-results=records.jsonl",
        "--artifacts-dir=artifacts", "--max-worker-restart=0",
        "-k", "trace-torch-cpu and matches_eager")
    [record] = records(pytester)
    assert record["outcome"] == "error" and record["failure_kind"] is None
    assert record["case"] == "dying" and record["target"] == "trace-torch-cpu"
    assert "worker running the cell died, and the cell has no verdict" in record["message"]
    assert record["budget"] == {"threads": thread_budget.share(1), "flush_denormal": False}
    result.stdout.fnmatch_lines(["*1 records written to records.jsonl*"])


def test_threads_pins_the_budget_of_every_worker_and_a_plain_run_leaves_the_defaults(
        suite, pytester):
    from types import SimpleNamespace

    from conformance.plugin import chosen_threads

    def config(threads, plugin_default=None):
        hook = SimpleNamespace(pytest_conformance_default_threads=lambda config: plugin_default)
        return SimpleNamespace(option=SimpleNamespace(threads=threads), hook=hook)

    assert chosen_threads(config(3), workers=2) == 3
    assert chosen_threads(config(None, plugin_default=1), workers=8) == 1  # a latency run
    assert chosen_threads(config(None), workers=2) == thread_budget.share(2)
    assert chosen_threads(config(None), workers=None) is None
    selected = ("-k", "small and cpu and trace and not libtorch and not tuned")
    suite("--threads=3", *selected).stdout.fnmatch_lines(["conformance threads: 3 per runtime"])
    assert {r["budget"]["threads"] for r in records(pytester)} == {3}
    suite(*selected).stdout.fnmatch_lines(["conformance threads: each runtime's own count"])
    assert {r["budget"] for r in records(pytester)} == {None}


def test_a_last_failed_rerun_appends_to_its_run_and_the_report_merges_it(suite, pytester):
    from conformance.report import data as report_data

    selected = ("-k", "branchy and cpu and trace and not libtorch and not tuned")
    suite(*selected, expectations=False)  # the baked branch fails without its row
    first = records(pytester)
    assert {r["session_cells"] for r in first} == {len(first)}
    failed = {r["nodeid"] for r in first if r["outcome"] == "failed"}
    assert failed
    result = suite("--lf", *selected)  # the rows added: the failures are expected ones
    result.stdout.fnmatch_lines([f"*records written to records.jsonl (a rerun of run "
                                 f"{first[0]['run']}: appended)*"])
    both = records(pytester)
    assert both[:len(first)] == first and {r["run"] for r in both} == {first[0]["run"]}
    assert len({r["session"] for r in both}) == 2
    merged = report_data.merge([both])
    assert {r["nodeid"] for r in merged if r.get("earlier")} == failed
    assert all(r["outcome"] == "xfailed" for r in merged if r["nodeid"] in failed)
    assert report_data.incomplete_sessions([both]) == []


def test_without_the_expectations_the_trace_fails_with_an_explanation(suite):
    result = suite("-k", "branchy and trace and cpu and generalizes and not libtorch and not tuned",
                   expectations=False)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*case branchy, target trace-torch-cpu, check generalizes: the trace artifact diverges "
        "from eager on the probe input*",
        "*max abs error*", "*tolerance:*rtol=*", "*reproduce: pytest*"])


def test_an_unexpected_pass_fails_and_names_the_row_to_remove(suite, pytester):
    pytester.makefile(".toml", wrong='[[expect]]\ncase = "small"\ntarget = "script-*"\n'
                                     'check = "matches_eager"\nkind = "mismatch"\n'
                                     'reason = "believed broken"\n')
    result = suite("-k", "small and script and cpu and matches_eager and not libtorch "
                         "and not tuned", "--expectations", "wrong.toml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*UNEXPECTED PASS: small-script-torch-cpu-matches_eager passes "
                                 "on torch*wrong.toml, row 1*Remove that row*"])
    assert records(pytester)[0]["outcome"] == "xpassed"


BRANCHY_GENERALIZES = "branchy and trace and cpu and generalizes and not libtorch and not tuned"


@pytest.mark.parametrize("kind, match, why", [
    ("export-error", "", "*the failure is not the row's kind (export-error)*"),
    ("mismatch", 'match = "could not export"\n',
     "*its message does not match the row's pattern 'could not export'*"),
])
def test_a_failure_other_than_the_rows_fails_with_what_was_expected_and_observed(
        suite, pytester, kind, match, why):
    # The trace of branchy fails with a mismatch on the probe; the row expects another
    # failure, which a strict xfail would have accepted.
    pytester.makefile(".toml", other=f'[[expect]]\ncase = "branchy"\ntarget = "trace-*"\n'
                                     f'check = "generalizes"\nkind = "{kind}"\n{match}'
                                     'reason = "believed to be something else"\n')
    result = suite("-k", BRANCHY_GENERALIZES, "--expectations", "other.toml",
                   expectations=False)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"*expected {kind} (believed to be something else; case='branchy'*other.toml, row 1)), "
        "observed mismatch: case branchy, target trace-torch-cpu, check generalizes: the trace "
        "artifact diverges from eager on the probe input*", "*max abs error*", why])
    (record,) = records(pytester)
    assert record["outcome"] == "failed" and record["failure_kind"] == "mismatch"
    assert record["expectation"]["kind"] == kind
    assert record["message"].startswith(f"expected {kind} (believed to be something else")


@pytest.mark.parametrize("row, message", [
    ('check = "generalizes"\nkind = "numerics"\n', "bad.toml, row 1: the row has kind = "
     "'numerics'; a row names the failure it expects, one of: export-error, runtime-error"),
    ('check = "generalizes"\n', "bad.toml, row 1: the row has no kind"),
    ('kind = "mismatch"\n', "bad.toml, row 1: every row needs a check"),
])
def test_a_row_without_a_known_kind_or_a_check_is_a_usage_error(suite, pytester, row, message):
    pytester.makefile(".toml", bad=f'[[expect]]\ncase = "branchy"\n{row}reason = "r"\n')
    result = suite("--co", "--expectations", "bad.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


BUILTIN_LOOKALIKE = """
import torch
from conformance import Case, random_inputs
CASES = [Case("quantized_mobilenet_v2_mine", lambda: torch.nn.Linear(4, 2),
              example=random_inputs((3, 4)))]
"""


def test_builtin_rows_do_not_apply_to_a_users_case_of_a_matching_name(pytester):
    # The built-in table's `quantized_mobilenet_v2_*` rows say torch.export fails on the
    # built-in quantized models (matches_eager, generalizes, ...); a user's case of a
    # matching name is not one of them. The same pattern in a user's own table, here
    # for generalizes only, applies to every case.
    pytester.makepyfile(mine=BUILTIN_LOOKALIKE, test_matrix=MATRIX)
    pytester.makefile(".toml", mine='[[expect]]\ncase = "quantized_mobilenet_v2_*"\n'
                                    'target = "export-*"\ncheck = "generalizes"\n'
                                    'kind = "export-error"\nreason = "user row"\n')
    # In a process of its own: torch.export imports Inductor, whose operator library
    # cannot be registered twice when pytester's in-process runs re-import it.
    result = pytester.runpytest_subprocess("--cases", "mine.py", "--expectations", "mine.toml",
                                "--conformance-results", "records.jsonl", "-p", "no:randomly",
                                "--artifacts-dir=artifacts", "-k", "quantized_mobilenet_v2_mine "
                                "and export-torch-cpu and (matches_eager or generalizes)")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*UNEXPECTED PASS: quantized_mobilenet_v2_mine-export-torch-cpu-"
                                 "generalizes*mine.toml, row 1*"])
    by_check = {r["check"]: r for r in records(pytester)}
    assert by_check["matches_eager"]["outcome"] == "passed"
    assert by_check["matches_eager"]["expectation"] is None
    assert by_check["generalizes"]["outcome"] == "xpassed"


def test_a_row_that_matches_nothing_warns(suite, pytester):
    pytester.makefile(".toml", stale='[[expect]]\ncase = "gone"\ncheck = "*"\n'
                                     'kind = "export-error"\nreason = "old"\n')
    result = suite("--co", "-q", "--expectations", "stale.toml")
    result.stdout.fnmatch_lines(["*ConformanceWarning*case='gone'*matches no cell*"])


CUDA_SCRIPT_MATCHES = "small and script and cuda and matches_eager and not libtorch and not tuned"


@pytest.mark.skipif(cuda_available(), reason="needs a machine without CUDA")
def test_cuda_cells_skip_with_a_reason_and_fail_when_required(suite):
    result = suite("-k", CUDA_SCRIPT_MATCHES, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no CUDA device on this machine*"])
    result = suite("-k", CUDA_SCRIPT_MATCHES, "--require", "cuda")
    result.assert_outcomes(errors=1)


@pytest.mark.skipif(cuda_available(), reason="needs a machine without CUDA")
def test_a_required_device_that_is_missing_is_never_an_expected_failure(suite, pytester):
    # The row expects the cell's check to fail; a cell that cannot run here did not fail
    # its check, whatever the row says.
    pytester.makefile(".toml", cuda='[[expect]]\ncase = "small"\ntarget = "*-cuda"\n'
                                    'check = "matches_eager"\nkind = "runtime-error"\n'
                                    'reason = "believed broken on CUDA"\n')
    result = suite("-k", CUDA_SCRIPT_MATCHES, "--require", "cuda", "--expectations", "cuda.toml")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*--require cuda: no CUDA device on this machine*"])
    (record,) = records(pytester)
    assert record["outcome"] == "error" and record["failure_kind"] is None


@pytest.mark.skipif(cuda_available(), reason="needs a machine without CUDA")
def test_requiring_a_runtime_does_not_require_a_device(suite):
    from conformance.runtimes.libtorch import toolchain_problem

    if toolchain_problem():
        pytest.skip(toolchain_problem())
    result = suite("-k", "small and script and libtorch and cuda and matches_eager and not tuned",
                   "--require=libtorch", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no CUDA device on this machine*"])


@pytest.mark.parametrize("source, message", [
    ("raise RuntimeError('boom')", "--cases bad.py: importing it raised RuntimeError: boom"),
    ("x = 1", "--cases bad.py: the module defines no CASES list"),
    ("CASES = [1]", "--cases bad.py: CASES[0] is a int, not a conformance.Case"),
    ("from conformance import Case\nCASES = [Case('trace_me', print, print)]",
     "contains 'trace'"),
    ("def broken(:\n", "--cases bad.py: importing it raised SyntaxError"),
])
def test_a_broken_cases_file_is_a_clear_usage_error(pytester, source, message):
    pytester.makepyfile(bad=source)
    result = pytester.runpytest("--no-builtin-cases", "--cases", "bad.py", "--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_a_missing_cases_file_is_a_clear_usage_error(pytester):
    result = pytester.runpytest("--cases", "nowhere.py", "--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--cases nowhere.py: no such file" in result.stderr.str()


def test_a_duplicate_case_name_is_a_clear_usage_error(pytester):
    pytester.makepyfile(one=USER_CASES, two=USER_CASES, test_matrix=MATRIX)
    result = pytester.runpytest("--no-builtin-cases", "--cases", "one.py", "--cases", "two.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "case 'branchy' is already defined by" in result.stderr.str()


def test_a_user_case_named_like_a_built_in_one_replaces_it_with_a_notice(pytester):
    pytester.makepyfile(my_models=TWO_CASES.replace('"alpha", "beta"', '"my_cell",'))
    result = pytester.runpytest_subprocess(
        "--pyargs", "conformance", "--cases=my_models.py", "-p", "no:cacheprovider",
        "--conformance-results=records.jsonl", "-k", "my_cell and trace-torch-cpu-matches_eager")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*case 'my_cell' of *my_models.py replaces the built-in case*"])
    record = json.loads((pytester.path / "records.jsonl").read_text().splitlines()[0])
    assert record["case"] == "my_cell" and record["expectation"] is None


def test_a_case_whose_requirement_is_missing_skips_or_fails_under_require(pytester):
    needing = TWO_CASES.replace("random_inputs((2, 4)))",
                                "random_inputs((2, 4)), requires=('no_such_module_here',))")
    pytester.makepyfile(my_models=needing)
    args = ("--pyargs", "conformance", "--no-builtin-cases", "--cases=my_models.py",
            "-p", "no:cacheprovider", "-k", "alpha and trace-torch-cpu")
    result = pytester.runpytest_subprocess(*args, "-rs")
    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines(["*case alpha needs no_such_module_here, which is not "
                                 "installed here; pip install no_such_module_here*"])
    result = pytester.runpytest_subprocess(*args, "--require=no_such_module_here")
    result.assert_outcomes(errors=4)  # the cell's fixture fails, as for a missing runtime


def test_a_generated_family_cell_requires_nothing():
    """The cells of the generated families go through the same skip logic as a case's;
    a family is no Case (the CI tier once errored on every generated_models cell)."""
    from conformance.cases import missing_requirements
    from conformance.checks.families import FAMILIES

    assert all(missing_requirements(family) == [] for family in FAMILIES)


def test_the_families_extra_is_named_where_transformers_is_missing():
    from conformance.cases import requirement_hint

    assert requirement_hint(["transformers", "timm"]) == (
        "pip install 'conformance[families]' (`make suite` installs it)")
    assert requirement_hint(["timm", "einops"]).endswith("and pip install einops")


def test_an_example_that_returns_a_bare_tensor_is_refused_at_collection(pytester):
    pytester.makepyfile(my_models=TWO_CASES.replace("random_inputs((2, 4))",
                                                    "lambda: torch.randn(2, 4)"))
    result = pytester.runpytest("--no-builtin-cases", "--cases=my_models.py", "--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert ("case 'alpha': example() returned a Tensor; it must return a tuple of the "
            "model's positional inputs") in result.stderr.str()


UNSCRIPTABLE_CASE = """
import torch
from conformance import Case, random_inputs


class Tries(torch.nn.Module):
    def forward(self, x):
        try:
            return x * 2
        except RuntimeError:
            return x


CASES = [Case("tries", Tries, random_inputs((2, 3)))]
"""


def test_failures_with_one_cause_are_counted_together_in_the_summary(pytester):
    pytester.makepyfile(my_models=UNSCRIPTABLE_CASE)
    result = pytester.runpytest_subprocess(
        "--pyargs", "conformance", "--no-builtin-cases", "--cases=my_models.py",
        "-p", "no:cacheprovider", "-k", "tries and script and cpu and not libtorch and not tuned")
    result.assert_outcomes(failed=4)  # TorchScript has no try: every check of the path
    result.stdout.fnmatch_lines([
        "*conformance failures that share a cause*",
        "*4 cells  case tries, path script: the script exporter failed*"])


def declaring_unsupported(cases_module: str, path: str, reason: str) -> str:
    """A cases module's text whose last case (the one closing the CASES list) declares
    `path` unsupported."""
    head, _, tail = cases_module.rpartition(")]")
    return f"{head}, unsupported={{{path!r}: {reason!r}}})]{tail}"


def test_a_case_declares_a_path_it_does_not_support_without_a_table(pytester):
    declared = declaring_unsupported(UNSCRIPTABLE_CASE, "script", "TorchScript has no try blocks")
    pytester.makepyfile(my_models=declared)
    result = pytester.runpytest_subprocess(
        "--pyargs", "conformance", "--no-builtin-cases", "--cases=my_models.py", "-rx",
        "-p", "no:cacheprovider", "-k", "tries and (script or trace) and cpu and not libtorch "
                                        "and not tuned")
    result.assert_outcomes(passed=4, xfailed=4)  # the trace exports; the script cannot
    result.stdout.fnmatch_lines(["*TorchScript has no try blocks*"])


def test_a_declared_unsupported_path_passes_no_cell_of_a_wrong_artifact(pytester):
    # The trace exports, and bakes the branch its example took (a fault found with the
    # example alone): a declaration that the path cannot export excuses none of it.
    declared = declaring_unsupported(GATE_CASE, "trace", "said to be unsupported")
    pytester.makepyfile(gate_cases=declared)
    result = pytester.runpytest_subprocess(
        "--pyargs", "conformance", "--no-builtin-cases", "--cases=gate_cases.py",
        "-p", "no:cacheprovider", "-k", "gate and trace-torch-cpu and (matches_eager "
                                        "or generalizes)")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*UNEXPECTED PASS: gate-trace-torch-cpu-matches_eager*Remove 'trace' from the case's `unsupported`*",
        "*expected export-error (said to be unsupported*observed mismatch*generalizes*"])


def test_a_declared_unsupported_path_must_name_a_path_and_a_reason():
    import torch

    from conformance import Case, random_inputs

    with pytest.raises(ValueError, match="'tflite' is not an export path"):
        Case("c", torch.nn.Identity, random_inputs((1,)), unsupported={"tflite": "no"})
    with pytest.raises(ValueError, match="'script' needs a reason"):
        Case("c", torch.nn.Identity, random_inputs((1,)), unsupported={"script": " "})


TOKEN_CASE = """
import torch
from conformance import Case, Dim, TensorSpace, random_tokens

VOCAB = 50


class TinyEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 8)
        self.project = torch.nn.Linear(8, 4)

    def forward(self, ids, mask):
        hidden = self.project(self.embed(ids)) * mask.unsqueeze(-1)
        return hidden.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


def example():
    return random_tokens((2, 8), vocab=VOCAB)() + random_tokens((2, 8), vocab=2)()


SEQ = Dim("seq", 2, 16)
CASES = [Case("tiny_encoder", TinyEncoder, example,
              input_space=(TensorSpace((2, SEQ), low=0, high=VOCAB - 1, dtype="int64"),
                           TensorSpace((2, SEQ), low=0, high=1, dtype="int64")))]
"""


def test_token_ids_and_a_mask_with_a_dynamic_sequence_length_pass_every_exporter(pytester):
    pytester.makepyfile(my_models=TOKEN_CASE)
    result = pytester.runpytest_subprocess(
        "--pyargs", "conformance", "--no-builtin-cases", "--cases=my_models.py",
        "-p", "no:cacheprovider", "--conformance-results=records.jsonl",
        "-k", "cpu and not libtorch and not noopt and not reference and not compile "
              "and not aoti and not tuned and (matches_eager or agrees_on_drawn_inputs)")
    result.assert_outcomes(passed=10)  # 5 paths x 2 checks
    records = [json.loads(line) for line in
               (pytester.path / "records.jsonl").read_text().splitlines()]
    drawn = [r for r in records if r["check"] == "agrees_on_drawn_inputs"]
    assert len(drawn) == 5 and all(r["metrics"]["examples"] >= 4 for r in drawn), drawn


def test_an_integer_space_draws_integers_in_range_that_its_code_reproduces():
    import torch

    from conformance.spaces import Fill

    fill = Fill(seed=3, scale=100.0, offset=20.0)
    drawn = fill.tensor((2, 7), 0, 49, "int64")
    assert drawn.dtype == torch.int64 and 0 <= int(drawn.min()) and int(drawn.max()) <= 49
    assert torch.equal(eval(fill.code((2, 7), 0, 49, "int64")), drawn)


PYTREE_OUTPUT_CASE = """
import dataclasses

import torch
from conformance import Case, random_inputs


@dataclasses.dataclass
class Pair:
    first: torch.Tensor
    second: torch.Tensor


torch.export.register_dataclass(Pair, serialized_type_name="my_models.Pair")


class Pairs(torch.nn.Module):
    def forward(self, x):
        return Pair(x * 2, x + 1)


CASES = [Case("pairs", Pairs, random_inputs((2, 3)))]
"""


def test_a_saved_program_with_a_registered_output_type_names_the_import_it_needs(pytester):
    pytester.makepyfile(my_models=PYTREE_OUTPUT_CASE)
    result = pytester.runpytest_subprocess(
        "--pyargs", "conformance", "--no-builtin-cases", "--cases=my_models.py",
        "-p", "no:cacheprovider", "-k", "pairs and export-torch-cpu and (matches_eager "
                                         "or fresh_process)")
    # In the exporting process the type is registered; a process that loads the program
    # without importing its module cannot rebuild the outputs, and is told what to import.
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*outputs or inputs are my_models.Pair, a pytree type*"
                                 "add `import my_models` before loading it*"
                                 "`Case(deploy_imports=('my_models',))`*"])


def test_a_case_declaring_its_deploy_imports_loads_in_the_fresh_process(pytester):
    # The output type lives in a module of its own, as transformers' ModelOutputs do: the
    # fresh process imports it by name, and so does this process to read the outputs back.
    type_module, cases = PYTREE_OUTPUT_CASE.split("class Pairs")
    pytester.makepyfile(pair_type=type_module.replace('"my_models.Pair"', '"pair_type.Pair"'),
                        my_models="import torch\nfrom conformance import Case, random_inputs\n"
                                  "from pair_type import Pair\n\n\nclass Pairs" + cases.replace(
                                      'random_inputs((2, 3)))',
                                      'random_inputs((2, 3)), deploy_imports=("pair_type",))'))
    result = pytester.runpytest_subprocess(
        "--pyargs", "conformance", "--no-builtin-cases", "--cases=my_models.py",
        "-p", "no:cacheprovider", "-k", "pairs and (export-torch-cpu or aoti-torch-cpu) and fresh_process")
    result.assert_outcomes(passed=2)


def test_a_deploy_import_may_name_a_registration_to_call(tmp_path, monkeypatch):
    from conformance.runtimes.fresh_process import deploy_import

    (tmp_path / "registering.py").write_text("CALLS = []\n\n\ndef register():\n"
                                             "    CALLS.append(1)\n")
    monkeypatch.syspath_prepend(tmp_path)
    deploy_import("registering")
    import registering

    assert registering.CALLS == []
    deploy_import("registering:register")
    assert registering.CALLS == [1]


def test_help_lists_the_options_in_one_group(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["conformance: PyTorch export conformance:", "*--cases*",
                                 "*--conformance-results*", "*--require*"])


def test_the_header_prints_the_versions(pytester):
    pytester.makepyfile(test_nothing="def test_ok():\n    pass\n")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["conformance: torch *, torchvision *, onnx *, onnxruntime *, "
                                 "onnxscript *, compiler *, python *"])


def test_the_installed_package_runs_user_cases_with_pyargs(pytester):
    pytester.makepyfile(my_models=USER_CASES)
    result = pytester.runpytest("--pyargs", "conformance", "--no-builtin-cases",
                                "--cases", "my_models.py", "--conformance-results",
                                "records.jsonl", "--artifacts-dir=artifacts",
                                "-k", "small and script and cpu and not tuned")
    result.assert_outcomes(passed=6)  # 4 checks on torch, 2 on libtorch


def readme_example(first_line: str = "# my_models.py") -> str:
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index(first_line)
    return readme[start:readme.index("```", start)]


def test_the_readme_transformers_example_runs_with_keyword_inputs(pytester):
    pytest.importorskip("transformers")
    pytester.makepyfile(hf_models=readme_example("# hf_models.py"))
    result = pytester.runpytest_subprocess(
        "--pyargs", "conformance", "--no-builtin-cases", "--cases=hf_models.py",
        "-p", "no:cacheprovider", "--conformance-results=records.jsonl",
        "-k", "tiny_bert and (trace-torch-cpu or onnx-op17-onnxruntime-cpu or "
              "script-torch-cpu) and matches_eager")
    result.assert_outcomes(passed=2, xfailed=1)  # script is declared unsupported


def test_the_readme_example_runs_as_documented(pytester):
    pytester.makepyfile(my_models=readme_example())
    result = pytester.runpytest("--pyargs", "conformance", "--no-builtin-cases",
                                "--cases", "my_models.py", "--conformance-results",
                                "records.jsonl", "--artifacts-dir=artifacts",
                                "-k", "cpu and (trace or script) and not fresh_process "
                                      "and not tuned")
    # On torch, my_gate: 2 paths x 4 checks, my_head: 2 paths x 3 checks (with
    # mutates_like_eager); on libtorch, both 2 paths x 2 checks. The trace of the gate
    # diverges on the probe (on both runtimes) and has no prim::If.
    result.assert_outcomes(passed=19, failed=3)
    result.stdout.fnmatch_lines(["FAILED *my_gate-trace-torch-cpu-generalizes*",
                                 "FAILED *my_gate-trace-torch-cpu-keeps_branches*"])


def test_a_separated_directory_option_that_would_move_the_rootdir_is_refused(
        pytester, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    result = pytester.runpytest("--co", "--artifacts-dir", str(elsewhere))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"write --artifacts-dir={elsewhere}" in result.stderr.str()


@pytest.mark.parametrize("flag", ["--cases", "--expectations"])
def test_a_separated_file_option_outside_the_run_directory_is_refused(pytester, tmp_path_factory,
                                                                     flag):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "my_models.py"
    elsewhere.write_text(TWO_CASES)
    result = pytester.runpytest("--co", flag, str(elsewhere))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"write {flag}={elsewhere}" in result.stderr.str()


def test_the_equals_form_of_cases_from_elsewhere_collects_them(pytester, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "my_models.py"
    elsewhere.write_text(TWO_CASES)
    result = pytester.runpytest_subprocess("--pyargs", "conformance", "--co", "-q",
                                           "--no-builtin-cases", f"--cases={elsewhere}",
                                           "-k", "trace-torch-cpu-matches_eager")
    collected = [line for line in result.stdout.lines if "::test_check[" in line]
    assert [line.split("::")[-1] for line in collected] == [
        "test_check[alpha-trace-torch-cpu-matches_eager]",
        "test_check[beta-trace-torch-cpu-matches_eager]"]


GATE_CASE = """
import torch
from conformance import Case, random_inputs


class Gate(torch.nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else -x


CASES = [Case("gate", Gate, random_inputs((2, 3), offset=1.0))]
"""


def test_the_reproduce_line_of_a_user_case_runs_that_cell_again(pytester):
    pytester.makepyfile(gate_cases=GATE_CASE)
    first = pytester.runpytest_subprocess(
        "--pyargs", "conformance", "--no-builtin-cases", "--cases=gate_cases.py",
        "-p", "no:cacheprovider", "--conformance-results=records.jsonl",
        "-k", "gate and trace-torch-cpu-generalizes")
    first.assert_outcomes(failed=1)  # the trace froze the branch its example took
    record = json.loads((pytester.path / "records.jsonl").read_text().splitlines()[0])
    line = re.search(r"reproduce: (.*)", record["message"]).group(1)
    assert "--cases=gate_cases.py" in line and "--no-builtin-cases" in line
    command = shlex.split(line)
    assert command[0] == "pytest"
    again = pytester.runpytest_subprocess(*command[1:], "-p", "no:cacheprovider", "-v",
                                          "--conformance-results=again.jsonl")
    again.assert_outcomes(failed=1)
    records = [json.loads(r) for r in (pytester.path / "again.jsonl").read_text().splitlines()]
    assert [(r["case"], r["target"], r["check"]) for r in records] == [
        ("gate", "trace-torch-cpu", "generalizes")]


QUICK_LATENCY = ("--latency", "--latency-warmup=1", "--latency-min-rounds=5",
                 "--latency-max-rounds=5")


def test_latency_cells_run_only_with_the_option(suite):
    result = suite("--co", "-q", "-k", "small and cpu and (trace or eager)")
    assert "latency" not in result.stdout.str()
    result = suite("--co", "-q", "-k", "small and cpu and (trace or eager)", "--latency")
    result.stdout.fnmatch_lines(["test_timing.py::test_latency[small-eager-torch-cpu-latency]",
                                 "test_timing.py::test_latency[small-trace-torch-cpu-latency]",
                                 "test_timing.py::test_latency[small-trace-libtorch-cpu-latency]"])
    assert "test_check[" not in result.stdout.str()


def test_a_latency_run_records_samples_budget_and_prints_the_table(suite, pytester):
    result = suite("-k", "cpu and (trace or eager) and not libtorch and not tuned", "--threads=1",
                   "--latency-memory", *QUICK_LATENCY)
    # branchy's trace is timed: on the example it takes the branch it baked, and matches
    result.assert_outcomes(passed=4)
    written = records(pytester)
    assert {r["check"] for r in written} == {"latency"}
    assert all(r["metrics"]["first_call_s"] > 0 for r in written)
    # torch alone takes hundreds of MiB; eager's figure comes from a process that
    # built the user's case from its module
    assert all(r["metrics"]["peak_rss_mib"] > 100 for r in written)
    small = next(r for r in written if r["target"] == "trace-torch-cpu" and r["case"] == "small")
    assert len(small["metrics"]["samples_s"]) == 5 and small["metrics"]["speedup"] > 0
    assert small["budget"] == {"threads": 1, "flush_denormal": False}
    result.stdout.fnmatch_lines(["*conformance latency*", "case*target*median ms*speedup*",
                                 "*geometric mean of the speedup over eager*"])


def test_the_matrix_runs_with_the_latency_plugin_blocked(pytester):
    """The conformance plugin stands alone: the latency plugin only adds to it. The
    thread budget is the core's, so --threads stays; --latency goes with its plugin."""
    pytester.makepyfile(my_models=USER_CASES, test_matrix=MATRIX)
    args = ("-p", "no:conformance-latency", "--no-builtin-cases", "--cases", "my_models.py",
            "--conformance-results", "records.jsonl", "-p", "no:randomly",
            "--artifacts-dir=artifacts")
    result = pytester.runpytest(*args, "--threads=1", "-k",
                                "small and trace-torch-cpu and (matches_eager or generalizes)")
    result.assert_outcomes(passed=2)
    assert {(r["target"], r["check"]) for r in records(pytester)} == {
        ("trace-torch-cpu", "matches_eager"), ("trace-torch-cpu", "generalizes")}
    result.stdout.fnmatch_lines(["*conformance by target*", "*2 records written to*"])
    assert "conformance latency" not in result.stdout.str()
    # The package's own latency test module goes with its plugin.
    listed = pytester.runpytest(*args, "--pyargs", "conformance", "--co", "-q")
    assert listed.ret == pytest.ExitCode.OK and "test_check[small-" in listed.stdout.str()
    assert "test_latency" not in listed.stdout.str()
    result = pytester.runpytest(*args, "--co", "--latency")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unrecognized arguments: --latency*"])


def test_a_latency_run_refuses_parallel_workers(suite):
    result = suite("--latency", "-n", "2", "--co")
    result.stderr.fnmatch_lines(["*--latency runs in one process*"])
    assert result.ret != 0


def test_the_gate_fails_a_cell_slower_than_the_baseline(suite, pytester):
    baseline = {"case": "small", "target": "trace-torch-cpu", "path": "trace",
                "check": "latency", "metrics": {"median_s": 1e-6, "speedup": 1000.0}}
    (pytester.path / "baseline.jsonl").write_text(json.dumps(baseline) + "\n")
    result = suite("-k", "small and trace and cpu and not libtorch and not tuned", *QUICK_LATENCY,
                   "--latency-baseline=baseline.jsonl")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*latency regression against baseline.jsonl: case small, "
                                 "target trace-torch-cpu: speedup over eager *x, was 1000.000x*"])


def test_a_baseline_from_another_budget_or_the_runs_own_file_is_refused(suite, pytester):
    other = {"case": "small", "target": "trace-torch-cpu", "path": "trace", "check": "latency",
             "metrics": {"median_s": 1e-3, "speedup": 1.0},
             "budget": {"threads": 2, "flush_denormal": False}}
    (pytester.path / "two_threads.jsonl").write_text(json.dumps(other) + "\n")
    result = suite("--co", *QUICK_LATENCY, "--latency-baseline=two_threads.jsonl")
    result.stderr.fnmatch_lines(["*the baseline ran with thread budget*threads*: 2*, this run "
                                 "with*threads*: 1*"])
    (pytester.path / "records.jsonl").write_text(json.dumps(other) + "\n")
    result = suite("--co", *QUICK_LATENCY, "--latency-baseline=records.jsonl")
    result.stderr.fnmatch_lines(["*is this run's own results file*"])


SHARDED_CASES = '''
import torch
from conformance import Case, random_inputs
CASES = [Case(name, lambda: torch.nn.Linear(4, 2), example=random_inputs((3, 4)))
         for name in ("alpha", "beta")]  # shard 1 and shard 2 of 2
'''


def test_two_shards_merge_into_the_report_of_the_unsharded_run(pytester):
    from conformance.records import read_records
    from conformance.report import data as report_data

    pytester.makepyfile(sharded=SHARDED_CASES, test_matrix=MATRIX)

    def run(results, *args):
        pytester.runpytest("--no-builtin-cases", "--cases", "sharded.py", "-p", "no:randomly",
                           "-k", "cpu and (trace or script) and not libtorch and not tuned",
                           f"--conformance-results={results}", "--artifacts-dir=artifacts",
                           *args).assert_outcomes(passed=16 if not args else 8)
        return read_records(pytester.path / results)

    whole = run("whole.jsonl")
    shards = [run(f"shard{k}.jsonl", f"--shard={k}/2") for k in (1, 2)]
    assert {r["case"] for r in shards[0]} == {"alpha"}
    assert {r["case"] for r in shards[1]} == {"beta"}
    merged, alone = (report_data.summarize(report_data.merge(sets))
                     for sets in (shards, [whole]))
    for part in ("grid", "counts", "pass_rates"):
        assert merged[part] == alone[part]


def test_shards_dealt_by_recorded_cost_finish_together(pytester):
    from conformance.shard import balanced

    assert balanced(["a", "b", "c", "d"], {"a": 10, "b": 6, "c": 5, "d": 1}, 2) == \
        {"a": 1, "b": 2, "c": 2, "d": 1}  # 11 s and 11 s; by name alone, 16 s and 6 s
    assert balanced(["a", "b", "new"], {"a": 9, "b": 1}, 2) == {"a": 1, "new": 2, "b": 2}
    three = SHARDED_CASES.replace('("alpha", "beta")', '("alpha", "beta", "gamma")')
    pytester.makepyfile(sharded=three, test_matrix=MATRIX)
    costs = [{"case": case, "duration_s": seconds}
             for case, seconds in (("alpha", 10.0), ("beta", 6.0), ("gamma", 5.0))]
    (pytester.path / "costs.jsonl").write_text("\n".join(json.dumps(c) for c in costs))
    chosen = []
    for k in (1, 2):
        result = pytester.runpytest("--no-builtin-cases", "--cases", "sharded.py", "--co", "-q",
                                    "-k", "cpu and trace and not libtorch and not tuned",
                                    f"--shard={k}/2", "--shard-costs=costs.jsonl")
        chosen.append({line.split("[")[1].split("-")[0] for line in result.stdout.lines
                       if "::test_check[" in line})
    assert chosen == [{"alpha"}, {"beta", "gamma"}]
    result = pytester.runpytest("--no-builtin-cases", "--cases", "sharded.py", "--co",
                                "--shard=1/2", "--shard-costs=nowhere.jsonl")
    result.stderr.fnmatch_lines(["*--shard-costs nowhere.jsonl: not a records file*"])


def test_a_malformed_shard_is_a_usage_error(suite):
    result = suite("--co", "--shard=3/2")
    result.stderr.fnmatch_lines(["*--shard 3/2: K must be between 1 and N*"])


SPACE_CASES = '''
import torch
from conformance import Case, Dim, TensorSpace, random_inputs
class Double(torch.nn.Module):
    def forward(self, x):
        return x * 2


SPACE = (TensorSpace((Dim("rows", 1, 6), 3)),)
CASES = [Case(f"double{i}", Double, random_inputs((2, 3)), input_space=SPACE) for i in range(4)]
'''


def test_xdist_workers_search_from_the_seed_the_header_prints(pytester):
    pytester.makepyfile(space_models=SPACE_CASES, test_matrix=MATRIX)
    result = pytester.runpytest("--no-builtin-cases", "--cases", "space_models.py", "-n", "2",
                                "--conformance-results", "records.jsonl", "--property-profile",
                                "nightly", "-k", "trace-torch-cpu and agrees_on_drawn_inputs")
    result.assert_outcomes(passed=4)
    header = [line for line in result.stdout.lines if "property search" in line]
    assert len(header) == 1 and "profile nightly" in header[0] and "seed " in header[0]
    seed = header[0].split("seed ")[1].rstrip(")")
    searches = {r["metrics"]["search"] for r in records(pytester)}
    assert len(searches) == 1 and f"seed {seed})" in searches.pop()


def test_the_families_go_with_the_builtin_cases(pytester):
    pytester.makepyfile(test_matrix=MATRIX)
    listed = pytester.runpytest("--co", "-q", "-k", "convnets and trace-torch-cpu")
    listed.stdout.fnmatch_lines(["*test_check?convnets-trace-torch-cpu-generated_models?*"])
    alone = pytester.runpytest("--co", "-q", "--no-builtin-cases", "-k", "convnets")
    assert "convnets" not in alone.stdout.str()


def test_markers_lists_every_case_tag_once(suite):
    result = suite("--markers")
    tagged = [line for line in result.stdout.lines if "cases tagged" in line]
    assert sum(line.startswith("@pytest.mark.control-flow:") for line in tagged) == 1
    assert len(tagged) == len(set(tagged))
    assert sum(line.startswith("@pytest.mark.conformance_check:")
               for line in result.stdout.lines) == 1


TWO_CASES = """
import torch
from conformance import Case, random_inputs

CASES = [Case(name, lambda: torch.nn.Linear(4, 3), random_inputs((2, 4)))
         for name in ("alpha", "beta")]
"""


def test_xdist_runs_a_cases_cells_on_one_worker_and_exports_once(pytester):
    pytester.makepyfile(two_cases=TWO_CASES)
    result = pytester.runpytest_subprocess(
        "--pyargs", "conformance", "--no-builtin-cases", "--cases=two_cases.py", "-n", "2",
        "-v", "-p", "no:cacheprovider", "--conformance-results=records.jsonl",
        "--artifacts-dir=artifacts",
        "-k", "cpu and (trace or script) and not libtorch and not tuned")
    result.assert_outcomes(passed=16)  # 2 cases x 2 paths x 4 checks
    workers = {}
    for line in result.stdout.lines:
        found = re.search(r"\[(gw\d)\].*test_check\[(alpha|beta)-", line)
        if found:
            workers.setdefault(found.group(2), set()).add(found.group(1))
    assert workers.keys() == {"alpha", "beta"}
    assert all(len(used) == 1 for used in workers.values()), workers
    records = [json.loads(line) for line in
               (pytester.path / "records.jsonl").read_text().splitlines()]
    exports = {(r["case"], r["path"]): set() for r in records}
    for r in records:  # one export per artifact: every cell saw the same one, fresh
        exports[(r["case"], r["path"])].add((r["artifact"]["file"], r["artifact"]["cached"],
                                             r["artifact"]["export_s"]))
    assert all(len(seen) == 1 and not next(iter(seen))[1] for seen in exports.values()), exports


@pytest.mark.parametrize("args, dist, grouped", [
    (("-n", "2"), "load", True),                       # xdist's default: grouped by case
    (("-n", "2", "--dist", "loadgroup"), "loadgroup", True),
    (("-n", "2", "--dist", "load"), "load", False),    # an explicit choice is kept
    (("-n", "2", "--dist=worksteal"), "worksteal", False),
])
def test_the_case_scheduler_is_chosen_unless_another_dist_is_given(args, dist, grouped,
                                                                   monkeypatch):
    import sys
    import types

    from conformance import plugin

    monkeypatch.setitem(sys.modules, "conformance.case_groups", types.SimpleNamespace(
        CaseGroupScheduling=lambda config, log: "by case"))
    config = types.SimpleNamespace(invocation_params=types.SimpleNamespace(args=args),
                                   getvalue=lambda name: dist)
    assert plugin.pytest_xdist_make_scheduler(config, None) == ("by case" if grouped else None)


def test_the_case_scheduler_groups_cells_by_case_but_not_a_familys_and_keeps_xdist_groups():
    from conformance.case_groups import CaseGroupScheduling

    scheduler = CaseGroupScheduling.__new__(CaseGroupScheduling)  # _split_scope needs no state
    assert scheduler._split_scope("x/test_conformance.py::test_check[my_cell-trace-torch-cpu-"
                                  "matches_eager]") == "conformance case my_cell"
    assert scheduler._split_scope("x/test_latency.py::test_latency[resnet18-eager-torch-cpu-"
                                  "latency]") == "conformance case resnet18"
    assert scheduler._split_scope("tests/test_a.py::test_b[1]") == "tests/test_a.py::test_b[1]"
    assert scheduler._split_scope("tests/test_a.py::test_b[1]@mine") == "mine"
    family_cell = "x/test_conformance.py::test_check[convnets-trace-torch-cpu-generated_models]"
    assert scheduler._split_scope(family_cell) == family_cell  # shares nothing with its case


def test_the_case_scheduler_deals_the_scopes_in_the_order_of_the_items():
    """xdist would deal the scope with the most tests first: a family's cell of minutes,
    one test, would go last. The suite's order (slowest first) is kept."""
    import types

    from conformance.case_groups import CaseGroupScheduling

    class Worker:
        def __init__(self, name):
            self.gateway, self.sent = types.SimpleNamespace(id=name), []
            self.shutting_down = False

        def send_runtest_some(self, indexes):
            self.sent.extend(indexes)

        def shutdown(self):
            pass

    option = types.SimpleNamespace(loadscopereorder=True, numprocesses=1, tx=["popen"],
                                   dist="loadgroup", maxschedchunk=None)
    config = types.SimpleNamespace(option=option, getvalue=lambda name: getattr(option, name),
                                   hook=None)
    scheduler = CaseGroupScheduling(config)
    cells = ["x/test_conformance.py::test_check[convnets-aoti-torch-cpu-generated_models]",
             *(f"x/test_conformance.py::test_check[small-trace-torch-cpu-{check}]"
               for check in ("matches_eager", "generalizes", "fresh_process"))]
    worker = Worker("gw0")
    scheduler.add_node(worker)
    scheduler.add_node_collection(worker, cells)
    scheduler.schedule()
    assert [cells[i] for i in worker.sent][0] == cells[0]


def test_the_summary_counts_expected_failures_per_row_instead_of_listing_them(suite):
    result = suite("-k", "branchy and trace-torch-cpu")
    result.stdout.fnmatch_lines(["*conformance expected failures, by expectation row*",
                                 "*1  case='branchy', target='trace-*', check='generalizes'*"])
    assert not [line for line in result.stdout.lines if line.startswith("XFAIL ")]
