"""The comparison must fail on broken outputs and pass on faithful ones."""
from __future__ import annotations

import collections
import json
import math
import warnings

import pytest
import torch

from conformance.cases import Tolerance
from conformance.checks.compare import (DEFAULT_TOLERANCES, EXACT, Comparison, allowed_error,
                                        compare, flatten, tolerance_for)

Output = collections.namedtuple("Output", ["logits", "hidden"])


def randn(*shape, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=dtype)


def changed(t, index, value=None, delta=None):
    """A copy of `t` with one element set to `value` or moved by `delta`."""
    out = t.clone()
    out[index] = value if value is not None else out[index] + delta
    return out


def quantize(t):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized creation functions are deprecated
        return torch.quantize_per_tensor(t, scale=0.05, zero_point=128, dtype=torch.quint8)


# ---------------------------------------------------------------- tolerances

@pytest.mark.parametrize("dtype, rtol, atol", [
    (torch.float32, 1e-4, 1e-5),
    (torch.float64, 1e-7, 1e-7),
    (torch.float16, 1e-3, 1e-3),
    (torch.bfloat16, 1.6e-2, 1e-2),
    (torch.int64, 0, 0),
    (torch.int32, 0, 0),
    (torch.uint8, 0, 0),
    (torch.bool, 0, 0),
])
def test_default_tolerances(dtype, rtol, atol):
    assert DEFAULT_TOLERANCES[dtype] == Tolerance(rtol=rtol, atol=atol)
    assert tolerance_for(torch.zeros(2, dtype=dtype), None) == Tolerance(rtol=rtol, atol=atol)


def test_override_wins_over_dtype_default():
    override = Tolerance(rtol=0.5, atol=0.25)
    assert tolerance_for(torch.zeros(2), override) is override
    assert tolerance_for(torch.zeros(2, dtype=torch.complex64), override) is override
    assert tolerance_for(quantize(torch.zeros(2)), override) is override


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_override_does_not_loosen_integers_or_bools(dtype):
    # A case's tolerance is about float rounding; an index or a mask is right or wrong.
    assert tolerance_for(torch.zeros(2, dtype=dtype), Tolerance(rtol=0.1, atol=1.0)) == EXACT


LOOSE = Tolerance(rtol=0.1, atol=1.0)


@pytest.mark.parametrize("actual, expected", [
    (torch.tensor([510]), torch.tensor([500])),
    (torch.tensor([True, True]), torch.tensor([True, False])),
    ((torch.ones(2), 510), (torch.ones(2), 500)),
    (True, False),
], ids=["argmax-tensor", "bool-tensor", "int-scalar", "bool-scalar"])
def test_integers_are_exact_under_a_loose_override(actual, expected):
    result = compare(actual, expected, tolerance=LOOSE)
    assert not result.ok, result.summary()
    assert result.mismatched == 1


def test_complex_and_quantized_use_their_parts_tolerance():
    float32, float64 = DEFAULT_TOLERANCES[torch.float32], DEFAULT_TOLERANCES[torch.float64]
    assert tolerance_for(torch.zeros(2, dtype=torch.complex64), None) == float32
    assert tolerance_for(torch.zeros(2, dtype=torch.complex128), None) == float64
    assert tolerance_for(quantize(torch.zeros(2)), None) == float32


def test_allowed_error_scales_atol_by_the_largest_finite_magnitude():
    expected = torch.tensor([0.0, -1000.0, 10.0, math.inf, math.nan])
    allowed = allowed_error(expected, Tolerance(rtol=0.1, atol=0.01))
    assert allowed.dtype == torch.float64
    assert allowed[:3].tolist() == pytest.approx([10.0, 110.0, 11.0])


def test_allowed_error_floor_follows_a_small_tensors_magnitude():
    # The floor used to be atol*max(1, max|e|), i.e. at least atol; it is now
    # atol*max|e|, so a tensor whose largest element is 0.5 gets half of atol.
    allowed = allowed_error(torch.tensor([0.0, 0.5]), Tolerance(rtol=0.0, atol=1e-5))
    assert allowed.tolist() == pytest.approx([5e-6, 5e-6])


@pytest.mark.parametrize("expected", [torch.zeros(4), torch.empty(0),
                                      torch.tensor([0.0, math.nan, math.inf])],
                         ids=["zeros", "empty", "no-finite-nonzero"])
