"""A cached artifact is reused only when nothing its model depends on changed, and only
when its bytes are the ones the export wrote."""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conformance import Case, pruning, random_inputs
from conformance.cases import import_file_as
from conformance.checks import catalog as checks
from conformance.checks.catalog import CheckFailure
from conformance.checks.subject import CaseState, Subject
from conformance.exporters import artifact as paths
from conformance.exporters import cache, fingerprint
from conformance.targets import Target
from tests.patching import exporter_of, patch_exporter

LINEAR_MODEL = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        return {body}
"""


@pytest.fixture
def user_module(tmp_path):
    """Writes `<name>.py` into tmp_path and imports it as `name`; again to change it."""
    names = []

    def load(name: str, text: str):
        file = tmp_path / f"{name}.py"
        file.write_text(textwrap.dedent(text))
        names.append(name)
        return import_file_as(file, name)

    yield load
    for name in names:
        sys.modules.pop(name, None)


def key_of(case: Case, path: str = "trace") -> str:
    """The key CaseState gives the case's artifact, computed as it computes it."""
    state = CaseState(case, "cpu", "unused")
    options = state.export_options(path, None)
    return cache.artifact_key(case, path, options, "cpu", state.model,
                              state.export_example(options))


def verdict(case: Case, artifacts, use_cache: bool = True) -> str:
    subject = Subject(CaseState(case, "cpu", artifacts, use_cache=use_cache),
                      Target("trace", "torch", "cpu"), reproduce="pytest <nodeid>")
    try:
        checks.matches_eager(subject)
    except CheckFailure as failure:
        return f"fail ({failure.kind})"
    return "pass"


def linear_case(module, name: str = "cached_linear") -> Case:
    return Case(name, module.Net, example=random_inputs((2, 4)))


def test_a_changed_helper_in_another_module_is_exported_again(user_module, tmp_path):
    user_module("cache_helpers", "def scale(x):\n    return x * 2\n")
    model = user_module("cache_model", "from cache_helpers import scale\n"
                        + LINEAR_MODEL.format(body="scale(self.linear(x))"))
    before = linear_case(model)
    key = key_of(before)
    artifacts = tmp_path / "artifacts"
    assert not CaseState(before, "cpu", artifacts).artifact("trace").cached
    assert CaseState(before, "cpu", artifacts).artifact("trace").cached

    user_module("cache_helpers", "def scale(x):\n    return x * 2 + 1\n")
    model = user_module("cache_model", "from cache_helpers import scale\n"
                        + LINEAR_MODEL.format(body="scale(self.linear(x))"))
    after = linear_case(model)
    assert key_of(after) != key
    assert not CaseState(after, "cpu", artifacts).artifact("trace").cached
    assert verdict(after, tmp_path / "fresh", use_cache=False) == "pass"
    assert verdict(after, artifacts) == verdict(after, tmp_path / "fresh", use_cache=False)


def test_a_changed_constant_in_the_model_module_changes_the_key(user_module):
    text = "SCALE = {}\n" + LINEAR_MODEL.format(body="self.linear(x) * SCALE")
    before = key_of(linear_case(user_module("cache_model", text.format(2.0))))
    assert key_of(linear_case(user_module("cache_model", text.format(3.0)))) != before


def test_a_changed_submodule_class_in_another_module_changes_the_key(user_module):
    block = """
    import torch


    class Block(torch.nn.Module):
        def forward(self, x):
            return torch.{}(x)
    """
    # The builder names no module: the class is found from the built model alone.
    case = Case("blocks", lambda: torch.nn.Sequential(
        torch.nn.Linear(4, 3), sys.modules["cache_blocks"].Block()), example=random_inputs((2, 4)))
    user_module("cache_blocks", block.format("relu"))
    before = key_of(case)
    user_module("cache_blocks", block.format("tanh"))
    assert key_of(case) != before


# A setting read from the environment when the model is built or its module imported:
# the source is the same from one run to the next, the value is not.
SETTING = "CONFORMANCE_TEST_CACHE_SETTING"

