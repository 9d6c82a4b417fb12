"""OnnxModel.to_torch() on tree ensembles: checked against the tree library's own predictions
(labels exact), against onnxruntime on hand-built TreeEnsemble nodes (every split mode, missing
value flag, post transform, aggregation and binary convention), and trained one step."""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

import onnxbridge  # noqa: E402
from onnxbridge._to_torch import OnnxTorchModule  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.normal(size=(150, 4)).astype(np.float32)
X_NAN = X.copy()
X_NAN[RNG.random(X.shape) < 0.15] = np.nan
_CLEAN = np.nan_to_num(X_NAN)
Y2 = (_CLEAN[:, 0] + 0.5 * _CLEAN[:, 2] > 0).astype(np.int64)
Y3 = np.digitize(_CLEAN[:, 1], [-0.5, 0.5]).astype(np.int64)
Y3_STR = np.array(["low", "mid", "high"])[Y3]
YR = _CLEAN[:, 0] * 2 + _CLEAN[:, 1] + np.isnan(X_NAN[:, 3])


def _sklearn(name: str) -> Callable[[], Any]:
    def make() -> Any:
        from sklearn import ensemble, tree

        few = {"max_iter": 3} if "Hist" in name else {"n_estimators": 3} if (
            "Forest" in name or "Trees" in name or "Gradient" in name) else {}
        cls = getattr(ensemble, name, None) or getattr(tree, name)
        depth = {} if "Hist" in name else {"max_depth": 3}
        return cls(random_state=0, **few, **depth)
    return make


def _xgb(kind: str) -> Callable[[], Any]:
    def make() -> Any:
        xgboost = pytest.importorskip("xgboost")
        cls = xgboost.XGBClassifier if kind == "c" else xgboost.XGBRegressor
        return cls(n_estimators=3, max_depth=3)
    return make


def _lgb(kind: str) -> Callable[[], Any]:
    def make() -> Any:
        lightgbm = pytest.importorskip("lightgbm")
        cls = lightgbm.LGBMClassifier if kind == "c" else lightgbm.LGBMRegressor
        return cls(n_estimators=3, num_leaves=6, verbose=-1)
    return make


def _cb(kind: str) -> Callable[[], Any]:
    def make() -> Any:
        catboost = pytest.importorskip("catboost")
        cls = catboost.CatBoostClassifier if kind == "c" else catboost.CatBoostRegressor
        return cls(iterations=3, depth=3, verbose=0, thread_count=1)
    return make


# name -> (factory, target, input): the boosting libraries (and HistGradientBoosting) see NaNs
CASES: dict[str, tuple[Callable[[], Any], np.ndarray, np.ndarray]] = {
    "xgboost-binary": (_xgb("c"), Y2, X_NAN),
    "xgboost-multiclass": (_xgb("c"), Y3, X_NAN),
    "xgboost-regressor": (_xgb("r"), YR, X_NAN),
    "lightgbm-binary": (_lgb("c"), Y2, X_NAN),
    "lightgbm-multiclass-strings": (_lgb("c"), Y3_STR, X_NAN),
    "lightgbm-regressor": (_lgb("r"), YR, X_NAN),
    "catboost-binary": (_cb("c"), Y2, X_NAN),
    "catboost-multiclass-strings": (_cb("c"), Y3_STR, X_NAN),
    "catboost-regressor": (_cb("r"), YR, X_NAN),
    "histgb-binary": (_sklearn("HistGradientBoostingClassifier"), Y2, X_NAN),
    "histgb-multiclass": (_sklearn("HistGradientBoostingClassifier"), Y3, X_NAN),
    "histgb-regressor": (_sklearn("HistGradientBoostingRegressor"), YR, X_NAN),
    "gradientboosting-binary": (_sklearn("GradientBoostingClassifier"), Y2, X),
    "gradientboosting-multiclass": (_sklearn("GradientBoostingClassifier"), Y3, X),
    "gradientboosting-regressor": (_sklearn("GradientBoostingRegressor"), YR, X),
    "randomforest-binary-strings": (_sklearn("RandomForestClassifier"),
                                    np.array(["no", "yes"])[Y2], X),
    "randomforest-multiclass": (_sklearn("RandomForestClassifier"), Y3, X),
    "randomforest-regressor": (_sklearn("RandomForestRegressor"), YR, X),
    "extratrees-multiclass": (_sklearn("ExtraTreesClassifier"), Y3, X),
    "extratrees-regressor": (_sklearn("ExtraTreesRegressor"), YR, X),
    "decisiontree-binary": (_sklearn("DecisionTreeClassifier"), Y2, X),
    "decisiontree-multiclass-strings": (_sklearn("DecisionTreeClassifier"), Y3_STR, X),
    "decisiontree-regressor": (_sklearn("DecisionTreeRegressor"), YR, X),
}


