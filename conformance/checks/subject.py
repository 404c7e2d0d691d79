"""What the suite builds for a case, once, and shares between its checks.

A `CaseState` holds one case on one device: the seeded eager model, its inputs,
the eager reference outputs, and the artifacts each path exported. A `Subject`
is that state seen through one target. Everything is computed on first use.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from conformance import calling, spaces, targets
from conformance.cases import Case, FlatInputs
from conformance.checks.compare import flatten
from conformance.checks.probes import Probe, aimed_probes, derived_probes, tracer_warnings
from conformance.checks.property_search import SearchSettings
from conformance.checks.time_limit import TimedOut, TimeLimitExceeded, time_limit
from conformance.exporters.artifact import (Artifact, ExportError, ExportOptions, cached_artifact,
                                            export, keep_failure, kept_failure)
from conformance.exporters.cache import artifact_key, artifact_lock
from conformance.messages import first_line, first_lines
from conformance.pruning import mark_used
from conformance.runtimes.loaders import copy_inputs, run
from conformance.runtimes.table import RUNTIMES
from conformance.targets import Target, flat_outputs, path_row

if TYPE_CHECKING:  # the fresh process knows nothing of subjects
    from conformance.expectations import Expectation
    from conformance.runtimes.fresh_process import FreshProcess


@dataclasses.dataclass
class Call:
    """What one call of a model or artifact gave: its outputs, and its own copy of the
    inputs as the call left them (a model may write into its inputs)."""

    outputs: Any
    inputs_after: FlatInputs


class EagerFailed(Exception):
    """Eager PyTorch itself raised or hung on one of the case's inputs: no cell of the
    case can be judged."""

    def __init__(self, case: str, label: str, error: str, timed_out: bool = False):
        what = "ran past its time limit (--eager-timeout)" if timed_out else "raised"
        super().__init__(f"eager PyTorch itself {what} on the {label}: {error}\n"
                         f"every cell of case {case} fails with this (eager runs once per "
                         "input); fix the case's model or inputs")
        self.label = label
        self.timed_out = timed_out


# How many loaded artifacts a case holds at once. A case's cells run target after target,
# and a loaded artifact holds its runtime's memory until it goes: ONNX Runtime keeps an
# arena as large as the model's largest activations in each session. The matches_eager
# and generalizes cells of srcnn's ONNX targets (768x768 outputs) peaked at 22.7 GB in one
# process with every load held, 12.6 GB with three, 10.3 GB with one, and took no longer.
# A check that asks a second opinion (see `catalog`) still holds its own load meanwhile.
KEEP_LOADED = 1


class CaseState:
    def __init__(self, case: Case, device: str, artifact_dir: Path, use_cache: bool = True,
                 harness: Callable[[], Any] | None = None, eager_timeout: float | None = None):
        self.case = case
        self.harness = harness  # gives the session's libtorch harness, started on first use
        self.device = device
        self.artifact_dir = Path(artifact_dir)
        self.use_cache = use_cache
        self.eager_timeout = eager_timeout
        self.timings: dict[str, float] = {}
        self.dropped_probes: dict[str, str] = {}  # derived probes eager rejects, and why
        self._memo: dict[Any, Any] = {}

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """Compute once; an exception is remembered and raised again."""
        if key not in self._memo:
            try:
                self._memo[key] = (True, compute())
            except Exception as exc:  # the same failure is reported by every check
                self._memo[key] = (False, exc)
            except TimeLimitExceeded as exc:  # a hang is not tried again by the next cell
                self._memo[key] = (False, TimedOut(exc))
                raise
        ok, value = self._memo[key]
        if not ok:
            raise value
        return value

    def peek(self, key: Any) -> Any:
        """What `memo` computed for `key`, or None: never computes."""
        ok, value = self._memo.get(key, (False, None))
        return value if ok else None

    @contextlib.contextmanager
    def context(self):
        """The global torch state the case needs: its quantized engine."""
        import torch

        engine = self.case.quantized_engine
        previous = torch.backends.quantized.engine
        if engine:
            torch.backends.quantized.engine = engine
        try:
            yield
        finally:
            torch.backends.quantized.engine = previous

    def seeded(self, offset: int, make: Callable[[], Any]) -> Any:
        import torch

        torch.manual_seed(self.case.seed + offset)
        with self.context():
            return make()

    @property
    def model(self) -> Any:
        return self.memo("model", self._build)

    def _build(self):
        started = time.perf_counter()
        model = self.seeded(0, self.case.build)
        if hasattr(model, "eval"):
            model = model.eval().to(self.device)
        self.timings["build_s"] = time.perf_counter() - started
        return model

    @property
    def example(self) -> FlatInputs:
        """The example, flat (see `conformance.calling`), on the device."""
        return self._example_and_keywords[0]

    @property
    def keywords(self) -> tuple[str, ...]:
        """The names of the keyword inputs: the last values of every flat input."""
        return self._example_and_keywords[1]

    @property
    def _example_and_keywords(self) -> tuple[FlatInputs, tuple[str, ...]]:
        def make():
            inputs, keywords = calling.flat(self.seeded(1, self.case.example),
                                            calling.parameter_names(self.model))
            return self.to_device(inputs), keywords
        return self.memo("example", make)

    def flat(self, label: str, value: Any) -> FlatInputs:
        """Other inputs of the case, in the example's form, flat; they must pass the same
        inputs by keyword as the example."""
        inputs, keywords = calling.flat(value, calling.parameter_names(self.model))
        if keywords != self.keywords:
            raise ValueError(f"case {self.case.name}: the {label} passes {list(keywords)} by "
                             f"keyword, the example {list(self.keywords)}; every input of a "
                             "case must take the example's form")
        return inputs

    @property
    def probes(self) -> list[Probe]:
        """Every probe of the case: its own, the declared batch sizes, and the derived
        ones that eager accepts (see `check_eager`)."""
        return self.memo("probes", self._valid_probes)

    def _made_probes(self) -> list[Probe]:
        label = "other values (example shapes, new seed)"
        made = [Probe(label, self.flat(label, self.seeded(2, self.case.example)))]
        if self.case.probes:
            declared = self.seeded(3, self.case.probes)
            labels = [f"case probe {i + 1} of {len(declared)}" for i in range(len(declared))]
            made += [Probe(label, self.flat(label, p)) for label, p in zip(labels, declared)]
        for batch in self.case.batch_sizes:
            label = f"batch size {batch}"
            made.append(Probe(label, self.flat(label, self.seeded(
                              4, lambda: self.case.example(batch=batch))),
                              resized=tuple((i, 0) for i, v in enumerate(self.example)
                                            if hasattr(v, "shape"))))
        made = [dataclasses.replace(p, inputs=self.to_device(p.inputs)) for p in made]
        return made + self.seeded(6, lambda: derived_probes(
            self.example, self.case.skip_probes, self.case.input_space))

    def _valid_probes(self) -> list[Probe]:
        return [probe for probe in self._made_probes() if self.accepted(probe)]

    def accepted(self, probe: Probe) -> bool:
        """Whether eager takes the probe. A derived probe eager rejects is dropped (the
        suite's guess was outside the model's domain); the case's own probes must run."""
        try:
            self.eager_run(probe.label, probe.inputs)
        except EagerFailed as exc:
            if not probe.derived or exc.timed_out:
                raise
            self.dropped_probes[probe.label] = first_line(exc)
            return False
        return True

    def check_eager(self) -> None:
        """Eager first: on the example and on every probe, once per case. Raises
        EagerFailed, remembered, so every cell of a broken case fails at once."""
        self.eager_run("example", self.example)
        self.probes  # noqa: B018  (computes and checks eager on each probe)

    def eager_run(self, label: str, inputs: FlatInputs) -> Call:
        """Eager's outputs, and its inputs after the call, on one input; computed once,
        under the eager time limit. Only the example's run is timed (the latency baseline)."""
        return self.memo(("eager", label), lambda: self._eager(label, inputs))

    def _eager(self, label: str, inputs: FlatInputs) -> Call:
        what = f"eager on the {label}"
        timing = "eager_s" if label == "example" else None
        try:
            with time_limit(self.eager_timeout, what):
                return self.call(self.model, inputs, timing)
        except TimeLimitExceeded as exc:
            if exc.what != what:  # an outer limit (the cell's): not eager's to judge
                raise
            raise EagerFailed(self.case.name, label, str(exc), timed_out=True) from None
        except Exception as exc:
            raise EagerFailed(self.case.name, label, f"{type(exc).__name__}: "
                              f"{first_lines(exc, 4)}") from exc

    def eager(self, label: str, inputs: FlatInputs) -> Any:
        """Eager's outputs on one input (see `eager_run`)."""
        return self.eager_run(label, inputs).outputs

    def call(self, fn: Callable, inputs: FlatInputs, timing: str | None = None) -> Call:
        """Run `fn` on its own copy of the inputs: eager and every artifact get fresh
        tensors, so a model that writes into its inputs cannot change another's."""
        own = copy_inputs(inputs)
        started = time.perf_counter()
        with self.context():
            outputs = run(fn, own, self.keywords)
        if timing:
            self.timings[timing] = time.perf_counter() - started
        return Call(outputs, own)

    def run(self, fn: Callable, inputs: FlatInputs, timing: str | None = None) -> Any:
        return self.call(fn, inputs, timing).outputs

    def artifact(self, path: str, opset: int | None = None) -> Artifact:
        return self.memo(("artifact", path, opset), lambda: self._export(path, opset))

    def export_options(self, path: str, opset: int | None) -> ExportOptions:
        row = path_row(path)
        positional = len(self.example) - len(self.keywords)
        inputs = self.case.input_names or (
            tuple(f"input_{i}" for i in range(positional)) + self.keywords)
        outputs = self.case.output_names or tuple(
            f"output_{i}" for i in range(len(tensor_leaves(self.eager("example", self.example)))))
        dims = self.dynamic_dims()
        # torch.export specializes a dimension whose example size is 1.
        batch_one = any(name == "batch" and self.example[index].shape[axis] == 1
                        for index, axis, name, _, _ in dims)
        return ExportOptions(opset=opset, input_names=inputs, output_names=outputs,
                                   keywords=self.keywords, dynamic_dims=dims,
                                   script_first=row.scripts_control_flow
                                   and self.case.has_control_flow,
                                   export_batch=2 if row.specializes_size_one and batch_one
                                   else None,
                                   inductor_threads=_inductor_threads() if row.bakes_threads
                                   else None)

    def dynamic_dims(self) -> tuple:
        """The Dims of the case's input space; else, with batch sizes, axis 0 of every tensor."""
        if self.case.input_space:
            return spaces.dynamic_dims(self.case.input_space)
        if not self.case.batch_sizes:
            return ()
        return tuple((index, 0, "batch", 1, None) for index, value in enumerate(self.example)
                     if hasattr(value, "shape"))

    def export_example(self, options: ExportOptions) -> FlatInputs:
        if options.export_batch is None:
            return self.example
        label = f"batch-{options.export_batch} export example"
        return self.memo(("export_example", options.export_batch), lambda: self.to_device(
            self.flat(label, self.seeded(5, lambda: self.case.example(batch=options.export_batch)))))

    def _export(self, path: str, opset: int | None) -> Artifact:
        row = path_row(path)
        if not row.saves_file:  # compiled when loaded; nothing is written
            return Artifact(path, None, 0.0, [])
        options = self.export_options(path, opset)
        key = self.memo(("key", path, opset), lambda: artifact_key(
            self.case, path, options, self.device, self.model, self.export_example(options)))
        file = self.artifact_dir / f"{self.case.name}-{path}-{key}{row.suffix}"
        with artifact_lock(file, enabled=self.use_cache):
            cached = cached_artifact(path, file) if self.use_cache else None
            failed = kept_failure(file) if self.use_cache and cached is None else None
            if cached is not None or failed is not None:
                mark_used(file)  # what pruning the cache keeps
            if cached is not None:
                return cached
            if failed is not None:
                raise failed
            try:
                return self._export_to(row, file, options, opset)
            except ExportError as error:
                if self.use_cache:
                    keep_failure(file, error)
                raise

    def _export_to(self, row, file: Path, options: ExportOptions,
                   opset: int | None) -> Artifact:
        with self.context():
            # The exporter runs the model: on a copy, which a model may write into.
            artifact = export(row.name, row.export, self.model,
                                    copy_inputs(self.export_example(options)), file,
                                    options)
        self.timings[f"export_{row.name}{opset or ''}_s"] = artifact.export_seconds
        return artifact

    def loaded(self, target: Target) -> Callable:
        """The target's artifact loaded in its runtime, once while the case's cells use
        it; the oldest loads go when more than KEEP_LOADED are held (see there)."""
        key = ("loaded", target)
        if key not in self._memo:
            self._let_go(keep=KEEP_LOADED - 1)
        return self.memo(key, lambda: self._load(target))

    def _loads(self, in_harness: bool) -> list:
        """The keys of the loads held, oldest first (a dict keeps its order of insertion)."""
        return [key for key in self._memo if isinstance(key, tuple) and key[0] == "loaded"
                and RUNTIMES[key[1].runtime].in_harness == in_harness]

    def _let_go(self, keep: int) -> None:
        """Drop all but the `keep` latest loads of this process; a load in the harness
        holds the harness's memory, not this process's, and stays until `close`."""
        loads = self._loads(in_harness=False)
        for key in loads[:max(0, len(loads) - keep)]:
            del self._memo[key]

    def _load(self, target: Target) -> Callable:
        if not path_row(target.path).saves_file:
            return self._compile(target)
        file = self.artifact(target.path, target.opset).file
        in_harness = RUNTIMES[target.runtime].in_harness
        harness = self.harness() if in_harness and self.harness else None
        if harness:  # its build and start are the session's cost, not this artifact's load
            harness.ensure_started()
            if harness.build and not harness.build.cached:
                self.timings.setdefault("harness_build_s", harness.build.seconds)
        self._prepare(target, file)
        started = time.perf_counter()
        with self.context():  # quantized TorchScript packs its weights for the engine at load
            loaded = targets.load(target, file, harness)
        self.timings[f"load_{target.path_id}_{target.runtime}_s"] = time.perf_counter() - started
        return loaded

    def _prepare(self, target: Target, file: Path) -> None:
        """What the runtime makes of the artifact before loading it, timed on its own."""
        prepare = RUNTIMES[target.runtime].prepare
        if prepare is None:
            return
        started = time.perf_counter()
        prepare(file, self.device)
        self.timings[f"prepare_{target.path_id}_{target.runtime}_s"] = (
            time.perf_counter() - started)

    def _compile(self, target: Target) -> Callable:
        """torch.compile is lazy: the first call on the example compiles, and is timed."""
        compiled = targets.compile(self.model, target)
        self.run(compiled, self.example, timing=targets.compile_timing(target))
        return compiled

    def close(self) -> None:
        """Let go of what lives outside this process: models loaded in the harness."""
        for key in self._loads(in_harness=True):
            ok, value = self._memo[key]
            if ok:
                value.close()

    def to_device(self, inputs: FlatInputs) -> FlatInputs:
        return tuple(i.to(self.device) if hasattr(i, "to") else i for i in inputs)


