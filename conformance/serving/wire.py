"""Tensors over HTTP without loss: a request or answer body is a numpy .npz archive (one
array per tensor, named by position, keyword inputs as `kw:<name>`), which keeps every
bit and the dtype and shape of each array. JSON would round floats; the suite compares
outputs to the last bit that a tolerance allows, so the wire must carry them all.

For clients without numpy (curl, a browser), the same names map to tensors in a JSON
object, `{"0": {"dtype": "float32", "shape": [1, 4], "data": [0.5, ...]}}`, data flat in
row-major order (or nested), non-finite floats as "NaN", "Infinity", "-Infinity". It is
lossless too, as long as floats are printed with enough digits: the server prints the
shortest decimal that reads back to the same double, and every float16 and float32 value
is a double exactly. (A NaN is sent as "NaN": its sign and payload are not kept.)

bfloat16 has no numpy dtype and is refused with a message, not converted."""
from __future__ import annotations

import io
import json
import math
import threading

CONTENT_TYPE = "application/x-npz"
JSON_TYPE = "application/json"
KEYWORD = "kw:"
# The dtypes a JSON tensor may name: numpy's names
JSON_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
               "bool")
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
# numpy reads each .npy header with ast.literal_eval, and CPython 3.11 keeps the AST
# builder's recursion depth in state that threads share: two threads reading archives at
# once can fail with "SystemError: AST constructor recursion depth mismatch"
# (python/cpython#106905). The server answers from threads and the load test's clients are
# threads, so archives are read one at a time; a read takes microseconds.
_ARCHIVE_READS = threading.Lock()


class WireError(ValueError):
    """A body that is not a tensor archive this format can read (a 400 on the server)."""