def _fit(case: str) -> tuple[Any, np.ndarray]:
    make, y, x = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make().fit(x, y), x


def _numpy(value: Any) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else value.detach().numpy()


def _check_against_native(model: Any, m: onnxbridge.OnnxModel, back: OnnxTorchModule,
                          x: np.ndarray) -> None:
    with torch.no_grad():
        got = back(torch.from_numpy(x))
    expected_onnx = m.run(x, as_dict=True)
    if isinstance(got, tuple):  # classifier: (label, probabilities)
        label, proba = _numpy(got[0]), _numpy(got[1])
        np.testing.assert_array_equal(label, np.ravel(model.predict(x)))
        np.testing.assert_allclose(proba, model.predict_proba(x), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(label, expected_onnx["label"])
        np.testing.assert_allclose(proba, expected_onnx["probabilities"], rtol=1e-5, atol=1e-6)
    else:
        value = _numpy(got)
        np.testing.assert_allclose(value.ravel(), model.predict(x), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(value, expected_onnx["variable"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_tree_models_come_back_computing_what_the_library_predicts(case: str) -> None:
    model, x = _fit(case)
    m = onnxbridge.to_onnx(model, x[:5])
    back = m.to_torch(x)  # checked against onnxruntime on these rows (NaNs included)
    assert back.parity is not None and back.parity.passed
    _check_against_native(model, m, back, x)
    # leaf values are trainable; the structure is not
    names = [n for n, _ in back.named_parameters()]
    assert names and all("leaf_values" in n or "base_values" in n for n in names), names
    assert any("threshold" in n for n, _ in back.named_buffers())


@pytest.mark.parametrize("strategy", ["tree_ensemble", "tree_ensemble_chunked", "auto"])
@pytest.mark.parametrize("case", ["lightgbm-multiclass-strings", "catboost-binary",
                                  "xgboost-regressor"])
def test_every_strategy_with_a_tree_ensemble_node(case: str, strategy: str) -> None:
    model, x = _fit(case)
    m = onnxbridge.to_onnx(model, x[:5], strategy=strategy, batch_size_hint=5000)
    if strategy != "auto":  # auto may pick a form without the operator (CatBoost: oblivious)
        assert any(n.op_type.startswith("TreeEnsemble") for n in m.proto.graph.node)
    _check_against_native(model, m, m.to_torch(x), x)


def test_a_gradient_step_on_leaf_values_changes_the_output() -> None:
    model, x = _fit("gradientboosting-regressor")
    back = onnxbridge.to_onnx(model, x[:5]).to_torch()
    leaves = next(p for n, p in back.named_parameters() if "leaf_values" in n)
    before = leaves.detach().clone()
    target = torch.from_numpy(YR.astype(np.float32) + 1.0).reshape(-1, 1)
    xt = torch.from_numpy(x)
    optimizer = torch.optim.SGD(back.parameters(), lr=0.5)
    back.train()
    loss0 = torch.nn.functional.mse_loss(back(xt), target)
    optimizer.zero_grad()
    loss0.backward()
    assert leaves.grad is not None and leaves.grad.abs().sum() > 0
    optimizer.step()
    loss1 = torch.nn.functional.mse_loss(back(xt), target)
    assert loss1.item() < loss0.item()
    assert not torch.equal(leaves.detach(), before)
    with torch.no_grad():
        moved = back(xt).numpy().ravel()
    assert np.abs(moved - model.predict(x)).max() > 1e-3  # the module no longer equals the model


@pytest.mark.slow
def test_a_frame_with_a_category_column_strings_in_equal_splits() -> None:
    pd = pytest.importorskip("pandas")
    lightgbm = pytest.importorskip("lightgbm")
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"num": rng.normal(size=200),
                       "cat": pd.Categorical(rng.choice(["x", "y", "z"], 200))})
    y = ((df["num"] + 2 * (df["cat"] == "y")).to_numpy() > 0.3).astype(np.int64)
    model = lightgbm.LGBMClassifier(n_estimators=3, num_leaves=5, min_child_samples=5,
                                    verbose=-1).fit(df, y)
    m = onnxbridge.to_onnx(model, df.head(5))
    modes = {s for n in m.proto.graph.node for a in n.attribute if a.name == "nodes_modes"
             for s in a.strings}
    assert b"BRANCH_EQ" in modes  # the category split
    feeds = {"num": df[["num"]].to_numpy(), "cat": df[["cat"]].astype(str).to_numpy()}
    back = m.to_torch(feeds)
    with torch.no_grad():
        label, proba = back(**feeds)
    np.testing.assert_array_equal(label.numpy(), model.predict(df))
    np.testing.assert_allclose(proba.numpy(), model.predict_proba(df), rtol=1e-4, atol=1e-6)


def test_zipmap_output_comes_back_as_a_list_of_dicts() -> None:
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(X, Y3_STR)
    proto = skl2onnx.to_onnx(model, X[:1], options={"zipmap": True}, target_opset=17)
    assert any(n.op_type == "ZipMap" for n in proto.graph.node)
    m = onnxbridge.load(proto)
    back = m.to_torch(X[:20])
    label, probs = back(torch.from_numpy(X[:20]))
    assert isinstance(probs, list) and isinstance(probs[0], dict)
    np.testing.assert_array_equal(label, model.predict(X[:20]))
    expected = model.predict_proba(X[:20])
    got = np.array([[row[c] for c in model.classes_] for row in probs])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# -- hand-built TreeEnsemble nodes against onnxruntime -------------------------------------------
_MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]


def _random_trees(rng: np.random.Generator, n_trees: int, depth: int, n_features: int,
                  classes: list[int], modes: list[str]) -> tuple[dict[str, list[Any]],
                                                                  dict[str, list[Any]]]:
    nodes: dict[str, list[Any]] = {k: [] for k in (
        "treeids", "nodeids", "featureids", "values", "modes", "truenodeids", "falsenodeids",
        "missing_value_tracks_true")}
    weights: dict[str, list[Any]] = {k: [] for k in ("treeids", "nodeids", "ids", "weights")}
    count = [0]

    def grow(tree: int, level: int) -> int:
        node = count[0]
        count[0] += 1
        row = {"treeids": tree, "nodeids": node}
        if level == depth or (level and rng.random() < 0.25):
            row.update(featureids=0, values=0.0, modes="LEAF", truenodeids=0,
                       falsenodeids=0, missing_value_tracks_true=0)
            for c in classes:
                for k, v in zip(weights, (tree, node, c, round(float(rng.normal()), 3)),
                                strict=True):
                    weights[k].append(v)
        else:
            mode = modes[int(rng.integers(len(modes)))]
            row.update(featureids=int(rng.integers(n_features)), modes=mode,
                       # whole thresholds half the time: rows equal to them test <= vs <
                       values=float(rng.integers(-1, 2)) if mode in (
                           "BRANCH_EQ", "BRANCH_NEQ") or rng.random() < 0.5
                       else float(np.float32(rng.normal())),
                       missing_value_tracks_true=int(rng.integers(2)))
        index = len(nodes["treeids"])
        for k in nodes:
            nodes[k].append(row.get(k))
        if row["modes"] != "LEAF":
            nodes["truenodeids"][index] = grow(tree, level + 1)
            nodes["falsenodeids"][index] = grow(tree, level + 1)
        return node

    for tree in range(n_trees):
        count[0] = 0
        grow(tree, 0)
    return nodes, weights


def _tree_model(rng: np.random.Generator, kind: str, *, n_out: int = 1, post: str = "NONE",
                aggregate: str = "SUM", base: list[float] | None = None,
                classes: list[int] | None = None, labels: list[str] | None = None,
                modes: list[str] = _MODES, double: bool = False) -> onnx.ModelProto:
    classes = list(range(n_out)) if classes is None else classes
    nodes, weights = _random_trees(rng, 3, 3, 3, classes, modes)
    attrs: dict[str, Any] = {f"nodes_{k}": v for k, v in nodes.items()}
    attrs["post_transform"] = post
    if base is not None:
        attrs["base_values"] = base
    if kind == "regressor":
        attrs.update({f"target_{k}": v for k, v in weights.items()}, n_targets=n_out,
                     aggregate_function=aggregate)
        outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n_out])]
    else:
        attrs.update({f"class_{k}": v for k, v in weights.items()})
        if labels is None:
            attrs["classlabels_int64s"] = list(range(n_out))
        else:
            attrs["classlabels_strings"] = labels
        outputs = [helper.make_tensor_value_info(
            "label", TensorProto.STRING if labels else TensorProto.INT64, [None]),
            helper.make_tensor_value_info("Z", TensorProto.FLOAT, [None, n_out])]
    op = "TreeEnsembleRegressor" if kind == "regressor" else "TreeEnsembleClassifier"
    node = helper.make_node(op, ["X"], [o.name for o in outputs], domain="ai.onnx.ml", **attrs)
    x = helper.make_tensor_value_info("X", TensorProto.DOUBLE if double else TensorProto.FLOAT,
                                      [None, 3])
    graph = helper.make_graph([node], "trees", [x], outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("ai.onnx.ml", 3)])


