"""Keras 3 models (Sequential, functional, subclassed): through tf2onnx on the TensorFlow backend,
jax2onnx on the JAX backend, the PyTorch exporter on the torch backend.

This module is what the entry point loads at discovery, so it stays light: keras, tensorflow and
tf2onnx are imported only when a model is converted. The model is traced as a ``tf.function``
over an input signature built from the sample, with the batch axis left dynamic
(``dynamic_batch=True``), and converted with ``tf2onnx.convert.from_function`` (the same
converter Keras's own ``model.export(format="onnx")`` calls on this backend). The sample is a
numpy array (one input), a tuple of arrays (several inputs, in the model's order) or a dict of
arrays keyed by input name. Outputs are named ``output`` (one), ``output_0``, ``output_1``, ...
(a list) or by their keys (a dict, in sorted key order). On the JAX backend the inference call
is ``jax.jit``-compiled and handed to the JAX plugin; on the torch backend (Keras layers are
torch modules there) it is wrapped in a module and handed to the PyTorch plugin; inputs and
outputs are named the same way. See docs/guide-keras.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onnxbridge.registry import ConversionResult, ConverterSpec, ConvertOptions

SPECS = [
    ConverterSpec(
        name="keras",
        classes=("keras.src.models.model.Model",),
        converter="onnxbridge.plugins.keras:convert",
        framework="keras",
        extra="keras",
        description="Keras 3 models (Sequential, functional, subclassed): tf2onnx on the"
        " TensorFlow backend, jax2onnx on JAX, the PyTorch exporter on torch",
    )
]

# tf2onnx's newest well-tested default-domain opset (tf2onnx 1.17 tests up to 18).
_NEWEST_OPSET = 18  # tf2onnx 1.17's newest well-tested opset (the TensorFlow plugin's too)


def _inputs(model: Any, sample: Any) -> tuple[list[str], list[Any], str]:
    """Input names, numpy arrays and the sample's form ("single", "tuple" or "dict")."""
    import numpy as np

    from onnxbridge.errors import ConversionError

    def array(x: Any, what: str) -> Any:
        if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
            x = x.numpy()  # a tf.Tensor or a backend tensor
        if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf" or x.ndim == 0:
            raise ConversionError(
                f"the Keras converter takes numpy arrays with a batch axis; {what} is a"
                f" {type(x).__name__}. Pass the sample you would give model.predict: an array,"
                " a tuple of arrays (several inputs) or a dict of arrays keyed by input name"
            )
        return x

    if isinstance(sample, Mapping):
        names = [str(k) for k in sample]
        return names, [array(v, f"input {k!r}") for k, v in sample.items()], "dict"
    if isinstance(sample, (tuple, list)):
        arrays = [array(v, f"input {i}") for i, v in enumerate(sample)]
        declared = [getattr(t, "name", None) for t in (getattr(model, "inputs", None) or [])]
        if len(declared) == len(arrays) and all(declared) and len(set(declared)) == len(declared):
            names = [str(n) for n in declared]
        else:
            names = [f"input_{i}" for i in range(len(arrays))]
        return names, arrays, "tuple"
    return ["input"], [array(sample, "the sample")], "single"


def _call_arg(arrays: list[Any], names: list[str], form: str) -> Any:
    if form == "dict":
        return dict(zip(names, arrays, strict=True))
    if form == "tuple":
        return list(arrays)
    return arrays[0]


def _tensor_specs(arrays: list[Any], names: list[str], dynamic_batch: bool) -> list[Any]:
    """The traced signature: one tf.TensorSpec per input, its first axis unknown when dynamic."""
    import tensorflow as tf

    return [tf.TensorSpec((None, *a.shape[1:]) if dynamic_batch else tuple(a.shape),
                          tf.as_dtype(a.dtype), name=n)
            for a, n in zip(arrays, names, strict=True)]


