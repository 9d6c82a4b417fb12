"""Score a Spark DataFrame with an OnnxModel (``pip install onnxbridge[spark]``).

The model's bytes are broadcast once; each Python worker process loads the model and builds its
onnxruntime session on first use and keeps it for every later batch and task (Spark reuses its
Python workers). Rows travel as Arrow record batches (``mapInArrow``) and are scored a batch at a
time through ``OnnxModel.run``: no Python loop over rows.

Examples:
    >>> import onnxbridge, onnxbridge.spark                               # doctest: +SKIP
    >>> scored = onnxbridge.spark.predict(df, onnxbridge.load("m.onnx"))   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from onnxbridge import _scale
from onnxbridge.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType, StructType

__all__ = ["ArrowScorer", "predict", "scorer"]


class ArrowScorer:
    """The function ``DataFrame.mapInArrow`` runs on each partition: a small picklable object
    holding the broadcast model, the input columns and the typed output columns."""

    def __init__(
        self, broadcast: Any, key: str, columns: Sequence[str],
        outputs: Sequence[_scale.OutputColumn], providers: Any = None, keep: bool = True,
    ) -> None:
        self.broadcast = broadcast
        self.key = key
        self.columns = list(columns)
        self.outputs = list(outputs)
        self.providers = providers
        self.keep = keep

    def model(self) -> Any:
        cached = _scale._MODELS.get(self.key)
        if cached is not None:  # no need to read the broadcast again in this process
            return cached
        return _scale.worker_model(lambda: self.broadcast.value, self.providers)

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        m = self.model()
        for batch in batches:
            yield _scale.score_arrow(m, batch, self.columns, self.outputs, self.providers, self.keep)


def _spark_type(t: pa.DataType) -> DataType:
    import pyarrow as pa
    from pyspark.sql import types as T

    if pa.types.is_list(t):
        return T.ArrayType(_spark_type(t.value_type), containsNull=True)
    table = {
        pa.float32(): T.FloatType(), pa.float64(): T.DoubleType(), pa.int64(): T.LongType(),
        pa.int32(): T.IntegerType(), pa.int16(): T.ShortType(), pa.int8(): T.ByteType(),
        pa.bool_(): T.BooleanType(), pa.string(): T.StringType(),
    }
    if t in table:
        return table[t]
    raise InputError(
        f"a model output of Arrow type {t} has no Spark column type; leave it out with outputs=[...]"
    )


def _kind(t: DataType) -> str:
    from pyspark.sql import types as T

    if isinstance(t, T.BooleanType):
        return "bool"
    if isinstance(t, T.NumericType):
        return "numeric"
    if isinstance(t, T.StringType):
        return "string"
    return t.simpleString()


def scorer(
    df: DataFrame, model: Any, *, columns: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None, prefix: str = "", ship: _scale.Ship = "auto",
    providers: Any = None, keep_columns: bool = True,
) -> tuple[ArrowScorer, StructType]:
    """The ``mapInArrow`` function and its result schema, for composing your own plan:
    ``df.mapInArrow(*onnxbridge.spark.scorer(df, m))``. Arguments as for ``predict``."""
    from pyspark.sql import types as T

    import onnxbridge

    m = model if isinstance(model, onnxbridge.OnnxModel) else onnxbridge.load(model)
    payload = _scale.make_payload(model, ship)
    cols = _scale.input_columns(m, columns)
    by_name = {f.name: f for f in df.schema.fields}
    missing = [c for c in cols if c not in by_name]
    if missing:
        raise InputError(
            f"the DataFrame lacks column(s) {missing} that feed the model (it has {list(by_name)})"
        )
    _scale.check_column_kinds(m, cols, {c: _kind(by_name[c].dataType) for c in cols})
    outs = _scale.output_columns(m, outputs, prefix)
    if keep_columns:
        _scale.check_no_clash(list(by_name), outs)
    fields = list(df.schema.fields) if keep_columns else []
    fields += [T.StructField(o.column, _spark_type(o.arrow_type()), True) for o in outs]
    broadcast = df.sparkSession.sparkContext.broadcast(payload)
    fn = ArrowScorer(broadcast, payload.key, cols, outs, providers, keep_columns)
    return fn, T.StructType(fields)


def predict(
    df: DataFrame, model: Any, *, columns: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None, prefix: str = "", ship: _scale.Ship = "auto",
    providers: Any = None, keep_columns: bool = True,
) -> DataFrame:
    """``df`` with the model's outputs appended as typed columns (lazy, like any transformation).

    ``model`` is an OnnxModel or a path. Input columns are those recorded at conversion, the input
    names of a one-input-per-column model, or ``columns=``. Labels become string or long columns,
    regression values float/double columns, probabilities ``array<float>`` columns. ``ship="path"``
    (automatic above 2 GB) sends the model's path, which every worker must be able to read, instead
    of broadcasting its bytes. A column whose type cannot feed its input raises InputError naming it.

    Examples:
        >>> scored = onnxbridge.spark.predict(spark.read.parquet("rows/"), m)   # doctest: +SKIP
        >>> scored.write.parquet("scored/")                                     # doctest: +SKIP
    """
    fn, schema = scorer(df, model, columns=columns, outputs=outputs, prefix=prefix, ship=ship,
                        providers=providers, keep_columns=keep_columns)
    return df.mapInArrow(fn, schema)