def test_allowed_error_floor_is_atol_without_a_finite_magnitude(expected):
    # Rounding noise on an exact-zero output is not a failure.
    allowed = allowed_error(expected, Tolerance(rtol=0.0, atol=1e-5))
    assert allowed[expected == 0].tolist() == pytest.approx([1e-5] * int((expected == 0).sum()))


def test_allowed_error_of_huge_outputs_is_unchanged():
    tol = DEFAULT_TOLERANCES[torch.float32]
    magnitude = LOGITS.double().abs()
    expected = tol.atol * magnitude.max() + tol.rtol * magnitude
    assert torch.allclose(allowed_error(LOGITS, tol), expected, rtol=1e-12, atol=0)


TINY = randn(1, 1000, seed=1) * 1e-5 / randn(1, 1000, seed=1).abs().max()


@pytest.mark.parametrize("actual, ok", [
    (TINY / 2, False),
    (-TINY, False),
    (TINY * (1 + 1e-6), True),
    (TINY.clone(), True),
], ids=["halved", "negated", "rounding", "identical"])
def test_floor_follows_a_tiny_outputs_magnitude(actual, ok):
    # Random-init efficientnet_b0 logits peak near 1e-5: a floor of atol*1
    # would accept them halved or negated.
    assert TINY.abs().max().item() == pytest.approx(1e-5)
    result = compare(actual, TINY)
    assert result.ok is ok, result.summary()


# ---------------------------------------------------------------- values

LOGITS = randn(1, 1000) * 1e11
UNIT = randn(4, 25)
SMALL = changed(UNIT, (2, 3), value=1e-3)


@pytest.mark.parametrize("expected, actual, ok", [
    (UNIT, UNIT.clone(), True),
    (UNIT, changed(UNIT, (1, 7), delta=1e-2), False),
    (UNIT, changed(UNIT, (1, 7), delta=1e-7), True),
    (SMALL, changed(SMALL, (2, 3), value=-1e-3), False),
    (LOGITS, changed(LOGITS, (0, 10), delta=1e4), True),
    (LOGITS, changed(LOGITS, (0, 10), delta=LOGITS.abs().max().item() * 1e-2), False),
    (torch.zeros(10), changed(torch.zeros(10), 3, value=1e-6), True),
    (torch.zeros(10), changed(torch.zeros(10), 3, value=1e-3), False),
    (UNIT.double(), changed(UNIT.double(), (0, 0), delta=1e-9), True),
    (UNIT.double(), changed(UNIT.double(), (0, 0), delta=1e-5), False),
    (UNIT.half(), changed(UNIT.half(), (0, 0), delta=0.1), False),
    (UNIT.bfloat16(), (UNIT * 1.001).bfloat16(), True),
    (torch.empty(0, 3), torch.empty(0, 3), True),
], ids=["identical", "off-by-1e-2", "off-by-1e-7", "small-sign-flip", "huge-logits-1e-7-rel",
        "huge-logits-1e-2-rel", "zeros-floor", "zeros-above-floor", "float64-close",
        "float64-far", "float16-far", "bfloat16-rounding", "empty"])
def test_value_verdict(expected, actual, ok):
    result = compare(actual, expected)
    assert result.ok is ok, result.summary()
    assert bool(result.problems) is not ok


def test_huge_logits_would_fail_a_purely_absolute_tolerance():
    actual = changed(LOGITS, (0, 10), delta=1e4)
    assert (actual - LOGITS).abs().max().item() > DEFAULT_TOLERANCES[torch.float32].atol
    assert compare(actual, LOGITS).ok


def test_mismatch_is_reported_with_counts_and_worst_element():
    result = compare(changed(UNIT, (1, 7), delta=1e-2), UNIT)
    assert result.mismatched == 1 and result.total == 100
    assert result.mismatch_fraction == pytest.approx(0.01)
    assert result.max_abs == pytest.approx(1e-2, rel=1e-3)
    [problem] = result.problems
    assert problem.startswith("output: 1 of 100 elements outside tolerance")
    assert "(1, 7)" in problem


def test_max_rel_skips_elements_where_eager_is_zero():
    expected = torch.tensor([0.0, 2.0])
    result = compare(torch.tensor([1e-6, 2.0002]), expected)
    assert result.max_rel == pytest.approx(1e-4, rel=1e-3)
    assert result.max_abs == pytest.approx(2e-4, rel=1e-3)


