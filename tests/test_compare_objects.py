"""Objects in outputs (caches, dataclasses) are compared by what they hold, never by identity."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.utils._pytree as pytree

from conformance.cases import Tolerance
from conformance.checks.compare import compare


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class Cache:
    """Like transformers' DynamicCache: per-layer tensors in list attributes, no __eq__."""

    def __init__(self, keys, values):
        self.key_cache = [k.clone() for k in keys]
        self.value_cache = [v.clone() for v in values]


class RegisteredCache(Cache):
    """The same, registered with pytree the way transformers registers its caches."""


def _flatten_cache(cache):
    return [cache.key_cache, cache.value_cache], ["key_cache", "value_cache"]


def _flatten_cache_with_keys(cache):
    children, context = _flatten_cache(cache)
    return [(pytree.GetAttrKey(name), child) for name, child in zip(context, children)], context


def _unflatten_cache(children, context):
    return RegisteredCache(*children)


pytree.register_pytree_node(RegisteredCache, _flatten_cache, _unflatten_cache,
                            flatten_with_keys_fn=_flatten_cache_with_keys)

KEYS = [randn(1, 2, 3, 4, seed=i) for i in range(2)]
VALUES = [randn(1, 2, 3, 4, seed=10 + i) for i in range(2)]


def moved(tensors, layer, delta):
    """A copy of a list of tensors with one element of one layer moved by `delta`."""
    out = [t.clone() for t in tensors]
    out[layer][0, 0, 0, 0] += delta
    return out


@pytest.fixture(params=[Cache, RegisteredCache], ids=["unregistered", "registered"])
def cache_type(request):
    return request.param


def test_caches_holding_the_same_tensors_pass(cache_type):
    # Two distinct caches were unequal by identity, however alike their contents.
    expected = (randn(2, 3), cache_type(KEYS, VALUES))
    result = compare((randn(2, 3), cache_type(KEYS, VALUES)), expected)
    assert result.ok, result.summary()
    assert result.total == 6 + 4 * 24


def test_cache_tensors_are_judged_with_tolerances(cache_type):
    actual = cache_type(moved(KEYS, 1, 1e-7), VALUES)
    assert compare(actual, cache_type(KEYS, VALUES)).ok


def test_a_difference_inside_a_cache_is_reported_by_its_path(cache_type):
    actual = cache_type(KEYS, moved(VALUES, 1, 0.5))
    result = compare((randn(2, 3), actual), (randn(2, 3), cache_type(KEYS, VALUES)))
    assert not result.ok
    [problem] = result.problems
    assert problem.startswith("output[1].value_cache[1]: 1 of 24 elements outside tolerance")
    assert result.mismatched == 1


def test_a_cache_with_fewer_layers_is_structural(cache_type):
    result = compare(cache_type(KEYS[:1], VALUES[:1]), cache_type(KEYS, VALUES))
    assert "output.key_cache: eager returned a list of 2, the artifact returned a list of 1" \
        in result.structural_problems


def test_a_cache_of_another_type_is_structural():
    result = compare(Cache(KEYS, VALUES), RegisteredCache(KEYS, VALUES))
    assert result.structural_problems == [
        "output: eager returned a RegisteredCache, the artifact returned a Cache"]


class OddContextCache(Cache):
    """A pytree node whose context records how many layers it holds."""


pytree.register_pytree_node(
    OddContextCache,
    lambda cache: ([cache.key_cache, cache.value_cache], len(cache.key_cache)),
    lambda children, context: OddContextCache(*children))


def test_a_pytree_context_difference_is_structural():
    # The context alone says that the structure differs; children are then
    # not paired by position.
    result = compare(OddContextCache(KEYS[:1], VALUES[:1]), OddContextCache(KEYS, VALUES))
    assert result.problems == result.structural_problems == ["output: pytree context 1 != eager 2"]


def test_unregistered_attributes_that_differ_are_structural():
    actual = Cache(KEYS, VALUES)
    actual.seen_tokens = 3
    result = compare(actual, Cache(KEYS, VALUES))
    assert result.structural_problems == [
        "output: attributes differ from eager: unexpected ['seen_tokens']"]


def test_an_integer_attribute_is_exact_under_a_loose_override():
    expected, actual = Cache(KEYS, VALUES), Cache(KEYS, VALUES)
    expected.seen_tokens, actual.seen_tokens = 500, 510
    result = compare(actual, expected, tolerance=Tolerance(rtol=0.1, atol=1.0))
    assert [p.split(":")[0] for p in result.problems] == ["output.seen_tokens"]


