"""A catalogue of planted faults, each written as a user would: a model and an
example, nothing else (no probes, no batch sizes, no input space).

Each fault says, per path, the verdict a trustworthy suite must give: `PASS` where
the artifact computes what eager computes on every input the artifact is meant to
take, or the kind of failure (conformance.checks.catalog.FAILURE_KINDS) where it does not.
Each row says why. `tests/test_planted_faults.py` runs them through the checks.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F

from conformance import Case

PASS = "pass"
# Every path the catalogue runs, each on the runtime its users ship it with.
TARGETS = {
    "trace": "torch",
    "script": "torch",
    "onnx": "onnxruntime",
    "onnx-dynamo": "onnxruntime",
    "export": "torch",
    "compile": "inductor",
    "aoti": "torch",
}
OPSETS = {"onnx": 17, "onnx-dynamo": 20}


@dataclasses.dataclass(frozen=True)
class Fault:
    name: str
    case: Case
    verdicts: dict  # path -> PASS or the expected failure kind
    why: str


def _rand(*shape):
    return lambda: (torch.rand(*shape),)  # an all-positive image, as most examples are


# ---------------------------------------------------------------- models

class BranchOnMean(torch.nn.Module):
    def forward(self, x):
        if x.mean() > 0:
            return x * 2
        return x - 1


class ItemScale(torch.nn.Module):
    def forward(self, x):
        return x * x.abs().max().item()


class NumpyRoundTrip(torch.nn.Module):
    def forward(self, x):
        return torch.from_numpy(np.tanh(x.numpy())) + 1


class BatchFromInt(torch.nn.Module):
    def forward(self, x):
        return x.reshape(int(x.shape[0]), -1).sum(dim=1)


class SizeFromInt(torch.nn.Module):
    """Upsamples to twice the input's size, read as Python ints: a trace freezes them."""

    def forward(self, x):
        return F.interpolate(x, size=(int(x.shape[2]) * 2, int(x.shape[3]) * 2))


class RangeBroadcast(torch.nn.Module):
    """Adds 0, 1, 2, ... along the last axis, its length read as a Python int."""

    def forward(self, x):
        return x + torch.arange(int(x.shape[-1]), dtype=x.dtype)


class _ReluSymbolic(torch.autograd.Function):
    """abs in eager; exported to ONNX as Relu, which is right for positive inputs only."""

    @staticmethod
    def forward(ctx, x):
        return x.abs()

    @staticmethod
    def symbolic(g, x):
        return g.op("Relu", x)


class AbsWithWrongSymbolic(torch.nn.Module):
    def forward(self, x):
        return _ReluSymbolic.apply(x) + 1