def test_the_errors_come_only_from_elements_finite_on_both_sides():
    # the errors of an output without NaN or infinity take a shorter way than those of
    # one with them: both ways give the same numbers
    expected = torch.tensor([0.0, 2.0, 1e-310, 4.0], dtype=torch.float64)
    actual = torch.tensor([1e-6, 2.0002, 1.0, 4.0], dtype=torch.float64)
    finite = compare(actual, expected)
    assert finite.max_abs == pytest.approx(1.0) and finite.max_rel == math.inf  # 1 / 1e-310
    assert finite.mismatch_fraction == pytest.approx(3 / 4)  # float64: rtol and atol 1e-7
    padded = compare(torch.cat([actual, torch.tensor([math.nan, math.inf, 7.0])]),
                     torch.cat([expected, torch.tensor([math.nan, math.inf, -math.inf])]))
    assert (padded.max_abs, padded.max_rel) == (finite.max_abs, finite.max_rel)
    assert padded.mismatch_fraction == pytest.approx(4 / 7)  # and 7 against -inf
    assert any("infinite values differ" in problem for problem in padded.problems)


def test_tolerance_override_changes_the_verdict():
    actual = changed(UNIT, (1, 7), delta=1e-2)
    result = compare(actual, UNIT, tolerance=Tolerance(rtol=0.0, atol=0.1))
    assert result.ok
    assert result.tolerance == {"rtol": 0.0, "atol": 0.1}


# ---------------------------------------------------------------- NaN and inf

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("actual, expected, mismatched, text", [
    ([1.0, NAN, 3.0], [1.0, 2.0, 3.0], 1, "1 NaN where eager has none"),
    ([1.0, NAN, 3.0], [1.0, NAN, 3.0], 0, None),
    ([1.0, 2.0, 3.0], [1.0, NAN, 3.0], 1, "eager has NaN where the artifact has a finite value"),
    ([NAN, 2.0, 3.0], [1.0, NAN, 3.0], 2, "NaN where eager has none"),
    ([INF, -INF, 3.0], [INF, -INF, 3.0], 0, None),
    ([INF, 2.0, 3.0], [1.0, 2.0, 3.0], 1, "infinite values differ"),
    ([1.0, 2.0, 3.0], [INF, 2.0, 3.0], 1, "infinite values differ"),
    ([-INF, 2.0, 3.0], [INF, 2.0, 3.0], 1, "infinite values differ"),
], ids=["nan-in-artifact", "nan-in-both", "nan-in-eager", "nan-moved", "inf-equal",
        "inf-vs-finite", "finite-vs-inf", "inf-sign"])
def test_nan_and_inf(actual, expected, mismatched, text):
    result = compare(torch.tensor(actual), torch.tensor(expected))
    assert result.ok is (mismatched == 0), result.summary()
    assert result.mismatched == mismatched
    if text:
        assert text in result.problems[0]
    assert math.isfinite(result.max_abs)


def test_inf_in_eager_does_not_widen_the_tolerance():
    expected = torch.tensor([INF, 1.0])
    assert not compare(torch.tensor([INF, 1.1]), expected).ok


# ---------------------------------------------------------------- exact dtypes

@pytest.mark.parametrize("expected, actual, ok", [
    (torch.arange(10), torch.arange(10), True),
    (torch.arange(10), changed(torch.arange(10), 4, delta=1), False),
    (torch.tensor([2**53 + 1]), torch.tensor([2**53]), False),
    (torch.tensor([True, False]), torch.tensor([True, False]), True),
    (torch.tensor([True, False]), torch.tensor([True, True]), False),
    (torch.arange(10, dtype=torch.uint8), torch.arange(10, dtype=torch.uint8), True),
], ids=["int-equal", "int-off-by-one", "int-beyond-float64", "bool-equal", "bool-differs",
        "uint8-equal"])
def test_integer_and_bool_are_exact(expected, actual, ok):
    assert compare(actual, expected).ok is ok


def test_quantized_tensors_compare_dequantized():
    expected = quantize(UNIT)
    assert compare(quantize(UNIT), expected).ok
    result = compare(quantize(changed(UNIT, (0, 0), delta=1.0)), expected)
    assert not result.ok and "outside tolerance" in result.problems[0]


def test_quantized_against_float_is_a_dtype_problem():
    result = compare(UNIT, quantize(UNIT))
    assert not result.ok
    assert "torch.float32" in result.problems[0] and "torch.quint8" in result.problems[0]


