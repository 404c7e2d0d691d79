"""Tensors over HTTP without loss: a request or answer body is a numpy .npz archive (one
array per tensor, named by position, keyword inputs as `kw:<name>`), which keeps every
bit and the dtype and shape of each array. JSON would round floats; the suite compares
outputs to the last bit that a tolerance allows, so the wire must carry them all.

bfloat16 has no numpy dtype and is refused with a message, not converted."""
from __future__ import annotations

import io

CONTENT_TYPE = "application/x-npz"
KEYWORD = "kw:"


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
