"""What the Spark, Ray and Dask helpers share: shipping a model to workers, one loaded model (so one
onnxruntime session) per worker process, and scoring one batch of rows with ``OnnxModel.run``.

Nothing here imports an engine; pandas and pyarrow are imported inside the functions that need them.
Only the public API of onnxbridge is used (``load``, ``OnnxModel.run``, ``inputs``/``outputs``,
``metadata``), so the engine helpers do not depend on how the runtime is laid out inside.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from onnxbridge.errors import InputError, OnnxBridgeError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from onnxbridge.model import OnnxModel

__all__ = [
    "ModelPayload",
    "OutputColumn",
    "check_column_kinds",
    "input_columns",
    "make_payload",
    "output_columns",
    "score_arrow",
    "score_pandas",
    "worker_model",
]

# A model that cannot be one protobuf message (over 2 GB: OnnxModel.to_bytes raises ValueError)
# travels by path; the limit itself is _files.PROTOBUF_LIMIT, not repeated here.
Ship = Literal["auto", "bytes", "path"]


@dataclass(frozen=True)
class ModelPayload:
    """A model as it travels to workers: its bytes (broadcast once) or a path on shared storage.

    ``key`` names the model in each worker's cache: the sha256 of the bytes, or the path with the
    file's size and modification time (a file replaced under the same path is loaded again).
    """

    key: str
    data: bytes | None = None
    path: str | None = None

    def load(self) -> OnnxModel:
        import onnxbridge

        if self.data is not None:
            return onnxbridge.load(self.data)
        assert self.path is not None
        return onnxbridge.load(self.path)


def _path_payload(path: str | os.PathLike[str]) -> ModelPayload:
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError as exc:
        raise OnnxBridgeError(
            f"cannot ship model path {os.fspath(path)!r} to the workers: {exc}; give a path on"
            " storage every worker can read (the same path on each machine)"
        ) from exc
    return ModelPayload(key=f"path:{p}:{st.st_size}:{st.st_mtime_ns}", path=str(p))


def make_payload(model: Any, ship: Ship = "auto") -> ModelPayload:
    """The payload for ``model`` (an OnnxModel, a path, or the bytes of a model file).

    ``ship="auto"`` sends bytes while the model fits one protobuf message (under 2 GB) and the
    path of an OnnxModel loaded from a file above that; ``"path"`` always sends a path (workers
    must see the same file); ``"bytes"`` always sends bytes.
    """
    if ship not in ("auto", "bytes", "path"):
        raise ValueError(f"ship must be 'auto', 'bytes' or 'path', got {ship!r}")
    if isinstance(model, ModelPayload):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        if ship == "path":
            raise ValueError("ship='path' needs a model path (or an OnnxModel loaded from a file)")
        data = bytes(model)
        return ModelPayload(key="sha256:" + hashlib.sha256(data).hexdigest(), data=data)
    if isinstance(model, (str, os.PathLike)):
        if ship == "bytes":
            return make_payload(Path(model).read_bytes(), "bytes")
        return _path_payload(model)
    source = getattr(model, "source", None)
    if ship == "path":
        if not source or not Path(source).is_file():
            raise OnnxBridgeError(
                "ship='path' needs a model saved on storage every worker can read: call"
                " m.save('/shared/model.onnx') and pass that path (or the loaded model)"
            )
        return _path_payload(source)
    try:
        data = model.to_bytes()
    except ValueError as exc:
        if ship == "auto" and source and Path(source).is_file():
            return _path_payload(source)
        raise OnnxBridgeError(
            "this model is over protobuf's 2 GB limit, so it cannot be broadcast as bytes: save it"
            " where every worker can read it (m.save('/shared/model.onnx'), weights go beside it)"
            " and pass that path instead of the model"
        ) from exc
    return ModelPayload(key="sha256:" + hashlib.sha256(data).hexdigest(), data=data)


# -- one model per worker process ------------------------------------------------------------------
_MODELS: dict[str, OnnxModel] = {}
_LOADS: Counter[str] = Counter()
_LOCK = threading.Lock()


def worker_model(payload: ModelPayload | Any, providers: Any = None) -> OnnxModel:
    """The model for ``payload`` in this process: loaded, and its session built, on first use only.

    ``payload`` may also be a zero-argument callable returning the payload (a Spark broadcast's
    ``value`` is read only when this process has not loaded the model yet).
    """
    key = payload.key if isinstance(payload, ModelPayload) else None
    if key is not None:
        cached = _MODELS.get(key)
        if cached is not None:
            return cached
    with _LOCK:
        if callable(payload):
            payload = payload()
        key = payload.key
        m = _MODELS.get(key)
        if m is None:
            m = payload.load()
            m.session(providers)  # the one session of this process, built now rather than mid-batch
            _MODELS[key] = m
            _LOADS[key] += 1
        return m


def worker_stats() -> dict[str, Any]:
    """This process's id and how many times it loaded each model (for tests and diagnostics)."""
    return {"pid": os.getpid(), "loads": dict(_LOADS)}


