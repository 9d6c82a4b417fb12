"""scikit-learn converter (skl2onnx): real estimators, real conversion, real onnxruntime."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import onnxbridge
from onnxbridge import ConversionError, InputError, ParityError, UnsupportedModelError

pytest.importorskip("skl2onnx")
pd = pytest.importorskip("pandas")

from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.datasets import make_classification, make_regression  # noqa: E402
from sklearn.ensemble import (  # noqa: E402
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: E402
from sklearn.naive_bayes import GaussianNB  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402
from sklearn.pipeline import FeatureUnion, make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402
from sklearn.svm import SVC  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

X, Y = make_classification(200, 5, n_informative=3, n_classes=3, random_state=0)
YB = (Y > 0).astype(int)


CLASSIFIERS = [
    LogisticRegression(max_iter=500),
    DecisionTreeClassifier(max_depth=4),
    RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0),
    GradientBoostingClassifier(n_estimators=10, max_depth=2),
    HistGradientBoostingClassifier(max_iter=10),
    GaussianNB(),
    KNeighborsClassifier(3),
    SVC(probability=True, random_state=0),
]


@pytest.mark.parametrize("est", CLASSIFIERS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("target", ["binary", "multiclass"])
def test_classifiers_give_label_and_float_probabilities(est: object, target: str) -> None:
    y = YB if target == "binary" else Y
    model = est.fit(X, y)  # type: ignore[attr-defined]
    m = onnxbridge.to_onnx(model, X)
    assert m.output_names == ["label", "probabilities"]
    assert m.parity.passed, str(m.parity)
    label, probs = m.run(X)
    assert probs.dtype == np.float32 and probs.shape == (len(X), len(model.classes_))
    np.testing.assert_array_equal(label, model.predict(X))
    np.testing.assert_allclose(probs, model.predict_proba(X), atol=1e-4)


def test_string_class_labels() -> None:
    labels = np.array(["cat", "dog", "eel"])[Y]
    model = LogisticRegression(max_iter=500).fit(X, labels)
    label, _ = onnxbridge.to_onnx(model, X).run(X)
    assert list(label[:10]) == list(model.predict(X[:10]))


def test_regressor_output_is_variable() -> None:
    Xr, yr = make_regression(150, 4, random_state=0)
    model = LinearRegression().fit(Xr, yr)
    m = onnxbridge.to_onnx(model, Xr)
    assert m.output_names == ["variable"]
    np.testing.assert_allclose(m.run(Xr).ravel(), model.predict(Xr), rtol=1e-4, atol=1e-3)


def _frame() -> tuple[object, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame({
        "age": rng.integers(18, 80, n).astype(np.int64),
        "income": rng.normal(50, 10, n),
        "city": rng.choice(["Oslo", "Lima", "Pune"], n),
        "plan": rng.choice(["basic", "pro"], n),
    })
    y = ((df["income"] > 50) ^ (df["city"] == "Lima")).to_numpy().astype(int)
    return df, y


def test_column_transformer_over_mixed_dataframe() -> None:
    df, y = _frame()
    pre = ColumnTransformer([
        ("num", StandardScaler(), ["age", "income"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"]),
    ])
    pipe = make_pipeline(pre, LogisticRegression(max_iter=500)).fit(df, y)
    m = onnxbridge.to_onnx(pipe, df)
    assert m.input_names == ["age", "income", "city", "plan"]
    assert m.parity.passed
    label, probs = m.run(df)
    np.testing.assert_array_equal(label, pipe.predict(df))
    np.testing.assert_allclose(probs, pipe.predict_proba(df), atol=1e-4)
    # A missing column is named in the error.
    with pytest.raises(InputError, match="city"):
        m.run(df.drop(columns=["city"]))


def test_feature_union_pipeline() -> None:
    from sklearn.decomposition import PCA

    union = FeatureUnion([("scale", StandardScaler()), ("pca", PCA(2))])
    pipe = make_pipeline(union, LogisticRegression(max_iter=500)).fit(X, Y)
    assert onnxbridge.to_onnx(pipe, X).parity.passed


@pytest.mark.parametrize("nan", [False, True])
def test_hist_gradient_boosting(nan: bool) -> None:
    Xn = X.copy()
    if nan:
        Xn[::4, 1] = np.nan
    clf = HistGradientBoostingClassifier(max_iter=15).fit(Xn, Y)
    m = onnxbridge.to_onnx(clf, Xn)
    assert m.parity.passed
    np.testing.assert_array_equal(m.run(Xn)[0], clf.predict(Xn))
    reg = HistGradientBoostingRegressor(max_iter=15).fit(Xn, X[:, 0])
    m = onnxbridge.to_onnx(reg, Xn)
    np.testing.assert_allclose(m.run(Xn).ravel(), reg.predict(Xn), atol=1e-4)


def _threshold_trap() -> tuple[np.ndarray, np.ndarray]:
    """Features packed within float32's resolution around 1.0: float32 thresholds flip rows."""
    rng = np.random.default_rng(0)
    x = 1 + rng.uniform(0, 1e-6, size=(300, 1))
    return x, (x[:, 0] > 1 + 5e-7).astype(int)


