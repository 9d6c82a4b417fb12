"""CatBoost models through CatBoost's own ONNX export (``save_model(..., format="onnx")``).

The export is reshaped to the tabular convention: one float input ``X`` [N, n_features];
classifiers give ``label`` [N] (the model's own classes) and ``probabilities`` [N, n_classes]
as a float tensor (CatBoost's ZipMap is removed); regressors give ``variable`` [N, 1].
NaN follows the model's nan_mode as CatBoost exports it. Categorical and text features
cannot be exported by CatBoost and raise UnsupportedModelError.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxbridge.registry import ConversionResult, ConverterSpec, ConvertOptions

SPECS = [
    ConverterSpec(
        name="catboost",
        classes=("catboost.core.CatBoost",),
        converter="onnxbridge.plugins.catboost:convert",
        framework="catboost",
        extra="catboost",
        description="CatBoost classifiers and regressors (CatBoost's ONNX export)",
    )
]

_CLASS_LOSSES = ("Logloss", "CrossEntropy", "MultiClass", "MultiClassOneVsAll")


def _is_classifier(model: Any) -> bool:
    import catboost

    if isinstance(model, catboost.CatBoostClassifier):
        return True
    loss = str(model.get_all_params().get("loss_function", ""))
    return loss.split(":")[0] in _CLASS_LOSSES


def _check_features(model: Any) -> None:
    from onnxbridge.plugins._tabular import unsupported_categorical

    names = list(model.feature_names_ or [])
    for kind, indices in (("categorical", model.get_cat_feature_indices()),
                          ("text", model.get_text_feature_indices()),
                          ("embedding", model.get_embedding_feature_indices())):
        if len(indices):
            feats = [names[i] if i < len(names) else str(i) for i in indices]
            raise unsupported_categorical(
                "CatBoost", feats,
                f"CatBoost's ONNX export does not support {kind} features",
                "Retrain without cat_features (encode those columns as numbers, for instance"
                " with OrdinalEncoder or OneHotEncoder in a scikit-learn Pipeline, which"
                " converts as a whole), or keep the model in CatBoost",
            )


def export_proto(model: Any) -> Any:
    """CatBoost's own ONNX export of ``model`` as an ``onnx.ModelProto``."""
    from catboost.utils import convert_to_onnx_object

    return convert_to_onnx_object(model)


