"""The versions that decide a verdict, for the report header and every record."""
from __future__ import annotations

import functools
import importlib.metadata
import platform
import shutil
import subprocess

DISTRIBUTIONS = ("torch", "torchvision", "onnx", "onnxruntime", "onnxscript")


@functools.lru_cache(maxsize=None)
def versions() -> dict[str, str]:
    """Installed versions, read from package metadata so nothing heavy is imported."""
    found = {name: _distribution_version(name) for name in DISTRIBUTIONS}
    found["python"] = platform.python_version()
    found["compiler"] = compiler_version()
    found["machine"] = f"{platform.system()} {platform.machine()}"
    return found


def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@functools.lru_cache(maxsize=None)
def compiler_version() -> str:
    """First line of `c++ --version`: the compiler the C++ harness and Inductor use."""
    compiler = shutil.which("c++") or shutil.which("g++")
    if not compiler:
        return "not found"
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return out.stdout.splitlines()[0].strip() if out.stdout else "unknown"


def header_line() -> str:
    v = versions()
    return ", ".join(f"{k} {v[k]}" for k in (*DISTRIBUTIONS, "compiler", "python"))


def torch_release() -> str:
    """torch's version without the local build tag (`2.14.1+cu130` -> `2.14.1`)."""
    return versions()["torch"].split("+")[0]
