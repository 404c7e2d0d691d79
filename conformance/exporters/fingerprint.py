"""Fingerprints of what an artifact depends on: the case's definition, the code the
model comes from, the model's weights and settings, the inputs, global flags. The
artifact cache (`cache.artifact_key`) hashes them into an artifact's name; see its
docstring for what each covers and why."""
from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import hashlib
import importlib.metadata
import inspect
import json
import os
import re
import sys
import sysconfig
import time
import types
import warnings
import weakref
from pathlib import Path
from typing import Any, Iterable

from conformance.cases import Case

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def stable_repr(value: Any) -> str:
    """repr without memory addresses, which differ from one process to the next."""
    return _ADDRESS.sub("", repr(value))


def source_of(obj: Any) -> str:
    """The source text of a callable, or a stable description when there is none."""
    if isinstance(obj, functools.partial):
        return f"partial({source_of(obj.func)}, {stable_repr(obj.args)}, " \
               f"{stable_repr(sorted(obj.keywords.items()))})"
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"


def case_fingerprint(case: Case) -> str:
    parts = [case.name, source_of(case.build), source_of(case.example),
             source_of(case.probes) if case.probes else "", str(case.seed),
             repr(case.batch_sizes), repr(case.quantized_engine), repr(case.input_names),
             repr(case.output_names)]
    # Values a builder or factory closes over (`lambda: Net(width)`), when they are plain.
    parts += [_plain_closure(f) for f in (case.build, case.example, case.probes)]
    if inspect.isclass(case.build):  # the model's own source, when build is the class
        parts += [source_of(c) for c in case.build.__mro__
                  if c.__module__ == case.build.__module__]
    return sha("\n".join(parts).encode())



# The code the model comes from -------------------------------------------------------


def code_fingerprint(case: Case, model: Any) -> dict[str, dict[str, str]]:
    """{"modules": {name: digest}, "distributions": {name: version}} for every module
    the case's callables and the model's classes come from, and the user modules
    those refer to through their globals, transitively."""
    return _walk_modules(_code_roots(case, model))


def _code_roots(case: Case, model: Any) -> list[Any]:
    import torch

    roots: list[Any] = [case.build, case.example, case.probes]
    if isinstance(model, torch.nn.Module):
        for module in model.modules():
            roots += type(module).__mro__
            # A forward replaced on the instance, hooks, and callables held as settings.
            roots += [v for v in vars(module).values() if _is_code(v)]
            for hooks in (module._forward_hooks, module._forward_pre_hooks):
                roots += list(hooks.values())
    elif model is not None:
        roots.append(model)
    return [r for r in roots if r is not None]


def _is_code(value: Any) -> bool:
    return (inspect.isfunction(value) or inspect.isclass(value) or inspect.ismethod(value)
            or isinstance(value, (functools.partial, types.ModuleType)))


def _walk_modules(roots: Iterable[Any]) -> dict[str, dict[str, str]]:
    users: dict[str, types.ModuleType] = {}
    dists: dict[str, str] = {}
    seen: set[str] = set()
    pending = [m for root in roots for m in _safe_modules_of(root)]
    while pending:
        module = pending.pop()
        name = getattr(module, "__name__", None)
        if not isinstance(name, str) or name in seen:
            continue
        seen.add(name)
        kind = _module_kind(module)
        if kind == "distribution":
            for dist in _distributions(name):
                dists[dist] = distribution_version(dist)
        elif kind == "user":
            users[name] = module
            pending += [m for value in list(vars(module).values())
                        for m in _safe_modules_of(value)]
    # A global counts when code of any of these modules names it: `settings.SCALE`
    # names SCALE in the module that reads it, not in `settings`.
    names = frozenset().union(*(_names_used(m) for m in users.values()))
    digests = {name: _module_digest(module, names) for name, module in users.items()}
    return {"modules": digests, "distributions": dists}


