"""Custom operators: a torch operator becomes one node of a custom ONNX domain.

``to_onnx(model, x, custom_ops={"mylib::my_op": "ai.onnx.contrib::MyOp"})`` turns each call of
the torch operator ``mylib::my_op`` (a ``torch.library.custom_op``, or any ``aten`` operator) into
one node ``MyOp`` of domain ``ai.onnx.contrib``: the operator's tensor arguments become the node's
inputs, in order, and its other arguments (floats, ints, strings, lists of them) become
attributes of the same name. onnxruntime runs the node once an implementation is registered,
e.g. with onnxruntime-extensions' ``@onnx_op`` (docs/custom-operators.md shows the whole path).
A value may also be a ready translation function (an onnxscript function) for full control.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import onnx
import torch

from onnxbridge.errors import ConversionError

__all__ = ["CUSTOM_OP_LIBRARY_KEY", "custom_domains", "resolve_custom_ops", "translation_table"]

# Metadata key naming the library that implements the model's custom-domain operators.
CUSTOM_OP_LIBRARY_KEY = "onnxbridge.custom_op_library"
_STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training"}
_ALL_TENSOR_TYPES = [
    f"tensor({t})" for t in (
        "float", "double", "float16", "bfloat16", "int8", "int16", "int32", "int64",
        "uint8", "uint16", "uint32", "uint64", "bool", "string",
    )
]


def _operator(key: Any) -> torch._ops.OpOverload:
    if isinstance(key, torch._ops.OpOverload):
        return key
    if isinstance(key, torch._ops.OpOverloadPacket):
        return key.default
    overload = getattr(key, "_opoverload", None)  # what @torch.library.custom_op returns
    if isinstance(overload, torch._ops.OpOverload):
        return overload
    if isinstance(key, str) and "::" in key:
        namespace, _, rest = key.partition("::")
        name, _, variant = rest.partition(".")
        try:
            packet = getattr(getattr(torch.ops, namespace), name)
            return getattr(packet, variant or "default")
        except (AttributeError, RuntimeError):
            pass
    raise ConversionError(
        f"custom_ops: {key!r} is not a torch operator; give 'namespace::name' (e.g."
        " 'mylib::my_op', defined with torch.library.custom_op), the op itself"
        " (torch.ops.mylib.my_op.default) or the function @torch.library.custom_op returned",
        converter="torch",
    )


def _target(key: Any, value: Any) -> tuple[str, str] | Callable[..., Any]:
    if callable(value):
        return value
    if isinstance(value, str) and value.count("::") == 1:
        domain, op_type = value.split("::")
        if domain in _STANDARD_DOMAINS:
            raise ConversionError(
                f"custom_ops[{key!r}]: {value!r} is in a standard ONNX domain; name a custom"
                " one such as 'ai.onnx.contrib::MyOp' (onnxruntime-extensions' domain)",
                converter="torch",
            )
        if domain and op_type.isidentifier():
            return domain, op_type
    raise ConversionError(
        f"custom_ops[{key!r}] = {value!r}: give the ONNX node as 'domain::OpType',"
        " e.g. 'ai.onnx.contrib::MyOp', or an onnxscript translation function",
        converter="torch",
    )


def resolve_custom_ops(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    """{OpOverload: (domain, op_type) or translation function}, checked."""
    return {_operator(key): _target(key, value) for key, value in mapping.items()}


def _attribute_type(name: str, value: Any) -> Any:
    from onnx.defs import OpSchema

    kinds = OpSchema.AttrType
    if isinstance(value, (bool, int)):
        return kinds.INT
    if isinstance(value, float):
        return kinds.FLOAT
    if isinstance(value, str):
        return kinds.STRING
    if isinstance(value, (list, tuple)) and value:
        if all(isinstance(v, (bool, int)) for v in value):
            return kinds.INTS
        if all(isinstance(v, (int, float)) for v in value):
            return kinds.FLOATS
        if all(isinstance(v, str) for v in value):
            return kinds.STRINGS
    raise ConversionError(
        f"custom operator argument {name!r} = {value!r} cannot be an ONNX attribute; pass it"
        " as a tensor, or use a number, a string or a list of them",
        converter="torch",
    )


def _node_builder(op: torch._ops.OpOverload, domain: str, op_type: str) -> Callable[..., Any]:
    """A translation function that emits one ``domain::op_type`` node for ``op``."""
    import onnx_ir as ir
    from onnx.defs import OpSchema
    from onnxscript import values

    schema = op._schema
    arg_names = [a.name for a in schema.arguments]
    n_outputs = len(schema.returns)
    if any(str(r.type) != "Tensor" for r in schema.returns):
        raise ConversionError(
            f"custom_ops: {op} returns {[str(r.type) for r in schema.returns]}; only operators"
            " that return tensors (not lists or scalars) can be mapped to an ONNX node",
            converter="torch",
        )
    opset = values.Opset(domain, 1)

    def translate(*args: Any, **kwargs: Any) -> Any:
        given = dict(zip(arg_names, args, strict=False))
        given.update(kwargs)
        inputs = [(k, v) for k, v in given.items() if isinstance(v, ir.Value)]
        attrs = {
            k: (int(v) if isinstance(v, bool) else v)
            for k, v in given.items() if not isinstance(v, ir.Value) and v is not None
        }
        node_schema = OpSchema(
            op_type, domain, 1,
            inputs=[OpSchema.FormalParameter(k, f"T{i}") for i, (k, _) in enumerate(inputs)],
            outputs=[OpSchema.FormalParameter(f"output_{i}", f"U{i}") for i in range(n_outputs)],
            type_constraints=[(f"T{i}", _ALL_TENSOR_TYPES, "") for i in range(len(inputs))]
            + [(f"U{i}", _ALL_TENSOR_TYPES, "") for i in range(n_outputs)],
            attributes=[OpSchema.Attribute(k, _attribute_type(k, v), "") for k, v in attrs.items()],
        )
        return values.Op(opset, op_type, node_schema)(*[v for _, v in inputs], **attrs)

    translate.__name__ = f"{domain}_{op_type}".replace(".", "_")
    return translate


def translation_table(resolved: Mapping[Any, Any]) -> dict[Any, Callable[..., Any]]:
    """The ``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``."""
    return {
        op: target if callable(target) else _node_builder(op, *target)
        for op, target in resolved.items()
    }


def custom_domains(proto: onnx.ModelProto) -> list[str]:
    """Non-standard domains that nodes of the main graph use (functions' own domains aside)."""
    local = {f.domain for f in proto.functions}
    return sorted({n.domain for n in proto.graph.node}
                  - _STANDARD_DOMAINS - local - {"pkg.onnxscript.torch_lib"})
