"""What runs an artifact: the runtimes.

`table` holds one row per runtime (`table.Runtime`); `onnx` loads ONNX files,
`libtorch` builds and drives the C++ harness, `loaders` calls what was loaded;
`fresh_process` is a new Python process that loads saved artifacts, `process` the
request/reply process both helpers are built on, and `thread_budget` the thread budget
every runtime of a latency run shares.
"""