def test_double_keeps_parity_where_float32_flips() -> None:
    x, y = _threshold_trap()
    model = HistGradientBoostingClassifier(max_iter=5).fit(x, y)
    with pytest.raises(ParityError, match="FAIL label"):
        onnxbridge.to_onnx(model, x, double=False)
    m = onnxbridge.to_onnx(model, x, double=True)
    assert m.parity.passed
    assert m.inputs[0].dtype == np.float64
    np.testing.assert_array_equal(m.run(x)[0], model.predict(x))
    # The automatic choice finds the same and says so in the parity report.
    auto = onnxbridge.to_onnx(model, x)
    assert auto.parity.passed
    assert any("double precision" in n for n in auto.parity.notes)


def test_native_categorical_hgb_is_refused_clearly() -> None:
    df, y = _frame()
    df = df.assign(city=df["city"].astype("category"))[["income", "city"]]
    model = HistGradientBoostingClassifier(max_iter=5, categorical_features="from_dtype")
    model.fit(df, y)
    with pytest.raises(UnsupportedModelError, match=r"'city'.*OneHotEncoder"):
        onnxbridge.to_onnx(model, df)


def test_parity_error_shows_worst_output_row_and_difference() -> None:
    model = LogisticRegression(max_iter=500).fit(X, Y)
    with pytest.raises(ParityError, match=r"FAIL probabilities.*max abs.*worst row"):
        onnxbridge.to_onnx(model, X, tolerance={"probabilities": (0.0, 0.0)})


def test_unfitted_and_unsupported_models_are_explained() -> None:
    with pytest.raises(ConversionError, match="not fitted"):
        onnxbridge.to_onnx(LogisticRegression(), X)
    from sklearn.linear_model import Ridge
    from sklearn.multioutput import RegressorChain

    chain = RegressorChain(Ridge()).fit(X, X[:, :2])
    with pytest.raises(UnsupportedModelError,
                       match="RegressorChain cannot be converted: each of its estimators.*"
                             "Instead: convert each fitted estimators_"):
        onnxbridge.to_onnx(chain, X)
    from sklearn.multioutput import MultiOutputClassifier

    multi = MultiOutputClassifier(LogisticRegression()).fit(X, np.c_[Y, YB])
    with pytest.raises(UnsupportedModelError, match="MultiOutputClassifier cannot be converted"
                                                    ".*list of one probability matrix"):
        onnxbridge.to_onnx(multi, X)


def test_bad_sample_shape_is_explained() -> None:
    model = LogisticRegression(max_iter=500).fit(X, Y)
    with pytest.raises(ConversionError, match=r"2-D sample.*reshape"):
        onnxbridge.to_onnx(model, X[0])


def test_unknown_double_value_is_refused() -> None:
    model = LogisticRegression(max_iter=500).fit(X, Y)
    with pytest.raises(ConversionError, match="double must be"):
        onnxbridge.to_onnx(model, X, double="yes")


