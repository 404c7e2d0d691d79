"""The libtorch runtime: a C++ process that runs TorchScript and AOTInductor artifacts.

The harness (`cpp_harness/`) is built with CMake against the installed torch
wheel the first time a libtorch cell runs, and the build is cached, keyed by
the torch version and location, the compiler, CMake and the harness sources.
One harness process serves the session (one per xdist worker); tensors cross
in files in torch.save's format. See cpp_harness/harness.cpp for the protocol.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

from conformance.calling import split
from conformance.layout import harness_sources
from conformance.runtimes.process import PersistentProcess, ProcessError

BINARY = "conformance_harness"
MIN_CMAKE = (3, 18)


class HarnessError(ProcessError):
    """The harness could not be built, refused a request, crashed or hung."""

    where = "the libtorch harness"


@dataclasses.dataclass(frozen=True)
class Toolchain:
    cmake: str
    compiler: str
    generator: str | None  # Ninja when it is installed, else CMake's default


def find_toolchain() -> Toolchain | str:
    """The tools that build the harness, or why they are missing."""
    cmake = shutil.which("cmake")
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cmake:
        return "the libtorch harness needs cmake (>= 3.18) on PATH, and there is none"
    if not compiler or not shutil.which(compiler):
        return "the libtorch harness needs a C++20 compiler (c++, g++ or $CXX), and there is none"
    version = _cmake_version(cmake)
    if version < MIN_CMAKE:
        return f"the libtorch harness needs cmake >= 3.18, found {'.'.join(map(str, version))}"
    generator = "Ninja" if shutil.which("ninja") else None
    return Toolchain(cmake, shutil.which(compiler), generator)


def _cmake_version(cmake: str) -> tuple[int, ...]:
    out = subprocess.run([cmake, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"(\d+)\.(\d+)", out)
    return tuple(int(x) for x in found.groups()) if found else (0, 0)


def toolchain_problem() -> str | None:
    found = find_toolchain()
    return found if isinstance(found, str) else None


def build_key(toolchain: Toolchain) -> str:
    """Changes when anything that goes into the binary changes."""
    import torch

    from conformance.versions import compiler_version

    digest = hashlib.sha256()
    for part in (torch.__version__, str(Path(torch.__file__).parent), compiler_version(),
                 toolchain.compiler, str(_cmake_version(toolchain.cmake))):
        digest.update(part.encode() + b"\0")
    for source in sorted(harness_sources().iterdir()):
        if source.is_file():
            digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:20]


@dataclasses.dataclass(frozen=True)
class Build:
    binary: Path
    seconds: float  # 0 when the cached build was used
    cached: bool


def build(root: Path, jobs: int | None = None) -> Build:
    """The harness binary under `root`, built first when no build has this key."""
    toolchain = find_toolchain()
    if isinstance(toolchain, str):
        raise HarnessError(toolchain)
    where = root / build_key(toolchain)
    binary = where / "build" / BINARY
    where.mkdir(parents=True, exist_ok=True)
    with _locked(where / ".lock"):  # xdist workers wait for the first one's build
        if binary.exists():
            return Build(binary, 0.0, cached=True)
        started = time.perf_counter()
        _cmake(toolchain, where, jobs or os.cpu_count() or 1)
        return Build(binary, time.perf_counter() - started, cached=False)


def _cmake(toolchain: Toolchain, where: Path, jobs: int) -> None:
    import torch

    configure = [toolchain.cmake, "-S", str(harness_sources()), "-B", str(where / "build"),
                 f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
                 f"-DCMAKE_CXX_COMPILER={toolchain.compiler}", "-DCMAKE_BUILD_TYPE=Release"]
    if toolchain.generator:
        configure += ["-G", toolchain.generator]
    compile_ = [toolchain.cmake, "--build", str(where / "build"), "--parallel", str(jobs)]
    log = where / "build.log"
    with open(log, "w") as out:
        for name, step in (("configure", configure), ("build", compile_)):
            out.write("$ " + " ".join(step) + "\n")
            out.flush()
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode:
                shutil.rmtree(where / "build", ignore_errors=True)
                raise HarnessError(f"building the libtorch harness failed at {name}; "
                                   f"the end of {log}:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def _locked(file: Path):
    import fcntl

    with open(file, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Harness(PersistentProcess):
    """The session's harness process, built and started on first use."""

    error = HarnessError
    name = "the libtorch harness"

    def __init__(self, build_root: Path, timeout_s: float = 600.0, budget=None):
        super().__init__(timeout_s, prefix="conformance-harness-")
        self.build_root = Path(build_root)
        self.budget = budget  # a thread_budget.Budget: threads and denormals, set at every start
        self.build: Build | None = None
        self._build_failure: HarnessError | None = None
        self.version = ""
        self._files = 0

    def command(self) -> list[str]:
        if self._build_failure:  # a failed build is not retried for every cell
            raise self._build_failure
        if self.build is None:
            try:
                self.build = build(self.build_root)
            except HarnessError as exc:
                self._build_failure = exc
                raise
        return [str(self.build.binary)]

    def started(self) -> None:
        import torch

        self.version, _cuda = self.request("info")
        python_side = torch.__version__.split("+")[0]
        if self.version != python_side:
            raise HarnessError(f"the harness runs libtorch {self.version}, but Python has torch "
                               f"{python_side}: the build does not match the installed wheel")
        if self.budget is not None:
            self.request("settings", self.budget.threads, int(self.budget.flush_denormal))

    def peak_memory_kib(self) -> int:
        """The harness process's peak resident set size so far."""
        (kib,) = self.request("memory")
        return int(kib)

    def request(self, *fields: Any) -> list[str]:
        """One request; the reply's fields, or HarnessError with the harness's message."""
        reply = self.exchange("\t".join(str(f) for f in fields))
        status, _, rest = reply.partition("\t")
        if status == "ok":
            return rest.split("\t") if rest else []
        if status == "error":
            raise HarnessError(_unescape(rest))
        raise HarnessError(f"the harness answered something outside its protocol: {reply!r}")

    def scratch_file(self, kind: str) -> Path:
        self._files += 1
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir / f"{kind}-{self._files}.pt"


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), text)