CONFIGURED_MODEL = """
import dataclasses
import os

import torch


@dataclasses.dataclass
class Cfg:
    scale: float


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.cfg = Cfg(scale=float(os.environ["{setting}"]))

    def forward(self, x):
        return self.linear(x) * self.cfg.scale
""".replace("{setting}", SETTING)


def test_a_stale_artifact_of_a_dataclass_setting_is_not_reused(user_module, monkeypatch,
                                                               tmp_path):
    case = linear_case(user_module("cache_model", CONFIGURED_MODEL))
    artifacts = tmp_path / "artifacts"
    monkeypatch.setenv(SETTING, "2")
    assert verdict(case, artifacts) == "pass"
    monkeypatch.setenv(SETTING, "3")
    assert not CaseState(case, "cpu", artifacts).artifact("trace").cached
    assert verdict(case, artifacts) == "pass"


OBJECT_MODEL = """
import enum
import os

import torch


class Mode(enum.Enum):
    SCALE = 1
    SHIFT = 2


class Settings:
    def __init__(self, scale):
        self.scale = scale
        self.modes = {Mode.SCALE, Mode.SHIFT}
        self.layers = [{"gain": scale}]
        self.owner = self  # a cycle, described once


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self._settings = Settings(float(os.environ["{setting}"]))

    def forward(self, x):
        return self.linear(x) * self._settings.layers[0]["gain"]
""".replace("{setting}", SETTING)


@pytest.mark.parametrize("model", [CONFIGURED_MODEL, OBJECT_MODEL],
                         ids=["dataclass setting", "object setting"])
def test_a_setting_with_another_value_changes_the_key(user_module, monkeypatch, model):
    case = linear_case(user_module("cache_model", model))
    monkeypatch.setenv(SETTING, "2")
    before = key_of(case)
    assert key_of(case) == before
    monkeypatch.setenv(SETTING, "3")
    assert key_of(case) != before


def test_a_setting_the_key_cannot_describe_exports_again(user_module):
    text = ("import threading\n"
            + LINEAR_MODEL.format(body="self.linear(x)").replace(
                "super().__init__()", "super().__init__()\n        self.lock = threading.Lock()"))
    case = linear_case(user_module("cache_model", text))
    assert fingerprint.describe(CaseState(case, "cpu", "unused").model.lock) is None
    assert key_of(case) != key_of(case)


def test_a_module_dict_used_by_forward_changes_the_key(user_module, monkeypatch):
    text = ("import os\nGAINS = {'x': float(os.environ['%s'])}\n" % SETTING
            + LINEAR_MODEL.format(body="self.linear(x) * GAINS['x']"))
    monkeypatch.setenv(SETTING, "2")
    before = key_of(linear_case(user_module("cache_model", text)))
    assert key_of(linear_case(user_module("cache_model", text))) == before
    monkeypatch.setenv(SETTING, "3")
    assert key_of(linear_case(user_module("cache_model", text))) != before


def test_a_module_global_no_code_uses_does_not_change_the_key(user_module, monkeypatch):
    # Such as the time a run started: read at import, used by nothing the model runs.
    text = ("import os\nRUN_STARTED = os.environ['%s']\n" % SETTING
            + LINEAR_MODEL.format(body="self.linear(x)"))
    monkeypatch.setenv(SETTING, "2024-01-01 10:00:00")
    before = key_of(linear_case(user_module("cache_model", text)))
    monkeypatch.setenv(SETTING, "2024-01-01 10:00:01")
    assert key_of(linear_case(user_module("cache_model", text))) == before


def test_a_module_global_the_code_uses_changes_the_key(user_module, monkeypatch):
    text = ("import os\nOFFSET = float(os.environ['%s'])\n" % SETTING
            + LINEAR_MODEL.format(body="self.linear(x) + OFFSET"))
    monkeypatch.setenv(SETTING, "2")
    before = key_of(linear_case(user_module("cache_model", text)))
    monkeypatch.setenv(SETTING, "3")
    assert key_of(linear_case(user_module("cache_model", text))) != before


