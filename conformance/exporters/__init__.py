"""How a model leaves eager Python: the export paths.

`table` holds one row per path (`path.ExportPath`); each path's exporter, and its
loaders where a runtime needs one, live in a module of their own (`torchscript`,
`onnx`, `pt2`). `artifact` runs an exporter into a file with its facts beside it,
`cache` names and locks artifacts in the on-disk cache, and `fingerprint` describes
everything an artifact depends on for the cache's key.
"""
