"""Score dask DataFrames and arrays with an OnnxModel (``pip install onnxbridge[dask]``).

The model is one task in the graph (its bytes, or its path above 2 GB), so it is sent to each
worker once; each worker process loads it and builds its onnxruntime session once, then scores
partition after partition through ``OnnxModel.run``.

Examples:
    >>> import dask.dataframe as dd, onnxbridge, onnxbridge.dask                 # doctest: +SKIP
    >>> scored = onnxbridge.dask.predict(dd.read_parquet("rows/"), m)            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxbridge import _scale
from onnxbridge.errors import InputError

if TYPE_CHECKING:
    import dask.array as da
    import dask.dataframe as dd
    import pandas as pd

__all__ = ["predict", "predict_array"]


def _load(model: Any, ship: _scale.Ship) -> tuple[Any, _scale.ModelPayload]:
    import onnxbridge

    m = model if isinstance(model, onnxbridge.OnnxModel) else onnxbridge.load(model)
    return m, _scale.make_payload(model, ship)


def _score_partition(
    part: pd.DataFrame, payload: _scale.ModelPayload, columns: list[str],
    outputs: list[_scale.OutputColumn], providers: Any, keep: bool,
) -> pd.DataFrame:
    m = _scale.worker_model(payload, providers)
    scores = _scale.score_pandas(m, part, columns, outputs, providers)
    out = part.copy() if keep else part.iloc[:, :0].copy()
    for o in outputs:
        out[o.column] = _scale.to_pandas_column(o, scores[o.column])
    return out


def predict(
    ddf: dd.DataFrame, model: Any, *, columns: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None, prefix: str = "", ship: _scale.Ship = "auto",
    providers: Any = None, keep_columns: bool = True,
) -> dd.DataFrame:
    """``ddf`` with the model's outputs appended as typed columns, through ``map_partitions``.

    Arguments as for ``onnxbridge.spark.predict``; probabilities become an Arrow list column
    (``list<item: float>[pyarrow]``), labels and regression values plain columns.
    """
    import dask
    import pandas as pd

    m, payload = _load(model, ship)
    cols = _scale.input_columns(m, columns)
    meta_in = ddf._meta
    missing = [c for c in cols if c not in meta_in.columns]
    if missing:
        raise InputError(
            f"the DataFrame lacks column(s) {missing} that feed the model (it has {list(meta_in.columns)})"
        )
    _scale.check_column_kinds(m, cols, _scale.pandas_kinds(meta_in[cols]))
    outs = _scale.output_columns(m, outputs, prefix)
    if keep_columns:
        _scale.check_no_clash([str(c) for c in meta_in.columns], outs)
    meta = meta_in.copy() if keep_columns else meta_in.iloc[:, :0].copy()
    for o in outs:
        meta[o.column] = pd.Series([], dtype=_scale.pandas_meta_dtype(o), index=meta.index)
    shipped = dask.delayed(payload, pure=True)  # one key in the graph, whatever the partitions
    return ddf.map_partitions(_score_partition, shipped, cols, outs, providers, keep_columns, meta=meta)


def _score_block(
    block: np.ndarray, payload: _scale.ModelPayload, output: _scale.OutputColumn, providers: Any,
) -> np.ndarray:
    m = _scale.worker_model(payload, providers)
    arr = np.asarray(m.run(block, as_dict=True, providers=providers)[output.output])
    if arr.shape[:1] != block.shape[:1]:
        raise InputError(f"output {output.output!r} has {arr.shape[:1]} rows for {block.shape[0]} input rows")
    return arr.reshape(block.shape[0]) if output.shape == "scalar" else arr.reshape(block.shape[0], -1)


def predict_array(
    x: da.Array, model: Any, *, output: str | None = None, ship: _scale.Ship = "auto",
    providers: Any = None,
) -> da.Array:
    """One output of a one-input model over a 2-D dask array of rows, through ``map_blocks``.

    The rows stay chunked as they are; the feature axis is made one chunk. ``output`` defaults
    to the first output (the label of a classifier, the value of a regressor).
    """
    import dask
    import dask.array

    m, payload = _load(model, ship)
    if len(m.inputs) != 1:
        raise InputError(
            f"predict_array feeds one array to a one-input model; this model has inputs"
            f" {[s.name for s in m.inputs]}: use predict() on a dask DataFrame instead"
        )
    if x.ndim != 2:
        raise InputError(f"predict_array takes a 2-D array of rows (samples x features), got {x.ndim}-D")
    names = [s.name for s in m.outputs]
    (o,) = _scale.output_columns(m, [output if output is not None else names[0]])
    if o.dtype == np.dtype(object):
        dtype = np.dtype(object)
    else:
        dtype = o.dtype
    spec = m.outputs[names.index(o.output)]
    x = x.rechunk({1: -1})
    shipped = dask.delayed(payload, pure=True)
    if o.shape == "scalar":
        return dask.array.map_blocks(_score_block, x, shipped, o, providers, dtype=dtype, drop_axis=1)
    width = spec.shape[1] if spec.shape is not None and isinstance(spec.shape[1], int) else None
    if width is None:
        # The width is known only by running the model: score the first row once here.
        first = np.asarray(m.run(np.asarray(x[:1].compute()), as_dict=True)[o.output])
        width = int(first.reshape(1, -1).shape[1])
    return dask.array.map_blocks(_score_block, x, shipped, o, providers, dtype=dtype,
                                 chunks=(x.chunks[0], (width,)))
