"""Tree graph forms (strategy=): every form against the library's own predictions.

Data lie on a coarse grid with NaN, so split thresholds coincide with feature values, and
extra rows put each feature exactly at every threshold the model uses.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pytest

import onnxbridge
from onnxbridge import UnsupportedModelError

xgboost = pytest.importorskip("xgboost")
lightgbm = pytest.importorskip("lightgbm")
catboost = pytest.importorskip("catboost")
pytest.importorskip("onnxmltools")

from sklearn.ensemble import (  # noqa: E402
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FORMS = ["tree_ensemble", "gemm", "tree_traversal", "perfect_tree_traversal", "tree_ensemble_chunked"]
N_FEATURES = 5


def _data(task: str, nan: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.round(rng.normal(size=(300, N_FEATURES)) * 4) / 4  # a grid: ties at thresholds
    if nan:
        X[rng.random(X.shape) < 0.12] = np.nan
    z = np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * np.nan_to_num(X[:, 2], nan=1.0)
    z += np.isnan(X[:, 3]) * 0.7
    if task == "binary":
        y = (z > 0).astype(np.int64)
    elif task == "multiclass":
        y = np.digitize(z, [-0.8, 0.6]).astype(np.int64)
    else:
        y = z + 0.1 * rng.normal(size=len(z))
    return X.astype(np.float32), y


def _at_thresholds(m: onnxbridge.OnnxModel, X: np.ndarray) -> np.ndarray:
    """Rows of X with one feature set exactly to each threshold of the converted trees."""
    from onnx import helper, numpy_helper

    rows = []
    for node in m.proto.graph.node:
        if not node.op_type.startswith("TreeEnsemble"):
            continue
        attrs = {a.name: a for a in node.attribute}
        feats = helper.get_attribute_value(attrs["nodes_featureids"])
        if "nodes_values" in attrs:
            values = np.asarray(helper.get_attribute_value(attrs["nodes_values"]))
        else:
            values = numpy_helper.to_array(attrs["nodes_values_as_tensor"].t)
        modes = helper.get_attribute_value(attrs["nodes_modes"])
        for i, (f, v, mode) in enumerate(zip(feats, values, modes, strict=True)):
            if mode != b"LEAF":
                row = X[i % len(X)].copy()
                row[f] = v
                rows.append(row)
    assert rows, "the reference conversion has no TreeEnsemble node"
    return np.asarray(rows, dtype=X.dtype)[:400]


def _expected(model: Any, X: np.ndarray, classifier: bool) -> list[np.ndarray]:
    if classifier:
        return [np.asarray(model.predict(X)).reshape(-1), np.asarray(model.predict_proba(X))]
    return [np.asarray(model.predict(X)).reshape(len(X), -1)]


_REFERENCES: dict[int, tuple[onnxbridge.OnnxModel, np.ndarray]] = {}


def _reference(model: Any, X: np.ndarray) -> tuple[onnxbridge.OnnxModel, np.ndarray]:
    """Today's TreeEnsemble conversion of ``model`` and the test rows (X plus ties)."""
    if id(model) not in _REFERENCES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = onnxbridge.to_onnx(model, X[:50], verify=False)
        _REFERENCES[id(model)] = reference, np.concatenate([X, _at_thresholds(reference, X)])
    return _REFERENCES[id(model)]


def _check(model: Any, X: np.ndarray, strategy: str, classifier: bool,
           verify: bool = False) -> onnxbridge.OnnxModel:
    """Convert with ``strategy`` and compare with the library on X and at every threshold
    (stricter than to_onnx's own check, which ``verify=True`` also runs)."""
    reference, test = _reference(model, X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = onnxbridge.to_onnx(model, X[:50], strategy=strategy, verify=verify)
    if verify:
        assert m.parity is not None and m.parity.passed, str(m.parity)
    if strategy != "tree_ensemble":
        assert m.metadata["onnxbridge.trees.strategy"] == strategy
        assert not any(n.op_type.startswith("TreeEnsembleC") for n in m.proto.graph.node)
    assert m.output_names == reference.output_names
    got = m.run(test)
    got = got if isinstance(got, (list, tuple)) else [got]
    want = _expected(model, test, classifier)
    if classifier:
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1].dtype == np.float32 and got[1].shape == want[1].shape
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
    else:
        assert got[0].shape == want[0].shape
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    return m


