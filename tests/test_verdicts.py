"""Self-tests of what makes a verdict hold on a model that comes with an example only:
derived and aimed probes, inputs copied per call, eager first under a time limit,
the cell's time limit, float64's opinion, and inconclusive searches."""
from __future__ import annotations

import signal
import time

import pytest
import torch

from conformance import Case
from conformance.checks import catalog as checks
from conformance.checks.catalog import CheckFailure, run_check
from conformance.checks.probes import DERIVED_PROBES, aimed_probes, derived_probes
from conformance.checks.property_search import Profile, SearchSettings
from conformance.checks.subject import CaseState, Subject
from conformance.checks.time_limit import TimeLimitExceeded, time_limit
from conformance.exporters import torchscript
from conformance.spaces import Dim, TensorSpace
from conformance.targets import Target
from tests.patching import patch_loader
from tests.planted_faults import BranchOnMean as SignBranch


def subject_of(case, path, tmp_path, runtime="torch", **state_options) -> Subject:
    state = CaseState(case, "cpu", tmp_path, use_cache=False, **state_options)
    return Subject(state, Target(path, runtime, "cpu"), reproduce="pytest <nodeid>")


class ShapeStrict(torch.nn.Module):
    """Takes only 4 features: eager itself rejects another size."""

    def forward(self, x):
        return x.view(-1, 4).sum(dim=1)


class Sleeper(torch.nn.Module):
    def forward(self, x):
        while x.sum() < 0:
            time.sleep(0.01)
        return x + 1


# ---------------------------------------------------------------- derived probes

def test_derived_probes_change_sign_magnitude_offset_and_values():
    example = (torch.rand(1, 3, 4, 4),)
    made = {p.derived: p.inputs[0] for p in derived_probes(example, {})}
    assert set(made) == set(DERIVED_PROBES) - {"integers_redrawn"}  # no integer input
    assert (made["negated"] <= 0).all() and (made["shifted_down"] < 0).all()
    assert (made["shifted_up"] > 0).all() and not made["zeros"].any()
    assert made["scaled_up"].abs().max() > 100 * example[0].abs().max()
    assert made["other_batch"].shape[0] == 2
    # the batch's mean keeps the example's sign: no branch on it sits on the edge
    assert made["other_batch"].mean() == pytest.approx(example[0].mean() / 4)


def test_a_constant_example_still_gets_new_values():
    example = (torch.ones(2, 4),)
    changed = [p for p in derived_probes(example, {}) if not torch.equal(p.inputs[0],
                                                                          example[0])]
    assert len(changed) >= 6


def test_integer_inputs_are_redrawn_within_their_observed_range():
    torch.manual_seed(0)
    example = (torch.randint(3, 7, (4, 16)), torch.rand(4, 2))
    (probe,) = [p for p in derived_probes(example, {}) if p.derived == "integers_redrawn"]
    ids = probe.inputs[0]
    assert ids.dtype == torch.int64 and 3 <= ids.min() and ids.max() <= 6
    assert not torch.equal(ids, example[0]) and probe.inputs[1] is example[1]


def test_a_sign_branch_baked_by_a_trace_fails_from_an_example_alone(tmp_path):
    case = Case("sign_branch", SignBranch, lambda: (torch.rand(1, 3, 4, 4),))
    with pytest.raises(CheckFailure, match=r"derived probe: the example negated"):
        checks.generalizes(subject_of(case, "trace", tmp_path))


def test_a_case_opts_out_of_a_derived_probe_with_a_reason(tmp_path):
    case = Case("sign_branch", SignBranch, lambda: (torch.rand(1, 3, 4, 4),),
                skip_probes={name: "the model takes images in [0, 1] only"
                             for name in ("negated", "shifted_down", "uniform", "other_batch",
                                         "zeros")})
    metrics = checks.generalizes(subject_of(case, "trace", tmp_path))
    assert not any("negated" in label for label in metrics["probes"])


