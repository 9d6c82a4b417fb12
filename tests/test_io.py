"""Inputs to OnnxModel.run: positional, by name, DataFrames, lists, torch tensors, casts, errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxbridge import InputError, OnnxModel
from onnxbridge.io import resize_batch


def two_input_model() -> OnnxModel:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Sub", ["a", "b"], ["diff"])],
        "two",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 1]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 1])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["n", 1]),
         helper.make_tensor_value_info("diff", TensorProto.FLOAT, ["n", 1])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return OnnxModel(proto)


def test_positional_named_dict_and_tuple() -> None:
    m = two_input_model()
    a, b = np.array([[1.0], [2.0]], np.float32), np.array([[3.0], [5.0]], np.float32)
    expected_sum, expected_diff = a + b, a - b
    for result in (m.run(a, b), m.run(a=a, b=b), m.run({"a": a, "b": b}), m.run((a, b)),
                   m.run(a, b=b)):
        np.testing.assert_array_equal(result[0], expected_sum)
        np.testing.assert_array_equal(result[1], expected_diff)
    as_dict = m.run(a, b, as_dict=True)
    assert list(as_dict) == ["sum", "diff"]


def test_dataframe_split_by_column_name() -> None:
    pd = pytest.importorskip("pandas")
    m = two_input_model()
    df = pd.DataFrame({"b": [3.0, 5.0], "a": [1.0, 2.0]})
    s, d = m.run(df)
    np.testing.assert_array_equal(s.ravel(), [4.0, 7.0])
    np.testing.assert_array_equal(d.ravel(), [-2.0, -3.0])
    with pytest.raises(InputError, match=r"lacks column\(s\) \['b'\]"):
        m.run(pd.DataFrame({"a": [1.0]}))


def test_lists_and_safe_casts(scale_model: onnx.ModelProto) -> None:
    m = OnnxModel(scale_model)
    np.testing.assert_array_equal(m.run([[1, 1, 1]]), [[1.0, 2.0, 3.0]])  # int list -> float32
    np.testing.assert_array_equal(m.run(np.ones((1, 3), np.float64)), [[1.0, 2.0, 3.0]])


def test_torch_tensor_input(scale_model: onnx.ModelProto) -> None:
    torch = pytest.importorskip("torch")
    m = OnnxModel(scale_model)
    x = torch.ones(2, 3, requires_grad=True)
    np.testing.assert_array_equal(m.run(x), [[1, 2, 3], [1, 2, 3]])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.run(np.ones((2, 4), np.float32)), r"expects shape \[batch, 3\], got \[2, 4\]"),
        (lambda m: m.run(np.ones(3, np.float32)), r"expects 2 dimensions.*add a batch axis"),
        (lambda m: m.run(np.array([["a", "b", "c"]])), "expects float32, got strings"),
        (lambda m: m.run(np.ones((1, 3), np.complex64)), "could lose values"),
        (lambda m: m.run(z=np.ones((1, 3))), "no input named 'z'; its inputs are \\['x'\\]"),
        (lambda m: m.run(), r"missing input\(s\) \['x'\]"),
        (lambda m: m.run(np.ones((1, 3)), np.ones((1, 3))), "takes 1 input"),
        (lambda m: m.run([[1, 2], [3]]), "ragged|inhomogeneous|cannot turn"),
    ],
)
def test_input_errors_are_plain(scale_model: onnx.ModelProto, call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=match):
        call(OnnxModel(scale_model))


def test_resize_batch_kinds() -> None:
    x = np.arange(6).reshape(2, 3)
    assert resize_batch(x, 5).shape == (5, 3)
    assert resize_batch({"a": x, "b": x}, 1)["a"].shape == (1, 3)
    assert resize_batch((x, x), 3)[1].shape == (3, 3)
    assert resize_batch(np.float32(1.0), 3) is None
    assert resize_batch("text", 3) is None


def test_hot_path_gives_the_same_answers_and_errors(scale_model: onnx.ModelProto) -> None:
    m = OnnxModel(scale_model)
    x = np.ones((2, 3), np.float32)
    first = m.run(x)  # creates the session; later calls take the hot path
    np.testing.assert_array_equal(m.run(x), first)
    np.testing.assert_array_equal(m.run(x=x), first)
    np.testing.assert_array_equal(m.run(x.astype(np.float64)), first)  # cast on the full path
    assert list(m.run(x, as_dict=True)) == ["y"]
    with pytest.raises(InputError, match="no input named 'z'"):
        m.run(z=x)
    with pytest.raises(InputError, match=r"axis 1 must be 3"):
        m.run(np.ones((2, 4), np.float32))
    with pytest.raises(InputError, match="expects 2 dimensions"):
        m.run(np.ones(3, np.float32))
    with pytest.raises(InputError, match="given both by position and by name"):
        m.run(x, x=x)
