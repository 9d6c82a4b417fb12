"""scikit-learn estimators, Pipelines, ColumnTransformers and FeatureUnions, through skl2onnx.

Inputs: a numpy sample gives one graph input ``X`` [N, n_features]; a pandas DataFrame gives one
input per column, named after the column, [N, 1] each (so string and numeric columns keep their
own types); ``OnnxModel.run(df)`` splits a DataFrame by column name the same way.

Outputs: classifiers ``label`` [N] and ``probabilities`` [N, n_classes] (a float tensor, no
ZipMap); regressors ``variable`` [N, n_targets]; transformers ``variable``; clusterers and
outlier detectors ``label`` and ``scores``.

XGBoost, LightGBM and CatBoost estimators inside a Pipeline are converted by registering their
converters with skl2onnx on first use, so users register nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from onnxbridge.registry import ConversionResult, ConverterSpec, ConvertOptions


def has_internal(key: str) -> bool:
    """Whether skl2onnx still has an internal onnxbridge patches (see _sklearn_ops)."""
    from onnxbridge.plugins._sklearn_ops import has_internal as probe

    return probe(key)

SPECS = [
    ConverterSpec(
        name="sklearn",
        classes=("sklearn.base.BaseEstimator",),
        converter="onnxbridge.plugins.sklearn:convert",
        framework="sklearn",
        extra="sklearn",
        description="scikit-learn estimators, Pipelines, ColumnTransformers (skl2onnx)",
    )
]

_DOUBLE_NOTE = (
    "converted in double precision (double=True): float32 arithmetic or thresholds flipped"
    " decisions on this sample"
)


# -- inputs --------------------------------------------------------------------------------------
def _column_kind(dtype: Any) -> str:
    """'float', 'int', 'bool' or 'string' for a numpy or pandas column dtype."""
    text = str(dtype)
    if text in {"category", "string", "str"} or text.startswith("string"):
        return "string"
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        numpy_dtype = getattr(dtype, "numpy_dtype", None)  # pandas nullable Int64, Float64
        kind = np.dtype(numpy_dtype).kind if numpy_dtype is not None else "O"
    return {"f": "float", "i": "int", "u": "int", "b": "bool"}.get(kind, "string")


def _tensor_type(kind: str, double: bool, width: int | None) -> Any:
    from skl2onnx.common.data_types import (
        BooleanTensorType,
        DoubleTensorType,
        FloatTensorType,
        Int64TensorType,
        StringTensorType,
    )

    shape = [None, width]
    if kind == "float":
        return DoubleTensorType(shape) if double else FloatTensorType(shape)
    if kind == "int":
        return Int64TensorType(shape)
    if kind == "bool":
        return BooleanTensorType(shape)
    return StringTensorType(shape)


def _needs_named_columns(model: Any) -> bool:
    """True when a ColumnTransformer in the model picks columns by name (or by a selector)."""
    for est in _walk(model):
        if type(est).__name__ != "ColumnTransformer":
            continue
        for item in getattr(est, "transformers", []):
            cols = item[2] if isinstance(item, tuple) and len(item) >= 3 else None
            if callable(cols) or isinstance(cols, str):
                return True
            if isinstance(cols, (list, tuple)) and any(isinstance(c, str) for c in cols):
                return True
    return False


def frame_layout(model: Any, sample: Any) -> str:
    """'matrix' (one [N, n_columns] input) or 'columns' (one [N, 1] input per column).

    A DataFrame whose columns are all numeric (numpy or pandas nullable) gives one matrix input, unless
    a ColumnTransformer inside the model selects columns by name; anything else (strings,
    categories, pandas extension dtypes, name-based selection) gives one input per column.
    """
    from onnxbridge.io import is_dataframe

    if not is_dataframe(sample):
        return "matrix"
    numeric = all(str(sample[c].dtype) != "category"
                  and _column_kind(sample[c].dtype) in {"float", "int", "bool"}
                  for c in sample.columns)
    return "matrix" if numeric and not _needs_named_columns(model) else "columns"


def _matrix_kind(sample: Any) -> str:
    """One element kind for a numeric DataFrame (numpy or pandas nullable dtypes)."""
    kinds = {_column_kind(sample[c].dtype) for c in sample.columns}
    if len(kinds) == 1:
        return kinds.pop()
    return "float"


def initial_types(sample: Any, double: bool, layout: str = "columns") -> list[tuple[str, Any]]:
    """skl2onnx input declarations read off the sample (see ``frame_layout``)."""
    from onnxbridge.errors import InputError
    from onnxbridge.io import as_array, is_dataframe

    if is_dataframe(sample):
        names = [str(c) for c in sample.columns]
        if len(set(names)) != len(names):
            raise InputError(
                f"the DataFrame has duplicate column names {names}; each column becomes a graph"
                " input named after it, so rename the duplicates"
            )
        if not names:
            raise InputError("the DataFrame has no columns; pass the features the model uses")
        if layout == "matrix":
            return [("X", _tensor_type(_matrix_kind(sample), double, len(names)))]
        return [
            (str(col), _tensor_type(_column_kind(sample[col].dtype), double, 1))
            for col in sample.columns
        ]
    arr = as_array(sample)
    if arr.ndim != 2:
        raise InputError(
            f"scikit-learn models take a 2-D sample [n_samples, n_features]; got shape"
            f" {list(arr.shape)} (use X.reshape(-1, 1) for one feature, X.reshape(1, -1) for"
            " one row)"
        )
    if arr.dtype.kind not in "biufOUS":
        raise InputError(f"cannot describe a sample of dtype {arr.dtype} to skl2onnx")
    kind = _column_kind(arr.dtype)
    return [("X", _tensor_type(kind, double, arr.shape[1]))]


def _restore_input_names(proto: Any, types: list[tuple[str, Any]]) -> None:
    """skl2onnx turns a column name such as 'mean radius' into 'mean_radius'; the graph's
    inputs get the DataFrame's own names back, so ``m.run(df)`` finds them by name."""
    from onnxbridge.plugins._tabular import rename_value

    graph = proto.graph
    if len(graph.input) != len(types):
        return
    current = [i.name for i in graph.input]
    for i, name in enumerate(current):
        rename_value(graph, name, f"__onnxbridge_in_{i}")
    for i, (name, _) in enumerate(types):
        rename_value(graph, f"__onnxbridge_in_{i}", name)