# -- columns ---------------------------------------------------------------------------------------
def _recorded_columns(m: OnnxModel) -> list[str] | None:
    """The DataFrame columns recorded at conversion (the same reader m.run(df) uses)."""
    from onnxbridge._frames import frame_columns

    return frame_columns(m.metadata)


def _is_per_column(m: OnnxModel) -> bool:
    """Every input is one column: shape [N] or [N, 1]."""
    return all(
        s.shape is not None and (len(s.shape) == 1 or (len(s.shape) == 2 and s.shape[1] == 1))
        for s in m.inputs
    )


def input_columns(m: OnnxModel, columns: Sequence[str] | None = None) -> list[str]:
    """The data columns that feed ``m``, in order: ``columns`` if given, else the names recorded at
    conversion, else the input names of a one-input-per-column model."""
    if columns is not None:
        cols = [str(c) for c in columns]
        if not cols:
            raise InputError("columns= is empty; name the columns that feed the model")
        return cols
    recorded = _recorded_columns(m)
    if recorded:
        return recorded
    if _is_per_column(m):
        return [s.name for s in m.inputs]
    described = ", ".join(str(s) for s in m.inputs)
    raise InputError(
        f"the model's input(s) {described} take several columns at once and the model records no"
        " column names; pass columns=[...] with the feature columns in the order used at training"
    )


def _kind_of(dtype: np.dtype | None) -> str:
    if dtype is None:
        return "any"
    if dtype == np.dtype(object) or dtype.kind in "US":
        return "string"
    if dtype.kind == "b":
        return "bool"
    if dtype.kind in "iuf":
        return "numeric"
    return dtype.kind


def check_column_kinds(m: OnnxModel, columns: Sequence[str], kinds: dict[str, str]) -> None:
    """Raise InputError naming the column when a data column's kind ("numeric", "string", "bool",
    anything else) cannot feed the model input it goes to, before any row is scored."""
    specs = m.inputs
    if len(specs) == 1 and not _is_per_column(m):
        pairs = [(c, specs[0]) for c in columns]
    else:
        by_name = {s.name: s for s in specs}
        if all(c in by_name for c in columns):
            pairs = [(c, by_name[c]) for c in columns]
        elif len(columns) == len(specs):
            pairs = list(zip(columns, specs, strict=True))
        else:
            raise InputError(
                f"the model has {len(specs)} inputs {[s.name for s in specs]}, one per column, but"
                f" {len(columns)} columns {list(columns)} were chosen to feed it"
            )
    for column, spec in pairs:
        want = _kind_of(spec.dtype)
        got = kinds.get(column, "missing")
        if got == "missing":
            raise InputError(f"column {column!r} is not in the data (it feeds model input {spec.name!r})")
        ok = want == "any" or got == want or (want == "numeric" and got == "bool")
        if not ok:
            raise InputError(
                f"column {column!r} holds {got} values but feeds model input {spec.name!r} of type"
                f" {spec.type}; cast the column to {'strings' if want == 'string' else 'numbers'}"
                " before scoring (nothing was scored)"
            )


def pandas_kinds(df: pd.DataFrame) -> dict[str, str]:
    """Column -> kind for a pandas frame (object columns count as strings)."""
    import pandas as pd

    out = {}
    for name, dtype in df.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype):
            kind = "bool"
        elif pd.api.types.is_numeric_dtype(dtype):
            kind = "numeric"
        elif pd.api.types.is_string_dtype(dtype) or dtype == np.dtype(object):
            kind = "string"
        else:
            kind = str(dtype)
        out[str(name)] = kind
    return out


# -- outputs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputColumn:
    """One model output as one data column: ``scalar`` (labels, regression values: [N] or [N, 1])
    or ``array`` (probabilities, embeddings: [N, k], one list per row)."""

    column: str
    output: str
    shape: Literal["scalar", "array"]
    dtype: np.dtype

    def arrow_type(self) -> pa.DataType:
        import pyarrow as pa

        if self.dtype == np.dtype(object):
            value: pa.DataType = pa.string()
        else:
            value = pa.from_numpy_dtype(self.dtype)
        return value if self.shape == "scalar" else pa.list_(value)


