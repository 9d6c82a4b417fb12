"""Reading an ONNX graph for drawing: its ops (with tooltips, weights, module scopes), in order."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

from onnxbridge.signature import TensorSpec

_TIMES = "\u00d7"  # the multiplication sign


# -- reading the graph ---------------------------------------------------------------------------
@dataclass
class _Op:
    op_type: str
    domain: str
    name: str
    inputs: list[str]
    outputs: list[str]
    scope: str
    weights: list[str]
    tooltip: str


@dataclass
class _Graph:
    ops: list[_Op]
    inputs: list[tuple[str, str]]   # (name, "float32 [batch, 3]")
    outputs: list[tuple[str, str]]
    constants: set[str]             # initializers and folded Constant outputs
    folded: int                     # Constant nodes drawn as weights of their consumers


def _dims(dims: Sequence[int]) -> str:
    return "[" + _TIMES.join(str(d) for d in dims) + "]" if len(dims) else "scalar"


def _module_scope(node: onnx.NodeProto) -> str:
    """The module a node came from: torch's name scopes when present, else the node name's folder."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                break
            if isinstance(scopes, list) and len(scopes) >= 2:
                return str(scopes[-2])
    if "/" in node.name:
        return node.name.rsplit("/", 1)[0].strip("/")
    return ""


def _attribute_text(attr: onnx.AttributeProto) -> str:
    from onnx import helper

    if attr.type in (attr.GRAPH, attr.GRAPHS):
        graphs = [attr.g] if attr.type == attr.GRAPH else list(attr.graphs)
        return f"subgraph of {sum(len(g.node) for g in graphs)} nodes"
    if attr.type in (attr.TENSOR, attr.SPARSE_TENSOR):
        return "tensor " + _dims(attr.t.dims if attr.type == attr.TENSOR else attr.sparse_tensor.dims)
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _input_names(op_type: str, domain: str, opset: int) -> list[str]:
    from onnx import defs

    try:
        schema = defs.get_schema(op_type, opset, domain)
    except Exception:  # a custom or unknown operator: positions instead of names
        return []
    return [p.name for p in schema.inputs]


def _read_graph(proto: onnx.ModelProto) -> _Graph:
    g = proto.graph
    opsets = {o.domain: o.version for o in proto.opset_import}
    shapes: dict[str, list[int]] = {t.name: list(t.dims) for t in g.initializer}
    shapes.update({t.values.name: list(t.dims) for t in g.sparse_initializer})
    folded = 0
    ops: list[_Op] = []
    for node in g.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and not node.input:
            value = next((a for a in node.attribute if a.name == "value"), None)
            for out in node.output:
                shapes[out] = list(value.t.dims) if value is not None and value.HasField("t") else []
            folded += 1
            continue
        names = _input_names(node.op_type, node.domain, opsets.get(node.domain, opsets.get("", 1)))
        weights = [
            f"{names[i] if i < len(names) else f'in{i}'} {_dims(shapes[name])}"
            for i, name in enumerate(node.input) if name in shapes
        ]
        kind = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        lines = [kind + (f"  {node.name}" if node.name else "")]
        scope = _module_scope(node)
        if scope:
            lines.append(f"module: {scope}")
        lines.append("inputs: " + ", ".join(n or "(none)" for n in node.input))
        lines.append("outputs: " + ", ".join(node.output))
        lines += [f"{a.name} = {_attribute_text(a)}" for a in node.attribute]
        ops.append(_Op(node.op_type, node.domain, node.name, list(node.input), list(node.output),
                       scope, weights, "\n".join(lines)))
    constants = set(shapes)
    inputs = [(v.name, _type_text(v)) for v in g.input if v.name not in constants]
    outputs = [(v.name, _type_text(v)) for v in g.output]
    return _Graph(_topological(ops, {n for n, _ in inputs} | constants), inputs, outputs, constants,
                  folded)


def _type_text(value: onnx.ValueInfoProto) -> str:
    """``float32 [batch, 3]``: the spec's own wording without its name."""
    spec = TensorSpec.from_value_info(value)
    return str(spec)[len(spec.name) + 2:]


def _topological(ops: list[_Op], known: set[str]) -> list[_Op]:
    """The ops in an order where producers come first (ONNX requires it; not every file obeys)."""
    available = set(known)
    done: list[_Op] = []
    pending = list(ops)
    while pending:
        left = []
        for op in pending:
            if all(not name or name in available for name in op.inputs):
                done.append(op)
                available.update(op.outputs)
            else:
                left.append(op)
        if len(left) == len(pending):  # inputs that nothing produces: keep file order for the rest
            done += left
            break
        pending = left
    return done
