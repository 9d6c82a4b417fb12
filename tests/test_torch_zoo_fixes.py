"""Failures found by benchmarks/sweep_torch_zoo.py, each checked against the torch model itself.

Tiny random-weight transformers configs; each ONNX model runs at a size other than the
sample's and is compared with the torch model's own output there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import onnxbridge  # noqa: E402


@pytest.mark.slow
def test_raw_audio_models_take_clips_of_any_length() -> None:
    # Wav2Vec2 / HuBERT read raw audio (input_values [batch, samples]): the samples axis is
    # the sequence; it was fixed at the sample's length.
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=24, conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8),
        num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)
    model = transformers.Wav2Vec2ForCTC(config).eval()
    m = onnxbridge.to_onnx(model, {"input_values": torch.randn(2, 600)})
    assert m.inputs[0].shape == ("batch", "sequence")
    clip = torch.randn(3, 680)
    with torch.no_grad():
        want = model(input_values=clip).logits.numpy()
    got = m.run(input_values=clip.numpy())
    assert got.shape == want.shape == (3, 32, 20)  # 680 samples: 32 frames
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


class ScalesItsInput(torch.nn.Module):  # type: ignore[name-defined]
    def forward(self, x: Any) -> Any:
        x.mul_(2)  # written into the caller's tensor
        return x + 1


@pytest.mark.parametrize("build", [ScalesItsInput, lambda: torch.nn.Sequential(
    torch.nn.ReLU(inplace=True), torch.nn.Linear(6, 3))], ids=["mul_", "relu-inplace"])
def test_a_forward_that_writes_into_its_input_converts_and_leaves_the_sample_alone(
        build: Any) -> None:
    torch.manual_seed(0)
    model = build().eval()
    sample = torch.randn(2, 6)
    given = sample.clone()
    m = onnxbridge.to_onnx(model, sample)
    assert torch.equal(sample, given)  # onnxbridge's own runs did not change the user's data
    assert m.parity is not None and m.parity.passed
    other = torch.randn(3, 6)
    with torch.no_grad():
        want = model(other.clone()).numpy()
    np.testing.assert_allclose(m.run(other.numpy()), want, atol=1e-5, rtol=1e-4)


class LoopsOverTheBatch(torch.nn.Module):  # type: ignore[name-defined]
    def forward(self, x: Any) -> Any:
        return torch.stack([x[i] * (i + 1) for i in range(x.shape[0])])


@pytest.mark.slow
def test_a_batch_the_code_fixes_is_kept_at_the_sample_size_and_said() -> None:
    # torch.export reports the loop fixes the batch; the TorchScript fallback baked the loop
    # into a graph that failed at any other batch (a ParityError naming a size onnxbridge chose).
    model = LoopsOverTheBatch().eval()
    sample = torch.randn(2, 6)
    with pytest.warns(onnxbridge.OnnxBridgeWarning, match="sample's sizes only"):
        m = onnxbridge.to_onnx(model, sample)
    assert m.inputs[0].shape == (2, 6)
    assert m.parity is not None and m.parity.passed
    assert any("x[0] (batch) = 2" in note and "Python loop" in note for note in m.parity.notes)
    other = torch.randn(2, 6)
    np.testing.assert_allclose(m.run(other.numpy()), model(other).numpy(), rtol=1e-6)
    with pytest.raises(onnxbridge.InputError, match=r"axis 0 must be 2"):
        m.run(torch.randn(3, 6).numpy())
