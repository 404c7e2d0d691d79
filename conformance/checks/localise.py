"""Where an artifact first diverges from eager: the first submodule, or ONNX node, whose
outputs differ from eager's, named in a mismatch's message.

Eager runs once more on the failing inputs with a hook on every submodule, which keeps
each module's inputs and outputs in the order the modules finish (a child before its
parent). Then, by the kind of artifact, loaded afresh from its file (the loaded artifact
the checks share is left alone: calling its submodules could change its buffers):

- TorchScript (`trace`, `script`) and torch.export (`export`) keep the model's module
  hierarchy: each of the artifact's submodules is called on the very inputs eager's
  module received, so an error made upstream cannot reach it, and the first module, in
  the order they finish, whose outputs are outside the case's tolerance is the culprit.
  A module whose own children agree but which does not is itself the culprit; the
  model's own forward is named when every submodule agrees.
- ONNX (`onnx`, `onnx-dynamo`): a node cannot be fed eager's values, so the graph runs
  once, in ONNX Runtime with its optimizations off, with the value of the last node in
  each module's scope made a graph output. Errors then flow downstream, and float32
  noise grows along the way, so the culprit is the first module whose error, in units
  of the tolerance, exceeds 1 and is at least `JUMP` times the largest error of the
  modules that finished before it. A module called more than once is judged only where
  its calls can be told apart in the graph (see `last_nodes`); its children still are.

It is a hint: any failure of its own becomes at most one short line, never another
verdict; it runs under its own time limit (`LOCALISE_SECONDS`), leaves no hook on the
model and the global random generators as they were, and by default only for a mismatch
that no expectation row of the cell expects (`MODES`, `wanted`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Any, Callable

from conformance.checks.compare import allowed_error, compare, tolerance_for
from conformance.checks.time_limit import TimeLimitExceeded, time_limit
from conformance.messages import first_line
from conformance.targets import path_row

# The most seconds a localisation may take; half of what is left of the cell's own
# limit when that is less.
LOCALISE_SECONDS = 60.0
# ONNX: how many times the largest error before it a module's error must be to be the
# first divergence, both in units of the tolerance (see `first_jump`).
JUMP = 10.0
# When a mismatch is localised (--localise): when no expectation row of the cell
# expects it (the default: a known failure is not localised again on every run),
# always, or never.
MODES = ("unexpected", "always", "never")
# What its own time limit is called, to tell it from the cell's.
_OWN_LIMIT = "localising the first divergence"


class NotLocalised(Exception):
    """Why this artifact or model cannot be localised; its text ends the note line."""


@dataclasses.dataclass
class ModuleCall:
    """Eager's first call of one module: its inputs (when kept), its outputs, and how
    many times the model called it."""

    name: str  # its name in model.named_modules(); "" for the model itself
    kind: str  # its class's name
    args: tuple
    kwargs: dict
    output: Any
    times_called: int = 1


@dataclasses.dataclass
class Divergence:
    """The first module whose outputs differ from eager's, and by how much."""

    module: str
    kind: str
    max_abs: float
    what: str  # how it differs, in words
    node: str = ""  # ONNX: the node whose output was compared, and its op
    op: str = ""

    def metrics(self) -> dict:
        found = {"module": self.module, "kind": self.kind, "max_abs": self.max_abs}
        return {**found, **({"onnx_node": self.node, "onnx_op": self.op} if self.node else {})}

    def describe(self) -> str:
        where = (f"module {self.module} ({self.kind})" if self.module
                 else f"the model's own forward ({self.kind}), outside every submodule")
        node = f", ONNX node {self.node} ({self.op})" if self.node else ""
        return f"first divergence: {where}{node}: {self.what}"


def wanted(subject, message: str) -> bool:
    """Whether a mismatch with this message is localised, by the subject's mode (one of
    MODES): by default only when the cell has no expectation row that expects it."""
    if subject.localise == "never":
        return False
    row = subject.expectation
    return subject.localise == "always" or row is None or not row.expects("mismatch", message)