def output_columns(
    m: OnnxModel, outputs: Sequence[str] | None = None, prefix: str = ""
) -> list[OutputColumn]:
    """The columns the scores go to, typed from the model's signature."""
    specs = {s.name: s for s in m.outputs}
    wanted = list(outputs) if outputs is not None else list(specs)
    unknown = [o for o in wanted if o not in specs]
    if unknown:
        raise InputError(f"the model has no output(s) {unknown}; its outputs are {list(specs)}")
    cols = []
    for name in wanted:
        spec = specs[name]
        if not spec.type.startswith("tensor(") or spec.dtype is None:
            raise InputError(
                f"output {name!r} is a {spec.type}, which is not one value or one list per row;"
                f" leave it out with outputs=[...] (the others are {[o for o in specs if o != name]})"
            )
        shape = spec.shape
        if shape is None or len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
            kind: Literal["scalar", "array"] = "scalar"
        elif len(shape) == 2:
            kind = "array"
        else:
            raise InputError(
                f"output {name!r} has shape {list(shape)}: only one value or one list per row can be"
                " a column; leave it out with outputs=[...]"
            )
        dtype = np.dtype(object) if spec.dtype.kind in "OUS" else np.dtype(spec.dtype)
        cols.append(OutputColumn(column=prefix + name, output=name, shape=kind, dtype=dtype))
    return cols


# -- scoring one batch -----------------------------------------------------------------------------
def score_pandas(
    m: OnnxModel, frame: pd.DataFrame, columns: Sequence[str], outputs: Sequence[OutputColumn],
    providers: Any = None,
) -> dict[str, np.ndarray]:
    """Score one batch through ``m.run(DataFrame)``: output column -> array with one row per row."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"the data lacks column(s) {missing} that feed the model (it has {list(frame.columns)})"
        )
    check_column_kinds(m, columns, pandas_kinds(frame[list(columns)]))
    n = len(frame)
    if n == 0:
        return {o.column: np.empty((0,) if o.shape == "scalar" else (0, 0), o.dtype) for o in outputs}

    sub = frame[list(columns)]
    # A null in a string column reaches the graph as "" (the missing string), exactly as in
    # m.run(DataFrame) (onnxbridge/_frames.py): scoring on an engine gives what m.run gives.
    try:
        result = m.run(sub, as_dict=True, providers=providers)
    except InputError as exc:
        raise InputError(f"scoring columns {list(columns)}: {exc}") from exc
    out = {}
    for o in outputs:
        arr = np.asarray(result[o.output])
        if arr.shape[:1] != (n,):
            raise InputError(
                f"output {o.output!r} has shape {list(arr.shape)} for {n} rows: it is not one row per"
                " input row, so it cannot be a column; leave it out with outputs=[...]"
            )
        out[o.column] = arr.reshape(n) if o.shape == "scalar" else arr.reshape(n, -1)
    return out


def to_arrow_array(o: OutputColumn, arr: np.ndarray) -> pa.Array:
    """A column of scores as Arrow, built without a Python loop over rows."""
    import pyarrow as pa

    value_type = o.arrow_type() if o.shape == "scalar" else o.arrow_type().value_type
    if o.shape == "scalar":
        return pa.array(arr, type=value_type)
    n, k = arr.shape
    values = pa.array(np.ascontiguousarray(arr).reshape(-1), type=value_type)
    steps = np.arange(n + 1, dtype=np.int64) * k  # row i's list starts at i * k
    offsets = pa.array(steps.astype(np.int32), type=pa.int32())
    return pa.ListArray.from_arrays(offsets, values, type=pa.list_(value_type))


def to_pandas_column(o: OutputColumn, arr: np.ndarray) -> Any:
    """A column of scores for pandas: numpy for numbers, Arrow for strings and lists (their
    types then survive ``to_parquet``, which cannot type an object column of unknown contents)."""
    if o.shape == "scalar" and o.dtype != np.dtype(object):
        return arr
    import pandas as pd

    return pd.arrays.ArrowExtensionArray(to_arrow_array(o, arr))


def pandas_meta_dtype(o: OutputColumn) -> Any:
    import pandas as pd

    if o.shape == "array" or o.dtype == np.dtype(object):
        return pd.ArrowDtype(o.arrow_type())
    return o.dtype


def score_arrow(
    m: OnnxModel, batch: pa.RecordBatch | pa.Table, columns: Sequence[str],
    outputs: Sequence[OutputColumn], providers: Any = None, keep: bool = True,
) -> pa.RecordBatch | pa.Table:
    """Score one Arrow batch; returns it with the output columns appended (or only those)."""
    import pyarrow as pa

    names = list(batch.schema.names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise InputError(f"the data lacks column(s) {missing} that feed the model (it has {names})")
    frame = batch.select(list(columns)).to_pandas()
    scores = score_pandas(m, frame, columns, outputs, providers)
    arrays = [to_arrow_array(o, scores[o.column]) for o in outputs]
    cols = [o.column for o in outputs]
    if keep:
        arrays = list(batch.columns) + arrays
        cols = names + cols
    if isinstance(batch, pa.Table):
        return pa.Table.from_arrays(arrays, names=cols)
    return pa.RecordBatch.from_arrays(arrays, names=cols)


def check_no_clash(existing: Sequence[str], outputs: Sequence[OutputColumn]) -> None:
    clash = [o.column for o in outputs if o.column in set(existing)]
    if clash:
        raise InputError(
            f"the data already has column(s) {clash}, which the scores would go to; pass"
            " prefix='pred_' (or outputs=[...]) to name the score columns differently"
        )