@pytest.mark.parametrize("skip, problem", [({"upside_down": "why"}, "not a derived probe"),
                                           ({"negated": " "}, "needs a reason")])
def test_an_unknown_or_unexplained_opt_out_is_refused(skip, problem):
    with pytest.raises(ValueError, match=problem):
        Case("opted", SignBranch, lambda: (torch.rand(2, 2),), skip_probes=skip)


class ImagesOnly(torch.nn.Module):
    """Refuses a blank image; a trace keeps the side of `x.mean() > 0` its example took."""

    def forward(self, x):
        if not x.any():
            raise ValueError("a blank image")
        if x.mean() > 0:
            return x * 2
        return x - 1


def test_a_derived_probe_eager_rejects_is_dropped_and_the_fault_is_still_found(tmp_path):
    case = Case("images_only", ImagesOnly, lambda: (torch.rand(1, 3, 4, 4),))
    script = checks.generalizes(subject_of(case, "script", tmp_path / "script"))
    rejected = " ".join(script["probes_eager_rejects"])
    assert "zeros of the example's shapes" in rejected and "ValueError" in " ".join(
        script["probes_eager_rejects"].values())
    assert not any("zeros" in label for label in script["probes"])
    # The probe eager rejects is not one the trace's baked branch can hide behind.
    with pytest.raises(CheckFailure, match="derived probe: the example negated"):
        checks.generalizes(subject_of(case, "trace", tmp_path / "trace"))


def test_the_cases_own_probe_that_eager_rejects_fails_every_cell(tmp_path):
    case = Case("images_only", ImagesOnly, lambda: (torch.rand(1, 3, 4, 4),),
                probes=lambda: [(torch.zeros(1, 3, 4, 4),)])
    with pytest.raises(CheckFailure, match="eager PyTorch itself raised on the case probe"):
        run_check(subject_of(case, "script", tmp_path), "matches_eager", 60)


def test_probes_of_other_sizes_run_only_where_the_export_is_meant_to_take_them(tmp_path):
    case = Case("sign_free", torch.nn.Tanh, lambda: (torch.rand(1, 3),))
    export = subject_of(case, "export", tmp_path / "export")
    metrics = checks.generalizes(export)
    assert "derived probe: the example and its negation halved, stacked (twice the batch)" \
        in metrics["probes_not_run"]
    trace = checks.generalizes(subject_of(case, "trace", tmp_path / "trace"))
    assert not trace["probes_not_run"]


def test_aimed_probes_come_only_with_tracer_warnings():
    example = (torch.rand(2, 3), torch.rand(2, 3))
    assert aimed_probes(example, ["an unrelated warning"], {}) == []
    warned = ["Converting a tensor to a Python boolean might cause the trace to be incorrect."]
    kinds = {p.derived for p in aimed_probes(example, warned, {})}
    assert kinds == {"one_negated", "swapped", "longer_axis"}


def test_a_failure_shows_the_traces_own_warnings(tmp_path):
    case = Case("sign_branch", SignBranch, lambda: (torch.rand(1, 3, 4, 4),))
    with pytest.raises(CheckFailure) as failure:
        checks.generalizes(subject_of(case, "trace", tmp_path))
    assert "the export warned that it froze something of the example" in str(failure.value)
    assert "Python boolean" in str(failure.value)
    assert failure.value.metrics["tracer_warnings"]


# ---------------------------------------------------------------- inputs per call

class AddsInPlace(torch.nn.Module):
    def forward(self, x):
        x.add_(1)
        return x * 2


def copying_loader(file, device):
    """A runtime that leaves the caller's inputs alone where eager writes into them."""
    loaded = torchscript.load_torchscript(file, device)
    return lambda *inputs: loaded(*(i.clone() for i in inputs))


def test_a_correct_in_place_model_passes_and_its_inputs_match_eagers(tmp_path):
    subject = subject_of(Case("adds", AddsInPlace, lambda: (torch.randn(2, 3),)), "script",
                         tmp_path)
    checks.matches_eager(subject)
    checks.generalizes(subject)
    assert checks.mutates_like_eager(subject)["eager_mutates"] is True


