"""onnxbridge.ray on a real local Ray (num_cpus=2, started here and shut down after)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import _scale_data as data  # noqa: E402

from onnxbridge import InputError  # noqa: E402

# A local Ray takes several seconds to start; with --dist loadgroup one xdist worker starts it.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # One GPU declared as a Ray resource (there is none here): the num_gpus path is scheduled
    # for real, while this onnxruntime build has no CUDA provider.
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield
    ray.shutdown()


def test_map_batches_equals_run_and_loads_once_per_actor(local_ray: None) -> None:
    import onnxbridge.ray

    m = data.classifier()
    frame = data.rows(400)
    ds = ray.data.from_pandas([frame.iloc[i:i + 100] for i in range(0, 400, 100)])
    # Half a CPU per actor leaves room on the two CPUs for the tasks that feed them.
    scored = onnxbridge.ray.predict(ds, m, batch_size=50, concurrency=2, num_cpus=0.5, num_gpus=0)
    got = scored.to_pandas().set_index("id").loc[frame["id"]]
    label, proba = m.run(frame[["a", "b", "e"]])
    np.testing.assert_array_equal(got["label"].to_numpy(), label)
    np.testing.assert_allclose(np.stack(got["probabilities"].to_numpy()), proba, rtol=1e-6, atol=1e-7)

    # The same callable class, one load per actor whatever the number of batches.
    class Counting(onnxbridge.ray.OnnxPredictor):
        def __call__(self, batch: Any) -> Any:
            import os

            import pyarrow as pa

            from onnxbridge import _scale

            out = super().__call__(batch)
            loads = sum(_scale.worker_stats()["loads"].values())
            out = out.append_column("pid", pa.array([os.getpid()] * len(out), pa.int64()))
            return out.append_column("loads", pa.array([loads] * len(out), pa.int64()))

    ref = ray.put(m.to_bytes())
    counted = ds.map_batches(Counting, fn_constructor_kwargs={"model": ref}, batch_format="pyarrow",
                             batch_size=25, compute=ray.data.ActorPoolStrategy(size=2),
                             num_cpus=0.5).to_pandas()
    assert len(counted) == 400
    assert counted["pid"].nunique() <= 2 and (counted["loads"] == 1).all()
    assert len(counted) / 25 > counted["pid"].nunique()
    np.testing.assert_array_equal(counted.set_index("id").loc[frame["id"], "label"].to_numpy(), label)


def test_gpu_path_reserves_a_gpu_and_asks_for_cuda(local_ray: None) -> None:
    """num_gpus=1: each actor holds a GPU of the cluster and, unless providers are given, runs the
    model on "cuda,cpu". Here that reaches onnxruntime's own refusal (a CPU build); with
    providers="cpu" the same reserved actor scores like m.run."""
    import onnxruntime

    import onnxbridge.ray

    m = data.classifier()
    frame = data.rows(120)
    ds = ray.data.from_pandas(frame)
    assert onnxbridge.ray.cuda_available() == (
        "CUDAExecutionProvider" in onnxruntime.get_available_providers())

    class GpuIds(onnxbridge.ray.OnnxPredictor):
        def __call__(self, batch: Any) -> Any:
            import pyarrow as pa

            out = super().__call__(batch)
            gpus = len(ray.get_gpu_ids())
            return out.append_column("gpus", pa.array([gpus] * len(out), pa.int64()))

    got = ds.map_batches(GpuIds, fn_constructor_kwargs={"model": m.to_bytes(), "providers": "cpu"},
                         batch_format="pyarrow", batch_size=40, num_gpus=1, num_cpus=0.5,
                         compute=ray.data.ActorPoolStrategy(size=1)).to_pandas()
    assert set(got["gpus"]) == {1}
    scored = onnxbridge.ray.predict(ds, m, batch_size=40, concurrency=1, num_cpus=0.5, num_gpus=1,
                                    providers="cpu").to_pandas().set_index("id").loc[frame["id"]]
    np.testing.assert_array_equal(scored["label"].to_numpy(), m.run(frame[["a", "b", "e"]])[0])
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(Exception, match="CUDAExecutionProvider"):
            onnxbridge.ray.predict(ds, m, batch_size=40, concurrency=1, num_cpus=0.5,
                                   num_gpus=1).materialize()


def test_pandas_batches_and_bad_types() -> None:
    import onnxbridge.ray

    m = data.regressor()
    frame = data.rows(60)
    predictor = onnxbridge.ray.OnnxPredictor(m.to_bytes(), columns=["a", "b", "e"], prefix="y_")
    out = predictor(frame)
    want = m.run(frame[["a", "b", "e"]].to_numpy(np.float32)).reshape(-1)
    np.testing.assert_allclose(out["y_variable"].to_numpy(), want, rtol=1e-6)
    assert list(out.columns[:4]) == ["a", "b", "e", "id"]
    bad = frame.assign(b=frame["id"])
    with pytest.raises(InputError, match=r"column 'b' holds string values"):
        predictor(bad)
