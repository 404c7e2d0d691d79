"""The stack is checked once, before any cell runs, and a stack that cannot work stops the
session with one message: a torchvision built for another torch loads without its
compiled operators, and every cell of every vision case would then fail on its own with
"eager raised RuntimeError", the suite noticing nothing wrong with the stack.

Checked: torchvision is the release made for this torch (torchvision 0.N+15 goes with
torch 2.N) and of the same build (`+cpu`, `+cu130`), its compiled operators load, and
the ONNX exporters are installed. `builds()` names the exact builds for the header and the
records (package metadata drops the local build tag). For tox, `python -m conformance.stack
--tox-env NAME --tox-ini FILE` also refuses an environment that resolved to the pair
another environment of tox.ini pins (an unpinned `torch-newest` where pip offers nothing
newer): its run would only repeat the other's."""
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


def pinned_pairs(tox_ini) -> dict[str, tuple[str, str]]:
    """Each tox environment of the matrix (`testenv:torch...`) that pins torch and
    torchvision: its pair of versions."""
    import configparser
    import re

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(tox_ini)
    pairs = {}
    for section in parser.sections():
        deps = parser.get(section, "deps", fallback="")
        found = dict(re.findall(r"^\s*(torch|torchvision)\s*={2,3}\s*(\S+)\s*$", deps, re.M))
        if section.startswith("testenv:torch") and len(found) == 2:
            pairs[section.split(":", 1)[1]] = (found["torch"], found["torchvision"])
    return pairs


def repeated_stack(env: str, tox_ini, installed: dict[str, str]) -> str:
    """What another environment of tox.ini already runs when this one resolved to the
    pair it pins (an unpinned `torch-newest` where pip offers nothing newer); "" when
    this environment's stack is its own."""
    from packaging.version import Version

    def public(version: str) -> str:
        return Version(version).public

    pairs = pinned_pairs(tox_ini)
    mine = (public(installed["torch"]), public(installed["torchvision"]))
    for other, pair in pairs.items():
        if other != env and tuple(map(public, pair)) == mine:
            why = ("Both environments pin that pair in tox.ini" if env in pairs else
                   f"The newest torch pip installs here is {mine[0]} (its index, or a "
                   f"constraints file in pip's configuration, offers none newer); where pip "
                   f"finds a newer one, {env} runs it")
            return (f"{env} resolved to torch {installed['torch']} and torchvision "
                    f"{installed['torchvision']}, the pair {other} pins: its run would repeat "
                    f"{other}'s. {why}")
    return ""


def main(argv: list[str] | None = None) -> int:
    """`python -m conformance.stack --tox-env NAME --tox-ini FILE`: exit 1 with one message
    when this stack cannot run the suite, or repeats another environment's pinned pair."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--tox-env", required=True)
    parser.add_argument("--tox-ini", required=True)
    args = parser.parse_args(argv)
    problems = stack_problems()
    if not problems and builds()["torchvision"] != "not installed":
        problems = [p for p in [repeated_stack(args.tox_env, args.tox_ini, builds())] if p]
    for problem in problems:
        print(f"conformance: {problem}", file=sys.stderr)
    if not problems:
        print(f"conformance: {args.tox_env} runs torch {builds()['torch']}, torchvision "
              f"{builds()['torchvision']}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