def test_complex_compares_both_parts():
    expected = torch.complex(UNIT, UNIT.flip(0))
    assert compare(expected.clone(), expected).ok
    wrong_imaginary = torch.complex(UNIT, changed(UNIT.flip(0), (0, 0), delta=0.1))
    assert not compare(wrong_imaginary, expected).ok


# ---------------------------------------------------------------- structure

@pytest.mark.parametrize("actual, expected, text", [
    (torch.zeros(3, 2), torch.zeros(2, 3), "output: shape (3, 2) != eager (2, 3)"),
    ((torch.zeros(1, 1000),), (torch.zeros(2, 1000),),
     "output[0]: shape (1, 1000) != eager (2, 1000)"),
    (torch.zeros(3, dtype=torch.float64), torch.zeros(3),
     "output: dtype torch.float64 != eager torch.float32"),
    (torch.zeros(3, dtype=torch.int32), torch.zeros(3, dtype=torch.int64),
     "output: dtype torch.int32 != eager torch.int64"),
    ((torch.zeros(1),) * 3, torch.zeros(1),
     "output: eager returned a Tensor, the artifact returned a tuple of 3"),
    (torch.zeros(1), None, "output: eager returned None, the artifact returned a Tensor"),
    ([torch.zeros(1)], [torch.zeros(1)] * 2,
     "output: eager returned a list of 2, the artifact returned a list of 1"),
    ({"out": torch.zeros(1), "extra": torch.zeros(1)},
     {"out": torch.zeros(1), "aux": torch.zeros(1)},
     "output: keys differ from eager: missing ['aux'], unexpected ['extra']"),
    ((torch.zeros(1), 3), (torch.zeros(1), torch.zeros(1)),
     "output[1]: eager returned a Tensor, the artifact returned an int"),
], ids=["shape", "shape-nested", "dtype-float", "dtype-int", "tensor-vs-tuple",
        "none-vs-tensor", "length", "dict-keys", "tensor-vs-scalar"])
def test_structural_mismatch(actual, expected, text):
    result = compare(actual, expected)
    assert not result.ok
    assert text in result.problems
    assert result.summary().splitlines()[0] == text


def test_mismatch_deep_in_a_dict_names_its_path():
    expected = (UNIT, [UNIT * 2, {"out": UNIT * 3, "aux": UNIT * 4}])
    actual = (UNIT, [UNIT * 2, {"aux": UNIT * 4, "out": changed(UNIT * 3, (0, 0), delta=1.0)}])
    result = compare(actual, expected)
    assert not result.ok
    [problem] = result.problems
    assert problem.startswith("output[1][1]['out']: 1 of 100 elements outside tolerance")


def test_nested_outputs_that_agree_pass_regardless_of_dict_order():
    expected = {"a": [UNIT, (UNIT, None)], "b": 3, "c": 0.5}
    actual = {"c": 0.5, "b": 3, "a": [UNIT.clone(), (UNIT.clone(), None)]}
    result = compare(actual, expected)
    assert result.ok, result.summary()
    assert result.total == 202


def test_namedtuple_against_plain_tuple_with_same_fields_passes():
    expected = Output(logits=UNIT, hidden=UNIT * 2)
    assert compare((UNIT.clone(), UNIT * 2), expected).ok
    assert compare(expected, (UNIT.clone(), UNIT * 2)).ok


def test_namedtuple_mismatch_is_reported_by_field_name():
    expected = Output(logits=UNIT, hidden=UNIT * 2)
    result = compare((changed(UNIT, (0, 0), delta=1.0), UNIT * 2), expected)
    assert result.problems[0].startswith("output.logits:")


def test_torch_return_types_compare_positionally():
    expected = torch.max(UNIT, dim=1)
    assert compare(tuple(expected), expected).ok
    result = compare((expected.values, expected.indices + 1), expected)
    assert result.problems[0].startswith("output.indices:")


@pytest.mark.parametrize("actual, expected, ok", [
    (None, None, True),
    (3, 3, True),
    (3, 4, False),
    (True, True, True),
    (1.0, 1.0 + 1e-12, True),
    (1.0, 1.1, False),
    ("relu", "relu", True),
    ("relu", "gelu", False),
], ids=["none", "int-equal", "int-differs", "bool", "float-close", "float-far",
        "other-equal", "other-differs"])
def test_scalar_and_other_leaves(actual, expected, ok):
    assert compare(actual, expected).ok is ok


