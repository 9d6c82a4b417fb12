"""OnnxModel.to_torch() on ai.onnx.ml 5 ``TreeEnsemble`` and on one-class tree classifiers.

No converter of ours writes ``TreeEnsemble`` (ai.onnx.ml 5), so the nodes are built here: random
ensembles with every split mode (set membership included), NaNs, aggregates and post transforms
are compared with onnxruntime; a node written from a scikit-learn forest's own arrays is compared
with scikit-learn's ``predict``. The one-class classifier is what skl2onnx writes for a forest
trained on one class, compared with onnxruntime (whose conventions it follows) and with
scikit-learn's probabilities."""

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
from onnxbridge.errors import UnsupportedOperatorError  # noqa: E402


def _v5_model(attrs: dict[str, Any], dtype: type, n_features: int) -> onnx.ModelProto:
    node = helper.make_node("TreeEnsemble", ["X"], ["Y"], domain="ai.onnx.ml", **attrs)
    et = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", et, [None, n_features])],
                              [helper.make_tensor_value_info("Y", et, [None, None])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                   helper.make_opsetid("ai.onnx.ml", 5)])


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[Any]:
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _random_v5(rng: np.random.Generator, dtype: type, n_features: int) -> dict[str, Any]:
    """A random ensemble in TreeEnsemble 5's arrays (splits on small integers so that equality,
    membership and strict/non-strict comparisons all matter)."""
    n_targets = int(rng.integers(1, 4))
    nodes: dict[str, list[Any]] = {k: [] for k in (
        "modes", "feat", "split", "t", "tl", "f", "fl", "miss")}
    members: list[float] = []
    leaf_t: list[int] = []
    leaf_w: list[float] = []

    def leaf() -> int:
        leaf_t.append(int(rng.integers(0, n_targets)))
        leaf_w.append(float(np.round(rng.normal(), 3)))
        return len(leaf_t) - 1

    def grow(depth: int) -> int:
        i = len(nodes["modes"])
        mode = int(rng.integers(0, 7))
        for k, v in (("modes", mode), ("feat", int(rng.integers(0, n_features))),
                     ("split", float(rng.integers(0, 4)) - 0.5 * (rng.random() < 0.3)),
                     ("miss", int(rng.random() < 0.5)), ("t", 0), ("tl", 0), ("f", 0), ("fl", 0)):
            nodes[k].append(v)
        if mode == 6:
            members.extend(sorted({float(v) for v in rng.integers(0, 4, size=int(rng.integers(1, 3)))}))
            members.append(float("nan"))
        for side in ("t", "f"):
            if depth == 0 or rng.random() < 0.3:
                nodes[side][i], nodes[side + "l"][i] = leaf(), 1
            else:
                nodes[side][i], nodes[side + "l"][i] = grow(depth - 1), 0
        return i

    roots = []
    for _ in range(int(rng.integers(1, 5))):
        if rng.random() < 0.15:  # a tree that is one leaf: true and false ids equal
            i = len(nodes["modes"])
            lf = leaf()
            for k, v in (("modes", 0), ("feat", 0), ("split", 0.0), ("miss", 0), ("t", lf),
                         ("tl", 1), ("f", lf), ("fl", 1)):
                nodes[k].append(v)
            roots.append(i)
        else:
            roots.append(grow(int(rng.integers(1, 4))))
    attrs: dict[str, Any] = dict(
        n_targets=n_targets, tree_roots=roots,
        aggregate_function=int(rng.integers(0, 4)), post_transform=int(rng.integers(0, 5)),
        nodes_modes=numpy_helper.from_array(np.array(nodes["modes"], np.uint8)),
        nodes_featureids=nodes["feat"],
        nodes_splits=numpy_helper.from_array(np.array(nodes["split"], dtype)),
        nodes_truenodeids=nodes["t"], nodes_trueleafs=nodes["tl"],
        nodes_falsenodeids=nodes["f"], nodes_falseleafs=nodes["fl"],
        nodes_missing_value_tracks_true=nodes["miss"],
        leaf_targetids=leaf_t, leaf_weights=numpy_helper.from_array(np.array(leaf_w, dtype)))
    if members:
        attrs["membership_values"] = numpy_helper.from_array(np.array(members, dtype))
    return attrs