def _fit(library: str, task: str) -> tuple[Any, np.ndarray, bool]:
    X, y = _data(task, nan=library != "sklearn-rf")
    classifier = task != "regression"
    if library == "xgboost":
        cls = xgboost.XGBClassifier if classifier else xgboost.XGBRegressor
        model = cls(n_estimators=20, max_depth=4, learning_rate=0.3, base_score=None)
    elif library == "lightgbm":
        cls = lightgbm.LGBMClassifier if classifier else lightgbm.LGBMRegressor
        model = cls(n_estimators=20, num_leaves=12, max_depth=5, min_child_samples=5,
                    verbose=-1)
    elif library == "catboost":
        cls = catboost.CatBoostClassifier if classifier else catboost.CatBoostRegressor
        model = cls(iterations=20, depth=4, verbose=0, allow_writing_files=False,
                    thread_count=1)
    elif library == "sklearn-hgb":
        model = (HistGradientBoostingClassifier if classifier else HistGradientBoostingRegressor)(
            max_iter=15, max_depth=5)
    else:
        model = (RandomForestClassifier(n_estimators=12, max_depth=6, random_state=0)
                 if classifier else ExtraTreesRegressor(n_estimators=12, max_depth=6))
    return model.fit(X, y), X, classifier


_MODELS: dict[tuple[str, str], tuple[Any, np.ndarray, bool]] = {}


def _model(library: str, task: str) -> tuple[Any, np.ndarray, bool]:
    if (library, task) not in _MODELS:
        _MODELS[(library, task)] = _fit(library, task)
    return _MODELS[(library, task)]


LIBRARIES = ["xgboost", "lightgbm", "catboost", "sklearn-hgb", "sklearn-rf"]
TASKS = ["binary", "multiclass", "regression"]


@pytest.mark.parametrize("strategy", FORMS)
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("library", LIBRARIES)
def test_form_matches_library(library: str, task: str, strategy: str) -> None:
    model, X, classifier = _model(library, task)
    _check(model, X, strategy, classifier)


@pytest.mark.parametrize("task", TASKS)
def test_oblivious_form_for_catboost(task: str) -> None:
    model, X, classifier = _model("catboost", task)
    m = _check(model, X, "oblivious", classifier, verify=True)
    ops = {n.op_type for n in m.proto.graph.node}
    assert not any(op.startswith("TreeEnsemble") for op in ops)


@pytest.mark.parametrize(("depth", "task"), [(8, "binary"), (10, "regression"),
                                            (9, "multiclass")])
def test_oblivious_form_deep_catboost(depth: int, task: str) -> None:
    """Depth 8 is the last the uint8 bit weights hold; deeper trees weigh bits in float32."""
    X, y = _data(task, nan=True, seed=depth)
    X, y = np.concatenate([X, X + 0.125]), np.concatenate([y, y])  # enough rows for every level
    cls = catboost.CatBoostRegressor if task == "regression" else catboost.CatBoostClassifier
    model = cls(iterations=6, depth=depth, verbose=0, allow_writing_files=False,
                thread_count=1, random_seed=0).fit(X, y)
    m = _check(model, X, "oblivious", task != "regression")
    uses_bytes = any(n.op_type == "MatMulInteger" for n in m.proto.graph.node)
    assert uses_bytes == (depth <= 8)


def test_oblivious_form_for_a_gpu_uses_float_bits() -> None:
    """For a GPU provider the bits are weighed in float32 (onnxruntime's CUDA MatMulInteger
    takes int8 only); the graph runs here on the CPU and still matches CatBoost."""
    model, X, _ = _model("catboost", "binary")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = onnxbridge.to_onnx(model, X[:50], strategy="oblivious", provider_hint="cuda",
                               verify=False)
    assert not any(n.op_type == "MatMulInteger" for n in m.proto.graph.node)
    label, proba = m.run(X, providers="cpu")
    np.testing.assert_array_equal(label, model.predict(X).reshape(-1))
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_oblivious_refuses_ordinary_trees() -> None:
    model, X, _ = _model("xgboost", "binary")
    with pytest.raises(UnsupportedModelError, match="symmetric"):
        onnxbridge.to_onnx(model, X[:20], strategy="oblivious")


