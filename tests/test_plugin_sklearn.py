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
    from sklearn.cross_decomposition import CCA

    cca = CCA(n_components=1).fit(X, X[:, :2])
    with pytest.raises(UnsupportedModelError, match="CCA cannot be converted: neither skl2onnx"):
        onnxbridge.to_onnx(cca, X)


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
