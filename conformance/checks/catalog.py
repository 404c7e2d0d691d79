"""Checks: each one property of a (case, target), as a small named function.

A check takes a `Subject`, returns a dict of metrics when the property holds,
and raises `CheckFailure` with a message that explains the failure otherwise.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from conformance.calling import call as call_with
from conformance.checks.compare import Comparison, compare
from conformance.checks.subject import EagerFailed, Subject, tensor_leaves
from conformance.checks.time_limit import TimedOut, TimeLimitExceeded, time_limit
from conformance.exporters.artifact import ExportError
from conformance.exporters.path import ARTIFACT_CHECKS
from conformance.exporters.pt2 import unregistered_type_hint
from conformance.messages import first_lines, head_and_cause
from conformance.runtimes.fresh_process import to_cpu
from conformance.runtimes.loaders import allow_recompiles, copy_inputs, recompile_limit_hint
from conformance.runtimes.process import ProcessError
from conformance.runtimes.table import RUNTIMES
from conformance.targets import Target, loader_name, path_row, targets_for

# What kind of failure a check met, in the words expectation rows use (`kind = ...`).
FAILURE_KINDS = {
    "export-error": "the path's exporter raised",
    "runtime-error": "loading or running the artifact raised",
    "crash": "a helper process (the fresh process, the libtorch harness) died",
    "timeout": "the cell, a helper process or eager itself ran past its time limit",
    "mismatch": "the artifact's outputs (or inputs after the call) differ from eager's",
    "property": "the check's own property does not hold (no branch node, a graph break, "
                "an invalid graph, other input names)",
    "eager-error": "eager PyTorch itself raised or hung on the case's inputs",
    "inconclusive": "a property search ran fewer examples than its profile's minimum",
}


class CheckFailure(AssertionError):
    """The property does not hold; `metrics` carries what was measured, `kind` which
    of FAILURE_KINDS the failure is."""

    def __init__(self, message: str, metrics: dict | None = None, kind: str = "mismatch"):
        super().__init__(message)
        self.metrics = metrics or {}
        self.kind = kind


def fail(subject: Subject, check: str, what: str, details: str = "",
         metrics: dict | None = None, kind: str = "mismatch"):
    raise CheckFailure(failure_message(subject, check, what, details), metrics, kind)


def failure_message(subject: Subject, check: str, what: str, details: str = "") -> str:
    """What `fail` says: the cell and what failed, the details indented, and the command
    that reproduces the cell."""
    lines = [f"case {subject.case.name}, target {subject.target.id}, check {check}: {what}"]
    if details:
        lines += ["  " + line for line in details.splitlines()]
    if subject.reproduce:
        lines.append(f"  reproduce: {subject.reproduce}")
    return "\n".join(lines)


def run_or_fail(subject: Subject, check: str, what: str, action: Callable[[], Any]) -> Any:
    """Run a step of a check; an exporter or runtime error becomes a CheckFailure."""
    try:
        return action()
    except CheckFailure:
        raise
    except EagerFailed as exc:
        fail(subject, check, str(exc).splitlines()[0], "\n".join(str(exc).splitlines()[1:]),
             kind="eager-error")
    except TimedOut as exc:
        fail(subject, check, f"{what}: {exc}", kind="timeout")
    except ExportError as exc:
        fail(subject, check, "the path could not export the model", str(exc),
             kind="export-error")
    except ProcessError as exc:  # the fresh process or the libtorch harness
        fail(subject, check, f"{what} failed in {exc.where}", _with_hint(str(exc)),
             kind=exc.kind)
    except Exception as exc:  # any runtime error is this cell's failure, not the session's
        fail(subject, check, f"{what} raised {type(exc).__name__}",
             _with_hint(head_and_cause(exc, 8)), kind="runtime-error")


def _with_hint(text: str) -> str:
    """An error's text, and what to do about it where the suite knows."""
    hint = unregistered_type_hint(text) or recompile_limit_hint(text)
    return f"{text}\n{hint}" if hint else text




