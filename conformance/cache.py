"""The on-disk artifact cache, keyed by everything that changes an artifact.

The key covers the case's definition (the source of its builder and input
factory, its seed, names and batch sizes; not its tags, which change no file),
the versions of the exporting stack, the path and its export options, and the
device. A second run with the same key reuses the file; anything that changes
the key exports again.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

from conformance.cases import Case
from conformance.versions import versions


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "conformance"


def default_dir() -> Path:
    return cache_root() / "artifacts"


def harness_build_dir() -> Path:
    """Where the libtorch harness is built, one directory per build key."""
    return cache_root() / "harness"


def source_of(obj: Any) -> str:
    """The source text of a callable, or a stable description when there is none."""
    if isinstance(obj, functools.partial):
        return f"partial({source_of(obj.func)}, {obj.args!r}, {sorted(obj.keywords.items())!r})"
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"


def case_fingerprint(case: Case) -> str:
    parts = [case.name, source_of(case.build), source_of(case.example), str(case.seed),
             repr(case.batch_sizes), repr(case.quantized_engine), repr(case.input_names),
             repr(case.output_names)]
    if inspect.isclass(case.build):  # the model's own source, when build is the class
        parts += [source_of(c) for c in case.build.__mro__ if c.__module__ == case.build.__module__]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def artifact_key(case: Case, path: str, options: Any, device: str, model: Any = None,
                 example: tuple = ()) -> str:
    from conformance import __version__

    stack = {k: versions()[k] for k in ("torch", "torchvision", "onnx", "onnxscript")}
    payload = {"case": case_fingerprint(case), "path": path, "options": repr(options),
               "device": device, "stack": stack, "suite": __version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
