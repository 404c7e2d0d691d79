"""The suite's side of the serve runtime: a server process per artifact, started on a
free loopback port and kept for the session, and the callable that sends it the inputs.

A server that dies fails the call that found it dead with the tail of its log; the next
call starts a new one. Every server still running is stopped when the session ends (and
at exit, should the session not end cleanly)."""
from __future__ import annotations

import atexit
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from conformance.serving import wire

START_TIMEOUT_S = 120.0  # importing torch and loading a large model, on a busy machine
CALL_TIMEOUT_S = 600.0


class ServeError(RuntimeError):
    """The server answered with an error (`status`, and its JSON `answer`), or died, or
    did not start (status 0)."""

    def __init__(self, message: str, status: int = 0, answer: dict | None = None):
        super().__init__(message)
        self.status, self.answer = status, answer or {}


class ServerProcess:
    """One server of one artifact: `python -m conformance.serving.server`."""

    def __init__(self, artifact: Path, app: str | None = None, threads: int | None = None,
                 batching: tuple[int, float] | None = None, classes: Path | None = None,
                 convert_to_rgb: bool = False):
        self.artifact, self.app, self.threads = Path(artifact), app, threads
        self.batching = batching  # (max batch, max wait in ms), or None
        self.classes = classes  # an image classifier's class names: /predict
        self.convert_to_rgb = convert_to_rgb  # /predict takes grayscale and RGBA images
        descriptor, log = tempfile.mkstemp(prefix="conformance-serve-", suffix=".log")
        os.close(descriptor)
        self.log = Path(log)
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def command(self) -> list[str]:
        words = [sys.executable, "-m", "conformance.serving.server", str(self.artifact)]
        words += ["--app", self.app] if self.app else []
        words += ["--threads", str(self.threads)] if self.threads else []
        budget = thread_budget_of_process()  # the suite's: the server applies all of it
        words += ["--flush-denormal"] if self.threads and budget and budget.flush_denormal else []
        if self.batching:
            words += ["--max-batch", str(self.batching[0]),
                      "--max-wait-ms", str(self.batching[1])]
        words += ["--classes", str(self.classes)] if self.classes else []
        words += ["--convert-to-rgb"] if self.convert_to_rgb else []
        return words

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL, env=os.environ.copy())
        line = self._first_line(START_TIMEOUT_S)
        if not line.startswith("serving "):
            tail = self.log_tail()
            self.stop()
            raise ServeError(f"the server of {self.artifact.name} did not start "
                             f"({line or 'no answer'}){tail}")
        self.url = line.split()[1]

    def _first_line(self, timeout_s: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            return f"nothing printed in {timeout_s:g} s"
        return self.proc.stdout.readline().decode(errors="replace").strip()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return ("\n  server log (last lines):\n    " + "\n    ".join(text)) if text else ""

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        self.log.unlink(missing_ok=True)


SERVERS: dict[tuple, ServerProcess] = {}


def server_for(artifact: Path, app: str | None = None, threads: int | None = None,
               batching: tuple[int, float] | None = None, classes: Path | None = None,
               convert_to_rgb: bool = False) -> ServerProcess:
    """The running server of this artifact and these settings (ServerProcess's), started
    if there is none."""
    key = (Path(artifact).resolve(), app, threads, batching, classes, convert_to_rgb)
    server = SERVERS.get(key)
    if server is None or not server.alive():
        if server is not None:
            server.stop()  # a dead one: its log went into the error that found it dead
        server = ServerProcess(artifact, app, threads, batching, classes, convert_to_rgb)
        server.start()
        SERVERS[key] = server
    return server


def stop(server: ServerProcess) -> None:
    """Stop one server the session started (a load test's, done with)."""
    for key, running in list(SERVERS.items()):
        if running is server:
            del SERVERS[key]
    server.stop()


def stop_all() -> None:
    while SERVERS:
        SERVERS.popitem()[1].stop()


atexit.register(stop_all)


class ServedModel:
    """Calls the served artifact: the inputs in one .npz POST to /v1/infer, the outputs
    back as a flat list of tensors."""

    def __init__(self, artifact: Path, app: str | None = None, threads: int | None = None,
                 batching: tuple[int, float] | None = None, classes: Path | None = None,
                 convert_to_rgb: bool = False):
        self.artifact, self.app, self.threads = Path(artifact), app, threads
        self.batching, self.classes, self.convert_to_rgb = batching, classes, convert_to_rgb
        self.server = server_for(*self.settings())

    def __call__(self, *inputs, **keywords) -> list:
        body = wire.encode(wire.tensors_to_arrays(inputs, keywords))
        if not self.server.alive():
            self.server = server_for(*self.settings())
        return wire.arrays_to_outputs(wire.decode(self.post("/v1/infer", body)))

    def settings(self) -> tuple:
        return (self.artifact, self.app, self.threads, self.batching, self.classes,
                self.convert_to_rgb)

    def predict(self, image: bytes, filename: str = "image.jpg", field: str = "file",
                content_type: str | None = None) -> tuple[int, dict]:
        """POST an image file to /predict as the upload form does, in the form field
        `field`; with `content_type`, the bytes alone as a body of that type. Gives
        (status, the JSON answer)."""
        import json

        boundary = "conformance-upload"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream"
                f"\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
        kind = f"multipart/form-data; boundary={boundary}"
        try:
            answer = (self.post("/predict", image, content_type) if content_type
                      else self.post("/predict", body, kind))
            return 200, json.loads(answer)
        except ServeError as exc:
            return exc.status, exc.answer

    def batches(self) -> dict[int, int] | None:
        """How many model calls the server made with each batch size, when it batches."""
        import json

        with urllib.request.urlopen(self.server.url + "/health", timeout=60) as answer:
            found = json.loads(answer.read())["batches"]
        return {int(size): count for size, count in found.items()} if found else None

    def post(self, route: str, body: bytes, content_type: str = wire.CONTENT_TYPE) -> bytes:
        request = urllib.request.Request(self.server.url + route, data=body, method="POST",
                                         headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_S) as answer:
                return answer.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            raise ServeError(f"the server answered {exc.code}: {text[:1000]}", exc.code,
                             _json_or_text(text)) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            time.sleep(0.2)  # let a dying server finish dying, so the log says why
            state = "died" if not self.server.alive() else "did not answer"
            raise ServeError(f"the server of {self.artifact.name} {state}: "
                             f"{exc}{self.server.log_tail()}") from None


def thread_budget_of_process():
    from conformance.runtimes import thread_budget

    return thread_budget.installed()


def session_threads() -> int | None:
    """The threads the session's budget gives a server, or None for its own default."""
    budget = thread_budget_of_process()
    return budget.threads if budget else None


def _json_or_text(text: str) -> dict:
    import json

    try:
        found = json.loads(text)
    except ValueError:
        return {"error": text}
    return found if isinstance(found, dict) else {"error": text}


def load_served(file: Path, device: str) -> ServedModel:
    """The serve runtime's loader: the artifact behind its own server, on the CPU, with
    the session's thread budget when it sets one."""
    return ServedModel(file, threads=session_threads())