def test_xgboost_ranker_and_logistic_gbc() -> None:
    X, y = _data("regression", nan=True)
    groups = np.full(30, 10)
    ranker = xgboost.XGBRanker(n_estimators=15, max_depth=3).fit(X, np.digitize(y, [0, 1]),
                                                                  group=groups)
    m = onnxbridge.to_onnx(ranker, X[:40], strategy="perfect_tree_traversal")
    np.testing.assert_allclose(m.run(X).reshape(-1), ranker.predict(X), rtol=1e-5, atol=1e-5)
    Xc, yc = _data("binary", nan=False)
    gbc = GradientBoostingClassifier(n_estimators=15, max_depth=3).fit(Xc, yc)
    _check(gbc, Xc, "gemm", classifier=True, verify=True)


def test_double_precision_pipeline_form() -> None:
    """A scikit-learn forest converted in float64 keeps its decisions in float64."""
    X, y = _data("binary", nan=False)
    X64 = X.astype(np.float64)
    model = RandomForestClassifier(n_estimators=8, max_depth=5, random_state=0).fit(X64, y)
    m = onnxbridge.to_onnx(model, X64, strategy="tree_traversal", double=True)
    label, probs = m.run(X64)
    np.testing.assert_array_equal(label, model.predict(X64))
    np.testing.assert_allclose(probs, model.predict_proba(X64), atol=1e-6)


def test_auto_records_its_choice() -> None:
    cat, Xc, _ = _model("catboost", "binary")
    xgb, Xx, _ = _model("xgboost", "binary")
    m = onnxbridge.to_onnx(cat, Xc[:20], strategy="auto", batch_size_hint=10_000)
    assert m.metadata["onnxbridge.trees.strategy"] == "oblivious"
    assert m.metadata["onnxbridge.trees.requested"] == "auto"
    assert m.metadata["onnxbridge.trees.batch_size_hint"] == "10000"
    assert "symmetric" in m.metadata["onnxbridge.trees.reason"]
    one = onnxbridge.to_onnx(xgb, Xx[:20], strategy="auto", batch_size_hint=1)
    assert one.metadata["onnxbridge.trees.strategy"] == "tree_ensemble"
    assert any(n.op_type == "TreeEnsembleClassifier" for n in one.proto.graph.node)
    small = onnxbridge.to_onnx(xgb, Xx[:20], strategy="auto", batch_size_hint=64)
    assert small.metadata["onnxbridge.trees.strategy"] == "tree_ensemble"
    large = onnxbridge.to_onnx(xgb, Xx[:20], strategy="auto", batch_size_hint=10_000)
    assert large.metadata["onnxbridge.trees.strategy"] == "tree_ensemble_chunked"
    assert "parallel over rows" in large.metadata["onnxbridge.trees.reason"]
    label, proba = large.run(Xx)
    np.testing.assert_array_equal(label, xgb.predict(Xx))
    np.testing.assert_allclose(proba, xgb.predict_proba(Xx), rtol=1e-5, atol=1e-6)
    gpu = onnxbridge.to_onnx(xgb, Xx[:20], strategy="auto", provider_hint="cuda")
    assert gpu.metadata["onnxbridge.trees.provider"] == "CUDAExecutionProvider"
    assert gpu.metadata["onnxbridge.trees.strategy"] == "perfect_tree_traversal"
    ops = {n.domain for n in gpu.proto.graph.node}
    assert "ai.onnx.ml" not in ops  # no operator without a CUDA kernel
    # the choice survives a save and load
    loaded = onnxbridge.load(gpu.proto)
    assert loaded.metadata["onnxbridge.trees.strategy"] == "perfect_tree_traversal"
    assert json.loads(loaded.metadata["onnxbridge.parity"])


def _gemm_entries_xgboost(model: Any) -> int:
    """Trees x most internal nodes x most leaves of any tree, read from XGBoost's own dump."""
    frame = model.get_booster().trees_to_dataframe()
    leaf = frame["Feature"] == "Leaf"
    inner = int((~leaf).groupby(frame["Tree"]).sum().max())
    leaves = int(leaf.groupby(frame["Tree"]).sum().max())
    return int(frame["Tree"].nunique()) * inner * leaves


