"""The script that converts Keras models under another backend, in a process of its own (Keras
chooses its backend when it is imported): attention + LSTM, and a two-input dict-output model,
each compared with Keras's own ``predict``. Used by test_plugin_keras.py (JAX) and
test_plugin_keras_torch.py (PyTorch)."""

import textwrap

OTHER_BACKEND = textwrap.dedent(
    """
    import sys
    import numpy as np, keras, onnxbridge
    assert keras.backend.backend() == sys.argv[1]
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    inp = keras.Input((6, 8))
    att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(inp, inp)
    h = keras.layers.LSTM(5)(keras.layers.LayerNormalization()(att + inp))
    model = keras.Model(inp, keras.layers.Dense(2)(h))
    m = onnxbridge.to_onnx(model, rng.standard_normal((1, 6, 8)).astype(np.float32))
    assert m.parity.passed and m.inputs[0].shape == ("batch", 6, 8), m.parity
    x = rng.standard_normal((7, 6, 8)).astype(np.float32)
    np.testing.assert_allclose(m.run(x), model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    h = keras.layers.Dense(5, activation="tanh")(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b},
                        {"score": keras.layers.Dense(1)(h), "embedding": keras.layers.Dense(2)(h)})
    m = onnxbridge.to_onnx(model, {"a": np.ones((1, 4), np.float32), "b": np.ones((1, 3), np.float32)})
    assert m.input_names == ["a", "b"] and m.output_names == ["embedding", "score"]
    other = {"a": rng.standard_normal((5, 4)).astype(np.float32),
             "b": rng.standard_normal((5, 3)).astype(np.float32)}
    got, want = m.run(other, as_dict=True), model.predict(other, verbose=0)
    for key in ("score", "embedding"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5)
    print("converted on", sys.argv[1], m.metadata.get("onnxbridge.framework_version", ""))
    """
)
