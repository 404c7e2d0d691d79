"""Targets: a path on a runtime, on a device. Their ids are the `-k` words."""
from __future__ import annotations

import dataclasses
import functools

DEVICES = ("cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class Target:
    path: str
    runtime: str
    device: str = "cpu"

    @property
    def id(self) -> str:
        return f"{self.path}-{self.runtime}-{self.device}"

    def __str__(self) -> str:
        return self.id


# (path, runtime) pairs of the matrix that this version of the suite runs.
PATH_RUNTIMES = (
    ("trace", "torch"),
    ("script", "torch"),
)


def all_targets() -> list[Target]:
    return [Target(p, r, d) for p, r in PATH_RUNTIMES for d in DEVICES]


@functools.lru_cache(maxsize=None)
def device_skip_reason(device: str) -> str | None:
    """Why a device cannot run here, or None when it can."""
    if device == "cpu":
        return None
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device on this machine (torch.cuda.is_available() is False)"
    return None
