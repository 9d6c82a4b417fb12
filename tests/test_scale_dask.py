"""onnxbridge.dask on dask's local schedulers (threads and processes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
da = pytest.importorskip("dask.array")

import _scale_data as data  # noqa: E402

from onnxbridge import InputError, OnnxModel  # noqa: E402


def test_dataframe_equals_run_with_nan_and_string_labels(tmp_path: Path) -> None:
    import onnxbridge.dask

    m = data.classifier()
    frame = data.rows(400)
    ddf = dd.from_pandas(frame, npartitions=4)
    scored = onnxbridge.dask.predict(ddf, m)
    assert str(scored.dtypes["probabilities"]).startswith("list<item: float>")
    got = scored.compute(scheduler="threads")
    label, proba = m.run(frame[["a", "b", "e"]])
    np.testing.assert_array_equal(got["label"].to_numpy(), label)
    np.testing.assert_allclose(np.stack(got["probabilities"].to_numpy()), proba, rtol=1e-6, atol=1e-7)
    pd.testing.assert_frame_equal(got[frame.columns], frame, check_dtype=False)  # dask: arrow strings
    assert np.isnan(frame["b"]).any()
    # The typed columns survive Parquet (an object column of unknown contents would not).
    scored.to_parquet(tmp_path / "scored")
    back = pd.read_parquet(tmp_path / "scored", dtype_backend="pyarrow").set_index("id").loc[frame["id"]]
    np.testing.assert_array_equal(back["label"].to_numpy(), label)
    np.testing.assert_allclose(np.stack(back["probabilities"].to_numpy()), proba, rtol=1e-6)


@pytest.mark.slow  # starts two worker processes
def test_dataframe_by_path_in_worker_processes(tmp_path: Path) -> None:
    """The processes scheduler: the model travels by path and loads in each worker process."""
    import onnxbridge.dask

    m = data.regressor()
    path = m.save(tmp_path / "reg.onnx")
    frame = data.rows(200)
    ddf = dd.from_pandas(frame, npartitions=2)
    with pytest.raises(InputError, match=r"columns="):
        onnxbridge.dask.predict(ddf, path)
    scored = onnxbridge.dask.predict(ddf, path, columns=["a", "b", "e"], ship="path", keep_columns=False)
    got = scored.compute(scheduler="processes", num_workers=2)
    want = m.run(frame[["a", "b", "e"]].to_numpy(np.float32)).reshape(-1)
    assert list(got.columns) == ["variable"] and got["variable"].dtype == np.float32
    np.testing.assert_allclose(got["variable"].to_numpy(), want, rtol=1e-6)


def test_array_helper() -> None:
    import onnxbridge.dask

    reg, clf = data.regressor(), data.classifier()
    x = data.rows(300)[["a", "b", "e"]].to_numpy(np.float32)
    arr = da.from_array(x, chunks=(64, 2))
    y = onnxbridge.dask.predict_array(arr, reg)
    assert y.shape == (300,)
    np.testing.assert_allclose(y.compute(), reg.run(x).reshape(-1), rtol=1e-6)
    np.testing.assert_array_equal(onnxbridge.dask.predict_array(arr, clf).compute(),
                                  clf.run(x)[0])
    with pytest.raises(InputError, match="one-input model"):
        onnxbridge.dask.predict_array(arr, _two_input_model())


def _two_input_model() -> OnnxModel:
    from onnx import TensorProto, helper

    a, b = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 1]) for n in "ab")
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "two", [a, b], [out])
    return OnnxModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_bad_type_names_the_column() -> None:
    import onnxbridge.dask

    m = data.classifier()
    frame = data.rows(40)
    with pytest.raises(InputError, match=r"column 'e' holds string values.*model input"):
        onnxbridge.dask.predict(dd.from_pandas(frame.assign(e=frame["id"]), npartitions=2), m)
    # A partition whose values disagree with the declared dtypes fails by name, not with nulls.
    bad = dd.from_pandas(frame, npartitions=2).map_partitions(
        lambda p: p.assign(a=p["id"]), meta=frame.iloc[:0])
    with pytest.raises(InputError, match=r"column 'a' holds string values"):
        onnxbridge.dask.predict(bad, m).compute(scheduler="sync")


def test_empty_batch_keeps_the_schema() -> None:
    import pyarrow as pa

    from onnxbridge import _scale

    m = data.classifier()
    outs = _scale.output_columns(m)
    empty = pa.Table.from_pandas(data.rows(0), preserve_index=False)
    out = _scale.score_arrow(m, empty, ["a", "b", "e"], outs)
    assert out.num_rows == 0
    assert out.schema.field("label").type == pa.string()
    assert out.schema.field("probabilities").type == pa.list_(pa.float32())
