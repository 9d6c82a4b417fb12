"""XGBoost models (scikit-learn wrappers and raw ``xgboost.Booster``) through onnxmltools.

The graph has one float input ``X`` [N, n_features] read off the sample (a numpy array or a
numeric DataFrame, whose columns are taken in order). Classifiers give ``label`` [N] and
``probabilities`` [N, n_classes]; regressors, rankers and margin-output Boosters give
``variable`` [N, 1]. NaN is "missing", as in XGBoost.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from onnxbridge.registry import ConversionResult, ConverterSpec, ConvertOptions

SPECS = [
    ConverterSpec(
        name="xgboost",
        classes=("xgboost.sklearn.XGBModel", "xgboost.core.Booster"),
        converter="onnxbridge.plugins.xgboost:convert",
        framework="xgboost",
        extra="xgboost",
        description="XGBoost classifiers, regressors, rankers and Boosters (onnxmltools)",
    )
]

_CLASSIFY = ("binary:logistic", "multi:softprob", "multi:softmax")
# Objectives whose prediction is the raw sum of leaves plus base_score (identity link).
_IDENTITY = ("reg:squarederror", "reg:squaredlogerror", "reg:pseudohubererror",
             "reg:absoluteerror", "reg:quantileerror", "binary:logitraw", "rank:")
_LOGLINK = ("count:poisson", "reg:gamma", "reg:tweedie")


def _config(booster: Any) -> dict[str, Any]:
    return json.loads(booster.save_config())["learner"]


def _objective(booster: Any) -> str:
    return str(_config(booster)["objective"]["name"])


def _task(objective: str) -> str:
    if objective in _CLASSIFY:
        return "classifier"
    if objective.startswith(_IDENTITY) or objective in _LOGLINK:
        return "regressor"
    return "unsupported"


def _wrapped(booster: Any, task: str) -> Any:
    """A WrappedBooster that onnxmltools converts as the task we chose from the objective
    (its own guess looks at leaf covers, and it has no name for rankers)."""
    from onnxmltools.convert.xgboost._parse import WrappedBooster

    class _Booster(WrappedBooster):
        def __init__(self) -> None:
            super().__init__(booster)
            config = _config(booster)
            self.kwargs["objective"] = config["objective"]["name"]
            if task == "classifier":
                num_class = int(config["learner_model_param"]["num_class"])
                self.kwargs["num_class"] = max(num_class, 1)
                self.classes_ = np.arange(max(num_class, 2))
                self.operator_name = "XGBClassifier"
            else:
                self.kwargs["num_class"] = 0
                self.kwargs.pop("classes_", None)
                self.operator_name = "XGBRegressor"

    return _Booster()


def _check_categorical(booster: Any) -> None:
    from onnxbridge.plugins._tabular import unsupported_categorical

    types = list(booster.feature_types or [])
    cats = [i for i, t in enumerate(types) if t == "c"]
    if not cats:
        return
    names = booster.feature_names or [f"f{i}" for i in range(len(types))]
    raise unsupported_categorical(
        "XGBoost", [names[i] for i in cats],
        "onnxmltools cannot turn XGBoost's native categorical splits into ONNX trees",
        "Train without enable_categorical and one-hot or ordinal encode those columns, for"
        " instance with a ColumnTransformer in a scikit-learn Pipeline (which converts as a"
        " whole)",
    )


def _without_feature_names(source: Any) -> Any:
    """A copy whose booster has no feature names: onnxmltools reads split features as
    'f<index>', so a model trained on a DataFrame (named columns) fails there. The graph's
    input is the matrix in the trained column order; the names go to the model's metadata."""
    import copy

    clone = copy.deepcopy(source)
    inner = clone.get_booster() if hasattr(clone, "get_booster") else clone.booster_
    inner.feature_names = None
    inner.feature_types = None
    return clone


def convert(model: Any, sample: Any, options: ConvertOptions) -> ConversionResult:
    import xgboost
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    from onnxbridge.errors import UnsupportedModelError
    from onnxbridge.plugins._tabular import (
        CLASSIFIER_KINDS,
        booster_frame_metadata,
        booster_reference,
        canonical_outputs,
        check_sample_matrix,
        conversion_lock,
        onnxmltools_failure,
    )
    from onnxbridge.plugins._trees import apply_tree_options

    _, n_features = check_sample_matrix(sample, "XGBoost")
    raw = isinstance(model, xgboost.Booster)
    booster = model if raw else model.get_booster()
    _check_categorical(booster)
    expected = booster.num_features()
    if expected and expected != n_features:
        from onnxbridge.errors import InputError

        raise InputError(
            f"the model was trained on {expected} features but the sample has {n_features};"
            " pass a sample shaped like the training data"
        )
    objective = _objective(booster)
    task = _task(objective)
    if task == "unsupported":
        raise UnsupportedModelError(
            f"XGBoost objective {objective!r} is not supported by the ONNX converter; supported"
            " are binary:logistic, multi:softprob/softmax, reg:*, rank:*, count:poisson"
        )
    missing = getattr(model, "missing", np.nan)
    if missing is not None and not (isinstance(missing, float) and np.isnan(missing)):
        raise UnsupportedModelError(
            f"the model treats {missing!r} as missing; ONNX tree ensembles only know NaN."
            " Replace that value by np.nan in your data and retrain with missing=np.nan"
        )
    classifier = task == "classifier"
    # The sklearn classifier converts as itself; anything else through an explicit task.
    native = not raw and classifier and hasattr(model, "classes_")
    try:  # onnxmltools reads the booster here already (its wrapper dumps the trees)
        source = model if native else _wrapped(booster, task)
        if booster.feature_names is not None:
            source = _without_feature_names(source)
        with conversion_lock:
            proto = convert_xgboost(
                source,
                initial_types=[("X", FloatTensorType([None, n_features]))],
                target_opset=options.opset,
            )
    except Exception as exc:
        raise onnxmltools_failure("XGBoost", model, exc, objective) from exc
    n_classes = None
    if classifier:
        num_class = int(_config(booster)["learner_model_param"]["num_class"])
        n_classes = max(num_class, 2)
    canonical_outputs(proto, classifier=classifier, n_outputs=n_classes if classifier else 1)
    proto.graph.name = options.name or type(model).__name__  # onnxmltools names it by a random uuid
    tree_meta, tree_notes = apply_tree_options(proto, options, "XGBoost")

    def predict_raw(x: Any) -> Any:
        if objective == "multi:softmax":  # it predicts class ids: take probabilities from margins
            margins = np.asarray(model.predict(xgboost.DMatrix(x), output_margin=True))
            probs = np.exp(margins - margins.max(axis=1, keepdims=True))
            return probs / probs.sum(axis=1, keepdims=True)
        return model.predict(xgboost.DMatrix(x, missing=np.nan))

    reference = booster_reference(model, raw, classifier, predict_raw)

    return ConversionResult(
        proto=proto,
        reference=reference,
        output_kinds=CLASSIFIER_KINDS if classifier else {},
        framework="xgboost",
        framework_version=xgboost.__version__,
        metadata={**tree_meta, **booster_frame_metadata(sample, booster.feature_names)},
        notes=[f"objective {objective}", *tree_notes],
    )
