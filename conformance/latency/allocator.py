"""glibc malloc's thresholds, fixed for a latency run.

glibc serves a large allocation with mmap until a freed block raises its mmap threshold,
after which it reuses the heap: a model whose activations are tens of MiB then runs with
or without a page fault per fresh page on every call, depending on what the process freed
before. Measured here on super_resolution_net at one thread: eager took about 33 ms a
call in some cells and 43 to 52 ms in others, steady within a cell, so two runs of the
same commit disagreed on its speedups by up to 50%; with the thresholds fixed, 31 to 34 ms
in every cell of three runs. Fixing a threshold turns glibc's adjustment off (mallopt(3)).
The values are the largest mmap threshold glibc accepts on 64-bit Linux (32 MiB) and a
trim threshold (2 GiB, the largest an int holds: mallopt takes an int) that keeps the
heap's top from going back to the system mid-run.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
THRESHOLDS = {"mmap_threshold": 32 * 1024 * 1024, "trim_threshold": 2**31 - 1}
# The same, for processes started later (the libtorch harness, a fresh process): glibc
# reads them when a process starts.
ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(THRESHOLDS["mmap_threshold"]),
               "MALLOC_TRIM_THRESHOLD_": str(THRESHOLDS["trim_threshold"])}


def fix_thresholds() -> dict | None:
    """Fix the thresholds in this process and in those it starts from now on; what was
    set, for the records, or None where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return None
    ok = (libc.mallopt(M_MMAP_THRESHOLD, THRESHOLDS["mmap_threshold"])
          and libc.mallopt(M_TRIM_THRESHOLD, THRESHOLDS["trim_threshold"]))
    if not ok:
        return None
    os.environ.update(ENVIRONMENT)
    return {"malloc": "glibc", **THRESHOLDS}


def _glibc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None