def test_specs_modules_import_no_framework() -> None:
    code = (
        "import sys, onnxbridge\n"
        "import onnxbridge.plugins.sklearn, onnxbridge.plugins.xgboost\n"
        "import onnxbridge.plugins.lightgbm, onnxbridge.plugins.catboost\n"
        "import onnxbridge.plugins._tabular\n"
        "bad = [m for m in ('sklearn', 'skl2onnx', 'xgboost', 'lightgbm', 'catboost',"
        " 'onnxmltools', 'pandas') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- issue 15: classifier outputs as scikit-learn gives them ------------------------------------
def _bundled(name: str) -> tuple[object, object]:
    """One of scikit-learn's bundled data sets (no download) as (features frame, target)."""
    from sklearn import datasets

    frame = getattr(datasets, f"load_{name}")(as_frame=True)
    return frame.data, frame.target


def _score_models() -> list[object]:
    from sklearn.linear_model import RidgeClassifier, RidgeClassifierCV
    from sklearn.svm import LinearSVC, NuSVC

    return [SVC(), NuSVC(), LinearSVC(), RidgeClassifier(), RidgeClassifierCV()]


@pytest.mark.parametrize("est", _score_models(), ids=lambda e: type(e).__name__)
def test_binary_classifier_without_proba_gives_label_and_scores(est: object) -> None:
    Xf, y = _bundled("breast_cancer")
    model = make_pipeline(StandardScaler(), est).fit(Xf, y)
    m = onnxbridge.to_onnx(model, Xf[:60])
    assert m.output_names == ["label", "scores"]
    assert m.parity.passed, str(m.parity)
    label, scores = m.run(Xf)
    assert label.shape == scores.shape == (len(Xf),)  # scikit-learn's own [N] for two classes
    np.testing.assert_array_equal(label, model.predict(Xf))
    np.testing.assert_allclose(scores, model.decision_function(Xf), rtol=1e-3, atol=1e-3)


def test_multiclass_scores_keep_their_columns() -> None:
    Xf, y = _bundled("wine")
    model = make_pipeline(StandardScaler(), SVC()).fit(Xf, y)
    _, scores = onnxbridge.to_onnx(model, Xf).run(Xf)
    np.testing.assert_allclose(scores, model.decision_function(Xf), rtol=1e-3, atol=1e-3)


def test_qda_label_is_one_dimensional_and_the_check_catches_the_reshape() -> None:
    from skl2onnx import to_onnx as skl2onnx_to_onnx
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis

    from onnxbridge.verify import compare_outputs

    Xf, y = _bundled("iris")
    model = QuadraticDiscriminantAnalysis().fit(Xf.to_numpy(), y)
    xs = Xf.to_numpy()[:20]
    m = onnxbridge.to_onnx(model, xs)
    label, _ = m.run(xs)
    assert label.shape == (20,)
    np.testing.assert_array_equal(label, model.predict(xs))
    # skl2onnx alone gives the same values as [1, N]; the parity check must refuse that shape.
    raw = onnxbridge.OnnxModel(skl2onnx_to_onnx(model, xs.astype(np.float32),
                                                options={"zipmap": False}))
    raw_label = raw.run(xs)[0]
    assert raw_label.shape == (1, 20)
    (parity,) = compare_outputs(["label"], [model.predict(xs)], [raw_label],
                                kinds={"label": "label"})
    assert not parity.passed and "shape [1, 20]" in (parity.problem or "")


def test_lda_probabilities_match_where_skl2onnx_is_off() -> None:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    Xf, y = _bundled("breast_cancer")  # binary: skl2onnx's own converter is off by ~0.15 here
    xs = Xf.to_numpy()
    model = LinearDiscriminantAnalysis().fit(xs, y)
    want = model.predict_proba(xs)
    m = onnxbridge.to_onnx(model, xs)
    label, probs = m.run(xs)
    np.testing.assert_allclose(probs, want, atol=1e-4)
    np.testing.assert_array_equal(label, model.predict(xs))


# -- issue 15: onnxbridge's own converters ------------------------------------------------------
def _own_cases() -> list[tuple[str, object, str]]:
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.neighbors import NearestCentroid
    from sklearn.semi_supervised import LabelPropagation, LabelSpreading

    return [
        ("prior", DummyClassifier(strategy="prior"), "iris"),
        ("most_frequent", DummyClassifier(strategy="most_frequent"), "wine"),
        ("constant", DummyClassifier(strategy="constant", constant=1), "breast_cancer"),
        ("mean", DummyRegressor(), "diabetes"),
        ("quantile", DummyRegressor(strategy="quantile", quantile=0.3), "diabetes"),
        ("rbf", KernelRidge(kernel="rbf", alpha=0.5), "diabetes"),
        ("poly", KernelRidge(kernel="poly", degree=2), "diabetes"),
        ("laplacian", KernelRidge(kernel="laplacian"), "diabetes"),
        ("linear", KernelRidge(), "diabetes"),
        ("centroid", NearestCentroid(), "wine"),
        ("centroid-shrink", NearestCentroid(shrink_threshold=0.2), "iris"),
        ("propagation", LabelPropagation(gamma=5), "iris"),
        ("spreading", LabelSpreading(gamma=5), "wine"),
    ]


@pytest.mark.parametrize("case", _own_cases(), ids=lambda c: f"{type(c[1]).__name__}-{c[0]}")
def test_own_converters_match_scikit_learn(case: tuple[str, object, str]) -> None:
    from sklearn.base import is_classifier

    _, est, data = case
    Xf, y = _bundled(data)
    xs = StandardScaler().fit_transform(Xf.to_numpy())
    model = est.fit(xs, y)  # type: ignore[attr-defined]
    m = onnxbridge.to_onnx(model, xs[:50])
    assert m.parity.passed, str(m.parity)
    if is_classifier(model):
        label, probs = m.run(xs)
        np.testing.assert_array_equal(label, model.predict(xs))
        np.testing.assert_allclose(probs, model.predict_proba(xs), atol=1e-4)
    else:
        np.testing.assert_allclose(m.run(xs)[:, 0], model.predict(xs), rtol=1e-3, atol=1e-3)


def test_own_classifier_with_string_classes_and_knn_label_spreading() -> None:
    from sklearn.dummy import DummyClassifier
    from sklearn.semi_supervised import LabelSpreading

    rng = np.random.default_rng(1)
    xs = rng.normal(size=(120, 4))
    names = np.array(["low", "mid", "high"])[(xs[:, 0] > 0).astype(int) + (xs[:, 1] > 0)]
    dummy = DummyClassifier(strategy="constant", constant="mid").fit(xs, names)
    assert list(onnxbridge.to_onnx(dummy, xs).run(xs[:3])[0]) == ["mid"] * 3
    spread = LabelSpreading(kernel="knn", n_neighbors=5).fit(xs, names)
    fresh = rng.normal(size=(40, 4))  # no ties among distances to the training rows
    label, probs = onnxbridge.to_onnx(spread, fresh).run(fresh)
    np.testing.assert_array_equal(label, spread.predict(fresh))
    np.testing.assert_allclose(probs, spread.predict_proba(fresh), atol=1e-5)


def test_random_dummy_is_refused_with_the_fix() -> None:
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier(strategy="uniform").fit(X, Y)
    with pytest.raises(UnsupportedModelError, match="at random.*strategy='prior'"):
        onnxbridge.to_onnx(model, X)


# -- issue 15: DataFrames as they come ---------------------------------------------------------
def _bare_estimators() -> list[object]:
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import Ridge

    return [Ridge(), RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0),
            LogisticRegression(max_iter=2000), HistGradientBoostingClassifier(max_iter=10)]