def _has_float64(sample: Any) -> bool:
    from onnxbridge.io import as_array, is_dataframe

    if is_dataframe(sample):
        return any(str(sample[c].dtype) == "float64" for c in sample.columns)
    return as_array(sample).dtype == np.float64


# -- estimators inside the model -----------------------------------------------------------------
def _walk(est: Any) -> Iterator[Any]:
    """The estimator and every estimator nested in it (Pipeline steps, transformers, ...)."""
    yield est
    seen: set[int] = {id(est)}
    stack = [est]
    while stack:
        node = stack.pop()
        children: list[Any] = []
        for attr in ("steps", "transformer_list", "transformers_", "transformers",
                     "estimators_", "estimators"):
            value = getattr(node, attr, None)
            if isinstance(value, list):
                for item in value:
                    children.append(item[1] if isinstance(item, tuple) and len(item) >= 2
                                    else item)
        for attr in ("estimator", "base_estimator", "final_estimator_", "regressor_",
                     "estimator_"):
            child = getattr(node, attr, None)
            if child is not None and hasattr(child, "get_params"):
                children.append(child)
        for child in children:
            if hasattr(child, "get_params") and id(child) not in seen:
                seen.add(id(child))
                stack.append(child)
                yield child


def _check_categorical(model: Any) -> None:
    from onnxbridge.errors import UnsupportedModelError

    for est in _walk(model):
        mask = getattr(est, "is_categorical_", None)
        if mask is not None and np.any(mask):
            idx = [int(i) for i in np.flatnonzero(mask)]
            names = getattr(est, "feature_names_in_", None)
            feats = [str(names[i]) for i in idx] if names is not None else [str(i) for i in idx]
            raise UnsupportedModelError(
                f"{type(est).__name__} uses native categorical feature(s) {feats}, which"
                " skl2onnx cannot represent. Fit it with categorical_features=None and encode"
                " those columns in the Pipeline instead (OneHotEncoder or OrdinalEncoder in a"
                " ColumnTransformer), then convert the Pipeline"
            )


# -- skl2onnx workarounds ------------------------------------------------------------------------
def _int_missing_tracks(add_node: Callable[..., Any]) -> Callable[..., Any]:
    """skl2onnx passes HistGradientBoosting's missing_go_to_left as a bool (or numpy uint8);
    onnx >= 1.17 refuses bools in an INTS attribute, so pass plain ints."""

    def add_node_with_int_missing(*args: Any, **kwargs: Any) -> Any:
        if "nodes_missing_value_tracks_true" in kwargs:
            kwargs["nodes_missing_value_tracks_true"] = int(
                kwargs["nodes_missing_value_tracks_true"]
            )
        return add_node(*args, **kwargs)

    return add_node_with_int_missing


_TREE_OPS = {"TreeEnsembleClassifier", "TreeEnsembleRegressor"}
_AS_TENSOR = ("nodes_values", "base_values", "class_weights", "target_weights", "nodes_hitrates")