def _compare(subject: Subject, actual: Any, expected: Any) -> Comparison:
    topk = 5 if "classifier" in subject.case.tags else None
    return compare(actual, expected, subject.case.tolerance, topk=topk)


def _diverged(subject: Subject, check: str, what: str, result: Comparison, inputs,
              expected: Any, reference: Any = None) -> None:
    """Fail with the comparison and what explains it: the runtime's second opinion, the
    first module where the artifact diverges, how far eager float32 is from `reference`
    (the model in float64, when it was run), and what the export warned it froze. The
    first divergence is looked for last, with what is left of the cell's time limit
    then: it cannot starve the other notes of the time to tell the mismatch."""
    warned = _tracer_warnings(subject)
    notes = [_second_opinion(subject, inputs, result, expected),
             _float64_opinion(subject, inputs, result, reference), _warned(warned)]
    where, diverges_at = _localised(subject, inputs, failure_message(
        subject, check, what, _details(result, notes)))
    notes.insert(1, where)  # after the second opinion, whose blame it narrows down
    fail(subject, check, what, _details(result, notes),
         {**result.metrics(), **diverges_at, **({"tracer_warnings": warned} if warned else {})})


def _details(result: Comparison, notes: list[str]) -> str:
    return "\n".join([result.summary(), *(note for note in notes if note)])


def _localised(subject: Subject, inputs, message: str) -> tuple[str, dict]:
    """The first submodule or ONNX node whose outputs differ from eager's on these
    inputs (conformance.checks.localise): its note line and the `diverges_at` metric;
    nothing where the failure, with `message`, is not to be localised (`wanted`)."""
    from conformance.checks import localise

    if not localise.wanted(subject, message):
        return "", {}
    return localise.localise(subject, inputs)


def _tracer_warnings(subject) -> list[str]:
    """What the export warned it froze of the example (a family's subject has none)."""
    return subject.tracer_warnings() if hasattr(subject, "tracer_warnings") else []


def _warned(warned: list[str]) -> str:
    if not warned:
        return ""
    return "\n".join(["the export warned that it froze something of the example:",
                      *(f"  {w}" for w in warned[:4])])


def _warnings_metric(subject: Subject) -> dict:
    warned = _tracer_warnings(subject)
    return {"tracer_warnings": warned} if warned else {}


def _float64_opinion(subject: Subject, inputs, result: Comparison, reference: Any) -> str:
    """How far eager float32 itself is from eager float64 on these inputs: an artifact
    error of that size is float32 noise, one far above it is not."""
    if result.structural_problems or reference is None:
        return ""
    noise = float32_noise(subject.state, inputs, reference)
    if noise is None:
        return ""
    return (f"eager float32 itself differs from eager float64 by max abs {noise.max_abs:.3g}"
            f" (max rel {noise.max_rel:.3g}) on this input; the artifact's max abs error is "
            f"{result.max_abs:.3g}, {_ratio(result.max_abs, noise.max_abs)}")


def _ratio(error: float, noise: float) -> str:
    if noise <= 0:
        return "where float32 has no error at all"
    return f"{error / noise:.3g} times float32's own"


def float64_reference(state, inputs) -> Any:
    """The eager model run in float64 on these inputs (floating inputs widened), or None
    for a model that cannot be widened (scripted, a plain function, quantized)."""
    import copy

    import torch

    model = state.model
    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
        return None
    wide_inputs = tuple(v.double() if torch.is_tensor(v) and v.is_floating_point() else v
                        for v in inputs)
    try:
        return state.run(copy.deepcopy(model).double(), wide_inputs)
    except Exception:  # no float64 opinion then: the mismatch stands as it is
        return None


def float32_noise(state, inputs, reference: Any) -> Comparison | None:
    """Eager's outputs compared, under the case's tolerance, with `reference`, the model
    run in float64, rounded back to eager's dtypes: what float32 itself gets wrong."""
    import torch
    from torch.utils import _pytree

    narrow = state.run(state.model, inputs)
    leaves, spec = _pytree.tree_flatten(reference)
    dtypes = [v.dtype if torch.is_tensor(v) else None for v in _pytree.tree_leaves(narrow)]
    if len(dtypes) != len(leaves):
        return None
    rounded = [v.to(d) if torch.is_tensor(v) and d is not None and v.is_floating_point() else v
               for v, d in zip(leaves, dtypes)]
    return compare(narrow, _pytree.tree_unflatten(rounded, spec), state.case.tolerance)


