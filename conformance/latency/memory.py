"""Peak memory of a target: the peak resident set size of a new process that does
nothing but load the target's artifact (or build the case) and run its example once.

A long-lived process cannot tell one target's peak from another's (the peak only
grows), so each figure comes from a process of its own: a Python process for the
Python runtimes (torch imported: what any Python deployment pays), a new libtorch
harness for libtorch. Eager and torch.compile have no artifact; their process
builds the case from its registry, seeded as the suite builds it. Each figure
costs a process start, so the latency run measures it only with --latency-memory.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from conformance.checks.subject import Subject
from conformance.runtimes import thread_budget
from conformance.targets import Target, loader_name, loader_optimizes, path_row


def built_in_process(target: Target) -> bool:
    """Eager, and a path that saves nothing (torch.compile): no artifact to load, so the
    new process builds the case itself."""
    row = path_row(target.path)
    return row is None or not row.saves_file


def peak_rss_mib(subject: Subject, case_modules: list[str], builtin: bool,
                 harness_build_root: Path, timeout_s: float) -> float:
    """The peak resident set size, in MiB, of a process that ran the target once."""
    target = subject.target
    if target.runtime == "libtorch":
        kib = _libtorch_peak(subject, harness_build_root, timeout_s)
    elif built_in_process(target):
        kib = _built_case_peak(subject, case_modules, builtin, timeout_s)
    else:
        kib = _artifact_peak(subject, timeout_s)
    return kib / 1024


def _libtorch_peak(subject: Subject, build_root: Path, timeout_s: float) -> int:
    from conformance.runtimes.libtorch import Harness, LibtorchModel

    process = Harness(build_root, timeout_s, thread_budget.installed())
    try:
        with subject.state.context():
            LibtorchModel(process, subject.artifact.file, subject.state.device,
                          optimize=loader_optimizes(subject.target.path))(*subject.state.example)
        return process.peak_memory_kib()
    finally:
        process.close()


def _artifact_peak(subject: Subject, timeout_s: float) -> int:
    from conformance.runtimes.fresh_process import FreshProcess

    state, target = subject.state, subject.target
    process = FreshProcess(timeout_s)
    try:
        _, timings = process.run(loader_name(target), subject.artifact.file, state.example,
                                 state.device, subject.case.quantized_engine, state.keywords,
                                 subject.case.deploy_imports)
        return timings["peak_rss_kib"]
    finally:
        process.close()


def _built_case_peak(subject: Subject, case_modules: list[str], builtin: bool,
                     timeout_s: float) -> int:
    from conformance.runtimes.fresh_process import FreshProcess

    process = FreshProcess(timeout_s)
    try:
        with tempfile.TemporaryDirectory(prefix="conformance-memory-") as scratch:
            timings = process.call(f"{__name__}:build_and_run_case", {
                "case": subject.case.name, "case_modules": case_modules, "builtin": builtin,
                "path": subject.target.path, "runtime": subject.target.runtime,
                "device": subject.state.device, "scratch": scratch})
        return timings["peak_rss_kib"]
    finally:
        process.close()


def build_and_run_case(request: dict) -> dict:
    """In the fresh process: build the case named in the request from its registry (the
    built-in cases and the modules given), seeded as the suite seeds it, and run the
    example once, through eager or through torch.compile with the given backend."""
    import time

    from conformance.cases import build_registry, load_cases_module
    from conformance.checks.subject import CaseState
    from conformance.runtimes.fresh_process import peak_rss_kib

    registry = build_registry(request.get("builtin", True),
                              [load_cases_module(spec) for spec in request.get("case_modules", [])])
    state = CaseState(registry[request["case"]], request["device"], Path(request["scratch"]))
    started = time.perf_counter()
    target = Target(request["path"], request["runtime"], request["device"])
    if path_row(target.path) is None:  # eager
        state.run(state.model, state.example)
    else:  # compiled in process by its first call
        state.loaded(target)
    return {"build_and_run_s": time.perf_counter() - started, "peak_rss_kib": peak_rss_kib()}