def localise(subject, inputs) -> tuple[str, dict]:
    """The note line for a mismatch on these inputs and the record's `diverges_at`
    entry: ("", {}) where there is nothing to localise (a compiled model, a plain
    function, a model without submodules), a short line and {} where it could not."""
    localiser = _localiser(subject)
    if localiser is None or not _has_submodules(subject.state.model):
        return "", {}
    try:
        with time_limit(_seconds(), _OWN_LIMIT), _random_state_kept(subject.state.device):
            found = localiser(subject, inputs)
    except NotLocalised as exc:
        return f"first divergence: not localised ({exc})", {}
    except TimeLimitExceeded as exc:
        if exc.what != _OWN_LIMIT:
            raise  # the cell's own limit: the cell's to report
        return f"first divergence: not localised (it ran past {exc.seconds:g} s)", {}
    except Exception as exc:  # a hint: its own failure must not hide the verdict
        return f"(could not localise the first divergence: {type(exc).__name__}: " \
               f"{first_line(exc)})", {}
    if isinstance(found, str):
        return f"first divergence: not found: {found}", {}
    return found.describe(), {"diverges_at": found.metrics()}


def _localiser(subject) -> Callable | None:
    """The localiser of the target's kind of artifact; one that refuses for a saved
    artifact without module structure; None for what saves nothing (torch.compile)."""
    row = path_row(subject.target.path)
    if row is None or not row.saves_file:
        return None
    return {"torchscript": _torchscript, "export": _exported, "onnx": _onnx}.get(
        row.graph, _no_structure)


def _no_structure(subject, inputs):
    raise NotLocalised(f"the {subject.target.path} artifact is compiled code that keeps no "
                       "module structure to compare")


def _has_submodules(model) -> bool:
    """Whether there is anything to localise: an eager nn.Module (a ScriptModule takes no
    forward hooks) with submodules (else the model itself is all there is to name)."""
    import torch

    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
        return False
    return next(model.children(), None) is not None


def _seconds() -> float:
    """LOCALISE_SECONDS, or half of what is left of an outer limit (the cell's) if less,
    so that the cell still has time to report its verdict."""
    import signal

    left = signal.getitimer(signal.ITIMER_REAL)[0] if hasattr(signal, "getitimer") else 0
    return min(LOCALISE_SECONDS, left / 2) if left > 0 else LOCALISE_SECONDS


def _random_state_kept(device: str):
    """The global random generators of the CPU and of the model's device as they were
    before the block: a model that draws random numbers, run once more here, must not
    change what the checks after it draw."""
    import torch

    where = torch.device(device)
    if where.type == "cpu":
        return torch.random.fork_rng(devices=[])
    index = where.index if where.index is not None else \
        getattr(torch, where.type).current_device()
    return torch.random.fork_rng(devices=[index], device_type=where.type)


# ---------------------------------------------------------------- eager

def _copy(value: Any) -> Any:
    """Tensors cloned: a later in-place module (ReLU(inplace=True)) must not change
    what was kept."""
    import torch
    from torch.utils import _pytree

    return _pytree.tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor)
                            else v, value)


class _Recorder:
    """Forward hooks that keep each module's first call, in the order modules finish."""

    def __init__(self, keep_inputs: bool):
        self.keep_inputs = keep_inputs
        self.calls: dict[str, ModuleCall] = {}
        self.counts: dict[str, int] = {}
        self.inputs: dict[str, tuple] = {}

    def before(self, name: str):
        def hook(module, args, kwargs):
            self.counts[name] = self.counts.get(name, 0) + 1
            if self.counts[name] == 1 and self.keep_inputs:
                self.inputs[name] = _copy((args, kwargs))
        return hook

    def after(self, name: str):
        def hook(module, args, kwargs, output):
            if name not in self.calls:
                args, kwargs = self.inputs.pop(name, ((), {}))
                self.calls[name] = ModuleCall(name, type(module).__name__, args, kwargs,
                                              _copy(output))
        return hook

    def hook(self, model, handles: list) -> None:
        """A hook before and after every module but scripted ones (which take none: their
        parent is judged whole), each handle kept in `handles` as it is made."""
        import torch

        for name, module in model.named_modules():
            if isinstance(module, torch.jit.ScriptModule):
                continue
            handles.append(module.register_forward_pre_hook(self.before(name),
                                                            with_kwargs=True))
            handles.append(module.register_forward_hook(self.after(name), with_kwargs=True))

    def finished(self) -> list[ModuleCall]:
        calls = list(self.calls.values())
        for call in calls:
            call.times_called = self.counts.get(call.name, 1)
        return calls


@contextlib.contextmanager
def _alarm_held():
    """SIGALRM, which ends a time limit, held back until the block is done, so that no
    limit fires between adding a hook and keeping its handle, nor halfway through
    taking them off: a hook left behind would stay on the shared eager model. Only the
    main thread, where the limits run, holds it back."""
    import signal
    import threading

    if not hasattr(signal, "pthread_sigmask") or \
            threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a held alarm fires here