class LibtorchModel:
    """An artifact loaded in the harness, called like the module it came from."""

    def __init__(self, harness: Harness, file: Path, device: str, optimize: bool = False):
        """`optimize`: a TorchScript module goes through optimize_for_inference once loaded."""
        self.harness = harness
        self.file = Path(file)
        self.kind = ("aoti" if self.file.suffix == ".pt2"
                     else "torchscript-optimized" if optimize else "torchscript")
        self.device = device
        self._handle: str | None = None
        self._loaded_in = 0
        self.last_run_s: float | None = None
        self._timed: tuple[tuple, Path] | None = None  # (inputs, their file) being timed
        self._ensure_loaded()

    def _ensure_loaded(self) -> str:
        """Loads the artifact, again after the harness was restarted."""
        self._request_start()
        if self._handle is None or self._loaded_in != self.harness.starts:
            self._handle = None
            (handle,) = self._request("load", self.kind, self.device, self.file.resolve(),
                                      _quantized_engine())
            self._handle, self._loaded_in = handle, self.harness.starts
        return self._handle

    def _request_start(self) -> None:
        try:
            self.harness.ensure_started()
        except HarnessError as exc:
            raise HarnessError(f"starting the harness for {self.file.name}: {exc}") from None

    def _request(self, *fields: Any) -> list[str]:
        try:
            return self.harness.request(*fields)
        except HarnessError as exc:
            raise HarnessError(f"{fields[0]} of {self.file.name}: {exc}") from None

    def __call__(self, *inputs, **keywords) -> Any:
        inputs_file = self._save_inputs(inputs + tuple(keywords.values()), tuple(keywords))
        outputs_file = self.harness.scratch_file("out")
        try:
            (seconds,) = self._request("run", self._ensure_loaded(), _quantized_engine(),
                                       inputs_file, outputs_file)
            self.last_run_s = float(seconds)
            return load_outputs(outputs_file)
        finally:
            inputs_file.unlink(missing_ok=True)
            outputs_file.unlink(missing_ok=True)

    def time(self, inputs: tuple, warmup: int, runs: int,
             keywords: tuple[str, ...] = ()) -> list[float]:
        """`runs` timed calls inside the harness, after `warmup` untimed ones, in seconds;
        on flat inputs, the last `keywords` by name (see conformance.calling)."""
        samples = self._request("time", self._ensure_loaded(), _quantized_engine(),
                                self._timing_inputs(inputs, keywords), warmup, runs)
        return [float(s) for s in samples]

    def loop(self, inputs: tuple, runs: int, keywords: tuple[str, ...] = ()) -> float:
        """Seconds for `runs` calls between two clock reads inside the harness: the bare
        timing loop that `time`'s per-run samples are measured against."""
        (seconds,) = self._request("loop", self._ensure_loaded(), _quantized_engine(),
                                   self._timing_inputs(inputs, keywords), runs)
        return float(seconds)

    def profile(self, inputs: tuple, warmup: int, runs: int, trace: Path,
                keywords: tuple[str, ...] = ()) -> tuple[str, float]:
        """`runs` calls under libtorch's own profiler inside the harness, after `warmup`
        untimed ones, each call a "model call" event; the chrome trace goes to `trace`.
        Returns the tool that made it ("libtorch kineto", or "harness clock" when the
        harness could not start Kineto and the trace holds only the calls) and the wall
        time of the profiled calls in seconds, profiler included."""
        tool, seconds = self._request("profile", self._ensure_loaded(), _quantized_engine(),
                                      self._timing_inputs(inputs, keywords), warmup, runs,
                                      Path(trace).resolve())
        return tool, float(seconds)

    def _timing_inputs(self, inputs: tuple, keywords: tuple[str, ...]) -> Path:
        """The file of the inputs being timed, saved once for the same inputs object: a
        latency run asks for one sample at a time, hundreds of times."""
        if self._timed is None or self._timed[0] is not inputs or not self._timed[1].exists():
            self._forget_timing_inputs()
            self._timed = (inputs, self._save_inputs(inputs, keywords))
        return self._timed[1]

    def _forget_timing_inputs(self) -> None:
        if self._timed is not None:
            self._timed[1].unlink(missing_ok=True)
            self._timed = None

    def _save_inputs(self, inputs: tuple, keywords: tuple[str, ...] = ()) -> Path:
        """The inputs file the harness reads: (positional inputs, keyword inputs). An
        AOTInductor package takes one flat list, in the order it was exported with: the
        positional inputs, then the keyword ones in signature order, as the flat inputs are."""
        import torch

        inputs = tuple(i.detach().cpu() if torch.is_tensor(i) else i for i in inputs)
        args, kwargs = ((inputs, {}) if self.kind == "aoti" else split(inputs, keywords))
        file = self.harness.scratch_file("in")
        torch.save((args, kwargs), file)
        return file

    def close(self) -> None:
        self._forget_timing_inputs()
        if self._handle is not None and self._loaded_in == self.harness.starts:
            with contextlib.suppress(ProcessError):
                self.harness.request("unload", self._handle)
        self._handle = None


