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
    _keep_torch_collectives_imported()
    _keep_scipy_stats_imported()
    if config.getoption("hypothesis_profile", None):  # --hypothesis-profile: Hypothesis loads it
        return
    if not _runs_only_self_tests(config):
        return
    name = os.environ.get("HYPOTHESIS_PROFILE", DEFAULT_PROFILE)
    if name not in ("selftest", "selftest-long", "default", "ci"):
        raise pytest.UsageError(f"HYPOTHESIS_PROFILE={name!r}: the profiles are selftest, "
                                "selftest-long, and Hypothesis's own default and ci")
    settings.load_profile(name)


def _keep_torch_collectives_imported() -> None:
    """Import torch's collectives module before any in-process pytester run: such a run
    drops the modules it imported when it ends, and importing this one again registers
    its operator library again, which torch refuses; every later torch.export in the
    process (the dynamo ONNX exporter's too) then fails."""
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch.distributed._functional_collectives  # noqa: F401


def _keep_scipy_stats_imported() -> None:
    """Import scipy.stats before any in-process pytester run, for the same reason: a
    latency run imports it (conformance/latency/stats.py, the bootstrap of the speedup),
    the run drops it when it ends, and importing it again in a later in-process run
    fails with "cannot load module more than once per process" (numpy's and scipy's
    compiled modules load once per process). Without scipy installed there is nothing
    to keep, and the self-tests still collect: only a latency run needs it."""
    import importlib.util

    if importlib.util.find_spec("scipy") is not None:
        import scipy.stats  # noqa: F401