def test_an_artifact_that_does_not_write_into_its_inputs_as_eager_does_fails(tmp_path,
                                                                              monkeypatch):
    patch_loader(monkeypatch, "copying", copying_loader)
    subject = subject_of(Case("adds", AddsInPlace, lambda: (torch.randn(2, 3),)), "script",
                         tmp_path, runtime="copying")
    checks.matches_eager(subject)  # the outputs are right
    with pytest.raises(CheckFailure, match=r"inputs after a call differ from eager's \(eager "
                                           r"writes into its inputs\)"):
        checks.mutates_like_eager(subject)


# ---------------------------------------------------------------- eager first

def test_eager_hanging_on_a_derived_probe_fails_every_cell_at_once(tmp_path):
    state = CaseState(Case("sleeper", Sleeper, lambda: (torch.rand(1, 4),)), "cpu", tmp_path,
                      use_cache=False, eager_timeout=1.0)
    failures = []
    for path in ("trace", "script"):
        started = time.monotonic()
        with pytest.raises(CheckFailure) as failure:
            run_check(Subject(state, Target(path, "torch", "cpu"), reproduce="pytest x"),
                      "matches_eager", 60)
        failures.append((failure.value, time.monotonic() - started))
    first, second = failures
    assert first[0].kind == second[0].kind == "eager-error"
    assert "eager PyTorch itself ran past its time limit" in str(first[0])
    assert "every cell of case sleeper fails with this" in str(first[0])
    assert second[1] < 0.5  # remembered, not waited for again


def test_eager_raising_on_the_example_names_eager_and_the_input(tmp_path):
    case = Case("strict", ShapeStrict, lambda: (torch.rand(3, 3),))
    with pytest.raises(CheckFailure) as failure:
        run_check(subject_of(case, "onnx", tmp_path, runtime="onnxruntime"), "graph_valid", 60)
    assert failure.value.kind == "eager-error"
    assert "eager PyTorch itself raised on the example" in str(failure.value)


# ---------------------------------------------------------------- time limits

def test_a_cell_past_its_limit_fails_with_case_target_check_and_reproduce(tmp_path,
                                                                           monkeypatch):
    def hangs(subject):
        while True:
            time.sleep(0.01)

    monkeypatch.setitem(checks.CHECKS, "hangs", hangs)
    subject = subject_of(Case("quick", torch.nn.Tanh, lambda: (torch.rand(2),)), "trace",
                         tmp_path)
    with pytest.raises(CheckFailure) as failure:
        run_check(subject, "hangs", 0.5)
    message = str(failure.value)
    assert failure.value.kind == "timeout"
    for part in ("case quick", "target trace-torch-cpu", "check hangs",
                 "ran past its limit of 0.5 s", "reproduce: pytest <nodeid>"):
        assert part in message


def test_a_limit_gives_an_outer_timer_back_what_is_left_of_it():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 5.0)
        with time_limit(1.0, "inner"):
            pass
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 4.0 < left <= 5.0
        with pytest.raises(TimeLimitExceeded, match="inner ran past"):
            with time_limit(0.2, "inner"):
                time.sleep(2)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not fired


# ---------------------------------------------------------------- float64's opinion

def noisy_loader(file, device):
    loaded = torchscript.load_torchscript(file, device)
    return lambda *inputs: loaded(*inputs) * (1 + 1e-2)


def test_a_mismatch_says_how_far_eager_float32_is_from_float64(tmp_path, monkeypatch):
    patch_loader(monkeypatch, "noisy", noisy_loader)
    case = Case("linear", lambda: torch.nn.Linear(4, 3), lambda: (torch.randn(2, 4),))
    with pytest.raises(CheckFailure, match=r"eager float32 itself differs from eager float64 "
                                           r"by max abs \S+ .* times float32's own"):
        checks.matches_eager(subject_of(case, "script", tmp_path, runtime="noisy"))


