"""The property checks find planted bugs and shrink them to a minimal reproduction."""
import time

import pytest
import torch
from hypothesis import strategies as st

from conformance.cases import Case, random_inputs
from conformance.checks import catalog as checks
from conformance.checks.catalog import CheckFailure
from conformance.checks.property_search import Profile, SearchSettings, search, search_settings
from conformance.checks.subject import CaseState, Subject
from conformance.exporters import torchscript
from conformance.spaces import Dim, TensorSpace, example_problem
from conformance.targets import Target
from tests.patching import patch_loader

# Room enough for a planted bug to be found and shrunk within a self-test.
THOROUGH = SearchSettings(Profile("thorough", max_examples=60, budget_s=120.0, shrink_s=120.0,
                                  derandomize=True))


class TinyConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


def tiny_conv_case(example=random_inputs((1, 2, 8, 8))) -> Case:
    space = (TensorSpace((Dim("batch", 1, 3), 2, Dim("height", 4, 32), Dim("width", 6, 32))),)
    return Case("tiny_conv", TinyConv, example, input_space=space)


def traced_subject(case, tmp_path, search=THOROUGH) -> Subject:
    return Subject(CaseState(case, "cpu", tmp_path), Target("trace", "torch", "cpu"),
                   reproduce="pytest <nodeid>", search=search)


def wrong_for_odd_widths(file, device):
    """A TorchScript runtime with a planted bug: off by 0.5 when the width is odd."""
    sound = torchscript.load_torchscript(file, device)
    return lambda x: sound(x) + 0.5 if x.shape[-1] % 2 else sound(x)


def test_a_runtime_wrong_only_for_odd_widths_is_found_and_shrunk(tmp_path, monkeypatch):
    patch_loader(monkeypatch, "torch", wrong_for_odd_widths)
    subject = traced_subject(tiny_conv_case(), tmp_path)
    with pytest.raises(CheckFailure) as failure:
        checks.agrees_on_drawn_inputs(subject)
    message, metrics = str(failure.value), failure.value.metrics
    # The smallest input with an odd width: batch, height at their minimum, width
    # the least odd size in 6..32, and zeros.
    assert "(batch=1, height=4, width=7)" in message
    assert metrics["reproduction"] == "input_0 = torch.full((1, 2, 4, 7), 0.0)"
    assert "reproduce: pytest <nodeid> --property-profile thorough" in message
    assert 1 <= metrics["examples"] <= THOROUGH.profile.max_examples + 200  # shrinking included


def test_the_sound_runtime_passes_every_drawn_input(tmp_path):
    metrics = checks.agrees_on_drawn_inputs(traced_subject(tiny_conv_case(), tmp_path))
    assert metrics["examples"] == THOROUGH.profile.max_examples
    assert not metrics["out_of_time"]


def test_an_artifact_that_baked_the_example_size_fails_on_another_size(tmp_path, monkeypatch):
    def baked(file, device):  # a runtime that only ever accepts the example's size
        sound = torchscript.load_torchscript(file, device)

        def run(x):
            if tuple(x.shape[2:]) != (8, 8):
                raise RuntimeError(f"expected input of size 8x8, got {tuple(x.shape)}")
            return sound(x)
        return run

    patch_loader(monkeypatch, "torch", baked)
    with pytest.raises(CheckFailure, match=r"the artifact raised RuntimeError: expected input"):
        checks.agrees_on_drawn_inputs(traced_subject(tiny_conv_case(), tmp_path))


def test_an_example_outside_the_space_is_reported(tmp_path):
    case = tiny_conv_case(example=random_inputs((1, 2, 40, 8)))
    with pytest.raises(CheckFailure, match=r"example lies outside its input space"):
        checks.agrees_on_drawn_inputs(traced_subject(case, tmp_path))


def test_a_dim_declared_with_two_ranges_is_refused():
    space = (TensorSpace((Dim("n", 1, 3),)), TensorSpace((Dim("n", 1, 4),)))
    with pytest.raises(ValueError, match=r"Dim 'n' is declared with two ranges"):
        Case("two_ranges", TinyConv, random_inputs((2,), (2,)), input_space=space)


def test_example_problem_names_a_shared_dim_with_two_sizes():
    space = (TensorSpace((Dim("n", 1, 4),)), TensorSpace((Dim("n", 1, 4),)))
    assert "Dim 'n' is 2 and 3" in example_problem(space, (torch.ones(2), torch.ones(3)))


def values_tried(settings: SearchSettings, count: int = 20) -> list[int]:
    tried = []
    search(st.integers(0, 10**6), lambda v: tried.append(v), repr,
           SearchSettings(Profile("t", count, 60.0, 60.0, settings.profile.derandomize),
                          settings.seed))
    return tried


def test_the_ci_profile_tries_the_same_values_on_every_run():
    ci = search_settings("ci", None)
    assert ci.seed is None and values_tried(ci) == values_tried(ci)


def test_a_seed_repeats_a_nightly_search_and_another_seed_does_not():
    nightly = search_settings("nightly", None)
    assert nightly.seed is not None  # drawn, then printed and recorded
    same = search_settings("nightly", 1234)
    assert values_tried(same) == values_tried(same) != values_tried(search_settings("nightly", 99))


def test_search_shrinks_to_the_smallest_failing_value():
    result = search(st.integers(0, 10**6), lambda v: "too big" if v >= 1000 else None, repr,
                    SearchSettings(Profile("t", 200, 60.0, 60.0, True)))
    assert (result.minimal, result.failure) == (1000, "too big")


def test_the_time_budget_stops_the_search_and_says_so():
    def slow(value):
        time.sleep(0.05)

    result = search(st.integers(), slow, repr,
                    SearchSettings(Profile("t", 1000, 0.3, 0.3, True)))
    assert result.out_of_time and 1 <= result.examples < 20
