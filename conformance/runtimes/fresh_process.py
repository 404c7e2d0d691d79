"""A fresh Python process that loads saved artifacts and runs them.

The process never saw the exporting model, so anything the artifact silently
depends on (module globals, Python state captured at export) shows up here.
One process serves a whole pytest session: importing torch costs seconds, and
a new process per check would dominate small cases. It speaks one JSON line per
request on stdin and one per reply on stdout; tensors travel through files.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from conformance.runtimes import thread_budget
from conformance.runtimes.process import PersistentProcess, ProcessError


class FreshProcessError(ProcessError):
    """The fresh process failed to load or run the artifact, or died."""

    where = "the fresh process"


class FreshProcess(PersistentProcess):
    error = FreshProcessError
    name = "the fresh process"

    def __init__(self, timeout_s: float = 600.0, command: list[str] | None = None):
        super().__init__(timeout_s, prefix="conformance-fresh-process-")
        self._command = command or [sys.executable, "-m", "conformance.runtimes.fresh_process"]
        self._requests = 0
        self._imports: tuple[str, ...] = ()  # what the running process was asked to import

    def command(self) -> list[str]:
        return self._command

    def environment(self) -> dict:
        return {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning"}

    def run(self, loader: str, artifact: Path, inputs: tuple, device: str,
            quantized_engine: str | None = None, keywords: tuple[str, ...] = (),
            imports: tuple[str, ...] = ()) -> tuple[Any, dict]:
        """Load `artifact` with `loader` ("package.module:name", a function of the file and
        the device) in the fresh process and run `inputs` (flat, the last `keywords` by
        name: see conformance.calling), after importing `imports` (what the deployment
        imports: the modules that register a saved program's pytree types). The loader
        goes by name, so a path that a plugin registered loads here too.

        Returns (outputs, timings). Raises FreshProcessError with the process's own
        error text, or with the tail of its stderr when it died.
        """
        import torch

        if tuple(imports) != self._imports:
            # A process that imported another case's modules would lend this one their
            # registrations: an artifact that loads only with them would pass unseen.
            self.close()
            self._imports = tuple(imports)
        self._requests += 1
        self.dir.mkdir(parents=True, exist_ok=True)
        in_file = self.dir / f"in-{self._requests}.pt"
        out_file = self.dir / f"out-{self._requests}.pt"
        torch.save(tuple(i.cpu() if torch.is_tensor(i) else i for i in inputs), in_file)
        try:
            timings = self.ask({"loader": loader, "artifact": str(artifact),
                                "inputs": str(in_file), "outputs": str(out_file),
                                "device": device, "quantized_engine": quantized_engine,
                                "keywords": list(keywords), "imports": list(imports)})
        finally:
            in_file.unlink(missing_ok=True)
        outputs = torch.load(out_file, weights_only=False)
        out_file.unlink(missing_ok=True)
        return outputs, timings

    def call(self, function: str, request: dict) -> dict:
        """Run `function` ("package.module:name") on `request` in the fresh process; its
        reply's timings. For work that is not loading an artifact (building a case to
        measure its memory): the caller names it, so this module depends on no caller."""
        return self.ask({**request, "call": function})

    def ask(self, request: dict) -> dict:
        """One request, with the suite's thread budget; the reply's timings."""
        reply = json.loads(self.exchange(json.dumps({**request, **(thread_budget.described() or {})})))
        if not reply.get("ok"):
            raise FreshProcessError(reply.get("error", "no error text"))
        return reply["timings"]


def serve() -> None:
    """The fresh process's loop: answer requests until stdin closes."""
    protocol = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol stream
    for line in sys.stdin:
        try:
            reply = {"ok": True, "timings": handle(json.loads(line))}
        except Exception as exc:  # reported to the suite, which fails the check
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()


def handle(request: dict) -> dict:
    import torch

    from conformance.runtimes.loaders import run

    install_budget(request)
    if "call" in request:
        return call_named(request)
    if request.get("quantized_engine"):
        torch.backends.quantized.engine = request["quantized_engine"]
    started = time.perf_counter()
    for name in request.get("imports", ()):
        deploy_import(name)
    loaded = named(request["loader"])(Path(request["artifact"]), request["device"])
    loaded_at = time.perf_counter()
    inputs = torch.load(request["inputs"], weights_only=False)
    inputs = tuple(i.to(request["device"]) if torch.is_tensor(i) else i for i in inputs)
    outputs = run(loaded, inputs, tuple(request.get("keywords", ())))
    ran_at = time.perf_counter()
    torch.save(to_cpu(outputs), request["outputs"])
    return {"load_s": loaded_at - started, "run_s": ran_at - loaded_at,
            "peak_rss_kib": peak_rss_kib()}


def deploy_import(name: str) -> None:
    """What a deployment runs before loading: `package.module` is imported;
    `package.module:function` is imported and the function called (a registration)."""
    module, _, function = name.partition(":")
    found = importlib.import_module(module)
    if function:
        getattr(found, function)()


def call_named(request: dict) -> dict:
    """The function a `call` request names, run on the request."""
    return named(request["call"])(request)


def named(function: str) -> Callable:
    """The function "package.module:name" (a qualified name may have dots)."""
    module, _, name = function.partition(":")
    found = importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    return found


def install_budget(request: dict) -> None:
    """The suite's thread budget, when it has one, for this process too."""
    if request.get("threads"):
        thread_budget.install(thread_budget.Budget(request["threads"], request.get("flush_denormal", False)))


def peak_rss_kib() -> int:
    """This process's peak resident set size so far, in KiB.

    Linux's VmHWM, not getrusage's ru_maxrss: the latter survives exec, so a process
    started from a large one (the suite) reports at least its parent's size at fork.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource  # elsewhere: the best there is

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def to_cpu(obj: Any) -> Any:
    """Outputs moved to the CPU, in containers that pickle.

    Named tuples become plain tuples: TorchScript creates their classes at load
    time, so they cannot be pickled back, and the comparison is positional anyway.
    """
    import torch

    if torch.is_tensor(obj):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(to_cpu(v) for v in obj)
    if isinstance(obj, list):
        return [to_cpu(v) for v in obj]
    return obj


if __name__ == "__main__":
    serve()
