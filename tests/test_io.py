"""Inputs to OnnxModel.run: positional, by name, DataFrames, lists, torch tensors, casts, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_scale_model
from onnx import TensorProto, helper

import onnxbridge
from onnxbridge import ConverterSpec, InputError, OnnxModel, ParityError
from onnxbridge.io import resize_batch
from onnxbridge.registry import Registry


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


def test_resize_batch_repeats_real_rows_of_each_kind() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    rows = np.array([[0, 1, 2], [3, 4, 5], [0, 1, 2], [3, 4, 5], [0, 1, 2]], np.float32)  # by hand
    np.testing.assert_array_equal(resize_batch(x, 5), rows)
    np.testing.assert_array_equal(resize_batch(x, 1), rows[:1])
    named = resize_batch({"a": x, "b": x * 10}, 3)
    assert type(named) is dict and list(named) == ["a", "b"]
    np.testing.assert_array_equal(named["a"], rows[:3])
    np.testing.assert_array_equal(named["b"], rows[:3] * 10)
    pair = resize_batch((x, x + 1), 3)
    assert isinstance(pair, tuple)
    np.testing.assert_array_equal(pair[1], rows[:3] + 1)
    assert resize_batch(np.float32(1.0), 3) is None
    assert resize_batch(np.zeros((0, 3)), 3) is None
    assert resize_batch("text", 3) is None
    assert resize_batch({"a": x, "b": "text"}, 3) is None


def test_resize_batch_keeps_the_mapping_kind() -> None:
    from collections import OrderedDict, defaultdict

    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    sample: defaultdict[str, np.ndarray] = defaultdict(lambda: np.zeros(1), {"b": x, "a": -x})
    out = resize_batch(sample, 3)
    assert type(out) is defaultdict and out.default_factory is sample.default_factory
    assert list(out) == ["b", "a"]
    np.testing.assert_array_equal(out["a"], [[0, -1], [-2, -3], [0, -1]])
    assert sample["b"] is x and len(sample) == 2  # the user's sample is not changed
    ordered = resize_batch(OrderedDict(b=x, a=x), 1)
    assert type(ordered) is OrderedDict and list(ordered) == ["b", "a"]


def test_resize_batch_dataframe_and_tensor_rows() -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [1, 2], "b": [3.5, 4.5]}, index=[10, 20])
    out = resize_batch(df, 3)
    assert list(out["a"]) == [1, 2, 1] and list(out["b"]) == [3.5, 4.5, 3.5]
    assert list(out.index) == [0, 1, 2]
    torch = pytest.importorskip("torch")
    t = torch.arange(6).reshape(2, 3)
    assert resize_batch(t, 3).tolist() == [[0, 1, 2], [3, 4, 5], [0, 1, 2]]
    assert resize_batch(t[:1], 2).tolist() == [[0, 1, 2], [0, 1, 2]]
    assert resize_batch(torch.arange(3), 4).tolist() == [0, 1, 2, 0]
    assert resize_batch(torch.tensor(1.0), 2) is None and resize_batch(t[:0], 2) is None


BATCH_PLUGIN = """
import numpy as np
from onnx import TensorProto, helper, numpy_helper
from onnxbridge import ConversionResult