def test_an_environment_variable_the_model_reads_when_it_runs_changes_the_key(
        user_module, monkeypatch):
    # read in forward, not at import: no global holds it, and the file is the same
    text = ("import os\n" + LINEAR_MODEL.format(
        body="self.linear(x) * (2 if os.environ.get('%s') == '1' and "
             "torch.jit.is_tracing() else 1)" % SETTING))
    monkeypatch.setenv(SETTING, "0")
    module = user_module("cache_model", text)
    before = key_of(linear_case(module))
    assert key_of(linear_case(module)) == before
    monkeypatch.setenv(SETTING, "1")
    assert key_of(linear_case(module)) != before
    monkeypatch.delenv(SETTING)
    assert key_of(linear_case(module)) not in (before,)


@pytest.mark.parametrize("read", ["'%s' in os.environ" % SETTING,
                                  "os.environ.get(NAME) is not None", "bool(dict(os.environ))"])
def test_every_way_a_model_reads_the_environment_when_it_runs_reaches_the_key(
        user_module, monkeypatch, read):
    text = ("import os\nNAME = '%s'\n" % SETTING + LINEAR_MODEL.format(
        body="self.linear(x) * (2 if %s and torch.jit.is_tracing() else 1)" % read))
    monkeypatch.delenv(SETTING, raising=False)
    module = user_module("cache_model", text)
    before = key_of(linear_case(module))
    monkeypatch.setenv(SETTING, "1")
    # a name the code writes out is in the key; one it does not (a variable, the whole
    # mapping) makes a key no later run computes: exported again, never reused on a guess
    assert key_of(linear_case(module)) != before


def test_a_global_of_another_module_the_code_reads_changes_the_key(user_module, monkeypatch):
    # `cache_settings` has no code of its own: SCALE is named where it is read.
    settings = "import os\nSCALE = float(os.environ['%s'])\n" % SETTING
    text = "import cache_settings\n" + LINEAR_MODEL.format(
        body="self.linear(x) * cache_settings.SCALE")
    monkeypatch.setenv(SETTING, "2")
    user_module("cache_settings", settings)
    before = key_of(linear_case(user_module("cache_model", text)))
    monkeypatch.setenv(SETTING, "3")
    user_module("cache_settings", settings)
    assert key_of(linear_case(user_module("cache_model", text))) != before


def test_other_weights_from_the_same_builder_change_the_key(tmp_path):
    weights = tmp_path / "weights.pt"

    def build():
        net = torch.nn.Linear(4, 3)
        net.load_state_dict(torch.load(weights))
        return net

    case = Case("loaded", build, example=random_inputs((2, 4)))
    torch.save({"weight": torch.zeros(3, 4), "bias": torch.zeros(3)}, weights)
    before = key_of(case)
    assert key_of(case) == before
    torch.save({"weight": torch.ones(3, 4), "bias": torch.zeros(3)}, weights)
    assert key_of(case) != before


class Shifted(torch.nn.Module):
    def __init__(self, shift: torch.Tensor):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, x):
        return self.linear(x) + self.shift


def test_a_changed_non_persistent_buffer_changes_the_key(tmp_path):
    shift = tmp_path / "shift.pt"
    case = Case("shifted", lambda: Shifted(torch.load(shift)), example=random_inputs((2, 4)))
    torch.save(torch.zeros(3), shift)
    before = key_of(case)
    torch.save(torch.ones(3), shift)
    assert "shift" not in CaseState(case, "cpu", "unused").model.state_dict()
    assert key_of(case) != before


