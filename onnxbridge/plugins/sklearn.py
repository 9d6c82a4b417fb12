"""scikit-learn estimators, pipelines and transformers, through skl2onnx."""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxbridge.registry import ConversionResult, ConverterSpec, ConvertOptions

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


def _tensor_type(dtype: np.dtype, double: bool, width: int | None) -> Any:
    from skl2onnx.common.data_types import (
        BooleanTensorType,
        DoubleTensorType,
        FloatTensorType,
        Int64TensorType,
        StringTensorType,
    )

    shape = [None, width] if width is not None else [None]
    if dtype.kind == "f":
        return DoubleTensorType(shape) if double else FloatTensorType(shape)
    if dtype.kind in "iu":
        return Int64TensorType(shape)
    if dtype.kind == "b":
        return BooleanTensorType(shape)
    if dtype.kind in "OUS":
        return StringTensorType(shape)
    raise TypeError(f"cannot describe a column of dtype {dtype} to skl2onnx")


def initial_types(sample: Any, double: bool) -> list[tuple[str, Any]]:
    """skl2onnx input declarations read off the sample: one input per DataFrame column."""
    from onnxbridge.io import as_array, is_dataframe

    if is_dataframe(sample):
        return [
            (str(col), _tensor_type(np.dtype(sample[col].dtype) if sample[col].dtype != "string"
                                    else np.dtype(object), double, 1))
            for col in sample.columns
        ]
    arr = as_array(sample)
    if arr.ndim != 2:
        raise ValueError(
            f"scikit-learn models take a 2-D sample [n_samples, n_features]; got shape"
            f" {list(arr.shape)} (use X.reshape(-1, 1) for one feature)"
        )
    return [("X", _tensor_type(arr.dtype, double, arr.shape[1]))]


def convert(model: Any, sample: Any, options: ConvertOptions) -> ConversionResult:
    import sklearn
    from sklearn.base import is_classifier
    from skl2onnx import to_onnx as skl_to_onnx

    double = bool(options.pop("double", False))
    classifier = is_classifier(model)
    proto = skl_to_onnx(
        model,
        initial_types=initial_types(sample, double),
        target_opset=options.opset,
        options={"zipmap": False} if classifier else None,
        naming=None,
    )
    if classifier:
        kinds = {"label": "label", "probabilities": "probabilities"}

        def reference(x: Any) -> list[Any]:
            return [model.predict(x), model.predict_proba(x)]

    else:
        kinds = {}

        def reference(x: Any) -> list[Any]:
            if hasattr(model, "predict"):
                y = np.asarray(model.predict(x))
            else:
                y = np.asarray(model.transform(x))
            return [y]

    return ConversionResult(
        proto=proto,
        reference=reference,
        output_kinds=kinds,
        framework="scikit-learn",
        framework_version=sklearn.__version__,
    )
