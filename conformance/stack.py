"""The stack is checked once, before any cell runs, and a stack that cannot work stops the
session with one message: a torchvision built for another torch loads without its
compiled operators, and every cell of every vision case would then fail on its own with
"eager raised RuntimeError", the suite noticing nothing wrong with the stack.

Checked: torchvision is the release made for this torch (torchvision 0.N+15 goes with
torch 2.N) and of the same build (`+cpu`, `+cu130`), its compiled operators load, and
the ONNX exporters import. `builds()` names the exact builds for the header and the
records (package metadata drops the local build tag)."""
from __future__ import annotations

import functools

# torchvision's minor release for a torch 2.x minor release
TORCHVISION_OFFSET = 15


@functools.lru_cache(maxsize=1)
def builds() -> dict[str, str]:
    """The exact builds: versions with their local tag, CUDA's version, torch's commit."""
    import torch

    found = {"torch": torch.__version__, "cuda": torch.version.cuda or "none",
             "torch_git": (torch.version.git_version or "")[:12]}
    try:
        import torchvision

        found["torchvision"] = torchvision.__version__
    except ImportError:
        found["torchvision"] = "not installed"
    return found


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
    """torchvision's compiled operators (nms, roi_align) must load into this torch."""
    import importlib

    import torch

    try:
        importlib.import_module("torchvision")  # registers its operators
        torch.ops.torchvision.nms
    except (AttributeError, RuntimeError, OSError, ImportError) as exc:
        return (f"torchvision's compiled operators do not load into this torch "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
                f"its build is for another torch")
    return ""


def onnx_exporter_problem() -> str:
    """Both ONNX exporters must import: the TorchScript-based one and the dynamo one
    (onnxscript)."""
    import importlib

    try:
        for module in ("torch.onnx", "onnxscript"):
            importlib.import_module(module)
    except Exception as exc:  # any import-time failure: a broken stack
        return f"the ONNX exporters do not import: {type(exc).__name__}: {exc}"
    return ""