@pytest.mark.parametrize("seed", range(40))
def test_random_tree_ensemble_5_matches_onnxruntime(seed: int) -> None:
    rng = np.random.default_rng(seed)
    dtype = np.float64 if seed % 3 == 0 else np.float32
    attrs = _random_v5(rng, dtype, 3)
    if attrs["post_transform"] == 4 and attrs["n_targets"] > 1:
        attrs["post_transform"] = 0  # PROBIT is defined for one target only
    model = _v5_model(attrs, dtype, 3)
    x = (rng.integers(0, 4, size=(64, 3)) - 0.5 * (rng.random((64, 3)) < 0.2)).astype(dtype)
    x[rng.random(x.shape) < 0.1] = np.nan
    (expected,) = _ort(model, {"X": x})
    got = OnnxTorchModule(model)(torch.from_numpy(x))
    assert got.dtype == torch.from_numpy(expected).dtype and tuple(got.shape) == expected.shape
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def _forest_as_v5(forest: Any) -> dict[str, Any]:
    """A scikit-learn regression forest written as TreeEnsemble 5 from its own tree arrays."""
    modes, feats, splits, t, tl, f, fl, leaf_w, roots = [], [], [], [], [], [], [], [], []
    for est in forest.estimators_:
        tree = est.tree_
        node_of: dict[int, int] = {}
        leaf_of: dict[int, int] = {}
        for i in range(tree.node_count):
            if tree.children_left[i] == -1:
                leaf_of[i] = len(leaf_w)
                leaf_w.append(float(tree.value[i, 0, 0]))
            else:
                node_of[i] = len(modes)
                modes.append(0)
                feats.append(int(tree.feature[i]))
                splits.append(float(tree.threshold[i]))
                t.append(0)
                tl.append(0)
                f.append(0)
                fl.append(0)
        for i, k in node_of.items():
            for child, ids, leafs in ((tree.children_left[i], t, tl), (tree.children_right[i], f, fl)):
                ids[k], leafs[k] = (leaf_of[child], 1) if child in leaf_of else (node_of[child], 0)
        roots.append(node_of[0])
    return dict(n_targets=1, tree_roots=roots, aggregate_function=0, post_transform=0,
                nodes_modes=numpy_helper.from_array(np.array(modes, np.uint8)),
                nodes_featureids=feats,
                nodes_splits=numpy_helper.from_array(np.array(splits, np.float64)),
                nodes_truenodeids=t, nodes_trueleafs=tl, nodes_falsenodeids=f,
                nodes_falseleafs=fl, leaf_targetids=[0] * len(leaf_w),
                leaf_weights=numpy_helper.from_array(np.array(leaf_w, np.float64)))


def test_a_forest_written_as_tree_ensemble_5_matches_scikit_learn_and_trains() -> None:
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    y = X[:, 0] * 2 + np.sin(X[:, 1])
    forest = RandomForestRegressor(5, max_depth=4, random_state=0).fit(X, y)
    m = onnxbridge.load(_v5_model(_forest_as_v5(forest), np.float64, 4))
    x = rng.normal(size=(30, 4))
    back = m.to_torch(x)  # checked against onnxruntime on these rows
    got = back(torch.from_numpy(x))
    np.testing.assert_allclose(got.detach().numpy().ravel(), forest.predict(x), rtol=1e-9,
                               atol=1e-9)
    # the leaf values are parameters: a gradient step towards other targets moves the output
    leaves = [p for n, p in back.named_parameters() if n.endswith("leaf_values")]
    assert len(leaves) == 1 and leaves[0].requires_grad
    back.train()
    target = torch.from_numpy(y[:30] * 0 + 3.0)
    loss0 = ((back(torch.from_numpy(x)).ravel() - target) ** 2).mean()
    loss0.backward()
    with torch.no_grad():
        leaves[0] -= 0.5 * leaves[0].grad
    loss1 = ((back(torch.from_numpy(x)).ravel() - target) ** 2).mean()
    assert float(loss1.detach()) < float(loss0.detach())


def _one_class(post: str, base: list[float] | None, labels: Any) -> onnx.ModelProto:
    kw: dict[str, Any] = dict(
        nodes_treeids=[0, 0, 0, 1], nodes_nodeids=[0, 1, 2, 0], nodes_featureids=[0, 0, 0, 0],
        nodes_values=[0.0, 0, 0, 0], nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF", "LEAF"],
        nodes_truenodeids=[1, 0, 0, 0], nodes_falsenodeids=[2, 0, 0, 0],
        class_treeids=[0, 0, 1], class_nodeids=[1, 2, 0], class_ids=[0, 0, 0],
        class_weights=[0.2, -0.9, 0.25], post_transform=post, **labels)
    if base is not None:
        kw["base_values"] = base
    node = helper.make_node("TreeEnsembleClassifier", ["X"], ["L", "P"], domain="ai.onnx.ml", **kw)
    label_type = TensorProto.INT64 if "classlabels_int64s" in labels else TensorProto.STRING
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("L", label_type, [None]),
         helper.make_tensor_value_info("P", TensorProto.FLOAT, [None, None])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("ai.onnx.ml", 3)])


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"])
@pytest.mark.parametrize("base", [None, [0.5], [0.3, -0.2]], ids=["no-base", "1-base", "2-base"])
def test_hand_built_one_class_classifier_matches_onnxruntime(post: str, base: Any) -> None:
    model = _one_class(post, base, {"classlabels_int64s": [7]})
    x = np.array([[-1.0], [0.5], [2.0], [np.nan], [0.0]], np.float32)
    label, proba = _ort(model, {"X": x})
    got_label, got_proba = OnnxTorchModule(model)(torch.from_numpy(x))
    np.testing.assert_array_equal(got_label.numpy(), label)
    assert tuple(got_proba.shape) == proba.shape == (5, 1)
    np.testing.assert_allclose(got_proba.detach().numpy(), proba, rtol=1e-5, atol=1e-6)


def test_skl2onnx_one_class_forest_runs_and_string_labels_are_refused() -> None:
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3)).astype(np.float32)
    forest = RandomForestClassifier(3, max_depth=2, random_state=0).fit(X, np.full(30, 4))
    proto = to_onnx(forest, X[:1], options={"zipmap": False})
    label, proba = _ort(proto, {"X": X})
    got_label, got_proba = OnnxTorchModule(proto)(torch.from_numpy(X))
    np.testing.assert_array_equal(got_label.numpy(), label)  # onnxruntime's literal 1
    np.testing.assert_allclose(got_proba.detach().numpy(), proba, atol=1e-6)
    np.testing.assert_allclose(got_proba.detach().numpy(), forest.predict_proba(X), atol=1e-6)
    with pytest.raises(UnsupportedOperatorError, match="one string class label"):
        OnnxTorchModule(_one_class("NONE", None, {"classlabels_strings": ["only"]}))