def _safe_modules_of(value: Any) -> list[types.ModuleType]:
    try:
        return _modules_of(value)
    except Exception:  # an object whose attributes raise (a lazy proxy)
        return []


def _modules_of(value: Any, depth: int = 0) -> list[types.ModuleType]:
    """The modules a global, root or closure value brings in."""
    if isinstance(value, types.ModuleType):
        return [value]
    if depth > 2:
        return []
    if isinstance(value, functools.partial):
        return [m for v in (value.func, *value.args, *value.keywords.values())
                for m in _modules_of(v, depth + 1)]
    if inspect.ismethod(value):
        return _modules_of(value.__func__, depth + 1) + _modules_of(value.__self__, depth + 1)
    if inspect.isfunction(value):
        found = _named_module(value.__module__) or [_module_from_globals(value.__globals__)]
        for cell in value.__closure__ or ():
            try:
                found += _modules_of(cell.cell_contents, depth + 1)
            except ValueError:  # an empty cell
                pass
        return found
    if inspect.isclass(value):
        return _named_module(value.__module__) or [
            _module_from_globals(f.__globals__) for f in vars(value).values()
            if inspect.isfunction(f)][:1]
    if callable(value) and hasattr(value, "__module__"):
        return _named_module(getattr(value, "__module__", None))
    return _named_module(getattr(type(value), "__module__", None))


def _named_module(name: Any) -> list[types.ModuleType]:
    module = sys.modules.get(name) if isinstance(name, str) else None
    return [module] if module is not None else []


def _module_from_globals(namespace: dict) -> types.ModuleType:
    """A stand-in for a module that is not in sys.modules (imported by file and not
    registered): its globals, hence its file, are those of its functions."""
    module = types.ModuleType(str(namespace.get("__name__", "<unregistered>")))
    module.__dict__.update(namespace)
    return module


@functools.lru_cache(maxsize=None)
def _library_dirs() -> tuple[str, ...]:
    dirs = {os.path.dirname(os.__file__), sysconfig.get_path("stdlib"),
            sysconfig.get_path("platstdlib")}
    return tuple(sorted(os.path.realpath(d) + os.sep for d in dirs if d))


def _module_kind(module: types.ModuleType) -> str:
    """"user", "distribution", or "library" (the standard library, builtins, and the
    suite's own machinery)."""
    if _is_suite_machinery(module.__name__):
        return "library"
    file = getattr(module, "__file__", None)
    if not file:
        if module.__name__ in (*sys.builtin_module_names, *sys.stdlib_module_names):
            return "library"
        return "distribution" if _distributions(module.__name__) else "user"
    return _file_kind(file, module.__name__.partition(".")[0])


def _is_suite_machinery(name: str) -> bool:
    """The suite's own modules, except its built-in cases: the key already holds the
    suite's version and its exporting code, and walking the rest would make the key
    depend on the process's history (a package gains an attribute for each subpackage
    imported, a module's caches fill), not on the artifact. The built-in cases' modules
    are the models' code, hashed like a user's."""
    return (name == "conformance" or name.startswith("conformance.")) \
        and not name.startswith("conformance.fixtures")


@functools.lru_cache(maxsize=None)
def _file_kind(file: str, top: str) -> str:
    real = os.path.realpath(file)
    parts = Path(real).parts
    if "site-packages" in parts or "dist-packages" in parts:
        # A file there that no distribution claims is hashed like the user's own.
        return "distribution" if _distributions(top) else "user"
    if real.startswith(_library_dirs()):
        return "library"
    return "user"


def _distributions(name: str) -> list[str]:
    return sorted(set(_packages_distributions().get(name.partition(".")[0], ())))