def _grid_input(rng: np.random.Generator, double: bool) -> np.ndarray:
    """Integers (hit the EQ/NEQ thresholds), normal values and NaNs."""
    x = rng.integers(-1, 2, size=(300, 3)).astype(np.float32)
    x = np.where(rng.random(x.shape) < 0.5, rng.normal(size=x.shape).astype(np.float32), x)
    x[rng.random(x.shape) < 0.15] = np.nan
    return x.astype(np.float64) if double else x


def _against_onnxruntime(proto: onnx.ModelProto, x: np.ndarray) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    expected = session.run(None, {"X": x})
    with torch.no_grad():
        got = OnnxTorchModule(proto)(torch.from_numpy(x))
    got = got if isinstance(got, tuple) else (got,)
    for e, g in zip(expected, got, strict=True):
        g = _numpy(g)
        assert e.shape == g.shape
        if e.dtype.kind in "OiU":
            np.testing.assert_array_equal(g, e)
        else:
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5, equal_nan=True)


_REGRESSORS = [(post, agg, n_out, base)
               for post in ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT")
               for agg in ("SUM", "AVERAGE", "MIN", "MAX")
               for n_out, base in ((1, None), (1, [0.25]), (3, None), (3, [0.1, -0.2, 0.3]))]


@pytest.mark.parametrize(("post", "aggregate", "n_out", "base"), _REGRESSORS)
def test_hand_built_regressors_match_onnxruntime(post: str, aggregate: str, n_out: int,
                                                 base: list[float] | None) -> None:
    rng = np.random.default_rng(zlib.crc32(repr((post, aggregate, n_out, base)).encode()))
    proto = _tree_model(rng, "regressor", n_out=n_out, post=post, aggregate=aggregate, base=base)
    _against_onnxruntime(proto, _grid_input(rng, False))