def test_exporting_a_model_leaves_the_keys_of_its_other_paths_as_they_were():
    """torch.jit.script leaves `__overloads__` on each module it compiles. Counted, the
    keys of the paths exported after the script path in a process differed from those of
    a run that had loaded the script artifact from the cache: a warm rerun missed them."""
    case = Case("shifted", lambda: Shifted(torch.zeros(3)), example=random_inputs((2, 4)))
    state = CaseState(case, "cpu", "unused")
    options = state.export_options("export", None)

    def export_key():
        return cache.artifact_key(case, "export", options, "cpu", state.model,
                                  state.export_example(options))

    before = export_key()
    torch.jit.script(state.model)
    assert "__overloads__" in vars(state.model)  # what the script path leaves behind
    torch.jit.trace(state.model, state.example)
    assert export_key() == before


def test_example_shapes_and_values_change_the_key():
    large = Case("shaped", lambda: torch.nn.Conv2d(3, 2, 3), example=random_inputs((1, 3, 8, 8)))
    small = Case("shaped", lambda: torch.nn.Conv2d(3, 2, 3), example=random_inputs((1, 3, 6, 6)))
    assert key_of(large) != key_of(small)
    # The inputs themselves, whatever factory made them.
    state = CaseState(large, "cpu", "unused")
    options = state.export_options("trace", None)
    keys = {cache.artifact_key(large, "trace", options, "cpu", state.model, (inputs,))
            for inputs in (torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8))}
    assert len(keys) == 2


def test_another_version_of_an_imported_distribution_changes_the_key(user_module, monkeypatch):
    model = user_module("cache_model", "import numpy\n"
                        + LINEAR_MODEL.format(body="self.linear(x) * float(numpy.sqrt(2.0))"))
    case = linear_case(model)
    before = key_of(case)
    installed = fingerprint.distribution_version
    monkeypatch.setattr(fingerprint, "distribution_version",
                        lambda name: "0.0.1" if name == "numpy" else installed(name))
    assert key_of(case) != before


def test_the_default_dtype_changes_the_key():
    case = Case("plain_linear", lambda: torch.nn.Linear(4, 3), example=random_inputs((2, 4)))
    state = CaseState(case, "cpu", "unused")
    options = state.export_options("trace", None)
    before = cache.artifact_key(case, "trace", options, "cpu", state.model, state.example)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        after = cache.artifact_key(case, "trace", options, "cpu", state.model, state.example)
    finally:
        torch.set_default_dtype(previous)
    assert after != before


def test_a_change_in_the_suite_exporting_code_changes_the_key(user_module, tmp_path,
                                                              monkeypatch):
    case = linear_case(user_module("cache_model", LINEAR_MODEL.format(body="self.linear(x)")))
    before = key_of(case, "onnx-dynamo")
    # A copy of the exporting code where only a neighbour of the onnx exporter changed:
    # pt2.py, whose dynamic shapes onnx-dynamo uses.
    copy = tmp_path / "exporters"
    copy.mkdir()
    for module in Path(cache.__file__).parent.glob("*.py"):
        (copy / module.name).write_text(module.read_text())
    monkeypatch.setattr(cache, "__file__", str(copy / "cache.py"))
    assert key_of(case, "onnx-dynamo") == before
    (copy / "pt2.py").write_text((copy / "pt2.py").read_text() + "\n# another helper\n")
    assert key_of(case, "onnx-dynamo") != before


def facts_of(file):
    return json.loads(paths._facts_file(file).read_text())


def test_a_truncated_cached_file_is_exported_again(user_module, tmp_path):
    case = linear_case(user_module("cache_model", LINEAR_MODEL.format(body="self.linear(x)")))
    artifacts = tmp_path / "artifacts"
    file = CaseState(case, "cpu", artifacts).artifact("trace").file
    assert facts_of(file)["size"] == file.stat().st_size
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])

    again = CaseState(case, "cpu", artifacts).artifact("trace")
    assert not again.cached
    assert facts_of(again.file)["sha256"] == paths.content_digest(again.file)[1]
    assert paths.cached_artifact("trace", again.file).cached
    assert verdict(case, artifacts) == "pass"


