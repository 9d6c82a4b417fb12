"""OnnxModel.to_torch() on control flow: If, Loop and Scan with their subgraphs, run eagerly.

Checked on what our converters emit (scikit-learn's k-nearest neighbours: Scan; a PyTorch
``torch.cond``: If) against the source framework, and on small hand-built graphs (loop-carried
values, scan outputs, directions and axes, names from enclosing graphs) against onnxruntime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import onnxbridge  # noqa: E402
from onnxbridge._to_torch import OnnxTorchModule  # noqa: E402

F = TensorProto.FLOAT
I64 = TensorProto.INT64
B = TensorProto.BOOL


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run_both(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple[list[Any], Any]:
    import onnxruntime

    onnx.checker.check_model(proto)
    session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    module = OnnxTorchModule(proto)
    got = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    return expected, got if isinstance(got, tuple) else (got,)


def _assert_same(expected: list[Any], got: Any) -> None:
    assert len(expected) == len(got)
    for e, g in zip(expected, got, strict=True):
        g = g.detach().numpy()
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_k_nearest_neighbours_scan_matches_scikit_learn() -> None:
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    labels = np.array(["u", "v", "w"])[np.digitize(X[:, 0], [-0.4, 0.4])]
    x = rng.normal(size=(9, 3)).astype(np.float32)
    clf = KNeighborsClassifier(3).fit(X, labels)
    m = onnxbridge.to_onnx(clf, X[:1])
    assert any(n.op_type == "Scan" for n in m.proto.graph.node)
    back = m.to_torch(x)
    with torch.no_grad():
        label, proba = back(torch.from_numpy(x))
    np.testing.assert_array_equal(label, clf.predict(x))
    np.testing.assert_allclose(proba.numpy(), clf.predict_proba(x), atol=1e-6)
    reg = KNeighborsRegressor(4).fit(X, X[:, 1] * 3)
    back = onnxbridge.to_onnx(reg, X[:1]).to_torch(x)
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.from_numpy(x)).numpy().ravel(), reg.predict(x),
                                   rtol=1e-4, atol=1e-5)


class Branchy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(3, 2)
        self.b = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.sum() > 0, lambda x: torch.relu(self.a(x)),
                          lambda x: self.b(x) * 2, (x,))


@pytest.mark.slow
def test_torch_cond_comes_back_as_if_taking_both_branches() -> None:
    original = Branchy().eval()
    m = onnxbridge.to_onnx(original, torch.ones(1, 3))
    assert any(n.op_type == "If" for n in m.proto.graph.node)
    back = m.to_torch(torch.ones(2, 3))
    for x in (torch.ones(4, 3), -torch.ones(5, 3), torch.randn(3, 3)):
        with torch.no_grad():
            torch.testing.assert_close(back(x), original(x), atol=1e-5, rtol=1e-4)
    # the weights inside both branches are trainable parameters of the module
    assert sum(p.numel() for p in back.parameters()) == 16


def _loop_model(trip_count: bool, condition: bool) -> onnx.ModelProto:
    """acc = acc * w + i (w an initializer of the outer graph) while acc < limit, also
    collecting acc * 2 per step; the body's condition is acc < limit."""
    body = helper.make_graph(
        [helper.make_node("Cast", ["i"], ["i_f"], to=F),
         helper.make_node("Mul", ["acc_in", "w"], ["scaled"]),
         helper.make_node("Add", ["scaled", "i_f"], ["acc_out"]),
         helper.make_node("ReduceMax", ["acc_out"], ["top"], keepdims=0),
         helper.make_node("Less", ["top", "limit"], ["cond_out"]),
         helper.make_node("Mul", ["acc_out", "two"], ["doubled"])],
        "body",
        [helper.make_tensor_value_info("i", I64, []), helper.make_tensor_value_info("c", B, []),
         helper.make_tensor_value_info("acc_in", F, [None])],
        [helper.make_tensor_value_info("cond_out", B, []),
         helper.make_tensor_value_info("acc_out", F, [None]),
         helper.make_tensor_value_info("doubled", F, [None])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    loop = helper.make_node("Loop", ["M" if trip_count else "", "go" if condition else "", "x"],
                            ["final", "steps"], body=body)
    inputs = [helper.make_tensor_value_info("x", F, [None]),
              helper.make_tensor_value_info("limit", F, [])]
    if trip_count:
        inputs.append(helper.make_tensor_value_info("M", I64, []))
    if condition:
        inputs.append(helper.make_tensor_value_info("go", B, []))
    graph = helper.make_graph(
        [loop], "loop", inputs,
        [helper.make_tensor_value_info("final", F, [None]),
         helper.make_tensor_value_info("steps", F, [None, None])],
        [numpy_helper.from_array(np.array([1.5, 0.5, -1.0], np.float32), "w")])
    return _model(graph)


@pytest.mark.parametrize(("trip_count", "condition"), [(True, False), (True, True),
                                                       (False, True)])
def test_loop_carried_values_and_scan_outputs_match_onnxruntime(trip_count: bool,
                                                                condition: bool) -> None:
    proto = _loop_model(trip_count, condition)
    for limit, m in ((100.0, 6), (3.0, 6), (1e6, 2)):
        feeds = {"x": np.array([1.0, 2.0, 3.0], np.float32),
                 "limit": np.array(limit, np.float32)}
        if trip_count:
            feeds["M"] = np.array(m, np.int64)
        if condition:
            feeds["go"] = np.array(True)
        _assert_same(*_run_both(proto, feeds))


def test_a_loop_that_does_not_start_returns_its_initial_values() -> None:
    proto = _loop_model(True, True)
    feeds = {"x": np.array([1.0, 2.0, 3.0], np.float32), "limit": np.array(9.0, np.float32),
             "M": np.array(5, np.int64), "go": np.array(False)}
    with torch.no_grad():
        final, _ = OnnxTorchModule(proto)(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    np.testing.assert_array_equal(final.numpy(), feeds["x"])


def test_gradients_flow_through_a_loop_to_outer_weights() -> None:
    proto = _loop_model(True, False)
    module = OnnxTorchModule(proto)
    (name, w), = module.named_parameters()
    final, steps = module(x=torch.tensor([1.0, 2.0, 3.0]), limit=torch.tensor(1e9),
                          M=torch.tensor(3))
    (final.sum() + steps.sum()).backward()
    assert w.grad is not None and bool((w.grad != 0).all()), name


@pytest.mark.parametrize("directions", [(0, 0, 0), (1, 0, 1), (0, 1, 0)])
def test_scan_states_directions_and_axes_match_onnxruntime(
        directions: tuple[int, int, int]) -> None:
    """Two states (a running sum and a running max), two scan inputs (one along axis 1), two
    scan outputs (one stacked along axis 1), with a name from the outer graph (``bias``)."""
    in_dir_a, in_dir_b, out_dir = directions
    body = helper.make_graph(
        [helper.make_node("Add", ["a_t", "b_t"], ["ab"]),
         helper.make_node("Add", ["ab", "bias"], ["ab_bias"]),
         helper.make_node("Add", ["s_in", "ab_bias"], ["s_out"]),
         helper.make_node("Max", ["m_in", "ab"], ["m_out"]),
         helper.make_node("Mul", ["s_out", "m_out"], ["y_t"]),
         helper.make_node("Neg", ["ab"], ["z_t"])],
        "body",
        [helper.make_tensor_value_info(n, F, [2]) for n in ("s_in", "m_in", "a_t", "b_t")],
        [helper.make_tensor_value_info(n, F, [2]) for n in ("s_out", "m_out", "y_t", "z_t")])
    scan = helper.make_node(
        "Scan", ["s0", "m0", "a", "b"], ["s", "m", "ys", "zs"], body=body, num_scan_inputs=2,
        scan_input_axes=[0, 1], scan_input_directions=[in_dir_a, in_dir_b],
        scan_output_axes=[0, 1], scan_output_directions=[out_dir, 0])
    graph = helper.make_graph(
        [scan], "scan",
        [helper.make_tensor_value_info(n, F, s) for n, s in
         (("s0", [2]), ("m0", [2]), ("a", [4, 2]), ("b", [2, 4]), ("bias", [2]))],
        [helper.make_tensor_value_info("s", F, [2]), helper.make_tensor_value_info("m", F, [2]),
         helper.make_tensor_value_info("ys", F, [4, 2]),
         helper.make_tensor_value_info("zs", F, [2, 4])])
    rng = np.random.default_rng(sum(directions))
    feeds = {"s0": np.zeros(2, np.float32), "m0": np.full(2, -5.0, np.float32),
             "a": rng.normal(size=(4, 2)).astype(np.float32),
             "b": rng.normal(size=(2, 4)).astype(np.float32),
             "bias": np.array([0.5, -0.5], np.float32)}
    _assert_same(*_run_both(_model(graph), feeds))


def test_if_inside_a_loop_sees_names_of_every_enclosing_graph() -> None:
    """Each step adds ``x`` (a graph input) when the step is even, else subtracts ``w`` (an
    initializer): the If's branches read names two graphs out."""
    then_g = helper.make_graph([helper.make_node("Add", ["acc_in", "x"], ["t_out"])], "then", [],
                               [helper.make_tensor_value_info("t_out", F, [None])])
    else_g = helper.make_graph([helper.make_node("Sub", ["acc_in", "w"], ["e_out"])], "else", [],
                               [helper.make_tensor_value_info("e_out", F, [None])])
    body = helper.make_graph(
        [helper.make_node("Mod", ["i", "two"], ["odd"]),
         helper.make_node("Equal", ["odd", "zero"], ["even"]),
         helper.make_node("If", ["even"], ["acc_out"], then_branch=then_g, else_branch=else_g),
         helper.make_node("Identity", ["c"], ["c_out"])],
        "body",
        [helper.make_tensor_value_info("i", I64, []), helper.make_tensor_value_info("c", B, []),
         helper.make_tensor_value_info("acc_in", F, [None])],
        [helper.make_tensor_value_info("c_out", B, []),
         helper.make_tensor_value_info("acc_out", F, [None])],
        [numpy_helper.from_array(np.array(2, np.int64), "two"),
         numpy_helper.from_array(np.array(0, np.int64), "zero")])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "x"], ["out"], body=body)], "nested",
        [helper.make_tensor_value_info("x", F, [None]), helper.make_tensor_value_info("M", I64, [])],
        [helper.make_tensor_value_info("out", F, [None])],
        [numpy_helper.from_array(np.array([0.25, 4.0], np.float32), "w")])
    feeds = {"x": np.array([1.0, -2.0], np.float32), "M": np.array(5, np.int64)}
    _assert_same(*_run_both(_model(graph), feeds))
