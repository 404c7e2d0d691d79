"""Which control-flow nodes of an artifact's graph branch or loop on the model's inputs.

A graph can keep an `If` whose condition is a constant, a module attribute, a parameter
or a tensor's shape: a trace that baked its data-dependent branch still has the `if` of a
scripted helper it calls. Such a node says nothing about whether the artifact kept the
model's data-dependent control flow. A node counts here only when its condition is
reachable backwards through the dataflow graph from a model input, and the walk stops at
nodes that read only a tensor's shape or metadata (a branch on `x.dim()` is not
data-dependent).

`control_flow(kind, artifact)` reads one artifact ("torchscript": a loaded ScriptModule or
ScriptFunction; "onnx": a .onnx file or ModelProto; "export": a saved .pt2 file or an
ExportedProgram) and returns both counts; `input_dependent_control_flow` is its first half.
Nested control flow (an If inside a Loop body, a torch.cond inside a branch) is counted too.
"""
from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable


@dataclasses.dataclass(frozen=True)
class ControlFlow:
    """Control-flow nodes of one graph, by kind: those whose condition depends on the
    model's inputs, and all of them."""

    kind: str
    dependent: collections.Counter
    total: collections.Counter

    def describe(self) -> str:
        """What was found, in words a check's failure message can use: "found 1 prim::If,
        but its condition does not depend on the model's inputs (...)"."""
        found, count = _listing(self.total), sum(self.total.values())
        if not count:
            return f"no {' or '.join(self.total)} node"
        if not sum(self.dependent.values()):
            whose = "its condition does" if count == 1 else "none of their conditions does"
            return (f"found {found}, but {whose} not depend on the model's inputs (only on "
                    "constants, attributes, parameters or shapes)")
        return f"found {found}; with a condition on the model's inputs: {_listing(self.dependent)}"


def _listing(counts: collections.Counter) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)


def input_dependent_control_flow(kind: str, artifact) -> collections.Counter:
    """Control-flow nodes whose condition depends on the values of the model's inputs."""
    return control_flow(kind, artifact).dependent


# Graph nodes that carry data-dependent control flow, per kind of graph.
CONTROL_FLOW_NODES = {
    "torchscript": ("prim::If", "prim::Loop"),
    "onnx": ("If", "Loop", "Scan"),
    "export": ("cond", "while_loop"),  # torch.ops.higher_order.*
}


def reads_loaded(kind: str) -> bool:
    """Whether the reader of this kind of graph takes the loaded module (TorchScript's
    graph is read from the module) rather than the artifact's file."""
    return kind == "torchscript"


def control_flow(kind: str, artifact) -> ControlFlow:
    """Every control-flow node of the artifact's graph, and those that depend on its inputs."""
    if kind not in READERS:
        raise ValueError(f"unknown kind of artifact {kind!r}; known: {', '.join(READERS)}")
    kinds = CONTROL_FLOW_NODES[kind]
    total = collections.Counter({k: 0 for k in kinds})
    dependent = collections.Counter({k: 0 for k in kinds})

    def found(node_kind: str, depends: bool) -> None:
        if node_kind in total:
            total[node_kind] += 1
            dependent[node_kind] += int(depends)

    READERS[kind](artifact, found)
    return ControlFlow(kind, dependent, total)


def _reaches(start: Iterable, sources: set, expand: Callable[[Any], Iterable],
             clean: set | None = None) -> bool:
    """Whether a backward walk from `start` meets a source; `expand(item)` gives what an
    item depends on (items must be hashable). A walk that meets none adds all it saw to
    `clean`, which later walks over the same graph then skip."""
    stack, seen = list(start), set()
    clean = set() if clean is None else clean
    while stack:
        item = stack.pop()
        if item in seen or item in clean:
            continue
        if item in sources:
            return True
        seen.add(item)
        stack.extend(expand(item))
    clean |= seen
    return False


# --- TorchScript -------------------------------------------------------------------------

# Nodes that read a tensor's shape, type or identity but not its values.
_TS_METADATA = frozenset({
    "aten::size", "aten::sym_size", "aten::dim", "aten::numel", "aten::sym_numel",
    "aten::stride", "aten::sym_stride", "aten::element_size", "aten::get_device",
    "aten::is_floating_point", "aten::is_complex", "aten::is_signed",
    "prim::dtype", "prim::device", "prim::shape", "prim::layout", "prim::requires_grad",
    "prim::isinstance", "prim::name",
    # `y is None` on an Optional input: whether it was given, not what it holds.
    "aten::__is__", "aten::__isnot__",
})