def right_by_float64(subject: Subject, actual, expected, reference: Any, derived: bool,
                     result: Comparison) -> bool:
    """Whether every element where the artifact misses eager float32 is right all the
    same: within tolerance of `reference`, the model run in float64 (the artifact is
    closer to the exact answer than eager is: a sum that cancels to zero), or, on a probe
    the suite derived, an element where eager float32 itself misses float64 (near-tied
    logits whose argmax float32 cannot decide). Judged element by element: a probe is
    never excused as a whole, nor another structure, shape or dtype."""
    from conformance.checks.compare import element_misses

    if result.structural_problems or reference is None:
        return False
    triples = list(zip(tensor_leaves(actual), tensor_leaves(expected),
                       tensor_leaves(subject.expected(reference))))
    if len(triples) != len(tensor_leaves(expected)):
        return False
    # Every element the comparison counted must be judged here: a tensor held where the
    # leaves do not reach (an object's attribute) would otherwise be excused unseen.
    if sum(e.numel() for _, e, _ in triples) != result.total:
        return False
    tolerance = subject.case.tolerance
    for a, e, r in triples:
        misses = element_misses(a, e, tolerance)
        if misses is None:  # shapes differ: no element is right
            return False
        excused = ~element_misses(a, r, tolerance, like=e)
        if derived:
            excused |= element_misses(e, r, tolerance, like=e)
        if (misses & ~excused).any():
            return False
    return True


def _judge_mismatch(subject: Subject, check: str, what: str, result: Comparison, inputs,
                    actual, expected, derived: bool = False) -> bool:
    """A mismatch against eager: True when float64 shows the artifact right (see
    `right_by_float64`), else the check fails with the comparison explained. The model
    runs in float64 once for both."""
    reference = None if result.structural_problems else \
        float64_reference(subject.state, inputs)
    if right_by_float64(subject, actual, expected, reference, derived, result):
        return True
    _diverged(subject, check, what, result, inputs, expected, reference)


# A runtime's second opinion: the same artifact run with less machinery. When it
# agrees with eager, the mismatch comes from the machinery left out; when it differs too,
# its own second opinion, if it has one, is asked in turn.
@dataclasses.dataclass(frozen=True)
class Opinion:
    runtime: str
    who: str
    blamed: str      # where the mismatch comes from when `who` matches eager
    not_blamed: str  # what it says when `who` differs too, and nobody is asked after it
    # asked only where its own cells run (a slow runtime: the small cases, on the CPU)
    where_its_cells_run: bool = False


_GRAPH_WRONG = "the exported graph itself computes something else"
SECOND_OPINIONS = {
    "onnxruntime": Opinion("onnxruntime-noopt", "with graph optimizations disabled ONNX Runtime",
                           "ONNX Runtime's graph optimizer, not from the exported graph",
                           _GRAPH_WRONG),
    "onnxruntime-tuned": Opinion("onnxruntime-noopt",
                                 "with graph optimizations disabled ONNX Runtime",
                                 "ONNX Runtime's graph optimizer (the saved optimized model), "
                                 "not from the exported graph", _GRAPH_WRONG),
    # ONNX's specification, computed as written in numpy
    "onnxruntime-noopt": Opinion("onnx-reference", "the ONNX reference evaluator",
                                 "ONNX Runtime's kernels, not from the exported graph, which "
                                 "computes eager's result by the ONNX specification",
                                 _GRAPH_WRONG, where_its_cells_run=True),
    "inductor": Opinion("aot_eager",
                        "the aot_eager backend (the same captured graphs on eager kernels)",
                        "Inductor's code generation, not from graph capture",
                        "graph capture (Dynamo or AOTAutograd) already computes something else"),
}


