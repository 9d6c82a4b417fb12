"""OnnxModel.to_torch() on ONNX sequence operators: sequences are Python lists of tensors.

Hand-built graphs use every sequence operator (construct, empty, insert, at, erase, length, split
into and concatenate from a sequence, SequenceMap) and are compared with onnxruntime running the
same model; a list output is compared entry by entry."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

import onnxbridge  # noqa: E402
from onnxbridge._to_torch import OnnxTorchModule  # noqa: E402
from onnxbridge.errors import ParityError  # noqa: E402

F = TensorProto.FLOAT
I64 = TensorProto.INT64


def _seq(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_sequence_value_info(name, F, None)


def _const(name: str, value: Any) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name],
                            value=onnx.numpy_helper.from_array(np.asarray(value, np.int64)))


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto], opset: int = 18) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", opset)])
    return model


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[Any]:
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _same(expected: Any, got: Any) -> None:
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for e, g in zip(expected, got, strict=True):
            _same(e, g)
        return
    g = got.detach().numpy()
    assert g.shape == expected.shape and g.dtype == expected.dtype
    np.testing.assert_allclose(g, expected, rtol=1e-6, atol=1e-6)


X = np.arange(24, dtype=np.float32).reshape(4, 3, 2) / 7 - 1
Y = np.linspace(-1, 1, 6, dtype=np.float32).reshape(1, 3, 2)


def _every_operator() -> onnx.ModelProto:
    nodes = [
        helper.make_node("SequenceConstruct", ["x", "y"], ["s0"]),            # [x, y]
        helper.make_node("SequenceEmpty", [], ["e"], dtype=F),
        helper.make_node("SequenceInsert", ["e", "y"], ["e1"]),              # [y]
        _const("zero", 0), _const("minus1", -1), _const("two", 2), _const("sizes", [1, 3]),
        helper.make_node("SequenceInsert", ["s0", "y", "zero"], ["s1"]),     # [y, x, y]
        helper.make_node("SequenceErase", ["s1", "minus1"], ["s2"]),         # [y, x]
        helper.make_node("SequenceErase", ["s2"], ["s3"]),                   # [y]
        helper.make_node("SequenceAt", ["s1", "minus1"], ["last"]),          # y
        helper.make_node("SequenceLength", ["s1"], ["n"]),                   # 3
        helper.make_node("SplitToSequence", ["x"], ["pieces"], axis=0, keepdims=0),
        helper.make_node("SplitToSequence", ["x", "two"], ["halves"], axis=0),
        helper.make_node("SplitToSequence", ["x", "sizes"], ["uneven"], axis=0),
        helper.make_node("ConcatFromSequence", ["s2"], ["cat"], axis=0),
        helper.make_node("ConcatFromSequence", ["pieces"], ["stacked"], axis=-1, new_axis=1),
        helper.make_node("SequenceLength", ["e1"], ["n1"]),
        helper.make_node("SequenceLength", ["s3"], ["n3"]),
    ]
    outputs = [helper.make_tensor_value_info("last", F, None),
               helper.make_tensor_value_info("n", I64, None),
               helper.make_tensor_value_info("cat", F, None),
               helper.make_tensor_value_info("stacked", F, None),
               helper.make_tensor_value_info("n1", I64, None),
               helper.make_tensor_value_info("n3", I64, None),
               _seq("uneven"), _seq("halves")]
    inputs = [helper.make_tensor_value_info("x", F, [4, 3, 2]),
              helper.make_tensor_value_info("y", F, [1, 3, 2])]
    return _model(nodes, inputs, outputs)


def test_every_sequence_operator_matches_onnxruntime() -> None:
    model = _every_operator()
    expected = _ort(model, {"x": X, "y": Y})
    got = OnnxTorchModule(model)(torch.from_numpy(X), torch.from_numpy(Y))
    assert len(got) == len(expected)
    for e, g in zip(expected, got, strict=True):
        _same(e, g)
    assert [t.shape for t in got[6]] == [(1, 3, 2), (3, 3, 2)]  # list outputs stay lists


def test_list_outputs_are_checked_entry_by_entry_and_a_wrong_entry_fails(tmp_path: Any) -> None:
    m = onnxbridge.load(_every_operator())
    back = m.to_torch()  # parity with onnxruntime at batches from the signature
    assert any(o.name.startswith("uneven[") for o in back.parity.outputs)
    # break one list entry: the same check must fail
    import onnxbridge._to_torch as tt

    real = tt._OPS[("", "SplitToSequence")]

    def broken(ctx: Any, ins: list[Any], a: dict[str, Any]) -> list[Any]:
        pieces = real(ctx, ins, a)
        return [pieces[0] + 1, *pieces[1:]]

    tt._OPS[("", "SplitToSequence")] = broken
    try:
        with pytest.raises(ParityError):
            m.to_torch()
    finally:
        tt._OPS[("", "SplitToSequence")] = real


def test_sequence_map_and_out_of_range_positions() -> None:
    body = helper.make_graph(
        [helper.make_node("Mul", ["t", "w"], ["u"]),
         helper.make_node("ReduceSum", ["u"], ["r"], keepdims=0)],
        "body", [helper.make_tensor_value_info("t", F, None),
                 helper.make_tensor_value_info("w", F, None)],
        [helper.make_tensor_value_info("u", F, None), helper.make_tensor_value_info("r", F, None)])
    nodes = [helper.make_node("SplitToSequence", ["x"], ["s"], axis=1, keepdims=1),
             helper.make_node("SequenceMap", ["s", "w"], ["us", "rs"], body=body),
             helper.make_node("ConcatFromSequence", ["rs"], ["total"], axis=0, new_axis=1)]
    model = _model(nodes, [helper.make_tensor_value_info("x", F, [4, 3, 2]),
                           helper.make_tensor_value_info("w", F, [2])],
                   [_seq("us"), helper.make_tensor_value_info("total", F, None)])
    w = np.array([2.0, -0.5], np.float32)
    expected = _ort(model, {"x": X, "w": w})
    got = OnnxTorchModule(model)(torch.from_numpy(X), torch.from_numpy(w))
    _same(expected[0], got[0])
    _same(expected[1], got[1])
    bad = _model([helper.make_node("SequenceConstruct", ["x"], ["s"]), _const("p", 1),
                  helper.make_node("SequenceAt", ["s", "p"], ["y"])],
                 [helper.make_tensor_value_info("x", F, [4, 3, 2])],
                 [helper.make_tensor_value_info("y", F, None)])
    with pytest.raises(onnxbridge.errors.ConversionError, match="out of range"):
        OnnxTorchModule(bad)(torch.from_numpy(X))


def test_a_sequence_input_is_a_list_of_tensors() -> None:
    model = _model([helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=1)],
                   [_seq("s")], [helper.make_tensor_value_info("y", F, None)])
    parts = [X[:, :1], X[:, 1:]]
    expected = _ort(model, {"s": parts})
    _same(expected[0], OnnxTorchModule(model)([torch.from_numpy(p) for p in parts]))
