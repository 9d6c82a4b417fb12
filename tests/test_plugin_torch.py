"""The PyTorch converter: real exports, real onnxruntime runs, random weights only."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import onnxbridge  # noqa: E402
from onnxbridge import ConversionError, UnsupportedOperatorError  # noqa: E402
from onnxbridge.plugins._torch_export import flatten_outputs  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def eager(model: torch.nn.Module, *args: torch.Tensor, **kwargs: torch.Tensor) -> object:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(*args, **kwargs)
    finally:
        model.train(was)


def assert_close(actual: np.ndarray, expected: torch.Tensor, atol: float = 1e-4) -> None:
    np.testing.assert_allclose(actual, expected.numpy(), atol=atol, rtol=1e-3)


def symbolic(dim: object) -> bool:
    return isinstance(dim, str)


# -- small models --------------------------------------------------------------------------------
class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 3)

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.proj(image.mean(dim=(2, 3))[:, :4] + meta)
        return {"scores": feats.softmax(-1), "pooled": image.amax(dim=(2, 3))}


class Sequence(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 8, batch_first=True)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class Eigen(torch.nn.Module):
    """linalg.eigvalsh has no ONNX translation in either exporter."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Sequential(torch.nn.Linear(4, 4), SpectrumBlock())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class SpectrumBlock(torch.nn.Module):
    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvalsh(y.unsqueeze(-1) * y.unsqueeze(-2))


