"""Keras 3 models on the TensorFlow backend: each converted model is compared with Keras's own output.

Run by the `frameworks` nox session, which sets ONNXBRIDGE_REQUIRE_FRAMEWORKS=1 (a missing
framework is then a failure); skipped elsewhere (see below why).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

# Modest threads on a shared machine; set before TensorFlow is imported.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _require(name: str) -> Any:
    if os.environ.get("ONNXBRIDGE_REQUIRE_FRAMEWORKS") == "1":
        return importlib.import_module(name)  # missing here is a failure, not a skip
    return pytest.importorskip(name)


# TensorFlow 2.21 loaded in a process makes a later `import triton` (torch.export, torch 2.14)
# crash it with a segmentation fault (seen here when the whole suite ran), so these tests run in
# their own process: `nox -s frameworks`, which sets ONNXBRIDGE_REQUIRE_FRAMEWORKS=1.
if os.environ.get("ONNXBRIDGE_REQUIRE_FRAMEWORKS") != "1":
    pytest.skip("TensorFlow crashes torch's triton import in the same process: run"
                " `nox -s frameworks` (or set ONNXBRIDGE_REQUIRE_FRAMEWORKS=1)", allow_module_level=True)

tf = _require("tensorflow")
keras = _require("keras")
_require("tf2onnx")

from _keras_backends import OTHER_BACKEND  # noqa: E402

import onnxbridge  # noqa: E402
from onnxbridge.errors import (  # noqa: E402
    ConversionError,
    ConverterNotFoundError,
    UnsupportedOperatorError,
)
from onnxbridge.registry import Registry  # noqa: E402
from onnxbridge.testing import Case, parametrize_with_checks  # noqa: E402

if keras.backend.backend() != "tensorflow":  # pragma: no cover - another backend was chosen
    pytest.skip("these tests run Keras on the TensorFlow backend", allow_module_level=True)

RNG = np.random.default_rng(0)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _dense() -> Any:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(3, activation="softmax")])


def _cnn() -> Any:
    keras.utils.set_random_seed(1)
    inp = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inp, keras.layers.Dense(2)(h))


def _own(model: Any, sample: Any) -> list[np.ndarray]:
    """Keras's own prediction, flattened in the converter's output order."""
    out = model.predict(sample, verbose=0)
    return [np.asarray(a) for a in tf.nest.flatten(out)]


def _assert_matches(m: onnxbridge.OnnxModel, model: Any, sample: Any) -> None:
    got = m.run(sample)
    got = list(got) if isinstance(got, tuple) else [got]
    want = _own(model, sample)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_sequential_dense_batch_one_runs_at_other_batch_sizes() -> None:
    model = _dense()
    m = onnxbridge.to_onnx(model, _x(1, 8))
    assert m.parity.passed and m.parity.verified
    assert m.inputs[0].shape == ("batch", 8) and m.output_names == ["output"]
    _assert_matches(m, model, _x(5, 8))
    _assert_matches(m, model, _x(64, 8))


def test_functional_cnn() -> None:
    model = _cnn()
    m = onnxbridge.to_onnx(model, _x(1, 12, 12, 3))
    assert m.parity.passed
    _assert_matches(m, model, _x(4, 12, 12, 3))


def test_lstm() -> None:
    keras.utils.set_random_seed(2)
    inp = keras.Input((6, 4))
    model = keras.Model(inp, keras.layers.Dense(1)(keras.layers.LSTM(5)(inp)))
    m = onnxbridge.to_onnx(model, _x(1, 6, 4))
    assert m.parity.passed
    _assert_matches(m, model, _x(3, 6, 4))


def test_attention() -> None:
    keras.utils.set_random_seed(3)
    inp = keras.Input((6, 8))
    att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(inp, inp)
    model = keras.Model(inp, keras.layers.LayerNormalization()(att + inp))
    m = onnxbridge.to_onnx(model, _x(1, 6, 8))
    assert m.parity.passed
    _assert_matches(m, model, _x(3, 6, 8))


def test_two_named_inputs_and_dict_output() -> None:
    keras.utils.set_random_seed(4)
    a = keras.Input((4,), name="a")
    b = keras.Input((3,), name="b")
    h = keras.layers.Dense(5, activation="tanh")(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b},
                        {"score": keras.layers.Dense(1)(h), "embedding": keras.layers.Dense(2)(h)})
    sample = {"a": _x(1, 4), "b": _x(1, 3)}
    m = onnxbridge.to_onnx(model, sample)
    assert m.parity.passed
    assert sorted(m.input_names) == ["a", "b"]
    assert m.output_names == ["embedding", "score"]  # sorted keys, as tf.nest flattens
    other = {"a": _x(6, 4), "b": _x(6, 3)}
    want = model.predict(other, verbose=0)
    got = m.run(other, as_dict=True)
    for key in ("score", "embedding"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5)


def test_two_positional_inputs_take_the_functional_names() -> None:
    keras.utils.set_random_seed(5)
    a, b = keras.Input((4,), name="left"), keras.Input((4,), name="right")
    model = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Multiply()([a, b])))
    m = onnxbridge.to_onnx(model, (_x(1, 4), _x(1, 4)))
    assert m.input_names == ["left", "right"] and m.parity.passed
    sample = (_x(7, 4), _x(7, 4))
    np.testing.assert_allclose(m.run(sample), model.predict(list(sample), verbose=0),
                               rtol=1e-4, atol=1e-5)


class Residual(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.inner = keras.layers.Dense(6, activation="relu")
        self.out = keras.layers.Dense(6)

    def call(self, x: Any) -> Any:
        return x + self.out(self.inner(x))


def test_subclassed_model_never_called_before() -> None:
    keras.utils.set_random_seed(6)
    model = Residual()
    assert not model.built  # Keras's own export refuses this; the sample builds it
    m = onnxbridge.to_onnx(model, _x(1, 6))
    assert m.parity.passed
    _assert_matches(m, model, _x(9, 6))


def test_fixed_batch_when_asked() -> None:
    m = onnxbridge.to_onnx(_dense(), _x(2, 8), dynamic_batch=False)
    assert m.inputs[0].shape == (2, 8) and m.parity.passed


class Eigen(keras.Model):
    def call(self, x: Any) -> Any:
        return tf.linalg.eigh(tf.matmul(x, x, transpose_a=True))[0]


def test_unsupported_operation_is_named() -> None:
    with pytest.raises(UnsupportedOperatorError, match="SelfAdjointEigV2") as info:
        onnxbridge.to_onnx(Eigen(), _x(1, 4))
    assert info.value.operators == ("SelfAdjointEigV2",) or "SelfAdjointEigV2" in info.value.operators


def test_sample_of_the_wrong_kind_is_a_conversion_error() -> None:
    with pytest.raises(ConversionError, match="numpy arrays"):
        onnxbridge.to_onnx(_dense(), "not an array")
    with pytest.raises(ConversionError, match="calling the Keras model"):
        onnxbridge.to_onnx(_dense(), _x(1, 5))  # wrong feature count


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax"])
def test_jax_backend_converts(backend: str) -> None:
    """Attention + LSTM and a two-input dict-output model under KERAS_BACKEND=jax, in its own
    process (the backend is chosen when keras is imported). The torch backend is tested in
    test_plugin_keras_torch.py, in `nox -s tests` (this session has no torch)."""
    pytest.importorskip(backend)
    env = {**os.environ, "KERAS_BACKEND": backend}
    out = subprocess.run([sys.executable, "-c", OTHER_BACKEND, backend], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert f"converted on {backend}" in out.stdout


def test_without_the_plugin_the_error_names_the_extra() -> None:
    with pytest.raises(ConverterNotFoundError, match=r'pip install "onnxbridge\[keras\]"'):
        Registry(discover=False).resolve(_dense())


def test_model_is_not_modified() -> None:
    model = _dense()
    before = [w.copy() for w in model.get_weights()]
    onnxbridge.to_onnx(model, _x(1, 8))
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@parametrize_with_checks("keras", [Case(_dense(), _x(1, 8), id="dense"),
                                   Case(_cnn(), _x(2, 12, 12, 3), id="cnn")])
def test_keras_converter_conforms(check) -> None:  # type: ignore[no-untyped-def]
    check()
