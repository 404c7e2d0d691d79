"""The stack is checked once, before any cell runs, and a stack that cannot work stops the
session with one message: a torchvision built for another torch loads without its
compiled operators, and every cell of every vision case would then fail on its own with
"eager raised RuntimeError", the suite noticing nothing wrong with the stack.

Checked: torchvision is the release made for this torch (torchvision 0.N+15 goes with
torch 2.N) and of the same build (`+cpu`, `+cu130`), its compiled operators load, and
the ONNX exporters are installed. `builds()` names the exact builds for the header and the
records (package metadata drops the local build tag)."""
from __future__ import annotations

import functools

# torchvision's minor release for a torch 2.x minor release
TORCHVISION_OFFSET = 15


@functools.lru_cache(maxsize=1)
def builds() -> dict[str, str]:
    """The exact builds: versions with their local tag, CUDA's version, torch's commit."""
    import torch

    # plain str: torch's TorchVersion cannot cross to an xdist controller in a record
    return {"torch": str(torch.__version__), "cuda": str(torch.version.cuda or "none"),
            "torch_git": str(torch.version.git_version or "")[:12],
            "torchvision": torchvision_version()}


def torchvision_version() -> str:
    """torchvision's version with its build tag, read from its version.py: importing
    torchvision imports dynamo, which a session imports only when a cell needs it."""
    import re

    folder = torchvision_folder()
    if folder is None:
        return "not installed"
    found = re.search(r"""__version__\s*=\s*['"]([^'"]+)['"]""",
                      (folder / "version.py").read_text(errors="replace"))
    return found.group(1) if found else "unknown"


def torchvision_folder():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def stack_problems() -> list[str]:
    """What keeps this stack from running the suite; [] when nothing does."""
    found = builds()
    problems = [pairing_problem(found["torch"], found["torchvision"])]
    if found["torchvision"] != "not installed":
        problems.append(operators_problem())
    problems.append(onnx_exporter_problem())
    return [problem for problem in problems if problem]


def pairing_problem(torch_version: str, torchvision_version: str) -> str:
    """torchvision must be the release, and the build, made for this torch."""
    from packaging.version import InvalidVersion, Version

    if torchvision_version == "not installed":
        return "torchvision is not installed (pip install the torchvision of this torch)"
    try:
        torch_v, vision_v = Version(torch_version), Version(torchvision_version)
    except InvalidVersion:
        return ""
    wanted = torch_v.minor + TORCHVISION_OFFSET
    if torch_v.major == 2 and (vision_v.major, vision_v.minor) != (0, wanted):
        return (f"torchvision {torchvision_version} is not the release for torch "
                f"{torch_version}, which is torchvision 0.{wanted}.x")
    if torch_v.local != vision_v.local:
        return (f"torchvision {torchvision_version} is another build than torch "
                f"{torch_version} ({vision_v.local or 'default'} against "
                f"{torch_v.local or 'default'}): install the pair of one build")
    return ""


def operators_problem() -> str:
    """torchvision's compiled operators (nms, roi_align) must load into this torch: its
    extension library is loaded as torchvision loads it, without importing torchvision."""
    import torch

    try:
        libraries = sorted(torchvision_folder().glob("_C*.so"))
        if not libraries:
            return "torchvision has no compiled operators (no _C library in its folder)"
        torch.ops.load_library(str(libraries[0]))
        torch.ops.torchvision.nms
    except (AttributeError, RuntimeError, OSError, ImportError) as exc:
        return (f"torchvision's compiled operators do not load into this torch "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
                f"its build is for another torch")
    return ""


def onnx_exporter_problem() -> str:
    """Both ONNX exporters must be there: the TorchScript-based one and the dynamo one
    (onnxscript). Found, not imported: importing them takes seconds and pulls in dynamo,
    which the cells import when they need it."""
    import importlib.util

    for module in ("torch.onnx", "onnxscript"):
        try:
            if importlib.util.find_spec(module) is None:
                return f"the ONNX exporters are not installed: no module {module}"
        except (ImportError, ValueError) as exc:
            return f"the ONNX exporters cannot be found: {type(exc).__name__}: {exc}"
    return ""