def _double_tree_node(add_node: Callable[..., Any]) -> Callable[..., Any]:
    """Keep tree thresholds and leaf values in float64 (``*_as_tensor``, ai.onnx.ml opset 3).

    skl2onnx writes them as FLOATS attributes even for a double input, which rounds each
    threshold to float32 and flips decisions near it.
    """

    from onnx import numpy_helper

    def add_double_tree_node(self: Any, op_type: str, inputs: Any, outputs: Any,
                             op_domain: str = "", op_version: int | None = None,
                             **attrs: Any) -> Any:
        first = inputs if isinstance(inputs, str) else inputs[0]
        float32_inputs: set[str] = getattr(self, "_onnxbridge_float32_inputs", set())
        if (op_type in _TREE_OPS and op_domain == "ai.onnx.ml" and "nodes_values" in attrs
                and first not in float32_inputs):
            for key in _AS_TENSOR:
                values = attrs.pop(key, None)
                if values is not None and len(values):
                    attrs[f"{key}_as_tensor"] = numpy_helper.from_array(
                        np.asarray(values, dtype=np.float64), name=f"{key}_as_tensor")
            op_version = max(op_version or 0, 3)
        return add_node(self, op_type, inputs, outputs, op_domain=op_domain,
                        op_version=op_version, **attrs)

    return add_double_tree_node


def _float_tree_outputs(proto: Any) -> None:
    """onnxruntime's tree ensembles give float scores whatever their input; skl2onnx declares
    the graph output double when the input is double."""
    import onnx

    produced = {out for n in proto.graph.node if n.op_type in _TREE_OPS
                for out in n.output[1 if n.op_type == "TreeEnsembleClassifier" else 0:]}
    for out in proto.graph.output:
        if out.name in produced and out.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE:
            out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


def _float32_features(convert_fct: Callable[..., Any]) -> Callable[..., Any]:
    """XGBoost casts features to float32 before comparing them with its float32 thresholds.

    In a double-precision pipeline the ONNX graph must do the same, or a value a hair above a
    threshold goes the other way.
    """

    def convert_in_float32(scope: Any, operator: Any, container: Any) -> None:
        from onnx import TensorProto
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

        source = operator.inputs[0]
        if not isinstance(source.type, DoubleTensorType):
            convert_fct(scope, operator, container)
            return
        cast = scope.declare_local_variable("features_float32",
                                            FloatTensorType(source.type.shape))
        container.add_node("Cast", [source.full_name], [cast.full_name], to=TensorProto.FLOAT,
                           name=scope.get_unique_operator_name("Cast"))
        # Tree nodes reading this float input keep float thresholds (see _double_tree_node).
        if not hasattr(container, "_onnxbridge_float32_inputs"):
            container._onnxbridge_float32_inputs = set()
        container._onnxbridge_float32_inputs.add(cast.full_name)
        list.__setitem__(operator.inputs, 0, cast)  # the converter only reads name and type
        try:
            convert_fct(scope, operator, container)
        finally:
            list.__setitem__(operator.inputs, 0, source)

    return convert_in_float32


def _register_gbdt_converters() -> None:
    """Teach skl2onnx the boosting libraries' estimators that are already imported.

    A library the user has not imported cannot be in their model, so it is not imported here.
    Registering twice is harmless (skl2onnx overwrites the entry).
    """
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    if "xgboost" in sys.modules:
        import xgboost
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost

        update_registered_converter(
            xgboost.XGBClassifier, "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes, _float32_features(convert_xgboost),
            options=classifier_options,
        )
        update_registered_converter(
            xgboost.XGBRegressor, "XGBoostXGBRegressor",
            calculate_linear_regressor_output_shapes, _float32_features(convert_xgboost),
        )
    if "lightgbm" in sys.modules:
        import lightgbm
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        update_registered_converter(
            lightgbm.LGBMClassifier, "LightGbmLGBMClassifier",
            calculate_linear_classifier_output_shapes, convert_lightgbm,
            options=classifier_options,
        )
        for cls in (lightgbm.LGBMRegressor, lightgbm.LGBMRanker):
            update_registered_converter(
                cls, f"LightGbm{cls.__name__}",
                calculate_linear_regressor_output_shapes, convert_lightgbm,
            )
    if "catboost" in sys.modules and has_internal("classifier_list"):
        import catboost
        from skl2onnx._supported_operators import sklearn_classifier_list

        from onnxbridge.plugins.catboost import skl2onnx_catboost_converter

        # CatBoostClassifier is no sklearn ClassifierMixin; listing it makes skl2onnx's
        # parser declare a label and a probability output for it.
        if catboost.CatBoostClassifier not in sklearn_classifier_list:
            sklearn_classifier_list.append(catboost.CatBoostClassifier)
        update_registered_converter(
            catboost.CatBoostClassifier, "CatBoostCatBoostClassifier",
            calculate_linear_classifier_output_shapes, skl2onnx_catboost_converter,
            options=classifier_options,
        )
        update_registered_converter(
            catboost.CatBoostRegressor, "CatBoostCatBoostRegressor",
            calculate_linear_regressor_output_shapes, skl2onnx_catboost_converter,
        )


