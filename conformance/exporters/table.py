"""The export paths: one row each, everything a path means to the suite.

Adding a path is one module (its exporter, and its loaders where a runtime needs
one) and one row here; `register` refuses a row that forgets a field or whose fields
disagree. The targets (`conformance.targets`) are these rows crossed with their
runtimes and devices, in the order of the rows.
"""
from __future__ import annotations

import dataclasses

from conformance.exporters import onnx, pt2, torchscript
from conformance.exporters.path import ALL, DEVICES, ExportPath, Runs, check_row
from conformance.runtimes.table import RUNTIMES

PATHS: dict[str, ExportPath] = {}


def register(row: ExportPath) -> ExportPath:
    """Add a path to the matrix (a plugin or conftest may add its own)."""
    if row.name in PATHS:
        raise ValueError(f"export path {row.name!r} is registered twice")
    check_row(row, RUNTIMES)
    PATHS[row.name] = row
    return row


# TorchScript in the Python interpreter, and in C++ through the libtorch harness.
TORCHSCRIPT_RUNTIMES = (Runs("torch", ALL, DEVICES), Runs("libtorch", ALL, DEVICES))
ONNX_RUNTIMES = (
    Runs("onnxruntime", ALL, DEVICES),
    Runs("onnxruntime-tuned", ALL, DEVICES),
    Runs("onnxruntime-noopt", ALL, ("cpu",)),
    # The reference evaluator is slow: small cases only.
    Runs("onnx-reference", "small", ("cpu",)),
)
# The artifact behind an HTTP server of its own (conformance.serving), for the cases
# tagged `http`: the TorchScript and ONNX files a deployment would serve.
SERVED = (Runs("serve", "http", ("cpu",)),)
ONNX_FILE_CHECKS = frozenset({"graph_valid", "io_names", "keeps_branches"})

