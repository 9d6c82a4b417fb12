"""How often to_onnx runs a PyTorch model, and that running it less checks no less (issue 13).

A large model's forward pass is the cost to_onnx adds to torch.onnx.export: each distinct input
is run once (the sample's call answers verification's reference run on the sample), no axis
probe runs where its answer cannot change the plan, and the buffers are copied once per
conversion, not once per call. The checks themselves stay: four samples, each compared with
PyTorch's output.
"""

from __future__ import annotations

import numpy as np
import pytest

import onnxbridge
from onnxbridge.registry import ConvertOptions

torch = pytest.importorskip("torch")

from onnxbridge.plugins import _torch_export as T  # noqa: E402


class Recorder(torch.nn.Module):
    """A linear layer that records each input it is really called with (not traced ones)."""

    def __init__(self, n_in: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(n_in, 3)
        self.calls: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(x) is torch.Tensor:  # FakeTensor/FunctionalTensor while exporting
            self.calls.append(x.detach().clone())
        return self.lin(x)


def test_each_distinct_input_runs_once_and_the_four_checks_stay() -> None:
    model = Recorder()
    x = torch.randn(2, 4)
    m = onnxbridge.to_onnx(model, x)
    shapes = [tuple(c.shape) for c in model.calls]
    # the sample; then verification: batch 1, fresh values, permuted rows. No probe at
    # batch 3 (a lone batch axis stays dynamic whatever it says) and no second sample run.
    assert shapes == [(2, 4), (1, 4), (2, 4), (2, 4)], shapes
    for i, a in enumerate(model.calls):
        for b in model.calls[i + 1:]:
            assert a.shape != b.shape or not torch.equal(a, b)
    assert torch.equal(model.calls[0], x)
    assert m.parity.passed
    assert sorted(o.batch for o in m.parity.outputs) == [1, 2, 2, 2]
    with torch.no_grad():  # the ONNX model against PyTorch, independently of the report
        np.testing.assert_allclose(m.run(x.numpy()), model.lin(x).numpy(), rtol=1e-5, atol=1e-6)


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if type(a) is torch.Tensor:
            self.shapes.append(tuple(a.shape))
        return a * 2 + b.sum()  # b's first axis is not a batch


def test_a_probe_still_runs_where_it_can_change_the_plan() -> None:
    model = TwoInputs()
    m = onnxbridge.to_onnx(model, (torch.randn(2, 3), torch.randn(2, 5)))
    assert (3, 3) in model.shapes  # both inputs grown to batch 3 together: the probe
    assert m.parity.passed


def test_the_sample_answer_needs_equal_inputs() -> None:
    x = torch.randn(2, 4)
    out = [("output", torch.ones(2, 3))]
    known = T._KnownRun([x.clone()], out)
    assert known.outputs_for([x.clone()]) == out
    assert known.outputs_for([x.double()]) is None  # same values, another dtype
    y = x.clone()
    y[1, 3] += 1e-6
    assert known.outputs_for([y]) is None
    assert known.outputs_for([x[:1]]) is None
    assert known.outputs_for([x, x]) is None


def test_large_outputs_are_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T, "KNOWN_OUTPUTS_UP_TO", 10)
    x = torch.randn(2, 4)
    known = T._KnownRun([x], [("output", torch.ones(2, 3))])  # 24 bytes
    assert known.outputs_for([x]) is None


class InPlaceInput(torch.nn.Module):
    """Changes its input in place: the sample's call cannot answer for the changed sample."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 3
        if type(x) is torch.Tensor:
            x.add_(1)
        return y


def test_a_model_that_changes_its_input_gets_no_stale_answer() -> None:
    x = torch.randn(2, 4)
    given = x.clone()
    model = InPlaceInput()
    result = T.convert_module(model, given, ConvertOptions())
    assert result.reference is not None
    # The model's calls get copies: the sample is unchanged, and its answer is the sample's
    torch.testing.assert_close(given, x)
    np.testing.assert_allclose(result.reference(given)[0], (x * 3).numpy(), rtol=1e-6)
    # another input (x + 1) must be computed on, not answered from the sample's call
    np.testing.assert_allclose(result.reference(x + 1)[0], ((x + 1) * 3).numpy(), rtol=1e-6)


class Steps(torch.nn.Module):
    """Counts its calls in a buffer that its output depends on."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 2)
        self.register_buffer("steps", torch.zeros(()))
        self.register_buffer("table", torch.randn(64, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        return self.lin(x) + self.steps + self.table[:1].sum()


def test_buffers_are_copied_once_and_every_run_starts_from_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    init = T.BufferSnapshot.__init__

    def counting(self: T.BufferSnapshot, model: torch.nn.Module) -> None:
        made.append(id(model))
        init(self, model)

    monkeypatch.setattr(T.BufferSnapshot, "__init__", counting)
    model = Steps()
    model.steps.fill_(7)
    table = model.table.clone()
    x = torch.randn(2, 4)
    m = onnxbridge.to_onnx(model, x)
    assert len(made) == 1  # one copy for the sample, the export and the reference runs
    # each of the four reference runs started from steps == 7 (else 9, 10, 11 != the graph's 8)
    assert m.parity.passed
    assert float(model.steps) == 7 and torch.equal(model.table, table)
    with torch.no_grad():
        expected = (model.lin(x) + 8 + table[:1].sum()).numpy()
    np.testing.assert_allclose(m.run(x.numpy()), expected, rtol=1e-5, atol=1e-5)
