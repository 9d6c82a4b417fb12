"""TensorFlow ``tf.function``s, ``tf.Module``s and loaded SavedModels, through tf2onnx.

This module is what the entry point loads at discovery, so it stays light: tensorflow and
tf2onnx are imported only when a model is converted. What is traced:

- a ``tf.function`` or a concrete function: itself;
- a ``tf.Module`` (or anything ``tf.saved_model.load`` returns) that is callable: its
  ``__call__``;
- a loaded SavedModel that is not callable, or any of them given a dict sample: its
  ``signatures["serving_default"]`` (inputs by name, a dict of outputs).

The sample is an array (one input), a tuple of arrays (positional inputs) or a dict of arrays
(keyword inputs). With ``dynamic_batch=True`` every input's first axis is left unknown in the
traced signature and named ``batch``. The traced function goes through
``tf2onnx.convert.from_function`` (as the Keras plugin, whose helpers this reuses); parity is
checked against the function run eagerly by TensorFlow. See docs/guide-tensorflow.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from onnxbridge.registry import ConversionResult, ConverterSpec, ConvertOptions

SPECS = [
    ConverterSpec(
        name="tensorflow",
        classes=(
            "tensorflow.python.types.core.PolymorphicFunction",
            "tensorflow.python.types.core.ConcreteFunction",
            "tensorflow.python.trackable.autotrackable.AutoTrackable",
        ),
        converter="onnxbridge.plugins.tensorflow:convert",
        framework="tensorflow",
        extra="tensorflow",
        description="TensorFlow tf.function, tf.Module and loaded SavedModels, through tf2onnx",
    )
]



def _arrays(sample: Any) -> tuple[list[str] | None, list[Any]]:
    """(input names for a dict sample else None, numpy arrays)."""
    import numpy as np

    from onnxbridge.errors import ConversionError

    def array(x: Any, what: str) -> Any:
        if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
            x = x.numpy()  # a tf.Tensor
        if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf" or x.ndim == 0:
            raise ConversionError(
                f"the TensorFlow converter takes numpy arrays or tensors with a batch axis;"
                f" {what} is a {type(x).__name__}. Pass the function's inputs: an array, a"
                " tuple of arrays (positional) or a dict of arrays (by name)"
            )
        return x

    if isinstance(sample, Mapping):
        return [str(k) for k in sample], [array(v, f"input {k!r}") for k, v in sample.items()]
    if isinstance(sample, (tuple, list)):
        return None, [array(v, f"input {i}") for i, v in enumerate(sample)]
    return None, [array(sample, "the sample")]


def _target(model: Any, by_name: bool) -> tuple[Callable[..., Any], str]:
    """The callable to trace and what it is, for messages."""
    from onnxbridge.errors import ConversionError

    signatures = getattr(model, "signatures", None)
    serving = signatures.get("serving_default") if signatures is not None else None
    if by_name and serving is not None:
        return serving, "the SavedModel's serving_default signature"
    if callable(model):
        return model, f"the {type(model).__name__}"
    if serving is not None:
        return serving, "the SavedModel's serving_default signature"
    raise ConversionError(
        f"this {type(model).__name__} has no __call__ and no serving_default signature to"
        " convert. Convert one of its tf.functions (to_onnx(module.some_function, sample)), or"
        " save it with tf.saved_model.save(module, path, signatures=...)"
    )


def convert(model: Any, sample: Any, options: ConvertOptions) -> ConversionResult:
    """Convert a tf.function / tf.Module / loaded SavedModel on ``sample``."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    import tf2onnx

    from onnxbridge.errors import ConversionError
    from onnxbridge.plugins.keras import _from_tf_function, _output_names, _tensor_specs

    keys, arrays = _arrays(sample)
    by_name = keys is not None
    fn, what = _target(model, by_name)
    if by_name:
        names = list(keys or [])
    else:
        names = ["input"] if len(arrays) == 1 else [f"input_{i}" for i in range(len(arrays))]

    def call(xs: list[Any]) -> Any:
        if by_name:
            return fn(**dict(zip(names, xs, strict=True)))
        return fn(*xs)

    try:
        first = call([tf.constant(a) for a in arrays])
    except Exception as exc:
        raise ConversionError(
            f"calling {what} on the sample failed: {type(exc).__name__}: {exc}. Pass the inputs it"
            " takes: an array, a tuple of arrays (positional) or a dict of arrays (by name)"
        ) from exc
    output_names = _output_names(first)

    signature = _tensor_specs(arrays, names, options.dynamic_batch)

    def forward(*xs: Any) -> Any:
        return tf.nest.flatten(call(list(xs)))

    function = tf.function(forward, input_signature=signature, autograph=False)
    hint = (" With a dynamic batch axis the function must accept any first-axis size (a"
            " SavedModel traced for one batch size does not): pass dynamic_batch=False"
            ) if options.dynamic_batch else ""
    proto = _from_tf_function(function, signature, options, output_names, what, "tensorflow",
                              hint)
    proto.graph.doc_string = f"converted from TensorFlow with tf2onnx {tf2onnx.__version__}"
    proto.graph.name = options.name or type(model).__name__

    def reference(s: Any) -> list[Any]:
        _, ref_arrays = _arrays(s)
        out = call([tf.constant(a) for a in ref_arrays])
        return [np.asarray(t) for t in tf.nest.flatten(out)]

    return ConversionResult(
        proto=proto,
        reference=reference,
        framework="tensorflow",
        framework_version=tf.__version__,
        notes=[f"converted {what} with tf2onnx {tf2onnx.__version__}"],
    )