def _allow_zipmap_option(model: Any, stack: Any) -> None:
    """skl2onnx's parser asks a Pipeline's final classifier for the zipmap option, then
    refuses it for converters that do not list it (LinearSVC: "Option 'zipmap' not in ...").
    Listing it for the duration of the conversion lets such pipelines convert."""
    if not (has_internal("operator_name_map") and has_internal("converter_pool")):
        return
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from skl2onnx.common._registration import _converter_pool
    from sklearn.base import is_classifier

    from onnxbridge.plugins._tabular import patched

    for est in _walk(model):
        if not is_classifier(est):
            continue
        conv = _converter_pool.get(sklearn_operator_name_map.get(type(est), ""))
        allowed = conv.get_allowed_options() if conv is not None else None
        if isinstance(allowed, dict) and "zipmap" not in allowed:
            stack.enter_context(patched(conv, "_options",
                                        {**allowed, "zipmap": [True, False, "columns"]}))


def _skl2onnx_convert(model: Any, sample: Any, double: bool, options: ConvertOptions,
                      classifier: bool, layout: str) -> Any:
    import contextlib
    import functools

    from skl2onnx import get_latest_tested_opset_version
    from skl2onnx import to_onnx as skl_to_onnx

    from onnxbridge.plugins._sklearn_ops import register_own_converters
    from onnxbridge.plugins._tabular import conversion_lock, patched

    with conversion_lock, contextlib.ExitStack() as stack:
        _register_gbdt_converters()
        register_own_converters()
        if has_internal("tree_add_node"):
            import skl2onnx.common.tree_ensemble as tree_ensemble

            stack.enter_context(
                patched(tree_ensemble, "add_node", _int_missing_tracks(tree_ensemble.add_node))
            )
        if double and has_internal("container_add_node"):
            from skl2onnx.common._container import ModelComponentContainer

            stack.enter_context(patched(ModelComponentContainer, "add_node",
                                        _double_tree_node(ModelComponentContainer.add_node)))
        if double and has_internal("converter_pool") and has_internal("registration"):
            from skl2onnx.common._registration import _converter_pool

            # Its classifier converter rounds thresholds to float32 below ai.onnx.ml opset 3.
            hgb = _converter_pool.get("SklearnHistGradientBoostingClassifier")
            if hgb is not None:
                stack.enter_context(patched(hgb, "_fct", functools.partial(hgb._fct,
                                                                           op_version=3)))
        _allow_zipmap_option(model, stack)
        # onnxmltools would pick ai.onnx.ml 5 inside a pipeline, which skl2onnx refuses.
        # The newest opset both skl2onnx (as tested) and the installed onnxruntime support.
        target = {"": options.target_opset(get_latest_tested_opset_version()), "ai.onnx.ml": 3}
        types = initial_types(sample, double, layout)
        try:
            proto = skl_to_onnx(model, initial_types=types, target_opset=target,
                                options={"zipmap": False} if classifier else None)
        except NameError as exc:  # a classifier without probabilities has no zipmap option
            if "zipmap" not in str(exc):
                raise
            proto = skl_to_onnx(model, initial_types=types, target_opset=target)
    _restore_input_names(proto, types)
    if double:
        _float_tree_outputs(proto)
    return proto


