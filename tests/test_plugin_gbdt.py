"""XGBoost, LightGBM and CatBoost converters: real training, real conversion, real onnxruntime."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import onnxbridge
from onnxbridge import InputError, ParityError, UnsupportedModelError

xgboost = pytest.importorskip("xgboost")
lightgbm = pytest.importorskip("lightgbm")
catboost = pytest.importorskip("catboost")
pytest.importorskip("onnxmltools")

from sklearn.datasets import make_classification, make_regression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _data(n_classes: int = 2, nan: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(240, 6, n_informative=4, n_classes=n_classes, random_state=seed)
    if nan:
        X[::7, 1] = np.nan  # missing values go where the library sends them
    return X, y


def _regression(nan: bool = True) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_regression(240, 6, random_state=1)
    if nan:
        X[::5, 2] = np.nan
    return X, y


def _check_classifier(m: onnxbridge.OnnxModel, X: np.ndarray, proba: np.ndarray,
                      labels: np.ndarray) -> None:
    assert m.output_names == ["label", "probabilities"]
    assert m.parity is not None and m.parity.passed, str(m.parity)
    label, probs = m.run(X)
    assert probs.dtype == np.float32 and probs.shape == proba.shape
    np.testing.assert_allclose(probs, proba, atol=1e-4)
    np.testing.assert_array_equal(label, labels)


# -- XGBoost ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_classes", [2, 3])
def test_xgboost_classifier(n_classes: int) -> None:
    X, y = _data(n_classes)
    model = xgboost.XGBClassifier(n_estimators=15, max_depth=3).fit(X, y)
    m = onnxbridge.to_onnx(model, X)
    _check_classifier(m, X, model.predict_proba(X), model.predict(X))
    assert m.metadata["onnxbridge.framework"] == "xgboost"


def test_xgboost_regressor_and_ranker() -> None:
    X, y = _regression()
    reg = xgboost.XGBRegressor(n_estimators=15, max_depth=3).fit(X, y)
    m = onnxbridge.to_onnx(reg, X)
    assert m.output_names == ["variable"]
    np.testing.assert_allclose(m.run(X).ravel(), reg.predict(X), rtol=1e-4, atol=1e-2)

    Xc, yc = _data(3)
    ranker = xgboost.XGBRanker(n_estimators=10, max_depth=3).fit(
        Xc, yc, qid=np.repeat(np.arange(24), 10))
    m = onnxbridge.to_onnx(ranker, Xc)
    assert m.parity.passed
    np.testing.assert_allclose(m.run(Xc).ravel(), ranker.predict(Xc), atol=1e-4)


@pytest.mark.parametrize(("objective", "extra"), [
    ("binary:logistic", {}), ("multi:softprob", {"num_class": 3}), ("reg:squarederror", {}),
])
def test_xgboost_raw_booster(objective: str, extra: dict[str, int]) -> None:
    X, y = _data(3 if "multi" in objective else 2)
    booster = xgboost.train({"objective": objective, "max_depth": 3, **extra},
                            xgboost.DMatrix(X, y), num_boost_round=10)
    m = onnxbridge.to_onnx(booster, X)
    assert m.parity.passed, str(m.parity)
    pred = booster.predict(xgboost.DMatrix(X))
    if objective.startswith("reg"):
        np.testing.assert_allclose(m.run(X).ravel(), pred, atol=1e-4)
    else:
        probs = m.run(X)[1]
        np.testing.assert_allclose(probs if pred.ndim == 2 else probs[:, 1], pred, atol=1e-5)


def test_xgboost_categorical_is_refused_clearly() -> None:
    pd = pytest.importorskip("pandas")
    X, y = _data(nan=False)
    df = pd.DataFrame(X[:, :3], columns=["a", "b", "c"])
    df["colour"] = pd.Categorical(np.where(X[:, 3] > 0, "red", "blue"))
    model = xgboost.XGBClassifier(n_estimators=5, enable_categorical=True, tree_method="hist")
    model.fit(df, y)
    with pytest.raises(UnsupportedModelError, match=r"'colour'.*one-hot"):
        onnxbridge.to_onnx(model, df)


def test_xgboost_in_pipeline_without_registration() -> None:
    X, y = _data(3, nan=False)
    pipe = make_pipeline(StandardScaler(), xgboost.XGBClassifier(n_estimators=10)).fit(X, y)
    m = onnxbridge.to_onnx(pipe, X)
    _check_classifier(m, X, pipe.predict_proba(X), pipe.predict(X))


# -- LightGBM --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_classes", [2, 3])
def test_lightgbm_classifier(n_classes: int) -> None:
    X, y = _data(n_classes)
    model = lightgbm.LGBMClassifier(n_estimators=15, num_leaves=8, verbose=-1).fit(X, y)
    m = onnxbridge.to_onnx(model, X)
    _check_classifier(m, X, model.predict_proba(X), model.predict(X))
    assert str(m.outputs[0]).startswith("label: int64 [?]")


def test_lightgbm_regressor_ranker_and_booster() -> None:
    X, y = _regression()
    reg = lightgbm.LGBMRegressor(n_estimators=15, num_leaves=8, verbose=-1).fit(X, y)
    m = onnxbridge.to_onnx(reg, X)
    np.testing.assert_allclose(m.run(X).ravel(), reg.predict(X), rtol=1e-4, atol=1e-2)

    Xc, yc = _data(3)
    ranker = lightgbm.LGBMRanker(n_estimators=10, num_leaves=8, verbose=-1)
    ranker.fit(Xc, yc, group=[10] * 24)
    assert onnxbridge.to_onnx(ranker, Xc).parity.passed

    booster = lightgbm.train({"objective": "multiclass", "num_class": 3, "verbose": -1},
                             lightgbm.Dataset(Xc, yc), num_boost_round=8)
    m = onnxbridge.to_onnx(booster, Xc)
    np.testing.assert_allclose(m.run(Xc)[1], booster.predict(Xc), atol=1e-5)


def test_lightgbm_integer_categorical_converts() -> None:
    X, y = _data(nan=False)
    X = X.copy()
    X[:, 0] = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 0.5)  # codes 0..3
    y = ((X[:, 0] == 1) | (X[:, 0] == 2)).astype(int)
    model = lightgbm.LGBMClassifier(n_estimators=10, num_leaves=4, min_child_samples=5,
                                    verbose=-1)
    model.fit(X, y, categorical_feature=[0])
    m = onnxbridge.to_onnx(model, X)
    _check_classifier(m, X, model.predict_proba(X), model.predict(X))


def test_lightgbm_pandas_category_columns_convert_with_unseen_and_missing() -> None:
    pd = pytest.importorskip("pandas")
    X, _ = _data(nan=False)
    rng = np.random.default_rng(0)
    df = pd.DataFrame(X[:, :2], columns=["a", "b"])
    df["shop"] = pd.Categorical(rng.choice(["north", "south", "east", "west"], len(df)))
    df.loc[::13, "shop"] = np.nan
    y = ((df["shop"].astype(str) == "north") | (df["a"] > 1)).astype(int)
    model = lightgbm.LGBMClassifier(n_estimators=10, min_child_samples=5,
                                    verbose=-1).fit(df, y)
    m = onnxbridge.to_onnx(model, df)
    assert [s.name for s in m.inputs] == ["a", "b", "shop"]
    fresh = pd.DataFrame({"shop": pd.Categorical(["north", "mars", None, "east"]),
                          "b": [0.0, 1.0, -1.0, 2.0], "a": [0.1, 2.0, -1.0, 0.0]})
    label, probs = m.run(fresh)  # columns by name, in another order; an unseen category
    want = fresh[["a", "b", "shop"]]
    np.testing.assert_array_equal(label, model.predict(want))
    np.testing.assert_allclose(probs, model.predict_proba(want), atol=1e-5)
    reg = lightgbm.LGBMRegressor(n_estimators=10, verbose=-1).fit(df, df["a"] * 2 + y)
    np.testing.assert_allclose(onnxbridge.to_onnx(reg, df).run(df)[:, 0], reg.predict(df),
                               atol=1e-5)


def test_lightgbm_non_string_categories_are_refused_clearly() -> None:
    pd = pytest.importorskip("pandas")
    X, y = _data(nan=False)
    df = pd.DataFrame(X[:, :3], columns=["a", "b", "c"])
    df["shop"] = pd.Categorical(np.where(X[:, 3] > 0, 10, 20))
    model = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(df, y)
    with pytest.raises(UnsupportedModelError, match=r"'shop'.*not strings.*cat.codes"):
        onnxbridge.to_onnx(model, df)


def test_lightgbm_in_pipeline_and_dataframe_sample() -> None:
    pd = pytest.importorskip("pandas")
    X, y = _regression(nan=False)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    pipe = make_pipeline(StandardScaler(), lightgbm.LGBMRegressor(n_estimators=10, verbose=-1))
    pipe.fit(df, y)
    m = onnxbridge.to_onnx(pipe, df)
    assert m.parity.passed
    np.testing.assert_allclose(m.run(df).ravel(), pipe.predict(df), rtol=1e-3, atol=1e-2)


# -- CatBoost --------------------------------------------------------------------------------------
@pytest.mark.parametrize("classes", [[0, 1], [3, 7], ["neg", "pos"], [0, 1, 2]])
def test_catboost_classifier(classes: list[object]) -> None:
    X, y = _data(len(classes))
    labels = np.asarray(classes)[y]
    model = catboost.CatBoostClassifier(iterations=15, depth=3, verbose=0, thread_count=1)
    model.fit(X, labels)
    m = onnxbridge.to_onnx(model, X)
    _check_classifier(m, X, model.predict_proba(X), model.predict(X).reshape(-1))
    assert m.input_names == ["X"]


def test_catboost_regressor() -> None:
    X, y = _regression()
    model = catboost.CatBoostRegressor(iterations=15, depth=3, verbose=0, thread_count=1)
    model.fit(X, y)
    m = onnxbridge.to_onnx(model, X)
    assert m.output_names == ["variable"]
    np.testing.assert_allclose(m.run(X).ravel(), model.predict(X), rtol=1e-4, atol=1e-2)


def test_catboost_categorical_is_refused_clearly() -> None:
    pd = pytest.importorskip("pandas")
    X, y = _data(nan=False)
    df = pd.DataFrame(X[:, :3], columns=["a", "b", "c"])
    df["city"] = np.where(X[:, 3] > 0, "Oslo", "Lima")
    model = catboost.CatBoostClassifier(iterations=5, verbose=0, cat_features=["city"])
    model.fit(df, y)
    with pytest.raises(UnsupportedModelError, match=r"'city'.*cat_features"):
        onnxbridge.to_onnx(model, df)


def test_catboost_in_pipeline() -> None:
    X, y = _data(3, nan=False)
    pipe = make_pipeline(StandardScaler(),
                         catboost.CatBoostClassifier(iterations=10, verbose=0, thread_count=1))
    pipe.fit(X, y)
    m = onnxbridge.to_onnx(pipe, X)
    _check_classifier(m, X, pipe.predict_proba(X), pipe.predict(X).reshape(-1))


# -- verification and bad input --------------------------------------------------------------------
def test_parity_error_names_worst_output() -> None:
    X, y = _data()
    model = xgboost.XGBClassifier(n_estimators=10).fit(X, y)
    # A zero tolerance on probabilities cannot hold for float32 sums of leaves.
    with pytest.raises(ParityError, match=r"FAIL probabilities.*worst row") as info:
        onnxbridge.to_onnx(model, X, tolerance={"probabilities": (0.0, 0.0)})
    assert not info.value.report.passed


def test_wrong_feature_count_is_an_input_error() -> None:
    X, y = _data()
    model = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, y)
    with pytest.raises(onnxbridge.ConversionError) as info:
        onnxbridge.to_onnx(model, X[:, :4])
    assert isinstance(info.value.__cause__, InputError)
    assert "6 features" in str(info.value)


def test_one_dimensional_sample_is_explained() -> None:
    X, y = _data()
    model = xgboost.XGBRegressor(n_estimators=5).fit(X, y)
    with warnings.catch_warnings(), pytest.raises(onnxbridge.ConversionError, match="2-D"):
        onnxbridge.to_onnx(model, X[0])


# -- issue 15: boosting models trained on DataFrames ----------------------------------------------
def _frame_models() -> list[object]:
    return [
        xgboost.XGBClassifier(n_estimators=8, max_depth=3),
        lightgbm.LGBMClassifier(n_estimators=8, verbose=-1),
        catboost.CatBoostClassifier(iterations=8, depth=3, verbose=False),
    ]


@pytest.mark.parametrize("est", _frame_models(), ids=lambda e: type(e).__name__)
def test_boosting_on_bundled_frame_matches_columns_by_name(est: object) -> None:
    import json

    from sklearn.datasets import load_breast_cancer

    Xf, y = load_breast_cancer(return_X_y=True, as_frame=True)  # names with spaces
    model = est.fit(Xf, y)  # type: ignore[attr-defined]
    m = onnxbridge.to_onnx(model, Xf[:50])
    assert m.parity is not None and m.parity.passed, str(m.parity)
    assert json.loads(m.metadata["onnxbridge.columns"]) == list(Xf.columns)
    shuffled = Xf[list(reversed(Xf.columns))]
    label, probs = m.run(shuffled)
    np.testing.assert_array_equal(label, model.predict(Xf).reshape(-1))
    np.testing.assert_allclose(probs, model.predict_proba(Xf), atol=1e-4)
    with pytest.raises(InputError, match="lacks column"):
        m.run(shuffled.iloc[:, 1:])


# -- issue 15: errors from inside onnxmltools, for boosters outside a Pipeline ----------------
def test_lightgbm_objective_onnxmltools_lacks_is_named_with_a_fix_that_works() -> None:
    import re

    X, y = _regression(nan=False)
    model = lightgbm.LGBMRegressor(objective="mape", n_estimators=5, verbose=-1).fit(X, y)
    with pytest.raises(UnsupportedModelError) as info:
        onnxbridge.to_onnx(model, X[:20])
    text = str(info.value)
    assert "LGBMRegressor" in text and "objective 'mape'" in text and "Instead:" in text
    # the fix the message gives, followed as written
    model_str = model.booster_.model_to_string()
    model_str = model_str.replace("objective=mape", "objective=regression", 1)
    model_str = model_str.replace("[objective: mape]", "[objective: regression]")
    assert not re.search(r"objective[=:] ?mape", model_str)
    m = onnxbridge.to_onnx(lightgbm.Booster(model_str=model_str), X[:20])
    np.testing.assert_allclose(m.run(X)[:, 0], model.predict(X), rtol=1e-4, atol=1e-4)


def test_xgboost_multi_output_trees_are_refused_with_the_fix() -> None:
    X, y = _regression(nan=False)
    model = xgboost.XGBRegressor(n_estimators=3, tree_method="hist",
                                 multi_strategy="multi_output_tree").fit(X, np.c_[y, -y])
    with pytest.raises(UnsupportedModelError, match="XGBRegressor.*one_output_per_tree"):
        onnxbridge.to_onnx(model, X[:20])