# ---------------------------------------------------------------- dataclasses

@dataclasses.dataclass
class Generated:
    logits: torch.Tensor
    cache: Cache
    steps: int


def generated(logits_delta=0.0, value_delta=0.0, steps=4):
    logits = randn(2, 5)
    logits[0, 0] += logits_delta
    return Generated(logits, Cache(KEYS, moved(VALUES, 0, value_delta)), steps)


def test_dataclass_outputs_that_agree_pass():
    # A dataclass's own __eq__ compares tuples of tensors, which raises.
    result = compare(generated(), generated())
    assert result.ok, result.summary()


@pytest.mark.parametrize("actual, path", [
    (generated(logits_delta=0.5), "output.logits"),
    (generated(value_delta=0.5), "output.cache.value_cache[0]"),
    (generated(steps=5), "output.steps"),
], ids=["field", "nested-object", "int-field"])
def test_a_difference_in_a_dataclass_is_reported_by_field(actual, path):
    result = compare(actual, generated())
    assert [p.split(":")[0] for p in result.problems] == [path]


# ---------------------------------------------------------------- own __eq__

class TensorEq:
    """An __eq__ that answers with a tensor, as a tensor wrapper might."""

    def __init__(self, t):
        self.t = t

    def __eq__(self, other):
        return self.t == other.t


class RaisingEq(TensorEq):
    def __eq__(self, other):
        raise TypeError("not comparable")


@pytest.mark.parametrize("cls", [TensorEq, RaisingEq])
def test_an_unusable_eq_falls_back_to_attributes(cls):
    assert compare(cls(randn(3)), cls(randn(3))).ok
    result = compare(cls(randn(3) + 1), cls(randn(3)))
    assert [p.split(":")[0] for p in result.problems] == ["output.t"]


class Huge:
    def __eq__(self, other):
        return False

    def __repr__(self):
        return "Huge(" + "x" * 100_000 + ")"


@pytest.mark.parametrize("actual, expected", [
    (Huge(), Huge()),
    ("a" * 100_000, "b" * 100_000),
], ids=["object", "string"])
def test_messages_do_not_dump_huge_reprs(actual, expected):
    result = compare(actual, expected)
    assert not result.ok
    assert len(result.problems[0]) < 600


def test_stateless_objects_without_eq_compare_by_identity():
    # torch.dtype has neither __eq__ nor attributes: there is no content to
    # compare, and calling all stateless objects equal would pass float64 for float32.
    assert compare(torch.float32, torch.float32).ok
    assert not compare(torch.float64, torch.float32).ok


def test_an_object_that_refers_to_itself_is_compared_once():
    expected, actual = Cache(KEYS, VALUES), Cache(KEYS, VALUES)
    expected.me, actual.me = expected, actual
    assert compare(actual, expected).ok
    actual.value_cache[0] = actual.value_cache[0] + 1
    assert not compare(actual, expected).ok


def test_tensor_leaves_reach_inside_caches_as_the_comparison_does(cache_type):
    """The tensors an exporter flattens out of a cache, and that the float64 judge and the
    ONNX output names count, are the ones the comparison walks."""
    from conformance.checks.compare import flatten
    from conformance.checks.subject import tensor_leaves

    keys, values = [randn(1, 2, 3, 1, seed=i) for i in range(2)], [randn(1, 2, 3, 1, seed=9)] * 2
    output = {"logits": randn(1, 4), "cache": cache_type(keys, values)}
    assert [p for p, _ in flatten(output)] == [
        "output['logits']", "output['cache'].key_cache[0]", "output['cache'].key_cache[1]",
        "output['cache'].value_cache[0]", "output['cache'].value_cache[1]"]
    assert len(tensor_leaves(output)) == 5
    result = compare(output, {"logits": output["logits"],
                              "cache": cache_type(keys, moved(values, 1, 1.0))}, Tolerance(0, 0))
    assert not result.ok and result.total == sum(t.numel() for t in tensor_leaves(output))


def test_flattening_an_object_that_holds_itself_ends():
    from conformance.checks.compare import flatten

    holder = Cache([randn(2)], [randn(2)])
    holder.me = holder
    assert [p for p, _ in flatten(holder)] == ["output.key_cache[0]", "output.value_cache[0]"]