# -- errors --------------------------------------------------------------------------------------
# Estimators no converter handles: why, and what to do instead.
_NO_INFERENCE = (
    "it has no predict or transform for new rows (only fit_predict / fit_transform on its"
    " training data), so there is no function to put in a graph"
)
REFUSALS: dict[str, tuple[str, str]] = {
    **{name: (_NO_INFERENCE, "fit it, then train a classifier (for instance"
              " KNeighborsClassifier) on its labels or embedding and convert that")
       for name in ("AgglomerativeClustering", "DBSCAN", "HDBSCAN", "OPTICS",
                    "SpectralClustering", "SpectralBiclustering", "SpectralCoclustering",
                    "SpectralEmbedding", "TSNE", "MDS", "ClassicalMDS", "LocalOutlierFactor")},
    **{name: ("its transform solves an optimisation problem per row (iterations to"
              " convergence), which a fixed graph does not reproduce",
              "use PCA or TruncatedSVD for a linear projection, or compute it outside the graph")
       for name in ("NMF", "MiniBatchNMF", "LatentDirichletAllocation", "DictionaryLearning",
                    "MiniBatchDictionaryLearning", "SparseCoder")},
    **{name: ("it takes text, dicts or images rather than a numeric matrix",
              "convert the estimator after it (the numeric part) and keep this step in Python")
       for name in ("HashingVectorizer", "FeatureHasher", "PatchExtractor",
                    "MultiLabelBinarizer", "DictVectorizer")},
    "Isomap": ("its transform runs shortest paths over a neighbour graph",
               "use KernelPCA or PCA"),
    "LocallyLinearEmbedding": ("its transform solves a small least-squares problem per row",
                               "use KernelPCA or PCA"),
    "RadiusNeighborsTransformer": ("it returns a sparse neighbour graph of varying size per row",
                                   "use KNeighborsTransformer (a fixed number of neighbours)"),
    "RandomTreesEmbedding": ("it returns a sparse one-hot leaf matrix",
                             "use the forest's apply() outside the graph, or RandomForest*"),
    **{name: ("each of its estimators takes the previous targets' predictions as extra"
              " features, a chain onnxbridge does not build",
              "convert each fitted estimators_[i] and chain them in Python"
              + (", or use MultiOutputRegressor (independent targets), which converts"
                 if name == "RegressorChain" else ""))
       for name in ("ClassifierChain", "RegressorChain")},
    "MultiOutputClassifier": ("its predict_proba is a list of one probability matrix per"
                              " target, which has no single-output form here",
                              "convert each fitted estimators_[i] (one classifier per target)"),
}


def _named_steps(model: Any) -> dict[int, str]:
    """id(estimator) -> its path in the model ('columntransformer/cat/simpleimputer')."""
    paths: dict[int, str] = {}

    def visit(est: Any, path: str) -> None:
        if id(est) in paths or not hasattr(est, "get_params"):
            return
        paths[id(est)] = path
        for attr in ("steps", "transformer_list", "transformers_", "transformers", "estimators"):
            for item in getattr(est, attr, None) or []:
                if isinstance(item, tuple) and len(item) >= 2:
                    visit(item[1], f"{path}/{item[0]}" if path else str(item[0]))
        for attr in ("estimators_", ):
            for i, item in enumerate(getattr(est, attr, None) or []):
                if not isinstance(item, (list, tuple)):
                    visit(item, f"{path}/{attr}[{i}]" if path else f"{attr}[{i}]")
        for attr in ("estimator", "final_estimator_", "regressor_", "estimator_"):
            child = getattr(est, attr, None)
            if child is not None:
                visit(child, f"{path}/{attr}" if path else attr)

    visit(model, "")
    return paths


def _failing_step(model: Any, exc: BaseException) -> Any:
    """The estimator skl2onnx was converting when ``exc`` was raised, if the traceback says."""
    tb = exc.__traceback__
    found = None
    while tb is not None:
        operator = tb.tb_frame.f_locals.get("operator")
        raw = getattr(operator, "raw_operator", None)
        if raw is not None and hasattr(raw, "get_params"):
            found = raw
        tb = tb.tb_next
    return found


def _explain_failure(model: Any, exc: Exception) -> Exception:
    """skl2onnx's error as ours: which step, why, and what to do."""
    import re

    from onnxbridge.errors import ConversionError, OnnxBridgeError, UnsupportedModelError

    if isinstance(exc, OnnxBridgeError):
        return exc
    name = type(exc).__name__
    if name == "NotFittedError":
        return ConversionError(
            f"{type(model).__name__} is not fitted; call fit() before to_onnx()"
        )
    step = _failing_step(model, exc)
    if name in {"MissingShapeCalculator", "MissingConverter"}:
        found = re.search(r"<class '([^']+)'>", str(exc))
        leaf = found.group(1).rsplit(".", 1)[-1] if found else type(model).__name__
        step = next((e for e in _walk(model) if type(e).__name__ == leaf), step)
    else:
        leaf = type(step).__name__ if step is not None else type(model).__name__
    path = _named_steps(model).get(id(step), "") if step is not None else ""
    where = f"step {path!r} ({leaf})" if path else leaf
    if name in {"MissingShapeCalculator", "MissingConverter"} or leaf in REFUSALS:
        why, fix = REFUSALS.get(leaf, (
            "neither skl2onnx nor onnxbridge has a converter for it",
            "replace that step with a supported estimator (see docs/coverage.md), or register a"
            " converter with skl2onnx.update_registered_converter before calling to_onnx"))
        return UnsupportedModelError(f"{where} cannot be converted: {why}. Instead: {fix}")
    detail = " ".join(str(exc).split())[:300] or name
    return ConversionError(
        f"{where} could not be converted to ONNX: skl2onnx stopped on it ({name}: {detail})."
        " Replace or re-configure that step (docs/coverage.md lists what converts), convert the"
        " rest of the model without it, or pass verify=False only if you will check it yourself"
    )


