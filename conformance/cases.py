"""Cases: the models under test, and the registry that holds them.

A case is data. Its builder and input factories are plain callables that the
suite calls after seeding the global RNG, so a case never has to seed itself
and two runs of the suite see the same weights and the same inputs.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from conformance.calling import Inputs, is_inputs
from conformance.spaces import TensorSpace, space_dims

# The inputs of a case inside the suite: one flat tuple (see conformance.calling).
FlatInputs = tuple

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.]*$")
# Words of the cell ids besides the paths and runtimes: the latency run's eager target
# and its check.
OTHER_RESERVED_WORDS = ("eager", "latency")


def reserved_words() -> tuple[str, ...]:
    """Words that name paths, runtimes and devices (each part of a hyphenated name too):
    a case name containing one would be selected by `-k trace` or `-k cpu` for every
    target. Read from the tables, so a new path reserves its own name."""
    from conformance.exporters.path import DEVICES
    from conformance.exporters.table import PATHS
    from conformance.runtimes.table import RUNTIMES

    names = [*PATHS, *RUNTIMES, *DEVICES, *OTHER_RESERVED_WORDS]
    return tuple(dict.fromkeys(part for name in names for part in name.split("-")))


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Elementwise rule: |actual - expected| <= atol * scale + rtol * |expected|.

    `scale` is max |expected| over the compared tensor (1 when it is all zero); see
    `conformance.checks.compare.allowed_error` for why.
    """

    rtol: float
    atol: float


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
    """One model under test.

    name: lowercase words joined by `_`; must not contain a path or runtime word.
    build: returns an `nn.Module` (set to eval mode by the suite) or a plain function.
    example: returns the example inputs: a tuple of positional inputs, a dict of keyword
        inputs, or `Inputs(*args, **kwargs)` for both. When `batch_sizes` is set it
        must accept `batch=N` and return inputs whose dim 0 is N. Inside the suite the
        inputs are one flat tuple, the positional ones and then the keyword ones in the
        order of the model's forward signature; `input_names` and `input_space` follow
        that order.
    probes: returns a list of further inputs (in the example's form) the artifact must
        agree with eager on: other values, inputs that take another branch, other sizes.
    batch_sizes: batch sizes other than the example's that the artifact must accept.
    tags: free words; each becomes a pytest marker (`-m "not slow"`).
        Tags the suite reads: `slow`, `control-flow`, `classifier`.
    tolerance: overrides the dtype default for this case.
    quantized_engine: the `torch.backends.quantized.engine` the model needs.
    seed: seeds building (seed), example inputs (seed + 1), the suite's new-values
        probe (seed + 2), `probes` (seed + 3), the batch-size probes (seed + 4),
        the batch-2 inputs the dynamo exporter sees when the example has batch 1
        (seed + 5) and the derived probes (seed + 6).
    input_names, output_names: the names an exported graph must give its inputs and
        (flattened) outputs; default `input_0, ...` for positional inputs, a keyword
        input's own name, and `output_0, ...`.
    input_space: per input, a `TensorSpace` (its shape with `Dim`s for the dynamic
        dimensions, and its value range) or None to keep the example's input. The
        exporters make the Dims dynamic, and the `agrees_on_drawn_inputs` check draws
        inputs from the space with Hypothesis. The example must lie in the space.
    skip_probes: derived probes (names in `conformance.checks.probes.DERIVED_PROBES` and
        `AIMED_PROBES`) the model cannot take, each with the reason. A derived probe
        on which eager raises is dropped anyway; skipping it saves the eager run and
        says why in the case itself.
    unsupported: export paths (names of `conformance.exporters.table.PATHS`) that cannot
        export the model, each with the reason: every cell of the path is expected to
        fail with the exporter's error (an expectation row, kept with the case), and a
        cell that passes fails instead, so the declaration goes when the path learns.
    requires: modules the case needs besides the suite's own dependencies (`transformers`,
        `timm`); where one does not import, every cell of the case skips, saying which
        and how to install it.
    deploy_imports: modules the place an artifact is deployed must import before loading
        it: a saved program whose outputs are a pytree type (a transformers `ModelOutput`)
        loads only where the module that registers the type was imported. The fresh
        process imports them, as that deployment would, and nothing else of the case;
        `package.module:function` also calls the function (one that registers types).
    """

    name: str
    build: Callable[[], Any]
    example: Callable[..., "Inputs | tuple | dict"]
    probes: Callable[[], Sequence["Inputs | tuple | dict"]] | None = None
    batch_sizes: tuple[int, ...] = ()
    tags: frozenset[str] = frozenset()
    tolerance: Tolerance | None = None
    quantized_engine: str | None = None
    seed: int = 0
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    input_space: tuple[TensorSpace | None, ...] = ()
    skip_probes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    unsupported: Mapping[str, str] = dataclasses.field(default_factory=dict)
    requires: tuple[str, ...] = ()
    deploy_imports: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "tags", frozenset(self.tags))
        object.__setattr__(self, "batch_sizes", tuple(self.batch_sizes))
        object.__setattr__(self, "input_names", tuple(self.input_names))
        object.__setattr__(self, "output_names", tuple(self.output_names))
        object.__setattr__(self, "input_space", tuple(self.input_space))
        object.__setattr__(self, "requires", tuple(self.requires))
        object.__setattr__(self, "deploy_imports", tuple(self.deploy_imports))
        problem = name_problem(self.name)
        if problem:
            raise ValueError(f"case name {self.name!r}: {problem}")
        if not callable(self.build) or not callable(self.example):
            raise TypeError(f"case {self.name!r}: build and example must be callables")
        object.__setattr__(self, "skip_probes", dict(self.skip_probes))
        object.__setattr__(self, "unsupported", dict(self.unsupported))
        problem = unsupported_problem(self.unsupported)
        if problem:
            raise ValueError(f"case {self.name!r}: unsupported: {problem}")
        problem = skip_probes_problem(self.skip_probes)
        if problem:
            raise ValueError(f"case {self.name!r}: skip_probes: {problem}")
        try:
            space_dims(self.input_space)
        except ValueError as exc:
            raise ValueError(f"case {self.name!r}: input_space: {exc}") from None

    @property
    def has_control_flow(self) -> bool:
        return "control-flow" in self.tags


