"""A served model under load, in its serve latency cell's record beside the round trips:
many concurrent clients, each request its own inputs, sent to a server of the artifact
that batches them; its throughput and latency percentiles, and its throughput as a
multiple of eager's in this process (one call after another, measured in the same cell).

Every answer is checked against the artifact run in this process on the same inputs, as
matches_eager compares: a server that mixes clients' rows, pads batches wrongly or loses
requests under load fails the cell, with the first answers that were wrong."""
from __future__ import annotations

import dataclasses

from conformance.calling import split
from conformance.checks.subject import Subject


@dataclasses.dataclass(frozen=True)
class LoadSettings:
    requests: int = 256
    clients: int = 16
    max_batch: int = 8  # the server's micro-batching (conformance.serving.batching)
    max_wait_ms: float = 2.0

    def describe(self) -> dict:
        return dataclasses.asdict(self)


def varied(example: tuple, i: int) -> tuple:
    """The example with a tenth of each float tensor's spread added as seeded noise:
    each request its own inputs (integer inputs, such as token ids, are kept)."""
    import torch

    from conformance.checks.probes import _floats

    generator = torch.Generator().manual_seed(i)

    def noisy(value):
        spread = value.float().std().nan_to_num(1.0).item() if value.numel() > 1 else 1.0
        noise = torch.randn(value.shape, generator=generator).to(value.dtype)
        return value + noise * (0.1 * (spread or 1.0))
    return _floats(example, noisy)


def request_inputs(state, reference):
    """Each request's inputs, and what they are: the example with noise of its own, unless
    the artifact refuses noisy inputs (a float mask, a bounded input), then the example
    itself, with which a batcher that mixes clients' rows cannot be seen (the record says
    so)."""
    try:
        args, kwargs = split(varied(state.example, 0), state.keywords)
        reference(*args, **kwargs)
    except Exception:
        return (lambda i: state.example), ("the example for every request (the artifact "
                                           "refuses noisy inputs): mixed rows are invisible")
    return (lambda i: varied(state.example, i)), "the example with seeded noise per request"


def served_load(subject: Subject, eager_median_s: float, settings: LoadSettings) -> dict:
    """The load's figures for the record; CheckFailure when an answer was wrong or lost."""
    from conformance.checks.catalog import fail
    from conformance.serving import client
    from conformance.serving.load import in_process_reference, run_load

    state, file = subject.state, subject.artifact.file
    reference = in_process_reference(file)
    inputs, described = request_inputs(state, reference)

    def call(target, i: int):
        args, kwargs = split(inputs(i), state.keywords)
        return target(*args, **kwargs)

    served = client.ServedModel(file, threads=client.session_threads(),
                                batching=(settings.max_batch, settings.max_wait_ms))
    try:
        result = run_load(lambda i: call(served, i), lambda i: (i,),
                          lambda i: call(reference, i), settings.clients, settings.requests,
                          state.case.tolerance)
        result.batches = served.batches()
    finally:  # one batching server per serve cell would pile up over a nightly
        client.stop(served.server)
    if result.wrong or result.lost:
        fail(subject, "latency", f"under load, {len(result.wrong)} answers were wrong and "
             f"{len(result.lost)} lost: {result.describe()}",
             "\n".join((result.wrong + result.lost)[:5]))
    return {**load_record(result, eager_median_s, settings), "inputs": described}


def load_record(result, eager_median_s: float, settings: LoadSettings) -> dict:
    from conformance.latency.stats import quantile

    latencies = [round(s, 9) for s in result.latencies_s]
    return {**settings.describe(), "seconds": round(result.seconds, 6),
            "throughput_rps": result.throughput,
            "throughput_over_eager": result.throughput * eager_median_s,
            "p50_s": quantile(latencies, 0.5), "p90_s": quantile(latencies, 0.9),
            "p99_s": quantile(latencies, 0.99),
            "batches": {str(size): n for size, n in (result.batches or {}).items()}}