def eager_calls(state, inputs, keep_inputs: bool) -> list[ModuleCall]:
    """Eager on these inputs, once, with every module's first call kept: in the order
    the modules finish, each with the number of times the model called it."""
    recorder = _Recorder(keep_inputs)
    handles: list = []
    try:
        with _alarm_held():
            recorder.hook(state.model, handles)
        state.run(state.model, inputs)
    finally:
        with _alarm_held():
            for handle in handles:
                handle.remove()
    return recorder.finished()


# ---------------------------------------------------------------- fed eager's inputs

def first_divergent_when_fed(state, calls: list[ModuleCall], modules: dict,
                             feed: Callable) -> Divergence | str:
    """The first module, in the order eager's finish, whose artifact counterpart gives
    other outputs than eager's on eager's own inputs to it. `feed(artifact_module, call)`
    gives the (args, kwargs) to call it with, or None where that cannot be told."""
    judged = 0
    for call in calls:
        module = modules.get(call.name)
        fed = feed(module, call) if module is not None else None
        if fed is None:
            continue
        try:
            actual = _call_module(state, module, fed)
        except Exception:  # a calling convention the artifact's module does not take
            continue
        judged += 1
        found = _fed_divergence(state, call, actual)
        if found:
            return found
    return (f"each of the {judged} module(s) that could be called on eager's inputs "
            "to it agrees with eager")


def _call_module(state, module, fed: tuple) -> Any:
    import torch

    args, kwargs = _copy(fed)
    with torch.inference_mode(), state.context():
        return module(*args, **kwargs)


def _fed_divergence(state, call: ModuleCall, actual: Any) -> Divergence | None:
    """A Divergence when the module's tensor outputs differ from eager's; the containers
    around them are not judged (a TorchScript module returns a tuple for a list)."""
    from conformance.checks.subject import tensor_leaves

    got, want = tensor_leaves(actual), tensor_leaves(call.output)
    if len(got) != len(want) or not want:
        return None
    result = compare(got, want, state.case.tolerance)
    if result.ok:
        return None
    what = result.headline().replace("output elements", "elements of its output")
    return Divergence(call.name, call.kind, float(result.max_abs),
                      f"fed eager's own inputs to it, {what} (max abs error "
                      f"{result.max_abs:.3g}); every module judged before it agrees")


def _torchscript(subject, inputs) -> Divergence | str:
    module = _script_module(subject)
    modules = dict(module.named_modules())
    if len(modules) < 2:
        raise NotLocalised("the TorchScript module keeps no submodules: frozen or inlined")
    calls = eager_calls(subject.state, inputs, keep_inputs=True)
    return first_divergent_when_fed(subject.state, calls, modules,
                                    lambda m, call: (call.args, call.kwargs))


def _script_module(subject):
    """The artifact's file loaded in this process, whatever runtime ran it (the torch
    runtime's loaded module is shared with later checks; libtorch's and a server's
    live in another process)."""
    import torch

    from conformance.exporters.torchscript import load_torchscript

    module = load_torchscript(subject.artifact.file, subject.state.device)
    if not isinstance(module, torch.jit.ScriptModule):
        raise NotLocalised("the TorchScript artifact is a function, not a module")
    return module


def _exported(subject, inputs) -> Divergence | str:
    """The saved program, unflattened into the model's module hierarchy."""
    import torch

    program = torch.export.load(str(subject.artifact.file))
    root = torch.export.unflatten(program)
    modules = dict(root.named_modules())
    calls = eager_calls(subject.state, inputs, keep_inputs=True)

    def feed(module, call):
        return (call.args, call.kwargs) if module is root else placeholder_feed(module, call)

    return first_divergent_when_fed(subject.state, calls, modules, feed)


def placeholder_feed(module, call: ModuleCall) -> tuple | None:
    """The inputs of an unflattened submodule, which takes the tensors it reads in an
    order of its own: each placeholder gets the one tensor eager's module received with
    its dtype and shape (a dynamic size matches any). None when a placeholder is not a
    tensor, or matches none or several different tensors: that module is not judged."""
    import torch

    from conformance.checks.subject import tensor_leaves

    graph = getattr(module, "graph", None)
    if graph is None:
        return None
    given = tensor_leaves((call.args, call.kwargs))
    fed = []
    for node in (n for n in graph.nodes if n.op == "placeholder"):
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor):
            return None
        found = [t for t in given if _fits(value, t)]
        if not found or any(not torch.equal(found[0], t) for t in found[1:]):
            return None
        fed.append(found[0])
    return tuple(fed), {}


