"""onnxbridge.dask on dask's local schedulers (threads and processes)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
da = pytest.importorskip("dask.array")

import _scale_data as data  # noqa: E402

from onnxbridge import InputError, OnnxBridgeError, OnnxModel  # noqa: E402


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


# -- a model over 2 GB travels by path ---------------------------------------------------------------
def _write_over_2gb_model(folder: Path) -> tuple[Path, float]:
    """y = x + W[0] with W a float32 initializer of 2 GiB + 64 MiB, written straight to an
    external data file one 64 MiB random chunk at a time (the test never holds W); returns the
    model's path and W[0]."""
    from onnx import TensorProto, helper

    chunk = np.random.default_rng(0).standard_normal(2**24, dtype=np.float32)  # 64 MiB
    pieces = 2**31 // chunk.nbytes + 1
    with open(folder / "big.onnx.data", "wb") as f:
        for _ in range(pieces):
            f.write(chunk.tobytes())
    size = pieces * chunk.nbytes
    weights = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[size // 4],
                          data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "big.onnx.data"), ("offset", "0"), ("length", str(size))):
        weights.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["i"], value_ints=[0]),
         helper.make_node("Gather", ["W", "i"], ["w0"]),
         helper.make_node("Add", ["x", "w0"], ["y"])],
        "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])], initializer=[weights])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = folder / "big.onnx"
    path.write_bytes(proto.SerializeToString())
    return path, float(chunk[0])


def _bare_session_peak(path: str) -> int:
    """Peak memory of a process that only opens ``path`` in a bare onnxruntime session."""
    import resource

    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "x"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _worker_facts() -> dict[str, int]:
    import resource

    from onnxbridge import _scale

    return {"pid": os.getpid(), "loads": sum(_scale.worker_stats()["loads"].values()),
            "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


@pytest.mark.slow  # writes 2.1 GB and loads it once in a worker process (run under the bigmem lock)
def test_a_model_over_2gb_travels_by_path_and_is_loaded_once(tmp_path: Path) -> None:
    import fcntl
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    import dask

    import onnxbridge
    import onnxbridge.dask
    from onnxbridge import _scale

    with open("/tmp/onnxbridge-large-tests.lock", "a") as lock:  # test_large_models' lock too
        fcntl.flock(lock, fcntl.LOCK_EX)
        path, w0 = _write_over_2gb_model(tmp_path)
        size = (tmp_path / "big.onnx.data").stat().st_size
        assert size > 2**31
        m = onnxbridge.load(path)  # reads the graph, not the weights
        payload = _scale.make_payload(m)  # ship="auto": over 2 GB, so the path
        assert payload.data is None and payload.path == str(path.resolve())
        assert len(pickle.dumps(payload)) < 4096
        with pytest.raises(OnnxBridgeError, match="2 GB limit"):
            _scale.make_payload(m, "bytes")
        frame = pd.DataFrame({"x": np.arange(12, dtype=np.float32)})
        scored = onnxbridge.dask.predict(dd.from_pandas(frame, npartitions=3), m, keep_columns=False)
        graph_bytes = len(pickle.dumps(dict(scored.__dask_graph__())))
        assert graph_bytes < 2**20  # the graph carries the path, never the weights
        # The worker is forked from this process: it starts with this process's load count
        # (other tests in this process may have loaded models through payloads).
        before = sum(_scale.worker_stats()["loads"].values())
        with ProcessPoolExecutor(max_workers=1) as pool:  # one worker process: weights held once
            got = scored.compute(scheduler="processes", pool=pool)
            facts = dask.delayed(_worker_facts)().compute(scheduler="processes", pool=pool)
        np.testing.assert_allclose(got["y"].to_numpy(), frame["x"].to_numpy() + np.float32(w0), rtol=1e-6)
        assert facts["pid"] != os.getpid() and facts["loads"] - before == 1, (facts, before)
        # The weights are held as onnxruntime itself holds them, once more by nothing: the worker's
        # peak is that of a bare session on the same file in a fresh process (forked from this
        # one, so with the same imports), within 256 MiB.
        with ProcessPoolExecutor(max_workers=1) as pool:
            bare = pool.submit(_bare_session_peak, str(path)).result()
        assert facts["peak"] < bare + 2**28, (
            f"worker peak {facts['peak'] / 2**30:.2f} GiB, bare onnxruntime {bare / 2**30:.2f} GiB")