def _second_opinion(subject: Subject, inputs, result: Comparison, expected: Any) -> str:
    """Does the mismatch go away with the runtime's machinery left out?"""
    if result.structural_problems:
        return ""
    said = _opinion_of(subject, subject.target.runtime, inputs, expected)
    return said[0] if said else ""


def _opinion_of(subject: Subject, runtime: str, inputs,
                expected: Any) -> tuple[str, bool | None] | None:
    """What the runtime's second opinion says, and whether it matched eager (None: it
    could not be asked); None where the runtime has no second opinion."""
    opinion = SECOND_OPINIONS.get(runtime)
    if opinion is None or (opinion.where_its_cells_run and dataclasses.replace(
            subject.target, runtime=opinion.runtime) not in targets_for(subject.case.tags)):
        return None
    try:
        again = _rerun(subject, opinion.runtime, inputs, expected)
    except Exception as exc:  # the blame is a hint; its own failure must not hide the verdict
        return f"(could not rerun with {opinion.runtime}: {type(exc).__name__}: {exc})", None
    if again.ok:
        return f"{opinion.who} matches eager: the mismatch comes from {opinion.blamed}", True
    further = _opinion_of(subject, opinion.runtime, inputs, expected)
    if further is None or further[1] is None:
        return f"{opinion.who} still differs from eager: {opinion.not_blamed}", False
    return (f"{opinion.who} still differs from eager, {'but' if further[1] else 'and'} "
            f"{further[0]}"), False


def _rerun(subject: Subject, runtime: str, inputs, expected: Any) -> Comparison:
    """The target's artifact run in another runtime, compared with eager. The same loaded
    artifact that runtime's own cells use: loaded once."""
    other = dataclasses.replace(subject.target, runtime=runtime)
    return _compare(subject, subject.state.run(subject.state.loaded(other), inputs), expected)


def matches_eager(subject: Subject) -> dict:
    """The artifact's outputs on the example inputs match eager's."""
    expected = run_or_fail(subject, "matches_eager", "eager", subject.eager_example)
    actual = run_or_fail(subject, "matches_eager", "running the artifact on the example",
                         lambda: subject.run_artifact(subject.state.example, timed=True))
    result = _compare(subject, actual, expected)
    judged = not result.ok and _judge_mismatch(
        subject, "matches_eager", "the artifact's outputs differ from eager on the example "
        "inputs", result, subject.state.example, actual, expected)
    return {**result.metrics(), "right_by_float64": judged, **_warnings_metric(subject)}


def generalizes(subject: Subject) -> dict:
    """The artifact agrees with eager on every probe: other values, branches, sizes, and
    the probes the suite derives from the example (signs, magnitudes, shifts, zeros,
    another distribution, another batch)."""
    worst: dict = {}
    ran, not_run, judged = [], {}, {}
    run_or_fail(subject, "generalizes", "exporting", lambda: subject.artifact)
    for probe in run_or_fail(subject, "generalizes", "making probes", lambda: subject.probes):
        if not subject.takes(probe):
            not_run[probe.label] = "the artifact was exported with these sizes static"
            continue
        expected = run_or_fail(subject, "generalizes", f"eager on the {probe.label}",
                               lambda: subject.eager_probe(probe))
        actual = run_or_fail(subject, "generalizes",
                             f"running the artifact on the {probe.label}",
                             lambda: subject.run_artifact(probe.inputs))
        result = _compare(subject, actual, expected)
        if not result.ok and _judge_mismatch(
                subject, "generalizes", f"the {subject.target.path_id} artifact diverges from "
                f"eager on the probe input ({probe.label})", result, probe.inputs, actual,
                expected, derived=bool(probe.derived)):
            judged[probe.label] = result.metrics()["max_abs"]
            continue
        worst = _worse(worst, result.metrics())
        ran.append(probe.label)
    return {**worst, "probes": ran, "probes_not_run": not_run,
            # probe -> the max abs error against eager float32, right against float64
            "probes_right_by_float64": judged,
            "probes_eager_rejects": dict(subject.state.dropped_probes),
            **_warnings_metric(subject)}


