"""Helpers shared by the tabular converters (scikit-learn, XGBoost, LightGBM, CatBoost).

Everything here works on numpy arrays, pandas objects recognised by duck typing, and
``onnx.ModelProto`` graphs; no ML framework is imported at module level.

The output convention every tabular converter follows:

- classifiers: ``label`` [N] (the class, in the source model's class type) and
  ``probabilities`` [N, n_classes], a plain float tensor (never a ZipMap sequence of maps);
- regressors and rankers: ``variable`` [N, n_targets].
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxbridge.errors import InputError, UnsupportedModelError
from onnxbridge.io import is_dataframe

if TYPE_CHECKING:
    import onnx

__all__ = [
    "CLASSIFIER_KINDS",
    "booster_frame_metadata",
    "canonical_outputs",
    "cast_output",
    "categorical_columns",
    "booster_reference",
    "check_sample_matrix",
    "conversion_lock",
    "first_mismatch",
    "frame_metadata",
    "rename_value",
    "reshape_output",
    "run_proto",
    "split_binary_probabilities",
    "take_column",
]

CLASSIFIER_KINDS = {"label": "label", "probabilities": "probabilities"}

# skl2onnx and onnxmltools keep global registries; patching or registering them is serialised.
conversion_lock = threading.RLock()


def categorical_columns(df: Any) -> list[str]:
    """Names of the DataFrame's pandas ``category`` columns."""
    return [str(c) for c in df.columns if str(df[c].dtype) == "category"]


def check_sample_matrix(sample: Any, library: str) -> tuple[int, int]:
    """(rows, features) of a 2-D numeric sample, or an InputError saying what to pass instead."""
    if is_dataframe(sample):
        shape = (len(sample), len(sample.columns))
        bad = [
            str(c)
            for c in sample.columns
            if str(sample[c].dtype) != "category"
            and np.dtype(getattr(sample[c].dtype, "numpy_dtype", np.dtype(object))).kind
            not in "biuf"
            and not _is_numeric_dtype(sample[c].dtype)
        ]
        if bad:
            raise InputError(
                f"{library} models take numeric features, but DataFrame column(s) {bad} hold"
                " strings or objects; encode them (for instance in a scikit-learn Pipeline with"
                " OneHotEncoder) or pass numbers"
            )
    else:
        from onnxbridge.io import as_array

        arr = as_array(sample)
        if arr.ndim != 2:
            raise InputError(
                f"{library} models take a 2-D sample [n_samples, n_features]; got shape"
                f" {list(arr.shape)} (use X.reshape(1, -1) for one row)"
            )
        if arr.dtype.kind not in "biuf":
            raise InputError(
                f"{library} models take numeric features; the sample has dtype {arr.dtype}."
                " Convert it with X.astype(np.float32)"
            )
        shape = (int(arr.shape[0]), int(arr.shape[1]))
    if shape[0] == 0:
        raise InputError("the sample has no rows; pass a few rows the model can predict on")
    return shape


def _is_numeric_dtype(dtype: Any) -> bool:
    try:
        return np.dtype(dtype).kind in "biuf"
    except TypeError:
        return False


def rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor everywhere in ``graph`` (inputs, outputs, node ends, value infos)."""
    if old == new:
        return
    for seq in (graph.input, graph.output, graph.value_info):
        for vi in seq:
            if vi.name == old:
                vi.name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
    for init in graph.initializer:
        if init.name == old:
            init.name = new


def _drop_zipmap(graph: onnx.GraphProto) -> None:
    """Replace each ZipMap feeding a graph output by the float tensor it zips."""
    import onnx

    outputs = {o.name: o for o in graph.output}
    for node in list(graph.node):
        if node.op_type != "ZipMap" or node.output[0] not in outputs:
            continue
        source = node.input[0]
        target = node.output[0]
        graph.node.remove(node)
        out = outputs[target]
        out.type.CopyFrom(onnx.helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, None))
        rename_value(graph, source, target)


def _set_shape(vi: onnx.ValueInfoProto, dims: Sequence[int | str | None]) -> None:
    shape = vi.type.tensor_type.shape
    shape.ClearField("dim")
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif isinstance(d, str):
            dim.dim_param = d


def canonical_outputs(
    proto: onnx.ModelProto,
    *,
    classifier: bool,
    n_outputs: int | None = None,
    input_name: str | None = None,
) -> onnx.ModelProto:
    """Give a converted tabular model the documented signature, in place.

    Classifiers: outputs ``label`` [N] and ``probabilities`` [N, n_outputs] (ZipMap removed).
    Regressors: one output ``variable`` [N, n_outputs]. ``input_name`` renames a single input.
    """
    graph = proto.graph
    if input_name is not None and len(graph.input) == 1:
        rename_value(graph, graph.input[0].name, input_name)
    _drop_zipmap(graph)
    names = [o.name for o in graph.output]
    if classifier:
        if len(names) != 2:
            raise RuntimeError(f"expected a label and a probability output, got {names}")
        wanted = ["label", "probabilities"]
    else:
        if len(names) != 1:
            raise RuntimeError(f"expected one prediction output, got {names}")
        wanted = ["variable"]
    # Two passes so that swapping names (a -> b, b -> a) cannot collide.
    for i, name in enumerate(names):
        rename_value(graph, name, f"__onnxbridge_tmp_{i}")
    for i, name in enumerate(wanted):
        rename_value(graph, f"__onnxbridge_tmp_{i}", name)
    outputs = {o.name: o for o in graph.output}
    if classifier:
        _set_shape(outputs["label"], [None])
        _set_shape(outputs["probabilities"], [None, n_outputs])
    else:
        _set_shape(outputs["variable"], [None, n_outputs])
    return proto


def _add_after_output(graph: onnx.GraphProto, name: str, op: str, extra: list[Any],
                      **attrs: Any) -> None:
    """Make output ``name`` go through one more node ``op(name_raw, *extra)``."""
    import onnx
    from onnx import numpy_helper

    raw = f"{name}__onnxbridge_raw"
    rename_value(graph, name, raw)
    for out in graph.output:  # the graph output keeps its name
        if out.name == raw:
            out.name = name
    inputs = [raw]
    for i, value in enumerate(extra):
        cname = f"{name}__onnxbridge_{op.lower()}_{i}"
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), cname))
        inputs.append(cname)
    graph.node.append(onnx.helper.make_node(op, inputs, [name], name=f"{name}_{op}", **attrs))


def reshape_output(proto: onnx.ModelProto, name: str, shape: Sequence[int]) -> None:
    """Reshape graph output ``name`` to ``shape`` (-1 for the batch axis), in place."""
    graph = proto.graph
    _add_after_output(graph, name, "Reshape", [np.asarray(list(shape), dtype=np.int64)])
    out = next(o for o in graph.output if o.name == name)
    _set_shape(out, [None if d == -1 else d for d in shape])


def take_column(proto: onnx.ModelProto, name: str, column: int) -> None:
    """Replace graph output ``name`` [N, k] by its column ``column`` [N], in place."""
    graph = proto.graph
    _add_after_output(graph, name, "Gather", [np.asarray(column, dtype=np.int64)], axis=1)
    out = next(o for o in graph.output if o.name == name)
    _set_shape(out, [None])


def cast_output(proto: onnx.ModelProto, name: str, to: int) -> None:
    """Cast graph output ``name`` to the ONNX element type ``to``, in place."""
    graph = proto.graph
    _add_after_output(graph, name, "Cast", [], to=to)
    out = next(o for o in graph.output if o.name == name)
    out.type.tensor_type.elem_type = to


def frame_metadata(df: Any) -> dict[str, str]:
    """The DataFrame's column names, in order, and dtypes, as model metadata.

    ``onnxbridge.columns`` is what ``OnnxModel.run(df)`` uses to match a DataFrame's columns
    by name, whatever their order.
    """
    import json

    return {
        "onnxbridge.columns": json.dumps([str(c) for c in df.columns]),
        "onnxbridge.column_dtypes": json.dumps([str(df[c].dtype) for c in df.columns]),
    }


def booster_frame_metadata(sample: Any, trained: Sequence[str] | None) -> dict[str, str]:
    """``frame_metadata`` for a boosting model's one matrix input ``X``.

    The graph takes the features in the order the model was trained on; when the sample's
    columns are those features (in any order), that order is the one recorded, so
    ``m.run(df)`` puts each column where the trees expect it.
    """
    import json

    if not is_dataframe(sample):
        return {}
    meta = frame_metadata(sample)
    names = [str(c) for c in sample.columns]
    if trained and sorted(map(str, trained)) == sorted(names):
        dtypes = {str(c): str(sample[c].dtype) for c in sample.columns}
        meta["onnxbridge.columns"] = json.dumps([str(t) for t in trained])
        meta["onnxbridge.column_dtypes"] = json.dumps([dtypes[str(t)] for t in trained])
    return meta


def split_binary_probabilities(p1: np.ndarray) -> np.ndarray:
    """[N] probabilities of the positive class -> [N, 2] (negative, positive)."""
    p1 = np.asarray(p1).reshape(-1)
    return np.stack([1.0 - p1, p1], axis=1)


def booster_reference(
    model: Any, raw: bool, classifier: bool, predict_raw: Callable[[Any], Any]
) -> Callable[[Any], list[Any]]:
    """The source outputs of a gradient-boosting model in the tabular convention.

    Scikit-learn style estimators answer through predict/predict_proba; a raw Booster through
    ``predict_raw(x)``, which gives values (regression) or probabilities ([N] for binary).
    """

    def reference(x: Any) -> list[Any]:
        if raw:
            pred = np.asarray(predict_raw(x))
            if not classifier:
                return [pred.reshape(len(pred), -1)]
            probs = pred if pred.ndim == 2 else split_binary_probabilities(pred)
            return [probs.argmax(axis=1), probs]
        if classifier:
            return [model.predict(x), model.predict_proba(x)]
        return [np.asarray(model.predict(x)).reshape(-1, 1)]

    return reference


def run_proto(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[Any]:
    """Run a proto once on the CPU (used to choose between float and double conversions)."""
    from onnxbridge.runtime import ort as import_ort

    ort = import_ort()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(
        proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    return list(session.run(None, feeds))


def first_mismatch(
    names: Sequence[str],
    expected: Sequence[Any],
    actual: Sequence[Any],
    kinds: dict[str, str],
) -> str | None:
    """A description of the first output that differs beyond the default tolerance, or None."""
    from onnxbridge.verify import compare_outputs

    for parity in compare_outputs(names, expected, actual, kinds=kinds):
        if not parity.passed:
            return parity.line()
    return None


@contextlib.contextmanager
def patched(obj: Any, attr: str, value: Any) -> Iterator[None]:
    """Set ``obj.attr = value`` for the duration of the block (under the conversion lock)."""
    with conversion_lock:
        old = getattr(obj, attr)
        setattr(obj, attr, value)
        try:
            yield
        finally:
            setattr(obj, attr, old)


def unsupported_categorical(
    library: str, features: Sequence[str], why: str, fix: str
) -> UnsupportedModelError:
    names = ", ".join(repr(f) for f in features)
    return UnsupportedModelError(
        f"{library} model uses categorical feature(s) {names}: {why}. {fix}"
    )



# LightGBM objectives whose prediction is the raw tree sum, as for 'regression', but whose name
# onnxmltools does not know.
_IDENTITY_LINK = ("mape", "fair", "regression_l1", "l1", "mae", "huber", "quantile")


def onnxmltools_failure(library: str, model: Any, exc: BaseException,
                        objective: str) -> Exception:
    """An error from inside onnxmltools as ours: the model, the cause in our words, the fix."""
    from onnxbridge.errors import ConversionError, OnnxBridgeError

    if isinstance(exc, OnnxBridgeError):
        return exc
    name = type(model).__name__
    lines = str(exc).strip().splitlines()
    detail = " ".join(lines[0].split())[:300] if lines else type(exc).__name__
    said = f"({type(exc).__name__}: {detail})"
    if "multi-target" in str(exc).lower():
        return UnsupportedModelError(
            f"{name} ({library}) cannot be converted: it grows multi-output trees"
            f" (multi_strategy='multi_output_tree'), which onnxmltools cannot read {said}."
            " Instead: retrain with multi_strategy='one_output_per_tree' (the default), or"
            " one model per target"
        )
    if "objective" in str(exc).lower():
        if library == "LightGBM" and objective in _IDENTITY_LINK:
            fix = (
                f"its prediction is the raw tree sum, as for 'regression', so convert a copy"
                f" relabelled as such: text = booster.model_to_string(); replace"
                f" 'objective={objective}' and '[objective: {objective}]' with"
                f" 'objective=regression' and '[objective: regression]'; then"
                f" onnxbridge.to_onnx(lightgbm.Booster(model_str=text), X), which predicts the"
                f" same values"
            )
        else:
            fix = ("retrain with an objective onnxmltools converts (regression, binary,"
                   " multiclass, poisson, gamma, tweedie, quantile, lambdarank)"
                   if library == "LightGBM" else
                   "retrain with binary:logistic, multi:softprob, reg:* or count:poisson")
        return UnsupportedModelError(
            f"{name} ({library}, objective {objective!r}) cannot be converted: onnxmltools does"
            f" not know this objective {said}. Instead: {fix}"
        )
    return ConversionError(
        f"{name} ({library}, objective {objective!r}) could not be converted: onnxmltools"
        f" stopped on it {said}. Check that it was trained on numeric features only, try a"
        " newer onnxmltools (pip install -U onnxmltools), or report the model to onnxbridge"
        " with this message"
    )


def frame_category_codes(df: Any, pandas_categorical: Sequence[Sequence[Any]] | None,
                         library: str) -> tuple[Any, dict[str, list[str]]]:
    """A DataFrame's pandas ``category`` columns as the codes a boosting library trained on
    (the position of each value in the training categories; NaN for missing or unseen), and
    those categories by column. String categories only."""
    cats = categorical_columns(df)
    if not cats:
        return df, {}
    known = list(pandas_categorical or [])
    if len(known) != len(cats):
        raise unsupported_categorical(
            library, cats, "the model does not record the categories it was trained with"
            " for these columns",
            "train on integer codes instead (df[col] = df[col].cat.codes, with"
            " categorical_feature=[...])")
    mapping: dict[str, list[str]] = {}
    codes = df.copy()
    for col, values in zip(cats, known, strict=True):
        if not all(isinstance(v, str) for v in values):
            raise unsupported_categorical(
                library, [col], "its categories are not strings, and the graph matches a"
                " category column's values as strings",
                "use string categories, or train on integer codes (df[col].cat.codes)")
        mapping[col] = [str(v) for v in values]
        position = {v: float(i) for i, v in enumerate(values)}
        codes[col] = [position.get(v, np.nan) if isinstance(v, str) else np.nan
                      for v in df[col].astype(object)]
    return codes, mapping


def per_column_inputs(proto: onnx.ModelProto, df: Any, categories: dict[str, list[str]],
                      order: Sequence[str]) -> None:
    """Replace a tree graph's one float input ``X`` [N, F] by one [N, 1] input per DataFrame
    column, named after it: numbers cast to float, ``category`` columns as strings mapped to
    their training codes (NaN when missing or unseen). In place."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    x_name = graph.input[0].name
    del graph.input[:]
    ml_opset = next((o.version for o in proto.opset_import if o.domain == "ai.onnx.ml"), 1)
    kinds = {"f": TensorProto.DOUBLE, "i": TensorProto.INT64, "u": TensorProto.INT64,
             "b": TensorProto.BOOL}
    nodes: list[Any] = []
    inits: list[Any] = []
    parts: list[str] = []
    for i, col in enumerate(order):
        tag = f"__onnxbridge_col{i}"
        if col in categories:
            graph.input.append(helper.make_tensor_value_info(col, TensorProto.STRING,
                                                             [None, 1]))
            inits.append(numpy_helper.from_array(np.array(0.0, np.float32), f"{tag}_zero"))
            if ml_opset >= 2:  # ai.onnx.ml LabelEncoder: string -> its training code, else -1
                encode = helper.make_node(
                    "LabelEncoder", [col], [f"{tag}_int"], domain="ai.onnx.ml",
                    keys_strings=categories[col],
                    values_int64s=list(range(len(categories[col]))), default_int64=-1)
            else:  # version 1 maps a string to its position in classes_strings
                encode = helper.make_node(
                    "LabelEncoder", [col], [f"{tag}_int"], domain="ai.onnx.ml",
                    classes_strings=categories[col], default_int64=-1)
            nodes += [  # code + sqrt(min(code, 0)): the code, or NaN where it is -1
                encode,  # (no Where: onnxmltools' graphs may be at opset 8)
                helper.make_node("Cast", [f"{tag}_int"], [f"{tag}_code"], to=TensorProto.FLOAT),
                helper.make_node("Min", [f"{tag}_code", f"{tag}_zero"], [f"{tag}_neg"]),
                helper.make_node("Sqrt", [f"{tag}_neg"], [f"{tag}_nan_or_0"]),
                helper.make_node("Add", [f"{tag}_code", f"{tag}_nan_or_0"], [tag]),
            ]
        else:
            kind = np.dtype(getattr(df[col].dtype, "numpy_dtype", df[col].dtype)).kind
            graph.input.append(helper.make_tensor_value_info(
                col, kinds.get(kind, TensorProto.DOUBLE), [None, 1]))
            nodes.append(helper.make_node("Cast", [col], [tag], to=TensorProto.FLOAT))
        parts.append(tag)
    nodes.append(helper.make_node("Concat", parts, [x_name], axis=1))
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old)
    graph.initializer.extend(inits)
