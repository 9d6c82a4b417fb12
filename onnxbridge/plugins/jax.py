"""JAX jitted functions, Flax NNX modules and bound Flax linen modules through jax2onnx.

This module is what the entry point loads at discovery, so it stays light: jax, flax and
jax2onnx are imported only when a model is converted. The sample is one array or a tuple of
arrays, the function's positional arguments; with ``dynamic_batch=True`` every input's first
axis is exported as the symbolic dimension ``batch``. Inputs are named ``input`` (one) or
``input_0``, ``input_1``, ...; outputs after their place in the function's result: ``output``
(one array), ``output_0``, ... (a tuple or list) or the dict keys (a dict). Parity is checked
against the function run by JAX itself. A Flax linen module carries no weights of its own: pass
it bound to its variables (``model.bind(variables)``); it is converted as
``jax.jit(lambda *xs: model.apply(variables, *xs))``. See docs/guide-jax.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onnxbridge.registry import ConversionResult, ConverterSpec, ConvertOptions

SPECS = [
    ConverterSpec(
        name="jax",
        classes=("jaxlib._jax.PjitFunction", "flax.nnx.module.Module", "flax.linen.module.Module"),
        converter="onnxbridge.plugins.jax:convert",
        framework="jax",
        extra="jax",
        description="jax.jit-compiled functions, Flax NNX modules and bound Flax linen modules,"
        " through jax2onnx",
    )
]

# jax2onnx 0.17 emits opset 23 by default; onnxruntime caps it through ConvertOptions.max_opset.
_NEWEST_OPSET = 23
_BATCH = "batch"


def _arrays(sample: Any) -> list[Any]:
    import numpy as np

    from onnxbridge.errors import ConversionError

    items = list(sample) if isinstance(sample, (tuple, list)) else [sample]
    out = []
    for i, x in enumerate(items):
        if not isinstance(x, np.ndarray) and hasattr(x, "__array__") and hasattr(x, "dtype"):
            x = np.asarray(x)  # a jax.Array
        if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf" or x.ndim == 0:
            what = "the sample" if len(items) == 1 else f"argument {i}"
            raise ConversionError(
                f"the JAX converter takes numpy or JAX arrays with a batch axis; {what} is a"
                f" {type(x).__name__}"
                + (" (keyword arguments are not supported: pass a tuple of positional arrays)"
                   if isinstance(sample, Mapping) else "")
                + ". Pass the positional arguments of the function: one array or a tuple"
            )
        out.append(x)
    return out


def _output_names(structure: Any) -> list[str]:
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(structure)[0]
    if len(leaves) == 1 and not leaves[0][0]:
        return ["output"]
    names = []
    for i, (path, _) in enumerate(leaves):
        parts = []
        for key in path:
            part = getattr(key, "key", getattr(key, "name", getattr(key, "idx", None)))
            parts.append(str(part))
        only_index = all(hasattr(k, "idx") for k in path)
        names.append(f"output_{i}" if only_index or not parts else "_".join(parts))
    return names if len(set(names)) == len(names) else [f"output_{i}" for i in range(len(names))]


def convert(model: Any, sample: Any, options: ConvertOptions) -> ConversionResult:
    """Convert a jitted function or a Flax NNX module on ``sample`` (its positional arguments)."""
    import jax
    import jax2onnx
    import numpy as np
    from jax import export

    from onnxbridge.errors import ConversionError, UnsupportedOperatorError

    arrays = _arrays(sample)
    source = model
    if any(f"{c.__module__}.{c.__qualname__}" == "flax.linen.module.Module"
           for c in type(model).__mro__):
        model = _linen_function(model)
    try:
        structure = jax.eval_shape(model, *arrays)
    except Exception as exc:
        raise ConversionError(
            f"running the JAX function on the sample's shapes failed: {type(exc).__name__}: {exc}."
            " Pass its positional arguments: one array or a tuple of arrays"
        ) from exc
    output_names = _output_names(structure)
    input_names = ["input"] if len(arrays) == 1 else [f"input_{i}" for i in range(len(arrays))]
    # One symbolic dimension shared by every input: the batch axes must agree.
    batch = export.symbolic_shape(_BATCH)[0] if options.dynamic_batch else None
    inputs = [jax.ShapeDtypeStruct((batch, *a.shape[1:]) if batch is not None else a.shape, a.dtype)
              for a in arrays]
    opset = options.target_opset(_NEWEST_OPSET)
    try:
        proto = jax2onnx.to_onnx(
            model, inputs, model_name=options.name or "jax_model", opset=opset,
            input_names=input_names, output_names=output_names,
        )
    except NotImplementedError as exc:
        op = str(exc).split(" ", 1)[0] or type(exc).__name__
        raise UnsupportedOperatorError(
            f"jax2onnx cannot convert an operation of this JAX function: {exc}. Rewrite that part"
            " with operations jax2onnx supports (its docs list them), or keep it outside the"
            " exported function",
            operators=[op], framework="jax",
        ) from exc
    except TypeError as exc:
        if "get_monkey_patch" not in str(exc):
            raise ConversionError(f"jax2onnx failed to convert the JAX function: {exc}") from exc
        raise ConversionError(
            f"jax2onnx failed to convert the JAX function: {exc}. jax2onnx replaces some Flax and"
            " JAX functions while it traces and its replacements take some arguments by keyword"
            " only: write, for example, nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))"
        ) from exc
    except Exception as exc:
        hint = (" With a dynamic batch axis every shape must follow the input's first axis;"
                " pass dynamic_batch=False for a fixed-size model") if options.dynamic_batch else ""
        raise ConversionError(f"jax2onnx failed to convert the JAX function: {exc}.{hint}") from exc

    # jax2onnx's shape hints for intermediate values can be wrong (a Flax Conv's output recorded
    # NHWC where the graph computes NCHW, which onnx.checker's shape inference rejects); they are
    # optional, so they are dropped and onnxruntime infers the shapes itself.
    del proto.graph.value_info[:]

    def reference(s: Any) -> list[Any]:
        out = source(*_arrays(s))
        return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(out)]

    return ConversionResult(
        proto=proto,
        reference=reference,
        framework="jax",
        framework_version=jax.__version__,
        notes=["converted with jax2onnx; reference run by JAX on "
               f"{jax.default_backend().upper()}"],
    )



def _linen_function(model: Any) -> Any:
    """A bound Flax linen module as a jitted function of its inputs (its variables closed over)."""
    import jax

    from onnxbridge.errors import ConversionError

    if getattr(model, "scope", None) is None:
        raise ConversionError(
            f"this Flax linen module ({type(model).__name__}) is not bound to its variables, so"
            " it has no weights to convert. Pass model.bind(variables) (variables from"
            " model.init or your training state), or jax.jit(functools.partial(model.apply,"
            " variables))"
        )
    module, variables = model.unbind()
    return jax.jit(lambda *xs: module.apply(variables, *xs))