def mutates_like_eager(subject: Subject) -> dict:
    """After a call on the example, the inputs hold what eager leaves in them: a model
    that writes into its inputs must do so in the artifact too, and one that does not
    must not start to."""
    state = subject.state
    eager = run_or_fail(subject, "mutates_like_eager", "eager",
                        lambda: state.eager_run("example", state.example))
    call = run_or_fail(subject, "mutates_like_eager", "running the artifact on the example",
                       lambda: state.call(subject.loaded, state.example))
    result = _compare(subject, call.inputs_after, eager.inputs_after)
    if not result.ok:
        changed = "writes into" if _changed(state.example, eager.inputs_after) else "leaves"
        fail(subject, "mutates_like_eager", f"the inputs after a call differ from eager's "
             f"(eager {changed} its inputs)", result.summary().replace("output", "input"),
             result.metrics())
    return {**result.metrics(), "eager_mutates": _changed(state.example, eager.inputs_after)}


def _changed(before, after) -> bool:
    return not compare(after, before, None).ok


def agrees_on_drawn_inputs(subject: Subject) -> dict:
    """The artifact agrees with eager on inputs Hypothesis draws from the case's input
    space: every size within each Dim's range, values from zeros to the range's ends.
    A failing input is shrunk to the smallest one Hypothesis can find."""
    from conformance import spaces
    check, state, space = "agrees_on_drawn_inputs", subject.state, subject.case.input_space
    problem = run_or_fail(subject, check, "making the example",
                          lambda: spaces.example_problem(space, state.example))
    if problem:
        fail(subject, check, "the case's example lies outside its input space", problem)
    run_or_fail(subject, check, "exporting and loading", lambda: subject.loaded)

    def inputs_of(drawn):
        return state.to_device(drawn.tensors(space, state.example))

    if path_row(subject.target.path).inductor:
        subject = dataclasses.replace(subject, search=subject.search.with_more_time(
            COMPILED_SEARCH_TIME))
    result = _search(subject, spaces.drawn_inputs(space),
                     lambda drawn: _disagreement(subject, inputs_of(drawn)))
    if result.failure:
        drawn = result.minimal
        _found(subject, check, result, "the artifact differs from eager on an input drawn "
               f"from the case's input space ({drawn.describe()})", drawn.code(space),
               _blame(subject, inputs_of(drawn)))
    _conclusive(subject, check, result)
    return {**result.metrics(), "search": subject.search.describe()}


# torch.compile and AOTInductor compile anew for the first sizes a search draws (about
# 30 s each for resnet18 on two cores, before Dynamo marks the sizes dynamic): their
# drawn-input searches get this many times the profile's searching time, so that they
# reach the profile's minimum of examples whether or not the machine is busy.
COMPILED_SEARCH_TIME = 3


def _conclusive(subject: Subject, check: str, result) -> None:
    """A search whose time ran out before its profile's minimum proves nothing."""
    minimum = subject.search.profile.min_examples
    if result.examples < minimum:
        fail(subject, check, f"inconclusive: the search ran {result.examples} example(s) of "
             f"the {minimum} its profile needs at least, before its time ran out",
             f"search: {subject.search.describe()}; a faster target or a profile with more "
             "time per cell would finish it", {**result.metrics(),
                                               "search": subject.search.describe()},
             kind="inconclusive")


def generated_models(subject) -> dict:
    """Every model a family draws (conformance.checks.families) matches eager through the target,
    on its example and its probes. A failing model is shrunk to the smallest one found;
    its source is the reproduction. `subject` is a FamilySubject."""
    result = _search(subject, subject.family.strategy(subject.target), subject.failure_of)
    if result.failure:
        model = result.minimal
        _found(subject, "generated_models", result, f"a generated model fails through "
               f"{subject.target.id} ({model.describe()})", model.source())
    _conclusive(subject, "generated_models", result)
    return {**result.metrics(), "search": subject.search.describe()}


