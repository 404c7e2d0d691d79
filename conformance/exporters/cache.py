"""The on-disk artifact cache, keyed by everything that changes an artifact.

An artifact is reused only when nothing the model's behaviour depends on has
changed. `artifact_key` covers:

- the case's definition: its name, seed, names, batch sizes, quantized engine
  and the source of its builder, input factory and probes (`case_fingerprint`);
- the code the model comes from (`code_fingerprint`): the bytes of every user
  module reached from the case's callables and from the classes of every
  submodule of the model, following the modules their globals refer to, and
  the version of each installed distribution reached that way;
- the values of the globals that code names (`_module_digest`): a setting read
  from the environment at import changes no byte of the file;
- the model itself (`model_fingerprint`): its state dict and every buffer,
  byte for byte, and the settings its submodules hold, described value by value
  (`describe`): numbers, containers, dataclasses, enums, tensors and objects by
  their attributes. A value that cannot be described (its repr shows only a
  memory address) makes a key no later run computes, so the model is exported
  again rather than reused on a guess;
- the inputs the exporter sees (`inputs_fingerprint`), byte for byte;
- the global flags a path bakes in (`global_flags`);
- the exporting stack's versions, the suite's version and the source of the
  suite's exporting code, the path, its options and the device.

Tags change no file and are not part of the key. A second run with the same key
reuses the file, once `artifact.cached_artifact` has checked it against the size
and sha256 written beside it; anything that changes the key exports again.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from conformance.cases import Case
from conformance.exporters.fingerprint import (case_fingerprint, code_fingerprint, file_digest,
                                               global_flags, inputs_fingerprint, model_fingerprint,
                                               sha, stable_repr)
from conformance.versions import versions


def artifact_key(case: Case, path: str, options: Any, device: str, model: Any = None,
                 example: tuple = ()) -> str:
    """The name of the artifact that `path` makes of this model from these inputs."""
    from conformance import __version__
    from conformance.exporters.table import PATHS
    from conformance.tuning import settings_of, tuning_of

    row = PATHS[path]
    stack = {k: versions()[k] for k in ("torch", "torchvision", "onnx", "onnxscript")}
    if row.compiler_for:  # the artifact holds a shared library the C++ compiler built
        stack["compiler"] = versions()["compiler"]
    payload = {"case": case_fingerprint(case), "code": code_fingerprint(case, model),
               "model": model_fingerprint(model), "example": inputs_fingerprint(example),
               "flags": global_flags(), "path": path, "options": stable_repr(options),
               "device": device, "stack": stack, "suite": __version__,
               "exporter": exporter_digest()}
    if tuning_of(path, ""):  # its settings live outside this package: a changed row re-exports
        payload["tuning"] = stable_repr(settings_of(path, ""))
    return sha(json.dumps(payload, sort_keys=True).encode())[:24]


def exporter_digest() -> str:
    """The suite's exporting code: every module of this package (an exporter reaches
    helpers of its neighbours: onnx-dynamo uses pt2's dynamic shapes)."""
    files = sorted(Path(__file__).parent.glob("*.py"))
    return sha("".join(file_digest(f) for f in files).encode())


@contextlib.contextmanager
def artifact_lock(file: Path, enabled: bool = True):
    """One exporter at a time for one artifact across processes (pytest-xdist workers,
    two runs sharing a cache): the second waits, then finds the first one's file."""
    if not enabled:
        yield
        return
    try:
        import fcntl
    except ImportError:  # no advisory locks here: two exports at worst, each atomic
        yield
        return
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file.with_name(file.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

