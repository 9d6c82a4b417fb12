"""Property-based fuzzing (hypothesis) with a bounded budget: load over mutated valid models, run
over random dtypes, shapes and values. Only OnnxBridgeError subclasses or correct results."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import onnx
import onnxruntime
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import onnxbridge
from onnxbridge import InputError, OnnxBridgeError, OnnxModel
from onnxbridge.viz import to_svg


def _base_model() -> onnx.ModelProto:
    """x [batch, 4] -> Mul w -> Add b -> Relu -> Reshape [-1, 2, 2] -> Cast(double): a little
    of everything a mutation can break (initializers, attributes, shapes, metadata)."""
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "b"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["s"], name="reshape"),
        helper.make_node("Cast", ["s"], ["y"], name="cast", to=TensorProto.DOUBLE),
    ]
    graph = helper.make_graph(
        nodes, "fuzz",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["batch", 2, 2])],
        initializer=[numpy_helper.from_array(np.arange(1, 5, dtype=np.float32), "w"),
                     numpy_helper.from_array(np.full(4, -2.0, np.float32), "b"),
                     numpy_helper.from_array(np.array([-1, 2, 2], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "onnxbridge.parity", json.dumps({"outputs": [], "verified": True})
    return model


BASE = _base_model().SerializeToString()
NAMES = ["x", "w", "b", "m", "a", "r", "shape", "s", "y", "", "nowhere"]
OPS = ["Mul", "Add", "Relu", "Reshape", "Cast", "Identity", "Gemm", "Loop", "NoSuchOp", ""]

mutation = st.one_of(
    st.tuples(st.just("op_type"), st.integers(0, 4), st.sampled_from(OPS)),
    st.tuples(st.just("node_input"), st.integers(0, 4), st.sampled_from(NAMES)),
    st.tuples(st.just("data_type"), st.integers(0, 2), st.integers(-1, 30)),
    st.tuples(st.just("dims"), st.integers(0, 2),
              st.lists(st.integers(-3, 2**40), min_size=0, max_size=3)),
    st.tuples(st.just("raw_data"), st.integers(0, 2), st.integers(0, 40)),
    st.tuples(st.just("opset"), st.just(0), st.integers(-1, 40)),
    st.tuples(st.just("ir_version"), st.just(0), st.integers(-1, 20)),
    st.tuples(st.just("elem_type"), st.integers(0, 1), st.integers(-1, 30)),
    st.tuples(st.just("attribute"), st.just(4), st.integers(-1, 30)),
    st.tuples(st.just("metadata"), st.just(0), st.sampled_from([
        "[" * 5000, '{"outputs": [{"name": 1}]}', '{"outputs": "x"}', "\x1b[2J", "A" * 100_000,
        json.dumps({"outputs": [{"name": "y", "max_abs": "big", "passed": True}]})])),
    st.tuples(st.just("output_name"), st.just(0), st.sampled_from(NAMES)),
)


def _mutate(model: onnx.ModelProto, change: tuple[str, int, object]) -> None:
    kind, index, value = change
    g = model.graph
    if kind == "op_type":
        g.node[index].op_type = str(value)
    elif kind == "node_input":
        g.node[index].input[0] = str(value)
    elif kind == "data_type":
        g.initializer[index].data_type = int(value)  # type: ignore[call-overload]
    elif kind == "dims":
        g.initializer[index].dims[:] = list(value)  # type: ignore[call-overload]
    elif kind == "raw_data":
        tensor = g.initializer[index]
        tensor.raw_data = tensor.raw_data[: int(value)]  # type: ignore[call-overload]
    elif kind == "opset":
        model.opset_import[0].version = int(value)  # type: ignore[call-overload]
    elif kind == "ir_version":
        model.ir_version = int(value)  # type: ignore[call-overload]
    elif kind == "elem_type":
        values = [*g.input, *g.output]
        values[index].type.tensor_type.elem_type = int(value)  # type: ignore[call-overload]
    elif kind == "attribute":
        g.node[index].attribute[0].i = int(value)  # type: ignore[call-overload]
    elif kind == "metadata":
        model.metadata_props[0].value = str(value)
    elif kind == "output_name":
        g.output[0].name = str(value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(mutation, min_size=1, max_size=3),
       flips=st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(0, 255)), max_size=2),
       truncate=st.integers(0, len(BASE)))
def test_mutated_models_load_or_give_load_errors(changes: list[tuple[str, int, object]],
                                                 flips: list[tuple[int, int]],
                                                 truncate: int) -> None:
    model = onnx.ModelProto()
    model.ParseFromString(BASE)
    for change in changes:
        with contextlib.suppress(IndexError, ValueError, TypeError):  # a field it cannot take
            _mutate(model, change)
    data = bytearray(model.SerializeToString())
    for index, value in flips:
        if index < len(data):
            data[index] = value
    if truncate and truncate < len(data) // 2:
        data = data[: len(data) - truncate]
    try:
        m = onnxbridge.load(bytes(data))
    except OnnxBridgeError:
        return
    # What loads can be shown (repr, card, picture) and run, or fails with our errors only.
    assert "OnnxModel" in repr(m) and "onnxbridge-model" in m._repr_html_()
    assert "<svg" in to_svg(m)
    with contextlib.suppress(OnnxBridgeError):
        out = m.run(np.ones((3, 4), np.float32))
        assert isinstance(out, np.ndarray)


# -- run over random dtypes, shapes and values ------------------------------------------------
ELEMS = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64,
         TensorProto.FLOAT16: np.float16, TensorProto.INT32: np.int32,
         TensorProto.INT64: np.int64, TensorProto.UINT8: np.uint8, TensorProto.BOOL: np.bool_}


def _identity(elem: int, rank: int) -> OnnxModel:
    dims = ["n"] + [2] * (rank - 1)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "identity",
        [helper.make_tensor_value_info("x", elem, dims)],
        [helper.make_tensor_value_info("y", elem, dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return OnnxModel(model)


MODELS = {(e, r): _identity(e, r) for e in ELEMS for r in (1, 2)}
SESSIONS = {k: onnxruntime.InferenceSession(m.proto.SerializeToString(),
                                            providers=["CPUExecutionProvider"])
            for k, m in MODELS.items()}
DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int8, np.uint64, np.uint8,
          np.bool_]


def _survives(x: np.ndarray, want: np.dtype) -> bool:
    """Whether every value of ``x`` is the same after a cast to ``want`` (the test's own
    reading of "lossless", computed value by value in Python)."""
    if x.dtype == want:
        return True
    if want.kind == "b":
        return x.dtype.kind == "b"
    if x.dtype.kind == "f" and want.kind in "iub":
        return False  # never implicit, whatever the values
    if x.dtype.kind in "iu" and want.kind in "iu" and not np.can_cast(x.dtype, want, "same_kind"):
        return False  # signed to unsigned: refused by dtype
    with np.errstate(all="ignore"):
        cast = x.astype(want)
    for a, b in zip(x.ravel().tolist(), cast.ravel().tolist(), strict=True):
        if isinstance(a, float) and a != a:
            if b == b:
                return False
        elif isinstance(a, float) and abs(a) == float("inf"):
            if a != b:
                return False
        elif isinstance(a, float) and abs(b) == float("inf"):
            return False  # a finite value became inf
        elif x.dtype.kind in "iub" and a != b:
            return False  # an integer changed
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(elem=st.sampled_from(list(ELEMS)), rank=st.sampled_from([1, 2]),
       dtype=st.sampled_from(DTYPES), data=st.data())
def test_run_gives_correct_results_or_input_errors(elem: int, rank: int, dtype: type,
                                                   data: st.DataObject) -> None:
    want = np.dtype(ELEMS[elem])
    shape = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=3), label="shape")
    kind = np.dtype(dtype).kind
    if kind == "f":
        values = st.floats(allow_nan=True, allow_infinity=True, width=np.dtype(dtype).itemsize * 8)
    elif kind == "b":
        values = st.booleans()
    else:
        info = np.iinfo(dtype)
        values = st.integers(int(info.min), int(info.max))
    x = np.array(data.draw(st.lists(values, min_size=int(np.prod(shape)),
                                    max_size=int(np.prod(shape))), label="values"),
                 dtype=dtype).reshape(shape)
    m = MODELS[(elem, rank)]
    fits_shape = len(shape) == rank and all(d == 2 for d in shape[1:])
    try:
        out = m.run(x)
    except InputError:
        assert not (fits_shape and _survives(x, want)), "refused an input that fits"
        return
    assert fits_shape and _survives(x, want), f"ran {x.dtype} {list(x.shape)} into {want}"
    expected = SESSIONS[(elem, rank)].run(None, {"x": x.astype(want)})[0]
    assert out.dtype == expected.dtype and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)  # NaN compares equal to NaN here


@pytest.mark.parametrize("elem", [TensorProto.INT32, TensorProto.FLOAT])
def test_the_survives_reference_agrees_on_plain_cases(elem: int) -> None:
    want = np.dtype(ELEMS[elem])
    assert _survives(np.array([1, 2], np.int64), want)
    assert not _survives(np.array([2**40 + 1], np.int64), want)