@pytest.mark.parametrize("data", ["breast_cancer", "wine", "diabetes", "iris"])
@pytest.mark.parametrize("est", _bare_estimators(), ids=lambda e: type(e).__name__)
def test_bare_estimator_on_numeric_frame_gets_one_matrix_input(est: object, data: str) -> None:
    from sklearn.base import is_classifier

    Xf, y = _bundled(data)
    if is_classifier(est) and data == "diabetes":
        y = (y > y.median()).astype(int)
    model = est.fit(Xf, y)  # type: ignore[attr-defined]
    m = onnxbridge.to_onnx(model, Xf[:30])
    assert m.input_names == ["X"] and m.inputs[0].shape == (None, Xf.shape[1])
    import json

    assert json.loads(m.metadata["onnxbridge.columns"]) == list(Xf.columns)
    out = m.run(Xf)
    first = out[0] if isinstance(out, (list, tuple)) else out[:, 0]
    if is_classifier(model):
        np.testing.assert_array_equal(first, model.predict(Xf))
    else:
        np.testing.assert_allclose(first, model.predict(Xf), rtol=1e-3, atol=1e-3)


def test_nullable_numeric_frame_is_one_matrix_with_na_as_nan() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    Xf, y = _bundled("diabetes")
    Xf = Xf.astype("Float64")
    Xf["k"] = pd.array(np.arange(len(Xf)) % 3, dtype="Int64")
    Xf.loc[::7, "k"] = pd.NA
    model = HistGradientBoostingRegressor(max_iter=10).fit(Xf, y)
    m = onnxbridge.to_onnx(model, Xf)
    assert m.input_names == ["X"]
    np.testing.assert_allclose(m.run(Xf)[:, 0], model.predict(Xf), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("data", ["breast_cancer", "wine"])
def test_column_names_with_spaces_and_slashes_are_the_input_names(data: str) -> None:
    Xf, y = _bundled(data)
    chosen = [c for c in Xf.columns if " " in c or "/" in c][:3] or list(Xf.columns[:3])
    pre = ColumnTransformer([("scaled", StandardScaler(), chosen)], remainder="passthrough")
    model = make_pipeline(pre, LogisticRegression(max_iter=3000)).fit(Xf, y)
    m = onnxbridge.to_onnx(model, Xf)
    assert m.input_names == list(Xf.columns)
    assert m.parity.passed
    label, probs = m.run(Xf)
    np.testing.assert_array_equal(label, model.predict(Xf))
    np.testing.assert_allclose(probs, model.predict_proba(Xf), atol=1e-4)


def _mixed_frame() -> tuple[object, np.ndarray]:
    rng = np.random.default_rng(3)
    n = 150
    df = pd.DataFrame({
        "home city": rng.choice(["Oslo", "Lima", "Pune"], n).astype(object),
        "income/month": rng.normal(50, 10, n),
        "plan": pd.Categorical(rng.choice(["basic", "pro"], n)),
        "age": rng.integers(18, 80, n),
    })
    df.loc[::9, "home city"] = np.nan
    df.loc[::11, "income/month"] = np.nan
    y = ((df["income/month"].fillna(50) > 50) ^ (df["plan"] == "pro")).to_numpy().astype(int)
    return df, y


def test_mixed_frame_with_strings_categories_and_nan() -> None:
    from sklearn.impute import SimpleImputer

    df, y = _mixed_frame()
    pre = ColumnTransformer([
        ("city", make_pipeline(SimpleImputer(strategy="most_frequent"),
                               OneHotEncoder(handle_unknown="ignore")), ["home city"]),
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["income/month", "age"]),
        ("plan", OneHotEncoder(), ["plan"]),
    ])
    model = make_pipeline(pre, LogisticRegression(max_iter=500)).fit(df, y)
    m = onnxbridge.to_onnx(model, df)
    assert m.input_names == list(df.columns)
    assert m.parity.passed, str(m.parity)
    label, probs = m.run(df)
    np.testing.assert_array_equal(label, model.predict(df))
    np.testing.assert_allclose(probs, model.predict_proba(df), atol=1e-4)


# -- issue 15: errors name the step, say why and what to do -------------------------------------
def test_failure_inside_a_pipeline_names_the_step() -> None:
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, Exponentiation

    pre = ColumnTransformer([("scaled", StandardScaler(), [0, 1, 2])])
    gpr = GaussianProcessRegressor(Exponentiation(RBF(), 2.0))  # a kernel skl2onnx lacks
    model = make_pipeline(pre, gpr).fit(X[:60], Y[:60])
    with pytest.raises(ConversionError, match=r"step 'gaussianprocessregressor' "
                                              r"\(GaussianProcessRegressor\).*Replace or"
                                              r" re-configure that step") as info:
        onnxbridge.to_onnx(model, X[:5])
    assert not str(info.value).startswith(("RuntimeError", "Unable to convert"))


