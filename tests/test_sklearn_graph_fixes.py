"""Graphs skl2onnx writes wrong, fixed by the sklearn plugin, checked against scikit-learn.

k-nearest neighbours with ``weights="distance"``: skl2onnx's graph turned every weight into 1e6
(a plain average) and has no rule for a row at distance 0 from training points (scikit-learn
then takes those points' values only); checked on rows that are training points (one
duplicated), and on rows that are not. Forests trained on one class: onnxruntime answered
skl2onnx's one-class node with the label 1 (and aborted the process on a string label)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

import onnxbridge


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    X[5] = X[6]  # two training points at the same place
    x = np.vstack([X[:7], X[:4] + np.float32(0.05), rng.normal(size=(3, 3)).astype(np.float32)])
    return X, x


@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize("metric", ["minkowski", "manhattan"])
def test_distance_weighted_regressor_matches_scikit_learn(metric: str, double: bool) -> None:
    from sklearn.neighbors import KNeighborsRegressor

    X, x = _data()
    est = KNeighborsRegressor(4, weights="distance", metric=metric).fit(X, X[:, 0] * 3 - X[:, 1])
    m = onnxbridge.to_onnx(est, x, double=double)  # parity with predict on these rows
    got = np.asarray(m.run(x.astype(np.float64) if double else x)).ravel()
    np.testing.assert_allclose(got, est.predict(x), rtol=1e-5, atol=1e-5)
    # a training point is predicted as its own target (scikit-learn's rule at distance 0)
    np.testing.assert_allclose(got[:5], (X[:5, 0] * 3 - X[:5, 1]), rtol=1e-5, atol=1e-5)


def test_distance_weighted_classifier_matches_scikit_learn() -> None:
    from sklearn.neighbors import KNeighborsClassifier

    X, x = _data()
    y = (X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    est = KNeighborsClassifier(5, weights="distance").fit(X, y)
    m = onnxbridge.to_onnx(est, x)
    label, proba = m.run(x)
    np.testing.assert_array_equal(label, est.predict(x))
    np.testing.assert_allclose(proba, est.predict_proba(x), rtol=1e-5, atol=1e-6)
    assert (proba[:7].max(axis=1) == 1).all()  # training points: all weight on themselves


def test_distance_weighted_regressor_back_in_torch() -> None:
    torch = pytest.importorskip("torch")
    from sklearn.neighbors import KNeighborsRegressor

    X, x = _data()
    est = KNeighborsRegressor(3, weights="distance").fit(X, X[:, 2])
    back = onnxbridge.to_onnx(est, x).to_torch(x)  # checked against onnxruntime on x
    with torch.no_grad():
        got = back(torch.from_numpy(x)).numpy().ravel()
    np.testing.assert_allclose(got, est.predict(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("labels", [np.full(30, 4), np.array(["only"] * 30)], ids=["int", "str"])
def test_forests_trained_on_one_class_predict_that_class(labels: np.ndarray) -> None:
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3)).astype(np.float32)
    for est in (RandomForestClassifier(3, max_depth=2, random_state=0),
                make_pipeline(StandardScaler(), ExtraTreesClassifier(4, random_state=0))):
        est.fit(X, labels)
        m = onnxbridge.to_onnx(est, X[:5])  # parity with predict / predict_proba
        label, proba = m.run(X)
        np.testing.assert_array_equal(label, est.predict(X))
        np.testing.assert_allclose(proba, est.predict_proba(X), atol=1e-6)