@functools.lru_cache(maxsize=None)
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.lru_cache(maxsize=None)
def distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _module_digest(module: types.ModuleType, names: Iterable[str] | None = None) -> str:
    """A user module: its file's bytes, and the values of the globals its code names
    (a setting read from the environment at import changes no byte of the file).

    Only the globals that `names` holds count (by default, the names the module's own
    functions and methods use): a global no code reads, such as the time a run
    started, would otherwise change the key on every run. So do the data attributes
    of the classes it defines, under the same rule (`scale = float(os.environ[...])`
    in a class body)."""
    file = getattr(module, "__file__", None)
    source = file_digest(file) if file and os.path.isfile(file) else _code_digest(module)
    used = _names_used(module) if names is None else frozenset(names)
    values = []
    for name, value in sorted(list(vars(module).items())):
        if name.startswith("__") or name not in used:
            continue
        values.append((name, describe(value)))
        if _defined_in(value, module):
            values += [(f"{name}.{attribute}", describe(item))
                       for attribute, item in _class_data(value) if attribute in used]
    environment = environment_read(file)
    values += [(f"environment:{name}", os.environ.get(name)) for name in environment or []]
    if environment is None:  # it reads variables no key can name
        values.append(("environment", None))
    if any(text is None for name, text in values if not name.startswith("environment:")):
        digest = hashlib.sha256(source.encode())
        _not_reusable(digest)
        return digest.hexdigest()
    return sha(json.dumps([source, values]).encode())


def environment_read(file: str | None) -> list[str] | None:
    """The environment variables a module's functions read when they run
    (`os.environ.get("X")`, `os.environ["X"]`, `os.getenv("X")`, `"X" in os.environ`): a
    model that reads one in forward exports differently when it changes, with no byte of
    its file changed. A read at import sets a global, which the globals' rule covers.
    None when a function reads a variable whose name is not written out (`environ.get(name)`,
    `dict(os.environ)`): then no key can say what the artifact depends on."""
    if not file or not os.path.isfile(file):
        return []
    return _environment_read(file, os.stat(file).st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _environment_read(file: str, mtime_ns: int) -> list[str] | None:
    import ast

    try:
        tree = ast.parse(Path(file).read_text(errors="replace"))
    except SyntaxError:
        return []
    names = set()
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for node in ast.walk(function):
                found = _environment_name(node)
                if found is _UNNAMED:
                    return None
                if found:
                    names.add(found)
    return sorted(names)


_UNNAMED = object()  # environ read with a name that is not a string in the code


def _environment_name(node):
    """X of `environ.get("X")`, `getenv("X")`, `environ.setdefault("X", ...)`,
    `environ["X"]` or `"X" in environ`; _UNNAMED for another use of environ in a read
    (a name from a variable, the whole mapping copied); None for any other node."""
    import ast

    def is_environ(value) -> bool:
        return getattr(value, "attr", getattr(value, "id", "")) == "environ"

    if isinstance(node, ast.Call) and any(is_environ(a) for a in node.args):
        return _UNNAMED  # dict(os.environ), copy(os.environ)
    if isinstance(node, ast.Call) and node.args:
        called = getattr(node.func, "attr", getattr(node.func, "id", ""))
        reads = called == "getenv" or (called in ("get", "setdefault")
                                       and is_environ(getattr(node.func, "value", None)))
        key = node.args[0]
    elif isinstance(node, ast.Subscript) and is_environ(node.value):
        reads, key = True, node.slice
    elif isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators):
        reads, key = True, node.left
    else:
        return None
    if not reads:
        return None
    return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) \
        else _UNNAMED


def _defined_in(value: Any, module: types.ModuleType) -> bool:
    return inspect.isclass(value) and value.__module__ == module.__name__


def _class_data(cls: type) -> list[tuple[str, Any]]:
    """The data attributes a class body sets: not its functions, descriptors, nested
    classes or private and special names."""
    return [(name, value) for name, value in sorted(vars(cls).items())
            if not name.startswith("_") and not _is_code(value)
            and not isinstance(value, (staticmethod, classmethod, property))
            and not inspect.isdatadescriptor(value) and not inspect.ismethoddescriptor(value)]