def _search(subject: Subject, strategy, failure_of):
    from conformance.checks.property_search import search

    return search(strategy, failure_of, repr, subject.search)


class _EagerRejects(Exception):
    """The model itself raised on inputs of its input space."""


def _compare_on(subject: Subject, inputs) -> tuple[Comparison, Any]:
    """The artifact against eager on these inputs: the comparison and eager's outputs."""
    try:
        expected = subject.expected(subject.state.run(subject.state.model, inputs))
    except Exception as exc:
        raise _EagerRejects(f"{type(exc).__name__}: {first_lines(exc, 3)}") from exc
    return _compare(subject, subject.run_artifact(inputs), expected), expected


def _disagreement(subject: Subject, inputs) -> str | None:
    """What goes wrong when the artifact and eager run on these inputs, or None."""
    try:
        result, _ = _compare_on(subject, inputs)
    except _EagerRejects as exc:  # the space holds inputs the model itself rejects
        return f"eager raised {exc}: the input space holds inputs the model rejects"
    except Exception as exc:  # an artifact that refuses a declared input fails the property
        return f"the artifact raised {type(exc).__name__}: {_with_hint(first_lines(exc, 4))}"
    return None if result.ok else result.summary()


def _blame(subject: Subject, inputs) -> str:
    """The runtime's second opinion on the minimal input, when it has one."""
    try:
        result, expected = _compare_on(subject, inputs)
    except Exception:  # the failure itself is already described
        return ""
    return "" if result.ok else _second_opinion(subject, inputs, result, expected)


def _found(subject: Subject, check: str, result, what: str, reproduction: str,
           blame: str = "") -> None:
    """Fail with the minimal example, its reproduction and the search that found it."""
    found = (f"Hypothesis ran {result.examples} example(s), shrinking included "
             f"({subject.search.describe()}), and shrank the failure to:")
    details = "\n".join([found, *("  " + line for line in reproduction.splitlines()),
                         result.failure] + ([blame] if blame else []))
    again = subject.reproduce and subject.reproduce + subject.search.reproduce_options()
    fail(dataclasses.replace(subject, reproduce=again), check, what, details,
         {**result.metrics(), "reproduction": reproduction, "failure": result.failure,
          "search": subject.search.describe()}, kind=_search_failure_kind(subject, result))


def _search_failure_kind(subject, result) -> str:
    """The kind of the minimal failure: a family remembers its cells' kinds; a drawn
    input's failure says whether the artifact or eager raised."""
    known = getattr(subject, "failure_kinds", {})
    if result.failure in known:
        return known[result.failure]
    if result.failure.startswith("the artifact raised"):
        return "runtime-error"
    if result.failure.startswith("eager raised"):
        return "eager-error"
    return "mismatch"


def _worse(a: dict, b: dict) -> dict:
    return b if not a or b.get("max_abs", 0) > a.get("max_abs", 0) else a


def fresh_process(subject: Subject) -> dict:
    """The saved artifact, loaded in a process that never saw the model, gives the same outputs."""
    state = subject.state
    in_process = run_or_fail(subject, "fresh_process", "running the artifact in this process",
                             lambda: subject.run_artifact(state.example))
    fresh, timings = run_or_fail(
        subject, "fresh_process", "loading and running the saved artifact",
        lambda: subject.fresh_process.run(loader_name(subject.target), subject.artifact.file,
                                   state.example, state.device, subject.case.quantized_engine,
                                   state.keywords, subject.case.deploy_imports))
    result = _compare(subject, fresh, to_cpu(in_process))
    if not result.ok:
        fail(subject, "fresh_process", "the saved artifact gives other outputs in a fresh "
             "process than in the exporting one", result.summary(), result.metrics())
    return {**result.metrics(), **{f"fresh_{k}": v for k, v in timings.items()}}


def control_flow_nodes(subject: Subject):
    """The artifact graph's control-flow nodes (TorchScript: with calls inlined): all of
    them, and those whose condition depends on the model's inputs."""
    from conformance.checks.control_flow import control_flow, reads_loaded

    kind = path_row(subject.target.path).graph
    return control_flow(kind, subject.loaded if reads_loaded(kind) else subject.artifact.file)