def test_missing_converter_inside_a_pipeline_names_step_reason_and_fix() -> None:
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.linear_model import Ridge
    from sklearn.multioutput import RegressorChain

    pre = ColumnTransformer([("scaled", StandardScaler(), [0, 1])])
    model = make_pipeline(pre, RegressorChain(Ridge())).fit(X, X[:, 2:4])
    with pytest.raises(UnsupportedModelError, match=r"step 'regressorchain' "
                                                    r"\(RegressorChain\) cannot be converted"):
        onnxbridge.to_onnx(model, X)
    with pytest.raises(UnsupportedModelError, match=r"no predict or transform for new rows.*"
                                                    r"Instead: "):
        onnxbridge.to_onnx(AgglomerativeClustering().fit(X), X)


# -- issue 15 / 14 item 7: m.run(df) matches columns by name -----------------------------------
@pytest.mark.parametrize("per_column", [False, True], ids=["matrix", "per-column"])
def test_run_matches_dataframe_columns_by_name(per_column: bool) -> None:
    Xf, y = _bundled("wine")
    est: object = LogisticRegression(max_iter=3000)
    if per_column:
        pre = ColumnTransformer([("s", StandardScaler(), ["alcohol", "od280/od315_of_diluted_wines"])],
                                remainder="passthrough")
        est = make_pipeline(pre, LogisticRegression(max_iter=3000))
    model = est.fit(Xf, y)  # type: ignore[attr-defined]
    m = onnxbridge.to_onnx(model, Xf)
    shuffled = Xf[list(reversed(Xf.columns))]
    label, probs = m.run(shuffled)
    np.testing.assert_array_equal(label, model.predict(Xf))
    np.testing.assert_allclose(probs, model.predict_proba(Xf), atol=1e-4)
    with pytest.raises(InputError, match="lacks column.*'alcohol'"):
        m.run(shuffled.drop(columns=["alcohol"]))
    with pytest.warns(onnxbridge.OnnxBridgeWarning, match="'extra'.*ignored"):
        m.run(shuffled.assign(extra=1.0))
    # The same after a save/load round trip: the names live in the model's metadata.
    again = onnxbridge.load(m.proto)
    np.testing.assert_array_equal(again.run(shuffled)[0], label)


# -- issue 15: the refused list worked through --------------------------------------------------
def _second_wave() -> list[object]:
    from sklearn.cluster import (
        AffinityPropagation,
        Birch,
        BisectingKMeans,
        FeatureAgglomeration,
        MeanShift,
    )
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.covariance import EllipticEnvelope, LedoitWolf, MinCovDet
    from sklearn.decomposition import FactorAnalysis, FastICA, SparsePCA
    from sklearn.ensemble import RandomTreesEmbedding, VotingClassifier
    from sklearn.feature_selection import SequentialFeatureSelector
    from sklearn.kernel_approximation import (
        AdditiveChi2Sampler,
        Nystroem,
        RBFSampler,
        SkewedChi2Sampler,
    )
    from sklearn.linear_model import Ridge
    from sklearn.neighbors import KernelDensity
    from sklearn.neural_network import BernoulliRBM
    from sklearn.preprocessing import KBinsDiscretizer

    return [
        FactorAnalysis(2, random_state=0), FastICA(2, random_state=0),
        SparsePCA(2, random_state=0), FeatureAgglomeration(2),
        RBFSampler(n_components=20, random_state=0),
        SkewedChi2Sampler(n_components=20, random_state=0),
        Nystroem(n_components=20, random_state=0), BernoulliRBM(4, random_state=0),
        LedoitWolf(), MinCovDet(random_state=0), EllipticEnvelope(random_state=0),
        MeanShift(), AffinityPropagation(random_state=0), Birch(n_clusters=3),
        VotingClassifier([("a", LogisticRegression()), ("b", GaussianNB())]),
        KBinsDiscretizer(3, encode="onehot", quantile_method="averaged_inverted_cdf"),
        RandomTreesEmbedding(n_estimators=3, max_depth=2, random_state=0),
        SequentialFeatureSelector(LogisticRegression(), n_features_to_select=2),
        TransformedTargetRegressor(Ridge(), transformer=StandardScaler()),
        AdditiveChi2Sampler(), KernelDensity(bandwidth=0.3),
        BisectingKMeans(4, random_state=0),
    ]