def test_auto_follows_provider_and_batch() -> None:
    """On a GPU, auto takes GEMM while rows x path entries stays within the limit, then the
    traversal forms (oblivious for CatBoost); the CPU rule does not change with the GPU's."""
    from onnxbridge.plugins._trees import _GPU_GEMM_WORK

    xgb, Xx, _ = _model("xgboost", "binary")
    cat, Xc, _ = _model("catboost", "binary")

    def auto(model: Any, X: np.ndarray, provider: str, rows: int | None) -> onnxbridge.OnnxModel:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return onnxbridge.to_onnx(model, X[:20], strategy="auto", batch_size_hint=rows,
                                      provider_hint=provider, verify=False)

    entries = _gemm_entries_xgboost(xgb)
    edge = _GPU_GEMM_WORK // entries
    assert edge > 100  # the small test model fits GEMM well beyond 100 rows
    for rows, want in [(1, "gemm"), (100, "gemm"), (edge, "gemm"),
                       (edge + 1, "perfect_tree_traversal"), (None, "perfect_tree_traversal")]:
        m = auto(xgb, Xx, "cuda", rows)
        assert m.metadata["onnxbridge.trees.strategy"] == want, rows
        assert m.metadata["onnxbridge.trees.provider"] == "CUDAExecutionProvider"
        assert not any(n.domain == "ai.onnx.ml" for n in m.proto.graph.node)
    assert f"{entries:,}" in auto(xgb, Xx, "cuda", 1).metadata["onnxbridge.trees.reason"]
    for rows, want in [(1, "tree_ensemble"), (100, "tree_ensemble"),
                       (edge, "tree_ensemble_chunked")]:
        assert auto(xgb, Xx, "cpu", rows).metadata["onnxbridge.trees.strategy"] == want, rows
    # CatBoost: 20 symmetric trees of depth 4 (15 splits and 16 leaves each, padded)
    cat_edge = _GPU_GEMM_WORK // (cat.tree_count_ * 15 * 16)
    for rows, want in [(1, "gemm"), (cat_edge, "gemm"), (cat_edge + 1, "oblivious"),
                       (None, "oblivious")]:
        assert auto(cat, Xc, "cuda", rows).metadata["onnxbridge.trees.strategy"] == want, rows
    assert auto(cat, Xc, "cpu", 100).metadata["onnxbridge.trees.strategy"] == "oblivious"
    # what the GPU gets at small batches is the library's answer (here on the CPU provider)
    small = auto(xgb, Xx, "cuda", 100)
    label, proba = small.run(Xx, providers="cpu")
    np.testing.assert_array_equal(label, xgb.predict(Xx))
    np.testing.assert_allclose(proba, xgb.predict_proba(Xx), rtol=1e-5, atol=1e-6)


def _setting(m: onnxbridge.OnnxModel, key: str) -> str | None:
    """A session config entry of ``m``'s CPU session, None where it has none."""
    try:
        return str(m.session("cpu").get_session_options().get_session_config_entry(key))
    except RuntimeError:  # onnxruntime: "does not have configuration with key"
        return None


def test_auto_turns_spinning_off_at_large_batches_on_a_cpu() -> None:
    """auto records onnxruntime's intra-op spinning off for large CPU batches, and the model's
    sessions get it; small batches, GPUs and explicit strategies keep onnxruntime's default."""
    from onnxbridge.runtime.session import SESSION_CONFIG_KEY

    key = "session.intra_op.allow_spinning"
    xgb, X, _ = _model("xgboost", "binary")
    cat, Xc, _ = _model("catboost", "binary")

    def convert(model: Any, data: np.ndarray, **kw: Any) -> onnxbridge.OnnxModel:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return onnxbridge.to_onnx(model, data[:20], verify=False, **kw)

    large = convert(xgb, X, strategy="auto", batch_size_hint=10_000)
    assert large.metadata["onnxbridge.trees.strategy"] == "tree_ensemble_chunked"
    assert json.loads(large.metadata[SESSION_CONFIG_KEY]) == {key: "0"}
    assert "spinning off" in large.metadata["onnxbridge.trees.reason"]
    assert _setting(large, key) == "0"
    assert _setting(onnxbridge.load(large.proto), key) == "0"  # it travels with the model
    label, proba = large.run(X)
    np.testing.assert_array_equal(label, xgb.predict(X))
    np.testing.assert_allclose(proba, xgb.predict_proba(X), rtol=1e-5, atol=1e-6)
    oblivious = convert(cat, Xc, strategy="auto", batch_size_hint=10_000)
    assert oblivious.metadata["onnxbridge.trees.strategy"] == "oblivious"
    assert _setting(oblivious, key) == "0"
    assert _setting(convert(cat, Xc, strategy="auto", batch_size_hint=100), key) is None
    label, proba = oblivious.run(Xc)
    np.testing.assert_array_equal(label, cat.predict(Xc).reshape(-1))
    np.testing.assert_allclose(proba, cat.predict_proba(Xc), rtol=1e-5, atol=1e-6)
    for kw in ({"strategy": "auto", "batch_size_hint": 64},
               {"strategy": "auto", "batch_size_hint": 10_000, "provider_hint": "cuda"},
               {"strategy": "tree_ensemble_chunked"}, {"strategy": "auto"}):
        m = convert(xgb, X, **kw)
        assert SESSION_CONFIG_KEY not in m.metadata, kw
        assert _setting(m, key) is None, kw


