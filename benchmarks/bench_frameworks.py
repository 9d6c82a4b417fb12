"""Keras (TensorFlow backend), TensorFlow and JAX: conversion time against the peer tool called
directly, and onnxruntime against the framework's own CPU inference at batch 1 and 64.

Conversion: ``onnxbridge.to_onnx`` (trace, convert, post-process and the parity check at two
batch sizes) against what a careful user calls by hand: Keras's own
``model.export(format="onnx")``, ``tf2onnx.convert.from_function``, ``jax2onnx.to_onnx``. Each
is timed as the median of a few conversions after one untimed warm-up (the first conversion in
a process loads tf2onnx's / jax2onnx's plugins).

Inference: one onnxruntime session (CPU, one intra-op thread) against the model's call
compiled as a ``tf.function`` (Keras) or the jitted function (JAX), compiled before timing,
each limited to one thread. Calls alternate round by round so load from other
processes hits both alike; the ratio is the median of per-round ratios (< 1: onnxruntime is
faster).

Runs without torch in the process (TensorFlow 2.21 and torch's triton crash together):

    python benchmarks/bench_frameworks.py --out bench.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np
from _common import median_seconds, report

RNG = np.random.default_rng(0)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _alternate(a: Callable[[], Any], b: Callable[[], Any], rounds: int) -> tuple[float, float, float]:
    """Median seconds of a and b, and the median per-round ratio a/b, calls alternating."""
    a()
    b()
    ta, tb, ratios = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
        ratios.append((t1 - t0) / max(t2 - t1, 1e-12))
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios)


def _keras_models() -> dict[str, tuple[Any, tuple[int, ...]]]:
    import keras

    keras.utils.set_random_seed(0)
    mlp = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
                            keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])
    inp = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(16, 3, activation="relu")(inp)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(32, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    cnn = keras.Model(inp, keras.layers.Dense(10)(h))
    return {"keras MLP 64-256-256-10": (mlp, (64,)), "keras CNN 32x32x3": (cnn, (32, 32, 3))}


def _jax_models() -> dict[str, tuple[Any, tuple[int, ...]]]:
    import jax

    w1, w2, w3 = _x(64, 256) * 0.1, _x(256, 256) * 0.1, _x(256, 10) * 0.1

    @jax.jit
    def mlp(x: Any) -> Any:
        return jax.nn.relu(jax.nn.relu(x @ w1) @ w2) @ w3

    wq, wk, wv = (_x(32, 32) * 0.1 for _ in range(3))

    @jax.jit
    def attention(x: Any) -> Any:
        q, k, v = x @ wq, x @ wk, x @ wv
        return jax.nn.softmax(q @ k.swapaxes(-1, -2) / 32 ** 0.5, axis=-1) @ v

    return {"jax MLP 64-256-256-10": (mlp, (64,)), "jax attention 16x32": (attention, (16, 32))}


def conversion_rows(repeats: int) -> list[str]:
    import jax
    import jax2onnx
    import tensorflow as tf
    import tf2onnx
    from jax import export

    import onnxbridge

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, shape) in _keras_models().items():
            sample = _x(1, *shape)
            model(sample)
            ours = median_seconds(lambda m=model, s=sample: onnxbridge.to_onnx(m, s), repeats)
            path = os.path.join(tmp, "m.onnx")
            peer = median_seconds(lambda m=model, p=path: m.export(p, format="onnx", verbose=False),
                                  repeats)
            rows.append(f"| {name} | `model.export(format='onnx')` | {ours:.2f} | {peer:.2f} |"
                        f" {ours / peer:.2f} |")

            spec = [tf.TensorSpec((None, *shape), tf.float32)]
            fn = tf.function(lambda x, m=model: m(x, training=False), input_signature=spec)
            peer = median_seconds(
                lambda f=fn, s=spec: tf2onnx.convert.from_function(f, input_signature=s, opset=18),
                repeats)
            rows.append(f"| {name} | `tf2onnx.convert.from_function` | {ours:.2f} | {peer:.2f} |"
                        f" {ours / peer:.2f} |")
    batch = export.symbolic_shape("batch")[0]
    for name, (fn, shape) in _jax_models().items():
        sample = _x(1, *shape)
        ours = median_seconds(lambda f=fn, s=sample: onnxbridge.to_onnx(f, s), repeats)
        inputs = [jax.ShapeDtypeStruct((batch, *shape), np.float32)]
        peer = median_seconds(lambda f=fn, i=inputs: jax2onnx.to_onnx(f, i, opset=21), repeats)
        rows.append(f"| {name} | `jax2onnx.to_onnx` | {ours:.2f} | {peer:.2f} | {ours / peer:.2f} |")
    return rows


def inference_rows(rounds: int) -> list[str]:

    import onnxbridge

    rows = []
    models: list[tuple[str, Any, tuple[int, ...], Callable[[Any, np.ndarray], Any]]] = []
    import tensorflow as tf

    for name, (model, shape) in _keras_models().items():
        # the model's call compiled as a tf.function (Keras's eager call costs ~100x more here)
        compiled = tf.function(lambda x, m=model: m(x, training=False), reduce_retracing=True)
        models.append((f"{name} (tf.function)", model, shape,
                       lambda m, x, c=compiled: c(x).numpy()))
    for name, (fn, shape) in _jax_models().items():
        models.append((name, fn, shape, lambda f, x: f(x).block_until_ready()))
    for name, model, shape, own in models:
        m = onnxbridge.to_onnx(model, _x(1, *shape))
        session = m.session("cpu", threads=1)
        feed_name = m.input_names[0]
        for batch in (1, 64):
            x = _x(batch, *shape)
            t_ort, t_own, ratio = _alternate(lambda s=session, n=feed_name, x=x: s.run(None, {n: x}),
                                             lambda f=own, mo=model, x=x: f(mo, x), rounds)
            rows.append(f"| {name} | {batch} | {t_ort * 1e3:.3f} | {t_own * 1e3:.3f} | {ratio:.3g} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="append the tables to this Markdown file")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats, rounds = (2, 30) if args.quick else (3, 200)
    conversion = conversion_rows(repeats)
    inference = inference_rows(rounds)
    text = "\n".join([
        "### Keras, TensorFlow and JAX (bench_frameworks.py)",
        "",
        "Conversion, seconds (median; onnxbridge includes the parity check at two batch sizes):",
        "",
        "| model | peer tool called directly | onnxbridge.to_onnx | peer | ratio |",
        "|---|---|---|---|---|",
        *conversion,
        "",
        "CPU inference, ms per call, one thread each (ratio < 1: onnxruntime is faster):",
        "",
        "| model | batch | onnxruntime | framework | ratio |",
        "|---|---|---|---|---|",
        *inference,
    ])
    report(text, args.out)


if __name__ == "__main__":
    main()