def _ts_is_metadata(node) -> bool:
    kind = node.kind()
    if kind == "aten::len":  # the length of a list may depend on data; a tensor's is a shape
        inputs = list(node.inputs())
        return bool(inputs) and inputs[0].type().kind() == "TensorType"
    return kind in _TS_METADATA or kind.startswith("prim::is_")  # prim::is_cuda, ...


def _ts_nodes(block) -> Iterable:
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from _ts_nodes(inner)


def _ts_conditions(node) -> list:
    """The values that decide whether, or how often, a control-flow node runs its blocks."""
    inputs = list(node.inputs())
    if node.kind() == "prim::If":
        return inputs[:1]
    if node.kind() == "prim::Loop":  # trip count, first condition, condition of the next trip
        return inputs[:2] + list(list(node.blocks())[0].outputs())[:1]
    return inputs


def _ts_index(values, value) -> int:
    return [v.unique() for v in values].index(value.unique())


def _ts_enclosing(node) -> Iterable:
    """The control-flow nodes whose blocks hold `node`, innermost first."""
    owner = node.owningBlock().owningNode()
    while owner is not None:
        yield owner
        owner = owner.owningBlock().owningNode()


class _TorchScriptGraph:
    """The dataflow of a TorchScript graph, walked backwards value by value."""

    def __init__(self, graph, sources: list):
        self.sources = {value.unique() for value in sources}
        self.values: dict[int, Any] = {}  # keeps every value (and its node) alive and findable
        self.writers: dict[int, list] = collections.defaultdict(list)  # alias set -> nodes
        self.set_attrs: dict[str, list] = collections.defaultdict(list)
        self._parent: dict[int, int] = {}
        self._clean: set = set()
        self._schemas: dict[str, Any] = {}
        writes = []
        for node in _ts_nodes(graph):
            for value in [*node.inputs(), *node.outputs()]:
                self.values[value.unique()] = value
            for block in node.blocks():
                for value in block.inputs():
                    self.values[value.unique()] = value
            if node.kind() == "prim::SetAttr":
                self.set_attrs[node.s("name")].append(node)
            writes += self._aliases(node)
        for value in graph.inputs():
            self.values[value.unique()] = value
        # In-place ops and list mutation leave later readers on the old value: whatever
        # writes into a value's alias set is part of what the value depends on.
        for value, node in writes:
            self.writers[self._find(value.unique())].append(node)

    def _find(self, key: int) -> int:
        while self._parent.get(key, key) != key:
            key = self._parent[key]
        return key

    def _aliases(self, node) -> list:
        """Union the node's outputs with the inputs they alias (views, `add_`'s result);
        return the (input, node) pairs the node writes to."""
        import torch

        text = node.schema()
        if text == "(no schema)":
            return []
        if text not in self._schemas:
            try:
                self._schemas[text] = torch._C.parse_schema(text)
            except RuntimeError:
                self._schemas[text] = None
        schema = self._schemas[text]
        if schema is None:
            return []
        inputs, written, sets = list(node.inputs()), [], {}
        for argument, value in zip(schema.arguments, inputs):
            info = argument.alias_info
            if info is None:
                continue
            if info.is_write:
                written.append((value, node))
            for name in info.before_set:
                if name != "*":
                    sets[name] = value
        for returned, value in zip(schema.returns, node.outputs()):
            info = returned.alias_info
            for name in (info.before_set if info is not None else ()):
                if name in sets:
                    self._parent[self._find(value.unique())] = self._find(sets[name].unique())
        return written

    def depends(self, values: Iterable) -> bool:
        return _reaches([v.unique() for v in values], self.sources, self._expand, self._clean)

    def _expand(self, key: int) -> list:
        value = self.values[key]
        found = [v for node in self.writers.get(self._find(key), ())
                 for v in [*node.inputs(), *self._control(node)]]
        node = value.node()
        if node.kind() == "prim::Param":
            owner = node.owningBlock().owningNode()
            if owner is not None:  # a block's parameter: a loop's counter or carried value
                found += self._block_parameter(owner, value)
        elif node.kind() == "prim::If":
            index = _ts_index(node.outputs(), value)
            found += _ts_conditions(node) + [list(b.outputs())[index] for b in node.blocks()]
        elif node.kind() == "prim::Loop":
            index = _ts_index(node.outputs(), value)
            body = list(list(node.blocks())[0].outputs())
            found += _ts_conditions(node) + [list(node.inputs())[index + 2], body[index + 1]]
        elif not _ts_is_metadata(node):
            found += list(node.inputs())
            found += [v for block in node.blocks() for v in block.outputs()]
            if node.kind() == "prim::GetAttr":  # what the graph itself stored there
                found += [v for setter in self.set_attrs.get(node.s("name"), ())
                          for v in [*setter.inputs(), *self._control(setter)]]
        return [v.unique() for v in found]

    @staticmethod
    def _block_parameter(owner, value) -> list:
        if owner.kind() != "prim::Loop":
            return list(owner.inputs()) + [v for b in owner.blocks() for v in b.outputs()]
        body = list(owner.blocks())[0]
        index = _ts_index(body.inputs(), value)
        found = _ts_conditions(owner)  # the counter, and how many trips a carried value took
        if index > 0:
            found += [list(owner.inputs())[index + 1], list(body.outputs())[index]]
        return found

    @staticmethod
    def _control(node) -> list:
        """The conditions that decide whether a node with a side effect runs."""
        return [v for owner in _ts_enclosing(node) for v in _ts_conditions(owner)]