def _output_names(outputs: Any) -> list[str]:
    if isinstance(outputs, Mapping):
        return [str(k) for k in sorted(outputs)]  # tf.nest flattens dicts in sorted key order
    if isinstance(outputs, (list, tuple)):
        return [f"output_{i}" for i in range(len(outputs))]
    return ["output"]


def _unsupported(exc: BaseException) -> list[str] | None:
    """Operator names from tf2onnx's "unsupported op" failure, or None for another failure."""
    import re

    text = str(exc)
    found = re.findall(r"[Uu]nsupported ops?:? ?(?:Counter\(\{)?'?([A-Za-z0-9_]+)'?", text)
    found += re.findall(r"Tensorflow op \[[^\]]*: ([A-Za-z0-9_]+)\] is not supported", text)
    return sorted(set(found)) or None


def convert(model: Any, sample: Any, options: ConvertOptions) -> ConversionResult:
    """Convert a Keras 3 model on ``sample`` (see the module docstring for the sample forms)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from onnxbridge.errors import UnsupportedModelError

    backend = keras.backend.backend()
    if backend == "jax":
        return _convert_on_jax(model, sample, options)
    if backend == "torch":
        return _convert_on_torch(model, sample, options)
    if backend != "tensorflow":
        raise UnsupportedModelError(
            f"the Keras converter supports the TensorFlow, JAX and torch backends; this process"
            f" runs Keras on {backend!r}. Set KERAS_BACKEND=tensorflow (or jax, torch) before"
            " importing keras to convert it"
        )
    import numpy as np
    import tensorflow as tf
    import tf2onnx

    names, arrays, form, output_names = _first_call(model, sample)

    signature = _tensor_specs(arrays, names, options.dynamic_batch)

    def forward(*xs: Any) -> Any:
        out = model(_call_arg(list(xs), names, form), training=False)
        return tf.nest.flatten(out)

    function = tf.function(forward, input_signature=signature, autograph=False)
    proto = _from_tf_function(function, signature, options, output_names, "the Keras model",
                              "keras", "")
    # tf2onnx's doc string names the traced function, whose number changes with every trace.
    proto.graph.doc_string = f"converted from a Keras model with tf2onnx {tf2onnx.__version__}"
    if options.name:
        proto.graph.name = options.name

    def reference(s: Any) -> list[Any]:
        ref_names, ref_arrays, ref_form = _inputs(model, s)
        out = model(_call_arg(ref_arrays, ref_names, ref_form), training=False)
        return [np.asarray(t) for t in tf.nest.flatten(out)]

    return ConversionResult(
        proto=proto,
        reference=reference,
        framework="keras",
        framework_version=f"keras {keras.__version__}, tensorflow {tf.__version__}",
        notes=[f"converted with tf2onnx {tf2onnx.__version__} on the TensorFlow backend"],
    )


def _rename_outputs(proto: Any, names: list[str]) -> None:
    """Give the graph outputs readable names (tf2onnx names them after TF tensors)."""
    graph = proto.graph
    if len(graph.output) != len(names):
        return
    mapping = {o.name: n for o, n in zip(graph.output, names, strict=True)}
    for node in graph.node:
        for i, out in enumerate(node.output):
            if out in mapping:
                node.output[i] = mapping[out]
        for i, inp in enumerate(node.input):
            if inp in mapping:
                node.input[i] = mapping[inp]
    for out in graph.output:
        out.name = mapping[out.name]


def _name_batch_axis(proto: Any) -> None:
    """Call the symbolic first axis ``batch`` (tf2onnx names it ``unk__N``, one per input).

    Keras models keep the batch axis first in every input and output, so the outputs' unnamed
    first axes are the batch axis too.
    """
    graph = proto.graph
    olds = {v.type.tensor_type.shape.dim[0].dim_param for v in graph.input
            if v.type.tensor_type.shape.dim}
    olds |= {v.type.tensor_type.shape.dim[0].dim_param for v in graph.output
             if v.type.tensor_type.shape.dim
             and v.type.tensor_type.shape.dim[0].dim_param.startswith("unk__")}
    olds.discard("")
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in olds:
                dim.dim_param = "batch"


def _non_onnx_ops(proto: Any) -> list[str]:
    """Default-domain node types that no ONNX opset defines (TensorFlow ops left in place)."""
    import onnx

    types = {n.op_type for n in proto.graph.node if n.domain in ("", "ai.onnx")}
    for function in proto.functions:
        types |= {n.op_type for n in function.node if n.domain in ("", "ai.onnx")}
    return sorted(t for t in types if not onnx.defs.has(t))



def _stable_names(proto: Any) -> None:
    """Renumber tf2onnx's ``name__N`` suffixes in graph order and sort the initializers.

    tf2onnx numbers the names it makes from a process-wide counter and keeps an arbitrary one of
    two equal constants, so converting the same model twice gave different names; numbered by
    first use instead, the same model gives the same bytes.
    """
    import re

    from onnx import AttributeProto

    suffix = re.compile(r"__(\d+)")
    numbers: dict[str, int] = {}
    # Constants tf2onnx made (``const_axes__18``): their prefix too depends on which of two equal
    # constants it kept, so they are renamed outright, by first use.
    made = {t.name for g in _graphs(proto.graph) for t in g.initializer if suffix.search(t.name)}
    constants: dict[str, str] = {}

    def renum(name: str) -> str:
        if name in made:
            return constants.setdefault(name, f"onnxbridge_const_{len(constants) + 1}")
        return suffix.sub(lambda m: f"__{numbers.setdefault(m.group(1), len(numbers) + 1)}", name)

    def walk(graph: Any) -> None:
        for node in graph.node:
            for i, name in enumerate(node.input):
                node.input[i] = renum(name)
            for i, name in enumerate(node.output):
                node.output[i] = renum(name)
            node.name = renum(node.name)
            for attr in node.attribute:
                if attr.type == AttributeProto.GRAPH:
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)
        for values in (graph.input, graph.output, graph.value_info, graph.initializer):
            for value in values:
                value.name = renum(value.name)
        for values in (graph.initializer, graph.value_info):
            ordered = []
            for value in sorted(values, key=lambda v: v.name):
                copy = type(value)()
                copy.CopyFrom(value)  # a copy: deleting the field's items below frees them
                ordered.append(copy)
            del values[:]
            values.extend(ordered)

    walk(proto.graph)


def _graphs(graph: Any) -> list[Any]:
    """``graph`` and every subgraph in its nodes' attributes."""
    found = [graph]
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                found += _graphs(sub)
    return found