@pytest.mark.parametrize("actual, expected, text", [
    ((torch.ones(1), 2.0), (torch.ones(1), 2), "output[1]: eager returned an int, "
                                                 "the artifact returned a float"),
    (2, 2.0, "output: eager returned a float, the artifact returned an int"),
    (1, True, "output: eager returned a bool, the artifact returned an int"),
    (False, 0, "output: eager returned an int, the artifact returned a bool"),
], ids=["float-for-int", "int-for-float", "int-for-bool", "bool-for-int"])
def test_scalar_type_differences_are_structural(actual, expected, text):
    # Equal values of another type used to pass (2 == 2.0): a caller that
    # indexes with the int or branches on the bool would break.
    result = compare(actual, expected)
    assert not result.ok
    assert result.structural_problems == [text]


# ---------------------------------------------------------------- topk

def test_topk_agrees_for_identical_logits():
    assert compare(LOGITS.clone(), LOGITS, topk=5).topk_agree is True


def test_topk_disagrees_when_the_top_class_is_swapped():
    logits = UNIT.clone()
    top = logits[0].argmax().item()
    last = logits[0].argmin().item()
    swapped = logits.clone()
    swapped[0, top], swapped[0, last] = logits[0, last], logits[0, top]
    result = compare(swapped, logits, topk=5)
    assert result.topk_agree is False
    assert "top-5 classes agree: no" in result.summary()


def test_topk_is_informative_only():
    actual = changed(UNIT, (0, 0), delta=1e-2)
    result = compare(actual, UNIT, topk=5)
    assert not result.ok and result.topk_agree is True


@pytest.mark.parametrize("expected, topk", [
    (torch.zeros(10), 5),
    (torch.zeros(2, 3), 5),
    (torch.zeros(2, 10, dtype=torch.int64), 5),
    (UNIT, None),
], ids=["one-dim", "too-few-classes", "integer", "not-asked"])
def test_topk_not_applicable(expected, topk):
    assert compare(expected.clone(), expected, topk=topk).topk_agree is None


def test_topk_uses_the_first_tensor_leaf():
    result = compare(Output(UNIT.clone(), torch.zeros(3)), Output(UNIT, torch.zeros(3)), topk=5)
    assert result.topk_agree is True


# ---------------------------------------------------------------- reporting

def test_metrics_are_json_serializable():
    result = compare(changed(UNIT, (1, 1), value=NAN), UNIT, topk=5)
    metrics = json.loads(json.dumps(result.metrics()))
    assert set(metrics) == {"max_abs", "max_rel", "mismatch_fraction", "rtol", "atol", "topk_agree"}
    assert metrics["rtol"] == 1e-4 and metrics["atol"] == 1e-5


def test_summary_states_counts_errors_and_rule():
    result = compare(changed(UNIT, (1, 7), delta=1e-2), UNIT, topk=5)
    lines = result.summary().splitlines()
    assert lines[0] == "1 of 100 output elements outside tolerance"
    text = result.summary()
    for fragment in ("max abs error", "max rel error", "share mismatched",
                     "|a-e| <= atol*max|e| + rtol*|e|", "rtol=0.0001", "atol=1e-05",
                     "top-5 classes agree: yes"):
        assert fragment in text


def test_summary_of_a_pass():
    result = compare(UNIT.clone(), UNIT)
    assert result.summary().splitlines()[0] == "all 100 output elements within tolerance"
    assert isinstance(result, Comparison) and result.problems == []


def test_tolerance_reported_is_the_first_float_leafs():
    result = compare((torch.arange(3), UNIT.double()), (torch.arange(3), UNIT.double()))
    assert result.tolerance == {"rtol": 1e-7, "atol": 1e-7}


# ---------------------------------------------------------------- flatten

def test_flatten_paths():
    obj = {"out": (UNIT, [None, 3]), "named": Output(logits=UNIT, hidden=2.5)}
    paths = [path for path, _ in flatten(obj)]
    assert paths == ["output['out'][0]", "output['out'][1][0]", "output['out'][1][1]",
                     "output['named'].logits",
                     "output['named'].hidden"]


def test_flatten_leaves():
    assert flatten(UNIT)[0][1] is UNIT
    assert flatten("text", prefix="y") == [("y", "text")]
    assert flatten(torch.max(UNIT, 1), prefix="m")[1][0] == "m.indices"


def test_summary_of_a_shape_mismatch_claims_no_errors():
    result = compare(torch.ones(2, 3), torch.ones(3, 2))
    text = result.summary()
    assert "no element was compared" in text and "max abs error" not in text