class _HalvingSymbolic(torch.autograd.Function):
    """Identity in eager; exported to ONNX as a multiplication by 0.5."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def symbolic(g, x):
        return g.op("Mul", x, g.op("Constant", value_t=torch.tensor(0.5)))


class TinyHalvedBySymbolic(torch.nn.Module):
    def forward(self, x):
        return _HalvingSymbolic.apply(x * 1e-6)


class TinyOutputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 4)

    def forward(self, x):
        return torch.tanh(self.linear(x)) * 1e-7


class HugeOutputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.linear(x) * 1e10


class InPlaceCorrect(torch.nn.Module):
    """Writes into its input, correctly: every path must compute the same outputs."""

    def forward(self, x):
        x.add_(1)
        return x * 2


class InPlaceBranch(torch.nn.Module):
    """Writes into its input and returns it; the branch is data-dependent."""

    def forward(self, x):
        if x.sum() > 0:
            x.mul_(2)
        else:
            x.sub_(1)
        return x


class ItemFromIds(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(10, 4)

    def forward(self, ids):
        return self.embedding(ids) * ids[0, 0].item()


class HangsOnNegative(torch.nn.Module):
    """Correct on positive inputs; never returns on an input whose sum is negative."""

    def forward(self, x):
        while x.sum() < 0:
            time.sleep(0.01)
        return x + 1


# ---------------------------------------------------------------- the catalogue

_EXPORT_REFUSES = "torch.export cannot follow a Python branch on a tensor's value"

FAULTS = [
    Fault("baked_branch", Case("baked_branch", BranchOnMean, _rand(1, 3, 8, 8)),
          {"trace": "mismatch", "script": PASS, "onnx": "mismatch",
           "onnx-dynamo": "export-error", "export": "export-error", "compile": PASS,
           "aoti": "export-error"},
          "an all-positive example takes one side of `x.mean() > 0`; a trace (and the "
          "ONNX exporter, which traces) keeps that side; the negated probe takes the other"),
    Fault("item_constant_example", Case("item_constant_example", ItemScale,
                                        lambda: (torch.ones(2, 4),)),
          {"trace": "mismatch", "script": PASS, "onnx": "mismatch", "onnx-dynamo": PASS,
           "export": PASS, "compile": PASS, "aoti": PASS},
          "`.item()` becomes a constant in a trace; a constant example's new-values probe "
          "is the same tensor, the scaled probes are not"),
    Fault("numpy_in_forward", Case("numpy_in_forward", NumpyRoundTrip, _rand(2, 5)),
          {"trace": "mismatch", "script": "export-error", "onnx": "runtime-error",
           "onnx-dynamo": PASS, "export": "export-error", "compile": PASS,
           "aoti": "export-error"},
          "a numpy round trip is a constant in a trace (the ONNX graph even loses its input); "
          "TorchScript and torch.export cannot follow numpy; Dynamo and the dynamo-based ONNX "
          "exporter can"),
    Fault("batch_from_int", Case("batch_from_int", BatchFromInt, _rand(1, 4, 2)),
          {"trace": "mismatch", "script": PASS, "onnx": PASS, "onnx-dynamo": PASS,
           "export": PASS, "compile": PASS, "aoti": PASS},
          "`int(x.shape[0])` freezes the batch in a trace; the derived other-batch probe "
          "shows it. The other exports are static in the batch, which is right for them"),
    Fault("size_from_int", Case("size_from_int", SizeFromInt, _rand(1, 2, 4, 4)),
          {"trace": "mismatch", "script": PASS, "onnx": PASS, "onnx-dynamo": PASS,
           "export": PASS, "compile": PASS, "aoti": PASS},
          "the trace warns that it froze `int(x.shape[2])`; the probes aimed at that warning "
          "make an axis longer, and the frozen output size no longer follows"),
    Fault("broadcast_from_int", Case("broadcast_from_int", RangeBroadcast, _rand(2, 5)),
          {"trace": "runtime-error", "script": PASS, "onnx": PASS, "onnx-dynamo": PASS,
           "export": PASS, "compile": PASS, "aoti": PASS},
          "a frozen `arange(5)` broadcasts against the example's last axis only"),
    Fault("symbolic_wrong_for_negatives", Case("symbolic_wrong_for_negatives",
                                               AbsWithWrongSymbolic, _rand(1, 3, 4, 4)),
          {"trace": "export-error", "script": "export-error", "onnx": "mismatch",
           "onnx-dynamo": PASS, "export": PASS, "compile": PASS, "aoti": PASS},
          "the symbolic exports abs as Relu: right on the all-positive example only (a "
          "Python autograd.Function is no TorchScript; torch.export runs its forward)"),
    Fault("tiny_outputs_halved", Case("tiny_outputs_halved", TinyHalvedBySymbolic,
                                      _rand(1, 8)),
          {"trace": "export-error", "script": "export-error", "onnx": "mismatch",
           "onnx-dynamo": PASS, "export": PASS, "compile": PASS, "aoti": PASS},
          "outputs below 1e-6 halved by a symbolic: a fixed absolute floor of 1e-5 passed it"),
    Fault("tiny_outputs", Case("tiny_outputs", TinyOutputs, lambda: (torch.randn(3, 8),)),
          {path: PASS for path in TARGETS},
          "a correct model whose outputs are around 1e-7: no path may fail it"),
    Fault("huge_outputs", Case("huge_outputs", HugeOutputs, lambda: (torch.randn(3, 8),)),
          {path: PASS for path in TARGETS},
          "a correct model whose outputs are around 1e10: no path may fail it"),
    Fault("in_place_correct", Case("in_place_correct", InPlaceCorrect,
                                   lambda: (torch.randn(2, 4),)),
          {path: PASS for path in TARGETS},
          "writing into the input is correct here; a suite that shares inputs between eager "
          "and the artifact failed it on every path"),
    Fault("in_place_branch", Case("in_place_branch", InPlaceBranch,
                                  lambda: (torch.rand(2, 4),)),
          {"trace": "mismatch", "script": PASS, "onnx": "mismatch",
           "onnx-dynamo": "export-error", "export": "export-error", "compile": PASS,
           "aoti": "export-error"},
          "the trace keeps the `mul_` side; on shared, already mutated inputs it passed"),
    Fault("item_from_token_ids", Case("item_from_token_ids", ItemFromIds,
                                      lambda: (torch.randint(1, 10, (2, 3)),)),
          {"trace": "mismatch", "script": PASS, "onnx": "mismatch", "onnx-dynamo": PASS,
           "export": PASS, "compile": PASS, "aoti": PASS},
          "a token id read with `.item()` is frozen by a trace; integer inputs redrawn within "
          "their range show it"),
    Fault("hangs_on_negative", Case("hangs_on_negative", HangsOnNegative, _rand(1, 4)),
          {path: "eager-error" for path in TARGETS},
          "eager itself never returns on the negated example: every cell fails, at once"),
]