def _graph_failure(model: Any, exc: Exception) -> Exception:
    from onnxbridge.errors import ConversionError, OnnxBridgeError

    if isinstance(exc, OnnxBridgeError):
        return exc
    detail = " ".join(str(exc).split())[:300]
    hint = ""
    if any("RadiusNeighbors" in type(e).__name__ for e in _walk(model)):
        hint = (" RadiusNeighbors* graphs index -1 when a row has no training point within the"
                " radius; use KNeighborsClassifier/KNeighborsRegressor instead.")
    return ConversionError(
        f"the ONNX graph built for {type(model).__name__} fails in onnxruntime on the sample"
        f" ({type(exc).__name__}: {detail}).{hint} Replace the step named in the message, or"
        " report the model to onnxbridge"
    )


def _check_inference(model: Any) -> None:
    """Refuse, with the reason and the fix, estimators that cannot predict new rows."""
    from onnxbridge.errors import UnsupportedModelError

    for est in _walk(model):
        if type(est).__name__ == "MultiOutputClassifier":
            why, fix = REFUSALS["MultiOutputClassifier"]
            raise UnsupportedModelError(f"MultiOutputClassifier cannot be converted: {why}."
                                        f" Instead: {fix}")
        if type(est).__name__ == "LocalOutlierFactor" and not getattr(est, "novelty", True):
            raise UnsupportedModelError(
                "LocalOutlierFactor(novelty=False) cannot be converted: it scores only its own"
                " training rows (fit_predict), not new ones. Refit with novelty=True, which"
                " gives predict and decision_function for new rows, and convert that"
            )


# -- outputs: scikit-learn's own shapes ----------------------------------------------------------
def _proba_or_scores(model: Any) -> str | None:
    """Which second output a classifier gives: 'probabilities', 'scores' or None."""
    if hasattr(model, "predict_proba"):
        return "probabilities"
    if hasattr(model, "decision_function"):
        return "scores"
    return None


def _source_output(model: Any, name: str, x: Any) -> np.ndarray:
    """What scikit-learn itself gives for one output name, in its own shape."""
    from sklearn.base import is_classifier, is_regressor

    if name == "label":
        label = np.asarray(model.predict(x))
        # one target: [N], whatever the step returns (CatBoost in a Pipeline gives [N, 1])
        return label.reshape(-1) if label.ndim == 2 and label.shape[1] == 1 else label
    if name in {"distances", "indices"}:  # NearestNeighbors: kneighbors, alone or last step
        if not hasattr(model, "kneighbors") and hasattr(model, "steps"):
            x, model = model[:-1].transform(x), model.steps[-1][1]
        return _kneighbors_by_index(model, x)[0 if name == "distances" else 1]
    if name == "probabilities":
        if hasattr(model, "predict_proba"):
            return np.asarray(model.predict_proba(x))
        return np.asarray(model.decision_function(x))
    if name == "scores":
        if hasattr(model, "decision_function"):
            return np.asarray(model.decision_function(x))
        if hasattr(model, "predict_proba"):
            return np.asarray(model.predict_proba(x))
        return np.asarray(model.transform(x))
    from sklearn.feature_selection import SelectorMixin

    if isinstance(model, SelectorMixin):  # RFE(LogisticRegression) predicts, but converts as
        return np.asarray(model.transform(x))  # the feature selection it is
    if hasattr(model, "predict") and (is_regressor(model) or is_classifier(model)
                                      or not hasattr(model, "transform")):
        pred = np.asarray(model.predict(x))
        # Regressors give [N, n_targets] (the documented tabular convention).
        return pred.reshape(len(pred), -1) if is_regressor(model) and pred.ndim == 1 else pred
    if not hasattr(model, "transform") and hasattr(model, "mahalanobis"):
        return np.asarray(model.mahalanobis(x))  # covariance estimators
    if not hasattr(model, "transform") and hasattr(model, "score_samples"):
        return np.asarray(model.score_samples(x))  # KernelDensity
    y = model.transform(x)
    y = np.asarray(y.toarray() if hasattr(y, "toarray") else y)
    if y.ndim == 1 and len(x) == 1 and y.size > 1:  # SparsePCA drops the batch axis of one row
        y = y.reshape(1, -1)
    return y