def test_a_cached_file_without_its_facts_is_exported_again(user_module, tmp_path):
    case = linear_case(user_module("cache_model", LINEAR_MODEL.format(body="self.linear(x)")))
    artifacts = tmp_path / "artifacts"
    file = CaseState(case, "cpu", artifacts).artifact("trace").file
    paths._facts_file(file).unlink()
    assert not CaseState(case, "cpu", artifacts).artifact("trace").cached
    assert CaseState(case, "cpu", artifacts).artifact("trace").cached


def test_the_key_is_the_same_for_the_same_case_in_one_process_and_in_another(user_module,
                                                                             tmp_path):
    user_module("cache_helpers", "def scale(x):\n    return x * 2\n")
    text = "from cache_helpers import scale\n" + LINEAR_MODEL.format(body="scale(self.linear(x))")
    case = linear_case(user_module("cache_model", text))
    key = key_of(case)
    assert key_of(linear_case(user_module("cache_model", text))) == key

    repository = Path(__file__).resolve().parents[1]
    script = f"""
    import sys
    from pathlib import Path
    sys.path.insert(0, {str(repository)!r})
    from conformance.cases import import_file_as
    from tests.test_cache import key_of, linear_case
    import_file_as(Path({str(tmp_path)!r}) / "cache_helpers.py", "cache_helpers")
    model = import_file_as(Path({str(tmp_path)!r}) / "cache_model.py", "cache_model")
    print(key_of(linear_case(model)))
    """
    keys = {subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                           text=True, check=True, timeout=300).stdout.strip()
            for _ in range(2)}
    assert keys == {key}


def _export_in_a_process(directory, results):
    from conformance.checks.subject import CaseState

    case = Case("shared", torch.nn.Tanh, lambda: (torch.rand(2, 3),))
    results.put(CaseState(case, "cpu", directory).artifact("trace").cached)


def test_two_processes_exporting_one_artifact_export_it_once(tmp_path, monkeypatch):
    import multiprocessing
    import time as clock

    real = exporter_of("trace")
    log = tmp_path / "exports.log"

    def slow_trace(model, example, file, options):
        with open(log, "a") as calls:
            calls.write("export\n")
        clock.sleep(1.0)  # long enough for the other process to arrive meanwhile
        real(model, example, file, options)

    patch_exporter(monkeypatch, "trace", slow_trace)
    context = multiprocessing.get_context("fork")  # the children keep the patched exporter
    results = context.Queue()
    processes = [context.Process(target=_export_in_a_process, args=(tmp_path / "cache", results))
                 for _ in range(2)]
    for process in processes:
        process.start()
    cached = sorted(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    assert log.read_text().count("export") == 1
    assert cached == [False, True]


def test_the_suites_own_modules_do_not_enter_the_key(monkeypatch):
    # This module's globals reach the suite's own modules (cache, fingerprint). Their
    # state is the process's history (caches that fill, a package that gains an attribute
    # per subpackage imported), not the artifact's: two workers must agree on the key.
    case = Case("linear", lambda: torch.nn.Linear(4, 3), random_inputs((2, 4)))
    before = key_of(case)
    monkeypatch.setattr(fingerprint, "_RACY_NS", fingerprint._RACY_NS + 1)
    assert key_of(case) == before
    modules = fingerprint.code_fingerprint(case, torch.nn.Linear(4, 3))["modules"]
    assert not [name for name in modules if name.startswith("conformance")], modules


def test_a_built_in_cases_own_module_is_part_of_the_key():
    from conformance.fixtures import BUILTIN_CASES

    case = next(c for c in BUILTIN_CASES if c.name == "my_cell")
    modules = fingerprint.code_fingerprint(case, CaseState(case, "cpu", "unused").model)
    assert "conformance.fixtures.seed_models" in modules["modules"]


class Plain(torch.nn.Module):
    def forward(self, x):
        return x * 2


@pytest.mark.parametrize("cause, kept", [
    (RuntimeError("unsupported operator"), True), (MemoryError(), False),
    (OSError("disk full"), False),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 2 GB"),
     False),
    (RuntimeError("C++ compile error: g++ was killed by signal 9"), False)])
