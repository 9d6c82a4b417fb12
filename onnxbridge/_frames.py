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


def _check_names(labels: Sequence[Any], wanted: Sequence[str], what: str) -> tuple[dict[str, Any],
                                                                                  list[str]]:
    """The frame's labels by name (str), and the names that are not wanted (ignored)."""
    by_name: dict[str, Any] = {}
    for c in labels:
        by_name.setdefault(str(c), c)
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise InputError(
            f"the DataFrame lacks column(s) {missing}, which {what}; it has"
            f" {list(by_name)}. Add them (columns are matched by name, in any order)"
        )
    wanted_set = set(wanted)
    return by_name, [n for n in by_name if n not in wanted_set]


# How a frame's columns become the model's inputs, worked out once per (labels, inputs,
# recorded columns): ("matrix", labels to select or None for all in order, extra) or
# ("columns", [(input name, label)], extra). Bounded: cleared when it grows past _PLANS_MAX.
_Plan = tuple[str, Any, list[str]]
_PLANS: dict[tuple[Any, ...], _Plan] = {}
_PLANS_MAX = 256
# The last (column Index, input names, recorded columns, plan): pandas Index objects are
# immutable, and holding it keeps its id from being reused, so the same frame (or another
# with the very same columns object) skips reading the labels again (~5 us for pyarrow-backed
# string labels) and looking the plan up.
_LAST: list[tuple[Any, Any, Any, Any]] = [(None, None, None, None)]


def _frame_plan(df: Any, names: tuple[str, ...], columns: Sequence[str] | None) -> _Plan:
    index = df.columns
    last = _LAST[0]  # one read: threads replace the tuple whole
    if index is last[0] and names == last[1] and columns == last[2]:
        return last[3]
    plan = _plan(tuple(index.tolist()), names, None if columns is None else tuple(columns))
    _LAST[0] = (index, names, None if columns is None else list(columns), plan)
    return plan


def _plan(labels: tuple[Any, ...], names: tuple[str, ...], columns: tuple[str, ...] | None
          ) -> _Plan:
    key = (labels, names, columns)
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    if len(names) == 1 and names[0] not in {str(c) for c in labels}:
        if columns is None:  # no names recorded (converted from an array): columns in order
            plan = ("matrix", None, [])
        else:
            by_name, extra = _check_names(labels, columns, "the model was converted with")
            picked = [by_name[c] for c in columns]
            plan = ("matrix", None if picked == list(labels) else picked, extra)
    else:
        by_name, extra = _check_names(labels, names, f"the model takes as inputs {list(names)}")
        plan = ("columns", [(n, by_name[n]) for n in names], extra)
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


def frame_feeds(df: Any, inputs: Sequence[Any], columns: Sequence[str] | None) -> dict[str, Any]:
    """The model's inputs (``TensorSpec``-like: name, dtype, shape) taken from ``df`` by name."""
    names = tuple(str(s.name) for s in inputs)
    kind, picked, extra = _frame_plan(df, names, columns)
    if extra:
        warnings.warn(
            f"DataFrame column(s) {extra} are not model inputs and are ignored",
            OnnxBridgeWarning, stacklevel=4,
        )
    if kind == "matrix":
        spec = inputs[0]
        frame = df if picked is None else df[picked]
        dtype = getattr(spec, "dtype", None)
        if dtype == np.dtype(object):
            return {spec.name: _strings(np.asarray(frame.to_numpy()))}
        if dtype is not None and dtype.kind == "f":
            values = frame.to_numpy()
            if values.dtype.kind == "f":  # numpy floats: NaN is NaN already; io casts safely
                return {spec.name: values}
            try:  # pandas NA (nullable dtypes) -> NaN
                return {spec.name: frame.to_numpy(dtype=dtype, na_value=np.nan)}
            except (TypeError, ValueError):  # strings: io's check names the problem
                return {spec.name: frame}
        return {spec.name: frame}
    out: dict[str, Any] = {}
    for spec, (_, label) in zip(inputs, picked, strict=True):
        col = _column(df, label, getattr(spec, "dtype", None) == np.dtype(object))
        rank = len(spec.shape) if spec.shape is not None else 2
        out[spec.name] = col.reshape(-1, 1) if rank == 2 else col
    return out
