"""The session object: where artifacts go, and what it leaves behind."""
from pathlib import Path

import torch

from conformance.checks.subject import CaseState
from conformance.session import ConformanceSession, Options
from conformance.targets import Target, loader_name
from tests import broken_models


def options(tmp_path: Path, cache: bool) -> Options:
    return Options(cases=[], builtin_cases=False, expectation_files=[],
                   results=tmp_path / "records.jsonl", artifact_dir=tmp_path / "cache",
                   artifact_cache=cache, fresh_process_timeout=60, required=[])


def test_with_the_cache_artifacts_go_to_the_cache_and_stay(tmp_path):
    session = ConformanceSession(options(tmp_path, cache=True))
    assert session.artifact_dir == tmp_path / "cache"
    session.artifact_dir.mkdir()
    session.close()
    assert session.artifact_dir.exists()


def test_without_the_cache_the_scratch_directory_is_removed_at_the_end(tmp_path):
    session = ConformanceSession(options(tmp_path, cache=False))
    scratch = session.artifact_dir
    assert scratch.exists() and scratch != tmp_path / "cache"
    (scratch / "model.onnx").write_bytes(b"x")
    session.close()
    assert not scratch.exists()


def test_the_fresh_process_can_be_used_again_after_it_was_closed(tmp_path):
    session = ConformanceSession(options(tmp_path, cache=True))
    state = CaseState(broken_models.linear_case(), "cpu", tmp_path / "cache")
    artifact = state.artifact("script")
    for _ in range(2):
        outputs, _ = session.fresh_process.run(loader_name(Target("script", "torch")), artifact.file,
                                         state.example, "cpu")
        expected = state.eager("example", state.example)
        assert torch.allclose(outputs, expected, rtol=1e-5, atol=1e-6)
        session.close()


def test_a_case_holds_only_its_latest_loaded_artifacts(tmp_path):
    from conformance import Case, random_inputs
    from conformance.checks.subject import KEEP_LOADED

    state = CaseState(Case("held", broken_models.Linear, example=random_inputs((2, 4))), "cpu",
                      tmp_path)
    targets = [Target("trace", "torch", "cpu"), Target("script", "torch", "cpu"),
               Target("export", "torch", "cpu"), Target("onnx", "onnxruntime", "cpu", 17),
               Target("onnx", "onnxruntime-noopt", "cpu", 17)]
    first = state.loaded(targets[0])
    assert state.loaded(targets[0]) is first  # held while the case's cells use it
    for target in targets[1:]:
        state.loaded(target)
    held = [key[1] for key in state._memo if key[0] == "loaded"]
    assert held == targets[-KEEP_LOADED:]  # the oldest went, the newest stayed
    assert state.loaded(targets[0]) is not first  # loaded again when asked again
    state.close()
