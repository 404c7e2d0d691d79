"""The thread budget and denormal policy, given alike to every runtime.

Latencies of two backends compare only when both had the same number of threads
and treated denormal floats the same way. The budget is process-wide, as torch's
own thread setting is: the session installs it once, and each runtime applies it
when it starts (torch at once, ONNX Runtime per session, the libtorch harness at
each start of its process).
"""
from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class Budget:
    threads: int  # intra-op threads of every runtime
    flush_denormal: bool = False  # denormal floats read and written as zero

    def apply_to_torch(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        if not torch.set_flush_denormal(self.flush_denormal) and self.flush_denormal:
            raise RuntimeError("this CPU cannot flush denormals (no SSE3)")

    def onnxruntime_options(self, options) -> None:
        """Set an onnxruntime.SessionOptions to the budget: intra-op threads, one
        inter-op thread (sequential execution), denormals as torch treats them."""
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.set_denormal_as_zero",
                                         "1" if self.flush_denormal else "0")

    def describe(self) -> dict:
        return {"threads": self.threads, "flush_denormal": self.flush_denormal}


def cores() -> int:
    """The cores this process may run on (its affinity, which a container or taskset may
    narrow), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on macOS and Windows
        return os.cpu_count() or 1


def share(processes: int) -> int:
    """The threads each of `processes` processes gets when they split the cores evenly."""
    return max(1, cores() // max(1, processes))


_installed: Budget | None = None


def install(budget: Budget | None) -> None:
    """Make `budget` the process's: torch now, the other runtimes as they start."""
    global _installed
    _installed = budget
    if budget is not None:
        budget.apply_to_torch()


def installed() -> Budget | None:
    return _installed


def described() -> dict | None:
    """The installed budget as record data, or None when every runtime has its default."""
    return _installed.describe() if _installed else None