class ValueBranch(torch.nn.Module):
    """Control flow on a tensor value: torch.export refuses it, TorchScript tracing bakes it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().sum() > 0:
            return self.lin(x) * 2
        return self.lin(x)


def tiny_vit() -> torch.nn.Module:
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=10,
    )


# -- vision ------------------------------------------------------------------------------------
def test_small_vit_batch_one_sample_gives_dynamic_batch() -> None:
    model = tiny_vit()
    m = onnxbridge.to_onnx(model, torch.randn(1, 3, 32, 32))
    assert m.parity.passed
    assert m.parity.batch_sizes == [1, 3]
    assert symbolic(m.inputs[0].shape[0]) and m.inputs[0].shape[1:] == (3, 32, 32)
    x = torch.randn(6, 3, 32, 32)
    assert_close(m.run(x), eager(model, x))
    assert m.metadata["onnxbridge.torch.exporter"] == "dynamo"
    assert m.metadata["onnxbridge.converter"] == "torch"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_cnn(name: str) -> None:
    model = getattr(torchvision.models, name)(weights=None)
    m = onnxbridge.to_onnx(model, torch.randn(1, 3, 64, 64))
    assert m.parity.passed, m.parity
    assert [o.name for o in m.outputs] == ["output"]
    for batch in (1, 8):
        x = torch.randn(batch, 3, 64, 64)
        assert_close(m.run(x), eager(model, x))


@pytest.mark.slow
def test_vit_b_16_batch_one_sample_runs_at_batch_four() -> None:
    model = torchvision.models.vit_b_16(weights=None)
    m = onnxbridge.to_onnx(model, torch.randn(1, 3, 224, 224))
    assert m.parity.passed, m.parity
    x = torch.randn(4, 3, 224, 224)
    assert_close(m.run(x), eager(model, x))


# -- transformers ------------------------------------------------------------------------------
def test_bert_dict_sample_dynamic_batch_and_sequence() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    model = transformers.BertModel(config)
    sample = {
        "input_ids": torch.randint(0, 100, (1, 8)),
        "attention_mask": torch.ones(1, 8, dtype=torch.long),
        "token_type_ids": torch.zeros(1, 8, dtype=torch.long),
    }
    m = onnxbridge.to_onnx(model, sample)
    assert m.parity.passed, m.parity
    assert m.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert m.output_names == ["last_hidden_state", "pooler_output"]
    assert all(s.shape == ("batch", "sequence") for s in m.inputs)
    feeds = {
        "input_ids": torch.randint(0, 100, (3, 13)),
        "attention_mask": torch.ones(3, 13, dtype=torch.long),
        "token_type_ids": torch.zeros(3, 13, dtype=torch.long),
    }
    feeds["attention_mask"][0, 9:] = 0
    got = m.run(feeds, as_dict=True)
    want = eager(model, **feeds)
    assert_close(got["last_hidden_state"], want.last_hidden_state)
    assert_close(got["pooler_output"], want.pooler_output)


def test_gpt2_logits_at_other_lengths() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64,
        bos_token_id=0, eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config)
    m = onnxbridge.to_onnx(model, {"input_ids": torch.randint(0, 100, (2, 8))}, task="forward")
    assert m.parity.passed, m.parity
    assert m.output_names == ["logits"]  # the key/value cache is not exported
    assert any("use_cache=False" in n for n in m.parity.notes)
    ids = torch.randint(0, 100, (1, 21))
    assert_close(m.run(input_ids=ids), eager(model, input_ids=ids, use_cache=False).logits)


# -- structure ---------------------------------------------------------------------------------
def test_lstm_sequence_model() -> None:
    model = Sequence()
    m = onnxbridge.to_onnx(model, torch.randn(1, 5, 4))
    assert m.parity.passed
    x = torch.randn(7, 5, 4)
    assert_close(m.run(x), eager(model, x))


def test_bare_lstm_nested_tuple_outputs_are_named_depth_first() -> None:
    model = torch.nn.LSTM(4, 8, batch_first=True)
    m = onnxbridge.to_onnx(model, torch.randn(2, 5, 4))
    assert m.output_names == ["output_0", "output_1_0", "output_1_1"]
    x = torch.randn(3, 5, 4)
    out, (h, c) = eager(model, x)
    y, hy, cy = m.run(x)
    assert_close(y, out)
    assert_close(hy, h)
    assert_close(cy, c)


def test_two_inputs_tuple_sample_dict_output() -> None:
    model = TwoInputs()
    sample = (torch.randn(2, 4, 8, 8), torch.randn(2, 4))
    m = onnxbridge.to_onnx(model, sample)
    assert m.parity.passed
    assert m.input_names == ["image", "meta"]  # forward's parameter names
    assert m.output_names == ["scores", "pooled"]  # the dict's keys, in its order
    a, b = torch.randn(5, 4, 8, 8), torch.randn(5, 4)
    got = m.run(a, b, as_dict=True)
    want = eager(model, a, b)
    assert_close(got["scores"], want["scores"])
    assert_close(got["pooled"], want["pooled"])


def test_dict_sample_of_keyword_tensors() -> None:
    model = TwoInputs()
    m = onnxbridge.to_onnx(model, {"meta": torch.randn(1, 4), "image": torch.randn(1, 4, 8, 8)})
    assert m.input_names == ["meta", "image"]
    assert m.parity.passed


def test_input_and_output_names_can_be_given() -> None:
    m = onnxbridge.to_onnx(
        TwoInputs(), (torch.randn(2, 4, 8, 8), torch.randn(2, 4)),
        input_names=["pixels", "extra"], output_names=["p", "q"],
    )
    assert m.input_names == ["pixels", "extra"]
    assert m.output_names == ["p", "q"]


def test_flatten_outputs_order_and_names() -> None:
    t = torch.zeros(1)
    flat, skipped = flatten_outputs({"a": t, "b": (t, {"c": t}), "d": None, "e": 3})
    assert [n for n, _ in flat] == ["a", "b_0", "b_1.c"]
    assert skipped == ["e (int)"]
    assert [n for n, _ in flatten_outputs(t)[0]] == ["output"]
    assert [n for n, _ in flatten_outputs([t, (t, t)])[0]] == ["output_0", "output_1_0", "output_1_1"]


def test_dynamic_axes_marks_another_axis() -> None:
    model = Sequence()
    m = onnxbridge.to_onnx(model, torch.randn(2, 5, 4), dynamic_axes={"x": {1: "time"}})
    assert m.inputs[0].shape == ("batch", "time", 4)
    # verified on the sample, batch 1, another length, fresh values and permuted rows
    assert len(m.parity.outputs) == 5
    x = torch.randn(3, 11, 4)
    assert_close(m.run(x), eager(model, x))
    m2 = onnxbridge.to_onnx(model, torch.randn(2, 5, 4), dynamic_axes={"x": [1]})
    assert symbolic(m2.inputs[0].shape[1])


def test_dynamic_batch_false_keeps_the_sample_batch() -> None:
    m = onnxbridge.to_onnx(Sequence(), torch.randn(2, 5, 4), dynamic_batch=False)
    assert m.inputs[0].shape == (2, "sequence", 4)  # the LSTM's time axis stays dynamic
    assert m.parity.batch_sizes == [2]


def test_dynamic_axes_errors_name_the_inputs() -> None:
    with pytest.raises(ConversionError, match=r"not an input; the inputs are \['x'\]"):
        onnxbridge.to_onnx(Sequence(), torch.randn(2, 5, 4), dynamic_axes={"y": {1: "t"}})
    with pytest.raises(ConversionError, match="no axis 3"):
        onnxbridge.to_onnx(Sequence(), torch.randn(2, 5, 4), dynamic_axes={"x": {3: "t"}})


# -- modes -------------------------------------------------------------------------------------
def test_model_in_train_mode_is_exported_in_eval_and_left_in_train() -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Dropout(0.5), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2),
    )
    model.train()
    model[1].running_mean += 0.5  # non-trivial statistics, so eval and train outputs differ
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m = onnxbridge.to_onnx(model, torch.randn(2, 3, 8, 8))
    assert m.parity.passed, m.parity  # dropout off, running statistics used: eval semantics
    assert all(mod.training for mod in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BatchNorm statistics untouched
    x = torch.randn(3, 3, 8, 8)
    assert_close(m.run(x), eager(model, x))


def test_mixed_modes_are_restored_module_by_module() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1))
    model.eval()
    model[1].train()
    onnxbridge.to_onnx(model, torch.randn(2, 4))
    assert [mod.training for mod in model.modules()] == [False, False, True]


# -- exporters ---------------------------------------------------------------------------------
def test_falls_back_to_torchscript_when_torch_export_fails() -> None:
    model = ValueBranch()
    # The TorchScript tracer bakes the branch the sample took: a ParityError says where.
    with pytest.raises(onnxbridge.ParityError, match=r"baked a branch.*test_plugin_torch.py"):
        onnxbridge.to_onnx(model, torch.randn(2, 4))
    with pytest.warns(onnxbridge.OnnxBridgeWarning, match="baked a branch"):
        m = onnxbridge.to_onnx(model, torch.randn(2, 4), verify="warn")
    assert m.metadata["onnxbridge.torch.exporter"] == "torchscript"
    assert any("dynamo exporter failed first" in n for n in m.parity.notes)
    x = torch.randn(5, 4)
    assert_close(m.run(x), eager(model, x))


def test_explicit_exporter_is_used_alone() -> None:
    with pytest.raises(ConversionError) as info:
        onnxbridge.to_onnx(ValueBranch(), torch.randn(2, 4), exporter="dynamo")
    assert "dynamo exporter" in str(info.value)
    assert "torchscript exporter" not in str(info.value)
    m = onnxbridge.to_onnx(Sequence(), torch.randn(2, 5, 4), exporter="torchscript")
    assert m.metadata["onnxbridge.torch.exporter"] == "torchscript"
    assert symbolic(m.inputs[0].shape[0]) and symbolic(m.outputs[0].shape[0])
    with pytest.raises(ConversionError, match="exporter='onnx' is not one of"):
        onnxbridge.to_onnx(Sequence(), torch.randn(2, 5, 4), exporter="onnx")


def test_unsupported_operator_names_op_place_and_options() -> None:
    with pytest.raises(UnsupportedOperatorError) as info:
        onnxbridge.to_onnx(Eigen(), torch.randn(2, 4))
    err = info.value
    assert any("eigh" in op or "eigvalsh" in op for op in err.operators)
    assert err.framework == "torch"
    assert any("head.1 (SpectrumBlock)" in place for place in err.locations), err.locations
    text = str(err)
    for hint in ("opset=", "rewrite", "custom_ops", "dynamo exporter", "torchscript exporter"):
        assert hint in text
    assert set(err.causes) == {"dynamo", "torchscript"}


# -- files and signature -----------------------------------------------------------------------
def test_weights_are_inline_and_the_saved_file_stands_alone(tmp_path: Path) -> None:
    model = Sequence()
    m = onnxbridge.to_onnx(model, torch.randn(2, 5, 4))
    assert m.proto.graph.initializer
    assert all(t.data_location != 1 for t in m.proto.graph.initializer)  # 1 = EXTERNAL
    assert not any(name.startswith("model.") for name in (t.name for t in m.proto.graph.initializer))
    path = m.save(tmp_path / "seq.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq.onnx"]
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    moved = copy / "seq.onnx"
    moved.write_bytes(path.read_bytes())
    path.unlink()
    x = torch.randn(2, 5, 4)
    assert_close(onnxbridge.load(moved).run(x), eager(model, x))


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        ([torch.randn(2, 4)], "pass a tuple of tensors"),
        ("text", "must hold tensors"),
        ((torch.randn(2, 4), 3), "must hold tensors"),
        ({"nope": torch.randn(2, 4)}, "not arguments of Linear.forward"),
    ],
)
def test_bad_samples_are_explained(sample: object, message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        onnxbridge.to_onnx(torch.nn.Linear(4, 2), sample)


def test_unknown_option_is_an_error() -> None:
    with pytest.raises(ConversionError, match="does not know the option"):
        onnxbridge.to_onnx(torch.nn.Linear(4, 2), torch.randn(2, 4), dynamic_axis={"x": [1]})


def test_numpy_sample_is_accepted() -> None:
    m = onnxbridge.to_onnx(torch.nn.Linear(4, 2), np.random.rand(3, 4).astype(np.float32))
    assert m.parity.passed
    assert m.input_names == ["input"]


def test_importing_the_plugin_does_not_import_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        import onnxbridge, onnxbridge.plugins.torch
        onnxbridge.converters()
        assert "torch" not in sys.modules, "torch was imported"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _newest_opset_onnxruntime_loads() -> int:
    """Asked of onnxruntime directly, without onnxbridge: the first opset it refuses, minus 1."""
    import onnxruntime
    from onnx import TensorProto, helper

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    for opset in range(17, 64):
        graph = helper.make_graph(
            [helper.make_node("Identity", ["a"], ["b"])], "g",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        proto.ir_version = 8
        try:
            onnxruntime.InferenceSession(proto.SerializeToString(), options,
                                         providers=["CPUExecutionProvider"])
        except Exception:
            return opset - 1
    raise AssertionError("onnxruntime loads every opset up to 63")


def test_opset_is_the_newest_both_sides_take_unless_given() -> None:
    net = torch.nn.Linear(3, 2)
    # What torch itself exports when no opset is given, read from its own output.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(net, (torch.randn(2, 3),), dynamo=True)
    torch_default = {o.domain: o.version for o in program.model_proto.opset_import}[""]
    m = onnxbridge.to_onnx(net, torch.randn(2, 3))
    assert m.opset == min(torch_default, _newest_opset_onnxruntime_loads())
    assert onnxbridge.to_onnx(net, torch.randn(2, 3), opset=18).opset == 18
