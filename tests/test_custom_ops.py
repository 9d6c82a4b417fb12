"""A user's own PyTorch operator exported as a custom ONNX node and run by onnxruntime.

The path under test (docs/custom-operators.md): a ``torch.library.custom_op`` is mapped with
``to_onnx(..., custom_ops={op: "ai.onnx.contrib::OpType"})`` to one node of a custom domain, and
onnxruntime-extensions' ``@onnx_op`` gives onnxruntime its implementation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort_ext = pytest.importorskip("onnxruntime_extensions")

import onnxruntime as ort  # noqa: E402

import onnxbridge  # noqa: E402
from onnxbridge import ConversionError, UnsupportedOperatorError  # noqa: E402

DOMAIN = "ai.onnx.contrib"  # the domain onnxruntime-extensions serves


@torch.library.custom_op("onnxbridge_test::scaled_softsign", mutates_args=())
def scaled_softsign(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha * x / (1 + x.abs())


@scaled_softsign.register_fake
def _(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.empty_like(x)


@ort_ext.onnx_op(
    op_type="OnnxbridgeTestScaledSoftsign",
    inputs=[ort_ext.PyCustomOpDef.dt_float],
    outputs=[ort_ext.PyCustomOpDef.dt_float],
    attrs={"alpha": ort_ext.PyCustomOpDef.dt_float},
)
def scaled_softsign_ort(x: np.ndarray, **attrs: float) -> np.ndarray:
    return (attrs["alpha"] * x / (1 + np.abs(x))).astype(np.float32)


class WithCustomOp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_softsign(self.lin(x), 0.5) + 1


def extensions_session(proto: object) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.register_custom_ops_library(ort_ext.get_library_path())
    return ort.InferenceSession(proto.SerializeToString(), options)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "key", ["onnxbridge_test::scaled_softsign", "op_overload", "custom_op_def"]
)
def test_custom_op_becomes_a_node_that_onnxruntime_runs(key: str) -> None:
    op = {
        "onnxbridge_test::scaled_softsign": "onnxbridge_test::scaled_softsign",
        "op_overload": torch.ops.onnxbridge_test.scaled_softsign.default,
        "custom_op_def": scaled_softsign,
    }[key]
    model = WithCustomOp().eval()
    m = onnxbridge.to_onnx(
        model, torch.randn(1, 4), custom_ops={op: f"{DOMAIN}::OnnxbridgeTestScaledSoftsign"},
    )
    assert m.parity is not None and m.parity.passed and m.parity.batch_sizes == [1, 3]
    nodes = [n for n in m.proto.graph.node if n.domain == DOMAIN]
    assert [n.op_type for n in nodes] == ["OnnxbridgeTestScaledSoftsign"]
    assert nodes[0].attribute[0].name == "alpha" and nodes[0].attribute[0].f == 0.5
    assert m.opsets.get(DOMAIN) == 1
    assert m.metadata["onnxbridge.custom_op_library"] == "onnxruntime_extensions"
    session = extensions_session(m.proto)
    for batch in (1, 5):
        x = torch.randn(batch, 4)
        (got,) = session.run(None, {m.input_names[0]: x.numpy()})
        with torch.no_grad():
            want = model(x).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(m.run(x), want, atol=1e-5, rtol=1e-4)  # onnxbridge's own session


def test_saved_custom_op_model_loads_and_runs(tmp_path: Path) -> None:
    model = WithCustomOp().eval()
    m = onnxbridge.to_onnx(model, torch.randn(2, 4),
                           custom_ops={scaled_softsign: f"{DOMAIN}::OnnxbridgeTestScaledSoftsign"})
    loaded = onnxbridge.load(m.save(tmp_path / "custom.onnx"))
    x = torch.randn(3, 4)
    with torch.no_grad():
        np.testing.assert_allclose(loaded.run(x), model(x).numpy(), atol=1e-5, rtol=1e-4)


def test_a_model_cannot_name_an_arbitrary_library() -> None:
    m = onnxbridge.to_onnx(WithCustomOp(), torch.randn(2, 4),
                           custom_ops={scaled_softsign: f"{DOMAIN}::OnnxbridgeTestScaledSoftsign"})
    m.set_metadata("onnxbridge.custom_op_library", "/tmp/evil.so")
    with pytest.raises(onnxbridge.LoadError, match="does not know"):
        onnxbridge.OnnxModel(m.proto).run(np.ones((1, 4), np.float32))


def test_plain_onnxruntime_without_the_library_cannot_load_it() -> None:
    m = onnxbridge.to_onnx(
        WithCustomOp(), torch.randn(2, 4),
        custom_ops={scaled_softsign: f"{DOMAIN}::OnnxbridgeTestScaledSoftsign"},
    )
    with pytest.raises(Exception, match="OnnxbridgeTestScaledSoftsign"):
        ort.InferenceSession(m.proto.SerializeToString())


@pytest.mark.parametrize(
    ("custom_ops", "message"),
    [
        ({"nolib::nothing": f"{DOMAIN}::X"}, "is not a torch operator"),
        ({scaled_softsign: "MyOp"}, "give the ONNX node as 'domain::OpType'"),
        ({scaled_softsign: "ai.onnx::Relu"}, "standard ONNX domain"),
        (["onnxbridge_test::scaled_softsign"], "custom_ops must be a dict"),
    ],
)
def test_custom_ops_mistakes_are_explained(custom_ops: object, message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        onnxbridge.to_onnx(WithCustomOp(), torch.randn(2, 4), custom_ops=custom_ops)


def test_without_a_mapping_the_custom_op_is_reported_unsupported() -> None:
    with pytest.raises(UnsupportedOperatorError) as info:
        onnxbridge.to_onnx(WithCustomOp(), torch.randn(2, 4))
    assert info.value.operators == ("onnxbridge_test::scaled_softsign",)
    assert "custom_ops={'onnxbridge_test::scaled_softsign'" in str(info.value)
    assert any("WithCustomOp" in place for place in info.value.locations)


def test_an_aten_operator_can_be_mapped_too() -> None:
    class Eigenvalues(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.eigvalsh(x.unsqueeze(-1) * x.unsqueeze(-2))

    m = onnxbridge.to_onnx(
        Eigenvalues(), torch.randn(2, 4), custom_ops={"aten::_linalg_eigh": "my.linalg::Eigh"},
        verify=False,
    )
    assert m.opsets["my.linalg"] == 1
    assert [n.op_type for n in m.proto.graph.node if n.domain == "my.linalg"] == ["Eigh"]
