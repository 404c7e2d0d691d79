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


class Batcher:
    """Wraps a backend (args, kwargs) -> outputs with the same signature."""

    def __init__(self, backend, max_batch: int, max_wait_s: float):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"a batch of at least 1 and a wait of at least 0, got "
                             f"{max_batch} and {max_wait_s}")
        self.backend, self.max_batch, self.max_wait_s = backend, max_batch, max_wait_s
        self.pending: queue.Queue = queue.Queue()
        # how many model calls ran each batch size: what /health reports
        self.batches: collections.Counter = collections.Counter()
        threading.Thread(target=self._serve, name="batcher", daemon=True).start()

    def __call__(self, args: list, kwargs: dict) -> list:
        done: Future = Future()
        self.pending.put((args, kwargs, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            self._run_next(self.pending.get())

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
        try:
            if len(group) == 1 or signature(group[0]) is None:
                for args, kwargs, done in group:
                    done.set_result(self.backend(args, kwargs))
                    self.batches[1] += 1
                return
            answers = run_batch(self.backend, group)
            self.batches[len(group)] += 1
            for (_, _, done), answer in zip(group, answers):
                done.set_result(answer)
        except Exception as exc:
            for _, _, done in group:
                if not done.done():
                    done.set_exception(exc)


def signature(item) -> tuple | None:
    """What requests must share to be batched: each input's dtype and dimensions after
    the first; None when an input has no batch dimension."""
    args, kwargs = item[0], item[1]
    arrays = [*args, *kwargs.values()]
    if any(a.ndim == 0 for a in arrays):
        return None
    return (tuple((str(a.dtype), a.shape[1:]) for a in arrays), tuple(kwargs))


def run_batch(backend, group: list) -> list[list]:
    """One call on the concatenated inputs; each request's rows of every output. Outputs
    whose first dimension is not the batch's cannot be split: then each request runs
    alone."""
    import numpy as np

    sizes = [len(item[0][0]) if item[0] else len(next(iter(item[1].values())))
             for item in group]
    args = [np.concatenate([item[0][i] for item in group]) for i in range(len(group[0][0]))]
    kwargs = {name: np.concatenate([item[1][name] for item in group]) for name in group[0][1]}
    outputs = backend(args, kwargs)
    if any(o.ndim == 0 or o.shape[0] != sum(sizes) for o in outputs):
        return [backend(item[0], item[1]) for item in group]
    bounds = np.cumsum([0, *sizes])
    return [[o[bounds[i]:bounds[i + 1]] for o in outputs] for i in range(len(group))]
