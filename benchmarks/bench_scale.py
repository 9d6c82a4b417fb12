"""Scoring a Parquet dataset at scale: Spark, Ray and Dask on 2 local workers, side by side.

For a 500-tree LightGBM regressor and a 50-feature LogisticRegression, in one run and on the same
machine, rows/second of:

- a single-process loop of ``m.run`` over batches (the baseline every ratio is against);
- the same loop with the framework's own ``predict`` (native);
- each engine with ``onnxbridge.<engine>.predict`` (onnxruntime inside the engine's batch UDF);
- each engine with the native model's ``predict_proba``/``predict`` inside the same kind of UDF,
  returning the same columns of the same types as onnxbridge's (label + probabilities list for
  the classifier, the value for the regressor), so both sides pay for the same output columns;

and each engine's per-batch overhead: the time of a pass-through UDF that does no scoring,
divided by the number of batches it saw.

    python benchmarks/bench_scale.py --rows 1000000 --out bench.md
    python benchmarks/bench_scale.py --quick          # 100k rows, for a smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _common import report

FEATURES = 50
BATCH = 10_000


def _models(x: np.ndarray, y: np.ndarray, trees: int) -> dict[str, tuple[Any, Any]]:
    import lightgbm
    from sklearn.linear_model import LogisticRegression

    import onnxbridge

    n = 20_000
    lgbm = lightgbm.LGBMRegressor(n_estimators=trees, num_leaves=31, verbose=-1).fit(x[:n], y[:n])
    logreg = LogisticRegression(max_iter=200).fit(x[:n], y[:n] > 0)
    return {
        f"LightGBM {trees} trees": (lgbm, onnxbridge.to_onnx(lgbm, x[:16])),
        f"LogisticRegression {FEATURES} features": (logreg, onnxbridge.to_onnx(logreg, x[:16])),
    }


def _native(model: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """The framework's own answers, as the same outputs the ONNX model gives: label and
    probabilities for a classifier, the value for a regressor (so both sides build the same
    columns)."""
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(x)
        return {"label": model.classes_[proba.argmax(axis=1)], "probabilities": proba}
    return {"variable": model.predict(x)}


def _native_columns(model: Any, x: np.ndarray, outs: list[Any]) -> dict[str, np.ndarray]:
    """``_native``'s answers cast to the ONNX output columns' types, one entry per column."""
    scores = _native(model, x)
    out = {}
    for o in outs:
        arr = np.asarray(scores[o.output]).astype(o.dtype)
        out[o.column] = arr.reshape(len(x)) if o.shape == "scalar" else arr.reshape(len(x), -1)
    return out


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- the UDFs of the "native inside the same UDF" rows (picklable: module level) -----------------
class NativeArrow:
    """Spark mapInArrow / Ray map_batches function with the framework's own predict, giving the
    same columns of the same Arrow types as onnxbridge's UDF (label + probabilities list, or the
    regression value), built the same way (``_scale.to_arrow_array``)."""

    def __init__(self, model: Any, columns: list[str], outs: list[Any]) -> None:
        self.model, self.columns, self.outs = model, columns, outs

    def score(self, batch: Any) -> Any:
        import pyarrow as pa

        from onnxbridge import _scale

        x = np.column_stack([batch.column(c).to_numpy() for c in self.columns]).astype(np.float32)
        scores = _native_columns(self.model, x, self.outs)
        return pa.table({o.column: _scale.to_arrow_array(o, scores[o.column]) for o in self.outs})

    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            yield self.score(batch).to_batches()[0]


class NativeRay(NativeArrow):
    def __init__(self, model: Any, columns: list[str], outs: list[Any]) -> None:
        super().__init__(model, columns, outs)

    def __call__(self, batch: Any) -> Any:  # type: ignore[override]
        return self.score(batch)


def _identity(batches: Iterator[Any]) -> Iterator[Any]:
    yield from batches


def _native_partition(part: Any, model: Any, columns: list[str], outs: list[Any]) -> Any:
    import pandas as pd

    from onnxbridge import _scale

    scores = _native_columns(model, part[columns].to_numpy(np.float32), outs)
    return pd.DataFrame({o.column: _scale.to_pandas_column(o, scores[o.column]) for o in outs},
                        index=part.index)


class Counter:
    """Counts the batches a pass-through UDF sees (through a file, so it works across processes)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def mark(self) -> None:
        with open(self.path, "a") as f:
            f.write(".")

    def count(self) -> int:
        return len(Path(self.path).read_text()) if Path(self.path).exists() else 0