def _kneighbors_by_index(model: Any, x: Any) -> tuple[np.ndarray, np.ndarray]:
    """kneighbors(x) with exact ties in distance broken by the lower training index (the
    graph's rule; scikit-learn's choice among ties depends on its search tree). Rows whose
    k-th and (k+1)-th neighbours tie get their tied candidates from radius_neighbors."""
    k = int(model.n_neighbors)
    n_fit = int(model.n_samples_fit_)
    dist, ind = (np.asarray(a) for a in model.kneighbors(x, n_neighbors=min(k + 1, n_fit)))
    if dist.shape[1] > k:
        rows = np.flatnonzero(dist[:, k] == dist[:, k - 1])
        dist, ind = dist[:, :k].copy(), ind[:, :k].copy()
        xs = np.asarray(x)
        for r in rows:
            reach = dist[r, -1] * (1 + 1e-9) + 1e-300  # the search's own rounding
            rd, ri = model.radius_neighbors(xs[r:r + 1], radius=reach, sort_results=True)
            rd, ri = np.asarray(rd[0]), np.asarray(ri[0])
            order = np.lexsort((ri, rd))[:k]
            dist[r], ind[r] = rd[order], ri[order]
    order = np.lexsort((ind, dist), axis=1)
    return dist, np.take_along_axis(ind, order, axis=1)


def _reference_for(model: Any, output_names: list[str]) -> Callable[[Any], list[Any]]:
    def reference(x: Any) -> list[Any]:
        return [_source_output(model, name, x) for name in output_names]

    return reference


def _check_feature_count(model: Any, sample: Any) -> None:
    """An InputError in our words when the sample's columns are not the number fitted on
    (instead of scikit-learn's ValueError from inside verification)."""
    from onnxbridge.errors import InputError

    expected = getattr(model, "n_features_in_", None)
    shape = getattr(sample, "shape", None)
    if (isinstance(expected, int) and expected > 0 and shape is not None and len(shape) == 2
            and shape[1] != expected):
        raise InputError(
            f"the sample has {shape[1]} features (columns) but {type(model).__name__} was"
            f" fitted on {expected}; pass rows shaped like the training data, [n_rows, {expected}]"
        )


def _quiet_feature_names(reference: Callable[[Any], list[Any]]) -> Callable[[Any], list[Any]]:
    """The reference without scikit-learn's "X does not have valid feature names" warning, which
    it repeats on each of verification's calls when the sample is an array and the model was
    fitted on a DataFrame (or the other way round): the sample is used as the user gave it."""
    import warnings

    def quiet(x: Any) -> list[Any]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*feature names", category=UserWarning)
            return reference(x)

    return quiet


def _kinds(names: list[str], classifier: bool) -> dict[str, str]:
    kinds = {"label": "label"} if "label" in names else {}
    if classifier and "probabilities" in names:
        kinds["probabilities"] = "probabilities"
    return kinds


def _feeds(proto: Any, sample: Any) -> dict[str, np.ndarray]:
    from onnxbridge.io import to_feeds
    from onnxbridge.model import OnnxModel

    return to_feeds(OnnxModel(proto).inputs, (sample,), {})


def _match_source_shapes(proto: Any, model: Any, sample: Any) -> None:
    """Name and shape the outputs as scikit-learn gives them, in place.

    A classifier without predict_proba gives ``scores`` (its decision_function), not
    ``probabilities``. skl2onnx's label of some models is [1, N] (QuadraticDiscriminantAnalysis)
    and its binary scores [N, 1] or [N, 2] where scikit-learn gives [N]; each is reshaped (or
    the matching column taken) once, here, so the exact check in verification compares like
    with like.
    """
    from sklearn.base import is_classifier

    from onnxbridge.plugins._tabular import (
        cast_output,
        rename_value,
        reshape_output,
        run_proto,
        take_column,
    )

    names = [o.name for o in proto.graph.output]
    if not is_classifier(model) and "scores" in names and not any(
            hasattr(model, m) for m in ("decision_function", "predict_proba", "transform")):
        # a clusterer that only predicts (MeanShift): no scores in scikit-learn, none here
        proto.graph.output.remove(next(o for o in proto.graph.output if o.name == "scores"))
        names = [o.name for o in proto.graph.output]
    if is_classifier(model) and "probabilities" in names and _proba_or_scores(model) is None:
        # hard voting: scikit-learn gives labels only
        proto.graph.output.remove(next(o for o in proto.graph.output
                                       if o.name == "probabilities"))
        names = [o.name for o in proto.graph.output]
    if is_classifier(model) and "probabilities" in names and \
            _proba_or_scores(model) == "scores":
        rename_value(proto.graph, "probabilities", "scores")
        names = [o.name for o in proto.graph.output]
    try:
        got = run_proto(proto, _feeds(proto, sample))
        import copy
        import warnings

        probe = copy.deepcopy(model)  # some predict() calls cache state (KNN)
        with warnings.catch_warnings():  # the sample as the user gave it (see _quiet_feature_names)
            warnings.filterwarnings("ignore", message=r".*feature names", category=UserWarning)
            want = [_source_output(probe, name, sample) for name in names]
    except Exception:  # verification reports what is wrong, with its context
        return
    n = len(want[0]) if want and want[0].ndim else None
    for name, exp, act in zip(names, want, got, strict=False):
        act = np.asarray(act)
        if exp.dtype.kind == "b" and act.dtype.kind in "iu":  # boolean classes come back as 0/1
            import onnx

            cast_output(proto, name, onnx.TensorProto.BOOL)
        if exp.shape == act.shape or n is None:
            continue
        if exp.ndim == 1 and act.ndim == 2 and act.shape[1] == 2 and act.shape[0] == len(exp) \
                and np.issubdtype(exp.dtype, np.number):
            # binary decision function: skl2onnx gives [-d, d] or [d, -d]; keep the column
            # that is scikit-learn's d
            err = [float(np.abs(act[:, c] - exp).max()) for c in (0, 1)]
            take_column(proto, name, int(np.argmin(err)))
        elif exp.size == act.size and [d for d in exp.shape if d != 1] == \
                [d for d in act.shape if d != 1]:
            reshape_output(proto, name, [-1 if i == 0 else d for i, d in enumerate(exp.shape)])