def _from_tf_function(function: Any, signature: Any, options: ConvertOptions,
                      output_names: list[str], what: str, framework: str, hint: str) -> Any:
    """tf2onnx on a traced ``tf.function``: the ONNX proto with the outputs named, the batch axis
    named when dynamic and stable node names; an operation tf2onnx cannot convert (raised, or
    kept as a node of that name) is an UnsupportedOperatorError naming it. ``hint`` ends the
    message of any other tf2onnx failure."""
    import tf2onnx

    from onnxbridge.errors import ConversionError, UnsupportedOperatorError

    opset = options.target_opset(_NEWEST_OPSET)
    try:
        proto, _ = tf2onnx.convert.from_function(
            function, input_signature=signature, opset=opset, output_path=None,
        )
    except Exception as exc:
        ops = _unsupported(exc)
        if ops:
            raise UnsupportedOperatorError(
                f"{what} uses TensorFlow operation(s) {', '.join(ops)} that tf2onnx cannot"
                f" convert at opset {opset}: {exc}. Replace them with standard operations, or"
                " try a newer opset=", operators=ops, framework=framework,
            ) from exc
        raise ConversionError(f"tf2onnx failed to convert {what}: {exc}.{hint}") from exc
    # tf2onnx keeps a TensorFlow op it cannot convert as a node of that name (and logs it).
    missing = _non_onnx_ops(proto)
    if missing:
        raise UnsupportedOperatorError(
            f"{what} uses TensorFlow operation(s) {', '.join(missing)} that tf2onnx cannot"
            f" convert to ONNX (opset {opset}). Replace them with standard operations, or try a"
            " newer opset=", operators=missing, framework=framework,
        )
    _rename_outputs(proto, output_names)
    if options.dynamic_batch:
        _name_batch_axis(proto)
    _stable_names(proto)
    return proto


