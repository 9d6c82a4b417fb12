"""A graph's signature: its inputs and outputs as ``TensorSpec`` (name, dtype, shape, ONNX type).

A leaf module: it imports nothing from onnxbridge, so the model, its feeds (``io``) and its
pictures (``viz``) can all read signatures without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

__all__ = ["Dim", "TensorSpec", "format_shape", "graph_signature"]

Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, numpy dtype (None for non-tensor types), shape.

    A dimension is an int when fixed, a string when symbolic (``"batch"``), None when unknown.
    ``type`` is ONNX's own spelling, e.g. ``tensor(float)`` or ``seq(map(int64,tensor(float)))``.
    """

    name: str
    dtype: np.dtype | None
    shape: tuple[Dim, ...] | None
    type: str

    @classmethod
    def from_value_info(cls, vi: onnx.ValueInfoProto) -> TensorSpec:
        from onnx import helper

        t = vi.type
        if t.HasField("tensor_type"):
            elem = t.tensor_type.elem_type
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem)) if elem else None
            shape: tuple[Dim, ...] | None = None
            if t.tensor_type.HasField("shape"):
                shape = tuple(
                    d.dim_value if d.HasField("dim_value")
                    else (d.dim_param or None)
                    for d in t.tensor_type.shape.dim
                )
            return cls(vi.name, dtype, shape, _type_str(t))
        return cls(vi.name, None, None, _type_str(t))

    def __str__(self) -> str:
        if self.dtype is None:
            return f"{self.name}: {self.type}"
        return f"{self.name}: {self.dtype_name} {format_shape(self.shape)}"

    @property
    def dtype_name(self) -> str:
        """``float32``, ``string`` for numpy's object dtype, or the ONNX type for non-tensors."""
        if self.dtype is None:
            return self.type
        return "string" if self.dtype == np.dtype(object) else self.dtype.name


def format_shape(shape: Sequence[int | str | None] | None) -> str:
    if shape is None:
        return "any shape"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _type_str(t: onnx.TypeProto) -> str:
    from onnx import helper

    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({helper.tensor_dtype_to_string(t.tensor_type.elem_type).split('.')[-1].lower()})"
    if kind == "sequence_type":
        return f"seq({_type_str(t.sequence_type.elem_type)})"
    if kind == "map_type":
        key = helper.tensor_dtype_to_string(t.map_type.key_type).split(".")[-1].lower()
        return f"map({key},{_type_str(t.map_type.value_type)})"
    if kind == "optional_type":
        return f"optional({_type_str(t.optional_type.elem_type)})"
    return kind or "unknown"


def graph_signature(proto: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The main graph's inputs (initializers listed as inputs left out) and outputs."""
    g = proto.graph
    init = {t.name for t in g.initializer}
    ins = [TensorSpec.from_value_info(v) for v in g.input if v.name not in init]
    outs = [TensorSpec.from_value_info(v) for v in g.output]
    return ins, outs
