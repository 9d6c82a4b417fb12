"""The code that runs inside Spark, Ray and Dask workers, called here in the test process with
real pandas/pyarrow batches and real onnxruntime (no engine started), so that what a worker does
is checked (and counted by coverage) without a JVM, a Ray cluster or a process pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pa = pytest.importorskip("pyarrow")

import _scale_data as data  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from onnxbridge import InputError, OnnxBridgeError, OnnxModel, _scale  # noqa: E402

FEATURES = ["a", "b", "e"]


class Broadcast:
    """What a Spark broadcast gives a worker: ``.value``; counts the reads."""

    def __init__(self, value: Any) -> None:
        self._value, self.reads = value, 0

    @property
    def value(self) -> Any:
        self.reads += 1
        return self._value


def _expected(m: OnnxModel, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    label, proba = m.run(frame[FEATURES])
    return label, proba


def test_spark_worker_function_scores_batches_and_reads_the_broadcast_once() -> None:
    from onnxbridge.spark import ArrowScorer

    m = data.classifier()
    payload = _scale.make_payload(m.to_bytes())
    frame = data.rows(90)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    batches = table.to_batches(max_chunksize=40)
    assert len(batches) == 3
    broadcast = Broadcast(payload)
    fn = ArrowScorer(broadcast, payload.key, FEATURES, _scale.output_columns(m), keep=True)
    out = pa.Table.from_batches(list(fn(iter(batches))))
    label, proba = _expected(m, frame)
    assert out.column_names == [*frame.columns, "label", "probabilities"]
    np.testing.assert_array_equal(out.column("label").to_numpy(zero_copy_only=False), label)
    np.testing.assert_allclose(np.stack(out.column("probabilities").to_pylist()), proba, rtol=1e-6)
    assert out.schema.field("probabilities").type == pa.list_(pa.float32())
    assert broadcast.reads == 1
    # A second task in the same worker process: the model is cached, the broadcast is not read.
    again = Broadcast(payload)
    only = ArrowScorer(again, payload.key, FEATURES, _scale.output_columns(m, ["label"]), keep=False)
    (batch,) = list(only(iter(batches[:1])))
    assert batch.schema.names == ["label"] and again.reads == 0
    np.testing.assert_array_equal(batch.column(0).to_numpy(zero_copy_only=False), label[:40])


def test_spark_column_types() -> None:
    pytest.importorskip("pyspark")
    from pyspark.sql import types as T

    from onnxbridge.spark import _kind, _spark_type

    assert _spark_type(pa.list_(pa.float32())) == T.ArrayType(T.FloatType(), containsNull=True)
    for arrow, spark in [(pa.float64(), T.DoubleType()), (pa.int64(), T.LongType()),
                         (pa.int32(), T.IntegerType()), (pa.int16(), T.ShortType()),
                         (pa.int8(), T.ByteType()), (pa.bool_(), T.BooleanType()),
                         (pa.string(), T.StringType())]:
        assert _spark_type(arrow) == spark
    with pytest.raises(InputError, match=r"Arrow type uint16 has no Spark column type"):
        _spark_type(pa.uint16())
    assert [_kind(t) for t in (T.BooleanType(), T.LongType(), T.DoubleType(), T.StringType(),
                               T.DateType())] == ["bool", "numeric", "numeric", "string", "date"]


def test_dask_partition_and_block_functions() -> None:
    from onnxbridge.dask import _score_block, _score_partition

    m = data.classifier()
    payload = _scale.make_payload(m.to_bytes())
    frame = data.rows(50)
    outs = _scale.output_columns(m, prefix="p_")
    part = _score_partition(frame, payload, FEATURES, outs, None, True)
    label, proba = _expected(m, frame)
    assert list(part.columns) == [*frame.columns, "p_label", "p_probabilities"]
    np.testing.assert_array_equal(part["p_label"].to_numpy(), label)
    np.testing.assert_allclose(np.stack(part["p_probabilities"].to_numpy()), proba, rtol=1e-6)
    alone = _score_partition(frame, payload, FEATURES, outs[:1], None, False)
    assert list(alone.columns) == ["p_label"] and alone.index.equals(frame.index)
    x = frame[FEATURES].to_numpy(np.float32)
    (label_col,) = _scale.output_columns(m, ["label"])
    np.testing.assert_array_equal(_score_block(x, payload, label_col, None), label)
    (proba_col,) = _scale.output_columns(m, ["probabilities"])
    np.testing.assert_allclose(_score_block(x, payload, proba_col, None), proba, rtol=1e-6)


def _sum_rows_model(k: int | str = "k") -> OnnxModel:
    """x [N, 3] -> y [N, k]: y = x @ ones(3, k) with k known only at run time when symbolic."""
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, k])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", k])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "sums", [x, w], [y])
    return OnnxModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_dask_array_with_an_output_width_known_only_by_running() -> None:
    da = pytest.importorskip("dask.array")
    import onnxbridge.dask

    x = np.arange(24, dtype=np.float32).reshape(8, 3)
    graph = helper.make_graph(
        [helper.make_node("Concat", ["x", "x"], ["y"], axis=1)], "twice",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "k"])])
    m = OnnxModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    got = onnxbridge.dask.predict_array(da.from_array(x, chunks=(3, 3)), m)
    assert got.shape == (8, 6)
    np.testing.assert_array_equal(got.compute(scheduler="sync"), np.concatenate([x, x], axis=1))
    with pytest.raises(InputError, match="2-D array of rows"):
        onnxbridge.dask.predict_array(da.from_array(x[0], chunks=3), m)


def test_ray_predictor_on_arrow_batches_refuses_other_kinds_and_clashes() -> None:
    pytest.importorskip("ray")
    from onnxbridge.ray import OnnxPredictor

    m = data.classifier()
    frame = data.rows(30)
    predictor = OnnxPredictor(m, outputs=["label"])
    table = pa.Table.from_pandas(frame, preserve_index=False)
    out = predictor(table)
    np.testing.assert_array_equal(out.column("label").to_numpy(zero_copy_only=False),
                                  _expected(m, frame)[0])
    assert out.column_names == [*frame.columns, "label"]
    with pytest.raises(InputError, match=r"already has column\(s\) \['label'\]"):
        predictor(out)
    with pytest.raises(InputError, match=r"already has column\(s\) \['label'\]"):
        predictor(frame.assign(label="x"))
    with pytest.raises(TypeError, match=r"takes pyarrow or pandas batches, got dict.*batch_format"):
        predictor({"a": [1.0]})
    bare = OnnxPredictor(m.to_bytes(), outputs=["label"], keep_columns=False)(frame)
    assert list(bare.columns) == ["label"]


# -- shipping the model -----------------------------------------------------------------------------
def test_payloads_for_each_kind_of_model(tmp_path: Path) -> None:
    import hashlib

    m = data.regressor()
    raw = m.to_bytes()
    by_bytes = _scale.make_payload(bytearray(raw))
    assert by_bytes.key == "sha256:" + hashlib.sha256(raw).hexdigest() and by_bytes.data == raw
    assert _scale.make_payload(by_bytes) is by_bytes
    assert _scale.make_payload(m).key == by_bytes.key  # an in-memory model: its bytes
    path = tmp_path / "m.onnx"
    path.write_bytes(raw)
    by_path = _scale.make_payload(str(path))
    assert by_path.data is None and by_path.path == str(path.resolve())
    assert by_path.key.startswith(f"path:{path.resolve()}:{len(raw)}:")
    assert _scale.make_payload(path, "bytes").key == by_bytes.key
    loaded = by_path.load()
    x = data.rows(5)[FEATURES].to_numpy(np.float32)
    np.testing.assert_allclose(loaded.run(x), m.run(x), rtol=1e-6)
    np.testing.assert_allclose(by_bytes.load().run(x), m.run(x), rtol=1e-6)
    from_file = _scale.make_payload(OnnxModel.load(path) if hasattr(OnnxModel, "load") else
                                    __import__("onnxbridge").load(path), "path")
    assert from_file.path == str(path.resolve())
    with pytest.raises(ValueError, match="ship must be 'auto', 'bytes' or 'path', got 'x'"):
        _scale.make_payload(raw, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ship='path' needs a model path"):
        _scale.make_payload(raw, "path")
    with pytest.raises(OnnxBridgeError, match="ship='path' needs a model saved on storage"):
        _scale.make_payload(m, "path")
    with pytest.raises(OnnxBridgeError, match=r"cannot ship model path .*nothere.onnx.* every worker"):
        _scale.make_payload(tmp_path / "nothere.onnx")


# -- columns and outputs ----------------------------------------------------------------------------
def _per_column_model(types: tuple[int, ...] = (TensorProto.FLOAT, TensorProto.FLOAT)) -> OnnxModel:
    names = [f"c{i}" for i in range(len(types))]
    inputs = [helper.make_tensor_value_info(n, t, ["N", 1]) for n, t in zip(names, types, strict=True)]
    cast = [helper.make_node("Cast", [n], [f"{n}_f"], to=TensorProto.FLOAT) for n in names]
    add = helper.make_node("Sum", [f"{n}_f" for n in names], ["y"])
    graph = helper.make_graph([*cast, add], "cols", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])])
    return OnnxModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_input_columns_and_their_kinds() -> None:
    per_column = _per_column_model()
    assert _scale.input_columns(per_column) == ["c0", "c1"]
    assert _scale.input_columns(per_column, ("x", "y")) == ["x", "y"]
    with pytest.raises(InputError, match="columns= is empty"):
        _scale.input_columns(per_column, [])
    assert _scale.input_columns(data.classifier()) == FEATURES  # recorded at conversion
    matrix = _sum_rows_model(2)
    with pytest.raises(InputError, match=r"take several columns at once.*pass columns="):
        _scale.input_columns(matrix)
    kinds = {"c0": "numeric", "c1": "bool", "s": "string"}
    _scale.check_column_kinds(per_column, ["c0", "c1"], kinds)  # bools feed numbers
    _scale.check_column_kinds(per_column, ["x0", "x1"], {"x0": "numeric", "x1": "numeric"})
    with pytest.raises(InputError, match=r"2 inputs \['c0', 'c1'\], one per column, but 3 columns"):
        _scale.check_column_kinds(per_column, ["c0", "c1", "s"], kinds)
    with pytest.raises(InputError, match=r"column 'c1' is not in the data \(it feeds model input 'c1'\)"):
        _scale.check_column_kinds(per_column, ["c0", "c1"], {"c0": "numeric"})
    with pytest.raises(InputError, match=r"column 's' holds string values but feeds model input 'c1'"
                                         r" of type tensor\(float\); cast the column to numbers"):
        _scale.check_column_kinds(per_column, ["c0", "s"], kinds)
    strings = _per_column_model((TensorProto.STRING,))
    with pytest.raises(InputError, match=r"column 'c0' holds numeric values.*cast the column to strings"):
        _scale.check_column_kinds(strings, ["c0"], {"c0": "numeric"})
    frame = pd.DataFrame({"f": [1.0], "i": [1], "b": [True], "s": ["x"], "o": [object()],
                          "t": pd.to_datetime(["2024-01-01"])})
    assert _scale.pandas_kinds(frame) == {"f": "numeric", "i": "numeric", "b": "bool", "s": "string",
                                          "o": "string", "t": "datetime64[us]"} or \
        _scale.pandas_kinds(frame)["t"].startswith("datetime64")


def test_output_columns_are_typed_from_the_signature() -> None:
    m = data.classifier()
    label, proba = _scale.output_columns(m, prefix="s_")
    assert (label.column, label.shape, label.dtype) == ("s_label", "scalar", np.dtype(object))
    assert (proba.column, proba.shape, proba.dtype) == ("s_probabilities", "array", np.float32)
    assert label.arrow_type() == pa.string() and proba.arrow_type() == pa.list_(pa.float32())
    with pytest.raises(InputError,
                       match=r"no output\(s\) \['nope'\]; its outputs are \['label', 'probabilities'\]"):
        _scale.output_columns(m, ["nope"])
    cube = helper.make_graph(
        [helper.make_node("Unsqueeze", ["x", "axes"], ["y"])], "cube",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 1])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [2])])
    cube_m = OnnxModel(helper.make_model(cube, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(InputError, match=r"output 'y' has shape \['N', 3, 1\]: only one value or one list"):
        _scale.output_columns(cube_m)
    seq = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x"], ["y"])], "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_sequence_value_info("y", TensorProto.FLOAT, None)])
    seq_m = OnnxModel(helper.make_model(seq, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(InputError, match=r"output 'y' is a seq\(tensor\(float\)\), which is not one value"):
        _scale.output_columns(seq_m)


def test_score_pandas_names_what_is_wrong() -> None:
    m = data.classifier()
    frame = data.rows(10)
    outs = _scale.output_columns(m)
    with pytest.raises(InputError, match=r"lacks column\(s\) \['e'\] that feed the model"):
        _scale.score_pandas(m, frame.drop(columns="e"), FEATURES, outs)
    with pytest.raises(InputError, match=r"lacks column\(s\) \['e'\]"):
        _scale.score_arrow(m, pa.Table.from_pandas(frame.drop(columns="e")), FEATURES, outs)
    # A null in a string column (object, or pandas 3's "str" dtype, or from Arrow) reaches the
    # graph as "" (the missing string), as m.run(DataFrame) gives it: engines score what m.run does.
    g = helper.make_graph([helper.make_node("Identity", ["c0"], ["y"])], "same",
                          [helper.make_tensor_value_info("c0", TensorProto.STRING, ["N", 1])],
                          [helper.make_tensor_value_info("y", TensorProto.STRING, ["N", 1])])
    same = OnnxModel(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    same_outs = _scale.output_columns(same)
    for texts in (pd.DataFrame({"c0": ["a", None]}), pd.DataFrame({"c0": np.array(["a", None], object)})):
        got_pd = _scale.score_pandas(same, texts, ["c0"], same_outs)
        assert [list(r) if isinstance(r, np.ndarray) else r for r in got_pd["y"]] in (
            [["a"], [""]], ["a", ""]), got_pd["y"]
        assert np.array_equal(np.asarray(same.run(texts)).ravel(), np.asarray(["a", ""], object))
    nulls = _scale.score_arrow(same, pa.table({"c0": pa.array(["a", None])}), ["c0"], same_outs)
    assert nulls.column("y").to_pylist() in ([["a"], [""]], ["a", ""])
    got = _scale.score_arrow(same, pa.table({"c0": pa.array(["a", "b"])}), ["c0"], same_outs)
    assert got.column("y").to_pylist() == ["a", "b"]
    empty = _scale.score_pandas(m, frame.iloc[:0], FEATURES, outs)
    assert empty["label"].shape == (0,) and empty["probabilities"].shape == (0, 0)
    # An output that is not one row per input row cannot be a column.
    total = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1)], "total",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])])
    total_m = OnnxModel(helper.make_model(total, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(InputError, match=r"output 'y' has shape \[1, 1\] for 10 rows: it is not one row"):
        _scale.score_pandas(total_m, frame, FEATURES, _scale.output_columns(total_m))


def test_arrow_and_pandas_columns_of_scores() -> None:
    (proba,) = _scale.output_columns(data.classifier(), ["probabilities"])
    arr = np.arange(6, dtype=np.float32).reshape(3, 2)
    lists = _scale.to_arrow_array(proba, arr)
    assert lists.type == pa.list_(pa.float32()) and lists.to_pylist() == [[0, 1], [2, 3], [4, 5]]
    column = _scale.to_pandas_column(proba, arr)
    assert str(column.dtype).startswith("list<item: float>") and len(column) == 3
    (value,) = _scale.output_columns(data.regressor())
    values = np.array([1.5, 2.5], np.float32)
    assert _scale.to_pandas_column(value, values) is values
    assert _scale.pandas_meta_dtype(value) == np.float32
    assert str(_scale.pandas_meta_dtype(proba)).startswith("list<item: float>")
