"""A helper process that serves many requests: one line asked, one line answered.

The fresh Python process and the libtorch harness are both started once per
session (a process start per check would cost more than most checks), and
both must not take the session down with them: a helper that dies or hangs
fails the request it was serving, with the tail of its stderr, and the next
request starts a new one.
"""
from __future__ import annotations

import select
import shutil
import subprocess
import tempfile
from pathlib import Path


class ProcessError(Exception):
    """A helper process failed to do what was asked, or died doing it.

    `kind` says which, in the words of expectation rows: `runtime-error` (it
    answered with an error), `crash` (it died) or `timeout` (it hung and was killed).
    """

    where = "a helper process"

    def __init__(self, message: str, kind: str = "runtime-error"):
        super().__init__(message)
        self.kind = kind


class PersistentProcess:
    error = ProcessError
    name = "the helper process"

    def __init__(self, timeout_s: float, prefix: str):
        self.timeout_s = timeout_s
        self.starts = 0  # a new number means earlier handles into the process are gone
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self._proc: subprocess.Popen | None = None
        self._stderr = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict | None:
        return None

    def started(self) -> None:
        """Called after each start, to check the new process before it is used."""

    def exchange(self, line: str) -> str:
        """Send one request line and return the reply line (without its newline)."""
        proc = self.ensure_started()
        try:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            self._lost(proc, answered=False)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], self.timeout_s)
            reply = proc.stdout.readline() if ready else None
        except BaseException:  # a time limit stopped the wait: the reply would come late
            self._kill(proc)
            raise
        if reply:
            return reply.rstrip("\n")
        self._lost(proc, answered=reply is not None)

    def ensure_started(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            command = self.command()  # may build the program first, and fail doing so
            self.dir.mkdir(parents=True, exist_ok=True)
            if self._stderr:
                self._stderr.close()
            self._stderr = open(self.dir / f"stderr-{self.starts + 1}.txt", "w+")
            self._proc = subprocess.Popen(command, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr,
                                          text=True, env=self.environment())
            self.starts += 1
            try:
                self.started()
            except BaseException:
                self._proc.kill()
                self._proc.wait()
                self._proc = None
                raise
        return self._proc

    def _kill(self, proc: subprocess.Popen) -> None:
        """Stop a process whose request was abandoned; the next request starts a new one."""
        self._proc = None
        proc.kill()
        proc.wait()

    def _lost(self, proc: subprocess.Popen, answered: bool):
        """The process closed its output (it died) or hung: stop it and say which."""
        self._proc = None
        try:
            code = proc.wait(timeout=10 if answered else 0.1)
            what, kind = f"exited with {describe_exit(code)}", "crash"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            what, kind = f"gave no answer in {self.timeout_s:g} s and was killed", "timeout"
        raise self.error(f"{self.name} {what}; its stderr ends with:\n{self.stderr_tail()}", kind)

    def stderr_tail(self, chars: int = 2000) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()[-chars:]

    def close(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None
        if self._stderr:
            self._stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def describe_exit(code: int) -> str:
    """`code 1`, or the signal's name for a process killed by one (`SIGSEGV`)."""
    import signal

    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