def test_model_session_settings_are_limited() -> None:
    """A model names only the allowed settings; anything else is ignored with a warning."""
    from onnxbridge.runtime.session import SESSION_CONFIG_KEY

    xgb, X, _ = _model("xgboost", "binary")
    for value, applied in (('{"session.intra_op.allow_spinning": "0"}', "0"),
                           ('{"session.intra_op.allow_spinning": "2"}', None),
                           ('{"session.use_ort_model_bytes_directly": "1"}', None),
                           ("not json", None)):
        m = onnxbridge.load(onnxbridge.to_onnx(xgb, X[:20], verify=False).proto)
        m.set_metadata(SESSION_CONFIG_KEY, value)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            spinning = _setting(m, "session.intra_op.allow_spinning")
        assert spinning == applied, value
        assert _setting(m, "session.use_ort_model_bytes_directly") is None
        assert bool(caught) == (applied is None), value
        np.testing.assert_array_equal(m.run(X)[0], xgb.predict(X))


def test_bad_options_are_refused() -> None:
    model, X, _ = _model("xgboost", "binary")
    with pytest.raises(onnxbridge.OnnxBridgeError, match="strategy must be one of"):
        onnxbridge.to_onnx(model, X[:20], strategy="fastest")
    with pytest.raises(onnxbridge.OnnxBridgeError, match="batch_size_hint"):
        onnxbridge.to_onnx(model, X[:20], strategy="auto", batch_size_hint=0)
    from sklearn.linear_model import LinearRegression

    lin = LinearRegression().fit(np.nan_to_num(X), np.arange(len(X)))
    with pytest.raises(UnsupportedModelError, match="tree ensembles"):
        onnxbridge.to_onnx(lin, np.nan_to_num(X[:20]), strategy="gemm")


def test_lightgbm_categorical_splits() -> None:
    """LightGBM's integer-coded categorical splits convert in every form (the converter writes
    them as chains of <= splits), and the default graph is left as it was."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 3)).astype(np.float32)
    X[:, 0] = rng.integers(0, 6, size=300)
    y = (np.isin(X[:, 0], [1, 4]) ^ (X[:, 1] > 0)).astype(np.int64)
    model = lightgbm.LGBMClassifier(n_estimators=10, min_child_samples=5, verbose=-1)
    model.fit(X, y, categorical_feature=[0])
    for strategy in ("tree_ensemble", "perfect_tree_traversal", "gemm"):
        m = onnxbridge.to_onnx(model, X, strategy=strategy)
        label, probs = m.run(X)
        np.testing.assert_array_equal(label, model.predict(X))
        np.testing.assert_allclose(probs, model.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_padded_forms_refuse_deep_trees(monkeypatch: pytest.MonkeyPatch) -> None:
    """A form that pads every tree to 2^depth leaves refuses a model where that explodes
    (the limit is lowered so that a small model reaches it); traversal still converts."""
    from onnxbridge.plugins import _trees

    X, y = _data("regression", nan=False)
    deep = lightgbm.LGBMRegressor(n_estimators=30, num_leaves=40, min_child_samples=2,
                                  verbose=-1).fit(X, y)
    monkeypatch.setattr(_trees, "_MAX_PADDED", 1 << 10)
    with pytest.raises(UnsupportedModelError, match="tree_traversal"):
        onnxbridge.to_onnx(deep, X, strategy="perfect_tree_traversal")
    m = onnxbridge.to_onnx(deep, X, strategy="tree_traversal")
    np.testing.assert_allclose(m.run(X).reshape(-1), deep.predict(X), rtol=1e-5, atol=1e-5)