@dataclasses.dataclass
class Subject:
    """One case through one target: what a check looks at."""

    state: CaseState
    target: Target
    fresh_process: FreshProcess | None = None
    reproduce: str = ""
    search: SearchSettings = dataclasses.field(default_factory=SearchSettings)
    expectation: Expectation | None = None  # the cell's expectation row, when one applies
    localise: str = "unexpected"  # which mismatches are localised: see checks.localise.MODES

    @property
    def case(self) -> Case:
        return self.state.case

    @property
    def artifact(self) -> Artifact:
        return self.state.artifact(self.target.path, self.target.opset)

    @property
    def loaded(self) -> Callable:
        return self.state.loaded(self.target)

    @property
    def timings(self) -> dict:
        return dict(self.state.timings)

    def run_artifact(self, inputs: FlatInputs, timed: bool = False) -> Any:
        timing = f"run_{self.target.path_id}_{self.target.runtime}_s" if timed else None
        loaded = self.loaded
        outputs = self.state.run(loaded, inputs, timing)
        if timing and getattr(loaded, "last_run_s", None) is not None:
            # The harness's own clock: the file transfer is no part of the model's time.
            self.state.timings[timing] = loaded.last_run_s
        return outputs

    def artifact_summary(self) -> dict:
        """What a record says of the artifact; {} when there is none (eager, or an export
        that failed, which the check's message reports)."""
        if path_row(self.target.path) is None:  # eager's own latency cell
            return {}
        # Only what the check got to: exporting here would run outside every time limit.
        artifact = self.state.peek(("artifact", self.target.path, self.target.opset))
        if artifact is None:
            return {}
        return {"file": artifact.file.name if artifact.file else None, "cached": artifact.cached,
                "export_s": artifact.export_seconds, "warnings": artifact.warnings}

    def expected(self, eager_outputs: Any) -> Any:
        """Eager outputs as this target returns them: ONNX runtimes give a flat list."""
        if flat_outputs(self.target):
            return tensor_leaves(eager_outputs)
        return eager_outputs

    def eager_example(self) -> Any:
        return self.expected(self.state.eager("example", self.state.example))

    def eager_probe(self, probe: Probe) -> Any:
        return self.expected(self.state.eager(probe.label, probe.inputs))

    @property
    def probes(self) -> list[Probe]:
        """The case's probes, and for an artifact whose export warned that it froze
        something of its example (a trace's TracerWarnings), probes aimed at that."""
        warned = self.artifact.warnings if path_row(self.target.path).saves_file else []
        aimed = [p for p in aimed_probes(self.state.example, warned, self.case.skip_probes)
                 if self.state.accepted(p)]
        return self.state.probes + aimed

    def takes(self, probe: Probe) -> bool:
        """Whether the artifact is meant to take the probe's sizes: any size for the
        size-free paths, else only on the dims exported as dynamic."""
        if not probe.resized or path_row(self.target.path).takes_any_size:
            return True
        dynamic = {(index, axis) for index, axis, *_ in self.state.dynamic_dims()}
        return set(probe.resized) <= dynamic

    def tracer_warnings(self) -> list[str]:
        """What the export warned it froze of the example, for failure messages."""
        try:
            return tracer_warnings(self.artifact.warnings)
        except Exception:  # no artifact: the export failure is the message
            return []


def _inductor_threads() -> int:
    import torch

    return torch.get_num_threads()


def tensor_leaves(outputs: Any) -> list:
    """The tensors of nested outputs in the order exporters flatten them."""
    import torch

    return [leaf for _, leaf in flatten(outputs) if isinstance(leaf, torch.Tensor)]