# ---------------------------------------------------------------- inconclusive searches

def test_a_search_that_ran_out_of_time_before_its_minimum_does_not_pass(tmp_path):
    hurried = Profile("hurried", max_examples=8, budget_s=0.0, shrink_s=1.0, derandomize=True,
                      min_examples=4)
    case = Case("tanh", torch.nn.Tanh, lambda: (torch.rand(1, 3),),
                input_space=(TensorSpace((Dim("batch", 1, 3), 3)),))
    subject = subject_of(case, "script", tmp_path)
    subject.search = SearchSettings(hurried)
    with pytest.raises(CheckFailure, match="inconclusive: the search ran 0 example") as failure:
        checks.agrees_on_drawn_inputs(subject)
    assert failure.value.kind == "inconclusive"


# ---------------------------------------------------------------- derived probes and the case

def test_derived_probes_keep_what_the_input_space_fixes_and_stay_in_its_range():
    space = (TensorSpace((1, 4), low=0.0, high=1.0), None)
    example = (torch.rand(1, 4), torch.tensor([1.0, 3.0]))
    for probe in derived_probes(example, {}, space):
        assert probe.inputs[1] is example[1], probe.label
        assert 0.0 <= probe.inputs[0].min() and probe.inputs[0].max() <= 1.0, probe.label


class Cancels(torch.nn.Module):
    """float32 loses x entirely next to 1e8: eager float32 is not float64 on any input."""

    def forward(self, x):
        return (x + 1e8) - 1e8


class Tanh(torch.nn.Module):
    def forward(self, x):
        return torch.tanh(x)


def large_input_loader(file, device):
    """A runtime that is off by 1 only on inputs above 100: only the scaled probe sees it."""
    loaded = torchscript.load_torchscript(file, device)
    return lambda x: loaded(x) + (x.abs().max() > 100).float()


@pytest.fixture
def large_input_runtime(monkeypatch):
    patch_loader(monkeypatch, "large", large_input_loader)
    return "large"


def test_a_derived_probe_where_eager_float32_is_not_float64_is_not_held_against_the_artifact(
        tmp_path, large_input_runtime):
    case = Case("cancels", Cancels, lambda: (torch.rand(2, 4),))
    metrics = checks.generalizes(subject_of(case, "script", tmp_path, runtime="large"))
    assert "derived probe: the example times 1000" in metrics["probes_right_by_float64"]


def test_the_same_mismatch_on_a_well_conditioned_model_fails(tmp_path, large_input_runtime):
    case = Case("tanh", Tanh, lambda: (torch.rand(2, 4),))
    with pytest.raises(CheckFailure, match="derived probe: the example times 1000"):
        checks.generalizes(subject_of(case, "script", tmp_path, runtime="large"))


def test_the_cases_own_probe_is_never_excused(tmp_path, large_input_runtime):
    case = Case("cancels", Cancels, lambda: (torch.rand(2, 4),),
                probes=lambda: [(torch.rand(2, 4) * 1000,)])
    with pytest.raises(CheckFailure, match="case probe 1 of 1"):
        checks.generalizes(subject_of(case, "script", tmp_path, runtime="large"))


class PairBranch(torch.nn.Module):
    """Takes its inputs as one tuple argument; a trace keeps the `a.min() > 0` side."""

    def forward(self, xs):
        a, b = xs
        if a.min() > 0:
            return a * 2 + b
        return a - b


def test_inputs_nested_in_one_argument_get_the_derived_probes_too(tmp_path):
    case = Case("pair_branch", PairBranch, lambda: ((torch.rand(2, 4), torch.rand(2, 4)),))
    with pytest.raises(CheckFailure, match="derived probe: the example negated"):
        checks.generalizes(subject_of(case, "trace", tmp_path))