@pytest.mark.parametrize("est", _second_wave(), ids=lambda e: type(e).__name__)
def test_second_wave_converters_match_scikit_learn(est: object) -> None:
    from sklearn.base import is_classifier, is_regressor

    Xf, y = _bundled("iris")
    xs = Xf.to_numpy() / 8.0  # in [0, 1] (BernoulliRBM) and positive (SkewedChi2Sampler)
    model = est.fit(xs, y)  # type: ignore[attr-defined]
    m = onnxbridge.to_onnx(model, xs[:40])
    assert m.parity.passed, str(m.parity)
    out = m.run(xs)
    first = out[0] if isinstance(out, tuple) else out
    if is_classifier(model) or (hasattr(model, "predict") and not is_regressor(model) \
            and "label" in m.output_names):
        np.testing.assert_array_equal(first, model.predict(xs))
    elif is_regressor(model):
        np.testing.assert_allclose(first[:, 0], model.predict(xs), rtol=1e-3, atol=1e-3)
    elif hasattr(model, "transform"):
        want = model.transform(xs)
        want = want.toarray() if hasattr(want, "toarray") else want
        np.testing.assert_allclose(first, want, rtol=1e-3, atol=1e-3)
    elif hasattr(model, "mahalanobis"):
        np.testing.assert_allclose(first, model.mahalanobis(xs), rtol=1e-3, atol=1e-3)
    else:
        np.testing.assert_allclose(first, model.score_samples(xs), rtol=1e-3, atol=1e-3)


def test_float_one_hot_and_missing_indicator() -> None:
    from sklearn.impute import MissingIndicator

    rng = np.random.default_rng(0)
    xs = rng.choice([0.5, 1.5, 2.25, np.nan], size=(60, 3))
    enc = OneHotEncoder(sparse_output=False).fit(xs)
    np.testing.assert_array_equal(onnxbridge.to_onnx(enc, xs).run(xs), enc.transform(xs))
    ind = MissingIndicator().fit(xs)
    out = onnxbridge.to_onnx(ind, xs).run(xs)
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, ind.transform(xs))


def test_local_outlier_factor_without_novelty_is_refused_with_the_fix() -> None:
    from sklearn.neighbors import LocalOutlierFactor

    with pytest.raises(UnsupportedModelError, match="novelty=True"):
        onnxbridge.to_onnx(LocalOutlierFactor().fit(X), X)


# -- issue 15: the third wave (neighbours, splines, sketches, codes, encoders, wrappers) --------
def _iris_scaled() -> tuple[np.ndarray, np.ndarray]:
    Xf, y = _bundled("iris")
    return StandardScaler().fit_transform(Xf.to_numpy()), y.to_numpy()


@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "chebyshev", "cosine"])
def test_nearest_neighbors_gives_kneighbors_with_ties_by_lower_index(metric: str) -> None:
    from sklearn.neighbors import NearestNeighbors

    xs, _ = _iris_scaled()  # iris has duplicate rows: exact ties in distance
    nn = NearestNeighbors(n_neighbors=4, metric=metric).fit(xs)
    m = onnxbridge.to_onnx(nn, xs[:60])
    assert m.output_names == ["distances", "indices"]
    dist, ind = m.run(xs)
    want_d, want_i = nn.kneighbors(xs)
    np.testing.assert_allclose(dist, want_d, atol=1e-4)
    assert ind.dtype == np.int64 and ind.shape == want_i.shape
    # each index is at the distance scikit-learn reports for its place
    from sklearn.metrics import pairwise_distances

    full = pairwise_distances(xs, xs, metric=metric)
    np.testing.assert_allclose(np.take_along_axis(full, ind, axis=1), want_d, atol=1e-4)
    untied = np.all(np.diff(np.sort(full, axis=1)[:, :5], axis=1) > 1e-6, axis=1)
    np.testing.assert_array_equal(ind[untied], want_i[untied])


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("outlier", ["most_frequent", 7, None])
def test_radius_neighbors_classifier_with_outlier_rows(weights: str, outlier: object) -> None:
    from sklearn.neighbors import RadiusNeighborsClassifier

    xs, y = _iris_scaled()
    model = RadiusNeighborsClassifier(radius=0.6, weights=weights,
                                      outlier_label=outlier).fit(xs[::2], y[::2])
    far = np.vstack([xs[1::2], [[5.0, 5.0, 5.0, 5.0]]])  # the last row has no neighbour
    m = onnxbridge.to_onnx(model, xs[::2][:40])
    label, probs = m.run(far)
    alone = np.array([len(i) == 0 for i in model.radius_neighbors(far)[1]])
    assert alone[-1] and not alone.all()
    if outlier is None:  # scikit-learn raises there; the graph gives zero probabilities
        np.testing.assert_array_equal(probs[alone], 0.0)
        far, label, probs = far[~alone], label[~alone], probs[~alone]
    np.testing.assert_array_equal(label, model.predict(far))
    np.testing.assert_allclose(probs, model.predict_proba(far), atol=1e-5)


def test_radius_neighbors_regressor_and_transformer() -> None:
    from sklearn.neighbors import RadiusNeighborsRegressor, RadiusNeighborsTransformer

    Xf, y = _bundled("diabetes")
    xs = Xf.to_numpy()
    model = RadiusNeighborsRegressor(radius=0.08, weights="distance").fit(xs[::2], y[::2])
    out = onnxbridge.to_onnx(model, xs[::2][:40]).run(xs[1::2])[:, 0]
    with np.errstate(all="ignore"), pytest.warns(UserWarning, match="no neighbors"):
        want = model.predict(xs[1::2])
    assert np.isnan(want).any()  # rows without a neighbour: NaN on both sides
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-3)
    tr = RadiusNeighborsTransformer(radius=0.08).fit(xs[::2])
    dense = onnxbridge.to_onnx(tr, xs[::2][:40]).run(xs[1::2][:50])
    np.testing.assert_allclose(dense, tr.transform(xs[1::2][:50]).toarray(), atol=1e-5)


