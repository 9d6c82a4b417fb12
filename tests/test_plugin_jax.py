"""JAX jitted functions and Flax NNX modules: each converted model is compared with JAX's own output.

Skipped where jax/jax2onnx are not installed (the main `tests` session); the `frameworks` nox
session sets ONNXBRIDGE_REQUIRE_FRAMEWORKS=1, which turns a missing framework into a failure.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _require(name: str) -> Any:
    if os.environ.get("ONNXBRIDGE_REQUIRE_FRAMEWORKS") == "1":
        return importlib.import_module(name)  # missing here is a failure, not a skip
    return pytest.importorskip(name)


jax = _require("jax")
_require("jax2onnx")
jnp = jax.numpy

import onnxbridge  # noqa: E402
from onnxbridge.errors import (  # noqa: E402
    ConversionError,
    ConverterNotFoundError,
    UnsupportedOperatorError,
)
from onnxbridge.registry import Registry  # noqa: E402
from onnxbridge.testing import Case, parametrize_with_checks  # noqa: E402

RNG = np.random.default_rng(0)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


W1, B1, W2 = _x(8, 16), _x(16), _x(16, 3)
K = _x(3, 3, 2, 4)  # HWIO


@jax.jit
def mlp(x: Any) -> Any:
    return jax.nn.softmax(jax.nn.relu(x @ W1 + B1) @ W2, axis=-1)


@jax.jit
def cnn(x: Any) -> Any:  # NHWC
    y = jax.lax.conv_general_dilated(x, K, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.max(jax.nn.relu(y), axis=(1, 2))


WQ, WK, WV = _x(8, 8), _x(8, 8), _x(8, 8)


@jax.jit
def attention(x: Any) -> Any:  # [batch, tokens, 8]
    q, k, v = x @ WQ, x @ WK, x @ WV
    weights = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) / np.sqrt(8.0).astype(np.float32), axis=-1)
    return weights @ v


WH, WX = _x(5, 5) * 0.3, _x(4, 5)


@jax.jit
def rnn(x: Any) -> Any:  # [batch, time, 4], an Elman RNN through lax.scan
    def step(h: Any, xt: Any) -> tuple[Any, Any]:
        h = jnp.tanh(h @ WH + xt @ WX)
        return h, h

    h0 = jnp.zeros((x.shape[0], 5), x.dtype)
    last, _ = jax.lax.scan(step, h0, jnp.swapaxes(x, 0, 1))
    return last


@jax.jit
def two_inputs_dict_output(a: Any, b: Any) -> Any:
    return {"sum": a + b, "norm": jnp.sqrt(jnp.sum(a * a, axis=-1))}


def _assert_matches(m: onnxbridge.OnnxModel, fn: Any, *args: np.ndarray) -> None:
    got = m.run(args if len(args) > 1 else args[0])
    got = list(got) if isinstance(got, tuple) else [got]
    want = [np.asarray(a) for a in jax.tree_util.tree_leaves(fn(*args))]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_jitted_mlp_batch_one_runs_at_other_batch_sizes() -> None:
    m = onnxbridge.to_onnx(mlp, _x(1, 8))
    assert m.parity.verified and m.parity.passed
    assert m.inputs[0].shape == ("batch", 8) and m.output_names == ["output"]
    _assert_matches(m, mlp, _x(5, 8))
    _assert_matches(m, mlp, _x(64, 8))


def test_cnn() -> None:
    m = onnxbridge.to_onnx(cnn, _x(1, 6, 6, 2))
    assert m.parity.passed
    _assert_matches(m, cnn, _x(3, 6, 6, 2))


def test_attention() -> None:
    m = onnxbridge.to_onnx(attention, _x(1, 5, 8))
    assert m.parity.passed
    _assert_matches(m, attention, _x(4, 5, 8))


def test_rnn_scan() -> None:
    m = onnxbridge.to_onnx(rnn, _x(1, 7, 4))
    assert m.parity.passed
    _assert_matches(m, rnn, _x(3, 7, 4))


def test_two_inputs_and_dict_output() -> None:
    m = onnxbridge.to_onnx(two_inputs_dict_output, (_x(1, 4), _x(1, 4)))
    assert m.parity.passed
    assert m.input_names == ["input_0", "input_1"]
    assert m.output_names == ["norm", "sum"]  # JAX flattens a dict in sorted key order
    a, b = _x(6, 4), _x(6, 4)
    got = m.run((a, b), as_dict=True)
    want = two_inputs_dict_output(a, b)
    for key in ("sum", "norm"):
        np.testing.assert_allclose(got[key], np.asarray(want[key]), rtol=1e-5, atol=1e-6)


def test_integer_input_keeps_its_dtype() -> None:
    fn = jax.jit(lambda x, scale: x * scale)
    m = onnxbridge.to_onnx(fn, (_x(1, 3), np.full((1, 3), 2, np.int32)))
    assert str(m.inputs[1].dtype) == "int32" and m.parity.passed


def test_flax_nnx_module() -> None:
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            self.hidden = nnx.Linear(8, 6, rngs=rngs)
            self.out = nnx.Linear(6, 2, rngs=rngs)

        def __call__(self, x: Any) -> Any:
            return self.out(nnx.gelu(self.hidden(x)))

    net = Net(nnx.Rngs(0))
    m = onnxbridge.to_onnx(net, _x(1, 8))
    assert m.parity.passed
    _assert_matches(m, net, _x(5, 8))


def _linen_cnn() -> Any:
    nn = importlib.import_module("flax.linen")

    class Cnn(nn.Module):
        @nn.compact
        def __call__(self, x: Any) -> Any:
            x = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(4, (3, 3))(x)))
            x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
            return nn.Dense(2)(x.reshape(x.shape[0], -1))

    model = Cnn()
    variables = model.init(jax.random.PRNGKey(0), _x(1, 8, 8, 3))
    # running statistics that are not the identity, so a dropped BatchNorm shows
    stats = jax.tree_util.tree_map(lambda v: v + 0.5, variables["batch_stats"])
    return model.bind({"params": variables["params"], "batch_stats": stats})


def test_flax_linen_module_bound_to_its_variables() -> None:
    bound = _linen_cnn()
    m = onnxbridge.to_onnx(bound, _x(1, 8, 8, 3))
    assert m.parity.passed and m.inputs[0].shape[0] == "batch"
    _assert_matches(m, bound, _x(5, 8, 8, 3))
    with pytest.raises(ConversionError, match=r"not bound to its variables.*bind\(variables\)"):
        onnxbridge.to_onnx(bound.unbind()[0], _x(1, 8, 8, 3))


def test_unsupported_operation_is_named() -> None:
    fn = jax.jit(lambda x: jnp.linalg.eigh(x @ jnp.swapaxes(x, -1, -2))[0])
    with pytest.raises(UnsupportedOperatorError, match="eigh"):
        onnxbridge.to_onnx(fn, _x(1, 4, 4))


def test_sample_of_the_wrong_kind_is_a_conversion_error() -> None:
    with pytest.raises(ConversionError, match="positional"):
        onnxbridge.to_onnx(mlp, {"x": _x(1, 8)})
    with pytest.raises(ConversionError, match="on the sample's shapes"):
        onnxbridge.to_onnx(mlp, _x(1, 5))  # wrong feature count


def test_without_the_plugin_the_error_names_the_extra() -> None:
    with pytest.raises(ConverterNotFoundError, match=r'pip install "onnxbridge\[jax\]"'):
        Registry(discover=False).resolve(mlp)


@parametrize_with_checks(
    "jax", [Case(mlp, _x(1, 8), id="mlp"),
            Case(two_inputs_dict_output, (_x(2, 4), _x(2, 4)), id="two"),
            Case(_linen_cnn(), _x(1, 8, 8, 3), id="linen")],
    # A jitted function holds no state of its own for a converter to change, and it does not
    # pickle, so the mutation check has nothing to compare.
    expected_failed_checks={"check_model_not_mutated": "a jitted function has no state to change"
                            " (and a bound linen module does not pickle)"},
)
def test_jax_converter_conforms(check) -> None:  # type: ignore[no-untyped-def]
    check()