def keeps_branches(subject: Subject) -> dict:
    """The artifact of a model with data-dependent control flow still has it: a node
    whose condition depends on the model's inputs (an `if` on a constant or an attribute,
    in a scripted helper of a trace, does not count)."""
    found = run_or_fail(subject, "keeps_branches", "reading the artifact's graph",
                        lambda: control_flow_nodes(subject))
    if not sum(found.dependent.values()):
        fail(subject, "keeps_branches", f"the {subject.target.path_id} artifact's graph has "
             "no control flow on the model's inputs: the eager model's data-dependent "
             "control flow was reduced to the single branch the example input took",
             found.describe(), {"all": dict(found.total)}, kind="property")
    return {**dict(found.dependent), "all": dict(found.total)}


def compiles_fullgraph(subject: Subject) -> dict:
    """torch.compile(fullgraph=True) accepts the model: Dynamo captures it as one graph.
    Records the graph breaks Dynamo finds without fullgraph, and the recompiles that
    the probes (new values, branches, batch sizes) cause."""
    state = subject.state
    explained = run_or_fail(subject, "compiles_fullgraph", "torch._dynamo.explain",
                            lambda: explain(state))
    metrics = {"graph_breaks": max(explained.graph_break_count, 0),
               "graphs": explained.graph_count}
    probes = run_or_fail(subject, "compiles_fullgraph", "making probes", lambda: state.probes)
    try:
        metrics["recompiles"] = count_recompiles(state, [p.inputs for p in probes])
    except Exception as exc:  # Dynamo's refusal names the construct it cannot capture
        fail(subject, "compiles_fullgraph", f"torch.compile(fullgraph=True) refuses the model "
             f"({metrics['graph_breaks']} graph break(s) without fullgraph, "
             f"{metrics['graphs']} graph(s) captured)",
             _break_reasons(explained) or first_lines(exc, 8), metrics, kind="property")
    return metrics


def _break_reasons(explained) -> str:
    return "\n".join(f"- {r.reason.strip().splitlines()[0]}" for r in explained.break_reasons[:5])


def explain(state):
    import torch

    torch._dynamo.reset()
    with state.context():
        return call_with(torch._dynamo.explain(state.model), copy_inputs(state.example),
                    state.keywords)


def count_recompiles(state, probe_inputs: list) -> int:
    """Compiles after the first, with fullgraph=True, over the example then the probes."""
    import torch

    # fullgraph=True raises at Dynamo's limit: the suite's own limit, not the default 8
    # that holds until a compile cell has run in this process
    allow_recompiles()
    compiles = 0

    def counting(graph, example_inputs):
        nonlocal compiles
        compiles += 1
        return graph.forward

    torch._dynamo.reset()
    compiled = torch.compile(state.model, backend=counting, fullgraph=True)
    for inputs in [state.example, *probe_inputs]:
        state.run(compiled, inputs)
    return compiles - 1


def graph_valid(subject: Subject) -> dict:
    """onnx.checker with full checking, and strict shape inference, accept the model."""
    import onnx

    file = run_or_fail(subject, "graph_valid", "exporting", lambda: subject.artifact.file)
    try:
        onnx.checker.check_model(str(file), full_check=True)
        inferred = onnx.shape_inference.infer_shapes(onnx.load(str(file)), check_type=True,
                                                     strict_mode=True)
    except Exception as exc:  # the checker's own message says what is malformed
        fail(subject, "graph_valid", f"the ONNX model is not valid: {type(exc).__name__}",
             first_lines(exc, 8), kind="property")
    return {"nodes": len(inferred.graph.node),
            "opset": next((o.version for o in inferred.opset_import if o.domain in ("", "ai.onnx")),
                          None)}