def _quantized_engine() -> str:
    import torch

    return torch.backends.quantized.engine


def load_outputs(file: Path) -> Any:
    """What the harness wrote: tensors in tuples, lists and dicts."""
    import torch
    from torch.jit._pickle import restore_type_tag  # how libtorch tags typed lists and dicts

    with torch.serialization.safe_globals([restore_type_tag]):
        return torch.load(file, weights_only=True)


def measure_overhead(build_root: Path, repeats: int = 20) -> dict[str, float]:
    """What the persistent harness costs a check, against a process start per check,
    and what its timing costs a latency sample, against a bare timing loop.

    A tiny scripted model keeps the model's own time out of the numbers: the
    round trip of one `run` (inputs and outputs through files) minus the
    harness's own forward time is the per-check overhead of the persistent
    process; start + load + run + exit of a new harness is what a process
    start per check would cost instead.
    """
    import tempfile

    import torch

    work = Path(tempfile.mkdtemp(prefix="conformance-overhead-"))
    file = work / "linear.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation notice
        torch.jit.script(torch.nn.Linear(4, 3).eval()).save(str(file))
    inputs = (torch.randn(2, 4),)
    built = build(build_root)
    process = Harness(build_root)
    model = LibtorchModel(process, file, "cpu")
    model(*inputs)  # the first call of a TorchScript module profiles it
    round_trips, inside = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        model(*inputs)
        round_trips.append(time.perf_counter() - started)
        inside.append(model.last_run_s)
    sampled, bare = _sampled_and_bare(model, inputs, runs=repeats * 100)
    process.close()
    starts = [_one_shot(build_root, file, inputs) for _ in range(max(3, repeats // 4))]
    return {"build_s": built.seconds, "build_cached": float(built.cached),
            "persistent_round_trip_s": _median(round_trips),
            "persistent_overhead_s": _median(round_trips) - _median(inside),
            "process_per_check_s": _median(starts),
            "timed_call_median_s": sampled, "bare_loop_call_s": bare,
            "per_sample_overhead_s": sampled - bare}


def _sampled_and_bare(model: "LibtorchModel", inputs: tuple, runs: int) -> tuple[float, float]:
    """The median of `time`'s per-run samples, against the mean call of the bare loop
    (the same calls between two clock reads): what one clock pair per sample adds."""
    model.time(inputs, warmup=runs // 10, runs=1)
    sampled = _median(model.time(inputs, warmup=0, runs=runs))
    return sampled, model.loop(inputs, runs) / runs


def _one_shot(build_root: Path, file: Path, inputs: tuple) -> float:
    started = time.perf_counter()
    process = Harness(build_root)
    LibtorchModel(process, file, "cpu")(*inputs)
    process.close()
    return time.perf_counter() - started


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


if __name__ == "__main__":
    import argparse

    from conformance.layout import harness_build_dir

    parser = argparse.ArgumentParser(description="Build the libtorch harness and measure what "
                                                 "one request costs")
    parser.add_argument("--build-dir", type=Path, default=harness_build_dir())
    for name, value in measure_overhead(parser.parse_args().build_dir).items():
        print(f"{name:26} {value:.6g}")