class CountingIdentity(Counter):
    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self.mark()
            yield batch


class CountingIdentityRay(Counter):
    def __call__(self, batch: Any) -> Any:
        self.mark()
        return batch


def _counting_partition(part: Any, counter: Counter) -> Any:
    counter.mark()
    return part


def _overhead(runs: list[tuple[float, int]]) -> dict[str, float]:
    """From two pass-through runs over the same rows with few and with many batches: the cost of
    one more batch (the slope) and of starting the job (what remains at zero batches)."""
    (t1, n1), (t2, n2) = runs
    per_batch = (t2 - t1) / (n2 - n1) if n2 != n1 else float("nan")
    return {"overhead": per_batch, "job": t1 - per_batch * n1, "batches": float(n2)}


def _run_spark(df: Any) -> None:
    """Run the whole plan and drop the result (Spark's no-op sink: nothing is collected)."""
    df.write.format("noop").mode("overwrite").save()


# -- engines --------------------------------------------------------------------------------------
def bench_spark(path: str, models: dict[str, tuple[Any, Any]], cols: list[str], tmp: str,
                rows: int) -> dict[str, float]:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    import onnxbridge.spark
    from onnxbridge import _scale

    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH))
             .config("spark.driver.memory", "2g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    out: dict[str, float] = {}
    try:
        df = spark.read.parquet(path).repartition(2).cache()
        df.count()
        _run_spark(df.mapInArrow(_identity, df.schema))  # starts the Python workers, untimed
        for name, (native, m) in models.items():
            scored = onnxbridge.spark.predict(df, m, columns=cols, keep_columns=False)
            out[f"{name}|onnx"] = rows / _timed(lambda s=scored: _run_spark(s))
            # The native UDF gives the same columns, of the same types, as onnxbridge's.
            schema = onnxbridge.spark.scorer(df, m, columns=cols, keep_columns=False)[1]
            plan = df.mapInArrow(NativeArrow(native, cols, _scale.output_columns(m)), schema)
            out[f"{name}|native"] = rows / _timed(lambda p=plan: _run_spark(p))
        runs = []
        for size in (BATCH, BATCH // 10):  # the first model run above warmed everything up
            spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(size))
            counter = CountingIdentity(os.path.join(tmp, f"spark-batches-{size}"))
            runs.append((_timed(lambda c=counter: _run_spark(df.mapInArrow(c, df.schema))), counter.count()))
        out.update(_overhead(runs))
    finally:
        spark.stop()
    return out


def bench_ray(path: str, models: dict[str, tuple[Any, Any]], cols: list[str], tmp: str,
              rows: int) -> dict[str, float]:
    import ray

    import onnxbridge.ray
    from onnxbridge import _scale

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    out: dict[str, float] = {}
    pool = ray.data.ActorPoolStrategy(size=2)
    try:
        ds = ray.data.read_parquet(path).materialize()
        for name, (native, m) in models.items():
            scored = onnxbridge.ray.predict(ds, m, columns=cols, keep_columns=False, concurrency=2,
                                            num_cpus=0.5, num_gpus=0, batch_size=BATCH)
            out[f"{name}|onnx"] = rows / _timed(scored.materialize)
            plan = ds.map_batches(NativeRay, fn_constructor_args=(native, cols, _scale.output_columns(m)),
                                  batch_format="pyarrow",
                                  batch_size=BATCH, compute=pool, num_cpus=0.5)
            out[f"{name}|native"] = rows / _timed(plan.materialize)
        runs = []
        for size in (BATCH, BATCH // 10):
            counter_path = os.path.join(tmp, f"ray-batches-{size}")
            plan = ds.map_batches(CountingIdentityRay, fn_constructor_args=(counter_path,),
                                  batch_format="pyarrow", batch_size=size, compute=pool, num_cpus=0.5)
            runs.append((_timed(plan.materialize), Counter(counter_path).count()))
        out.update(_overhead(runs))
    finally:
        ray.shutdown()
    return out


def bench_dask(path: str, models: dict[str, tuple[Any, Any]], cols: list[str], tmp: str,
               rows: int) -> dict[str, float]:
    import dask
    import dask.dataframe as dd
    import pandas as pd

    import onnxbridge.dask
    from onnxbridge import _scale

    out: dict[str, float] = {}
    ddf = dd.from_pandas(pd.read_parquet(path), chunksize=BATCH).persist(scheduler="sync")
    with dask.config.set(scheduler="processes", num_workers=2):
        ddf.map_partitions(lambda p: p, meta=ddf._meta).compute()  # starts the worker pool, untimed
        for name, (native, m) in models.items():
            scored = onnxbridge.dask.predict(ddf, m, columns=cols, keep_columns=False)
            out[f"{name}|onnx"] = rows / _timed(scored.compute)
            meta = scored._meta  # the same columns and types as onnxbridge's
            model_d = dask.delayed(native, pure=True)
            plan = ddf.map_partitions(_native_partition, model_d, cols, _scale.output_columns(m), meta=meta)
            out[f"{name}|native"] = rows / _timed(plan.compute)
        runs = []
        for size in (BATCH, BATCH // 10):
            parts = ddf if size == BATCH else ddf.repartition(npartitions=ddf.npartitions * 10)
            parts = parts.persist(scheduler="sync")
            counter = Counter(os.path.join(tmp, f"dask-batches-{size}"))
            runs.append((_timed(parts.map_partitions(_counting_partition, counter, meta=ddf._meta).compute),
                         counter.count()))
        out.update(_overhead(runs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--trees", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="100k rows")
    parser.add_argument("--engines", default="spark,ray,dask")
    parser.add_argument("--out", default=None, help="append the markdown tables to this file")
    args = parser.parse_args()
    rows = 100_000 if args.quick else args.rows
    warnings.filterwarnings("ignore")

    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    y = x[:, :5].sum(axis=1) + rng.normal(scale=0.1, size=rows).astype(np.float32)
    cols = [f"f{i}" for i in range(FEATURES)]
    models = _models(x, y, args.trees)
    from onnxbridge import _scale

    results: dict[str, dict[str, float]] = {}
    # Single process: the batches one engine task would see, scored in a plain loop.
    single: dict[str, float] = {}
    for name, (native, m) in models.items():
        batches = [x[i:i + BATCH] for i in range(0, rows, BATCH)]
        single[f"{name}|onnx"] = rows / _timed(lambda m=m, b=batches: [m.run(c) for c in b])
        outs = _scale.output_columns(m)
        single[f"{name}|native"] = rows / _timed(
            lambda n=native, b=batches, o=outs: [_native_columns(n, c, o) for c in b])
    results["single process loop"] = single

    with tempfile.TemporaryDirectory(prefix="wbench-scale-") as tmp:
        path = os.path.join(tmp, "rows.parquet")
        pd.DataFrame(x, columns=cols).to_parquet(path)
        del x
        engines = {"spark": bench_spark, "ray": bench_ray, "dask": bench_dask}
        for engine in args.engines.split(","):
            try:
                results[f"{engine} (2 local workers)"] = engines[engine](path, models, cols, tmp, rows)
            except Exception as exc:  # an engine that is not installed is a row that says so
                print(f"{engine}: skipped ({type(exc).__name__}: {exc})", file=sys.stderr)

    base = results["single process loop"]
    lines = [f"## Scoring at scale: {rows:,} rows from Parquet, batches of {BATCH:,}", "",
             "rows/s (higher is better); `x loop` is against the single-process `m.run` loop of the"
             " same model, measured in the same run. CPU shared with other work: read the ratios."
             " Both UDFs return the same columns of the same types (classifier: label +"
             " probabilities list; regressor: the value).", "",
             "| model | engine | onnxbridge rows/s | x loop | native predict rows/s | onnx / native |",
             "|---|---|---:|---:|---:|---:|"]
    for name in models:
        for engine, res in results.items():
            onnx_rate, native_rate = res.get(f"{name}|onnx"), res.get(f"{name}|native")
            if onnx_rate is None or native_rate is None:
                continue
            lines.append(f"| {name} | {engine} | {onnx_rate:,.0f} | {onnx_rate / base[f'{name}|onnx']:.2f} |"
                         f" {native_rate:,.0f} | {onnx_rate / native_rate:.2f} |")
    lines += ["", "Per-batch overhead: a pass-through UDF over the same rows in batches of"
              f" {BATCH:,} and of {BATCH // 10:,}; the extra time per extra batch, and the fixed"
              " cost of one job that remains.", "",
              "| engine | ms per batch | fixed ms per job | batches in the small-batch run |",
              "|---|---:|---:|---:|"]
    for engine, res in results.items():
        if "overhead" in res:
            lines.append(f"| {engine} | {res['overhead'] * 1000:.2f} | {res['job'] * 1000:.0f} |"
                         f" {res['batches']:.0f} |")
    report("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
