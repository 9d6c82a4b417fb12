"""LightGBM models (scikit-learn wrappers and raw ``lightgbm.Booster``) through onnxmltools.

The graph has one float input ``X`` [N, n_features] read off the sample (a numpy array or a
numeric DataFrame, columns in order). Classifiers (and binary / multiclass Boosters) give
``label`` [N] and ``probabilities`` [N, n_classes]; regressors, rankers and other Boosters give
``variable`` [N, 1]. NaN is handled per split as LightGBM's missing_type says; categorical
splits on integer-coded features convert. A DataFrame with pandas ``category`` columns (string
categories) gives one [N, 1] input per column instead, each category column a string input
mapped to LightGBM's training codes (NaN when missing or unseen, as LightGBM does).
"""

from __future__ import annotations

from typing import Any

from onnxbridge.registry import ConversionResult, ConverterSpec, ConvertOptions

SPECS = [
    ConverterSpec(
        name="lightgbm",
        classes=("lightgbm.sklearn.LGBMModel", "lightgbm.basic.Booster"),
        converter="onnxbridge.plugins.lightgbm:convert",
        framework="lightgbm",
        extra="lightgbm",
        description="LightGBM classifiers, regressors, rankers and Boosters (onnxmltools)",
    )
]

_CLASSIFY = ("binary", "multiclass", "softmax", "multiclassova", "multiclass_ova", "ova",
             "ovr", "cross_entropy", "xentropy")


def _objective(booster: Any) -> str:
    return str(booster.dump_model(num_iteration=0).get("objective", "")).split(" ")[0]


def _check_categorical_frame(sample: Any) -> None:
    from onnxbridge.plugins._tabular import (
        categorical_columns,
        is_dataframe,
        unsupported_categorical,
    )

    if not is_dataframe(sample):
        return
    cats = categorical_columns(sample)
    if cats:
        raise unsupported_categorical(
            "LightGBM", cats,
            "pandas 'category' columns are mapped to codes inside LightGBM, and an ONNX"
            " graph input cannot hold pandas categories",
            "Train on integer codes instead (df[col] = df[col].cat.codes, with"
            " categorical_feature=[...]): LightGBM's categorical splits on integer features"
            " convert, and m.run takes the same codes",
        )


def convert(model: Any, sample: Any, options: ConvertOptions) -> ConversionResult:
    import lightgbm
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    from onnxbridge.errors import InputError
    from onnxbridge.plugins._tabular import (
        CLASSIFIER_KINDS,
        booster_frame_metadata,
        booster_reference,
        canonical_outputs,
        categorical_columns,
        check_sample_matrix,
        conversion_lock,
        frame_category_codes,
        is_dataframe,
        onnxmltools_failure,
        per_column_inputs,
    )
    from onnxbridge.plugins._trees import apply_tree_options, exact_lightgbm_thresholds

    raw = isinstance(model, lightgbm.Booster)
    booster = model if raw else model.booster_
    frame: Any = sample
    categories: dict[str, list[str]] = {}
    if is_dataframe(sample) and categorical_columns(sample):
        # pandas category columns: string inputs mapped to LightGBM's training codes
        frame, categories = frame_category_codes(
            sample, getattr(booster, "pandas_categorical", None), "LightGBM")
        if [str(c) for c in sample.columns] != [str(f) for f in booster.feature_name()]:
            _check_categorical_frame(sample)  # columns other than trained: refuse, with fix
    _, n_features = check_sample_matrix(frame, "LightGBM")
    if booster.num_feature() != n_features:
        raise InputError(
            f"the model was trained on {booster.num_feature()} features but the sample has"
            f" {n_features}; pass a sample shaped like the training data"
        )
    objective = _objective(booster)
    classifier = (objective in _CLASSIFY and objective not in ("cross_entropy", "xentropy")
                  if raw else isinstance(model, lightgbm.LGBMClassifier))
    try:
        with conversion_lock:
            proto = convert_lightgbm(
                model,
                initial_types=[("X", FloatTensorType([None, n_features]))],
                target_opset=options.opset,
                zipmap=False,
            )
    except Exception as exc:
        raise onnxmltools_failure("LightGBM", model, exc, objective) from exc
    n_classes = None
    if classifier:
        n_classes = len(model.classes_) if not raw else max(booster.num_model_per_iteration(), 2)
    canonical_outputs(proto, classifier=classifier, n_outputs=n_classes if classifier else 1)
    proto.graph.name = options.name or type(model).__name__  # onnxmltools names it by a random uuid
    exact_lightgbm_thresholds(proto, booster)
    tree_meta, tree_notes = apply_tree_options(proto, options, "LightGBM")
    if categories:
        per_column_inputs(proto, sample, categories, [str(c) for c in sample.columns])
        tree_notes.append(f"category columns {sorted(categories)} are string inputs mapped to"
                          " LightGBM's training codes (missing or unseen: NaN)")

    reference = booster_reference(model, raw, classifier, model.predict)

    return ConversionResult(
        proto=proto,
        reference=reference,
        output_kinds=CLASSIFIER_KINDS if classifier else {},
        framework="lightgbm",
        framework_version=lightgbm.__version__,
        metadata={**tree_meta, **booster_frame_metadata(sample, booster.feature_name())},
        notes=[f"objective {objective}", *tree_notes],
    )
