"""Latency: each target timed against eager, interleaved in one run (`pytest --latency`).

A plugin of its own (`plugin`), on top of the conformance core: `measure` takes the
samples, `stats` and `summary` make speedups and the regression gate of them, and
`memory` measures peak memory in a process of its own.
"""