def encode(arrays: dict) -> bytes:
    """The .npz body of named numpy arrays (which must not be object arrays: `decode`
    never loads a pickle)."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode(body: bytes) -> dict:
    """The named arrays of an .npz body; WireError for anything else (a bare .npy, an
    archive of other files, pickled objects, which are never loaded)."""
    import zipfile

    import numpy as np

    if not body:
        raise WireError("the body is empty: send the tensors as an .npz archive")
    try:
        with _ARCHIVE_READS:
            loaded = np.load(io.BytesIO(body), allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise WireError("the body is a single array, not an .npz archive of arrays")
            with loaded as archive:
                arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise WireError(f"the body is not an .npz archive of arrays: {exc}") from None
    strays = sorted(name for name, value in arrays.items() if not isinstance(value, np.ndarray))
    if strays:
        raise WireError(f"the archive holds files that are no .npy arrays: {strays}")
    return arrays


def encode_json(arrays: dict) -> bytes:
    """The JSON body of named numpy arrays (strict JSON: non-finite floats as strings)."""
    return json.dumps({name: _json_tensor(array) for name, array in arrays.items()},
                      allow_nan=False).encode()


def decode_json(body: bytes) -> dict:
    """The named arrays of a JSON body; WireError that says what is wrong with it."""
    try:
        found = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise WireError("the body is JSON nested too deeply to read") from None
    if not isinstance(found, dict) or not found:
        raise WireError('the JSON body must be an object of named tensors, {"0": {"dtype": '
                        '"float32", "shape": [...], "data": [...]}, ...}')
    return {name: _json_array(name, tensor) for name, tensor in found.items()}


def _json_tensor(array) -> dict:
    import numpy as np

    if array.dtype.name not in JSON_DTYPES:
        raise WireError(f"an output of dtype {array.dtype.name} has no JSON form here")
    values = array.ravel()
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        names = {math.inf: "Infinity", -math.inf: "-Infinity"}
        data = [v if math.isfinite(v) else names.get(v, "NaN") for v in values.tolist()]
    else:
        data = values.tolist()
    return {"dtype": array.dtype.name, "shape": list(array.shape), "data": data}


def _json_array(name: str, tensor):
    """One tensor's array: its dtype one of JSON_DTYPES, its data as many values as its
    shape holds, integers for an integer dtype, true and false for bool."""
    import numpy as np

    if not isinstance(tensor, dict) or not {"dtype", "shape", "data"} <= set(tensor):
        raise WireError(f"tensor {name!r} must be an object with dtype, shape and data")
    dtype, shape = tensor["dtype"], tensor["shape"]
    if dtype not in JSON_DTYPES:
        raise WireError(f"tensor {name!r} has dtype {dtype!r}; one of {', '.join(JSON_DTYPES)}")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise WireError(f"tensor {name!r} has shape {shape!r}: a list of sizes")
    try:
        data = np.asarray(_finite_or_named(tensor["data"]))
    except RecursionError:
        raise WireError(f"tensor {name!r} has data nested too deeply") from None
    except (ValueError, TypeError) as exc:
        raise WireError(f"tensor {name!r} has data that is no array of numbers: {exc}") from None
    if data.size != math.prod(shape):
        raise WireError(f"tensor {name!r} has {data.size} values for shape {shape}")
    kinds = {"f": "fiub", "i": "iub", "u": "iub", "b": "b"}[np.dtype(dtype).kind]
    if data.size and data.dtype.kind not in kinds:
        raise WireError(f"tensor {name!r} of dtype {dtype} holds values of another kind "
                        f"({data.dtype.name}): integers for an integer dtype, true or false "
                        f"for bool")
    if data.size and data.dtype.kind in "iu" and np.dtype(dtype).kind in "iu":
        limits = np.iinfo(dtype)
        if data.min() < limits.min or data.max() > limits.max:
            raise WireError(f"tensor {name!r} holds values outside {dtype}'s range")
    with np.errstate(over="ignore"):  # an overflow is refused below, not warned about
        converted = data.astype(dtype)
    if data.size and data.dtype.kind == "f" and np.dtype(dtype).kind == "f" and \
            (np.isinf(converted) & np.isfinite(data)).any():
        raise WireError(f"tensor {name!r} holds values outside {dtype}'s range")
    return converted.reshape(shape)


def _finite_or_named(data):
    """The data with "NaN", "Infinity" and "-Infinity" read as floats, nested lists kept."""
    if isinstance(data, list):
        return [_finite_or_named(value) for value in data]
    if isinstance(data, str):
        if data not in NON_FINITE:
            raise ValueError(f"{data!r} is not a number")
        return NON_FINITE[data]
    return data


def tensors_to_arrays(inputs: tuple, keywords: dict) -> dict:
    """The arrays of a call: positional tensors by index, keyword ones by name."""
    arrays = {str(i): _array(value, f"input {i}") for i, value in enumerate(inputs)}
    arrays.update({KEYWORD + name: _array(value, f"input {name}")
                   for name, value in keywords.items()})
    return arrays


def arrays_to_call(arrays: dict) -> tuple[list, dict]:
    """(positional arrays in order, keyword arrays by name) of a request's archive."""
    positional = sorted((name for name in arrays if not name.startswith(KEYWORD)), key=_index)
    if [int(name) for name in positional] != list(range(len(positional))):
        raise WireError(f"positional inputs must be named 0..n-1, got {positional}")
    return ([arrays[name] for name in positional],
            {name[len(KEYWORD):]: arrays[name] for name in arrays if name.startswith(KEYWORD)})


def outputs_to_arrays(outputs: list) -> dict:
    return {str(i): _array(value, f"output {i}") for i, value in enumerate(outputs)}


def arrays_to_outputs(arrays: dict) -> list:
    """The answer's tensors, in order."""
    import torch

    names = sorted(arrays, key=_index)
    return [torch.from_numpy(arrays[name].copy()) for name in names]


def _index(name: str) -> int:
    try:
        return int(name)
    except ValueError:
        raise WireError(f"an array named {name!r}: expected 0..n-1 or {KEYWORD}<name>") from None


def _array(value, what: str):
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bfloat16:
            raise WireError(f"{what} is bfloat16, which has no numpy dtype: the serve "
                            f"runtime cannot carry it without loss")
        return value.detach().cpu().contiguous().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise WireError(f"{what} is a {type(value).__name__}, not a tensor")
