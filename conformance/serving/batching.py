"""Micro-batching: concurrent requests queued into one call of the model.

A request waits at most `max_wait_s` for others; up to `max_batch` requests whose inputs
agree in everything but the batch size (dtype and the other dimensions of each input,
and the same keyword names) are concatenated along the first dimension, run once, and
each gets back its own rows of every output. A request that cannot share a batch (an
input without a batch dimension, or outputs whose first dimension is not the batch) runs
alone. Every client must get exactly the rows of its own inputs: the serve runtime's
self-tests check that under load, and a batcher that pads or reorders rows fails them."""
from __future__ import annotations

import collections
import queue
import threading
import time
from concurrent.futures import Future

# How long a request waits for its answer: a model call that hangs fails its requests
# instead of holding their connections for good.
ANSWER_TIMEOUT_S = 600.0


class Batcher:
    """Wraps a backend (args, kwargs) -> outputs with the same signature."""

    def __init__(self, backend, max_batch: int, max_wait_s: float):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"a batch of at least 1 and a wait of at least 0, got "
                             f"{max_batch} and {max_wait_s}")
        self.backend, self.max_batch, self.max_wait_s = backend, max_batch, max_wait_s
        self.pending: queue.Queue = queue.Queue()
        # how many model calls ran each batch size: what /health reports (`counts`)
        self.batches: collections.Counter = collections.Counter()
        self.counting = threading.Lock()
        threading.Thread(target=self._serve, name="batcher", daemon=True).start()

    def __call__(self, args: list, kwargs: dict) -> list:
        done: Future = Future()
        self.pending.put((args, kwargs, done))
        return done.result(timeout=ANSWER_TIMEOUT_S)

    def counts(self) -> dict[int, int]:
        with self.counting:
            return dict(sorted(self.batches.items()))

    def _count(self, size: int) -> None:
        with self.counting:
            self.batches[size] += 1

    def _serve(self) -> None:
        """The batcher's thread: it must outlive whatever one request brings."""
        while True:
            first = self.pending.get()
            try:
                self._run_next(first)
            except Exception as exc:  # a bug of the batcher: fail the request, keep serving
                if not first[2].done():
                    first[2].set_exception(exc)

    def _run_next(self, first) -> None:
        """Gather what arrives within the wait (or until the batch is full), then run
        the batch of the first request's shape, and each other request alone."""
        group, others = [first], []
        deadline = time.monotonic() + self.max_wait_s
        while len(group) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = self.pending.get(timeout=remaining)
            except queue.Empty:
                break
            (group if signature(item) == signature(first) else others).append(item)
        self._run(group)
        for item in others:
            self._run([item])

    def _run(self, group: list) -> None:
        """One call for the group when its requests can share one; otherwise, or when
        the shared call fails (a graph with a fixed batch size, say), one call each, so
        that a request's failure is its own."""
        if len(group) > 1 and signature(group[0]) is not None:
            try:
                answers = run_batch(self.backend, group)
            except Exception:
                answers = None
            if answers is not None:
                self._count(len(group))
                for (_, _, done), answer in zip(group, answers):
                    done.set_result(answer)
                return
        for args, kwargs, done in group:
            try:
                done.set_result(self.backend(args, kwargs))
            except Exception as exc:
                done.set_exception(exc)
            self._count(1)


def signature(item) -> tuple | None:
    """What requests must share to be batched: each input's dtype and dimensions after
    the first; None when an input has no batch dimension (or is no array at all)."""
    args, kwargs = item[0], item[1]
    arrays = [*args, *kwargs.values()]
    if not arrays or any(getattr(a, "ndim", 0) == 0 for a in arrays):
        return None
    return (tuple((str(a.dtype), a.shape[1:]) for a in arrays), tuple(kwargs))


def run_batch(backend, group: list) -> list[list] | None:
    """One call on the concatenated inputs; each request's rows of every output. None
    when the outputs cannot be split (an output whose first dimension is not the
    batch's): then each request runs alone."""
    import numpy as np

    sizes = [len(item[0][0]) if item[0] else len(next(iter(item[1].values())))
             for item in group]
    args = [np.concatenate([item[0][i] for item in group]) for i in range(len(group[0][0]))]
    kwargs = {name: np.concatenate([item[1][name] for item in group]) for name in group[0][1]}
    outputs = backend(args, kwargs)
    if any(o.ndim == 0 or o.shape[0] != sum(sizes) for o in outputs):
        return None
    bounds = np.cumsum([0, *sizes])
    return [[o[bounds[i]:bounds[i + 1]] for o in outputs] for i in range(len(group))]