def _names_used(module: types.ModuleType) -> frozenset[str]:
    """The names (globals and attributes) the code of a module's functions and of its
    classes' methods uses, nested functions and comprehensions included."""
    names: set[str] = set()
    for value in list(vars(module).values()):
        if getattr(value, "__module__", None) != module.__name__:
            continue  # imported: its own module's names count where that module is hashed
        if inspect.isclass(value):
            members = [m for klass in _classes_within(value) for m in vars(klass).values()]
        else:
            members = [value]
        for member in members:
            for code in _code_objects(member):
                _collect_names(code, names)
    return frozenset(names)


def _classes_within(cls: type, depth: int = 0) -> list[type]:
    """A class and the classes defined in its body."""
    if depth >= 4:
        return [cls]
    nested = [v for v in vars(cls).values() if inspect.isclass(v)
              and v.__qualname__.startswith(cls.__qualname__ + ".")]
    return [cls] + [c for n in nested for c in _classes_within(n, depth + 1)]


def _code_objects(value: Any) -> list[types.CodeType]:
    """The code objects behind a function, method, static or class method, property,
    partial or decorated function (through `__wrapped__`)."""
    found: list[types.CodeType] = []
    pending, seen = [value], set()
    while pending:
        item = pending.pop()
        if id(item) in seen or len(seen) > 32:
            continue
        seen.add(id(item))
        if isinstance(item, (staticmethod, classmethod)) or inspect.ismethod(item):
            pending.append(item.__func__)
        elif isinstance(item, property):
            pending += [f for f in (item.fget, item.fset, item.fdel) if f is not None]
        elif isinstance(item, functools.partial):
            pending.append(item.func)
        elif inspect.isfunction(item):
            found.append(item.__code__)
        try:
            wrapped = inspect.getattr_static(item, "__wrapped__", None)
        except Exception:
            wrapped = None
        if wrapped is not None:
            pending.append(wrapped)
    return found


def _collect_names(code: types.CodeType, names: set[str], depth: int = 0) -> None:
    names.update(code.co_names)
    if depth < 32:
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                _collect_names(const, names, depth + 1)


def _code_digest(module: types.ModuleType) -> str:
    """A module with no file (defined at a prompt): the bytecode of what it defines."""
    parts = []
    for name, value in sorted(vars(module).items()):
        if inspect.isclass(value) and value.__module__ == module.__name__:
            value = [v for _, v in sorted(vars(value).items()) if inspect.isfunction(v)]
        for function in value if isinstance(value, list) else [value]:
            if inspect.isfunction(function) and function.__module__ == module.__name__:
                parts.append(f"{name}:{_describe_code(function.__code__)}")
    return sha("\n".join(parts).encode())


def _describe_code(code: types.CodeType) -> str:
    consts = [_describe_code(c) if isinstance(c, types.CodeType) else stable_repr(c)
              for c in code.co_consts]
    return f"{code.co_code.hex()}|{code.co_names}|{consts}"


_FILE_DIGESTS: dict[str, tuple[tuple[int, int, int], str]] = {}
# A file written this recently may be written again within the same timestamp tick;
# its digest is not remembered until it is older.
_RACY_NS = 2_000_000_000


def file_digest(file: str | os.PathLike) -> str:
    """sha256 of a file's bytes, remembered for the process by (mtime, size, inode)."""
    path = os.path.realpath(file)
    stat = os.stat(path)
    signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    remembered = _FILE_DIGESTS.get(path)
    if remembered and remembered[0] == signature:
        return remembered[1]
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest() \
            if hasattr(hashlib, "file_digest") else hashlib.sha256(handle.read()).hexdigest()
    if time.time_ns() - stat.st_mtime_ns > _RACY_NS:
        _FILE_DIGESTS[path] = (signature, digest)
    return digest


# The model and its inputs --------------------------------------------------------------


