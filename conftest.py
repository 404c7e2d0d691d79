"""Set-up for test runs in this repository: never shipped with the package.

This file sits at the repository's root, not in tests/, because it is set-up for the
checkout as a whole: pytest reads it on every run started in the repository (`pytest`,
`pytest tests`, `pytest tests/test_cache.py`, `pytest` inside tests/), `pytest_plugins`
belongs in such a top-level conftest (pytest refuses it in one found only while
collecting), and tests/ then holds the self-tests alone. It lies outside the installed
package (conformance/, fixtures/, cpp_harness/), so nothing here reaches a user's
`pytest --pyargs conformance`.

Hypothesis profiles for the self-tests, chosen with the HYPOTHESIS_PROFILE environment
variable (or pytest's --hypothesis-profile option):

    selftest       (the default) the same examples on every run, no example database,
                   no deadline: the self-tests and CI
    selftest-long  1000 examples where a test sets no number, new ones on every run,
                   failures remembered in the .hypothesis/ example database: a longer
                   local search, e.g.
                   HYPOTHESIS_PROFILE=selftest-long pytest tests/test_generated.py

A profile is loaded only when every path the run was given lies in tests/. The
conformance matrix (`pytest` at the root) runs its own property searches
(conformance/checks/property_search.py) with `hypothesis.settings` built at run time,
and a settings object inherits every field it does not set from the loaded profile:
those searches leave `backend` unset, which a profile could change. So `pytest`,
`pytest conformance` and a run of both conformance/ and tests/ keep Hypothesis's own
profile, and the matrix's verdicts never depend on this file. Should one of the
profiles below be loaded anyway (--hypothesis-profile), the searches still run the
same examples: the only field the profiles set that the searches leave to inheritance
is print_blob, which changes how a failing @given test reports itself, nothing else.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]


SELF_TESTS = Path(__file__).resolve().parent / "tests"
DEFAULT_PROFILE = "selftest"

settings.register_profile(
    "selftest", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "selftest-long", max_examples=1000, derandomize=False, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow])


def _runs_only_self_tests(config: pytest.Config) -> bool:
    if config.option.pyargs:
        return False
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if not path.is_relative_to(SELF_TESTS):
            return False
    return bool(config.args)


def pytest_configure(config: pytest.Config) -> None:
    _keep_installed_libraries_across_in_process_runs()
    if config.getoption("hypothesis_profile", None):  # --hypothesis-profile: Hypothesis loads it
        return
    if not _runs_only_self_tests(config):
        return
    name = os.environ.get("HYPOTHESIS_PROFILE", DEFAULT_PROFILE)
    if name not in ("selftest", "selftest-long", "default", "ci"):
        raise pytest.UsageError(f"HYPOTHESIS_PROFILE={name!r}: the profiles are selftest, "
                                "selftest-long, and Hypothesis's own default and ci")
    settings.load_profile(name)


def _keep_installed_libraries_across_in_process_runs() -> None:
    """Keep every module of an installed library that an in-process pytester run imports.

    Such a run (`pytester.runpytest`, in-process by default) drops the modules it imported
    when it ends, so that the next run imports the user's files afresh. Many installed
    libraries cannot be imported twice in one process: torch's modules register operator
    libraries (torch._inductor.test_operators, imported with torch._dynamo, and the
    quantized_decomposed operators) and Inductor registers cache artifacts, which torch
    refuses to do twice; onnx's and scipy's compiled modules load once per process (onnx
    aborts the process). Whichever self-test first imports such a library decides whether
    the later ones in that worker pass, so the order pytest-xdist happens to choose did.
    Keeping them is what a run in a fresh process would see anyway: the libraries as they
    were first imported. Modules from anywhere else (the run's own files, this checkout)
    are still dropped. pytester offers no option for this, so the snapshot class it
    builds is replaced; should pytest rename it, this fails loudly here."""
    from _pytest import pytester

    class KeepInstalledLibraries(pytester.SysModulesSnapshot):
        def __init__(self, preserve=None) -> None:
            super().__init__(preserve=lambda name: (is_installed_module(name)
                                                    or (preserve is not None and preserve(name))))

    pytester.SysModulesSnapshot = KeepInstalledLibraries


def _installed_library_roots() -> tuple[str, ...]:
    """Where installed modules live: the interpreter's library, every site-packages
    (a venv's, the system's it may see, the user's) and Debian's dist-packages."""
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    roots = [paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    roots += site.getsitepackages() + [site.getusersitepackages()]
    return tuple(sorted({os.path.join(os.path.realpath(root), "") for root in roots}))


INSTALLED_LIBRARY_ROOTS = _installed_library_roots()


def is_installed_module(name: str) -> bool:
    """Whether the module comes from an installed library (a built-in module counts, and
    a namespace package whose directories lie there, such as protobuf's google); a
    module imported from a run's own directory does not."""
    import sys

    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    if spec is not None and spec.origin in ("built-in", "frozen"):
        return True
    path = getattr(module, "__file__", None)
    places = [path] if path else list(getattr(module, "__path__", None) or [])
    return bool(places) and all(_real_path(place).startswith(INSTALLED_LIBRARY_ROOTS)
                                for place in places)


@functools.lru_cache(maxsize=None)
def _real_path(path: str) -> str:
    # every in-process run asks again for each of thousands of modules
    return os.path.realpath(path)
