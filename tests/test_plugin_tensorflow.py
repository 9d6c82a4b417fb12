"""TensorFlow tf.function / tf.Module / SavedModel through tf2onnx: each converted model is
compared with TensorFlow's own eager output.

Run by the `frameworks` nox session (ONNXBRIDGE_REQUIRE_FRAMEWORKS=1); skipped elsewhere, since
TensorFlow and torch's triton crash in one process (see tests/test_plugin_keras.py).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if os.environ.get("ONNXBRIDGE_REQUIRE_FRAMEWORKS") != "1":
    pytest.skip("TensorFlow crashes torch's triton import in the same process: run"
                " `nox -s frameworks` (or set ONNXBRIDGE_REQUIRE_FRAMEWORKS=1)", allow_module_level=True)

tf = importlib.import_module("tensorflow")  # missing here is a failure, not a skip
importlib.import_module("tf2onnx")

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


def _var(*shape: int, seed: int) -> Any:
    return tf.Variable(np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.5)


class Dense(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1, self.b1 = _var(8, 16, seed=1), _var(16, seed=2)
        self.w2, self.b2 = _var(16, 3, seed=3), _var(3, seed=4)

    @tf.function
    def __call__(self, x: Any) -> Any:
        return tf.nn.softmax(tf.nn.relu(x @ self.w1 + self.b1) @ self.w2 + self.b2)


class Cnn(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.k = _var(3, 3, 3, 4, seed=5)
        self.w = _var(4, 2, seed=6)

    def __call__(self, x: Any) -> Any:  # a plain method: the converter traces it
        h = tf.nn.relu(tf.nn.conv2d(x, self.k, strides=1, padding="SAME"))
        h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        return tf.reduce_mean(h, axis=[1, 2]) @ self.w


class Attention(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (_var(8, 8, seed=s) for s in (7, 8, 9))

    def __call__(self, x: Any) -> Any:
        q, k, v = x @ self.q, x @ self.k, x @ self.v
        scores = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / np.sqrt(8.0).astype(np.float32))
        return tf.reduce_sum(scores @ v, axis=1)


class Rnn(tf.Module):
    """A simple recurrent net unrolled by tf.scan (a while loop in the graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.wx, self.wh = _var(4, 6, seed=10), _var(6, 6, seed=11)

    def __call__(self, x: Any) -> Any:  # x: [batch, time, 4]
        h0 = tf.zeros([tf.shape(x)[0], 6])
        steps = tf.scan(lambda h, xt: tf.tanh(xt @ self.wx + h @ self.wh), tf.transpose(x, [1, 0, 2]),
                        initializer=h0)
        return steps[-1]


def _eager(fn: Any, sample: Any) -> list[np.ndarray]:
    out = fn(**sample) if isinstance(sample, dict) else (
        fn(*sample) if isinstance(sample, tuple) else fn(sample))
    return [np.asarray(t) for t in tf.nest.flatten(out)]


def _assert_matches(m: onnxbridge.OnnxModel, fn: Any, sample: Any) -> None:
    got = m.run(sample) if not isinstance(sample, dict) else m.run(**sample)
    got = list(got) if isinstance(got, tuple) else [got]
    want = _eager(fn, sample)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_module_with_a_tf_function_batch_one_runs_at_other_batch_sizes() -> None:
    model = Dense()
    m = onnxbridge.to_onnx(model, _x(1, 8))
    assert m.parity.passed and m.parity.batch_sizes == [1, 3]
    assert m.inputs[0].shape == ("batch", 8) and m.output_names == ["output"]
    assert m.metadata.get("onnxbridge.framework", "tensorflow") == "tensorflow"
    for batch in (5, 64):
        _assert_matches(m, model, _x(batch, 8))


def test_cnn_module_with_a_plain_call() -> None:
    model = Cnn()
    m = onnxbridge.to_onnx(model, _x(1, 8, 8, 3))
    assert m.parity.passed
    _assert_matches(m, model, _x(4, 8, 8, 3))


def test_attention_and_a_scan_rnn() -> None:
    for model, shape in ((Attention(), (5, 8)), (Rnn(), (7, 4))):
        m = onnxbridge.to_onnx(model, _x(1, *shape))
        assert m.parity.passed
        _assert_matches(m, model, _x(6, *shape))


def test_a_bare_tf_function_with_two_inputs_and_a_dict_output() -> None:
    w = _var(4, 3, seed=12)

    @tf.function
    def scores(x: Any, meta: Any) -> Any:
        h = tf.tanh(x @ w + meta)
        return {"score": tf.reduce_sum(h, axis=-1, keepdims=True), "hidden": h}

    m = onnxbridge.to_onnx(scores, (_x(1, 4), _x(1, 3)))
    assert m.parity.passed
    assert m.input_names == ["input_0", "input_1"]
    assert m.output_names == ["hidden", "score"]  # sorted keys, as tf.nest flattens a dict
    x, meta = _x(9, 4), _x(9, 3)
    got = m.run(x, meta, as_dict=True)
    want = scores(x, meta)
    for key in ("score", "hidden"):
        np.testing.assert_allclose(got[key], want[key].numpy(), rtol=1e-4, atol=1e-5)


def test_saved_model_folder_by_call_and_by_signature(tmp_path: Path) -> None:
    class Served(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = _var(3, 2, seed=13)

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="features")])
        def __call__(self, features: Any) -> Any:
            return {"logits": features @ self.w}

    original = Served()
    tf.saved_model.save(original, str(tmp_path / "served"),
                        signatures=original.__call__.get_concrete_function())
    loaded = tf.saved_model.load(str(tmp_path / "served"))
    x = _x(5, 3)
    want = (x @ original.w.numpy())
    by_call = onnxbridge.to_onnx(loaded, _x(1, 3))
    np.testing.assert_allclose(by_call.run(x), want, rtol=1e-5, atol=1e-6)
    by_signature = onnxbridge.to_onnx(loaded, {"features": _x(1, 3)})
    assert by_signature.input_names == ["features"] and by_signature.output_names == ["logits"]
    np.testing.assert_allclose(by_signature.run(features=x), want, rtol=1e-5, atol=1e-6)