def model_fingerprint(model: Any) -> dict[str, str]:
    """The weights (state dict and every buffer, persistent or not), the settings its
    submodules hold, and the code of a graph or script module. {} for a function.

    A setting is any attribute but those every nn.Module has (of a library's class, its
    public ones and its tensors), described by `describe`: a config object read from
    the environment changes the key though no byte of the source does, and one that
    cannot be described makes the key one no later run computes."""
    import torch

    if not isinstance(model, torch.nn.Module):
        return {}
    weights = hashlib.sha256()
    for name, value in model.state_dict(keep_vars=True).items():
        _feed(weights, name)
        _feed(weights, value)
    for name, buffer in model.named_buffers():
        _feed(weights, name)
        _feed(weights, buffer)
    settings = hashlib.sha256()
    describer = _Describer()
    for prefix, module in model.named_modules():
        described = describer.module_settings(module)
        if described is None:
            _not_reusable(settings)
            described = []
        settings.update(f"{prefix}:{type(module).__qualname__}:{described}\n".encode())
        code = _module_code(module)
        if code:
            settings.update(code.encode())
    return {"weights": weights.hexdigest(), "settings": settings.hexdigest()}


def _module_code(module: Any) -> str:
    """The generated code of an FX graph module or a TorchScript module."""
    import torch

    if isinstance(module, (torch.fx.GraphModule, torch.jit.ScriptModule)):
        try:
            return str(module.code)
        except Exception:  # a script module with no forward
            return ""
    return ""


def inputs_fingerprint(inputs: Any) -> str:
    digest = hashlib.sha256()
    _feed(digest, inputs)
    return digest.hexdigest()


_PLAIN = (int, float, bool, str, bytes, type(None))


def _is_plain(value: Any, depth: int = 0, mutable: bool = True) -> bool:
    """A value whose repr is all there is to it: numbers, strings, dtypes and small
    containers of those (tuples only, unless `mutable`)."""
    import torch

    if isinstance(value, _PLAIN + (torch.dtype, torch.device)):
        return True
    if depth >= 3 or not isinstance(value, (tuple, list, dict)) or len(value) > 64:
        return False
    if isinstance(value, tuple):
        return all(_is_plain(v, depth + 1, mutable) for v in value)
    if isinstance(value, list) and mutable:
        return all(_is_plain(v, depth + 1, mutable) for v in value)
    if isinstance(value, dict) and mutable:
        return all(_is_plain(k, depth + 1, mutable) and _is_plain(v, depth + 1, mutable)
                   for k, v in value.items())
    return False


def _feed(digest: Any, value: Any, depth: int = 0) -> None:
    """Hash a value: tensors by dtype, shape and bytes; containers item by item;
    anything else by its repr."""
    import torch

    if isinstance(value, torch.Tensor):
        _feed_tensor(digest, value)
    elif isinstance(value, (tuple, list)) and depth < 8:
        digest.update(f"{type(value).__name__}[{len(value)}](".encode())
        for item in value:
            _feed(digest, item, depth + 1)
        digest.update(b")")
    elif isinstance(value, dict) and depth < 8:
        digest.update(f"dict[{len(value)}](".encode())
        for key, item in value.items():  # insertion order, which the model sees
            digest.update(stable_repr(key).encode() + b":")
            _feed(digest, item, depth + 1)
        digest.update(b")")
    elif isinstance(value, _PLAIN):
        digest.update(f"{type(value).__qualname__}:{value!r};".encode())
    else:  # a dataclass of tensors, an enum, an object: described value by value
        text = describe(value)
        if text is None:  # a default repr tells nothing of the object's state
            _not_reusable(digest)
        else:
            digest.update(f"{text};".encode())


# Describing a value ---------------------------------------------------------------------

_MAX_DEPTH = 12
# Values described for one setting or global: a larger one is not described.
_MAX_VALUES = 200_000
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class not written in C