def _fits(value, tensor) -> bool:
    """Whether a placeholder's fake tensor could be this tensor."""
    if value.dtype != tensor.dtype or value.dim() != tensor.dim():
        return False
    return all(not isinstance(size, int) or size == real
               for size, real in zip(value.shape, tensor.shape))


# ---------------------------------------------------------------- ONNX

@dataclasses.dataclass
class NodeError:
    """How far an ONNX node's output is from eager's output of its module."""

    node: Any  # the onnx.NodeProto
    units: float  # the largest error, in units of the error each element is allowed
    max_abs: float  # the largest finite absolute error


def _onnx(subject, inputs) -> Divergence | str:
    import onnx

    model = onnx.load(str(subject.artifact.file))
    calls = eager_calls(subject.state, inputs, keep_inputs=False)
    owners = [node_module(node, {call.name for call in calls}) for node in model.graph.node]
    last = last_nodes(owners, {call.name: call.times_called for call in calls})
    nodes = {name: model.graph.node[index] for name, index in last.items()}
    wanted = list(dict.fromkeys(out for node in nodes.values() for out in node.output if out))
    values = dict(zip(wanted, _run_with_outputs(subject, model, wanted, inputs)))
    errors = [(call, _node_error(subject, nodes[call.name], values, call))
              for call in calls if call.name in nodes]
    errors = [(call, error) for call, error in errors if error is not None]
    found = first_jump([error.units for _, error in errors])
    if found is None:
        return (f"in the ONNX graph run by ONNX Runtime with its optimizations off, no "
                f"module's output ({len(errors)} compared) is beyond tolerance and "
                f"{JUMP:g} times the error of the modules before it")
    call, error = errors[found]
    before = max((e.units for _, e in errors[:found]), default=0.0)
    return Divergence(call.name, call.kind, error.max_abs,
                      f"max abs error {error.max_abs:.3g} against eager's output of that "
                      f"module, {error.units:.3g} times the tolerance; "
                      f"{_upstream_note(before)}", error.node.name or "(unnamed)",
                      error.node.op_type)


def _upstream_note(before: float) -> str:
    """What the modules compared before the culprit say, their largest error in units of
    the tolerance being `before`."""
    if before <= 1:
        return "the modules compared before it agree"
    return f"the modules compared before it are off by at most {before:.3g} times the tolerance"


# A scope level's mark of a later call of the same module: `relu_1` (the TorchScript-
# based exporter), `head.0@1` (torch.export's module stack).
_LATER_CALL = re.compile(r"[_@]\d+$")


def node_module(node, names: set[str]) -> str | None:
    """The deepest module of the eager model an ONNX node was exported from, or None.
    The dynamo exporter writes the module path into the node's metadata
    (`pkg.torch.onnx.name_scopes`); the TorchScript-based exporter into its name
    (`/layer1/layer1.0/conv1/Conv`: each level either the child's attribute or its full
    name). A level marked as a later call (`relu_1`) names the module itself; a level
    that names no module ends the walk there."""
    import ast

    scopes = {p.key: p.value for p in node.metadata_props}.get("pkg.torch.onnx.name_scopes")
    if scopes is not None:
        levels = ast.literal_eval(scopes)[:-1]  # the last is the node's own name
        known = [name for name in (_named(level, names) for level in levels) if name is not None]
        return known[-1] if known else None
    if not node.name.startswith("/"):
        return "" if "" in names else None
    return _walk_scope(node.name.split("/")[1:-1], names)


def _unmarked(level: str) -> list[str]:
    """A scope level as it is, then without its mark of a later call."""
    return list(dict.fromkeys([level, _LATER_CALL.sub("", level)]))


def _named(level: str, names: set[str]) -> str | None:
    """The module a dynamo exporter's scope level (a full name) names."""
    return next((name for name in _unmarked(level) if name in names), None)


def _child(parent: str, level: str, names: set[str]) -> str | None:
    """The module a TorchScript-based exporter's scope level names inside `parent`: by
    its attribute or by its full name."""
    for name in _unmarked(level):
        child = f"{parent}.{name}" if parent else name
        if child in names:
            return child
        if name in names and name.startswith(f"{parent}."):
            return name
    return None