@pytest.mark.parametrize("extrapolation", ["constant", "linear", "continue", "periodic",
                                           "error"])
def test_spline_transformer_inside_and_beyond_the_knots(extrapolation: str) -> None:
    from sklearn.preprocessing import SplineTransformer

    Xf, _ = _bundled("diabetes")
    xs = Xf.to_numpy()[:, :3]
    model = SplineTransformer(n_knots=4, degree=3, extrapolation=extrapolation,
                              include_bias=extrapolation != "linear").fit(xs[:300])
    m = onnxbridge.to_onnx(model, xs[:300])
    inside = xs[300:][(xs[300:] >= xs[:300].min(0)).all(1) & (xs[300:] <= xs[:300].max(0)).all(1)]
    np.testing.assert_allclose(m.run(inside), model.transform(inside), atol=1e-5)
    beyond = np.array([[-0.3, 0.0, 0.3], [0.0, 0.25, -0.25]])  # beyond the fitted range
    if extrapolation == "error":
        assert np.isnan(m.run(beyond)).any()  # scikit-learn raises, the graph gives NaN
    else:
        np.testing.assert_allclose(m.run(beyond), model.transform(beyond), atol=1e-4)


def test_spline_transformer_quantile_knots_in_a_pipeline_and_nan_as_zero() -> None:
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import SplineTransformer

    Xf, y = _bundled("diabetes")
    xs = Xf.to_numpy()
    pipe = make_pipeline(SplineTransformer(knots="quantile", degree=2), Ridge()).fit(xs, y)
    np.testing.assert_allclose(onnxbridge.to_onnx(pipe, xs).run(xs)[:, 0], pipe.predict(xs),
                               rtol=1e-3, atol=1e-2)
    spl = SplineTransformer(handle_missing="zeros").fit(xs)
    holes = xs[:5].copy()
    holes[0, 1] = np.nan
    np.testing.assert_allclose(onnxbridge.to_onnx(spl, xs[:40]).run(holes),
                               spl.transform(holes), atol=1e-5)


def test_polynomial_count_sketch_and_isomap() -> None:
    from sklearn.kernel_approximation import PolynomialCountSketch
    from sklearn.manifold import Isomap

    xs, _ = _iris_scaled()
    for est in (PolynomialCountSketch(degree=3, coef0=1.0, n_components=30, random_state=0),
                Isomap(n_neighbors=6, n_components=2)):
        model = est.fit(xs[::2])
        # iris has exact ties in distance: float32 may pick another of two equally near
        # neighbours (the guide says so), double keeps scikit-learn's distances
        double = isinstance(model, Isomap)
        out = onnxbridge.to_onnx(model, xs[::2][:30], double=double).run(xs[1::2])
        np.testing.assert_allclose(out, model.transform(xs[1::2]), rtol=1e-3, atol=1e-4)


def test_output_code_classifier_gives_labels_only() -> None:
    from sklearn.multiclass import OutputCodeClassifier
    from sklearn.tree import DecisionTreeClassifier

    Xf, y = _bundled("wine")
    xs = StandardScaler().fit_transform(Xf.to_numpy())
    for inner in (LogisticRegression(max_iter=500), DecisionTreeClassifier(max_depth=3,
                                                                           random_state=0)):
        model = OutputCodeClassifier(inner, code_size=2, random_state=0).fit(xs, y)
        m = onnxbridge.to_onnx(model, xs[:50])
        assert m.output_names == ["label"]
        np.testing.assert_array_equal(m.run(xs), model.predict(xs))


@pytest.mark.parametrize("target", ["multiclass", "binary", "continuous"])
def test_target_encoder_on_string_and_numeric_categories(target: str) -> None:
    from sklearn.preprocessing import TargetEncoder

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"city": rng.choice(["oslo", "rome", "lima", "kyiv"], 300),
                          "size": rng.choice([1.0, 2.0, 3.0, np.nan], 300)})
    y = {"multiclass": rng.choice(["a", "b", "c"], 300), "binary": rng.integers(0, 2, 300),
         "continuous": rng.normal(size=300)}[target]
    enc = TargetEncoder(random_state=0).fit(frame, y)
    m = onnxbridge.to_onnx(enc, frame[:40])
    fresh = pd.DataFrame({"city": ["rome", "paris", "oslo"], "size": [np.nan, 2.0, 9.0]})
    np.testing.assert_allclose(m.run(fresh), enc.transform(fresh), atol=1e-6)  # unseen too