def describe(value: Any) -> str | None:
    """A text that changes whenever the value does and is the same in every process:
    numbers and strings by their repr, containers item by item (sets sorted), enums by
    name, tensors and arrays by their bytes, dataclasses by their fields, modules by
    their weights and settings, other objects by their attributes, code by its name
    (its source is in `code_fingerprint`). None when the value cannot be described:
    its repr shows only a memory address, or it is too deep or too large."""
    return _Describer().describe(value)


class _Undescribable(Exception):
    pass


@functools.lru_cache(maxsize=None)
def _standard_module_attributes() -> frozenset[str]:
    """The attributes every nn.Module has (weights, submodules, hooks, `training`)."""
    import torch

    return frozenset(vars(torch.nn.Module()))


# Attributes of library modules that their generated code already describes.
_DESCRIBED_BY_CODE = frozenset({"meta", "shape_env"})
# Attributes an exporter leaves on the modules it exports: torch.jit.script sets
# `__overloads__` on each. They say nothing of the model, and counted, an artifact's key
# depended on whether the script path had exported the model earlier in the process (a
# warm rerun, which loads the script artifact, computed other keys and exported again).
_EXPORTER_BOOKKEEPING = frozenset({"__overloads__"})


class _Describer:
    def __init__(self) -> None:
        self.count = 0
        self.active: set[int] = set()  # the containers on the way here: a cycle

    def describe(self, value: Any) -> str | None:
        self.count = 0
        try:
            return self.value(value, 0)
        except Exception:  # _Undescribable, RecursionError, an attribute that raises
            return None

    def module_settings(self, module: Any) -> list[tuple[str, str]] | None:
        """What an nn.Module holds besides its weights, submodules and hooks: its plain
        settings, and its other attributes described (None if one cannot be)."""
        self.count = 0
        try:
            with self.entered(module):
                return self.settings(module, 0)
        except Exception:  # _Undescribable, RecursionError, an attribute that raises
            return None

    @contextlib.contextmanager
    def entered(self, value: Any):
        self.active.add(id(value))
        try:
            yield
        finally:
            self.active.discard(id(value))

    def settings(self, module: Any, depth: int) -> list[tuple[str, str]]:
        import torch

        standard = _standard_module_attributes()
        own = _is_user_class(type(module))
        graph = isinstance(module, torch.fx.GraphModule) and not own
        found = []
        for name, value in sorted(vars(module).items()):
            if name in standard:  # `training`; the rest are weights, submodules, hooks
                if not name.startswith("_") and _is_plain(value):
                    found.append((name, stable_repr(value)))
            elif graph and name in _DESCRIBED_BY_CODE or name in _EXPORTER_BOOKKEEPING:
                continue
            elif (name.startswith("_") and not own  # a library class's own workings
                  and not isinstance(value, torch.Tensor)):
                continue
            else:
                found.append((name, self.value(value, depth + 1)))
        return found

    def value(self, value: Any, depth: int) -> str:
        import torch

        self.count += 1
        if depth > _MAX_DEPTH or self.count > _MAX_VALUES:
            raise _Undescribable
        kind = type(value)
        name = f"{kind.__module__}.{kind.__qualname__}"
        if isinstance(value, enum.Enum):
            member = value.name if value.name is not None else repr(value._value_)
            return f"enum:{name}.{member}"
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
            return f"{kind.__qualname__}:{value!r}"
        if isinstance(value, torch.Tensor):
            digest = hashlib.sha256()
            _feed_tensor(digest, value)
            return f"{name}:{digest.hexdigest()}"
        if isinstance(value, (torch.dtype, torch.device)):
            return f"{name}:{value}"
        if isinstance(value, types.ModuleType):
            return f"module:{value.__name__}"
        if inspect.isclass(value):
            return f"class:{value.__module__}.{value.__qualname__}"
        if id(value) in self.active:  # a reference back to a value being described
            return f"cycle:{name}"
        with self.entered(value):
            return self.compound(value, depth, name)

    def compound(self, value: Any, depth: int, name: str) -> str:
        import torch

        deeper = depth + 1
        if isinstance(value, weakref.ref):
            return f"weakref({self.value(value(), deeper)})"
        if isinstance(value, functools.partial):
            return (f"partial({self.value(value.func, deeper)}, {self.value(value.args, deeper)}, "
                    f"{self.value(value.keywords, deeper)})")
        if inspect.ismethod(value):
            owner = self.value(value.__self__, deeper)
            return f"method:{self.value(value.__func__, deeper)}@{owner}"
        if inspect.isfunction(value):
            return self.function(value, deeper)
        if isinstance(value, dict):  # in insertion order, which the code sees
            items = ", ".join(f"{self.value(k, deeper)}: {self.value(v, deeper)}"
                              for k, v in list(value.items()))
            return f"{name}{{{items}}}"
        if isinstance(value, (list, tuple)):
            return f"{name}[{', '.join(self.value(v, deeper) for v in list(value))}]"
        if isinstance(value, (set, frozenset)):
            return f"{name}{{{', '.join(sorted(self.value(v, deeper) for v in list(value)))}}}"
        if _is_array(value):
            if value.dtype.hasobject:
                return f"{name}:{value.shape}:{self.value(value.tolist(), deeper)}"
            return f"{name}:{value.dtype}:{value.shape}:{sha(value.tobytes())}"
        if isinstance(value, torch.nn.Module):
            parts = [self.value(dict(value._parameters), deeper),
                     self.value(dict(value._buffers), deeper),
                     repr(self.settings(value, deeper)),
                     self.value(dict(value._modules), deeper)]
            return f"{name}({'; '.join(parts)})"
        if isinstance(getattr(value, "__qualname__", None), str):
            # A builtin function, a script method, a cached function: code, by its name.
            return f"callable:{getattr(value, '__module__', None)}.{value.__qualname__}"
        if _is_logger(value):
            return f"logger:{value.name}"
        if dataclasses.is_dataclass(value) or hasattr(value, "__dict__"):
            return self.attributes(value, deeper, name)
        return _stable_or_raise(value, name)

    def function(self, function: Any, depth: int) -> str:
        text = f"function:{function.__module__}.{function.__qualname__}"
        if not _is_user_module_name(function.__module__):
            return text  # a library's: its version is in `code_fingerprint`
        # What the code does not show: defaults and the values it closes over.
        cells = []
        for cell in function.__closure__ or ():
            try:
                cells.append(self.value(cell.cell_contents, depth))
            except ValueError:  # an empty cell
                cells.append("empty")
        defaults = [self.value(function.__defaults__, depth),
                    self.value(function.__kwdefaults__, depth)]
        return f"{text}({', '.join(defaults + cells)})"

    def attributes(self, value: Any, depth: int, name: str) -> str:
        found: dict[str, Any] = {}
        if dataclasses.is_dataclass(value):
            found.update((f.name, getattr(value, f.name)) for f in dataclasses.fields(value)
                         if hasattr(value, f.name))
        for klass in type(value).__mro__:  # __slots__ hold attributes too
            slots = vars(klass).get("__slots__", ())
            for slot in (slots,) if isinstance(slots, str) else slots:
                if slot not in ("__dict__", "__weakref__") and hasattr(value, slot):
                    found.setdefault(slot, getattr(value, slot))
        extra = sorted(vars(value).items()) if hasattr(value, "__dict__") else []
        found.update((k, v) for k, v in extra if k not in found)
        parts = [f"{k}={self.value(v, depth)}" for k, v in found.items()]
        if _state_in_c(type(value)):  # what __dict__ does not hold, its repr may show
            parts.append(_stable_or_raise(value, name))
        return f"{name}({', '.join(parts)})"


