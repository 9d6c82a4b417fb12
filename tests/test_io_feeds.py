"""The feeding path (io.py: as_array, _cast, _check_shape, to_feeds, bind_torch_inputs): values
against numpy's and onnxruntime's own behaviour, messages in full. Found by mutation testing."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from types import MappingProxyType

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper

from onnxbridge import InputError, OnnxModel
from onnxbridge.io import _cast, as_array, bind_torch_inputs, to_feeds
from onnxbridge.signature import TensorSpec


def spec(name: str = "x", dtype: object = np.float32, shape: tuple = ("batch", 3)) -> TensorSpec:
    onnx_type = "tensor(float)"
    return TensorSpec(name, None if dtype is None else np.dtype(dtype), shape, onnx_type)  # type: ignore[arg-type]


def identity_model(elem: int = TensorProto.FLOAT, shape: list = ["n", 3],  # noqa: B006
                   names: tuple[str, ...] = ("x",)) -> OnnxModel:
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"]) for n in names]
    graph = helper.make_graph(
        nodes, "ident",
        [helper.make_tensor_value_info(n, elem, shape) for n in names],
        [helper.make_tensor_value_info(f"{n}_out", elem, shape) for n in names])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return OnnxModel(proto)


# -- as_array ------------------------------------------------------------------------------------
def test_messages_of_as_array_in_full() -> None:
    with pytest.raises(InputError) as err:
        as_array(None)
    assert str(err.value) == "input 'input' is None; pass an array (or a DataFrame, list, tensor)"
    masked = np.ma.MaskedArray([1.0, 2.0], mask=[True, False])
    with pytest.raises(InputError) as err:
        as_array(masked, "m")
    assert str(err.value) == (
        "input 'm' is a masked array with 1 masked value(s); onnxruntime has no mask, and dropping"
        " it would feed the hidden values. Fill them explicitly: x.filled(np.nan) for a model that"
        " treats NaN as missing, or x.filled(value)")

    class Unreadable:
        def __array__(self, *args: object, **kwargs: object) -> np.ndarray:
            raise ValueError("no values here")

    with pytest.raises(InputError) as err:
        as_array(Unreadable(), "u")
    assert str(err.value) == (
        "input 'u': cannot turn a Unreadable into an array (no values here); pass a numpy array,"
        " a list of numbers, a pandas DataFrame or a torch tensor")
    with pytest.raises(InputError) as err:
        as_array([None, 1.0], "v")
    assert str(err.value) == ("input 'v': a list of mixed or ragged values cannot be a tensor;"
                              " pass a rectangular array of one type")


def test_strings_become_object_arrays() -> None:
    one = as_array("abc")
    assert one.dtype == object and one.shape == (1,) and one[0] == "abc"
    raw = as_array(b"ab")
    assert raw.dtype == object and raw.tolist() == [b"ab"]
    listed = as_array(["a", "bc"])
    assert listed.dtype == object and listed.tolist() == ["a", "bc"]
    # An object array of strings only (numpy keeps object for a list of object arrays) is fine.
    nested = as_array([np.array(["a", "b"], dtype=object)])
    assert nested.dtype == object and nested.tolist() == [["a", "b"]]


def test_pandas_values_and_look_alikes() -> None:
    pd = pytest.importorskip("pandas")
    series = pd.Series([1.5, 2.5])
    np.testing.assert_array_equal(as_array(series), [1.5, 2.5])
    frame = pd.DataFrame({"a": [1, 2], "b": [3.5, 4.5]})
    np.testing.assert_array_equal(as_array(frame), [[1.0, 3.5], [2.0, 4.5]])
    m = identity_model(shape=["n"])
    np.testing.assert_array_equal(m.run(series), np.float32([1.5, 2.5]))  # a Series is no DataFrame

    class DataFrame:  # not pandas': read as an array-like, not by column name
        def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
            return np.float32([[1, 2, 3]])

    np.testing.assert_array_equal(identity_model().run(DataFrame()), [[1, 2, 3]])


def test_only_torch_tensors_are_read_as_tensors() -> None:
    class EagerLike:  # has .numpy() as TensorFlow's tensors do, but no .detach()
        def numpy(self) -> np.ndarray:
            return np.float32([[7, 8, 9]])

        def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
            return self.numpy()

    np.testing.assert_array_equal(as_array(EagerLike()), [[7, 8, 9]])
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(as_array(torch.Size([2, 3])), [2, 3])  # torch's, not a tensor


# -- _cast ----------------------------------------------------------------------------------------
def test_cast_messages_in_full() -> None:
    with pytest.raises(InputError) as err:
        _cast(np.array(["1.5"]), spec())
    assert str(err.value) == ("input 'x' expects float32, got strings (<U3); convert the values"
                              " to numbers first")
    with pytest.raises(InputError) as err:
        _cast(np.array(["data.csv"]), spec())
    assert str(err.value).endswith("convert the values to numbers first; it looks like a file"
                                   " path: read it first (np.load, pd.read_csv), or use onnxbridge"
                                   " run MODEL -i FILE")
    pair = np.zeros(2, dtype=[("a", "f4"), ("b", "f4")])
    with pytest.raises(TypeError) as ref:
        pair.astype(np.float32)  # numpy's own refusal, even unsafe
    with pytest.raises(InputError) as err:
        _cast(pair, spec(), "unsafe")
    assert str(err.value) == f"input 'x': cannot cast {pair.dtype} to float32: {ref.value}"


def test_no_runtime_warning_from_either_cast_mode() -> None:
    big = np.array([[1e300, 1.0, -1e300]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _cast(big, spec(), "unsafe")
        with pytest.raises(InputError, match="would become inf"):
            _cast(big, spec())
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(out, big.astype(np.float32))  # numpy's cast: inf
    assert np.isinf(out[0, 0]) and out[0, 1] == 1.0


def test_integers_never_cast_to_bool_in_safe_mode() -> None:
    assert not np.can_cast(np.int64, np.bool_, casting="same_kind")  # numpy: a lossy kind change
    with pytest.raises(InputError, match="could lose values"):
        _cast(np.array([[0, 2, 5]]), spec(dtype=np.bool_))
    np.testing.assert_array_equal(_cast(np.array([[0, 2, 5]]), spec(dtype=np.bool_), "unsafe"),
                                  [[False, True, True]])
    # bool -> numbers is exact: allowed
    np.testing.assert_array_equal(_cast(np.array([[True, False, True]]), spec()), [[1.0, 0.0, 1.0]])


# -- _check_shape ---------------------------------------------------------------------------------
def test_shape_messages_in_full() -> None:
    s = spec()
    with pytest.raises(InputError) as err:
        to_feeds([s], [np.ones(3, np.float32)], {})
    assert str(err.value) == ("input 'x' expects 2 dimensions [batch, 3], got 1 [3]; for one"
                              " sample add a batch axis (x[None])")
    with pytest.raises(InputError) as err:
        to_feeds([s], [np.ones((1, 1, 1, 3), np.float32)], {})
    assert str(err.value) == "input 'x' expects 2 dimensions [batch, 3], got 4 [1, 1, 1, 3]"


def test_a_fixed_zero_dimension_is_checked_as_onnxruntime_does() -> None:
    m = identity_model(shape=[0, 3])
    x = np.ones((2, 3), np.float32)
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # onnxruntime's own refusal
        m.session().run(None, {"x": x})
    with pytest.raises(InputError, match=r"axis 0 must be 0"):
        m.run(x)
    assert m.run(np.ones((0, 3), np.float32)).shape == (0, 3)


# -- to_feeds -------------------------------------------------------------------------------------
def test_bad_cast_mode_and_none_input_named() -> None:
    with pytest.raises(InputError) as err:
        to_feeds([spec()], [np.ones((1, 3), np.float32)], {}, cast="maybe")
    assert str(err.value) == "cast must be one of ('safe', 'unsafe'), got 'maybe'"
    with pytest.raises(InputError) as err:
        to_feeds([spec("a"), spec("b")], [], {"a": np.ones((1, 3), np.float32), "b": None})
    assert str(err.value) == "input 'b' is None; pass an array (or a DataFrame, list, tensor)"


def test_one_input_mappings_of_any_kind_are_read_by_name() -> None:
    x = np.float32([[1, 2, 3]])
    m = identity_model()
    for given in (OrderedDict(x=x), MappingProxyType({"x": x}), {"x": x}):
        np.testing.assert_array_equal(m.run(given), x)
    feeds = to_feeds([spec()], [OrderedDict(x=x)], {})
    assert list(feeds) == ["x"] and feeds["x"] is x


def test_a_list_is_one_value_not_the_inputs() -> None:
    a = np.float32([[1, 2, 3]])
    with pytest.raises(InputError, match=r"missing input\(s\) \['b'\]"):
        to_feeds([spec("a"), spec("b")], [[a, a]], {})
    feeds = to_feeds([spec("a"), spec("b")], [(a, a + 1)], {})  # a tuple fills the inputs
    np.testing.assert_array_equal(feeds["b"], a + 1)


def test_one_input_dataframe_follows_the_cast_mode() -> None:
    pd = pytest.importorskip("pandas")
    m = identity_model()
    df = pd.DataFrame({"a": [1e300], "b": [1.0], "c": [2.0]})
    with pytest.raises(InputError, match="would become inf"):
        m.run(df)
    with np.errstate(all="ignore"):
        expected = df.to_numpy().astype(np.float32)  # numpy's own cast
    np.testing.assert_array_equal(m.run(df, cast="unsafe"), expected)


# -- bind_torch_inputs (on the CPU, as io_binding=True asks) -------------------------------------
def _session(m: OnnxModel) -> onnxruntime.InferenceSession:
    return m.session(["CPUExecutionProvider"])


def test_binding_by_position_name_dict_and_tuple_matches_onnxruntime() -> None:
    torch = pytest.importorskip("torch")
    m = identity_model(names=("a", "b"))
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    b = -a
    expected = _session(m).run(None, {"a": a.numpy(), "b": b.numpy()})  # the reference
    for args, kwargs in [((a, b), {}), ((), {"a": a, "b": b}), (({"a": a, "b": b},), {}),
                         (((a, b),), {}), ((a,), {"b": b})]:
        bound = bind_torch_inputs(_session(m), m.inputs, args, kwargs, force=True)
        assert bound is not None
        binding, keep = bound
        assert len(keep) == 2
        _session(m).run_with_iobinding(binding)
        outs = binding.copy_outputs_to_cpu()
        for got, want in zip(outs, expected, strict=True):
            np.testing.assert_array_equal(got, want)
        got_dict = m.run(*args, **kwargs, io_binding=True, as_dict=True)
        np.testing.assert_array_equal(got_dict["b_out"], expected[1])


def test_binding_is_declined_when_it_cannot_be_used() -> None:
    torch = pytest.importorskip("torch")
    m = identity_model(names=("a", "b"))
    a = torch.ones(2, 3)
    s = _session(m)
    assert bind_torch_inputs(s, m.inputs, (a, a.numpy()), {}) is None  # not all tensors
    assert bind_torch_inputs(s, m.inputs, (a,), {}, force=True) is None  # one missing
    assert bind_torch_inputs(s, m.inputs, (a, a, a), {}, force=True) is None  # too many
    assert bind_torch_inputs(s, m.inputs, (a, a), {}) is None  # CPU tensors, not forced
    assert bind_torch_inputs(s, m.inputs, (a, a), {}, force=True) is not None


def test_binding_casts_on_the_device_only_when_values_survive() -> None:
    torch = pytest.importorskip("torch")
    m = identity_model()
    s = _session(m)
    half = torch.tensor([[1.5, -2.0, 3.25]], dtype=torch.float16)
    bound = bind_torch_inputs(s, m.inputs, (half,), {}, force=True)
    assert bound is not None
    binding, keep = bound
    assert keep[0].dtype == torch.float32  # cast on the tensor's device
    s.run_with_iobinding(binding)
    np.testing.assert_array_equal(binding.copy_outputs_to_cpu()[0],
                                  half.numpy().astype(np.float32))  # numpy's exact widening
    # float64 -> float32 and int64 -> float32 may lose values: the host path checks them.
    assert bind_torch_inputs(s, m.inputs, (torch.ones(1, 3, dtype=torch.float64),), {},
                             force=True) is None
    assert bind_torch_inputs(s, m.inputs, (torch.ones(1, 3, dtype=torch.int64),), {},
                             force=True) is None
    big = torch.tensor([[2**24 + 1, 0, 0]], dtype=torch.int64)
    with pytest.raises(InputError, match="not exact"):
        m.run(big, io_binding=True)
    with pytest.raises(InputError, match="could lose values"):
        bind_torch_inputs(s, m.inputs, (torch.ones(1, 3, dtype=torch.complex64),), {}, force=True)


def test_binding_checks_shapes_and_keeps_contiguous_tensors() -> None:
    torch = pytest.importorskip("torch")
    m = identity_model()
    s = _session(m)
    with pytest.raises(InputError, match=r"axis 1 must be 3"):
        bind_torch_inputs(s, m.inputs, (torch.ones(2, 4),), {}, force=True)
    t = torch.arange(6, dtype=torch.float32).reshape(3, 2).T  # a (2, 3) view, not contiguous
    assert not t.is_contiguous()
    binding, keep = bind_torch_inputs(s, m.inputs, (t,), {}, force=True)  # type: ignore[misc]
    assert keep[0].is_contiguous()
    s.run_with_iobinding(binding)
    np.testing.assert_array_equal(binding.copy_outputs_to_cpu()[0], t.numpy())
    grad = torch.ones(1, 3, requires_grad=True)
    _, keep = bind_torch_inputs(s, m.inputs, (grad,), {}, force=True)  # type: ignore[misc]
    assert not keep[0].requires_grad  # detached


# -- names, defaults, optional inputs, shared axes -------------------------------------------------
def test_recognisers_by_module() -> None:
    pd = pytest.importorskip("pandas")
    torch = pytest.importorskip("torch")
    from onnxbridge.io import is_dataframe, is_torch_tensor

    assert is_dataframe(pd.DataFrame({"a": [1]})) and not is_dataframe(pd.Series([1]))
    assert is_torch_tensor(torch.ones(1)) and not is_torch_tensor(np.ones(1))
    # Two inputs from one DataFrame, by column name (columns in another order).
    df = pd.DataFrame({"b": [3.0, 5.0], "a": [1.0, 2.0]})
    feeds = to_feeds([spec("a", shape=("n", 1)), spec("b", shape=("n", 1))], [df], {})
    np.testing.assert_array_equal(feeds["a"], np.float32([[1], [2]]))
    np.testing.assert_array_equal(feeds["b"], np.float32([[3], [5]]))


def _with_default() -> OnnxModel:
    from onnx import numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])], "opt",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        initializer=[numpy_helper.from_array(np.array([1, 2, 3], np.float32), "scale")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 7
    return OnnxModel(proto)


def test_a_default_given_by_name_first_and_cast_as_asked() -> None:
    m = _with_default()
    x = np.float32([[1, 1, 2]])
    # the default named before the input: both are read
    np.testing.assert_array_equal(m.run(scale=np.float32([2, 2, 2]), x=x), [[2.0, 2.0, 4.0]])
    big = np.array([1e300, 1.0, 1.0])
    with pytest.raises(InputError, match="would become inf"):
        m.run(x, scale=big)
    out = m.run(x, scale=big, cast="unsafe")
    assert np.isinf(out[0, 0]) and out[0, 2] == 2.0  # numpy's cast of 1e300: inf


def test_no_such_input_message_in_full() -> None:
    with pytest.raises(InputError) as err:
        to_feeds([spec()], [], {"z": 1})
    assert str(err.value) == "the model has no input named 'z'; its inputs are ['x']"


def test_many_inputs_follow_the_cast_mode() -> None:
    big = np.array([[1e300, 1.0, 1.0]])
    with pytest.raises(InputError, match="would become inf"):
        to_feeds([spec("a"), spec("b")], [big, big], {})
    feeds = to_feeds([spec("a"), spec("b")], [big, big], {}, cast="unsafe")
    assert np.isinf(feeds["b"][0, 0]) and feeds["b"].dtype == np.float32


def test_an_optional_type_input_given_among_others_is_fed() -> None:
    graph = helper.make_graph(
        [helper.make_node("OptionalHasElement", ["o"], ["has"]),
         helper.make_node("Identity", ["x"], ["y"])], "optional_input",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
         helper.make_value_info("o", helper.make_optional_type_proto(
             helper.make_tensor_type_proto(TensorProto.FLOAT, [2])))],
        [helper.make_tensor_value_info("has", TensorProto.BOOL, []),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 8
    m = OnnxModel(proto)
    x = np.float32([1])
    ref = m.session().run(None, {"x": x, "o": np.ones(2, np.float32)})  # onnxruntime's answer
    assert bool(ref[0]) is True
    assert bool(m.run(x, o=np.ones(2, np.float32))[0]) is True
    assert bool(m.run(x)[0]) is False


def test_shared_axes_by_hand() -> None:
    from onnxbridge.io import shared_dims

    specs = [TensorSpec("a", np.dtype(np.float32), ("batch", "?", "", "t", 3), "tensor(float)"),
             TensorSpec("b", np.dtype(np.float32), ("batch", "?", "", None, "t"), "tensor(float)"),
             TensorSpec("c", np.dtype(np.float32), ("once", "batch"), "tensor(float)"),
             TensorSpec("d", np.dtype(np.float32), None, "tensor(float)")]
    assert shared_dims(specs) == [("batch", (("a", 0), ("b", 0), ("c", 1))),
                                  ("t", (("a", 3), ("b", 4)))]
    two = [spec("a"), spec("b")]
    assert shared_dims(two) == [("batch", (("a", 0), ("b", 0)))]
    a, b = np.ones((1, 3), np.float32), np.ones((2, 3), np.float32)
    with pytest.raises(InputError, match="share the axis 'batch'"):
        to_feeds(two, [a, b], {})
    assert set(to_feeds(two, [a, b], {}, shared=[])) == {"a", "b"}  # the caller's groups are used


def test_plain_feeds_reads_one_dict() -> None:
    from onnxbridge.io import input_checks, plain_feeds

    x = np.ones((2, 3), np.float32)
    checks = input_checks([spec()])
    feeds = plain_feeds(checks, ({"x": x},), {})
    assert feeds is not None and feeds["x"] is x
    assert plain_feeds(checks, ({"x": x},), {"x": x}) is None  # both ways at once: the full path


def test_a_parameter_is_a_tensor_too() -> None:
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.tensor([1.5, 2.5]))  # type's module: torch.nn.parameter
    assert type(param).__module__ != "torch"
    np.testing.assert_array_equal(as_array(param), [1.5, 2.5])
    np.testing.assert_array_equal(identity_model(shape=["n"]).run(param), np.float32([1.5, 2.5]))


def test_binding_leaves_int64_to_float64_to_the_checked_host_path() -> None:
    torch = pytest.importorskip("torch")
    assert np.can_cast(np.int64, np.float64, casting="safe")  # numpy calls it safe, yet
    assert float(2**53 + 1) == float(2**53)  # 2**53 + 1 has no float64 (by hand)
    m = identity_model(elem=TensorProto.DOUBLE)
    s = _session(m)
    assert bind_torch_inputs(s, m.inputs, (torch.ones(1, 3, dtype=torch.int64),), {},
                             force=True) is None
    with pytest.raises(InputError, match="not exact"):
        m.run(torch.tensor([[2**53 + 1, 0, 0]]), io_binding=True)
    np.testing.assert_array_equal(m.run(torch.tensor([[2, 0, 1]]), io_binding=True), [[2.0, 0.0, 1.0]])
