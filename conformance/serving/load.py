"""A load test of a served artifact: many concurrent clients, each sending its own
inputs, each answer checked against the reference's answer for those inputs.

    python -m conformance.serving.load MODEL.pt --shape 1,3,224,224 \\
        [--clients 16] [--requests 1000] [--max-batch 8 --max-wait-ms 2]

The reference is the artifact run in this process one request at a time (the self-tests
use eager), so what the test finds wrong is the server's: batches that pad, reorder or
mix clients' rows, outputs that lose bits on the wire, answers lost under load."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable


@dataclasses.dataclass
class LoadResult:
    requests: int
    clients: int
    wrong: list[str]  # what was wrong with each wrong answer
    lost: list[str]  # requests that got no answer, and why
    latencies_s: list[float]
    seconds: float
    batches: dict[int, int] | None  # the server's model calls per batch size, if it batches

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile_ms(self, q: float) -> float:
        from conformance.latency.stats import quantile

        return quantile(self.latencies_s, q) * 1e3

    def describe(self) -> str:
        batched = ""
        if self.batches:
            calls = sum(self.batches.values())
            many = {size: count for size, count in self.batches.items() if size > 1}
            batched = (f"; {calls} model calls, {sum(many.values())} of them batches of 2 to "
                       f"{max(many, default=1)}")
        return (f"{self.requests} requests from {self.clients} clients in {self.seconds:.1f} "
                f"s: {self.throughput:.0f} requests/s, p50 {self.percentile_ms(0.5):.1f} ms, "
                f"p99 {self.percentile_ms(0.99):.1f} ms; {len(self.wrong)} wrong, "
                f"{len(self.lost)} lost{batched}")


def run_load(served, inputs: Callable[[int], tuple], reference: Callable, clients: int,
             requests: int, tolerance=None, timeout_s: float = 600.0) -> LoadResult:
    """`requests` calls of `served`, `clients` at a time, the i-th on `inputs(i)`; then
    each answer compared with `reference(*inputs(i))`, as matches_eager compares (the
    case's `tolerance`, or the dtype's). The references are computed after the load, so
    that they do not take the server's cores while it is timed."""
    answers, lost, latencies = {}, [], []
    lock = threading.Lock()

    def one(i: int) -> None:
        started = time.perf_counter()
        try:
            answer = served(*inputs(i))
        except Exception as exc:
            with lock:
                lost.append(f"request {i}: {type(exc).__name__}: {str(exc)[:200]}")
            return
        took = time.perf_counter() - started
        with lock:
            answers[i] = answer
            latencies.append(took)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(one, i) for i in range(requests)]:
            future.result(timeout=timeout_s)
    seconds = time.perf_counter() - started
    wrong = [f"request {i}: {problem}" for i, answer in sorted(answers.items())
             if (problem := mismatch(answer, reference(*inputs(i)), tolerance))]
    return LoadResult(requests, clients, wrong, lost, latencies, seconds, None)


def mismatch(answer: list, expected, tolerance=None) -> str:
    """What differs between the served answer and the reference's (its tensor leaves),
    by matches_eager's rule (conformance.checks.compare.allowed_error); a NaN must meet
    a NaN."""
    import torch
    from torch.utils import _pytree

    from conformance.checks.compare import allowed_error, tolerance_for

    leaves = [t for t in _pytree.tree_leaves(expected) if isinstance(t, torch.Tensor)]
    if len(answer) != len(leaves):
        return f"{len(answer)} outputs, expected {len(leaves)}"
    for i, (got, want) in enumerate(zip(answer, leaves)):
        want = want.detach().cpu()
        if got.shape != want.shape or got.dtype != want.dtype:
            return (f"output {i} is {got.dtype} {tuple(got.shape)}, expected "
                    f"{want.dtype} {tuple(want.shape)}")
        error = (got.double() - want.double()).abs()
        same = (got == want) | (got.isnan() & want.isnan()) if got.is_floating_point() \
            else got == want
        bad = ~same & ~(error <= allowed_error(want, tolerance_for(want, tolerance)))
        if bad.any():
            return f"output {i} differs by up to {error[bad].max().item():.3g}"
    return ""


def in_process_reference(artifact: Path) -> Callable:
    """The artifact in this process, one request at a time: TorchScript or ONNX Runtime."""
    from conformance.serving.backends import backend_for

    backend = backend_for(artifact)

    def reference(*inputs, **keywords):
        import torch

        outputs = backend([x.numpy() for x in inputs], {k: x.numpy() for k, x in keywords.items()})
        return [torch.from_numpy(o) for o in outputs]
    return reference


def main(argv: list[str] | None = None) -> int:
    import torch

    from conformance.serving.client import ServedModel, stop_all

    parser = argparse.ArgumentParser(description="Load-test a served artifact")
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--shape", required=True,
                        help="one request's input shape, e.g. 1,3,224,224")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    args = parser.parse_args(argv)
    shape = tuple(int(d) for d in args.shape.split(","))
    served = ServedModel(args.artifact, batching=(args.max_batch, args.max_wait_ms))
    try:
        result = run_load(served, lambda i: (torch.randn(shape, generator=torch.Generator()
                                                         .manual_seed(i)),),
                          in_process_reference(args.artifact), args.clients, args.requests)
        result.batches = served.batches()
    finally:
        stop_all()
    print(result.describe())
    for line in (result.wrong + result.lost)[:20]:
        print("  " + line)
    return 1 if result.wrong or result.lost else 0


if __name__ == "__main__":
    sys.exit(main())