def io_names(subject: Subject) -> dict:
    """The graph's inputs and outputs carry the declared names, in order."""
    import onnx

    file = run_or_fail(subject, "io_names", "exporting", lambda: subject.artifact.file)
    options = subject.state.export_options(subject.target.path, subject.target.opset)
    graph = run_or_fail(subject, "io_names", "loading the ONNX model",
                        lambda: onnx.load(str(file), load_external_data=False).graph)
    initializers = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    outputs = [o.name for o in graph.output]
    problems = [f"{kind}: graph has {list(got)}, declared {list(want)}"
                for kind, got, want in (("inputs", inputs, options.input_names),
                                        ("outputs", outputs, options.output_names))
                if list(got) != list(want)]
    if problems:
        fail(subject, "io_names", "the graph's input or output names are not the declared ones",
             "\n".join(problems), kind="property")
    return {"inputs": inputs, "outputs": outputs}


CHECKS: dict[str, Callable[..., dict]] = {
    "graph_valid": graph_valid,
    "io_names": io_names,
    "matches_eager": matches_eager,
    "generalizes": generalizes,
    "agrees_on_drawn_inputs": agrees_on_drawn_inputs,
    "generated_models": generated_models,
    "fresh_process": fresh_process,
    "mutates_like_eager": mutates_like_eager,
    "keeps_branches": keeps_branches,
    "compiles_fullgraph": compiles_fullgraph,
    "serves_predictions": lambda subject: _serving().serves_predictions(subject),
}


def _serving():
    from conformance.checks import serving  # it imports this module

    return serving

def run_check(subject, check: str, seconds: float | None) -> dict:
    """One check of a cell, under the cell's time limit: a hang fails this cell with a
    message that names it, and the session goes on. Eager comes first: when it fails
    on any input of the case, every cell fails with that, at once."""
    try:
        with time_limit(seconds, f"check {check}"):
            if isinstance(subject, Subject):
                run_or_fail(subject, check, "eager", subject.state.check_eager)
            return CHECKS[check](subject)
    except TimeLimitExceeded as exc:
        fail(subject, check, f"the cell ran past its limit of {exc.seconds:g} s "
             "(--cell-timeout) and was stopped", "what it was doing: "
             + _where_it_stopped(exc), kind="timeout")


def _where_it_stopped(exc: BaseException) -> str:
    """The innermost frame of the traceback, which names the code that hung."""
    tb = exc.__traceback__
    while tb and tb.tb_next:
        tb = tb.tb_next
    if tb is None:
        return "unknown"
    code = tb.tb_frame.f_code
    return f"{code.co_name} ({code.co_filename}:{tb.tb_lineno})"


def applies(check: str, case, target: Target) -> bool:
    """Whether a check is a cell of the matrix for a case on a target. The checks of the
    artifact itself run once per artifact, on the runtime its path's row names."""
    row, runtime = path_row(target.path), RUNTIMES[target.runtime]
    if check in ARTIFACT_CHECKS:
        return (check in row.artifact_checks and target.runtime == row.artifact_checks_on
                and (check != "keeps_branches" or case.has_control_flow))
    if check == "fresh_process":  # an artifact loaded where it was exported
        return runtime.shares_exporting_process
    if check == "mutates_like_eager":  # runtimes that run on the caller's own tensors
        return runtime.calls_on_callers_tensors
    if check == "agrees_on_drawn_inputs":
        return bool(case.input_space)
    if check == "generated_models":  # the cells of a family, not of a case
        return False
    if check == "serves_predictions":  # the image endpoint of a served classifier
        return target.runtime == "serve" and "classifier" in case.tags and takes_an_image(case)
    return True


def takes_an_image(case) -> bool:
    """Whether the case's example is one batch of RGB images, [N, 3, H, W] in floats
    (asked of the served classifiers only, at collection)."""
    import torch

    try:
        example = case.example()
    except Exception:  # the cell would fail on it anyway, with the example's own error
        return False
    inputs = example if isinstance(example, tuple) else (example,)
    return (len(inputs) == 1 and isinstance(inputs[0], torch.Tensor) and inputs[0].ndim == 4
            and inputs[0].shape[1] == 3 and inputs[0].is_floating_point())
