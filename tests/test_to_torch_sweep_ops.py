"""OnnxModel.to_torch() on what the sweep (benchmarks/to_torch_sweep.py) found missing: SVMs
(SVMClassifier, SVMRegressor), naive Bayes and mixtures (ReduceLogSumExp), imputers (Imputer),
binning (OneHotEncoder), count sketches (DFT), upsampling (Resize), DataFrame inputs and rows
of another float type than the model's.

Each model is compared with scikit-learn's own output and (inside ``to_torch``) with
onnxruntime; hand-built nodes cover the forms our converters do not write."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from onnx import TensorProto, helper  # noqa: E402

import onnxbridge  # noqa: E402
from onnxbridge._to_torch import OnnxTorchModule  # noqa: E402
from onnxbridge.errors import UnsupportedOperatorError  # noqa: E402


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(60, 4))) + 0.1
    y = np.digitize(X[:, 0] - X[:, 1], [-0.3, 0.3])
    return X, y


def _torch_out(est: Any, x: np.ndarray) -> list[np.ndarray]:
    back = onnxbridge.to_onnx(est, x).to_torch(x)  # checked against onnxruntime on x
    with torch.no_grad():
        got = back(torch.from_numpy(x))  # float64 rows for a float32 input: cast as m.run does
    got = got if isinstance(got, tuple) else (got,)
    return [g.numpy() if hasattr(g, "numpy") else np.asarray(g) for g in got]


def _models() -> list[tuple[str, Any]]:
    from sklearn.mixture import GaussianMixture
    from sklearn.naive_bayes import GaussianNB, MultinomialNB
    from sklearn.svm import SVC, SVR, LinearSVC, NuSVC, OneClassSVM

    return [("SVC rbf", SVC()), ("SVC poly", SVC(kernel="poly", degree=2)),
            ("SVC sigmoid", SVC(kernel="sigmoid", gamma=0.1)), ("NuSVC linear", NuSVC(kernel="linear")),
            ("SVC binary", SVC()), ("SVR", SVR()), ("OneClassSVM", OneClassSVM(gamma=0.5)),
            ("LinearSVC", LinearSVC()), ("GaussianNB", GaussianNB()),
            ("MultinomialNB", MultinomialNB()), ("GaussianMixture", GaussianMixture(2, random_state=0))]


@pytest.mark.parametrize("case", range(11), ids=[n for n, _ in _models()])
def test_scikit_learn_models_match_scikit_learn(case: int) -> None:
    name, est = _models()[case]
    X, y = _data()
    if name == "SVC binary":
        y = (y > 0).astype(int)
    if name in ("SVR",):
        est.fit(X, X[:, 0] * 2 - X[:, 2])
    elif name in ("OneClassSVM", "GaussianMixture"):
        est.fit(X)
    else:
        est.fit(X, y)
    x = X[:25]
    got = _torch_out(est, x)
    if hasattr(est, "predict_proba") and name != "GaussianMixture":
        np.testing.assert_array_equal(got[0], est.predict(x))
        np.testing.assert_allclose(got[1], est.predict_proba(x), rtol=1e-4, atol=1e-5)
    elif name in ("SVR",):
        np.testing.assert_allclose(got[0].ravel(), est.predict(x), rtol=1e-4, atol=1e-4)
    elif name == "GaussianMixture":
        np.testing.assert_array_equal(got[0], est.predict(x))
    else:  # SVC without probabilities, LinearSVC, OneClassSVM: labels and decision values
        np.testing.assert_array_equal(got[0].ravel(), est.predict(x))
        dec = est.decision_function(x)
        scores = got[1].reshape(dec.shape[0], -1)
        np.testing.assert_allclose(scores[:, -1] if dec.ndim == 1 else scores, dec, rtol=1e-4,
                                   atol=1e-4)


def test_imputers_binning_and_count_sketch_match_scikit_learn() -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.kernel_approximation import PolynomialCountSketch
    from sklearn.preprocessing import KBinsDiscretizer, PowerTransformer

    X, _ = _data()
    Xn = X.copy()
    Xn[::5, 1] = np.nan
    for est, data in ((SimpleImputer(), Xn), (PowerTransformer(), X),
                      (KBinsDiscretizer(4, encode="onehot-dense"), X),
                      (PolynomialCountSketch(n_components=8, random_state=0), X)):
        est.fit(data)
        got = _torch_out(est, data[:20])[0]
        np.testing.assert_allclose(got, est.transform(data[:20]), rtol=1e-4, atol=1e-4)


def _ml_model(node: Any, x_type: int, x_shape: list[Any], outs: list[Any]) -> Any:
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", x_type, x_shape)],
                              outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("ai.onnx.ml", 3)])


def _ort(model: Any, feeds: dict[str, Any]) -> list[Any]:
    import onnxruntime

    return onnxruntime.InferenceSession(model.SerializeToString(),
                                        providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("coef", [[0.5, -1.0, 0.2, 0.3], [0.5, 1.0, 0.2, 0.3]],
                         ids=["mixed", "positive"])
def test_linear_svm_classifier_binary_matches_onnxruntime(coef: list[float]) -> None:
    node = helper.make_node("SVMClassifier", ["X"], ["L", "S"], domain="ai.onnx.ml",
                            coefficients=coef, rho=[0.1], classlabels_ints=[3, 8],
                            kernel_type="LINEAR", kernel_params=[0.0, 0.0, 1.0])
    model = _ml_model(node, TensorProto.FLOAT, [None, 2],
                      [helper.make_tensor_value_info("L", TensorProto.INT64, [None]),
                       helper.make_tensor_value_info("S", TensorProto.FLOAT, [None, 2])])
    x = np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32)
    label, scores = _ort(model, {"X": x})
    got_label, got_scores = OnnxTorchModule(model)(torch.from_numpy(x))
    np.testing.assert_array_equal(got_label.numpy(), label)
    np.testing.assert_allclose(got_scores.detach().numpy(), scores, rtol=1e-5, atol=1e-6)


def test_one_hot_encoder_strings_and_imputer_ints_match_onnxruntime() -> None:
    node = helper.make_node("OneHotEncoder", ["X"], ["Y"], domain="ai.onnx.ml",
                            cats_strings=["a", "b", "c"], zeros=1)
    model = _ml_model(node, TensorProto.STRING, [None, 2],
                      [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 2, 3])])
    x = np.array([["a", "c"], ["z", "b"]], dtype=object)
    (expected,) = _ort(model, {"X": x})
    np.testing.assert_array_equal(OnnxTorchModule(model)(x).numpy(), expected)
    node = helper.make_node("Imputer", ["X"], ["Y"], domain="ai.onnx.ml",
                            imputed_value_int64s=[7, 8, 9], replaced_value_int64=-1)
    model = _ml_model(node, TensorProto.INT64, [None, 3],
                      [helper.make_tensor_value_info("Y", TensorProto.INT64, [None, 3])])
    xi = np.array([[-1, 2, -1], [4, -1, 6]], np.int64)
    (expected,) = _ort(model, {"X": xi})
    np.testing.assert_array_equal(OnnxTorchModule(model)(torch.from_numpy(xi)).numpy(), expected)


@pytest.mark.parametrize("attrs", [{}, {"onesided": 1}, {"inverse": 1}, {"length": 6}],
                         ids=["full", "onesided", "inverse", "padded"])
def test_dft_matches_onnxruntime(attrs: dict[str, Any]) -> None:
    length = attrs.pop("length", None)
    complex_in = bool(attrs.get("inverse"))
    inputs = ["X", "n" if length else "", "axis"]
    node = helper.make_node("DFT", inputs, ["Y"], **attrs)
    shape = [2, 5, 2 if complex_in else 1]
    inits = [helper.make_tensor("axis", TensorProto.INT64, [], [1])]
    if length:
        inits.append(helper.make_tensor("n", TensorProto.INT64, [], [length]))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    (expected,) = _ort(model, {"X": x})
    got = OnnxTorchModule(model)(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("classes", ["3 ints", "2 ints", "4 strings"])
def test_svc_probabilities_match_scikit_learn(classes: str) -> None:
    import warnings

    from sklearn.svm import SVC

    X, y = _data()
    if classes == "2 ints":
        y = (y > 0).astype(int)
    elif classes == "4 strings":
        y = np.array(["a", "b", "c", "d"])[np.digitize(X[:, 2] - X[:, 3], [-0.5, 0, 0.5])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # probability=True: deprecated in 1.9
        est = SVC(probability=True, random_state=0).fit(X, y)
        x = X[30:]
        label, proba = _torch_out(est, x)
        want_label, want_proba = est.predict(x), est.predict_proba(x)
    np.testing.assert_array_equal(label, want_label)
    np.testing.assert_allclose(proba, want_proba, rtol=1e-4, atol=1e-5)


def test_linear_svm_with_probabilities_is_refused_by_name() -> None:
    node = helper.make_node("SVMClassifier", ["X"], ["L", "S"], domain="ai.onnx.ml",
                            coefficients=[1.0, -1.0], rho=[0.0], classlabels_ints=[0, 1],
                            prob_a=[1.0], prob_b=[0.0], kernel_type="LINEAR")
    model = _ml_model(node, TensorProto.FLOAT, [None, 1],
                      [helper.make_tensor_value_info("L", TensorProto.INT64, [None]),
                       helper.make_tensor_value_info("S", TensorProto.FLOAT, [None, 2])])
    with pytest.raises(UnsupportedOperatorError, match="probabilities"):
        OnnxTorchModule(model)


def test_svm_coefficients_are_parameters_a_gradient_reaches() -> None:
    from sklearn.svm import SVR

    X, _ = _data()
    est = SVR().fit(X, X[:, 0])
    back = onnxbridge.to_onnx(est, X[:5]).to_torch(X[:5])
    names = {n.rsplit(".", 1)[-1] for n, _ in back.named_parameters()}
    assert any("coefficients" in n for n in names) and any("rho" in n for n in names)
    back(torch.from_numpy(X[:10])).sum().backward()
    grads = [p.grad for n, p in back.named_parameters() if "coefficients" in n]
    assert grads and all(g is not None and bool(g.abs().sum() > 0) for g in grads)


def test_dataframe_pipeline_with_a_string_column_matches_scikit_learn() -> None:
    pd = pytest.importorskip("pandas")
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"size cm": rng.normal(size=60), "w": rng.normal(size=60),
                       "colour": rng.choice(["red", "green", "blue"], 60)})
    y = (df["size cm"] > 0).astype(int) + (df["colour"] == "red")
    ct = ColumnTransformer([("oh", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
                            ("sc", StandardScaler(), ["size cm", "w"])])
    pipe = make_pipeline(ct, LogisticRegression()).fit(df, y)
    back = onnxbridge.to_onnx(pipe, df[:10]).to_torch(df[:10])  # a frame, as m.run takes
    frame = df[["w", "colour", "size cm"]][10:30]  # columns in another order: matched by name
    with torch.no_grad():
        label, proba = back(frame)
    np.testing.assert_array_equal(label.numpy(), pipe.predict(frame))
    np.testing.assert_allclose(proba.numpy(), pipe.predict_proba(frame), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("form", [
    {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
    {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
    {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
    {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
    {"mode": "cubic", "coordinate_transformation_mode": "half_pixel"},
], ids=lambda f: f"{f['mode']}-{f['coordinate_transformation_mode']}")
@pytest.mark.parametrize("by", ["scales", "sizes"])
def test_resize_matches_onnxruntime(form: dict[str, str], by: str) -> None:
    x = np.random.default_rng(2).normal(size=(1, 2, 4, 5)).astype(np.float32)
    if by == "scales":
        inputs, init = ["X", "", "s"], [helper.make_tensor("s", TensorProto.FLOAT, [4],
                                                           [1, 1, 2.0, 1.5])]
    else:
        inputs, init = ["X", "", "", "s"], [helper.make_tensor("s", TensorProto.INT64, [4],
                                                               [1, 2, 7, 9])]
    node = helper.make_node("Resize", inputs, ["Y"], **form)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                          list(x.shape))],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    (expected,) = _ort(model, {"X": x})
    got = OnnxTorchModule(model)(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
