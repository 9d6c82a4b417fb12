"""Axes that follow meaning, verification on fresh values, runtime errors explained, state kept.

Random weights, tiny configs; every ONNX result is compared with the framework's own output.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import onnxbridge  # noqa: E402
from onnxbridge import ConversionError, OnnxBridgeWarning, ParityError  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def eager(model: torch.nn.Module, *args: object, **kwargs: object) -> object:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(*args, **kwargs)
    finally:
        model.train(was)


def close(actual: np.ndarray, expected: torch.Tensor) -> None:
    np.testing.assert_allclose(actual, expected.numpy(), atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_bart_decoder_sequence_is_not_the_encoder_sequence() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BartConfig(
        vocab_size=100, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=64)
    model = transformers.BartForConditionalGeneration(config)
    sample = {"input_ids": torch.randint(3, 100, (2, 9)),
              "attention_mask": torch.ones(2, 9, dtype=torch.long),
              "decoder_input_ids": torch.randint(3, 100, (2, 5))}
    m = onnxbridge.to_onnx(model, sample)  # failed on the user's own sample before
    shapes = {s.name: s.shape for s in m.inputs}
    assert shapes["decoder_input_ids"] == ("batch", "decoder_sequence")
    assert shapes["input_ids"] == ("batch", "sequence")
    feeds = {"input_ids": torch.randint(3, 100, (3, 12)),
             "attention_mask": torch.ones(3, 12, dtype=torch.long),
             "decoder_input_ids": torch.randint(3, 100, (3, 4))}
    close(m.run(feeds, as_dict=True)["logits"], eager(model, **feeds, use_cache=False).logits)


def test_multiple_choice_axes_are_batch_choices_sequence() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertForMultipleChoice(config)
    sample = {"input_ids": torch.randint(0, 100, (2, 4, 7)),
              "attention_mask": torch.ones(2, 4, 7, dtype=torch.long)}
    m = onnxbridge.to_onnx(model, sample)
    assert [s.shape for s in m.inputs] == [("batch", "choices", "sequence")] * 2
    feeds = {"input_ids": torch.randint(0, 100, (1, 3, 11)),
             "attention_mask": torch.ones(1, 3, 11, dtype=torch.long)}
    close(m.run(feeds), eager(model, **feeds).logits)


def test_time_first_lstm_with_state_has_batch_on_axis_one() -> None:
    model = torch.nn.LSTM(4, 8, num_layers=2)  # (time, batch, features); h0/c0 (layers, batch, hidden)
    sample = (torch.randn(5, 3, 4), (torch.randn(2, 3, 8), torch.randn(2, 3, 8)))
    m = onnxbridge.to_onnx(model, sample)
    assert [s.shape for s in m.inputs] == [("sequence", "batch", 4), (2, "batch", 8),
                                           (2, "batch", 8)]
    assert [s.shape[1] for s in m.outputs] == ["batch"] * 3
    assert len(m.parity.batch_sizes) >= 2  # checked at a second batch size, on axis 1
    x, h, c = torch.randn(9, 2, 4), torch.randn(2, 2, 8), torch.randn(2, 2, 8)
    out, (hn, cn) = eager(model, x, (h, c))
    y, hy, cy = m.run(x, h, c)
    close(y, out)
    close(hy, hn)
    close(cy, cn)


class StepCounter(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        return self.lin(x)


def test_model_that_counts_its_own_calls_converts_and_keeps_its_state() -> None:
    model = StepCounter()
    model.steps.fill_(7)
    m = onnxbridge.to_onnx(model, torch.randn(2, 4))
    assert m.parity.passed
    assert int(model.steps) == 7  # onnxbridge's own runs left no trace
    x = torch.randn(3, 4)
    close(m.run(x), eager(model, x))


class BakedSize(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(int(x.shape[0]), 2, 2).sum(-1)  # int(): TorchScript keeps the sample's 2


def test_runtime_error_on_a_size_onnxbridge_chose_says_so() -> None:
    with pytest.raises(ParityError) as info:
        onnxbridge.to_onnx(BakedSize(), torch.randn(2, 4), exporter="torchscript")
    text = str(info.value)
    assert "onnxruntime failed to run the ONNX model on batch size 1" in text
    assert "onnxbridge chose" in text and "x [1, 4]" in text
    assert "likely cause: the exporter baked a size" in text
    assert "[ONNXRuntimeError]" in text  # the original message is kept, after ours


def test_bfloat16_model_gets_the_fix_and_float32_compute_works() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 2)).to(torch.bfloat16)
    x = torch.randn(2, 4, dtype=torch.bfloat16)
    with pytest.raises(ConversionError, match=r"bfloat16.*compute_dtype='float32'"):
        onnxbridge.to_onnx(model, x)
    m = onnxbridge.to_onnx(model, x, compute_dtype="float32")
    assert next(model.parameters()).dtype == torch.bfloat16  # the user's model is not cast
    assert m.inputs[0].dtype == np.float32
    x32 = torch.randn(3, 4)
    close(m.run(x32), eager(model.float(), x32))


FAKE = '''
import numpy as np
import onnx
from onnx import TensorProto, helper
from onnxbridge.registry import ConversionResult


class RowSum:
    pass


def convert(model, sample, options):
    # A converter that memorised the sample: right on its rows, wrong on any other value.
    row = np.asarray(sample, np.float32).sum(axis=1)[:1]
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["zero"], keepdims=1),
         helper.make_node("Mul", ["zero", "nought"], ["z"]),
         helper.make_node("Add", ["z", "row"], ["y"])],
        "memorised",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
         helper.make_tensor("nought", TensorProto.FLOAT, [], [0.0]),
         helper.make_tensor("row", TensorProto.FLOAT, [1, 1], row.tolist())],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 9
    return ConversionResult(proto=proto,
                            reference=lambda x: [np.asarray(x, np.float32).sum(1, keepdims=True)])
'''


def test_fresh_values_catch_a_converter_that_only_fits_the_sample(tmp_path: Path) -> None:
    (tmp_path / "memoplugin.py").write_text(textwrap.dedent(FAKE))
    sys.path.insert(0, str(tmp_path))
    try:
        import memoplugin  # type: ignore[import-not-found]

        from onnxbridge.registry import ConverterSpec

        onnxbridge.register(ConverterSpec(name="memo", classes=("memoplugin.RowSum",),
                                          converter="memoplugin:convert"), replace=True)
        sample = np.array([[1.0, 2.0, 4.0]], np.float32)  # one row: repeating it changes nothing
        with pytest.raises(ParityError, match="FAIL y") as info:
            onnxbridge.to_onnx(memoplugin.RowSum(), sample, converter="memo")
        assert info.value.report.outputs[0].passed  # the sample itself passed
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("memoplugin", None)


def test_a_model_without_a_second_size_warns_instead_of_passing() -> None:
    model = torch.nn.Linear(4, 2)
    with pytest.warns(OnnxBridgeWarning, match="second batch size could not be tried"):
        m = onnxbridge.to_onnx(model, torch.randn(2, 4), dynamic_batch=True,
                               dynamic_axes={"input": {0: None}})
    assert any("second batch size" in n for n in m.parity.notes)


def test_list_sample_of_images_is_one_argument() -> None:
    class ImageList(torch.nn.Module):
        def forward(self, images: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack([im.mean(dim=(1, 2)) for im in images])

    model = ImageList()
    imgs = [torch.randn(3, 8, 8), torch.randn(3, 8, 8)]
    m = onnxbridge.to_onnx(model, imgs)
    assert m.input_names == ["images_0", "images_1"]
    other = [torch.randn(3, 8, 8), torch.randn(3, 8, 8)]
    close(m.run(*other), eager(model, other))