def _label_from_probabilities(proto: Any, classes: np.ndarray) -> None:
    """Compute ``label`` as classes[argmax(probabilities)].

    onnxruntime returns the class index, not the class, for some binary exports (classes
    [3, 7] give 0/1), so the label is rebuilt from the probabilities.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == "label":
                node.output[i] = "catboost_raw_label"
    if classes.dtype.kind in "OUS":
        names: Any = [str(c).encode() for c in classes]
        table = helper.make_tensor("catboost_classes", onnx.TensorProto.STRING, [len(classes)], names)
        elem = onnx.TensorProto.STRING
    else:
        table = numpy_helper.from_array(classes.astype(np.int64), "catboost_classes")
        elem = onnx.TensorProto.INT64
    graph.initializer.append(table)
    graph.node.extend([
        helper.make_node("ArgMax", ["probabilities"], ["catboost_argmax"], axis=1, keepdims=0),
        helper.make_node("Gather", ["catboost_classes", "catboost_argmax"], ["label"], axis=0),
    ])
    for out in graph.output:
        if out.name == "label":
            out.type.tensor_type.elem_type = elem
    if not any(o.domain in ("", "ai.onnx") for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("", 13))
    proto.ir_version = max(proto.ir_version, 8)


def convert(model: Any, sample: Any, options: ConvertOptions) -> ConversionResult:
    import catboost

    from onnxbridge.errors import ConversionError, InputError
    from onnxbridge.plugins._tabular import (
        CLASSIFIER_KINDS,
        booster_frame_metadata,
        canonical_outputs,
        check_sample_matrix,
    )
    from onnxbridge.plugins._trees import apply_tree_options

    if not model.is_fitted():
        raise ConversionError(f"{type(model).__name__} is not fitted; call fit() first")
    _check_features(model)
    _, n_features = check_sample_matrix(sample, "CatBoost")
    # A model read with load_model() has n_features_in_ == 0 but knows its feature names.
    trained = model.n_features_in_ or len(model.feature_names_ or ())
    if trained != n_features:
        raise InputError(
            f"the model was trained on {trained} features but the sample has"
            f" {n_features}; pass a sample shaped like the training data"
        )
    classifier = _is_classifier(model)
    proto = export_proto(model)
    classes = np.asarray(model.classes_) if classifier else None
    canonical_outputs(proto, classifier=classifier,
                      n_outputs=len(classes) if classes is not None else 1, input_name="X")
    if classes is not None:
        _label_from_probabilities(proto, classes)
    tree_meta, tree_notes = apply_tree_options(proto, options, "CatBoost")

    def reference(x: Any) -> list[Any]:
        if classifier:
            return [np.asarray(model.predict(x)).reshape(-1), model.predict_proba(x)]
        return [np.asarray(model.predict(x)).reshape(len(x), -1)]

    return ConversionResult(
        proto=proto,
        reference=reference,
        output_kinds=CLASSIFIER_KINDS if classifier else {},
        framework="catboost",
        framework_version=catboost.__version__,
        metadata={**tree_meta, **booster_frame_metadata(sample, model.feature_names_)},
        notes=["exported with CatBoost's own ONNX export", *tree_notes],
    )


def skl2onnx_catboost_converter(scope: Any, operator: Any, container: Any) -> None:
    """skl2onnx converter for a CatBoost estimator inside a scikit-learn Pipeline.

    CatBoost's export is one tree-ensemble node (plus a ZipMap, dropped); that node is copied
    into the pipeline's graph between the operator's input and outputs. The label comes from
    the probabilities, as in :func:`_label_from_probabilities`.
    """
    from onnx import helper

    model = operator.raw_operator
    _check_features(model)
    proto = export_proto(model)
    tree = next(n for n in proto.graph.node if n.op_type.startswith("TreeEnsemble"))
    versions = {o.domain: o.version for o in proto.opset_import}
    attrs = {a.name: helper.get_attribute_value(a) for a in tree.attribute}
    outputs = [o.full_name for o in operator.outputs]
    if tree.op_type == "TreeEnsembleClassifier":
        index_name = scope.get_unique_variable_name("catboost_label_index")
        raw_label = scope.get_unique_variable_name("catboost_raw_label")
        container.add_node(tree.op_type, [operator.inputs[0].full_name], [raw_label, outputs[1]],
                           op_domain=tree.domain, op_version=versions.get(tree.domain),
                           name=scope.get_unique_operator_name("CatBoost"), **attrs)
        classes = np.asarray(model.classes_)
        table = scope.get_unique_variable_name("catboost_classes")
        if classes.dtype.kind in "OUS":
            from onnx import TensorProto

            container.add_initializer(table, TensorProto.STRING, [len(classes)],
                                      [str(c).encode() for c in classes])
        else:
            from onnx import TensorProto

            container.add_initializer(table, TensorProto.INT64, [len(classes)],
                                      [int(c) for c in classes])
        container.add_node("ArgMax", [outputs[1]], [index_name], axis=1, keepdims=0,
                           name=scope.get_unique_operator_name("ArgMax"))
        container.add_node("Gather", [table, index_name], [outputs[0]], axis=0,
                           name=scope.get_unique_operator_name("Gather"))
    else:
        container.add_node(tree.op_type, [operator.inputs[0].full_name], outputs[:1],
                           op_domain=tree.domain, op_version=versions.get(tree.domain),
                           name=scope.get_unique_operator_name("CatBoost"), **attrs)
