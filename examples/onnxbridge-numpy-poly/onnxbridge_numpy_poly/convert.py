"""Build an ONNX graph evaluating a numpy Polynomial with Horner's scheme."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxbridge import ConversionResult, ConvertOptions, UnsupportedModelError

DEFAULT_OPSET = 17


def convert(poly: np.polynomial.Polynomial, sample: Any, options: ConvertOptions) -> ConversionResult:
    """y = p(x) element-wise, x of any shape; float64 by default, float32 with dtype="float32"."""
    dtype = np.dtype(options.pop("dtype", "float64"))
    if dtype not in (np.float32, np.float64):
        raise UnsupportedModelError(f"dtype must be float32 or float64, got {dtype}")
    x = np.asarray(sample) if isinstance(sample, (np.ndarray, list, tuple, int, float)) else None
    if x is None or x.dtype.kind not in "biuf":
        raise TypeError(
            f"the sample must be numbers (a numpy array or list), got {type(sample).__name__}"
        )
    onnx_type = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    coef = np.asarray(poly.coef, dtype=dtype)
    mapping = np.polynomial.polyutils.mapparms(poly.domain, poly.window)
    off, scl = (np.asarray(v, dtype=dtype) for v in mapping)

    def const(name: str, value: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))

    # Map x from the polynomial's domain to its window, then Horner: c_n, c_n*t + c_{n-1}, ...
    nodes = [const("off", off), const("scl", scl),
             helper.make_node("Mul", ["x", "scl"], ["x_scaled"]),
             helper.make_node("Add", ["x_scaled", "off"], ["t"])]
    acc = "c_last"
    nodes.append(const(acc, coef[-1:].reshape(())))
    for i in range(len(coef) - 2, -1, -1):
        nodes.append(const(f"c{i}", coef[i:i + 1].reshape(())))
        nodes.append(helper.make_node("Mul", [acc, "t"], [f"m{i}"]))
        out = "y" if i == 0 else f"h{i}"
        nodes.append(helper.make_node("Add", [f"m{i}", f"c{i}"], [out]))
        acc = out
    if acc != "y":  # a constant polynomial: y = c0 broadcast to x's shape
        nodes.append(helper.make_node("Mul", ["t", "zero"], ["zeros"]))
        nodes.append(const("zero", np.asarray(0, dtype=dtype)))
        nodes.append(helper.make_node("Add", ["zeros", acc], ["y"]))
    ndim = max(x.ndim, 1)
    shape = ["batch"] + [None] * (ndim - 1)
    graph = helper.make_graph(
        _topological(nodes),
        options.name or "polynomial",
        [helper.make_tensor_value_info("x", onnx_type, shape)],
        [helper.make_tensor_value_info("y", onnx_type, shape)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", options.opset or DEFAULT_OPSET)],
        producer_name="onnxbridge-numpy-poly",
    )
    model.ir_version = 8

    def reference(x: Any) -> list[np.ndarray]:
        return [np.asarray(poly(np.asarray(x, dtype=dtype)), dtype=dtype)]

    return ConversionResult(proto=model, reference=reference, framework="numpy",
                            framework_version=np.__version__)


def _topological(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Constants first, so a node never reads a value defined after it."""
    return [n for n in nodes if n.op_type == "Constant"] + [n for n in nodes if n.op_type != "Constant"]
