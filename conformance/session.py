"""The suite's state for one pytest session: cases, matrix, expectations, records."""
from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

from conformance import expectations as expect
from conformance.cases import Case, Registry, build_registry, load_cases_module
from conformance.checks.catalog import CHECKS, applies
from conformance.checks.families import FAMILIES, Family, FamilySubject, scratch_dir
from conformance.checks.property_search import SearchSettings
from conformance.checks.subject import CaseState, Subject
from conformance.layout import harness_build_dir
from conformance.runtimes import thread_budget
from conformance.runtimes.fresh_process import FreshProcess
from conformance.runtimes.libtorch import Harness
from conformance.targets import Target, targets_for
from conformance.versions import torch_release


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """One cell of the matrix: a check of a case through a target."""

    case: str
    target: Target
    check: str

    @property
    def id(self) -> str:
        return f"{self.case}-{self.target.id}-{self.check}"


@dataclasses.dataclass
class Options:
    cases: list[str]
    builtin_cases: bool
    expectation_files: list[Path]
    results: Path
    artifact_dir: Path | None
    artifact_cache: bool
    fresh_process_timeout: float
    required: list[str]
    harness_timeout: float = 600.0
    cell_timeout: float | None = 900.0
    eager_timeout: float | None = 300.0
    harness_build_dir: Path | None = None
    search: SearchSettings = dataclasses.field(default_factory=SearchSettings)
    localise: str = "unexpected"  # which mismatches are localised (--localise)


class ConformanceSession:
    def __init__(self, options: Options):
        self.options = options
        self.user_cases = [load_cases_module(spec) for spec in options.cases]
        # With user cases, build the registry now: a clash of names is a usage error.
        self._registry: Registry | None = self._load_registry() if self.user_cases else None
        rows = [row for file in options.expectation_files for row in expect.load_table(file)]
        self.expectations = expect.ExpectationTable(rows, torch_release())
        if self._registry is not None:
            self.expectations.put_first(expect.declared_rows(self._registry))
        # Without the cache, artifacts go to a directory of this session only,
        # removed at its end: a full matrix writes gigabytes.
        self._scratch = None if options.artifact_cache else tempfile.mkdtemp(prefix="conformance-")
        self.artifact_dir = Path(self._scratch) if self._scratch else options.artifact_dir
        self._fresh_process: FreshProcess | None = None
        self._harness: Harness | None = None
        self._state: CaseState | None = None
        self._generated_dir: Path | None = None
        # The generated families are built in, so they go with the built-in cases.
        self.families: dict[str, Family] = (
            {f.name: f for f in FAMILIES} if options.builtin_cases else {})
        self.generated = False
        self.registered_tags: set[str] = set()
        self._rows: dict[CellSpec, expect.Expectation | None] = {}

    def shadowed(self) -> dict[str, str]:
        """Built-in case names that a --cases module took over, and that module; without
        user cases, none (and the built-in cases stay unimported)."""
        return self._registry.shadowed if self._registry is not None else {}

    def tags(self) -> list[str]:
        """Every tag of the session's cases and families, sorted."""
        return sorted({tag for case in self.registry for tag in case.tags}
                      | {tag for family in self.families.values() for tag in family.tags})

    @property
    def registry(self) -> Registry:
        """Built-in cases are imported on first use, so `pytest --help` stays fast."""
        if self._registry is None:
            self._registry = self._load_registry()
            self.expectations.put_first(expect.declared_rows(self._registry))
        return self._registry

    def _load_registry(self) -> Registry:
        return build_registry(self.options.builtin_cases, self.user_cases)

    def entry(self, name: str) -> Case | Family:
        """The case or family of a cell (both have tags and a quantized engine)."""
        return self.families.get(name) or self.registry[name]

    def cells(self) -> list[CellSpec]:
        """The matrix, case-major so one case's model is built once and then dropped;
        then the families' cells, one per target."""
        return [CellSpec(case.name, target, check)
                for case in self.registry
                for target in targets_for(case.tags)
                for check in CHECKS if applies(check, case, target)] + [
                CellSpec(family.name, target, "generated_models")
                for family in self.families.values() for target in targets_for(family.tags)]

    def expectation(self, spec: CellSpec) -> expect.Expectation | None:
        """The expectation row that applies to a cell. Looked up once per cell and
        remembered: the parametrization, the verdict and the record all ask."""
        if spec not in self._rows:
            self._rows[spec] = self.expectations.lookup(spec.case, spec.target.id, spec.check)
        return self._rows[spec]

    def subject(self, spec: CellSpec, reproduce: str) -> Subject | FamilySubject:
        if spec.case in self.families:
            return FamilySubject(self.families[spec.case], spec.target, self.scratch(),
                                 lambda: self.harness, reproduce, self.options.search)
        return Subject(self.state(self.registry[spec.case], spec.target.device), spec.target,
                       self.fresh_process, reproduce, self.options.search,
                       expectation=self.expectation(spec), localise=self.options.localise)

    def state(self, case: Case, device: str) -> CaseState:
        """The state of the current case; moving to another case frees the previous one."""
        if self._state is None or (self._state.case, self._state.device) != (case, device):
            if self._state:
                self._state.close()
            self._state = None
            self._state = CaseState(case, device, self.artifact_dir / case.name,
                                    use_cache=self.options.artifact_cache,
                                    harness=lambda: self.harness)
        return self._state

    def scratch(self) -> Path:
        """Where drawn models and their artifacts live while they are checked."""
        if self._generated_dir is None:
            self._generated_dir = scratch_dir()
        return self._generated_dir

    @property
    def fresh_process(self) -> FreshProcess:
        if self._fresh_process is None:
            self._fresh_process = FreshProcess(self.options.fresh_process_timeout)
        return self._fresh_process

    @property
    def harness(self) -> Harness:
        if self._harness is None:
            self._harness = Harness(self.options.harness_build_dir or harness_build_dir(),
                                    self.options.harness_timeout, thread_budget.installed())
        return self._harness

    def close(self) -> None:
        for process in (self._fresh_process, self._harness):
            if process:
                process.close()
        served = sys.modules.get("conformance.serving.client")  # started only if imported
        if served is not None:
            served.stop_all()
        for directory in (self._scratch, self._generated_dir):
            if directory:
                shutil.rmtree(directory, ignore_errors=True)