def skip_probes_problem(skip: Mapping[str, str]) -> str | None:
    """What is wrong with a case's opt-outs of derived probes, or None."""
    from conformance.checks.probes import AIMED_PROBES, DERIVED_PROBES

    return reasons_problem(skip, {**DERIVED_PROBES, **AIMED_PROBES}, "a derived probe",
                           "why the model cannot take that input")


def unsupported_problem(unsupported: Mapping[str, str]) -> str | None:
    """What is wrong with a case's unsupported paths, or None."""
    from conformance.exporters.table import PATHS

    return reasons_problem(unsupported, PATHS, "an export path", "what the exporter cannot do")


def reasons_problem(reasons: Mapping[str, str], known, what: str, why: str) -> str | None:
    """Each name must be one of `known` and come with a reason."""
    for name, reason in reasons.items():
        if name not in known:
            return f"{name!r} is not {what}; they are {sorted(known)}"
        if not isinstance(reason, str) or not reason.strip():
            return f"{name!r} needs a reason ({why})"
    return None


def name_problem(name: str) -> str | None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        return "use lowercase letters, digits, '_' and '.'"
    for word in reserved_words():
        if word in name:
            return f"contains {word!r}, which `-k {word}` uses to select a path, runtime or device"
    return None


def random_inputs(*shapes: Sequence[int], scale: float = 1.0, offset: float = 0.0):
    """An `example` factory: one `randn(shape) * scale + offset` tensor per shape.

    The returned callable takes `batch=N` to replace dim 0 of every shape.
    """
    import torch

    def make(batch: int | None = None) -> FlatInputs:
        return tuple(
            torch.randn(*((batch,) + tuple(s[1:]) if batch else tuple(s))) * scale + offset
            for s in shapes
        )

    return make


def random_tokens(*shapes: Sequence[int], vocab: int):
    """An `example` factory of integer inputs: one int64 tensor of ids in [0, vocab) per
    shape (token ids; `vocab=2` makes a mask of 0s and 1s). Takes `batch=N` like
    `random_inputs`."""
    import torch

    if vocab < 1:
        raise ValueError(f"random_tokens: vocab must be at least 1, got {vocab}")

    def make(batch: int | None = None) -> FlatInputs:
        return tuple(torch.randint(0, vocab, (batch,) + tuple(s[1:]) if batch else tuple(s))
                     for s in shapes)

    return make


class CaseError(Exception):
    """A case, or a module of cases, cannot be used; the message says why."""


BUILTIN_ORIGIN = "conformance.fixtures"


class Registry:
    """Cases by name, in the order they were added."""

    def __init__(self, cases: Iterable[Case] = ()):
        self._cases: dict[str, Case] = {}
        self._origin: dict[str, str] = {}
        self.shadowed: dict[str, str] = {}  # built-in case names a user's case took over
        self.extend(cases, origin="<init>")

    def add(self, case: Case, origin: str = "<unknown>") -> None:
        """Add a case. A user's case replaces a built-in case of the same name (the user
        asked for theirs; `shadowed` keeps the notice); any other clash is an error."""
        if not isinstance(case, Case):
            raise CaseError(f"{origin}: expected a conformance.Case, got {type(case).__name__}")
        if case.name in self._cases and self._origin[case.name] != BUILTIN_ORIGIN:
            raise CaseError(
                f"{origin}: case {case.name!r} is already defined by {self._origin[case.name]}")
        if case.name in self._cases:
            self.shadowed[case.name] = origin
        self._cases[case.name] = case
        self._origin[case.name] = origin

    def extend(self, cases: Iterable[Case], origin: str) -> None:
        for case in cases:
            self.add(case, origin)

    def __getitem__(self, name: str) -> Case:
        return self._cases[name]

    def __contains__(self, name: str) -> bool:
        return name in self._cases

    def __iter__(self):
        return iter(self._cases.values())

    def __len__(self) -> int:
        return len(self._cases)

    def names(self) -> list[str]:
        return list(self._cases)


