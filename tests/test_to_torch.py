"""OnnxModel.to_torch(): ONNX back to a trainable torch module, checked against the source
framework's own outputs (not only against onnxruntime) and trained one step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sklearn = pytest.importorskip("sklearn")

import onnxbridge  # noqa: E402
from onnxbridge import ParityError, UnsupportedOperatorError  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class Attention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Linear(8, 16)
        self.att = torch.nn.MultiheadAttention(16, 2, batch_first=True)
        self.norm = torch.nn.LayerNorm(16)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        a, _ = self.att(h, h, h)
        return torch.softmax(self.head(self.norm(h + a)).mean(1), -1)


class Recurrent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 6, batch_first=True, bidirectional=True)
        self.gru = torch.nn.GRU(12, 5, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(self.lstm(x)[0])[0]


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 3)
        self.b = torch.nn.Linear(2, 3)

    def forward(self, x: torch.Tensor, meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.a(x) + self.b(meta))
        return h, h.sum(-1, keepdim=True)


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 4, 3, stride=2), torch.nn.Flatten(),
        torch.nn.Linear(4, 3))


CASES = {
    "mlp": (_mlp, (4,)),
    "cnn": (_cnn, (3, 8, 8)),
    "attention": (Attention, (5, 8)),
    "lstm_gru": (Recurrent, (5, 4)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_models_come_back_computing_what_the_original_computes(case: str) -> None:
    make, shape = CASES[case]
    original = make().eval()
    if case == "cnn":  # BatchNorm statistics that are not the identity
        bn = original[1]
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    m = onnxbridge.to_onnx(original, torch.randn(1, *shape))
    back = m.to_torch()
    assert back.parity is not None and back.parity.passed
    assert back.parity.batch_sizes == [1, 3]
    x = torch.randn(6, *shape)  # another batch size than the sample's
    with torch.no_grad():
        expected = original(x)
        got = back(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # every weight of the original is trainable in the module (the exporter may fold a zero bias)
    n_original = sum(p.numel() for p in original.parameters())
    n_back = sum(p.numel() for p in back.parameters())
    assert n_original - 16 <= n_back <= n_original


def test_two_inputs_by_position_and_by_name_two_outputs() -> None:
    original = TwoInputs().eval()
    m = onnxbridge.to_onnx(original, (torch.randn(1, 4), torch.randn(1, 2)))
    back = m.to_torch()
    x, meta = torch.randn(5, 4), torch.randn(5, 2)
    with torch.no_grad():
        expected = original(x, meta)
        by_position = back(x, meta)
        by_name = back(**dict(zip(back.input_names, (x, meta), strict=True)))
    assert isinstance(by_position, tuple) and len(by_position) == 2
    for got in (by_position, by_name):
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)
    with pytest.raises(TypeError, match="takes 2 input"):
        back(x)


def test_one_optimizer_step_changes_the_weights_and_lowers_the_loss(tmp_path: Path) -> None:
    # a model that exists only as an ONNX file
    onnxbridge.to_onnx(_mlp().eval(), torch.randn(1, 4)).save(tmp_path / "mlp.onnx")
    back = onnxbridge.load(tmp_path / "mlp.onnx").to_torch()
    before = {k: v.detach().clone() for k, v in back.named_parameters()}
    assert len(before) == 4 and all(p.requires_grad for p in back.parameters())
    x, target = torch.randn(32, 4), torch.randn(32, 2)
    opt = torch.optim.SGD(back.parameters(), lr=0.1)
    back.train()
    loss0 = torch.nn.functional.mse_loss(back(x), target)
    opt.zero_grad()
    loss0.backward()
    opt.step()
    loss1 = torch.nn.functional.mse_loss(back(x), target)
    assert loss1.item() < loss0.item()
    for name, p in back.named_parameters():
        assert not torch.equal(p.detach(), before[name]), name


def test_scikit_learn_linear_and_neural_models_match_scikit_learn() -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    y3 = np.digitize(X[:, 2], [-0.5, 0.5]).astype(np.int64)
    reg = make_pipeline(StandardScaler(), LinearRegression()).fit(X, X @ [1.0, -2.0, 0.5, 3.0])
    back = onnxbridge.to_onnx(reg, X[:1]).to_torch()
    with torch.no_grad():
        got = back(torch.from_numpy(X))
    np.testing.assert_allclose(got.numpy().ravel(), reg.predict(X), rtol=1e-4, atol=1e-4)
    for clf in (LogisticRegression().fit(X, y), LogisticRegression().fit(X, y3),
                MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0).fit(X, y3)):
        back = onnxbridge.to_onnx(clf, X[:1]).to_torch()
        with torch.no_grad():
            label, proba = back(torch.from_numpy(X))
        np.testing.assert_array_equal(label.numpy(), clf.predict(X))
        np.testing.assert_allclose(proba.numpy(), clf.predict_proba(X), rtol=1e-4, atol=1e-5)
    # the linear coefficients are parameters: training moves them
    assert sum(p.numel() for p in back.parameters()) == sum(
        w.size for w in clf.coefs_ + clf.intercepts_)


def test_unsupported_operators_are_named_before_anything_runs() -> None:
    from onnx import TensorProto, helper

    node = helper.make_node("Smooth", ["x"], ["y"], domain="example.custom")
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])])
    m = onnxbridge.load(helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("example.custom", 1)]))
    with pytest.raises(UnsupportedOperatorError, match="Smooth") as info:
        m.to_torch()
    assert info.value.operators == ("example.custom::Smooth",)
    assert info.value.framework == "torch"


def test_a_module_that_differs_from_onnxruntime_raises_parity_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from onnxbridge import _to_torch

    m = onnxbridge.to_onnx(_mlp().eval(), torch.randn(1, 4))
    monkeypatch.setitem(_to_torch._OPS, ("", "Relu"), lambda ctx, ins, a: ins[0])  # a wrong Relu
    with pytest.raises(ParityError, match="torch module") as info:
        m.to_torch()
    assert not info.value.report.passed
    # the user's own sample is what gets checked when given
    back = m.to_torch(np.zeros((2, 4), np.float32), verify=False)
    assert back.parity is None


def test_checked_on_the_users_sample() -> None:
    m = onnxbridge.to_onnx(_mlp().eval(), torch.randn(1, 4))
    back = m.to_torch(torch.randn(7, 4))
    assert back.parity is not None and back.parity.batch_sizes == [7]


def test_without_torch_the_error_names_the_extra(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    onnxbridge.to_onnx(_mlp().eval(), torch.randn(1, 4)).save(tmp_path / "mlp.onnx")
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # as if torch were not installed
        import onnxbridge
        try:
            onnxbridge.load({str(tmp_path / "mlp.onnx")!r}).to_torch()
        except onnxbridge.ConversionError as exc:
            print("refused:", exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "onnxbridge[torch]" in out.stdout


def test_string_class_labels_come_back_as_numpy_strings() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3)).astype(np.float32)
    for y in (np.array(["a", "b"])[(X[:, 0] > 0).astype(int)],
              np.array(["a", "b", "c"])[np.digitize(X[:, 1], [-0.5, 0.5])]):
        clf = LogisticRegression().fit(X, y)
        back = onnxbridge.to_onnx(clf, X[:1]).to_torch()
        with torch.no_grad():
            label, proba = back(torch.from_numpy(X))
        assert isinstance(label, np.ndarray) and label.dtype == object
        np.testing.assert_array_equal(label, clf.predict(X))
        np.testing.assert_allclose(proba.numpy(), clf.predict_proba(X), rtol=1e-4, atol=1e-6)
