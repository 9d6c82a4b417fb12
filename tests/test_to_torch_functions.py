"""OnnxModel.to_torch() on ONNX local functions and the indexing operators they need.

skl2onnx writes KNNImputer as nested local functions (with If, Compress, NonZero, ScatterND,
GatherND, ...): checked against scikit-learn's ``transform`` and onnxruntime. Hand-built graphs
check functions with attribute references and nested calls, and each indexing operator, against
onnxruntime on the same model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

import onnxbridge  # noqa: E402
from onnxbridge._to_torch import OnnxTorchModule  # noqa: E402
from onnxbridge.errors import UnsupportedOperatorError  # noqa: E402

F = TensorProto.FLOAT
I64 = TensorProto.INT64
B = TensorProto.BOOL


def _run_both(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple[list[Any], tuple]:
    import onnxruntime

    session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    got = OnnxTorchModule(proto)(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    return expected, got if isinstance(got, tuple) else (got,)


def _assert_same(expected: list[Any], got: tuple) -> None:
    assert len(expected) == len(got)
    for e, g in zip(expected, got, strict=True):
        g = g.detach().numpy()
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_knn_imputer_local_functions_match_scikit_learn(k: int) -> None:
    from sklearn.impute import KNNImputer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    X[rng.random(X.shape) < 0.15] = np.nan
    imp = KNNImputer(n_neighbors=k).fit(X)
    m = onnxbridge.to_onnx(imp, X[:5])
    assert m.proto.functions, "skl2onnx should write local functions for KNNImputer"
    x = rng.normal(size=(9, 4)).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = np.nan
    x[1] = [0.5, 1, 2, 3]  # a row with nothing missing
    back = m.to_torch(x)   # parity against onnxruntime on these rows
    with torch.no_grad():
        got = back(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, imp.transform(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # one row, no missing value at all
        one = back(torch.from_numpy(x[1:2])).numpy()
    np.testing.assert_allclose(one, imp.transform(x[1:2]), atol=1e-6)
    # a row with nothing known: onnxruntime fails on skl2onnx's graph here (GatherElements
    # index out of range); the torch module gives scikit-learn's column means
    empty = np.full((1, 4), np.nan, np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.from_numpy(empty)).numpy(), imp.transform(empty),
                                   atol=1e-6)


def _function_model() -> onnx.ModelProto:
    """main -> outer(x; alpha=2.5) -> inner(scaled) -> LeakyRelu(alpha ref) + Compress."""
    leaky = helper.make_node("LeakyRelu", ["a"], ["b"])
    ref = onnx.AttributeProto()
    ref.name, ref.ref_attr_name, ref.type = "alpha", "slope", onnx.AttributeProto.FLOAT
    leaky.attribute.append(ref)
    inner = helper.make_function("local", "inner", ["a"], ["b"], [leaky],
                                 [helper.make_opsetid("", 18)])
    inner.attribute_proto.append(helper.make_attribute("slope", 0.5))
    outer = helper.make_function(
        "local", "outer", ["x", "keep"], ["y", "nz"],
        [helper.make_node("Constant", [], ["two"], value_float=2.0),
         helper.make_node("Mul", ["x", "two"], ["scaled"]),
         helper.make_node("inner", ["scaled"], ["act"], domain="local"),
         helper.make_node("Compress", ["act", "keep"], ["y"], axis=1),
         helper.make_node("NonZero", ["act"], ["nz"])],
        [helper.make_opsetid("", 18), helper.make_opsetid("local", 1)])
    graph = helper.make_graph(
        [helper.make_node("outer", ["x", "keep"], ["y", "nz"], domain="local"),
         helper.make_node("inner", ["x"], ["z"], domain="local", slope=0.1)],
        "g", [helper.make_tensor_value_info("x", F, [3, 4]),
              helper.make_tensor_value_info("keep", B, [4])],
        [helper.make_tensor_value_info("y", F, None), helper.make_tensor_value_info("nz", I64, None),
         helper.make_tensor_value_info("z", F, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                   helper.make_opsetid("local", 1)],
                             functions=[inner, outer])


def test_nested_local_functions_with_attribute_references_match_onnxruntime() -> None:
    x = np.array([[1, -2, 0, 3], [-1, 0, 2, -4], [0.5, -0.5, 0, 1]], dtype=np.float32)
    expected, got = _run_both(_function_model(), {"x": x, "keep": np.array([1, 0, 1, 1], bool)})
    _assert_same(expected, got)
    # the default (0.5) inside outer's call, the caller's 0.1 in the graph's own call
    np.testing.assert_allclose(got[2].numpy(), np.where(x > 0, x, 0.1 * x), rtol=1e-6)


def test_an_operator_inside_a_local_function_is_named_when_missing() -> None:
    proto = _function_model()
    proto.functions[1].node[1].op_type = "Mysterious"
    with pytest.raises(UnsupportedOperatorError, match="Mysterious"):
        OnnxTorchModule(proto)


def _one(node: onnx.NodeProto, inputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
    out = I64 if node.op_type == "NonZero" else inputs[0].type.tensor_type.elem_type
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info(o, out, None) for o in node.output])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _vi(name: str, array: np.ndarray) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype),
                                         list(array.shape))


RNG = np.random.default_rng(1)
DATA = RNG.normal(size=(4, 3, 2)).astype(np.float32)


@pytest.mark.parametrize("case", [
    ("Compress", {"axis": 1}, [DATA, np.array([1, 0, 1], bool)]),
    ("Compress", {}, [DATA, np.array([0, 1, 1, 0, 1], bool)]),   # flattened, shorter condition
    ("Compress", {"axis": -1}, [DATA, np.array([0, 0], bool)]),   # nothing kept
    ("NonZero", {}, [np.array([[0, 1.5, 0], [2, 0, -1]], np.float32)]),
    ("NonZero", {}, [np.array([[True, False], [True, True]])]),
    ("ScatterND", {}, [DATA, np.array([[1, 2], [3, 0]], np.int64),
                       RNG.normal(size=(2, 2)).astype(np.float32)]),
    ("ScatterND", {}, [DATA, np.array([[-1], [0]], np.int64),
                       RNG.normal(size=(2, 3, 2)).astype(np.float32)]),
    ("ScatterND", {"reduction": "add"}, [DATA, np.array([[1, 2], [1, 2]], np.int64),
                                         RNG.normal(size=(2, 2)).astype(np.float32)]),
    ("ScatterND", {"reduction": "mul"}, [DATA, np.array([[0], [0]], np.int64),
                                         RNG.normal(size=(2, 3, 2)).astype(np.float32)]),
    ("ScatterND", {"reduction": "max"}, [DATA, np.array([[2, 1, 0]], np.int64),
                                         np.array([9.0], np.float32)]),
    ("ScatterElements", {"axis": 1}, [DATA, np.array([[[2, 0]], [[1, -1]], [[0, 0]], [[1, 2]]],
                                                     np.int64), np.ones((4, 1, 2), np.float32)]),
    ("ScatterElements", {"axis": 0, "reduction": "add"},
     [DATA, np.zeros((2, 3, 2), np.int64), np.ones((2, 3, 2), np.float32)]),
    ("ScatterElements", {"axis": 2, "reduction": "min"},
     [DATA, np.ones((4, 3, 1), np.int64), np.zeros((4, 3, 1), np.float32)]),
    ("GatherND", {}, [DATA, np.array([[0, 1], [3, -1]], np.int64)]),
    ("GatherND", {}, [DATA, np.array([[[1, 2, 0]], [[0, 0, 1]]], np.int64)]),
    ("GatherND", {"batch_dims": 1}, [DATA, np.array([[1], [0], [2], [2]], np.int64)]),
    ("GatherND", {"batch_dims": 2}, [DATA, np.zeros((4, 3, 1), np.int64)]),
], ids=lambda c: c[0] + str(sorted(c[1].items())))
def test_indexing_operators_match_onnxruntime(case: tuple[str, dict, list[np.ndarray]]) -> None:
    op, attrs, arrays = case
    names = [f"i{k}" for k in range(len(arrays))]
    node = helper.make_node(op, names, ["out"], **attrs)
    model = _one(node, [_vi(n, a) for n, a in zip(names, arrays, strict=True)])
    expected, got = _run_both(model, dict(zip(names, arrays, strict=True)))
    _assert_same(expected, got)


def test_gradients_flow_through_scatter_and_gather() -> None:
    node_s = helper.make_node("ScatterND", ["d", "i", "u"], ["s"])
    node_g = helper.make_node("GatherND", ["s", "j"], ["out"])
    graph = helper.make_graph([node_s, node_g], "g", [helper.make_tensor_value_info("d", F, [3, 2])],
                              [helper.make_tensor_value_info("out", F, None)],
                              [onnx.numpy_helper.from_array(np.array([[1]], np.int64), "i"),
                               onnx.numpy_helper.from_array(np.array([[5.0, 6.0]], np.float32), "u"),
                               onnx.numpy_helper.from_array(np.array([[0], [1]], np.int64), "j")])
    module = OnnxTorchModule(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    d = torch.ones(3, 2, requires_grad=True)
    module(d).sum().backward()
    assert d.grad is not None
    # row 0 is gathered as is; row 1 was overwritten by the update (no gradient); row 2 unused
    np.testing.assert_array_equal(d.grad.numpy(), [[1, 1], [0, 0], [0, 0]])
    assert module.u.requires_grad  # the float initializer of updates is a parameter