def _stable_or_raise(value: Any, name: str) -> str:
    try:
        text = repr(value)
    except Exception:
        raise _Undescribable
    if _ADDRESS.search(text):  # a default repr tells nothing of the object's state
        raise _Undescribable
    return f"{name}:{text}"


def _is_array(value: Any) -> bool:
    return (type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"
            and hasattr(value, "tobytes"))


def _is_logger(value: Any) -> bool:
    import logging

    return isinstance(value, logging.Logger)


def _state_in_c(cls: type) -> bool:
    """A class one of whose bases is written in C: part of its state is not in __dict__."""
    return any(not klass.__flags__ & _HEAPTYPE for klass in cls.__mro__
               if klass not in (object, types.SimpleNamespace))


def _is_user_module_name(name: Any) -> bool:
    module = sys.modules.get(name) if isinstance(name, str) else None
    if module is None:  # imported by file and not registered, or defined at a prompt
        return True
    return _module_kind(module) == "user"


def _is_user_class(cls: type) -> bool:
    return _is_user_module_name(getattr(cls, "__module__", None))


def _not_reusable(digest: Any) -> None:
    """A value the key cannot describe makes a key no later run will compute: the
    artifact is exported again rather than reused on a guess."""
    digest.update(f"not reusable:{os.getpid()}:{time.time_ns()}:{os.urandom(8).hex()}".encode())


