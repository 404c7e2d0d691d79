"""Serve one artifact over HTTP, under waitress (a production WSGI server in pure Python,
a thread per request, so one copy of the model serves them all):

    python -m conformance.serving.server MODEL.pt [--port 0] [--threads N]
                                        [--max-batch N --max-wait-ms MS]
                                        [--classes FILE [--convert-to-rgb]]

It prints `serving http://HOST:PORT` once it listens (port 0: a free one), and serves
until it is stopped. `--app module:function` serves another app factory's app (called
with the artifact's path): the self-tests plant broken servers that way."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

DEFAULT_APP = "conformance.serving.app:create_app"


def app_factory(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's and ONNX Runtime's threads (default: theirs)")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="denormal floats as zero, in torch and ONNX Runtime alike")
    parser.add_argument("--max-batch", type=int, default=1,
                        help="batch up to this many concurrent requests (default 1: none)")
    parser.add_argument("--max-wait-ms", type=float, default=2.0,
                        help="how long a request waits for others to batch with")
    parser.add_argument("--classes", type=Path, default=None,
                        help="class names (JSON, by index): adds an image classifier's "
                             "/predict and its upload page at /")
    parser.add_argument("--convert-to-rgb", action="store_true",
                        help="/predict takes grayscale and transparent images, the gray "
                             "copied to each channel, the alpha dropped (default: refused)")
    parser.add_argument("--app", default=DEFAULT_APP, metavar="MODULE:FUNCTION")
    args = parser.parse_args(argv)
    from waitress.server import create_server

    from conformance.runtimes import thread_budget

    if args.threads:  # the suite's budget, applied as in its own process
        thread_budget.install(thread_budget.Budget(args.threads, args.flush_denormal))
    app = app_factory(args.app)(args.artifact, max_batch=args.max_batch,
                                max_wait_ms=args.max_wait_ms, classes=args.classes,
                                convert_to_rgb=args.convert_to_rgb)
    # enough request threads for every client of a load test to wait in the batcher
    server = create_server(app, host=args.host, port=args.port, threads=32)
    print(f"serving http://{args.host}:{server.effective_port}", flush=True)
    # The client reads that one line; whatever is printed later (a model's prints, a
    # traceback) goes to the log, never into a pipe nobody reads, which would fill up.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