class SaturatedScores(torch.nn.Module):
    """Sigmoid scores that saturate and their argmax; a trace keeps the `no rescale`
    side of a branch on raw 0..255 inputs."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 16)

    def forward(self, x):
        if x.abs().max() > 100:
            x = x / 255
        scores = torch.sigmoid(self.linear(x) * 40)
        return scores, scores.argmax(-1)


def test_float64_never_excuses_elements_the_artifact_gets_wrong(tmp_path):
    # On the x1000 probe eager's argmax ties in float32 (saturated scores), but the
    # scores themselves are wrong in the trace: the probe must fail, not be excused.
    case = Case("saturated", SaturatedScores, lambda: (torch.rand(2, 8),))
    with pytest.raises(CheckFailure, match="times 1000|shifted|uniform"):
        checks.generalizes(subject_of(case, "trace", tmp_path))


class CentredSum(torch.nn.Module):
    """A sum that cancels to zero: float32 leaves rounding noise, float64 gives 0."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(64, 64)

    def forward(self, x):
        y = self.linear(x)
        return (y - y.mean()).sum(dim=-1)


def test_an_artifact_right_by_float64_where_eager_is_only_float32_noise_passes(tmp_path):
    case = Case("centred", CentredSum, lambda: (torch.randn(4, 64),))
    subject = subject_of(case, "onnx", tmp_path, runtime="onnxruntime")
    checks.matches_eager(subject)
    metrics = checks.generalizes(subject)
    assert metrics["probes_right_by_float64"]  # the zeros probe, at least


class SlowToTrace(torch.nn.Module):
    """Stands for an exporter that hangs: the trace takes far longer than eager."""

    def forward(self, x):
        if torch.jit.is_tracing():
            time.sleep(5)
        return x + 1


def test_an_export_past_the_cells_limit_is_not_run_again_by_the_record_or_the_next_cell(
        tmp_path):
    state = CaseState(Case("slow_capture", SlowToTrace, lambda: (torch.rand(2, 3),)), "cpu",
                      tmp_path, use_cache=False)
    subject = Subject(state, Target("trace", "torch", "cpu"), reproduce="pytest x")
    with pytest.raises(CheckFailure, match="ran past its limit of 1 s"):
        run_check(subject, "matches_eager", 1)
    started = time.monotonic()
    assert subject.artifact_summary() == {}  # what the record reads: nothing exported
    with pytest.raises(CheckFailure, match="not tried again") as failure:
        run_check(subject, "generalizes", 60)
    assert failure.value.kind == "timeout"
    assert time.monotonic() - started < 1


def tuple_loader(file, device):
    """A runtime that returns (outputs, None, None) where eager returns a tensor, as
    scripted GoogLeNet does."""
    loaded = torchscript.load_torchscript(file, device)
    return lambda *inputs: (loaded(*inputs), None, None)


def test_float64_never_excuses_another_structure(tmp_path, monkeypatch):
    patch_loader(monkeypatch, "tupled", tuple_loader)
    case = Case("tanh", Tanh, lambda: (torch.rand(2, 4),))
    with pytest.raises(CheckFailure, match="eager returned a Tensor"):
        checks.matches_eager(subject_of(case, "script", tmp_path, runtime="tupled"))


class _Holder:
    """A plain object holding a tensor, as a model's cache object does."""

    def __init__(self, value):
        self.value = value


def test_float64_never_excuses_a_mismatch_inside_an_object(tmp_path):
    # The tensor leaves reach the top-level tensor only: the mismatch inside the object
    # must not be excused by leaves that are all right.
    subject = subject_of(Case("linear", lambda: torch.nn.Linear(4, 3),
                              lambda: (torch.randn(2, 4),)), "trace", tmp_path)
    top, held = torch.randn(3), torch.randn(5)
    expected, actual = (top, _Holder(held)), (top.clone(), _Holder(held + 1))
    reference = (top.double(), _Holder(held.double()))
    result = checks.compare(actual, expected, None)
    assert not result.ok and result.total == 8
    assert not checks.right_by_float64(subject, actual, expected, reference, True, result)
