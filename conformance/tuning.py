"""Each backend as its documentation says to ship it for inference: the tuned variants.

A target at its defaults is what a backend does untouched; its tuned variant applies
what the backend's own documentation recommends for inference. One row per variant:
what it sets, why (the documentation's reason, and what was measured where a setting
was left out), and where the documentation says so. The variants are targets like any
other (`trace-tuned-torch-cpu`, `compile-tuned-inductor-cpu`,
`onnx-op17-onnxruntime-tuned-cpu`): they get every conformance check, since freezing
and graph rewrites change numerics, and a latency cell times them beside their defaults.

The code that applies a row lives with its path or runtime (its exporter, loader or
compile); it reads the settings from here, so a record's `settings` are the ones used.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

DEFAULT = "default"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tuning:
    name: str  # the export path or runtime it is (`trace-tuned`, `onnxruntime-tuned`)
    tunes: str  # the path or runtime it is a variant of
    settings: Mapping[str, Any]  # what it sets, as records show it
    reason: str
    source: str  # the documentation that recommends it


TUNINGS: dict[str, Tuning] = {}


def register(row: Tuning) -> Tuning:
    if row.name in TUNINGS:
        raise ValueError(f"tuning {row.name!r} is registered twice")
    TUNINGS[row.name] = row
    return row


# Freezing makes the weights constants, so Inductor folds them and prepacks them for
# oneDNN's convolution and linear kernels. It is read when Dynamo captures the graph, not
# only when Inductor compiles it, so torch.compile's `options=` does not give it (measured
# on resnet18 at one thread: 1.03x over eager with options={"freezing": True}, 1.65x with
# the config set): the tuned compile sets the config around each call (about 3 us).
# max-autotune is left out on the CPU: with freezing it gave 1.58x against freezing's
# 1.69x on resnet18 at one thread, and adds seconds of autotuning to the compile.
INDUCTOR_FREEZING = {"torch._inductor.config.freezing": True}

for _row in (
    Tuning(name="trace-tuned", tunes="trace",
           settings={"torch.jit.freeze": "before saving",
                     "torch.jit.optimize_for_inference": "after loading"},
           reason="freezing inlines the weights and attributes as constants; "
                  "optimize_for_inference then folds batch norms into convolutions and "
                  "moves convolutions to oneDNN (MKLDNN) kernels. It runs after loading: "
                  "its oneDNN constants cannot be saved (torch.jit.save succeeds, "
                  "torch.jit.load fails: \"required keyword attribute 'value' is "
                  "undefined\"). Channels-last is not set: oneDNN's blocked layout replaces it",
           source="https://pytorch.org/docs/stable/generated/torch.jit.optimize_for_inference"
                  ".html"),
    Tuning(name="script-tuned", tunes="script",
           settings={"torch.jit.freeze": "before saving",
                     "torch.jit.optimize_for_inference": "after loading"},
           reason="as trace-tuned, for a scripted module",
           source="https://pytorch.org/docs/stable/generated/torch.jit.freeze.html"),
    Tuning(name="compile-tuned", tunes="compile", settings=INDUCTOR_FREEZING,
           reason="freezing lets Inductor fold the weights and prepack them for oneDNN; "
                  "Inductor's CPU inference figures are measured with it. Channels-last is "
                  "not set: Inductor picks the layout of convolutions itself "
                  "(torch._inductor.config.layout_optimization, on by default)",
           source="torch/_inductor/config.py (freezing, TORCHINDUCTOR_FREEZING=1); "
                  "https://pytorch.org/blog/accelerated-cpu-inference/"),
    Tuning(name="aoti-tuned", tunes="aoti",
           settings={"inductor_configs": {"freezing": True}, "exported under": "torch.no_grad()"},
           reason="freezing as for compile-tuned, through aoti_compile_and_package's "
                  "inductor_configs; the program is exported without autograd, which "
                  "freezing needs to treat the weights as constants (exported with grad "
                  "enabled, the same configs gave 0.73x over eager on resnet18, 1.69x without)",
           source="https://pytorch.org/docs/stable/torch.compiler_aot_inductor.html"),
    Tuning(name="onnxruntime-tuned", tunes="onnxruntime",
           settings={"graph_optimization_level": "ORT_ENABLE_ALL, offline",
                     "optimized_model_filepath": "saved once beside the artifact, loaded "
                                                 "with optimizations off"},
           reason="ONNX Runtime's offline mode: the full level's rewrites (constant "
                  "folding, fusions, the NCHWc layout) are made once and saved, so a session "
                  "starts without them; the steady state is the full level's, which is also "
                  "ONNX Runtime's default. The saved model is specific to the machine and "
                  "execution provider, as the documentation warns, so it is made where it runs",
           source="https://onnxruntime.ai/docs/performance/model-optimizations/"
                  "graph-optimizations.html"),
):
    register(_row)


def tuning_of(path: str, runtime: str) -> Tuning | None:
    """The tuning a target applies: its path's or its runtime's, or None at defaults."""
    return TUNINGS.get(path) or TUNINGS.get(runtime)


def settings_of(path: str, runtime: str) -> dict:
    """What a record says of a target's settings: its tuning and what that sets, or that
    the backend runs at its defaults."""
    found = tuning_of(path, runtime)
    if found is None:
        return {"tuning": DEFAULT}
    return {"tuning": found.name, **found.settings}


def inductor_config(name: str) -> dict[str, Any]:
    """A tuning's Inductor settings as torch._inductor.config attribute names and values."""
    prefix = "torch._inductor.config."
    return {key[len(prefix):]: value for key, value in TUNINGS[name].settings.items()
            if key.startswith(prefix)}