for _row in (
    # A trace records the branch its example took, by design: no branch to generate.
    ExportPath(name="trace", export=torchscript.export_trace, suffix=".pt",
               opsets=((None, ALL),), runs_on=TORCHSCRIPT_RUNTIMES + SERVED,
               loaders={"torch": torchscript.load_torchscript}, branch=None,
               graph="torchscript", artifact_checks=frozenset({"keeps_branches"}),
               artifact_checks_on="torch", takes_any_size=True, specializes_size_one=False,
               scripts_control_flow=False, bakes_threads=False, inductor=False,
               compiler_for=frozenset(), flat_outputs_on=frozenset(), cost_timings={}),
    ExportPath(name="script", export=torchscript.export_script, suffix=".pt",
               opsets=((None, ALL),), runs_on=TORCHSCRIPT_RUNTIMES + SERVED,
               loaders={"torch": torchscript.load_torchscript}, branch="if",
               graph="torchscript", artifact_checks=frozenset({"keeps_branches"}),
               artifact_checks_on="torch", takes_any_size=True, specializes_size_one=False,
               scripts_control_flow=False, bakes_threads=False, inductor=False,
               compiler_for=frozenset(), flat_outputs_on=frozenset(), cost_timings={}),
    # The TorchScript-based exporter at opset 17, what most deployed models use; the
    # sweep (cases tagged `opset-sweep`): 10 is below the first opset with cubic Resize,
    # 20 the newest this exporter supports. A control-flow case is scripted first, as
    # the ONNX tutorial does, so its branch becomes an ONNX If node.
    ExportPath(name="onnx", export=onnx.export_onnx, suffix=".onnx",
               opsets=((17, ALL), (10, "opset-sweep"), (11, "opset-sweep"),
                       (13, "opset-sweep"), (20, "opset-sweep")),
               runs_on=ONNX_RUNTIMES + SERVED, loaders={}, branch="if", graph="onnx",
               artifact_checks=ONNX_FILE_CHECKS, artifact_checks_on="onnxruntime",
               takes_any_size=False, specializes_size_one=False, scripts_control_flow=True,
               bakes_threads=False, inductor=False, compiler_for=frozenset(),
               flat_outputs_on=frozenset(), cost_timings={}),
    # The dynamo exporter at its default opset; 18 is the oldest it supports. It goes
    # through torch.export, which cannot follow a Python `if` on a tensor: torch.cond.
    ExportPath(name="onnx-dynamo", export=onnx.export_onnx_dynamo, suffix=".onnx",
               opsets=((20, ALL), (18, "opset-sweep")), runs_on=ONNX_RUNTIMES, loaders={},
               branch="cond", graph="onnx", artifact_checks=ONNX_FILE_CHECKS,
               artifact_checks_on="onnxruntime", takes_any_size=False,
               specializes_size_one=True, scripts_control_flow=False, bakes_threads=False,
               inductor=False, compiler_for=frozenset(), flat_outputs_on=frozenset(),
               cost_timings={}),
    # torch.export to a saved program, loaded with torch.export.load(...).module().
    ExportPath(name="export", export=pt2.export_export, suffix=".pt2", opsets=((None, ALL),),
               runs_on=(Runs("torch", ALL, DEVICES),),
               loaders={"torch": pt2.load_exported_program}, branch="cond", graph="export",
               artifact_checks=frozenset({"keeps_branches"}), artifact_checks_on="torch",
               takes_any_size=False, specializes_size_one=True, scripts_control_flow=False,
               bakes_threads=False, inductor=False, compiler_for=frozenset(),
               flat_outputs_on=frozenset(), cost_timings={"export_export_s": "torch.export"}),
    # torch.compile, in process, nothing saved: Dynamo breaks the graph at a Python `if`
    # and guards on it. Inductor, and aot_eager as a cheap second opinion.
    ExportPath(name="compile", export=None, suffix=None, opsets=((None, ALL),),
               runs_on=(Runs("inductor", ALL, DEVICES), Runs("aot_eager", ALL, ("cpu",))),
               loaders={}, branch="if", graph=None,
               artifact_checks=frozenset({"compiles_fullgraph"}), artifact_checks_on="inductor",
               takes_any_size=True, specializes_size_one=False, scripts_control_flow=False,
               bakes_threads=False, inductor=True, compiler_for=frozenset({"inductor"}),
               flat_outputs_on=frozenset(),
               cost_timings={"compile_inductor_s": "torch.compile (Inductor)",
                             "compile_aot_eager_s": "torch.compile (aot_eager)"}),
    # An AOTInductor package compiled from the exported program: aoti_load_package in
    # Python, AOTIModelPackageLoader in the harness (which returns a vector of tensors).
    ExportPath(name="aoti", export=pt2.export_aoti, suffix=".pt2", opsets=((None, ALL),),
               runs_on=TORCHSCRIPT_RUNTIMES, loaders={"torch": pt2.load_aoti_package},
               branch="cond", graph=None, artifact_checks=frozenset(),
               artifact_checks_on=None, takes_any_size=False, specializes_size_one=True,
               scripts_control_flow=False, bakes_threads=True, inductor=True,
               compiler_for=frozenset({"torch", "libtorch"}),
               flat_outputs_on=frozenset({"libtorch"}),
               cost_timings={"export_aoti_s": "AOTInductor package"}),
):
    register(_row)

# The tuned variants (conformance.tuning): each a copy of its default's row that exports
# or loads as its tuning row says. A module saved frozen is optimized where it is loaded:
# by torch.jit.optimize_for_inference in Python, by the harness in C++.
for _default, _tuned, _changes in (
    # (served at their defaults only: the serve runtime checks the server, not the tuning)
    ("trace", "trace-tuned", dict(export=torchscript.export_trace_frozen,
                                  runs_on=TORCHSCRIPT_RUNTIMES,
                                  loaders={"torch": torchscript.load_torchscript_optimized})),
    ("script", "script-tuned", dict(export=torchscript.export_script_frozen,
                                    runs_on=TORCHSCRIPT_RUNTIMES,
                                    loaders={"torch": torchscript.load_torchscript_optimized})),
    # aot_eager would time and check the same graphs as compile's: Inductor only.
    ("compile", "compile-tuned", dict(runs_on=(Runs("inductor", ALL, DEVICES),),
                                      artifact_checks=frozenset(),
                                      artifact_checks_on=None,
                                      cost_timings={"compile_tuned_inductor_s":
                                                    "torch.compile (Inductor, tuned)"})),
    ("aoti", "aoti-tuned", dict(export=pt2.export_aoti_tuned,
                                cost_timings={"export_aoti-tuned_s":
                                              "AOTInductor package, tuned"})),
):
    register(dataclasses.replace(PATHS[_default], name=_tuned, **_changes))