_CLASSIFIERS = [(post, base, classes, labels)
                for post in ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT")
                for base in (None, [0.2], [-0.4, 0.4], [0.1, 0.3])
                for classes in ([0], [1], [0, 1])
                for labels in (None, ["no", "yes"])
                # one scored class with PROBIT: onnxruntime leaves the second column unwritten
                if not (post == "PROBIT" and classes == [0] and (base is None or len(base) == 1))]


@pytest.mark.parametrize(("post", "base", "classes", "labels"), _CLASSIFIERS)
def test_hand_built_binary_classifiers_match_onnxruntime(
        post: str, base: list[float] | None, classes: list[int], labels: list[str] | None) -> None:
    rng = np.random.default_rng(zlib.crc32(repr((post, base, classes, labels)).encode()))
    proto = _tree_model(rng, "classifier", n_out=2, post=post, base=base, classes=classes,
                        labels=labels)
    _against_onnxruntime(proto, _grid_input(rng, False))


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
@pytest.mark.parametrize("classes", [[0, 1, 2], [0, 2]])
@pytest.mark.parametrize("base", [None, [0.1, 0.2, 0.3]])
def test_hand_built_multiclass_classifiers_match_onnxruntime(
        post: str, classes: list[int], base: list[float] | None) -> None:
    rng = np.random.default_rng(len(post) * 7 + len(classes) + (3 if base else 0))
    proto = _tree_model(rng, "classifier", n_out=3, post=post, base=base, classes=classes,
                        labels=["a", "b", "c"] if base else None)
    _against_onnxruntime(proto, _grid_input(rng, False))


@pytest.mark.parametrize("mode", _MODES)
@pytest.mark.parametrize("double", [False, True])
def test_each_split_mode_with_missing_values_matches_onnxruntime(mode: str, double: bool) -> None:
    rng = np.random.default_rng(_MODES.index(mode) + 10 * double)
    proto = _tree_model(rng, "regressor", modes=[mode], double=double)
    _against_onnxruntime(proto, _grid_input(rng, double))
