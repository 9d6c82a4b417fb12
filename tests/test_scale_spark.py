"""onnxbridge.spark on a real local Spark (local[2], started here, one session for the module)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs a Java runtime (java on PATH or JAVA_HOME)", allow_module_level=True)
pa = pytest.importorskip("pyarrow")

import _scale_data as data  # noqa: E402

from onnxbridge import InputError, _scale  # noqa: E402

pytestmark = [
    pytest.mark.slow,  # starting the JVM alone takes ~10 s
    pytest.mark.xdist_group("spark"),  # with --dist loadgroup: one JVM, not one per xdist worker
    # pyspark 4.x warns that it does not fully support pandas 3; what these tests use works.
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    # Spark's Python workers must run this interpreter (the one with onnxbridge installed).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]").appName("onnxbridge-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "64")  # several batches per task
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_classifier_scores_equal_run_with_nan_null_and_string_labels(spark: Any) -> None:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    import onnxbridge.spark

    m = data.classifier()
    frame = data.rows(400)
    sdf = spark.createDataFrame(frame).repartition(2)
    # A real Spark null as well as NaN values: both reach the model as NaN (the imputer's job).
    sdf = sdf.withColumn("e", F.when(F.col("id") == "row3", F.lit(None)).otherwise(F.col("e")))
    scored = onnxbridge.spark.predict(sdf, m)
    fields = {f.name: f.dataType for f in scored.schema.fields}
    assert fields["label"] == T.StringType()
    assert fields["probabilities"] == T.ArrayType(T.FloatType(), True)
    got = scored.toPandas().set_index("id").loc[frame["id"]]
    expect = frame.copy()
    expect.loc[expect["id"] == "row3", "e"] = np.nan
    label, proba = m.run(expect[["a", "b", "e"]])
    assert set(label) == {"high", "low", "mid"}
    np.testing.assert_array_equal(got["label"].to_numpy(), label)
    np.testing.assert_allclose(np.stack(got["probabilities"].to_numpy()), proba, rtol=1e-6, atol=1e-7)
    assert np.isnan(frame["b"]).sum() > 0


def test_matrix_model_by_path_with_columns(spark: Any, tmp_path: Path) -> None:
    from pyspark.sql import types as T

    import onnxbridge.spark

    m = data.regressor()
    path = m.save(tmp_path / "reg.onnx")
    frame = data.rows(300)
    sdf = spark.createDataFrame(frame)
    with pytest.raises(InputError, match=r"columns=\["):
        onnxbridge.spark.predict(sdf, m)
    fn, schema = onnxbridge.spark.scorer(sdf, path, columns=["a", "b", "e"], prefix="pred_", ship="path")
    assert fn.broadcast.value.data is None and fn.broadcast.value.path == str(path.resolve())
    assert schema["pred_variable"].dataType == T.FloatType()
    got = sdf.mapInArrow(fn, schema).toPandas().set_index("id").loc[frame["id"]]
    want = m.run(frame[["a", "b", "e"]].to_numpy(np.float32)).reshape(-1)
    np.testing.assert_allclose(got["pred_variable"].to_numpy(), want, rtol=1e-6)


def test_one_model_load_per_worker_process(spark: Any) -> None:
    """Many Arrow batches, two workers: each Python worker loads the model (and builds its
    session) once, and the broadcast function itself carries no model bytes."""
    import cloudpickle

    import onnxbridge.spark

    m = data.regressor()
    sdf = spark.createDataFrame(data.rows(1000)).repartition(4)
    fn, _schema = onnxbridge.spark.scorer(sdf, m, columns=["a", "b", "e"])
    assert len(m.to_bytes()) > 5000
    assert len(cloudpickle.dumps(fn)) < 2000  # the bytes go by broadcast, not inside each task

    def with_stats(batches: Iterator[Any]) -> Iterator[Any]:
        import uuid  # id(batch) repeats once a batch is freed: not a batch's identity

        for batch in fn(batches):
            stats = _scale.worker_stats()
            n = batch.num_rows
            yield pa.RecordBatch.from_arrays(
                [pa.array([stats["pid"]] * n, pa.int64()),
                 pa.array([stats["loads"].get(fn.key, 0)] * n, pa.int64()),
                 pa.array([uuid.uuid4().int >> 65] * n, pa.int64())],  # one id per batch
                names=["pid", "loads", "batch"],
            )

    out = sdf.mapInArrow(with_stats, "pid long, loads long, batch long").toPandas()
    assert len(out) == 1000
    assert out["batch"].nunique() >= 8 > out["pid"].nunique()  # more batches than processes
    assert (out["loads"] == 1).all(), out.groupby("pid")["loads"].max()


def test_bad_column_type_is_named_before_scoring(spark: Any) -> None:
    from pyspark.sql import functions as F

    import onnxbridge.spark

    m = data.classifier()
    sdf = spark.createDataFrame(data.rows(20)).withColumn("b", F.col("id"))
    with pytest.raises(InputError, match=r"column 'b' holds string values.*model input"):
        onnxbridge.spark.predict(sdf, m)
    with pytest.raises(InputError, match=r"already has column\(s\) \['label'\]"):
        onnxbridge.spark.predict(spark.createDataFrame(data.rows(20)).withColumn("label", F.lit(1)), m)
    with pytest.raises(InputError, match=r"lacks column\(s\) \['e'\]"):
        onnxbridge.spark.predict(spark.createDataFrame(data.rows(20)).drop("e"), m)


def test_importing_onnxbridge_spark_needs_no_session() -> None:
    import onnxbridge.spark

    assert callable(onnxbridge.spark.predict)
    assert "pyspark" not in sys.modules or hasattr(onnxbridge, "load")