def _torchscript(artifact, found) -> None:
    import torch

    graph = getattr(artifact, "inlined_graph", None)
    graph = graph if graph is not None else artifact.graph
    inputs = list(graph.inputs())
    # A module's graph takes `self` first: its attributes and parameters are not inputs.
    sources = inputs if isinstance(artifact, torch.jit.ScriptFunction) else inputs[1:]
    dataflow = _TorchScriptGraph(graph, sources)
    for node in _ts_nodes(graph):
        if node.kind() in ("prim::If", "prim::Loop"):
            found(node.kind(), dataflow.depends(_ts_conditions(node)))


# --- ONNX --------------------------------------------------------------------------------

_ONNX_METADATA = frozenset({"Shape", "Size"})


class _OnnxScope:
    """One graph of an ONNX model: the main graph, or a subgraph of an If, Loop or Scan
    (`owner`), whose nodes may read names of the graphs around it."""

    def __init__(self, graph, parent: "_OnnxScope | None" = None, owner=None):
        self.graph, self.parent, self.owner = graph, parent, owner
        self.inputs = [value.name for value in graph.input]
        self.outputs = [value.name for value in graph.output]
        initializers = {i.name for i in graph.initializer}
        initializers |= {i.values.name for i in graph.sparse_initializer}
        # name -> ("input", index), ("initializer", None) or ("node", _OnnxNode)
        self.names: dict[str, tuple] = {name: ("input", i) for i, name in enumerate(self.inputs)}
        self.names.update({name: ("initializer", None) for name in initializers})
        self.nodes = [_OnnxNode(node, self) for node in graph.node]
        for node in self.nodes:
            self.names.update({name: ("node", node) for name in node.outputs if name})

    def resolve(self, name: str) -> tuple["_OnnxScope", str] | None:
        scope = self
        while scope is not None and name not in scope.names:
            scope = scope.parent
        return None if scope is None else (scope, name)

    def all_nodes(self) -> Iterable["_OnnxNode"]:
        for node in self.nodes:
            yield node
            for inner in node.subgraphs.values():
                yield from inner.all_nodes()


class _OnnxNode:
    def __init__(self, node, scope: _OnnxScope):
        import onnx

        self.op_type, self.scope = node.op_type, scope
        self.inputs, self.outputs = list(node.input), list(node.output)
        self.subgraphs: dict[str, _OnnxScope] = {}
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                self.subgraphs[attribute.name] = _OnnxScope(attribute.g, scope, self)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for i, graph in enumerate(attribute.graphs):
                    self.subgraphs[f"{attribute.name}[{i}]"] = _OnnxScope(graph, scope, self)

    def values(self, names: Iterable[str], scope: _OnnxScope | None = None) -> list:
        """The (scope, name) of each non-empty name, as seen from `scope` (default: the
        node's own graph)."""
        scope = scope or self.scope
        return [v for v in (scope.resolve(n) for n in names if n) if v is not None]

    def conditions(self) -> list:
        """The values that decide whether, or how often, the node runs a subgraph.
        A Scan has none: its trip count is the length of its inputs, a shape."""
        if self.op_type == "If":
            return self.values(self.inputs[:1])
        if self.op_type == "Loop":  # trip count, first condition, condition of the next trip
            body = self.subgraphs["body"]
            return self.values(self.inputs[:2]) + self.values(body.outputs[:1], body)
        return []

    def everything(self) -> list:
        """All the node's inputs and all its subgraphs' outputs."""
        return self.values(self.inputs) + [v for scope in self.subgraphs.values()
                                           for v in self.values(scope.outputs, scope)]


def _onnx_expand(item: tuple) -> list:
    scope, name = item
    what, detail = scope.names[name]
    if what == "initializer":
        return []
    if what == "input":
        owner = scope.owner
        if owner is None:  # an input of the main graph that is not a model input
            return []
        if owner.op_type == "Loop":  # iteration number, condition, carried values
            found = owner.conditions()
            if detail >= 2:
                found += owner.values(owner.inputs[detail:detail + 1])
                found += owner.values(scope.outputs[detail - 1:detail], scope)
            return found
        return owner.everything()
    node = detail
    if node.op_type in _ONNX_METADATA:
        return []
    if node.op_type == "If":
        index = node.outputs.index(name)
        return node.conditions() + [v for branch in node.subgraphs.values()
                                    for v in node.values(branch.outputs[index:index + 1], branch)]
    return node.values(node.inputs) + (node.everything() if node.subgraphs else [])


