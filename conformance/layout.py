"""Where the suite's files are: its caches (artifacts, harness builds), the built-in
cases' directory and the C++ harness sources. In a checkout they sit at the repository's top level (fixtures/,
cpp_harness/); an installed copy holds them inside the package (see pyproject.toml's
package-dir). Both are found through the import system, so either layout works."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "conformance"


def default_dir() -> Path:
    """The artifact cache's default directory."""
    return cache_root() / "artifacts"


def harness_build_dir() -> Path:
    """Where the libtorch harness is built, one directory per build key."""
    return cache_root() / "harness"


def package_dir(name: str) -> Path:
    """The directory of package `name`, found without running its __init__."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{name} is not installed with the suite: reinstall it "
                                  "(pip install .)")
    return Path(list(spec.submodule_search_locations)[0])


def builtin_expectations() -> Path:
    """The expectation table of the built-in cases."""
    return package_dir("conformance.fixtures") / "expectations.toml"


def imagenet_classes() -> Path:
    """ImageNet's class names by index (from torchvision's weights metadata, which ships
    them), for a served classifier's /predict."""
    return package_dir("conformance.fixtures") / "imagenet_classes.json"


def case_costs_file() -> Path:
    """The built-in cases' times in the CI and the nightly tier, measured (one table per
    property profile): the order xdist deals them in."""
    return package_dir("conformance.fixtures") / "case_costs.json"


def harness_sources() -> Path:
    """The C++ harness's CMake project: beside the package in a checkout, inside it
    when installed (a CMake project is no Python package for the import system to find)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "cpp_harness", package.parent / "cpp_harness"):
        if (candidate / "CMakeLists.txt").is_file():
            return candidate
    raise FileNotFoundError(f"the C++ harness sources are neither in {package} nor beside "
                            "it: reinstall the suite (pip install .)")