def _walk_scope(levels: list[str], names: set[str]) -> str | None:
    found = ""
    for level in levels:
        child = _child(found, level, names)
        if child is None:
            break
        found = child
    return found if found in names else None


def last_nodes(owners: list[str | None], calls: dict[str, int]) -> dict[str, int]:
    """For each module (name -> how many times eager called it), the index of the node,
    in graph order, that gives the output of its first call: the last node exported
    from it or from a module inside it. Neither exporter tells a module's calls apart
    (the dynamo exporter gives a second call the same scope; the TorchScript-based one
    marks some of its levels only), so a module called more than once is judged only
    when its nodes form one unbroken run per call, its first call's output then ending
    the first run. A module called three times in a row, whose calls form one run that
    ends with the third call's output, is left out: its children are judged."""
    last: dict[str, int] = {}
    runs: dict[str, int] = {}
    previous: set[str] = set()
    for index, owner in enumerate(owners):
        if owner is None:
            continue
        scopes = {scope for scope in _enclosing(owner) if scope in calls}
        for scope in scopes:
            runs[scope] = runs.get(scope, 0) + (scope not in previous)
            if calls[scope] == 1 or runs[scope] == 1:
                last[scope] = index
        previous = scopes
    return {name: index for name, index in last.items()
            if calls[name] == 1 or runs[name] == calls[name]}


def _enclosing(module: str) -> set[str]:
    """The module and every module around it, the model itself ("") included."""
    parts = module.split(".") if module else []
    return {"", *(".".join(parts[:i]) for i in range(1, len(parts) + 1))}


def _run_with_outputs(subject, model, wanted: list[str], inputs) -> list:
    """The graph run once with these values as its outputs, in ONNX Runtime on the CPU
    without graph optimizations (which would fuse nodes away), fed as the ONNX runtimes
    feed it; a value that is not a tensor (a sequence) comes back empty."""
    import onnx
    import onnxruntime as ort

    from conformance.runtimes.onnx import OnnxCallable, SessionRecipe

    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted if n not in present)
    options = SessionRecipe(subject.artifact.file, "cpu", optimize=False, budget=None).options()
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return subject.state.run(OnnxCallable(
        names, lambda feeds: _tensors(session.run(wanted, feeds)), "cpu"), inputs)


def _tensors(values: list) -> list:
    """Each value that is not an array (a sequence) as an empty one: its module is then
    not compared, or agrees with an empty output."""
    import numpy as np

    return [value if isinstance(value, np.ndarray) else np.empty((0,), np.float64)
            for value in values]


def _node_error(subject, node, values: dict, call: ModuleCall) -> NodeError | None:
    """The error of the node's output that is eager's module output: the one output of
    the node with the shape and dtype of exactly one of eager's output tensors. None
    when none is."""
    from conformance.checks.subject import tensor_leaves

    leaves = tensor_leaves(call.output)
    for name in node.output:
        value = values.get(name)
        if value is None:
            continue
        like = [t for t in leaves if t.shape == value.shape and t.dtype == value.dtype]
        if len(like) == 1:
            return NodeError(node, *tolerance_units(value, like[0].cpu(),
                                                    subject.case.tolerance))
    return None


def tolerance_units(actual, expected, tolerance) -> tuple[float, float]:
    """The largest error of `actual` against `expected` in units of the error each
    element is allowed (compare's rule: NaN against a number, or infinities that
    differ, count as infinitely far), and the largest finite absolute error."""
    import torch

    a, e = actual.to(torch.float64), expected.to(torch.float64)
    diff = (a - e).abs()
    same = (a == e) | (a.isnan() & e.isnan())
    diff = torch.where(same, torch.zeros_like(diff), diff.nan_to_num(nan=float("inf")))
    allowed = allowed_error(e, tolerance_for(expected, tolerance))
    units = torch.where(diff == 0, torch.zeros_like(diff), diff / allowed)
    finite = diff[diff.isfinite()]
    max_abs = finite.max().item() if finite.numel() else 0.0
    return (units.max().item() if units.numel() else 0.0), max_abs


def first_jump(errors: list[float]) -> int | None:
    """The index of the first error beyond 1 (the tolerance) and at least JUMP times
    every error before it; None when there is none. Float32 noise grows through a
    network by small factors from one module to the next; a fault jumps."""
    worst = 0.0
    for index, error in enumerate(errors):
        if error > 1 and error >= JUMP * worst:
            return index
        worst = max(worst, error)
    return None
