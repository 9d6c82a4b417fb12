"""A pandas DataFrame as model inputs, matched by column name.

A tabular converter records the DataFrame's column names, in order, in the model's metadata
(``onnxbridge.columns``). At run time a DataFrame is matched by name, in any order:

- a model with one input per column takes each input from the column of the same name;
- a model with one matrix input [N, n_columns] takes the recorded columns, in the recorded order;
- a missing column is an InputError naming it; an extra column is ignored with a warning.

In a string input, a missing value (None or NaN) is given to the graph as the empty string
(ONNX string tensors have no NaN); the converters treat "" as missing.
pandas is never imported here: a DataFrame is recognised by duck typing.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxbridge.errors import InputError, OnnxBridgeWarning

__all__ = ["frame_columns", "frame_feeds"]


def frame_columns(metadata: Mapping[str, str] | None) -> list[str] | None:
    """The column names a model was converted with (None when it was not a DataFrame)."""
    text = (metadata or {}).get("onnxbridge.columns")
    if not text:
        return None
    try:
        names = json.loads(text)
    except ValueError:
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def _strings(col: np.ndarray) -> np.ndarray:
    """An object column with None / NaN replaced by "" (the graph's missing string)."""
    out = col.astype(object)
    for i, v in enumerate(out.flat):
        if v is None or (isinstance(v, float) and v != v):
            out.flat[i] = ""
    return out


def _column(df: Any, name: str, wants_strings: bool) -> np.ndarray:
    col = np.asarray(df[name].to_numpy())
    if wants_strings or (col.dtype == object and any(isinstance(v, str) for v in col[:1000])):
        return _strings(col)
    return col


def _check_names(df: Any, wanted: Sequence[str], what: str) -> dict[str, Any]:
    by_name: dict[str, Any] = {}
    for c in df.columns:
        by_name.setdefault(str(c), c)
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise InputError(
            f"the DataFrame lacks column(s) {missing}, which {what}; it has"
            f" {list(by_name)}. Add them (columns are matched by name, in any order)"
        )
    extra = [n for n in by_name if n not in set(wanted)]
    if extra:
        warnings.warn(
            f"DataFrame column(s) {extra} are not model inputs and are ignored",
            OnnxBridgeWarning, stacklevel=4,
        )
    return by_name


def frame_feeds(df: Any, inputs: Sequence[Any], columns: Sequence[str] | None) -> dict[str, Any]:
    """The model's inputs (``TensorSpec``-like: name, dtype, shape) taken from ``df`` by name."""
    names = [str(s.name) for s in inputs]
    if len(inputs) == 1 and names[0] not in {str(c) for c in df.columns}:
        spec = inputs[0]
        frame = df  # no names recorded (converted from an array): columns taken in order
        if columns is not None:
            by_name = _check_names(df, list(columns), "the model was converted with")
            frame = df[[by_name[c] for c in columns]]
        dtype = getattr(spec, "dtype", None)
        if dtype == np.dtype(object):
            return {spec.name: _strings(np.asarray(frame.to_numpy()))}
        if dtype is not None and dtype.kind == "f":  # pandas NA (nullable dtypes) -> NaN
            try:
                return {spec.name: frame.to_numpy(dtype=dtype, na_value=np.nan)}
            except (TypeError, ValueError):  # strings: io's check names the problem
                return {spec.name: frame}
        return {spec.name: frame}
    by_name = _check_names(df, names, f"the model takes as inputs {names}")
    out: dict[str, Any] = {}
    for spec in inputs:
        col = _column(df, by_name[spec.name], getattr(spec, "dtype", None) == np.dtype(object))
        rank = len(spec.shape) if spec.shape is not None else 2
        out[spec.name] = col.reshape(-1, 1) if rank == 2 else col
    return out