def _onnx(artifact, found) -> None:
    import onnx

    model = artifact if isinstance(artifact, onnx.ModelProto) else \
        onnx.load(str(artifact), load_external_data=False)
    main = _OnnxScope(model.graph)
    sources = {(main, name) for name in main.inputs if main.names[name][0] == "input"}
    clean: set = set()
    for node in main.all_nodes():
        if node.op_type in ("If", "Loop", "Scan"):
            found(node.op_type, _reaches(node.conditions(), sources, _onnx_expand, clean))


# --- torch.export ------------------------------------------------------------------------

_FX_METADATA = frozenset({"sym_size", "sym_numel", "sym_stride", "sym_storage_offset",
                          "size", "numel", "dim", "stride"})


def _fx_name(node) -> str:
    """The op's name without namespace or overload: `sym_size`, `cond`, `add_`."""
    if node.op != "call_function":
        return ""
    return getattr(node.target, "__name__", "").split(".")[0]


def _fx_nodes(argument) -> list:
    import torch.fx

    nodes: list = []
    torch.fx.node.map_arg(argument, nodes.append)
    return nodes


def _fx_writes(user, node) -> bool:
    """Whether `user` is an in-place op that writes into `node`."""
    schema = getattr(user.target, "_schema", None) if user.op == "call_function" else None
    if schema is None:
        return False
    return any(argument.alias_info is not None and argument.alias_info.is_write
               and value is node for argument, value in zip(schema.arguments, user.args))


def _fx_expand(node) -> list:
    writers = [user for user in node.users if _fx_writes(user, node)]
    if node.op == "placeholder" or _fx_name(node) in _FX_METADATA:
        return writers
    return list(node.all_input_nodes) + writers


def _fx_depends(graph_module, flags: list[bool], argument) -> bool:
    """Whether `argument` of a node of the graph depends on a placeholder whose flag is set."""
    holders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    sources = {holder for holder, flag in zip(holders, flags) if flag}
    return _reaches(_fx_nodes(argument), sources, _fx_expand)


def _fx_output(graph_module, index: int):
    output = next(n for n in graph_module.graph.nodes if n.op == "output").args[0]
    return output[index] if isinstance(output, (list, tuple)) else output


def _fx_graph(graph_module, flags: list[bool], found) -> None:
    """Count the graph's cond and while_loop nodes, and those of the graphs they run."""
    for node in graph_module.graph.nodes:
        name = _fx_name(node)
        if name == "cond":
            predicate, true_graph, false_graph, operands = node.args[:4]
            found("cond", _fx_depends(graph_module, flags, predicate))
            inner = [_fx_depends(graph_module, flags, o) for o in operands]
            for branch in (true_graph, false_graph):
                _fx_graph(getattr(graph_module, branch.target), inner, found)
        elif name == "while_loop":
            cond_graph, body_graph, carried, additional = node.args[:4]
            condition = getattr(graph_module, cond_graph.target)
            body = getattr(graph_module, body_graph.target)
            inner = [_fx_depends(graph_module, flags, o) for o in [*carried, *additional]]
            # A carried value that starts as a constant depends on the inputs once the
            # body computes its next value from one: iterate to the fixed point.
            changed = True
            while changed:
                changed = False
                for k in range(len(carried)):
                    if not inner[k] and _fx_depends(body, inner, _fx_output(body, k)):
                        inner[k] = changed = True
            found("while_loop", _fx_depends(condition, inner, _fx_output(condition, 0)))
            _fx_graph(condition, inner, found)
            _fx_graph(body, inner, found)


def _exported(artifact, found) -> None:
    import torch

    program = artifact if isinstance(artifact, torch.export.ExportedProgram) else \
        torch.export.load(str(Path(artifact)))
    # Parameters, buffers and lifted constants are placeholders too; only user inputs count.
    users = {name for name in program.graph_signature.user_inputs if isinstance(name, str)}
    holders = [n for n in program.graph.nodes if n.op == "placeholder"]
    _fx_graph(program.graph_module, [holder.name in users for holder in holders], found)


# The readers, by kind of graph: what an export path's row names as its `graph`.
READERS: dict[str, Callable[[Any, Callable[[str, bool], None]], None]] = {
    "torchscript": _torchscript, "onnx": _onnx, "export": _exported}
