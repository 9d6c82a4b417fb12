"""run() never answers wrongly in silence: lossy casts and masked arrays are InputErrors unless
the caller opts in (cast="unsafe"), and values that survive a cast still run."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from onnxbridge import InputError, OnnxModel


def identity(elem: int) -> OnnxModel:
    """y = x for a 1-D input of ONNX type ``elem``: the output shows exactly what was fed."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "identity",
        [helper.make_tensor_value_info("x", elem, ["n"])],
        [helper.make_tensor_value_info("y", elem, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return OnnxModel(model)


@pytest.mark.parametrize(("elem", "value", "match"), [
    (TensorProto.INT32, np.array([2**33 + 5, 1], np.int64), "wrap around"),
    (TensorProto.INT32, np.array([-(2**31) - 1], np.int64), "wrap around"),
    (TensorProto.INT64, np.array([2**63], np.uint64), "wrap around"),
    (TensorProto.FLOAT, np.array([1.0, 1e300], np.float64), "become inf"),
    (TensorProto.FLOAT16, np.array([70000.0], np.float32), "become inf"),
    (TensorProto.FLOAT, np.array([2**24 + 1], np.int64), "not exact"),
    (TensorProto.DOUBLE, np.array([2**60 + 1], np.int64), "not exact"),
])
def test_a_lossy_cast_is_an_input_error(elem: int, value: np.ndarray, match: str) -> None:
    m = identity(elem)
    with pytest.raises(InputError, match=match) as info:
        m.run(value)
    assert 'cast="unsafe"' in str(info.value)
    with pytest.raises(InputError, match=match):
        m.run(x=list(value) if value.dtype.kind == "f" else value)  # by name too


@pytest.mark.parametrize(("elem", "value"), [
    (TensorProto.INT32, np.array([5, -7, 2**31 - 1], np.int64)),
    (TensorProto.FLOAT, np.array([1.5, np.inf, np.nan, -(2.0**127)], np.float64)),  # inf stays inf
    (TensorProto.FLOAT, np.array([2**24, 2**33, -12], np.int64)),  # exact in float32
    (TensorProto.INT64, np.array([3], np.uint64)),
    (TensorProto.FLOAT, np.array([True, False])),
])
def test_a_cast_that_keeps_every_value_runs(elem: int, value: np.ndarray) -> None:
    out = identity(elem).run(value)
    np.testing.assert_array_equal(out.astype(np.float64), value.astype(np.float64))


def test_cast_unsafe_casts_as_numpy_does() -> None:
    big = np.array([2**33 + 5, 7], np.int64)
    np.testing.assert_array_equal(identity(TensorProto.INT32).run(big, cast="unsafe"),
                                  big.astype(np.int32))  # wrapped, as asked: [5, 7]
    with np.errstate(over="ignore"):
        expected = np.array([1e300], np.float64).astype(np.float32)
    np.testing.assert_array_equal(
        identity(TensorProto.FLOAT).run(np.array([1e300]), cast="unsafe"), expected)
    with pytest.raises(InputError, match="cast must be one of"):
        identity(TensorProto.FLOAT).run(np.ones(2, np.float32), cast="maybe")


def test_a_masked_array_is_refused_unless_nothing_is_masked() -> None:
    m = identity(TensorProto.FLOAT)
    masked = np.ma.masked_array(np.array([1.0, 99.0], np.float32), mask=[False, True])
    with pytest.raises(InputError, match=r"masked array with 1 masked value.*filled\(np.nan\)"):
        m.run(masked)
    np.testing.assert_array_equal(m.run(masked.filled(np.nan)), [1.0, np.nan])
    clear = np.ma.masked_array(np.array([1.0, 2.0], np.float32), mask=[False, False])
    np.testing.assert_array_equal(m.run(clear), [1.0, 2.0])
    np.testing.assert_array_equal(m.run(np.ma.masked_array(np.array([3.0, 4.0]))), [3.0, 4.0])


def test_a_failure_inside_onnxruntime_is_a_run_error() -> None:
    """A node that fails on these inputs (4 values cannot be reshaped to [-1, 3])."""
    from onnx import numpy_helper

    from onnxbridge import RunError

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        initializer=[numpy_helper.from_array(np.array([-1, 3], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    m = OnnxModel(model)
    np.testing.assert_array_equal(m.run(np.ones((3, 4), np.float32)), np.ones((4, 3)))
    for call in (lambda: m.run(np.ones((1, 4), np.float32)),  # the fast path
                 lambda: m.run(np.ones((1, 4), np.float64)),  # the checked path
                 lambda: m.run(x=np.ones((1, 4), np.float32), as_dict=True)):
        with pytest.raises(RunError, match="onnxruntime failed to run model 'reshape'") as info:
            call()
        assert info.value.__cause__ is not None