def convert(model, sample, options):
    # y = x * factor + (batch - sample's batch) * x: right at the sample's batch size only,
    # and right at any batch size for rows of zeros.
    b0 = np.array(np.shape(sample)[0], np.float32)
    w = np.full(np.shape(sample)[1:], model.factor, np.float32)
    nodes = [helper.make_node("Mul", ["x", "w"], ["xw"]),
             helper.make_node("Shape", ["x"], ["shape"], start=0, end=1),
             helper.make_node("Cast", ["shape"], ["n"], to=TensorProto.FLOAT),
             helper.make_node("Sub", ["n", "b0"], ["extra"]),
             helper.make_node("Mul", ["x", "extra"], ["wrong"]),
             helper.make_node("Add", ["xw", "wrong"], ["y"])]
    graph = helper.make_graph(
        nodes, "batch_dependent",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", w.shape[0]])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b0, "b0")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return ConversionResult(proto, reference=lambda x: [model.predict(x)], framework="fakefw")
"""


def test_second_batch_check_runs_on_real_rows(fake_env: Path, isolated_registry: Registry) -> None:
    """The second-batch parity check must feed rows of the sample (resize_batch), not filler."""
    import fakefw

    (fake_env / "batchplugin.py").write_text(BATCH_PLUGIN)
    onnxbridge.register(ConverterSpec(name="batchy", classes=("fakefw.Base",),
                                      converter="batchplugin:convert"))
    sample = np.random.default_rng(0).uniform(1, 2, (1, 4)).astype(np.float32)
    with pytest.raises(ParityError) as info:
        onnxbridge.to_onnx(fakefw.Base(2.0), sample)
    assert info.value.report.batch_sizes == [1, 3]
    # The same converter passes where the sample's batch size is all that is checked.
    assert onnxbridge.to_onnx(fakefw.Base(2.0), sample, verify=False).run(sample).tolist() == (
        (sample * 2).tolist())
    sys.modules.pop("batchplugin", None)


def test_hot_path_gives_the_same_answers_and_errors(scale_model: onnx.ModelProto) -> None:
    import onnxruntime

    m = OnnxModel(scale_model)
    x = np.array([[1, 2, 3], [-4, 0.5, 6]], np.float32)
    by_hand = np.array([[1, 4, 9], [-4, 1, 18]], np.float32)  # y = x * [1, 2, 3]
    bare = onnxruntime.InferenceSession(scale_model.SerializeToString(),
                                        providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(bare.run(None, {"x": x})[0], by_hand)
    np.testing.assert_array_equal(m.run(x), by_hand)  # creates the session
    for _ in range(2):  # then the hot path, by position and by name, and the full path
        np.testing.assert_array_equal(m.run(x), by_hand)
        np.testing.assert_array_equal(m.run(x=x), by_hand)
        np.testing.assert_array_equal(m.run(x.astype(np.float64)), by_hand)  # cast
        np.testing.assert_array_equal(m.run(x, as_dict=True)["y"], by_hand)
    np.testing.assert_array_equal(m.run(x[:1]), by_hand[:1])  # another batch size, same session
    assert list(m.run(x, as_dict=True)) == ["y"]
    with pytest.raises(InputError, match="no input named 'z'"):
        m.run(z=x)
    with pytest.raises(InputError, match=r"axis 1 must be 3"):
        m.run(np.ones((2, 4), np.float32))
    with pytest.raises(InputError, match="expects 2 dimensions"):
        m.run(np.ones(3, np.float32))
    with pytest.raises(InputError, match="given both by position and by name"):
        m.run(x, x=x)


# -- what mutation testing found unchecked (nox -s mutation) ----------------------------------
def _spec(name: str, dtype: object, shape: tuple[object, ...] | None) -> object:
    from onnxbridge.signature import TensorSpec

    return TensorSpec(name, None if dtype is None else np.dtype(dtype), shape,  # type: ignore[arg-type]
                      "tensor(float)")


def test_plain_feeds_takes_exact_arrays_and_refuses_the_rest() -> None:
    from onnxbridge.io import input_checks, plain_feeds

    specs = [_spec("a", np.float32, ("n", 3)), _spec("b", np.int64, None)]
    checks = input_checks(specs)  # type: ignore[arg-type]
    assert checks == [("a", np.dtype(np.float32), 2, ((1, 3),)), ("b", np.dtype(np.int64), None, ())]
    a, b = np.ones((4, 3), np.float32), np.arange(5)
    assert plain_feeds(checks, (a, b), {}) == {"a": a, "b": b}
    named = plain_feeds(checks, (), {"b": b, "a": a})
    assert named is not None and list(named) == ["a", "b"] and named["a"] is a
    for args, kwargs in [((a,), {}), ((a, b.astype(np.int32)), {}), ((a.astype(np.float64), b), {}),
                         ((np.ones((4, 2), np.float32), b), {}), ((np.ones(3, np.float32), b), {}),
                         ((a.tolist(), b), {}), ((a,), {"b": b}), ((), {"a": a}),
                         ((), {"a": a, "c": b})]:
        assert plain_feeds(checks, args, kwargs) is None, (args, kwargs)


def test_resize_batch_one_row_and_one_axis() -> None:
    one = np.array([[1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(resize_batch(one, 3), [[1, 2], [1, 2], [1, 2]])
    np.testing.assert_array_equal(resize_batch(np.array([5, 6, 7]), 4), [5, 6, 7, 5])
    pd = pytest.importorskip("pandas")
    single = resize_batch(pd.DataFrame({"a": [9]}), 2)
    assert list(single["a"]) == [9, 9] and list(single.columns) == ["a"]


def test_one_input_takes_a_dataframe_whole_and_strings_stay_strings() -> None:
    pd = pytest.importorskip("pandas")
    m = OnnxModel(make_scale_model())
    df = pd.DataFrame({"p": [1.0, 2.0], "q": [3.0, 4.0], "r": [5.0, 6.0]})
    np.testing.assert_array_equal(m.run(df), [[1, 6, 15], [2, 8, 18]])  # x * [1, 2, 3]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["t"])], "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("t", TensorProto.STRING, ["n"])])
    text = OnnxModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert list(text.run(["a", "bc"])) == ["a", "bc"]
    assert list(text.run(np.array(["x"]))) == ["x"]
    with pytest.raises(InputError, match="'s' expects strings, got int64; pass str values"):
        text.run(np.array([1, 2]))
    with pytest.raises(InputError, match="expects float32, got strings"):
        m.run(np.array([["1", "2", "3"]]))


def test_rank_hint_only_for_a_missing_batch_axis() -> None:
    m = OnnxModel(make_scale_model())
    with pytest.raises(InputError, match=r"add a batch axis \(x\[None\]\)"):
        m.run(np.ones(3, np.float32))
    with pytest.raises(InputError) as info:
        m.run(np.ones((1, 1, 3), np.float32))
    assert "batch axis" not in str(info.value) and "expects 2 dimensions [batch, 3]" in str(info.value)


# -- issue 16: DataFrame matching is worked out once per set of columns, and stays right -------
def _named_scale_model() -> OnnxModel:
    """y = x * [1, 2, 3], converted (so to speak) from a frame with columns a, b, c."""
    m = OnnxModel(make_scale_model())
    m.set_metadata("onnxbridge.columns", '["a", "b", "c"]')
    return m


def test_dataframe_columns_matched_by_name_on_every_call_whatever_was_cached() -> None:
    import warnings

    pd = pytest.importorskip("pandas")
    m = _named_scale_model()
    df = pd.DataFrame({"c": [5.0], "a": [1.0], "b": [3.0]})
    expected = np.array([[1.0, 6.0, 15.0]])  # a*1, b*2, c*3 by hand
    for _ in range(3):  # the same frame again: the cached plan
        np.testing.assert_array_equal(m.run(df), expected)
    df.columns = ["a", "b", "c"]  # the same object renamed: a new plan, not the cached one
    np.testing.assert_array_equal(m.run(df), [[5.0, 2.0, 9.0]])
    same_index = pd.DataFrame([[7.0, 8.0, 9.0]], columns=df.columns)  # shares the Index
    np.testing.assert_array_equal(m.run(same_index), [[7.0, 16.0, 27.0]])
    with pytest.raises(InputError, match=r"lacks column\(s\) \['c'\]"):
        m.run(df.drop(columns=["c"]))
    extra = df.assign(z=0.0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        m.run(extra)
        m.run(extra)  # warned again, though its plan is cached
    assert sum("'z'" in str(w.message) for w in seen) == 2
    m.set_metadata("onnxbridge.columns", '["c", "b", "a"]')  # another recorded order
    np.testing.assert_array_equal(m.run(df), [[3.0, 2.0, 15.0]])  # x = [c, b, a]


def test_dataframe_values_cast_as_arrays_are() -> None:
    pd = pytest.importorskip("pandas")
    m = _named_scale_model()
    wide = pd.DataFrame({"a": [1.0], "b": [2.0], "c": [1e300]})  # float64 beyond float32
    with pytest.raises(InputError, match="beyond float32's range"):
        m.run(wide)  # as m.run(np.array([[1.0, 2.0, 1e300]])) says, not a silent inf
    nullable = pd.DataFrame({"a": [1.0, None], "b": [2.0, 2.0], "c": [3.0, 3.0]}).astype("Float64")
    got = m.run(nullable)
    assert np.isnan(got[1, 0]) and got[0].tolist() == [1.0, 4.0, 9.0]


def test_inputs_with_defaults_are_optional_and_taken_by_name() -> None:
    """An IR 4+ graph input that is also an initializer has a default that onnxruntime lets a
    caller replace; run() used to say the model had no such input."""
    from onnx import numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])], "opt",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        initializer=[numpy_helper.from_array(np.array([1, 2, 3], np.float32), "scale")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 7
    m = OnnxModel(proto)
    x = np.array([[1.0, 1.0, 2.0]], np.float32)
    assert m.input_names == ["x"] and [s.name for s in m.optional_inputs] == ["scale"]
    np.testing.assert_array_equal(m.run(x), [[1.0, 2.0, 6.0]])  # the default, by hand
    np.testing.assert_array_equal(m.run(x, scale=np.full(3, 5, np.float32)), [[5.0, 5.0, 10.0]])
    np.testing.assert_array_equal(m.run({"x": x, "scale": [0, 1, 2]}), [[0.0, 1.0, 4.0]])
    assert "optional inputs (defaults in the file" in repr(m)
    with pytest.raises(InputError, match=r"no input named 'scal'.*with defaults, \['scale'\]"):
        m.run(x, scal=[1, 2, 3])
    with pytest.raises(InputError, match=r"'scale' expects shape \[3\]"):
        m.run(x, scale=[1.0, 2.0])
    proto.ir_version = 3  # before IR 4 an initializer listed as an input is a weight, not a default
    assert OnnxModel(proto).optional_inputs == []
    proto.ir_version = 7  # an old exporter listing every weight as an input: a few are named
    for i in range(7):
        proto.graph.input.append(helper.make_tensor_value_info(f"w{i}", TensorProto.FLOAT, [1]))
        proto.graph.initializer.append(numpy_helper.from_array(np.ones(1, np.float32), f"w{i}"))
    assert len(OnnxModel(proto).optional_inputs) == 8 and "; and 3 more" in repr(OnnxModel(proto))


def test_an_optional_type_input_may_be_left_out_or_none() -> None:
    """opset 18's optional(tensor) input: onnxruntime runs the model with it empty; run() used
    to call it missing, or None an error."""
    graph = helper.make_graph(
        [helper.make_node("OptionalHasElement", ["o"], ["has"])], "optional_input",
        [helper.make_value_info("o", helper.make_optional_type_proto(
            helper.make_tensor_type_proto(TensorProto.FLOAT, [2])))],
        [helper.make_tensor_value_info("has", TensorProto.BOOL, [])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 8
    m = OnnxModel(proto)
    assert bool(m.run(np.ones(2, np.float32))) is True  # the model's own answer: it has one
    for empty in (m.run(), m.run(None), m.run(o=None), m.run({"o": None})):
        assert bool(empty) is False
    from onnxbridge.io import random_inputs

    assert random_inputs(m.inputs) == {}  # `check` and `bench` leave it out, not give up
