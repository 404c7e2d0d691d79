"""Families: cases that Hypothesis draws instead of a person writing them.

A family turns each model its strategy draws into an ordinary `Case` and puts
it through a target's `matches_eager` and `generalizes` checks. Its cells in
the matrix read `<family>-<target>-generated_models`; a failure is shrunk to the
smallest model Hypothesis finds, whose source is the reproduction.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from conformance.cases import Case, random_inputs
from conformance.checks.property_search import SearchSettings
from conformance.targets import Target, path_row


@dataclasses.dataclass(frozen=True)
class Gap:
    """Layers that a target gets wrong or cannot export, found by a search and kept as a
    fixed case."""

    targets: str  # fnmatch pattern over target ids
    case: str     # the finding's fixed case in fixtures/findings.py
    reason: str
    applies: Callable[[Any, tuple], bool]  # (layer, the shape it gets) -> whether it hits
    # (the layers before it, first to last) -> whether they make it hit; None: any do
    follows: Callable[[tuple], bool] | None = None


def _nearest_exact(layer, shape) -> bool:
    return type(layer).__name__ == "Interpolate" and layer.mode == "nearest-exact"


def _adaptive_pool_not_dividing(layer, shape) -> bool:
    return type(layer).__name__ == "AdaptivePool" and any(size % layer.size
                                                          for size in shape[2:])


def _align_corners_fractional(layer, shape) -> bool:
    return (type(layer).__name__ == "Interpolate" and bool(layer.align_corners)
            and any((size * layer.scale) % 1 for size in shape[2:]))


def _max_pool_ceil_stride_one_padded(layer, shape) -> bool:
    return (type(layer).__name__ == "Pool" and layer.op == "max" and layer.ceil_mode
            and layer.stride == 1 and layer.padding > 0)


def _max_pool_ceil_drops_last_window(layer, shape) -> bool:
    """Max pooling with ceil_mode whose last window would start in the right padding:
    PyTorch drops that window, the plain ceil formula keeps it."""
    if not (type(layer).__name__ == "Pool" and layer.op == "max" and layer.ceil_mode
            and layer.padding > 0):
        return False
    return any((-(-(size + 2 * layer.padding - layer.kernel) // layer.stride)) * layer.stride
               >= size + layer.padding for size in shape[2:])


def _batch_norm_as_wide_as_last_dim(layer, shape) -> bool:
    """A BatchNorm2d with as many channels as its input's last dim: after a Linear, which
    writes that dim, torch.jit.freeze folds the BatchNorm into the Linear (harmlessly
    when there is one channel: then the last dim is scaled the same)."""
    return type(layer).__name__ == "BatchNorm" and shape[1] == shape[-1] > 1


def _right_after_linear(before: tuple) -> bool:
    return bool(before) and before[-1].kind == "linear"


def _elu(layer, shape) -> bool:
    return type(layer).__name__ == "Activation" and layer.name == "elu"


def _cond_branch(layer, shape) -> bool:
    return type(layer).__name__ == "Branch" and layer.spelling == "cond"


def _on_a_convolutions_output(before: tuple) -> bool:
    """Whether the input of the next layer is a convolution's output (the last layer's, or
    one concatenated by it), through activations only. A residual sum is not."""
    for layer in reversed(before):
        if layer.kind != "activation":
            return layer.kind == "conv2d" or (layer.kind == "concat" and layer.partner == "conv")
    return False


# Known gaps are left out of their path's drawn models, so that its cells go on looking
# for wrong results instead of finding one known gap every time. Each also has a fixed
# case with an expectation row, which fails loudly when the gap is closed.
KNOWN_GAPS = (
    Gap("onnx-op*", "nearest_exact_upsample", "the TorchScript-based exporter at opset 17 has no "
        "symbolic for aten::_upsample_nearest_exact2d", _nearest_exact),
    Gap("onnx-op*", "adaptive_pool_uneven", "the TorchScript-based exporter refuses "
        "adaptive_avg_pool2d to an output size that does not divide the input size",
        _adaptive_pool_not_dividing),
    Gap("onnx*-onnx-reference-*", "align_corners_fractional_resize", "onnx's reference "
        "evaluator computes Resize with align_corners wrongly when size * scale is not a "
        "whole number (ONNX Runtime and eager agree)", _align_corners_fractional),
    Gap("onnx*-onnx-reference-*", "max_pool_ceil_stride_one", "onnx's reference evaluator "
        "gives MaxPool with ceil_mode, stride 1 and padding an output 2 larger per spatial "
        "dim (ONNX Runtime and eager agree)", _max_pool_ceil_stride_one_padded),
    Gap("onnx-op*", "max_pool_ceil_then_linear", "the TorchScript-based exporter's graph of a "
        "max pooling with ceil_mode whose last window PyTorch drops, then a Linear, fails ONNX "
        "shape inference (ONNX Runtime refuses to load it: MatMul's dimensions are "
        "incompatible); the dynamo exporter's loads and agrees",
        _max_pool_ceil_drops_last_window),
    Gap("onnx*-onnxruntime*-cpu", "elu_near_zero", "ONNX Runtime computes Elu as exp(x) - 1, "
        "which loses relative precision near 0 (on the probe that scales the example by "
        "0.001); the reference evaluator matches eager", _elu),
    *(Gap(f"{path}-tuned-*", "linear_then_batch_norm", "torch.jit.freeze folds a BatchNorm2d "
          "into the Linear before it when the channels are as many as the Linear's outputs, "
          "and scales the last dim instead of the channels", _batch_norm_as_wide_as_last_dim,
          follows=_right_after_linear) for path in ("trace", "script")),
    *(Gap(f"aoti-{runner}-cpu", "conv_then_cond", "AOTInductor's default package computes a "
          "torch.cond on a Conv2d's output wrongly, also through activations or a "
          "concatenation (the tuned package, frozen, computes it right)", _cond_branch,
          follows=_on_a_convolutions_output) for runner in ("torch", "libtorch")),
)


def known_gap(target: Target, model) -> Gap | None:
    """The known gap of the target that a drawn model would hit, or None."""
    placed = list(enumerate(zip(model.layers, model.shapes())))
    for gap in KNOWN_GAPS:
        if fnmatch.fnmatchcase(target.id, gap.targets) and any(
                gap.applies(layer, shape) and (
                    gap.follows is None or gap.follows(model.layers[:index]))
                for index, (layer, shape) in placed):
            return gap
    return None


@dataclasses.dataclass(frozen=True)
class Family:
    """Generated small convolutional models (conformance.checks.generated) on 4-D images."""

    name: str
    tags: frozenset[str]
    max_layers: int = 4
    quantized_engine: str | None = None

    def strategy(self, target: Target):
        from conformance.checks.generated import models

        drawn = models(branch=path_row(target.path).branch, max_layers=self.max_layers)
        return drawn.filter(lambda model: not known_gap(target, model))

    def case(self, model, directory: Path) -> Case:
        """The drawn model as a case with its example only: the suite derives the other
        inputs (the example negated takes the other side of a branch on the sign of a
        mean; new values, magnitudes, shifts, zeros, another batch)."""
        example = random_inputs(model.input_shape)
        control_flow = {"control-flow"} if model.has_branch() else set()
        return Case(self.name, lambda: model.build(directory), example,
                    tags=self.tags | control_flow)


FAMILIES = (Family("convnets", frozenset({"generated", "small"})),)


@dataclasses.dataclass
class FamilySubject:
    """A family seen through one target: what the generated_models check looks at."""

    family: Family
    target: Target
    scratch: Path
    harness: Callable[[], Any] | None = None
    reproduce: str = ""
    search: SearchSettings = dataclasses.field(default_factory=SearchSettings)
    timings: dict = dataclasses.field(default_factory=dict)
    failure_kinds: dict = dataclasses.field(default_factory=dict)  # failure -> its kind

    @property
    def case(self) -> Family:  # what failure messages name
        return self.family

    def artifact_summary(self) -> dict:
        return {}

    def failure_of(self, model) -> str | None:
        """What fails when this drawn model goes through the target, or None."""
        from conformance.checks import catalog as checks
        from conformance.checks.subject import CaseState, Subject

        directory = Path(tempfile.mkdtemp(dir=self.scratch))
        state = CaseState(self.family.case(model, directory), self.target.device, directory,
                          use_cache=False, harness=self.harness)
        subject = Subject(state, self.target, search=self.search)
        try:
            checks.matches_eager(subject)
            checks.generalizes(subject)
        except checks.CheckFailure as exc:
            failure = re.sub(r"^case \S+, target \S+, ", "", str(exc))  # the cell's own
            self.failure_kinds[failure] = exc.kind
            return failure
        except Exception as exc:  # the suite's own trouble with a drawn model still fails it
            return f"{type(exc).__name__}: {exc}"
        finally:
            _release(state, self.target)
            shutil.rmtree(directory, ignore_errors=True)
        return None


def _release(state, target: Target) -> None:
    """Unload the model from the harness, and forget Dynamo's compiled code of it."""
    state.close()
    if not path_row(target.path).saves_file:  # compiled in this process
        import torch

        torch._dynamo.reset()


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="conformance-generated-"))