def _first_call(model: Any, sample: Any) -> tuple[list[str], list[Any], str, list[str]]:
    """The sample's input names, arrays and form, and the output names of the model's call on
    it (Keras builds a model's weights on its first call; the sample is that call)."""
    from onnxbridge.errors import ConversionError

    names, arrays, form = _inputs(model, sample)
    try:
        first = model(_call_arg(arrays, names, form), training=False)
    except Exception as exc:
        raise ConversionError(
            f"calling the Keras model on the sample failed: {type(exc).__name__}: {exc}."
            " Pass the sample you would give model.predict"
        ) from exc
    return names, arrays, form, _output_names(first)


def _convert_on_jax(model: Any, sample: Any, options: ConvertOptions) -> ConversionResult:
    """Keras on the JAX backend: the model's inference call, jitted, through the JAX plugin."""
    import jax
    import keras
    import numpy as np

    from onnxbridge.plugins import jax as jax_plugin

    names, arrays, form, output_names = _first_call(model, sample)

    def forward(*xs: Any) -> Any:
        return keras.tree.flatten(model(_call_arg(list(xs), names, form), training=False))

    result = jax_plugin.convert(jax.jit(forward), tuple(arrays), options)
    proto = result.proto if isinstance(result, ConversionResult) else result
    graph = proto.graph
    mapping = {v.name: n for v, n in zip(graph.input, names, strict=True)}
    mapping.update({v.name: n for v, n in zip(graph.output, output_names, strict=True)})
    for node in graph.node:
        node.input[:] = [mapping.get(i, i) for i in node.input]
        node.output[:] = [mapping.get(o, o) for o in node.output]
    for value in [*graph.input, *graph.output]:
        value.name = mapping.get(value.name, value.name)
    if options.name:
        graph.name = options.name

    def reference(s: Any) -> list[Any]:
        ref_names, ref_arrays, ref_form = _inputs(model, s)
        out = model(_call_arg(ref_arrays, ref_names, ref_form), training=False)
        return [np.asarray(t) for t in keras.tree.flatten(out)]

    return ConversionResult(
        proto=proto,
        reference=reference,
        framework="keras",
        framework_version=f"keras {keras.__version__}, jax {jax.__version__}",
        notes=["converted on the JAX backend: the jitted inference call through jax2onnx"],
    )


def _convert_on_torch(model: Any, sample: Any, options: ConvertOptions) -> ConversionResult:
    """Keras on the torch backend (its layers are torch modules): through the PyTorch plugin."""
    import dataclasses

    import keras
    import numpy as np
    import torch

    from onnxbridge.plugins._torch_export import convert_module

    names, arrays, form, output_names = _first_call(model, sample)

    class Inference(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *xs: Any) -> Any:
            return keras.tree.flatten(self.model(_call_arg(list(xs), names, form), training=False))

    options.options.setdefault("input_names", names)
    options.options.setdefault("output_names", output_names)
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    result = convert_module(Inference(), tensors, options)  # it restores the train/eval flags
    if options.name:
        result.proto.graph.name = options.name

    def reference(s: Any) -> list[Any]:
        ref_names, ref_arrays, ref_form = _inputs(model, s)
        out = model(_call_arg(ref_arrays, ref_names, ref_form), training=False)
        return [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(out)]

    # the PyTorch plugin's extra samples are torch tensors; to_onnx makes its own from the sample
    return dataclasses.replace(
        result, reference=reference, framework="keras", extra_samples=(),
        framework_version=f"keras {keras.__version__}, torch {torch.__version__}",
        notes=["converted on the torch backend through the PyTorch exporter", *result.notes],
    )