def test_an_export_failure_is_kept_under_the_artifacts_key_unless_transient(
        tmp_path, monkeypatch, cause, kept):
    # the calls are counted in a file: a list the exporter grows would be state of the
    # patched table that the model's code fingerprint reaches, and change the key
    tally = tmp_path / "calls"

    def failing(model, example, file, options):
        with open(tally, "a") as handle:
            handle.write("x")
        raise cause

    def calls() -> int:
        return len(tally.read_text())

    patch_exporter(monkeypatch, "trace", failing)
    case = Case("doubler", Plain, example=random_inputs((2, 3)))
    assert verdict(case, tmp_path / "cache") == "fail (export-error)"
    subject = Subject(CaseState(case, "cpu", tmp_path / "cache"), Target("trace", "torch", "cpu"))
    with pytest.raises(CheckFailure, match="kept from an earlier run" if kept else
                       type(cause).__name__) as again:
        checks.matches_eager(subject)
    assert again.value.kind == "export-error"
    assert calls() == (1 if kept else 2)  # a kept failure is not exported again
    assert verdict(case, tmp_path / "cache", use_cache=False) == "fail (export-error)"
    assert calls() == (2 if kept else 3)  # without the cache it is


def _age(files, days: float) -> None:
    then = time.time() - days * pruning.DAY_S
    for file in files:
        os.utime(file, (then, then))


def test_pruning_removes_what_no_run_used_for_the_days_given_with_everything_beside_it(
        tmp_path, capsys):
    cache_dir = tmp_path / "cache"  # a folder per case, as a session keeps it
    verdict(Case("doubler", Plain, example=random_inputs((2, 3))), cache_dir / "doubler")
    old = cache_dir / "old_case"
    old.mkdir()
    stale = [old / "old_case-onnx-abc.onnx", old / "old_case-onnx-abc.onnx.json",
             old / "old_case-onnx-abc.onnx.lock", old / "old_case-trace-def.pt.failed.json",
             old / ".old_case-export-123.pt2.4242.partial"]
    for file in stale:
        file.write_text("x")
    _age(stale, 30)
    fresh = sorted((cache_dir / "doubler").iterdir())
    assert len(fresh) == 3  # the artifact, its facts and its lock
    _age(fresh[:1], 30)  # the artifact's own bytes are old; its facts say it was used now
    assert pruning.main(["--artifacts-dir", str(cache_dir), "--unused-days", "14",
                         "--dry-run"]) == 0
    assert "would remove 3 artifacts unused for 14 days" in capsys.readouterr().out
    assert all(file.exists() for file in stale)
    pruning.main(["--artifacts-dir", str(cache_dir), "--unused-days", "14"])
    assert "removed 3 artifacts" in capsys.readouterr().out
    assert not any(file.exists() for file in stale)
    assert sorted((cache_dir / "doubler").iterdir()) == fresh


def test_a_run_that_reuses_an_artifact_or_a_kept_failure_marks_it_used(tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    case = Case("doubler", Plain, example=random_inputs((2, 3)))
    assert verdict(case, cache_dir / "doubler") == "pass"
    _age((cache_dir / "doubler").iterdir(), 30)
    assert len(pruning.prune(cache_dir, 14, dry_run=True).removed) == 1
    assert verdict(case, cache_dir / "doubler") == "pass"  # reused: used now
    pruned = pruning.prune(cache_dir, 14)
    assert not pruned.removed and pruned.kept == pruning.entries(cache_dir)

    def failing(model, example, file, options):
        raise RuntimeError("unsupported operator")

    patch_exporter(monkeypatch, "trace", failing)
    failed = Case("failing", Plain, example=random_inputs((3, 3)))
    assert verdict(failed, cache_dir / "failing") == "fail (export-error)"
    _age((cache_dir / "failing").iterdir(), 30)
    assert verdict(failed, cache_dir / "failing") == "fail (export-error)"  # the kept failure, used now
    assert not pruning.prune(cache_dir, 14).removed