def build_registry(builtin: bool, user_cases: Iterable[tuple[str, list[Case]]]) -> Registry:
    """The built-in cases (imported here, on first need) and the users' own."""
    registry = Registry()
    if builtin:
        from conformance.fixtures import BUILTIN_CASES

        registry.extend(BUILTIN_CASES, origin=BUILTIN_ORIGIN)
    for origin, cases in user_cases:
        registry.extend(cases, origin=origin)
    return registry


def example_problem(case: Case) -> str | None:
    """What is wrong with what the case's `example` returns, or None: a tuple (or list)
    of positional inputs, a dict of keyword inputs, or `Inputs` for both. A bare tensor
    would be spread row by row. Calls the factory once, seeded."""
    import torch

    if missing_requirements(case):  # the example may need what is missing
        return None
    torch.manual_seed(case.seed + 1)
    try:
        inputs = case.example()
    except Exception:  # the cells report it, as eager's own failure on the example
        return None
    if is_inputs(inputs):
        return None
    return (f"case {case.name!r}: example() returned a {type(inputs).__name__}; it must "
            "return a tuple of the model's positional inputs, a dict of its keyword inputs "
            "or conformance.Inputs(*args, **kwargs), e.g. "
            "`example=lambda: (torch.randn(2, 4),)` or `example=random_inputs((2, 4))`")


def missing_requirements(case: Any) -> list[str]:
    """The modules of `case.requires` that are not installed (a generated family, which
    is no Case, requires nothing)."""
    return [name for name in getattr(case, "requires", ()) if not _importable(name)]


@functools.lru_cache(maxsize=None)  # asked for every cell of a case
def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a dotted name whose package is missing
        return False


# Modules that built-in cases require, and the extra of the suite that installs them.
EXTRAS = {"transformers": "families", "timm": "families"}


def requirement_hint(modules: Sequence[str]) -> str:
    """How to install modules a case requires."""
    extras = sorted({EXTRAS[m] for m in modules if m in EXTRAS})
    others = [m for m in modules if m not in EXTRAS]
    ways = [f"pip install 'conformance[{e}]' (`make suite` installs it)" for e in extras]
    ways += [f"pip install {' '.join(others)}"] if others else []
    return " and ".join(ways)


def load_cases_module(spec: str) -> tuple[str, list[Case]]:
    """Import a user's cases from a file path or a module name.

    The module must define `CASES`, a list of `conformance.Case`. Returns a
    description of where they came from and the cases. Raises CaseError with
    a message that names the module and the problem.
    """
    module = _import_spec(spec)
    cases = getattr(module, "CASES", None)
    if cases is None:
        raise CaseError(f"--cases {spec}: the module defines no CASES list "
                        "(CASES = [conformance.Case(...), ...])")
    if isinstance(cases, Case) or not isinstance(cases, (list, tuple)):
        raise CaseError(f"--cases {spec}: CASES must be a list of conformance.Case, "
                        f"got {type(cases).__name__}")
    for index, case in enumerate(cases):
        if not isinstance(case, Case):
            raise CaseError(f"--cases {spec}: CASES[{index}] is a {type(case).__name__}, "
                            "not a conformance.Case")
        problem = example_problem(case)
        if problem:
            raise CaseError(f"--cases {spec}: {problem}")
    return getattr(module, "__file__", spec) or spec, list(cases)


def _import_spec(spec: str):
    path = Path(spec)
    try:
        if spec.endswith(".py") or path.exists():
            if not path.is_file():
                raise CaseError(f"--cases {spec}: no such file")
            return _import_file(path)
        return importlib.import_module(spec)
    except CaseError:
        raise
    except Exception as exc:  # the user's module raised while importing
        raise CaseError(f"--cases {spec}: importing it raised "
                        f"{type(exc).__name__}: {exc}") from exc


def _import_file(path: Path):
    return import_file_as(path, "conformance_user_cases_" + re.sub(r"\W", "_",
                                                                   path.resolve().stem))


def import_file_as(path: Path, name: str):
    """Import a .py file as module `name`, kept in sys.modules."""
    spec = importlib.util.spec_from_file_location(name, Path(path).resolve())
    module = importlib.util.module_from_spec(spec)
    # TorchScript needs the source of scripted functions: keep the module findable.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