def test_saved_model_folder_from_the_command_line_with_trust(tmp_path: Path) -> None:
    from onnxbridge.cli import main

    class Served(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = _var(3, 2, seed=17)

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="features")])
        def __call__(self, features: Any) -> Any:
            return {"logits": tf.nn.relu(features @ self.w)}

    original = Served()
    folder = tmp_path / "served"
    tf.saved_model.save(original, str(folder), signatures=original.__call__.get_concrete_function())
    np.save(tmp_path / "x.npy", _x(1, 3))
    out = tmp_path / "served.onnx"
    args = ["convert", str(folder), "-s", str(tmp_path / "x.npy"), "-o", str(out)]
    assert main(args) != 0 and not out.exists()  # a SavedModel runs graph code: --trust first
    assert main([*args, "--trust"]) == 0
    x = _x(6, 3)
    want = np.maximum(x @ original.w.numpy(), 0)
    np.testing.assert_allclose(onnxbridge.load(out).run(x), want, rtol=1e-5, atol=1e-6)


def test_fixed_batch_when_asked() -> None:
    m = onnxbridge.to_onnx(Dense(), _x(2, 8), dynamic_batch=False)
    assert m.inputs[0].shape == (2, 8) and m.parity.passed


def test_unsupported_operation_is_named() -> None:
    @tf.function
    def eigen(x: Any) -> Any:
        return tf.linalg.eigh(tf.matmul(x, x, transpose_a=True))[0]

    with pytest.raises(UnsupportedOperatorError, match="SelfAdjointEigV2") as info:
        onnxbridge.to_onnx(eigen, _x(1, 4))
    assert "SelfAdjointEigV2" in info.value.operators and info.value.framework == "tensorflow"


def test_wrong_samples_and_modules_without_a_call_are_conversion_errors() -> None:
    with pytest.raises(ConversionError, match="numpy arrays"):
        onnxbridge.to_onnx(Dense(), "not an array")
    with pytest.raises(ConversionError, match="calling the Dense"):
        onnxbridge.to_onnx(Dense(), _x(1, 5))  # wrong feature count
    with pytest.raises(ConversionError, match="no __call__"):
        onnxbridge.to_onnx(tf.Module(), _x(1, 2))


def test_keras_models_still_go_to_the_keras_converter() -> None:
    keras = importlib.import_module("keras")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert onnxbridge.converters is not None
    assert Registry().resolve(model).name == "keras"
    assert Registry().resolve(Dense()).name == "tensorflow"


def test_without_the_plugin_the_error_names_the_extra() -> None:
    with pytest.raises(ConverterNotFoundError, match=r'pip install "onnxbridge\[tensorflow\]"'):
        Registry(discover=False).resolve(Dense())


@parametrize_with_checks("tensorflow", [Case(Dense(), _x(1, 8), id="dense"),
                                        Case(Cnn(), _x(2, 8, 8, 3), id="cnn")])
def test_tensorflow_converter_conforms(check) -> None:  # type: ignore[no-untyped-def]
    check()