def _wrapper(kind: str, xs: np.ndarray, y: np.ndarray) -> object:
    from sklearn.frozen import FrozenEstimator
    from sklearn.model_selection import (
        FixedThresholdClassifier,
        RandomizedSearchCV,
        TunedThresholdClassifierCV,
    )
    from sklearn.semi_supervised import SelfTrainingClassifier

    inner = LogisticRegression(max_iter=500)
    if kind == "fixed":
        return FixedThresholdClassifier(inner, threshold=0.8).fit(xs, y)
    if kind == "tuned":
        return TunedThresholdClassifierCV(inner, cv=2, thresholds=20).fit(xs, y)
    if kind == "self-training":
        half = y.copy()
        half[::2] = -1  # unlabelled rows
        return SelfTrainingClassifier(inner, max_iter=2).fit(xs, half)
    if kind == "search":
        return RandomizedSearchCV(inner, {"C": [0.1, 1.0]}, n_iter=2, cv=2,
                                  random_state=0).fit(xs, y)
    return FrozenEstimator(inner.fit(xs, y))


@pytest.mark.parametrize("kind", ["fixed", "tuned", "self-training", "search", "frozen"])
def test_threshold_classifiers_and_wrappers(kind: str) -> None:
    Xf, y = _bundled("breast_cancer")
    xs = StandardScaler().fit_transform(Xf.to_numpy()[:, :8])
    model = _wrapper(kind, xs, y.to_numpy())
    label, probs = onnxbridge.to_onnx(model, xs[:60]).run(xs)
    np.testing.assert_array_equal(label, model.predict(xs))  # type: ignore[attr-defined]
    np.testing.assert_allclose(probs, model.predict_proba(xs), atol=1e-4)  # type: ignore[attr-defined]


def test_cross_decomposition_and_sparse_projection() -> None:
    from sklearn.cross_decomposition import CCA, PLSSVD, PLSCanonical
    from sklearn.random_projection import SparseRandomProjection

    Xf, y = _bundled("diabetes")
    xs = Xf.to_numpy()
    ys = np.column_stack([y, xs[:, 0] * 3 - xs[:, 2]])
    for model in (CCA(2).fit(xs, ys), PLSCanonical(2).fit(xs, ys)):
        np.testing.assert_allclose(onnxbridge.to_onnx(model, xs[:40]).run(xs),
                                   model.predict(xs), rtol=1e-3, atol=1e-3)
    for model in (PLSSVD(2).fit(xs, ys),
                  SparseRandomProjection(3, random_state=0).fit(xs)):
        np.testing.assert_allclose(onnxbridge.to_onnx(model, xs[:40]).run(xs),
                                   model.transform(xs), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("data", ["breast_cancer", "wine"])
def test_gaussian_process_classifier_binary_and_multiclass(data: str) -> None:
    from sklearn.gaussian_process import GaussianProcessClassifier
    from sklearn.gaussian_process.kernels import RBF, Matern, WhiteKernel

    Xf, y = _bundled(data)
    xs = StandardScaler().fit_transform(Xf.to_numpy()[:, :5])
    kernel = 1.0 * RBF(1.0) if data == "wine" else Matern(nu=1.5) + WhiteKernel(0.1)
    model = GaussianProcessClassifier(kernel, random_state=0).fit(xs[::3], y[::3])
    label, probs = onnxbridge.to_onnx(model, xs[:40]).run(xs)
    np.testing.assert_allclose(probs, model.predict_proba(xs), atol=1e-5)
    np.testing.assert_array_equal(label, model.predict(xs))


@pytest.mark.parametrize("out_of_bounds", ["nan", "clip"])
def test_isotonic_regression_between_and_beyond_the_thresholds(out_of_bounds: str) -> None:
    from sklearn.isotonic import IsotonicRegression

    Xf, y = _bundled("diabetes")
    x = Xf[["bmi"]].to_numpy()
    model = IsotonicRegression(out_of_bounds=out_of_bounds).fit(x[::2], y[::2])
    got = onnxbridge.to_onnx(model, x[::2][:40]).run(x)[:, 0]
    want = model.predict(x)
    assert np.isnan(want).any() == (out_of_bounds == "nan")  # rows beyond the fitted range
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


# -- issue 12: skl2onnx internals behind a probe ----------------------------------------------
def test_a_missing_skl2onnx_internal_warns_and_falls_back(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    # The one acceptable monkeypatch: an internal of the installed skl2onnx cannot be made
    # absent any other way. Without the probe, conversion died on the missing attribute.
    import skl2onnx.common.tree_ensemble as tree_ensemble

    from onnxbridge.plugins import _sklearn_ops

    monkeypatch.setattr(_sklearn_ops, "_PROBED", {})
    monkeypatch.delattr(tree_ensemble, "add_node")
    xs, y = _iris_scaled()
    model = LogisticRegression(max_iter=500).fit(xs, y)
    with pytest.warns(onnxbridge.OnnxBridgeWarning,
                      match=r"skl2onnx .* has no skl2onnx\.common\.tree_ensemble\.add_node.*"
                            r"HistGradientBoosting.*pin"):
        m = onnxbridge.to_onnx(model, xs[:30])
    np.testing.assert_array_equal(m.run(xs)[0], model.predict(xs))
    # every internal onnxbridge uses is there in the skl2onnx installed here
    monkeypatch.undo()
    monkeypatch.setattr(_sklearn_ops, "_PROBED", {})
    assert all(_sklearn_ops.has_internal(key) for key in _sklearn_ops.SKL2ONNX_INTERNALS)