def _feed_tensor(digest: Any, tensor: Any) -> None:
    import torch

    tensor = tensor.detach()
    digest.update(f"tensor:{tensor.dtype}:{tuple(tensor.shape)}:{tensor.layout}:".encode())
    if tensor.is_quantized:
        scheme = tensor.qscheme()
        digest.update(str(scheme).encode())
        if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            digest.update(f"{tensor.q_scale()!r}:{tensor.q_zero_point()!r}".encode())
        else:
            digest.update(str(tensor.q_per_channel_axis()).encode())
            _feed_tensor(digest, tensor.q_per_channel_scales())
            _feed_tensor(digest, tensor.q_per_channel_zero_points())
        tensor = tensor.int_repr()
    elif tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    try:
        data = tensor.resolve_conj().resolve_neg().cpu().contiguous().reshape(-1)
        digest.update(memoryview(data.view(torch.uint8).numpy()))
    except Exception:  # no data to read (a meta or fake tensor)
        _not_reusable(digest)
    digest.update(b";")


# Global state --------------------------------------------------------------------------

_PRECISION_SETTINGS = ("fp32_precision", "cuda.matmul.fp32_precision", "cudnn.fp32_precision",
                       "cudnn.conv.fp32_precision", "cudnn.rnn.fp32_precision",
                       "mkldnn.fp32_precision", "mkldnn.matmul.fp32_precision",
                       "mkldnn.conv.fp32_precision", "mkldnn.rnn.fp32_precision")


def global_flags() -> dict[str, str]:
    """The process-wide torch settings that an exporter can bake into an artifact."""
    import torch

    with warnings.catch_warnings():  # some of these getters warn of newer settings
        warnings.simplefilter("ignore")
        flags = {
            "default_dtype": str(torch.get_default_dtype()),
            "quantized_engine": str(torch.backends.quantized.engine),
            "cuda_matmul_allow_tf32": str(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": str(torch.backends.cudnn.allow_tf32),
            "cudnn_deterministic": str(torch.backends.cudnn.deterministic),
            "deterministic_algorithms": str(torch.are_deterministic_algorithms_enabled()),
            "float32_matmul_precision": str(torch.get_float32_matmul_precision()),
        }
        for setting in _PRECISION_SETTINGS:
            value: Any = torch.backends
            try:
                for attribute in setting.split("."):
                    value = getattr(value, attribute)
            except Exception:  # an older torch, without the setting
                continue
            flags[setting] = str(value)
    return flags


def _plain_closure(function: Any) -> str:
    cells = []
    for cell in getattr(function, "__closure__", None) or ():
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if _is_plain(contents):
            cells.append(stable_repr(contents))
    return repr(cells)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