# -- entry point ---------------------------------------------------------------------------------
def convert(model: Any, sample: Any, options: ConvertOptions) -> ConversionResult:
    """Convert a fitted scikit-learn estimator with skl2onnx (and onnxbridge's own converters).

    Option ``double``: True converts with float64 inputs and thresholds; False keeps float32;
    None (default) tries float32 and switches to float64 when float32 flips a decision on the
    sample (a note in the parity report says so).
    """
    import sklearn
    from sklearn.base import is_classifier
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    from onnxbridge.errors import ConversionError
    from onnxbridge.io import is_dataframe
    from onnxbridge.plugins._tabular import first_mismatch, frame_metadata, run_proto

    double_opt = options.pop("double", None)
    if double_opt not in (None, True, False):
        raise ValueError(f"double must be True, False or None (automatic), got {double_opt!r}")
    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise ConversionError(
            f"{type(model).__name__} is not fitted; call fit() before to_onnx()"
        ) from exc
    _check_categorical(model)
    _check_feature_count(model, sample)
    _check_inference(model)
    classifier = is_classifier(model)
    layout = frame_layout(model, sample)
    notes: list[str] = []
    double = bool(double_opt)

    def build(double: bool) -> Any:
        try:
            proto = _skl2onnx_convert(model, sample, double, options, classifier, layout)
        except Exception as exc:
            better = _explain_failure(model, exc)
            if better is exc:
                raise
            raise better from exc
        from onnxbridge.plugins._sklearn_ops import fix_distance_weights, fix_one_class_trees

        fix_distance_weights(proto)  # skl2onnx's weights="distance" neighbour graphs
        fix_one_class_trees(proto)  # forests trained on one class (before anything runs it)
        _match_source_shapes(proto, model, sample)
        return proto

    proto = build(double)
    names = [o.name for o in proto.graph.output]
    reference = _quiet_feature_names(_reference_for(model, names))
    kinds = _kinds(names, classifier)
    if double_opt is None and _has_float64(sample):
        import copy

        probe = _quiet_feature_names(_reference_for(copy.deepcopy(model), names))
        expected = probe(sample)
        try:
            got = run_proto(proto, _feeds(proto, sample))
        except Exception as exc:
            raise _graph_failure(model, exc) from exc
        mismatch = first_mismatch(names, expected, got, kinds)
        if mismatch is not None:
            try:
                candidate = build(True)
                got = run_proto(candidate, _feeds(candidate, sample))
            except Exception as exc:  # keep the float model; verification reports the mismatch
                notes.append(f"float32 conversion mismatches ({mismatch}); double precision"
                             f" failed too: {type(exc).__name__}: {exc}")
            else:
                if first_mismatch(names, expected, got, kinds) is None:
                    proto, double = candidate, True
                    notes.append(f"{_DOUBLE_NOTE} (float32 gave: {mismatch})")
    elif double:
        notes.append("converted in double precision (double=True)")
    from onnxbridge.plugins._trees import apply_tree_options

    tree_meta, tree_notes = apply_tree_options(proto, options, type(model).__name__)
    notes.extend(tree_notes)
    metadata = {"onnxbridge.sklearn.double": str(double), **tree_meta}
    if is_dataframe(sample):
        metadata.update(frame_metadata(sample))
    return ConversionResult(
        proto=proto,
        reference=reference,
        output_kinds=kinds,
        framework="scikit-learn",
        framework_version=sklearn.__version__,
        notes=notes,
        metadata=metadata,
    )
