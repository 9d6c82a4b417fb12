"""onnxbridge's own skl2onnx converters, for estimators skl2onnx lacks or gets wrong.

Each is registered with ``skl2onnx.update_registered_converter`` (skl2onnx's public converter
API) on first use, so it works for a bare estimator and inside a Pipeline alike. The graphs use
core ONNX operators only and compute in the input's float type (float32 or float64).

Outputs follow the tabular convention: classifiers ``label`` [N] and ``probabilities``
[N, n_classes]; regressors ``variable`` [N, n_targets]; transformers ``variable`` [N, k].
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["register_own_converters", "OWN_CONVERTERS", "fix_distance_weights",
           "fix_one_class_trees"]


class _Graph:
    """Adds nodes and constants to a skl2onnx container for one operator."""

    def __init__(self, scope: Any, operator: Any, container: Any) -> None:
        from onnx import TensorProto
        from skl2onnx.common.data_types import DoubleTensorType

        self.scope, self.operator, self.container = scope, operator, container
        double = isinstance(operator.inputs[0].type, DoubleTensorType)
        self.dtype = np.float64 if double else np.float32
        self.onnx_float = TensorProto.DOUBLE if double else TensorProto.FLOAT

    def name(self, hint: str) -> str:
        return str(self.scope.get_unique_variable_name(hint))

    def const(self, value: Any, dtype: Any = None) -> str:
        from onnx import TensorProto, numpy_helper

        arr = np.asarray(value, dtype=dtype if dtype is not None else self.dtype)
        name = self.name("cst")
        if arr.dtype.kind in "OUS":
            self.container.add_initializer(name, TensorProto.STRING, list(arr.shape),
                                           [str(v).encode() for v in arr.flat])
        else:
            self.container.add_initializer(name, None, None, numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list[str], out: str | None = None,
             domain: str = "", **attrs: Any) -> str:
        out = out or self.name(op.lower())
        kwargs: dict[str, Any] = dict(name=self.scope.get_unique_operator_name(op), **attrs)
        if domain:
            kwargs["op_domain"] = domain
            kwargs["op_version"] = 1
        self.container.add_node(op, inputs, [out], **kwargs)
        return out

    def x(self) -> str:
        """The operator's input as a float matrix of the graph's float type."""
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

        var = self.operator.inputs[0]
        name = str(var.full_name)
        if isinstance(var.type, (FloatTensorType, DoubleTensorType)):
            return name
        return self.node("Cast", [name], to=self.onnx_float)

    def output(self, i: int) -> str:
        return str(self.operator.outputs[i].full_name)

    def rows(self, x: str, width: int, value: Any) -> str:
        """A [N, width] matrix filled with the row ``value`` (N read off ``x``)."""
        value = np.asarray(value).reshape(1, width)
        shape = self.node("Shape", [x])
        n = self.node("Slice", [shape, self.const([0], np.int64), self.const([1], np.int64)])
        dims = self.node("Concat", [n, self.const([width], np.int64)], axis=0)
        return self.node("Expand", [self.const(value, value.dtype if value.dtype.kind != "f"
                                               else None), dims])

    # -- arithmetic helpers ----------------------------------------------------------------
    def sq_distances(self, x: str, points: np.ndarray) -> str:
        """||x_i - p_j||^2 as [N, len(points)], never below 0."""
        pts = np.asarray(points, dtype=np.float64)
        xx = self.node("Mul", [x, x])
        xx = self.node("MatMul", [xx, self.const(np.ones((pts.shape[1], 1)))])
        xp = self.node("MatMul", [x, self.const(pts.T)])
        d = self.node("Sub", [xx, self.node("Mul", [xp, self.const(2.0)])])
        d = self.node("Add", [d, self.const((pts ** 2).sum(axis=1)[None, :])])
        return self.node("Max", [d, self.const(0.0)])

    def row_sum(self, m: str, width: int) -> str:
        return self.node("MatMul", [m, self.const(np.ones((width, 1)))])

    def label_from(self, index: str, classes: np.ndarray, out: str) -> None:
        """``classes[index]`` as the label output (int64 or string)."""
        classes = np.asarray(classes)
        if classes.dtype.kind in "OUS":
            table = classes.astype(str).astype(object)
        elif classes.dtype.kind == "b":
            table = classes.astype(np.int64)
        else:
            table = classes.astype(np.int64)
        self.node("Gather", [self.const(table, table.dtype), index], out=out, axis=0)

    def argmax_label(self, scores: str, classes: np.ndarray, out: str) -> None:
        idx = self.node("ArgMax", [scores], axis=1, keepdims=0)
        self.label_from(idx, classes, out)


# -- kernels ---------------------------------------------------------------------------------
def _kernel(g: _Graph, x: str, points: np.ndarray, kernel: str, params: dict[str, Any]) -> str:
    """scikit-learn's pairwise kernel k(x, points) as [N, len(points)]."""
    points = np.asarray(points, dtype=np.float64)
    n_features = points.shape[1]
    gamma: Any = params.get("gamma")
    if kernel in {"rbf", "poly", "polynomial", "sigmoid", "laplacian", "chi2"} and gamma is None:
        gamma = 1.0 / n_features
    if kernel == "linear":
        return g.node("MatMul", [x, g.const(points.T)])
    if kernel == "rbf":
        d = g.sq_distances(x, points)
        return g.node("Exp", [g.node("Mul", [d, g.const(-float(gamma))])])
    if kernel in {"poly", "polynomial", "sigmoid"}:
        dot = g.node("MatMul", [x, g.const(points.T)])
        coef0 = params.get("coef0")
        lin = g.node("Add", [g.node("Mul", [dot, g.const(float(gamma))]),
                             g.const(1.0 if coef0 is None else float(coef0))])
        if kernel == "sigmoid":
            return g.node("Tanh", [lin])
        degree = params.get("degree")
        return g.node("Pow", [lin, g.const(3.0 if degree is None else float(degree))])
    if kernel == "laplacian":
        # |x - p|_1 summed over features: [N, 1, F] - [1, P, F]
        x3 = g.node("Unsqueeze", [x, g.const([1], np.int64)])
        diff = g.node("Abs", [g.node("Sub", [x3, g.const(points[None, :, :])])])
        l1 = g.node("MatMul", [diff, g.const(np.ones((n_features, 1)))])
        l1 = g.node("Squeeze", [l1, g.const([2], np.int64)])
        return g.node("Exp", [g.node("Mul", [l1, g.const(-float(gamma))])])
    if kernel == "cosine":
        norms = np.linalg.norm(points, axis=1)
        unit = points / np.where(norms == 0, 1.0, norms)[:, None]
        xn = g.node("Sqrt", [g.row_sum(g.node("Mul", [x, x]), n_features)])
        xn = g.node("Max", [xn, g.const(np.finfo(np.float64).tiny)])
        return g.node("MatMul", [g.node("Div", [x, xn]), g.const(unit.T)])
    from onnxbridge.errors import UnsupportedModelError

    raise UnsupportedModelError(
        f"kernel {kernel!r} has no ONNX form in onnxbridge (linear, rbf, poly, sigmoid,"
        " laplacian and cosine do); refit with one of those"
    )


# -- converters ------------------------------------------------------------------------------
def _dummy_classifier(scope: Any, operator: Any, container: Any) -> None:
    from onnxbridge.errors import UnsupportedModelError

    est = operator.raw_operator
    if est.strategy in {"stratified", "uniform"}:
        raise UnsupportedModelError(
            f"DummyClassifier(strategy={est.strategy!r}) predicts at random; a graph cannot"
            " reproduce its draws. Use strategy='prior', 'most_frequent' or 'constant'"
        )
    if getattr(est, "n_outputs_", 1) != 1:
        raise UnsupportedModelError("a multi-output DummyClassifier has no ONNX form here;"
                                    " fit one DummyClassifier per target")
    g = _Graph(scope, operator, container)
    x = g.x()
    classes = np.asarray(est.classes_)
    prior = np.asarray(est.class_prior_, dtype=np.float64)
    if est.strategy == "constant":
        idx = int(np.flatnonzero(classes == est.constant)[0])
    else:
        idx = int(prior.argmax())
    proba = prior if est.strategy == "prior" else np.eye(len(classes))[idx]
    k = len(classes)
    label_value = classes[idx]
    table = (np.asarray([str(label_value)], dtype=object) if classes.dtype.kind in "OUS"
             else np.asarray([int(label_value)], dtype=np.int64))
    lab = g.rows(x, 1, table)
    g.node("Reshape", [lab, g.const([-1], np.int64)], out=g.output(0))
    if len(operator.outputs) > 1:
        g.node("Identity", [g.rows(x, k, proba.astype(g.dtype))], out=g.output(1))


def _dummy_regressor(scope: Any, operator: Any, container: Any) -> None:
    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    const = np.asarray(est.constant_, dtype=g.dtype).reshape(1, -1)
    g.node("Identity", [g.rows(g.x(), const.shape[1], const)], out=g.output(0))


def _kernel_ridge(scope: Any, operator: Any, container: Any) -> None:
    from onnxbridge.errors import UnsupportedModelError

    est = operator.raw_operator
    if callable(est.kernel) or est.kernel == "precomputed":
        raise UnsupportedModelError(
            "KernelRidge with a callable or precomputed kernel has no ONNX form; use a named"
            " kernel (linear, rbf, poly, sigmoid, laplacian, cosine)"
        )
    g = _Graph(scope, operator, container)
    params = dict(gamma=est.gamma, degree=est.degree, coef0=est.coef0)
    params.update(est.kernel_params or {})
    k = _kernel(g, g.x(), est.X_fit_, est.kernel, params)
    dual = np.asarray(est.dual_coef_, dtype=np.float64)
    dual = dual.reshape(len(dual), -1)
    g.node("MatMul", [k, g.const(dual)], out=g.output(0))


def _nearest_centroid(scope: Any, operator: Any, container: Any) -> None:
    from onnxbridge.errors import UnsupportedModelError

    est = operator.raw_operator
    if est.metric != "euclidean":
        raise UnsupportedModelError(
            f"NearestCentroid(metric={est.metric!r}) has no ONNX form here (its probabilities"
            " exist only for the euclidean metric); refit with metric='euclidean'"
        )
    g = _Graph(scope, operator, container)
    x = g.x()
    classes = np.asarray(est.classes_)
    centroids = np.asarray(est.centroids_, dtype=np.float64)
    std = np.asarray(est.within_class_std_dev_, dtype=np.float64)
    scale = np.where(std != 0, std, 1.0)
    xs = g.node("Div", [x, g.const(scale)])
    d = g.sq_distances(xs, centroids / scale)
    prior = np.asarray(est.class_prior_, dtype=np.float64)
    scores = g.node("Add", [g.node("Neg", [d]), g.const(2.0 * np.log(prior)[None, :])])
    if np.isclose(prior, 1 / len(classes)).all():  # scikit-learn's predict: nearest raw centroid
        idx = g.node("ArgMin", [g.sq_distances(x, centroids)], axis=1, keepdims=0)
        g.label_from(idx, classes, g.output(0))
    else:
        g.argmax_label(scores, classes, g.output(0))
    if len(operator.outputs) > 1:
        g.node("Softmax", [scores], out=g.output(1), axis=1)


def _label_propagation(scope: Any, operator: Any, container: Any) -> None:
    from onnxbridge.errors import UnsupportedModelError

    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    x = g.x()
    train = np.asarray(est.X_, dtype=np.float64)
    dist = np.asarray(est.label_distributions_, dtype=np.float64)
    n_classes = dist.shape[1]
    if est.kernel == "rbf":
        d = g.sq_distances(x, train)
        # exp(-gamma (d - min d)): the same ratios as scikit-learn, without underflow to 0/0
        nearest = g.name("nearest")
        container.add_node("TopK", [d, g.const([1], np.int64)], [nearest, g.name("nearest_i")],
                           name=scope.get_unique_operator_name("TopK"), largest=0, sorted=1)
        w = g.node("Exp", [g.node("Mul", [g.node("Sub", [d, nearest]),
                                          g.const(-float(est.gamma))])])
        mass = g.node("MatMul", [w, g.const(dist)])
    elif est.kernel == "knn":
        d = g.sq_distances(x, train)
        k = int(est.n_neighbors)
        out_vals, out_idx = g.name("topv"), g.name("topi")
        container.add_node("TopK", [d, g.const([k], np.int64)], [out_vals, out_idx],
                           name=scope.get_unique_operator_name("TopK"), largest=0, sorted=1)
        rows = g.node("Gather", [g.const(dist), out_idx], axis=0)  # [N, k, C]
        mass = g.node("Squeeze", [g.node("MatMul", [g.node("Transpose", [rows], perm=[0, 2, 1]),
                                                    g.const(np.ones((k, 1)))]),
                                  g.const([2], np.int64)])
    else:
        raise UnsupportedModelError(f"{type(est).__name__} with a callable kernel has no ONNX"
                                    " form; use kernel='rbf' or 'knn'")
    proba = g.node("Div", [mass, g.row_sum(mass, n_classes)])
    g.argmax_label(proba, est.classes_, g.output(0))
    if len(operator.outputs) > 1:
        g.node("Identity", [proba], out=g.output(1))


def _linear_discriminant(scope: Any, operator: Any, container: Any) -> None:
    """LDA: scores X @ coef.T + intercept; probabilities as scikit-learn computes them
    (sigmoid of the score for two classes, softmax otherwise). skl2onnx's binary form is off."""
    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    x = g.x()
    coef = np.asarray(est.coef_, dtype=np.float64)
    scores = g.node("Add", [g.node("MatMul", [x, g.const(coef.T)]),
                            g.const(np.asarray(est.intercept_, dtype=np.float64)[None, :])])
    classes = np.asarray(est.classes_)
    if len(classes) == 2:
        p1 = g.node("Sigmoid", [scores])
        proba = g.node("Concat", [g.node("Sub", [g.const(1.0), p1]), p1], axis=1)
    else:
        proba = g.node("Softmax", [scores], axis=1)
    g.argmax_label(proba, classes, g.output(0))
    if len(operator.outputs) > 1:
        g.node("Identity", [proba], out=g.output(1))


def _simple_imputer(original: Callable[..., None]) -> Callable[..., None]:
    """skl2onnx imputes strings only when the missing value is a string; a string column
    whose missing values are NaN or None (what pandas gives) is fed to the graph with "" for
    missing (see onnxbridge._frames), so impute "" there."""

    def convert(scope: Any, operator: Any, container: Any) -> None:
        import copy

        from skl2onnx.common.data_types import StringTensorType

        est = operator.raw_operator
        if not (isinstance(operator.inputs[0].type, StringTensorType)
                and not isinstance(est.missing_values, str)):
            original(scope, operator, container)
            return
        clone = copy.copy(est)
        clone.missing_values = ""
        operator.raw_operator = clone
        try:
            original(scope, operator, container)
        finally:
            operator.raw_operator = est

    return convert


# -- transformers, covariance, clustering (issue 15's second wave) -----------------------------
# Transformers whose transform is affine, x -> x @ W + b: W and b are read off the estimator's
# own transform (of the zero row and the unit rows), in float64.
AFFINE = ("FactorAnalysis", "FastICA", "SparsePCA", "MiniBatchSparsePCA", "FeatureAgglomeration",
          "SparseRandomProjection", "PLSSVD", "CCA", "PLSCanonical")


def _affine(scope: Any, operator: Any, container: Any) -> None:
    """An affine transform, or (CCA, PLSCanonical) an affine predict, read off the estimator."""
    from sklearn.base import is_regressor

    est = operator.raw_operator
    n = int(est.n_features_in_)
    # one batch of n + 2 rows (SparsePCA gives a 1-D result for a single row)
    rows = np.vstack([np.eye(n), np.zeros((2, n))])
    probe = est.predict(rows) if is_regressor(est) else est.transform(rows)
    probe = probe.toarray() if hasattr(probe, "toarray") else probe
    probe = np.asarray(probe, dtype=np.float64).reshape(n + 2, -1)
    b = probe[n:n + 1]
    w = probe[:n] - b
    g = _Graph(scope, operator, container)
    g.node("Add", [g.node("MatMul", [g.x(), g.const(w)]), g.const(b)], out=g.output(0))


def _random_features(scope: Any, operator: Any, container: Any) -> None:
    """RBFSampler and SkewedChi2Sampler: sqrt(2 / k) cos(f(x) @ W + offset)."""
    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    x = g.x()
    if type(est).__name__ == "SkewedChi2Sampler":
        x = g.node("Log", [g.node("Add", [x, g.const(float(est.skewedness))])])
    proj = g.node("Add", [g.node("MatMul", [x, g.const(est.random_weights_)]),
                          g.const(np.asarray(est.random_offset_)[None, :])])
    scale = np.sqrt(2.0 / est.n_components) if type(est).__name__ == "RBFSampler" \
        else np.sqrt(2.0) / np.sqrt(est.n_components)
    g.node("Mul", [g.node("Cos", [proj]), g.const(float(scale))], out=g.output(0))


def _additive_chi2(scope: Any, operator: Any, container: Any) -> None:
    """AdditiveChi2Sampler: sqrt(x h), then sqrt(2 x h / cosh(pi j h)) cos / sin (j h log x)
    for j = 1 .. steps-1; exactly 0 where x is 0."""
    from onnxbridge.errors import UnsupportedModelError

    est = operator.raw_operator
    steps = int(est.sample_steps)
    h = est.sample_interval
    if h is None:
        if steps not in (1, 2, 3):
            raise UnsupportedModelError("AdditiveChi2Sampler with sample_steps > 3 needs"
                                        " sample_interval; set it and refit")
        h = {1: 0.8, 2: 0.5, 3: 0.4}[steps]
    g = _Graph(scope, operator, container)
    x = g.x()
    zero = g.node("Equal", [x, g.const(0.0)])
    safe = g.node("Where", [zero, g.const(1.0), x])  # log(1) = 0 where x is 0
    blocks = [g.node("Sqrt", [g.node("Mul", [x, g.const(float(h))])])]
    log_step = g.node("Mul", [g.node("Log", [safe]), g.const(float(h))])
    for j in range(1, steps):
        factor = g.node("Sqrt", [g.node("Mul", [x, g.const(float(2 * h / np.cosh(np.pi * j * h)))])])
        angle = g.node("Mul", [log_step, g.const(float(j))])
        for op in ("Cos", "Sin"):
            val = g.node("Mul", [factor, g.node(op, [angle])])
            blocks.append(g.node("Where", [zero, g.const(0.0), val]))
    g.node("Concat", blocks, out=g.output(0), axis=1)


def _kernel_density(scope: Any, operator: Any, container: Any) -> None:
    """KernelDensity (gaussian kernel, euclidean, no sample weights): ``variable`` [N] =
    score_samples(X) = log sum_j exp(-|x - x_j|^2 / 2h^2) - log N - d/2 log(2 pi h^2)."""
    from onnxbridge.errors import UnsupportedModelError

    est = operator.raw_operator
    if est.kernel != "gaussian" or est.metric != "euclidean" or \
            est.tree_.sample_weight is not None:
        raise UnsupportedModelError(
            "KernelDensity converts with kernel='gaussian', metric='euclidean' and no sample"
            " weights; refit it so, or compute score_samples in Python"
        )
    train = np.asarray(est.tree_.data, dtype=np.float64)
    n, d = train.shape
    h = float(est.bandwidth_)
    g = _Graph(scope, operator, container)
    x3 = g.node("Unsqueeze", [g.x(), g.const([1], np.int64)])
    diff = g.node("Sub", [x3, g.const(train[None, :, :])])
    sq = g.node("Squeeze", [g.node("MatMul", [g.node("Mul", [diff, diff]),
                                              g.const(np.ones((d, 1)))]),
                            g.const([2], np.int64)])
    a = g.node("Mul", [sq, g.const(-0.5 / h ** 2)])
    top = g.name("top")
    container.add_node("TopK", [a, g.const([1], np.int64)], [top, g.name("top_i")],
                       name=scope.get_unique_operator_name("TopK"), largest=1, sorted=1)
    lse = g.node("Add", [g.node("Log", [g.row_sum(g.node("Exp", [g.node("Sub", [a, top])]),
                                                    n)]), top])
    norm = -np.log(n) - 0.5 * d * np.log(2 * np.pi * h ** 2)
    out = g.node("Add", [lse, g.const(float(norm))])
    g.node("Reshape", [out, g.const([-1], np.int64)], out=g.output(0))


def _nystroem(scope: Any, operator: Any, container: Any) -> None:
    from onnxbridge.errors import UnsupportedModelError

    est = operator.raw_operator
    if callable(est.kernel) or est.kernel == "precomputed":
        raise UnsupportedModelError("Nystroem with a callable or precomputed kernel has no ONNX"
                                    " form; use a named kernel (rbf, poly, sigmoid, ...)")
    g = _Graph(scope, operator, container)
    params = dict(gamma=est.gamma, degree=est.degree, coef0=est.coef0)
    params.update(est.kernel_params or {})
    k = _kernel(g, g.x(), est.components_, est.kernel, params)
    g.node("MatMul", [k, g.const(np.asarray(est.normalization_).T)], out=g.output(0))


def _rbm(scope: Any, operator: Any, container: Any) -> None:
    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    lin = g.node("Add", [g.node("MatMul", [g.x(), g.const(np.asarray(est.components_).T)]),
                         g.const(np.asarray(est.intercept_hidden_)[None, :])])
    g.node("Sigmoid", [lin], out=g.output(0))


def _mahalanobis(g: _Graph, x: str, est: Any) -> str:
    """Squared Mahalanobis distance to the estimator's location, [N, 1]."""
    precision = np.asarray(est.get_precision(), dtype=np.float64)
    centred = g.node("Sub", [x, g.const(np.asarray(est.location_)[None, :])])
    t = g.node("MatMul", [centred, g.const(precision)])
    return g.row_sum(g.node("Mul", [t, centred]), precision.shape[0])


def _covariance(scope: Any, operator: Any, container: Any) -> None:
    """Covariance estimators: ``variable`` [N] = mahalanobis(X)."""
    g = _Graph(scope, operator, container)
    m = _mahalanobis(g, g.x(), operator.raw_operator)
    g.node("Reshape", [m, g.const([-1], np.int64)], out=g.output(0))


def _elliptic_envelope(scope: Any, operator: Any, container: Any) -> None:
    """``label`` (1 inlier, -1 outlier) and ``scores`` = decision_function, both [N]."""
    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    m = _mahalanobis(g, g.x(), est)
    score = g.node("Sub", [g.node("Neg", [m]), g.const(float(est.offset_))])
    score = g.node("Reshape", [score, g.const([-1], np.int64)])
    inlier = g.node("Not", [g.node("Less", [score, g.const(0.0)])])
    g.node("Where", [inlier, g.const(np.int64(1), np.int64), g.const(np.int64(-1), np.int64)],
           out=g.output(0))
    if len(operator.outputs) > 1:
        g.node("Identity", [score], out=g.output(1))


def _exact_sq_distances(g: _Graph, x: str, points: np.ndarray) -> str:
    """sum_k (x_k - p_k)^2 per point, [N, len(points)], without cancellation."""
    x3 = g.node("Unsqueeze", [x, g.const([1], np.int64)])
    diff = g.node("Sub", [x3, g.const(np.asarray(points, dtype=np.float64)[None, :, :])])
    d = g.node("MatMul", [g.node("Mul", [diff, diff]), g.const(np.ones((points.shape[1], 1)))])
    return g.node("Squeeze", [d, g.const([2], np.int64)])


def _bisecting_kmeans(scope: Any, operator: Any, container: Any) -> None:
    """BisectingKMeans: down its tree of bisections, left where the left centre is nearer
    (ties go left, as scikit-learn's argmin); ``scores`` the distances to the centres."""
    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    x = g.x()
    mean = getattr(est, "_X_mean", None)
    leaves: list[tuple[int, list[tuple[str, bool]]]] = []

    def walk(node: Any, path: list[tuple[str, bool]]) -> None:
        if node.left is None:
            leaves.append((int(node.label), path))
            return
        centers = np.vstack((node.left.center, node.right.center)).astype(np.float64)
        if mean is not None:
            centers = centers + mean
        d = _exact_sq_distances(g, x, centers)
        first = g.node("Gather", [d, g.const(np.int64(0), np.int64)], axis=1)
        second = g.node("Gather", [d, g.const(np.int64(1), np.int64)], axis=1)
        left = g.node("Not", [g.node("Greater", [first, second])])
        walk(node.left, [*path, (left, True)])
        walk(node.right, [*path, (left, False)])

    walk(est._bisecting_tree, [])
    label = g.node("Reshape", [g.rows(x, 1, np.zeros((1, 1), dtype=np.int64)),
                               g.const([-1], np.int64)])
    for value, path in leaves:
        conds = [c if want else g.node("Not", [c]) for c, want in path]
        if not conds:  # a tree of one cluster
            label = g.node("Add", [label, g.const(np.int64(value), np.int64)])
            continue
        mask = conds[0]
        for c in conds[1:]:
            mask = g.node("And", [mask, c])
        label = g.node("Where", [mask, g.const(np.int64(value), np.int64), label])
    g.node("Identity", [label], out=g.output(0))
    if len(operator.outputs) > 1:
        g.node("Sqrt", [_exact_sq_distances(g, x, np.asarray(est.cluster_centers_))],
               out=g.output(1))


def _nearest_center(scope: Any, operator: Any, container: Any) -> None:
    """MeanShift, AffinityPropagation, Birch: label of the nearest centre; ``scores`` the
    euclidean distances to the centres (Birch's transform)."""
    from onnxbridge.errors import UnsupportedModelError

    est = operator.raw_operator
    name = type(est).__name__
    centers = np.asarray(est.subcluster_centers_ if name == "Birch" else est.cluster_centers_,
                         dtype=np.float64)
    if centers.ndim != 2 or not len(centers):
        raise UnsupportedModelError(f"{name} found no cluster centres (it did not converge), so"
                                    " it predicts no cluster; refit it (more iterations, other"
                                    " damping or preference) before converting")
    labels = np.asarray(est.subcluster_labels_ if name == "Birch" else np.arange(len(centers)))
    g = _Graph(scope, operator, container)
    # (x - c) summed squared, per centre: no cancellation, so distances near 0 stay exact
    x3 = g.node("Unsqueeze", [g.x(), g.const([1], np.int64)])
    diff = g.node("Sub", [x3, g.const(centers[None, :, :])])
    d = g.node("MatMul", [g.node("Mul", [diff, diff]), g.const(np.ones((centers.shape[1], 1)))])
    d = g.node("Squeeze", [d, g.const([2], np.int64)])
    idx = g.node("ArgMin", [d], axis=1, keepdims=0)
    g.node("Gather", [g.const(labels.astype(np.int64), np.int64), idx], out=g.output(0), axis=0)
    if len(operator.outputs) > 1:
        g.node("Sqrt", [d], out=g.output(1))


def _one_hot_float(original: Callable[..., None]) -> Callable[..., None]:
    """OneHotEncoder over float categories (skl2onnx takes int64 and string ones only)."""

    def convert(scope: Any, operator: Any, container: Any) -> None:
        from onnxbridge.errors import UnsupportedModelError

        est = operator.raw_operator
        if not any(np.asarray(c).dtype.kind == "f" for c in est.categories_):
            original(scope, operator, container)
            return
        if getattr(est, "_infrequent_enabled", False):
            raise UnsupportedModelError("OneHotEncoder with infrequent categories over float"
                                        " columns has no ONNX form here; set min_frequency and"
                                        " max_categories to None")
        g = _Graph(scope, operator, container)
        x = g.x() if len(operator.inputs) == 1 else g.node(
            "Concat", [str(v.full_name) for v in operator.inputs], axis=1)
        drop = getattr(est, "drop_idx_", None)
        parts = []
        for i, cats in enumerate(est.categories_):
            cats = np.asarray(cats, dtype=np.float64)
            keep = [j for j in range(len(cats)) if drop is None or drop[i] is None
                    or j != int(drop[i])]
            if not keep:
                continue
            col = g.node("Slice", [x, g.const([i], np.int64), g.const([i + 1], np.int64),
                                   g.const([1], np.int64)])
            hits = []
            for j in keep:
                if np.isnan(cats[j]):
                    hits.append(g.node("IsNaN", [col]))
                else:
                    hits.append(g.node("Equal", [col, g.const([[cats[j]]])]))
            hit = hits[0] if len(hits) == 1 else g.node("Concat", hits, axis=1)
            parts.append(g.node("Cast", [hit], to=g.onnx_float))
        out = parts[0] if len(parts) == 1 else g.node("Concat", parts, axis=1)
        g.node("Identity", [out], out=g.output(0))

    return convert


def _missing_indicator(scope: Any, operator: Any, container: Any) -> None:
    """MissingIndicator: bool [N, len(features_)], True where the value is missing."""
    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    x = g.x()
    cols = g.node("Gather", [x, g.const(np.asarray(est.features_, dtype=np.int64), np.int64)],
                  axis=1)
    mv = est.missing_values
    if isinstance(mv, float) and np.isnan(mv):
        g.node("IsNaN", [cols], out=g.output(0))
    else:
        g.node("Equal", [cols, g.const(float(mv))], out=g.output(0))


def _transformed_target(scope: Any, operator: Any, container: Any) -> None:
    """TransformedTargetRegressor: the inner regressor's graph, then the target transformer's
    inverse (identity or StandardScaler)."""
    from skl2onnx.algebra.onnx_operator import OnnxSubEstimator
    from skl2onnx.algebra.onnx_ops import OnnxAdd, OnnxIdentity, OnnxMul

    from onnxbridge.errors import UnsupportedModelError

    est = operator.raw_operator
    opv = container.target_opset
    dtype = _Graph(scope, operator, container).dtype
    y = OnnxSubEstimator(est.regressor_, operator.inputs[0], op_version=opv)
    tr = est.transformer_
    name = type(tr).__name__
    if name == "FunctionTransformer" and tr.func is None and tr.inverse_func is None:
        out = OnnxIdentity(y, op_version=opv, output_names=[operator.outputs[0]])
    elif name == "StandardScaler":
        scale = np.asarray(tr.scale_ if tr.scale_ is not None else [1.0], dtype=dtype)
        mean = np.asarray(tr.mean_ if tr.mean_ is not None else [0.0], dtype=dtype)
        out = OnnxAdd(OnnxMul(y, scale.reshape(1, -1), op_version=opv), mean.reshape(1, -1),
                      op_version=opv, output_names=[operator.outputs[0]])
    else:
        raise UnsupportedModelError(
            f"TransformedTargetRegressor's target transformer {name} has no ONNX inverse here"
            " (none and StandardScaler do); convert est.regressor_ and apply the inverse in"
            " Python"
        )
    out.add_to(scope, container)


def _selector(scope: Any, operator: Any, container: Any) -> None:
    """A feature selector: the columns its get_support() keeps."""
    g = _Graph(scope, operator, container)
    keep = np.flatnonzero(operator.raw_operator.get_support()).astype(np.int64)
    g.node("Gather", [str(operator.inputs[0].full_name), g.const(keep, np.int64)],
           out=g.output(0), axis=1)


def _selector_shapes(operator: Any) -> None:
    keep = int(np.sum(operator.raw_operator.get_support()))
    cls = type(operator.inputs[0].type)
    operator.outputs[0].type = cls([operator.inputs[0].get_first_dimension(), keep])


def _indicator_shapes(operator: Any) -> None:
    from skl2onnx.common.data_types import BooleanTensorType

    est = operator.raw_operator
    operator.outputs[0].type = BooleanTensorType([operator.inputs[0].get_first_dimension(),
                                                  len(est.features_)])


class _AsIf:
    """Run skl2onnx's own shape calculator or converter on a copy of the estimator with
    ``params`` set: for settings that change only how scikit-learn returns the same values
    (a sparse matrix, a flattened transform that predict does not use)."""

    def __init__(self, fct: Callable[..., None], params: dict[str, Any]) -> None:
        self.fct, self.params = fct, params

    def call(self, args: tuple[Any, ...], operator: Any) -> None:
        import copy

        est = operator.raw_operator
        clone = copy.copy(est)
        for key, value in self.params.items():
            setattr(clone, key, value)
        operator.raw_operator = clone
        try:
            self.fct(*args)
        finally:
            operator.raw_operator = est

    def shape(self) -> Callable[[Any], None]:
        def calculate(operator: Any) -> None:
            self.call((operator,), operator)

        return calculate

    def converter(self) -> Callable[[Any, Any, Any], None]:
        def convert(scope: Any, operator: Any, container: Any) -> None:
            self.call((scope, operator, container), operator)

        convert._onnxbridge = True  # type: ignore[attr-defined]
        return convert


# -- issue 15's third wave: neighbours, splines, sketches, codes, encoders ---------------------
def _reduce(g: _Graph, op: str, x: str, axis: int) -> str:
    """ReduceMax / ReduceMin over one axis, dropped (axes as input from opset 18)."""
    if g.container.target_opset >= 18:
        return g.node(op, [x, g.const([axis], np.int64)], keepdims=0)
    return g.node(op, [x], axes=[axis], keepdims=0)


def _pairwise(g: _Graph, x: str, points: np.ndarray, metric: str,
              params: dict[str, Any] | None = None, dtype: Any = None) -> str:
    """scikit-learn's pairwise distances from each row of ``x`` to ``points``, [N, P], from
    exact differences (no |x|^2 - 2 x.p + |p|^2 cancellation, so distance 0 stays 0)."""
    from onnxbridge.errors import UnsupportedModelError

    pts = np.asarray(points, dtype=np.float64)
    params = params or {}
    p = params.get("p", 2)
    if metric == "minkowski" and p in (1, 2):
        metric = "manhattan" if p == 1 else "euclidean"
    if params.get("w") is not None:
        raise UnsupportedModelError("weighted minkowski distances have no ONNX form here; refit"
                                    " without metric_params={'w': ...}")
    if metric == "cosine":
        norms = np.linalg.norm(pts, axis=1)
        unit = pts / np.where(norms == 0, 1.0, norms)[:, None]
        xn = g.node("Sqrt", [g.row_sum(g.node("Mul", [x, x]), pts.shape[1])])
        xn = g.node("Where", [g.node("Equal", [xn, g.const(0.0, dtype)]), g.const(1.0, dtype), xn])
        sim = g.node("MatMul", [g.node("Div", [x, xn]), g.const(unit.T, dtype)])
        dist = g.node("Sub", [g.const(1.0, dtype), sim])
        return g.node("Min", [g.node("Max", [dist, g.const(0.0, dtype)]), g.const(2.0, dtype)])
    x3 = g.node("Unsqueeze", [x, g.const([1], np.int64)])
    diff = g.node("Sub", [x3, g.const(pts[None, :, :], dtype)])
    ones = g.const(np.ones((pts.shape[1], 1)), dtype)
    squeeze = g.const([2], np.int64)
    if metric in {"euclidean", "l2", "sqeuclidean"}:
        sq = g.node("Squeeze", [g.node("MatMul", [g.node("Mul", [diff, diff]), ones]), squeeze])
        return sq if metric == "sqeuclidean" else g.node("Sqrt", [sq])
    if metric in {"manhattan", "cityblock", "l1"}:
        return g.node("Squeeze", [g.node("MatMul", [g.node("Abs", [diff]), ones]), squeeze])
    if metric in {"chebyshev", "infinity"}:
        return _reduce(g, "ReduceMax", g.node("Abs", [diff]), 2)
    if metric == "minkowski" and np.isfinite(p) and p > 0:
        powered = g.node("Pow", [g.node("Abs", [diff]), g.const(float(p), dtype)])
        total = g.node("Squeeze", [g.node("MatMul", [powered, ones]), squeeze])
        return g.node("Pow", [total, g.const(1.0 / float(p), dtype)])
    raise UnsupportedModelError(
        f"the distance metric {metric!r} has no ONNX form in onnxbridge (euclidean, manhattan,"
        " chebyshev, minkowski and cosine do); refit with one of those"
    )


def _neighbor_distances(g: _Graph, est: Any) -> str:
    from onnxbridge.errors import UnsupportedModelError

    if est.effective_metric_ == "precomputed" or callable(est.effective_metric_):
        raise UnsupportedModelError(
            f"{type(est).__name__} with a precomputed or callable metric has no ONNX form;"
            " refit with a named metric (euclidean, manhattan, chebyshev, minkowski, cosine)")
    return _pairwise(g, g.x(), est._fit_X, est.effective_metric_,
                     dict(est.effective_metric_params_ or {}))


def _nearest_neighbors(scope: Any, operator: Any, container: Any) -> None:
    """NearestNeighbors: kneighbors(X) as ``distances`` [N, k] and ``indices`` [N, k] (int64),
    nearest first, with the fitted n_neighbors."""
    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    d = _neighbor_distances(g, est)
    container.add_node("TopK", [d, g.const([int(est.n_neighbors)], np.int64)],
                       [g.output(0), g.output(1)],
                       name=scope.get_unique_operator_name("TopK"), largest=0, sorted=1)


def _radius_weights(g: _Graph, est: Any) -> tuple[str, str]:
    """(weights [N, n_fit], inside [N, n_fit] bool) of the training rows within the radius:
    1 (uniform) or 1/d, where a row at distance 0 takes all the weight (distance)."""
    from onnxbridge.errors import UnsupportedModelError

    d = _neighbor_distances(g, est)
    inside = g.node("Not", [g.node("Greater", [d, g.const(float(est.radius))])])
    flag = g.node("Cast", [inside], to=g.onnx_float)
    if est.weights in (None, "uniform"):
        return flag, inside
    if est.weights != "distance":
        raise UnsupportedModelError(f"{type(est).__name__} with callable weights has no ONNX"
                                    " form; use weights='uniform' or 'distance'")
    zero = g.node("Cast", [g.node("Equal", [d, g.const(0.0)])], to=g.onnx_float)
    any_zero = g.node("Greater", [g.row_sum(zero, est.n_samples_fit_), g.const(0.0)])
    inverse = g.node("Div", [g.const(1.0), g.node("Where", [inside, d, g.const(1.0)])])
    inverse = g.node("Mul", [inverse, flag])
    return g.node("Where", [any_zero, zero, inverse]), inside


def _radius_classifier(scope: Any, operator: Any, container: Any) -> None:
    """RadiusNeighborsClassifier: weighted votes of the training rows within the radius.
    A row with none gets the outlier label (probability 1 on it when it is a class, else all
    probabilities 0); without an outlier label scikit-learn raises there, the graph gives
    all-zero probabilities."""
    from onnxbridge.errors import UnsupportedModelError

    est = operator.raw_operator
    if getattr(est, "outputs_2d_", False):
        raise UnsupportedModelError("a multi-output RadiusNeighborsClassifier has no ONNX form"
                                    " here; fit one per target")
    g = _Graph(scope, operator, container)
    classes = np.asarray(est.classes_)
    w, inside = _radius_weights(g, est)
    onehot = np.eye(len(classes))[np.asarray(est._y, dtype=np.int64)]
    votes = g.node("MatMul", [w, g.const(onehot)])
    count = g.row_sum(g.node("Cast", [inside], to=g.onnx_float), est.n_samples_fit_)
    outlier = g.node("Equal", [count, g.const(0.0)])  # [N, 1]
    label = (est.outlier_label_ or [None])[0]
    hit = np.flatnonzero(classes == label) if label is not None else np.array([])
    if hit.size == 1:
        votes = g.node("Where", [outlier, g.const(np.eye(len(classes))[hit[0]][None, :]),
                                 votes])
    total = g.row_sum(votes, len(classes))
    total = g.node("Where", [g.node("Equal", [total, g.const(0.0)]), g.const(1.0), total])
    proba = g.node("Div", [votes, total])
    idx = g.node("ArgMax", [proba], axis=1, keepdims=0)
    if label is None:
        g.label_from(idx, classes, g.output(0))
    else:
        table = np.append(classes.astype(object), label)
        kind = "str" if classes.dtype.kind in "OUS" else "int"
        table = table.astype(str).astype(object) if kind == "str" else table.astype(np.int64)
        zero = g.node("Equal", [g.row_sum(proba, len(classes)), g.const(0.0)])
        zero = g.node("Reshape", [zero, g.const([-1], np.int64)])
        idx = g.node("Where", [zero, g.const(np.int64(len(classes)), np.int64), idx])
        g.node("Gather", [g.const(table, table.dtype), idx], out=g.output(0), axis=0)
    if len(operator.outputs) > 1:
        g.node("Identity", [proba], out=g.output(1))


def _radius_regressor(scope: Any, operator: Any, container: Any) -> None:
    """RadiusNeighborsRegressor: the (weighted) mean target of the training rows within the
    radius; NaN where there is none (as scikit-learn)."""
    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    w, _ = _radius_weights(g, est)
    y = np.asarray(est._y, dtype=np.float64).reshape(est.n_samples_fit_, -1)
    total = g.node("MatMul", [w, g.const(y)])
    g.node("Div", [total, g.row_sum(w, est.n_samples_fit_)], out=g.output(0))


def _radius_transformer(scope: Any, operator: Any, container: Any) -> None:
    """RadiusNeighborsTransformer: its sparse neighbour graph as a dense [N, n_fit] matrix
    (distance, or 1, within the radius; 0 elsewhere)."""
    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    d = _neighbor_distances(g, est)
    inside = g.node("Not", [g.node("Greater", [d, g.const(float(est.radius))])])
    if est.mode == "connectivity":
        g.node("Cast", [inside], out=g.output(0), to=g.onnx_float)
    else:
        g.node("Where", [inside, d, g.const(0.0)], out=g.output(0))


def _isomap(scope: Any, operator: Any, container: Any) -> None:
    """Isomap: geodesic distances through the nearest training rows, then the fitted kernel
    PCA (centred with the training kernel's means)."""
    from onnxbridge.errors import UnsupportedModelError

    est = operator.raw_operator
    if est.n_neighbors is None:
        raise UnsupportedModelError("Isomap with a radius (n_neighbors=None) has no ONNX form"
                                    " here; refit with n_neighbors")
    g = _Graph(scope, operator, container)
    d = _neighbor_distances(g, est.nbrs_)
    k = int(est.n_neighbors)
    vals, idx = g.name("knn_d"), g.name("knn_i")
    container.add_node("TopK", [d, g.const([k], np.int64)], [vals, idx],
                       name=scope.get_unique_operator_name("TopK"), largest=0, sorted=1)
    rows = g.node("Gather", [g.const(est.dist_matrix_), idx], axis=0)  # [N, k, n_fit]
    via = g.node("Add", [rows, g.node("Unsqueeze", [vals, g.const([2], np.int64)])])
    geo = _reduce(g, "ReduceMin", via, 1)
    kern = g.node("Mul", [g.node("Mul", [geo, geo]), g.const(-0.5)])
    kpca = est.kernel_pca_
    n_fit = int(est.nbrs_.n_samples_fit_)
    centre = kpca._centerer
    row_mean = g.node("Mul", [g.row_sum(kern, n_fit), g.const(1.0 / n_fit)])
    kern = g.node("Sub", [g.node("Sub", [kern, g.const(np.asarray(centre.K_fit_rows_)[None, :])]),
                          row_mean])
    kern = g.node("Add", [kern, g.const(float(centre.K_fit_all_))])
    vecs = np.asarray(kpca.eigenvectors_, dtype=np.float64)
    vals_ = np.asarray(kpca.eigenvalues_, dtype=np.float64)
    scaled = np.zeros_like(vecs)
    nz = np.flatnonzero(vals_)
    scaled[:, nz] = vecs[:, nz] / np.sqrt(vals_[nz])
    g.node("MatMul", [kern, g.const(scaled)], out=g.output(0))


def _spline(scope: Any, operator: Any, container: Any) -> None:
    """SplineTransformer: each feature's B-spline basis as piecewise polynomials (Taylor
    coefficients at each knot, evaluated by Horner), with scikit-learn's extrapolation;
    NaN gives 0 (handle_missing='zeros'). extrapolation='error' gives NaN out of range,
    where scikit-learn raises."""
    import copy
    import math

    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    x_all = g.x() if len(operator.inputs) == 1 else g.node(
        "Concat", [str(v.full_name) for v in operator.inputs], axis=1)
    mode = est.extrapolation
    parts = []
    for i, spline in enumerate(est.bsplines_):
        spl = copy.deepcopy(spline)  # evaluating a scipy BSpline can replace its arrays
        k = int(spl.k)
        t = np.asarray(spl.t, dtype=np.float64)
        n = t.size - k - 1
        breaks = t[k:n + 1]
        n_out = int(spl.c.shape[1])
        col = g.node("Gather", [x_all, g.const(np.array([i], dtype=np.int64), np.int64)],
                     axis=1)  # [N, 1]
        x = col
        period = breaks[-1] - breaks[0]
        if mode == "periodic":
            if period > 0:
                r = g.node("Mod", [g.node("Sub", [col, g.const(breaks[0])]),
                                   g.const(period)], fmod=1)
                r = g.node("Where", [g.node("Less", [r, g.const(0.0)]),
                                     g.node("Add", [r, g.const(period)]), r])
                x = g.node("Add", [r, g.const(breaks[0])])
            else:
                x = g.node("Mul", [col, g.const(0.0)])
        starts = breaks[:-1]
        coef = [np.stack([np.asarray(spl(b, nu=p), dtype=np.float64) / math.factorial(p)
                          for b in starts]) for p in range(k + 1)]  # each [m, n_out]
        if len(starts) > 1:
            ge = g.node("Cast", [g.node("Not", [g.node("Less", [x, g.const(starts[None, 1:])])])],
                        to=g.onnx_float)
            idx = g.node("Cast", [g.row_sum(ge, len(starts) - 1)], to=7)  # int64 [N, 1]
        else:
            idx = g.node("Cast", [g.node("Mul", [x, g.const(0.0)])], to=7)
        idx = g.node("Reshape", [idx, g.const([-1], np.int64)])
        u = g.node("Sub", [x, g.node("Unsqueeze", [g.node("Gather", [g.const(starts), idx],
                                                          axis=0), g.const([1], np.int64)])])
        val = g.node("Gather", [g.const(coef[k]), idx], axis=0)
        for p in range(k - 1, -1, -1):
            val = g.node("Add", [g.node("Mul", [val, u]),
                                 g.node("Gather", [g.const(coef[p]), idx], axis=0)])
        lo, hi = float(breaks[0]), float(breaks[-1])
        if mode in {"constant", "linear", "error"}:
            below = g.node("Less", [col, g.const(lo)])
            above = g.node("Greater", [col, g.const(hi)])
            outside = g.node("Or", [below, above])
            val = g.node("Where", [outside, g.const(np.nan if mode == "error" else 0.0), val])
        if mode in {"constant", "linear"}:
            f_lo, f_hi = np.asarray(spl(lo), dtype=np.float64), np.asarray(spl(hi), np.float64)
            if mode == "constant":
                row_lo, row_hi = np.zeros(n_out), np.zeros(n_out)
                if k:
                    row_lo[:k], row_hi[-k:] = f_lo[:k], f_hi[-k:]
                val = g.node("Where", [below, g.const(row_lo[None, :]), val])
                val = g.node("Where", [above, g.const(row_hi[None, :]), val])
            else:
                s_lo, s_hi = np.asarray(spl(lo, nu=1)), np.asarray(spl(hi, nu=1))
                m = max(k, 2) if k <= 1 else k
                base_lo, slope_lo = np.zeros(n_out), np.zeros(n_out)
                base_hi, slope_hi = np.zeros(n_out), np.zeros(n_out)
                for j in range(min(m, n_out)):
                    base_lo[j], slope_lo[j] = f_lo[j], s_lo[j]
                    kk = n_out - 1 - j
                    base_hi[kk], slope_hi[kk] = f_hi[kk], s_hi[kk]
                ext_lo = g.node("Add", [g.const(base_lo[None, :]), g.node(
                    "Mul", [g.node("Sub", [col, g.const(lo)]), g.const(slope_lo[None, :])])])
                ext_hi = g.node("Add", [g.const(base_hi[None, :]), g.node(
                    "Mul", [g.node("Sub", [col, g.const(hi)]), g.const(slope_hi[None, :])])])
                val = g.node("Where", [below, ext_lo, val])
                val = g.node("Where", [above, ext_hi, val])
        val = g.node("Where", [g.node("IsNaN", [col]), g.const(0.0), val])
        if not est.include_bias:
            val = g.node("Slice", [val, g.const([0], np.int64), g.const([n_out - 1], np.int64),
                                   g.const([1], np.int64)])
        parts.append(val)
    out = parts[0] if len(parts) == 1 else g.node("Concat", parts, axis=1)
    g.node("Identity", [out], out=g.output(0))


def _count_sketch(scope: Any, operator: Any, container: Any) -> None:
    """PolynomialCountSketch: one count sketch per degree (the fitted hash buckets and signs as
    a fixed matrix), multiplied in the Fourier domain (ONNX DFT), the real part back."""
    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    x = g.node("Mul", [g.x(), g.const(float(np.sqrt(est.gamma)))])
    if est.coef0 != 0:
        x = g.node("Concat", [x, g.rows(x, 1, np.full((1, 1), np.sqrt(est.coef0),
                                                      dtype=g.dtype))], axis=1)
    n_in = est.indexHash_.shape[1]
    n = int(est.n_components)
    opset = container.target_opset
    product_re = product_im = ""
    for d in range(int(est.degree)):
        m = np.zeros((n_in, n))
        for j in range(n_in):
            m[j, est.indexHash_[d, j]] += est.bitHash_[d, j]
        sketch = g.node("Unsqueeze", [g.node("MatMul", [x, g.const(m)]),
                                      g.const([2], np.int64)])  # [N, n, 1]
        if opset >= 20:
            spec = g.node("DFT", [sketch, g.const(np.int64(n), np.int64),
                                  g.const(np.int64(1), np.int64)])
        else:
            spec = g.node("DFT", [sketch], axis=1)
        re = g.node("Gather", [spec, g.const(np.int64(0), np.int64)], axis=2)
        im = g.node("Gather", [spec, g.const(np.int64(1), np.int64)], axis=2)
        if not product_re:
            product_re, product_im = re, im
        else:
            product_re, product_im = (
                g.node("Sub", [g.node("Mul", [product_re, re]), g.node("Mul", [product_im, im])]),
                g.node("Add", [g.node("Mul", [product_re, im]), g.node("Mul", [product_im, re])]),
            )
    axis = g.const([2], np.int64)
    spec = g.node("Concat", [g.node("Unsqueeze", [product_re, axis]),
                             g.node("Unsqueeze", [product_im, axis])], axis=2)
    if opset >= 20:
        back = g.node("DFT", [spec, g.const(np.int64(n), np.int64),
                              g.const(np.int64(1), np.int64)], inverse=1)
    else:
        back = g.node("DFT", [spec], axis=1, inverse=1)
    g.node("Gather", [back, g.const(np.int64(0), np.int64)], out=g.output(0), axis=2)


def _output_code(scope: Any, operator: Any, container: Any) -> None:
    """OutputCodeClassifier: each binary estimator's score (decision function of a linear
    model, a constant, or the positive-class probability), then the class whose code is
    nearest (label only: scikit-learn has no predict_proba here)."""
    from skl2onnx.algebra.onnx_operator import OnnxSubEstimator
    from skl2onnx.algebra.onnx_ops import OnnxIdentity

    from onnxbridge.errors import UnsupportedModelError

    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    x = g.x()
    scores = []
    for i, e in enumerate(est.estimators_):
        if hasattr(e, "y_") and type(e).__name__ == "_ConstantPredictor":
            scores.append(g.rows(x, 1, np.asarray(e.y_, dtype=g.dtype).reshape(1, 1)))
        elif hasattr(e, "decision_function") and hasattr(e, "coef_") and \
                hasattr(e, "intercept_") and np.asarray(e.coef_).ndim == 2 \
                and np.asarray(e.coef_).shape[0] == 1:
            coef = np.asarray(e.coef_, dtype=np.float64)
            scores.append(g.node("Add", [g.node("MatMul", [x, g.const(coef.T)]),
                                         g.const(np.asarray(e.intercept_, np.float64))]))
        elif not hasattr(e, "decision_function") and hasattr(e, "predict_proba"):
            sub = OnnxSubEstimator(e, operator.inputs[0], op_version=container.target_opset,
                                   options={"zipmap": False})
            name = g.name(f"proba_{i}")
            OnnxIdentity(sub[1], op_version=container.target_opset,
                         output_names=[name]).add_to(scope, container)
            scores.append(g.node("Slice", [name, g.const([1], np.int64),
                                           g.const([2], np.int64), g.const([1], np.int64)]))
        else:
            raise UnsupportedModelError(
                f"OutputCodeClassifier over {type(e).__name__} has no ONNX form here (linear"
                " models with decision_function and models with predict_proba only do); use"
                " LogisticRegression, LinearSVC, RidgeClassifier or a tree/NB estimator inside")
    y = scores[0] if len(scores) == 1 else g.node("Concat", scores, axis=1)
    d = _pairwise(g, y, np.asarray(est.code_book_, dtype=np.float64), "sqeuclidean")
    g.argmax_label(g.node("Neg", [d]), est.classes_, g.output(0))


def _target_encoder(scope: Any, operator: Any, container: Any) -> None:
    """TargetEncoder (binary, continuous and multiclass targets): each category's fitted
    encoding, the target mean for an unseen category (transform, not fit_transform)."""
    from skl2onnx.common.data_types import StringTensorType

    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    if len(operator.inputs) == len(est.categories_):  # one input per column (a DataFrame)
        columns = [(str(v.full_name), isinstance(v.type, StringTensorType))
                   for v in operator.inputs]
    else:
        strings = isinstance(operator.inputs[0].type, StringTensorType)
        names = [str(v.full_name) for v in operator.inputs]
        x = names[0] if len(names) == 1 else g.node("Concat", names, axis=1)
        columns = [(g.node("Gather", [x, g.const(np.array([i], dtype=np.int64), np.int64)],
                           axis=1), strings) for i in range(len(est.categories_))]
    multiclass = est.target_type_ == "multiclass"
    n_classes = len(est.classes_) if multiclass else 1
    mean = np.asarray(est.target_mean_, dtype=np.float64).reshape(-1)
    parts = []
    for i, cats in enumerate(est.categories_):
        col, strings = columns[i]
        if not strings:
            col = g.node("Cast", [col], to=g.onnx_float)
        enc = np.stack([np.asarray(est.encodings_[i * n_classes + c], dtype=np.float64)
                        for c in range(n_classes)], axis=1)  # [n_cats, n_classes]
        cats = np.asarray(cats)
        if strings or cats.dtype.kind in "OUS":
            known = [j for j, c in enumerate(cats) if isinstance(c, str)]
            hit = g.node("Equal", [col, g.const(cats[known].astype(str).astype(object)[None, :],
                                                object)])
            enc = enc[known]
        else:
            values = cats.astype(np.float64)
            finite = np.flatnonzero(~np.isnan(values))
            hit = g.node("Equal", [col, g.const(values[finite][None, :])])
            if len(finite) < len(values):
                hit = g.node("Concat", [hit, g.node("IsNaN", [col])], axis=1)
                enc = np.vstack([enc[finite], enc[np.isnan(values)][:1]])
            else:
                enc = enc[finite]
        onehot = g.node("Cast", [hit], to=g.onnx_float)
        found = g.row_sum(onehot, enc.shape[0])
        value = g.node("MatMul", [onehot, g.const(enc)])
        unseen = g.node("Mul", [g.node("Sub", [g.const(1.0), found]), g.const(mean[None, :])])
        parts.append(g.node("Add", [value, unseen]))
    out = parts[0] if len(parts) == 1 else g.node("Concat", parts, axis=1)
    g.node("Identity", [out], out=g.output(0))


def _gp_kernel(g: _Graph, kernel: Any, x: str, train: np.ndarray) -> tuple[str, str]:
    """A fitted scikit-learn GP kernel in float64: (k(x, train) [N, P], k.diag(x) [N, 1])."""
    from sklearn.gaussian_process import kernels as gk

    from onnxbridge.errors import UnsupportedModelError

    def c(value: Any) -> str:
        return g.const(value, np.float64)

    ones = c(np.ones((train.shape[1], 1)))
    if isinstance(kernel, (gk.Sum, gk.Product)):
        a, da = _gp_kernel(g, kernel.k1, x, train)
        b, db = _gp_kernel(g, kernel.k2, x, train)
        op = "Add" if isinstance(kernel, gk.Sum) else "Mul"
        return g.node(op, [a, b]), g.node(op, [da, db])
    zero_col = g.node("Mul", [g.node("MatMul", [x, ones]), c(0.0)])  # [N, 1] zeros
    if isinstance(kernel, gk.ConstantKernel):
        value = float(kernel.constant_value)
        return (g.node("Add", [g.node("Mul", [g.node("MatMul", [x, c(np.zeros((train.shape[1],
                                                                               len(train))))]),
                                               c(0.0)]), c(value)]),
                g.node("Add", [zero_col, c(value)]))
    if isinstance(kernel, gk.WhiteKernel):  # zero between distinct points
        return (g.node("MatMul", [x, c(np.zeros((train.shape[1], len(train))))]),
                g.node("Add", [zero_col, c(float(kernel.noise_level))]))
    if isinstance(kernel, gk.DotProduct):
        s2 = float(kernel.sigma_0) ** 2
        return (g.node("Add", [g.node("MatMul", [x, c(train.T)]), c(s2)]),
                g.node("Add", [g.node("MatMul", [g.node("Mul", [x, x]), ones]), c(s2)]))
    if isinstance(kernel, (gk.RBF, gk.Matern, gk.RationalQuadratic)):
        scale: Any = np.asarray(kernel.length_scale, dtype=np.float64)
        if isinstance(kernel, gk.RationalQuadratic):
            scale = np.float64(1.0)  # applied below, as scikit-learn does
        xs = g.node("Div", [x, c(scale)])
        sq = _pairwise(g, xs, train / scale, "sqeuclidean", dtype=np.float64)
        one = g.node("Add", [zero_col, c(1.0)])
        if isinstance(kernel, gk.RationalQuadratic):
            alpha, ls = float(kernel.alpha), float(kernel.length_scale)
            base = g.node("Add", [c(1.0), g.node("Div", [sq, c(2 * alpha * ls ** 2)])])
            return g.node("Pow", [base, c(-alpha)]), one
        nu = float(getattr(kernel, "nu", np.inf))
        if np.isinf(nu):
            return g.node("Exp", [g.node("Mul", [sq, c(-0.5)])]), one
        d = g.node("Sqrt", [sq])
        if nu == 0.5:
            return g.node("Exp", [g.node("Neg", [d])]), one
        if nu in (1.5, 2.5):
            r = g.node("Mul", [d, c(np.sqrt(2 * nu))])
            poly = g.node("Add", [c(1.0), r])
            if nu == 2.5:
                poly = g.node("Add", [poly, g.node("Mul", [g.node("Mul", [r, r]), c(1 / 3)])])
            return g.node("Mul", [poly, g.node("Exp", [g.node("Neg", [r])])]), one
    raise UnsupportedModelError(
        f"the Gaussian-process kernel {kernel} has no ONNX form in onnxbridge (sums and"
        " products of ConstantKernel, RBF, Matern with nu 0.5/1.5/2.5/inf, RationalQuadratic,"
        " DotProduct and WhiteKernel do); refit with those")


def _erf64(g: _Graph, z: str) -> str:
    """erf in float64 (onnxruntime's Erf is float32 only, and the GP classifier's five-erf
    sum cancels terms in the thousands): erf(a) = 2/sqrt(pi) exp(-a^2) sum_n a (2a^2)^n /
    (1 3 5 ... (2n+1)) for a = min(|z|, 6), 111 positive terms summed at once in log space
    (error below 1e-14 on [-8, 8])."""
    n = np.arange(111, dtype=np.float64)
    log_odd = np.concatenate([[0.0], np.cumsum(np.log(2 * n[1:] + 1))])

    def c(value: Any) -> str:
        return g.const(value, np.float64)

    a = g.node("Max", [g.node("Min", [g.node("Abs", [z]), c(6.0)]), c(1e-150)])
    log_a = g.node("Unsqueeze", [g.node("Log", [a]), g.const([-1], np.int64)])
    log_q = g.node("Unsqueeze", [g.node("Log", [g.node("Mul", [g.node("Mul", [a, a]), c(2.0)])]),
                                 g.const([-1], np.int64)])
    terms = g.node("Exp", [g.node("Sub", [g.node("Add", [log_a, g.node("Mul", [log_q, c(n)])]),
                                          c(log_odd)])])  # [..., 111]
    total = g.node("MatMul", [terms, c(np.ones((len(n), 1)))])
    total = g.node("Squeeze", [total, g.const([-1], np.int64)])
    scale = g.node("Mul", [g.node("Exp", [g.node("Neg", [g.node("Mul", [a, a])])]),
                           c(2.0 / np.sqrt(np.pi))])
    return g.node("Mul", [g.node("Mul", [total, scale]), g.node("Sign", [z])])


def _gpc_positive(g: _Graph, x: str, est: Any) -> tuple[str, str]:
    """One binary Laplace GP classifier: (latent mean [N, 1], P(positive) [N, 1]) in float64.
    The variance's triangular solve is a fixed matrix: v = (L^-1 diag(W_sr)) k*."""
    from scipy.linalg import solve_triangular
    from sklearn.gaussian_process import _gpc

    train = np.asarray(est.X_train_, dtype=np.float64)
    k_star, k_diag = _gp_kernel(g, est.kernel_, x, train)
    resid = (np.asarray(est.y_train_, np.float64) - np.asarray(est.pi_, np.float64))
    mean = g.node("MatMul", [k_star, g.const(resid[:, None], np.float64)])
    solve = solve_triangular(np.asarray(est.L_, np.float64),
                             np.diag(np.asarray(est.W_sr_, np.float64)), lower=True)
    v = g.node("MatMul", [k_star, g.const(solve.T, np.float64)])
    var = g.node("Sub", [k_diag, g.node("MatMul", [g.node("Mul", [v, v]),
                                                   g.const(np.ones((len(train), 1)),
                                                           np.float64)])])
    lambdas = np.asarray(_gpc.LAMBDAS, np.float64).reshape(1, -1)
    coefs = np.asarray(_gpc.COEFS, np.float64).reshape(-1, 1)
    alpha = g.node("Div", [g.const(0.5, np.float64), var])  # 1 / (2 var)   [N, 1]
    gamma = g.node("Mul", [mean, g.const(lambdas, np.float64)])  # [N, 5]
    ratio = g.node("Sqrt", [g.node("Div", [alpha, g.node("Add", [alpha, g.const(
        lambdas ** 2, np.float64)])])])
    erf = _erf64(g, g.node("Mul", [gamma, ratio]))
    front = g.node("Sqrt", [g.node("Div", [g.const(np.pi, np.float64), alpha])])
    back = g.node("Mul", [g.const(2.0, np.float64), g.node("Sqrt", [
        g.node("Mul", [var, g.const(2 * np.pi, np.float64)])])])
    integrals = g.node("Div", [g.node("Mul", [front, erf]), back])
    p = g.node("Add", [g.node("MatMul", [integrals, g.const(coefs, np.float64)]),
                       g.const(0.5 * float(coefs.sum()), np.float64)])
    return mean, p


def _gp_classifier(scope: Any, operator: Any, container: Any) -> None:
    """GaussianProcessClassifier (Laplace; binary, or multiclass one-vs-rest): scikit-learn's
    latent mean and variance and its five-erf approximation, computed in float64."""
    from onnx import TensorProto

    from onnxbridge.errors import UnsupportedModelError

    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    x = g.node("Cast", [g.x()], to=TensorProto.DOUBLE)
    classes = np.asarray(est.classes_)
    base = est.base_estimator_
    if len(classes) == 2:
        mean, p = _gpc_positive(g, x, base)
        proba = g.node("Concat", [g.node("Sub", [g.const(1.0, np.float64), p]), p], axis=1)
        hit = g.node("Cast", [g.node("Greater", [mean, g.const(0.0, np.float64)])], to=7)
        g.label_from(g.node("Reshape", [hit, g.const([-1], np.int64)]), classes,
                     g.output(0))
    elif type(base).__name__ == "OneVsRestClassifier":
        ps = [_gpc_positive(g, x, e)[1] for e in base.estimators_]
        raw = g.node("Concat", ps, axis=1)
        proba = g.node("Div", [raw, g.node("MatMul", [raw, g.const(np.ones((len(ps), 1)),
                                                                   np.float64)])])
        g.argmax_label(raw, classes, g.output(0))
    else:
        raise UnsupportedModelError(
            "GaussianProcessClassifier(multi_class='one_vs_one') has no predict_proba and no"
            " ONNX form here; refit with multi_class='one_vs_rest' (the default)")
    if len(operator.outputs) > 1:
        g.node("Cast", [proba], out=g.output(1), to=g.onnx_float)


def _isotonic(scope: Any, operator: Any, container: Any) -> None:
    """IsotonicRegression: linear interpolation between the fitted thresholds (scikit-learn's
    interp1d), clipped or NaN beyond them (out_of_bounds='raise' gives NaN there, where
    scikit-learn raises)."""
    est = operator.raw_operator
    g = _Graph(scope, operator, container)
    x = g.node("Reshape", [g.x(), g.const([-1, 1], np.int64)])
    xt = np.asarray(est.X_thresholds_, dtype=np.float64)
    yt = np.asarray(est.y_thresholds_, dtype=np.float64)
    lo, hi = float(est.X_min_), float(est.X_max_)
    if est.out_of_bounds == "clip":
        x = g.node("Min", [g.node("Max", [x, g.const(lo)]), g.const(hi)])
    if len(xt) < 2:
        val = g.node("Add", [g.node("Mul", [x, g.const(0.0)]), g.const(float(yt[0]))])
    else:
        ge = g.node("Cast", [g.node("Not", [g.node("Less", [x, g.const(xt[None, 1:-1])])])],
                    to=g.onnx_float) if len(xt) > 2 else g.node("Mul", [x, g.const(0.0)])
        idx = g.node("Cast", [g.row_sum(ge, max(len(xt) - 2, 1))], to=7)
        idx = g.node("Reshape", [idx, g.const([-1], np.int64)])
        slope = np.diff(yt) / np.diff(xt)
        x0 = g.node("Unsqueeze", [g.node("Gather", [g.const(xt[:-1]), idx], axis=0),
                                  g.const([1], np.int64)])
        y0 = g.node("Unsqueeze", [g.node("Gather", [g.const(yt[:-1]), idx], axis=0),
                                  g.const([1], np.int64)])
        s = g.node("Unsqueeze", [g.node("Gather", [g.const(slope), idx], axis=0),
                                 g.const([1], np.int64)])
        val = g.node("Add", [g.node("Mul", [s, g.node("Sub", [x, x0])]), y0])
    if est.out_of_bounds != "clip":
        outside = g.node("Or", [g.node("Less", [x, g.const(lo)]),
                                g.node("Greater", [x, g.const(hi)])])
        val = g.node("Where", [outside, g.const(np.nan), val])
    g.node("Identity", [val], out=g.output(0))


def _inner(est: Any) -> Any:
    """The fitted estimator a wrapper predicts with."""
    for attr in ("best_estimator_", "estimator_"):
        if getattr(est, attr, None) is not None:
            return getattr(est, attr)
    return est.estimator  # FrozenEstimator


def _delegate(scope: Any, operator: Any, container: Any) -> None:
    """Wrappers that predict with one fitted estimator (FrozenEstimator, RandomizedSearchCV,
    SelfTrainingClassifier): that estimator's graph, its outputs as the wrapper's."""
    from skl2onnx.algebra.onnx_operator import OnnxSubEstimator
    from skl2onnx.algebra.onnx_ops import OnnxIdentity
    from sklearn.base import is_classifier

    inner = _inner(operator.raw_operator)
    opv = container.target_opset
    sub = OnnxSubEstimator(inner, operator.inputs[0], op_version=opv,
                           options={"zipmap": False} if is_classifier(inner) else None)
    if len(operator.outputs) == 1:
        OnnxIdentity(sub, op_version=opv,
                     output_names=[operator.outputs[0]]).add_to(scope, container)
        return
    for i, out in enumerate(operator.outputs):
        OnnxIdentity(sub[i], op_version=opv, output_names=[out]).add_to(scope, container)


def _threshold(scope: Any, operator: Any, container: Any) -> None:
    """FixedThresholdClassifier / TunedThresholdClassifierCV: the positive class where the
    inner estimator's positive-class probability (or linear decision) reaches the threshold;
    probabilities are the inner estimator's."""
    from skl2onnx.algebra.onnx_operator import OnnxSubEstimator
    from skl2onnx.algebra.onnx_ops import OnnxIdentity

    from onnxbridge.errors import UnsupportedModelError

    est = operator.raw_operator
    inner = est.estimator_
    classes = np.asarray(est.classes_)
    pos = getattr(est, "pos_label", None)
    if pos is not None and pos != classes[1]:
        raise UnsupportedModelError(f"{type(est).__name__} with pos_label={pos!r} (not the"
                                    " second class) has no ONNX form here; refit with"
                                    " pos_label=None")
    method = est.response_method
    if method == "auto":
        method = "predict_proba" if hasattr(inner, "predict_proba") else "decision_function"
    threshold = getattr(est, "best_threshold_", None)
    if threshold is None:
        threshold = est.threshold
        if threshold == "auto":
            threshold = 0.5 if method == "predict_proba" else 0.0
    g = _Graph(scope, operator, container)
    opv = container.target_opset
    proba = ""
    if hasattr(inner, "predict_proba"):
        sub = OnnxSubEstimator(inner, operator.inputs[0], op_version=opv,
                               options={"zipmap": False})
        proba = g.name("inner_proba")
        OnnxIdentity(sub[1], op_version=opv, output_names=[proba]).add_to(scope, container)
    if method == "predict_proba" and proba:
        score = g.node("Gather", [proba, g.const(np.int64(1), np.int64)], axis=1)
    elif method == "decision_function" and hasattr(inner, "coef_"):
        coef = np.asarray(inner.coef_, dtype=np.float64).reshape(-1, 1)
        score = g.node("Add", [g.node("MatMul", [g.x(), g.const(coef)]),
                               g.const(np.asarray(inner.intercept_, np.float64).reshape(-1))])
        score = g.node("Reshape", [score, g.const([-1], np.int64)])
    else:
        raise UnsupportedModelError(
            f"{type(est).__name__} over {type(inner).__name__} with response_method"
            f" {method!r} has no ONNX form here (predict_proba, or a linear decision"
            " function, does); use such an inner estimator")
    hit = g.node("Cast", [g.node("Not", [g.node("Less", [score, g.const(float(threshold))])])],
                 to=7)
    g.label_from(hit, classes, g.output(0))
    if len(operator.outputs) > 1:
        if not proba:
            raise UnsupportedModelError(f"{type(est).__name__} over {type(inner).__name__}"
                                        " gives no probabilities to convert")
        g.node("Identity", [proba], out=g.output(1))


# -- registration ----------------------------------------------------------------------------
def _classifier_shapes(operator: Any) -> None:
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes

    calculate_linear_classifier_output_shapes(operator)


def _regressor_shapes(operator: Any) -> None:
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    est = operator.raw_operator
    n = operator.inputs[0].get_first_dimension()
    width = 1
    if hasattr(est, "regressor_"):
        pred = np.asarray(est.regressor_.predict(np.zeros((2, est.n_features_in_))))
        width = int(pred.shape[1]) if pred.ndim == 2 else 1
    if hasattr(est, "x_weights_") or hasattr(est, "best_estimator_") or hasattr(est, "estimator"):
        import copy

        pred = np.asarray(copy.deepcopy(_inner(est) if not hasattr(est, "x_weights_") else est)
                          .predict(np.zeros((2, est.n_features_in_))))
        width = int(pred.shape[1]) if pred.ndim == 2 else 1
    for attr in ("constant_", "dual_coef_", "_y"):
        value = getattr(est, attr, None)
        if value is not None:
            arr = np.asarray(value)
            width = int(arr.shape[1]) if arr.ndim == 2 else 1
    cls = DoubleTensorType if isinstance(operator.inputs[0].type, DoubleTensorType) \
        else FloatTensorType
    operator.outputs[0].type = cls([n, width])


def _transform_shapes(operator: Any) -> None:
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    est = operator.raw_operator
    n = operator.inputs[0].get_first_dimension()
    if type(est).__name__ == "TargetEncoder":  # its categories may be strings
        width = len(est.get_feature_names_out())
    else:  # RadiusNeighborsTransformer's is sparse; a copy (scipy splines tidy themselves)
        import copy

        width = int(copy.deepcopy(est).transform(np.zeros((2, est.n_features_in_))).shape[1])
    cls = DoubleTensorType if isinstance(operator.inputs[0].type, DoubleTensorType) \
        else FloatTensorType
    operator.outputs[0].type = cls([n, width])


def _neighbors_shapes(operator: Any) -> None:
    """NearestNeighbors: float ``distances`` and int64 ``indices``, both [N, n_neighbors]."""
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, Int64TensorType

    n = operator.inputs[0].get_first_dimension()
    k = int(operator.raw_operator.n_neighbors)
    cls = DoubleTensorType if isinstance(operator.inputs[0].type, DoubleTensorType) \
        else FloatTensorType
    operator.outputs[0].type = cls([n, k])
    operator.outputs[1].type = Int64TensorType([n, k])


def _label_shapes(operator: Any) -> None:
    """A classifier with labels only: int64 or string ``label`` [N]."""
    from skl2onnx.common.data_types import Int64TensorType, StringTensorType

    n = operator.inputs[0].get_first_dimension()
    classes = np.asarray(operator.raw_operator.classes_)
    cls = StringTensorType if classes.dtype.kind in "OUS" else Int64TensorType
    operator.outputs[0].type = cls([n])


def _vector_shapes(operator: Any) -> None:
    """One float output [N] (covariance estimators' mahalanobis)."""
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    n = operator.inputs[0].get_first_dimension()
    cls = DoubleTensorType if isinstance(operator.inputs[0].type, DoubleTensorType) \
        else FloatTensorType
    operator.outputs[0].type = cls([n])


def _label_scores_shapes(operator: Any) -> None:
    """Clusterers and outlier detectors: ``label`` int64 [N] and float ``scores``."""
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, Int64TensorType

    est = operator.raw_operator
    n = operator.inputs[0].get_first_dimension()
    cls = DoubleTensorType if isinstance(operator.inputs[0].type, DoubleTensorType) \
        else FloatTensorType
    operator.outputs[0].type = Int64TensorType([n])
    if len(operator.outputs) > 1:
        if type(est).__name__ == "EllipticEnvelope":
            operator.outputs[1].type = cls([n])
        else:
            centers = getattr(est, "subcluster_centers_", getattr(est, "cluster_centers_", []))
            operator.outputs[1].type = cls([n, len(centers)])


# (module, class, alias, kind, converter)
OWN_CONVERTERS: list[tuple[str, str, str, str, Callable[..., None]]] = [
    ("sklearn.dummy", "DummyClassifier", "OnnxbridgeDummyClassifier", "classifier",
     _dummy_classifier),
    ("sklearn.dummy", "DummyRegressor", "OnnxbridgeDummyRegressor", "regressor",
     _dummy_regressor),
    ("sklearn.kernel_ridge", "KernelRidge", "OnnxbridgeKernelRidge", "regressor", _kernel_ridge),
    ("sklearn.neighbors", "NearestCentroid", "OnnxbridgeNearestCentroid", "classifier",
     _nearest_centroid),
    ("sklearn.semi_supervised", "LabelPropagation", "OnnxbridgeLabelPropagation", "classifier",
     _label_propagation),
    ("sklearn.semi_supervised", "LabelSpreading", "OnnxbridgeLabelSpreading", "classifier",
     _label_propagation),
    ("sklearn.discriminant_analysis", "LinearDiscriminantAnalysis",
     "OnnxbridgeLinearDiscriminantAnalysis", "classifier", _linear_discriminant),
    ("sklearn.decomposition", "FactorAnalysis", "OnnxbridgeFactorAnalysis", "transform",
     _affine),
    ("sklearn.decomposition", "FastICA", "OnnxbridgeFastICA", "transform", _affine),
    ("sklearn.decomposition", "SparsePCA", "OnnxbridgeSparsePCA", "transform", _affine),
    ("sklearn.decomposition", "MiniBatchSparsePCA", "OnnxbridgeMiniBatchSparsePCA", "transform",
     _affine),
    ("sklearn.cluster", "FeatureAgglomeration", "OnnxbridgeFeatureAgglomeration", "transform",
     _affine),
    ("sklearn.random_projection", "SparseRandomProjection", "OnnxbridgeSparseRandomProjection",
     "transform", _affine),
    ("sklearn.cross_decomposition", "PLSSVD", "OnnxbridgePLSSVD", "transform", _affine),
    ("sklearn.cross_decomposition", "CCA", "OnnxbridgeCCA", "regressor", _affine),
    ("sklearn.cross_decomposition", "PLSCanonical", "OnnxbridgePLSCanonical", "regressor",
     _affine),
    ("sklearn.model_selection", "FixedThresholdClassifier",
     "OnnxbridgeFixedThresholdClassifier", "classifier", _threshold),
    ("sklearn.model_selection", "TunedThresholdClassifierCV",
     "OnnxbridgeTunedThresholdClassifierCV", "classifier", _threshold),
    ("sklearn.gaussian_process", "GaussianProcessClassifier",
     "OnnxbridgeGaussianProcessClassifier", "classifier", _gp_classifier),
    ("sklearn.isotonic", "IsotonicRegression", "OnnxbridgeIsotonicRegression", "regressor",
     _isotonic),
    ("sklearn.frozen", "FrozenEstimator", "OnnxbridgeFrozenEstimator", "delegate", _delegate),
    ("sklearn.semi_supervised", "SelfTrainingClassifier", "OnnxbridgeSelfTrainingClassifier",
     "classifier", _delegate),
    ("sklearn.model_selection", "RandomizedSearchCV", "OnnxbridgeRandomizedSearchCV",
     "delegate", _delegate),
    ("sklearn.kernel_approximation", "RBFSampler", "OnnxbridgeRBFSampler", "transform",
     _random_features),
    ("sklearn.kernel_approximation", "SkewedChi2Sampler", "OnnxbridgeSkewedChi2Sampler",
     "transform", _random_features),
    ("sklearn.kernel_approximation", "Nystroem", "OnnxbridgeNystroem", "transform", _nystroem),
    ("sklearn.neighbors", "KernelDensity", "OnnxbridgeKernelDensity", "vector",
     _kernel_density),
    ("sklearn.kernel_approximation", "AdditiveChi2Sampler", "OnnxbridgeAdditiveChi2Sampler",
     "transform", _additive_chi2),
    ("sklearn.neural_network", "BernoulliRBM", "OnnxbridgeBernoulliRBM", "transform", _rbm),
    *[("sklearn.covariance", name, f"Onnxbridge{name}", "vector", _covariance)
      for name in ("EmpiricalCovariance", "LedoitWolf", "OAS", "ShrunkCovariance", "MinCovDet",
                   "GraphicalLasso", "GraphicalLassoCV")],
    ("sklearn.covariance", "EllipticEnvelope", "OnnxbridgeEllipticEnvelope", "label_scores",
     _elliptic_envelope),
    ("sklearn.cluster", "MeanShift", "OnnxbridgeMeanShift", "label_scores", _nearest_center),
    ("sklearn.cluster", "AffinityPropagation", "OnnxbridgeAffinityPropagation", "label_scores",
     _nearest_center),
    ("sklearn.cluster", "Birch", "OnnxbridgeBirch", "label_scores", _nearest_center),
    ("sklearn.cluster", "BisectingKMeans", "OnnxbridgeBisectingKMeans", "label_scores",
     _bisecting_kmeans),
    ("sklearn.impute", "MissingIndicator", "OnnxbridgeMissingIndicator", "indicator",
     _missing_indicator),
    ("sklearn.feature_selection", "SequentialFeatureSelector",
     "OnnxbridgeSequentialFeatureSelector", "selector", _selector),
    ("sklearn.compose", "TransformedTargetRegressor", "OnnxbridgeTransformedTargetRegressor",
     "regressor", _transformed_target),
    ("sklearn.neighbors", "NearestNeighbors", "OnnxbridgeNearestNeighbors", "neighbors",
     _nearest_neighbors),
    ("sklearn.neighbors", "RadiusNeighborsClassifier", "OnnxbridgeRadiusNeighborsClassifier",
     "classifier", _radius_classifier),
    ("sklearn.neighbors", "RadiusNeighborsRegressor", "OnnxbridgeRadiusNeighborsRegressor",
     "regressor", _radius_regressor),
    ("sklearn.neighbors", "RadiusNeighborsTransformer", "OnnxbridgeRadiusNeighborsTransformer",
     "transform", _radius_transformer),
    ("sklearn.manifold", "Isomap", "OnnxbridgeIsomap", "transform", _isomap),
    ("sklearn.preprocessing", "SplineTransformer", "OnnxbridgeSplineTransformer", "transform",
     _spline),
    ("sklearn.kernel_approximation", "PolynomialCountSketch",
     "OnnxbridgePolynomialCountSketch", "transform", _count_sketch),
    ("sklearn.multiclass", "OutputCodeClassifier", "OnnxbridgeOutputCodeClassifier", "label",
     _output_code),
    ("sklearn.preprocessing", "TargetEncoder", "OnnxbridgeTargetEncoder", "transform",
     _target_encoder),
]

# skl2onnx's converters run on a copy with these settings (same values, other container).
AS_IF: list[tuple[str, str, str, dict[str, Any]]] = [
    ("sklearn.ensemble", "VotingClassifier", "SklearnVotingClassifier",
     {"flatten_transform": False}),
    ("sklearn.preprocessing", "KBinsDiscretizer", "SklearnKBinsDiscretizer",
     {"encode": "onehot-dense"}),
    ("sklearn.ensemble", "RandomTreesEmbedding", "SklearnRandomTreesEmbedding",
     {"sparse_output": False}),
]


def _delegate_shapes(operator: Any) -> None:
    from sklearn.base import is_classifier

    inner = _inner(operator.raw_operator)
    if is_classifier(inner):
        from skl2onnx.common.data_types import Int64TensorType, StringTensorType

        _classifier_shapes(operator)
        n = operator.inputs[0].get_first_dimension()
        strings = np.asarray(inner.classes_).dtype.kind in "OUS"
        operator.outputs[0].type = (StringTensorType if strings else Int64TensorType)([n])
    elif hasattr(inner, "predict"):
        _regressor_shapes(operator)
    else:
        _transform_shapes(operator)


def _delegate_parser(alias: str) -> Callable[..., Any]:
    def parse(scope: Any, model: Any, inputs: Any, custom_parsers: Any = None) -> Any:
        from sklearn.base import is_classifier

        if is_classifier(_inner(model)):
            return _outputs_parser(alias, ("label", "int64"), ("probabilities", "float"))(
                scope, model, inputs)
        return _outputs_parser(alias, ("variable", "float"))(scope, model, inputs)

    return parse


def _outputs_parser(alias: str, *outputs: tuple[str, str]) -> Callable[..., Any]:
    """A skl2onnx parser declaring these (name, 'float' | 'int64') outputs for the operator
    registered as ``alias`` (FeatureAgglomeration is a ClusterMixin, which skl2onnx would give
    a label and scores, but it only transforms; NearestNeighbors gives two outputs)."""

    def parse(scope: Any, model: Any, inputs: Any, custom_parsers: Any = None) -> Any:
        from skl2onnx.common.data_types import FloatTensorType, Int64TensorType

        operator = scope.declare_local_operator(alias, model)
        operator.inputs = inputs
        for name, kind in outputs:
            typ = Int64TensorType() if kind == "int64" else FloatTensorType()
            operator.outputs.append(scope.declare_local_variable(name, typ))
        return operator.outputs

    return parse


# skl2onnx internals onnxbridge reaches into, where no public API does the job: key ->
# (module, attribute, what onnxbridge uses it for, what is lost without it). Each is probed
# once per process; a missing one gives an OnnxBridgeWarning and its patch is skipped.
SKL2ONNX_INTERNALS: dict[str, tuple[str, str, str, str]] = {
    "tree_add_node": (
        "skl2onnx.common.tree_ensemble", "add_node",
        "pass HistGradientBoosting's missing-value flags as ints",
        "HistGradientBoosting models may fail in onnx >= 1.17"),
    "container_add_node": (
        "skl2onnx.common._container", "ModelComponentContainer.add_node",
        "keep tree thresholds in float64 when converting in double precision",
        "double-precision trees keep float32 thresholds"),
    "converter_pool": (
        "skl2onnx.common._registration", "_converter_pool",
        "adjust registered converters (HistGradientBoosting's opset, the zipmap option)",
        "Pipelines ending in LinearSVC and double-precision HistGradientBoosting"
        " classifiers may fail"),
    "operator_name_map": (
        "skl2onnx._supported_operators", "sklearn_operator_name_map",
        "find a classifier's registered converter", "Pipelines ending in LinearSVC may fail"),
    "classifier_list": (
        "skl2onnx._supported_operators", "sklearn_classifier_list",
        "declare CatBoostClassifier a classifier", "CatBoost classifiers inside a Pipeline"
        " may fail"),
    "registration": (
        "skl2onnx.common._registration", "get_converter",
        "wrap skl2onnx's own SimpleImputer, OneHotEncoder, VotingClassifier, KBinsDiscretizer"
        " and RandomTreesEmbedding converters",
        "string columns with NaN, float one-hot categories, soft voting, one-hot bins and"
        " dense tree embeddings go to skl2onnx unwrapped"),
}
_PROBED: dict[str, bool] = {}


def has_internal(key: str) -> bool:
    """Whether the installed skl2onnx still has this internal (warns once when not)."""
    import importlib
    import warnings

    if key in _PROBED:
        return _PROBED[key]
    module, attr, purpose, loss = SKL2ONNX_INTERNALS[key]
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        if key == "registration":  # the converter objects' fields onnxbridge reads
            conv = obj("SklearnLinearRegressor")
            ok = all(hasattr(conv, a) for a in ("_fct", "_options", "get_allowed_options")) \
                and hasattr(importlib.import_module(module), "get_shape_calculator")
        else:
            ok = True
    except Exception:
        ok = False
    _PROBED[key] = ok
    if not ok:
        from skl2onnx import __version__ as version

        from onnxbridge.errors import OnnxBridgeWarning

        warnings.warn(OnnxBridgeWarning(
            f"skl2onnx {version} has no {module}.{attr}, which onnxbridge uses to {purpose};"
            f" converting without that adjustment ({loss}). onnxbridge is tested with"
            " skl2onnx 1.20: pin it (pip install 'skl2onnx==1.20.*') if a model now fails,"
            " and report the new version to onnxbridge"), stacklevel=3)
    return ok


def register_own_converters() -> None:
    """Register (or re-register) onnxbridge's converters with skl2onnx."""
    import importlib

    from skl2onnx import update_registered_converter
    from sklearn.impute import SimpleImputer

    wrap = has_internal("registration")
    if wrap:
        from skl2onnx.common._registration import get_converter, get_shape_calculator

        original = get_converter("SklearnSimpleImputer")
    if wrap and not getattr(getattr(original, "_fct", original), "_onnxbridge", False):
        wrapped = _simple_imputer(original)
        wrapped._onnxbridge = True  # type: ignore[attr-defined]
        update_registered_converter(SimpleImputer, "SklearnSimpleImputer",
                                    get_shape_calculator("SklearnSimpleImputer"), wrapped)
    options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    for module, cls_name, alias, kind, fct in OWN_CONVERTERS:
        if module not in sys.modules:
            importlib.import_module(module)
        cls = getattr(sys.modules[module], cls_name)
        if kind == "classifier":
            update_registered_converter(cls, alias, _classifier_shapes, fct, options=options,
                                        overwrite=True)
        elif kind == "label":
            update_registered_converter(cls, alias, _label_shapes, fct, overwrite=True,
                                        parser=_outputs_parser(alias, ("label", "int64")))
        else:
            shapes = {"transform": _transform_shapes, "vector": _vector_shapes,
                      "label_scores": _label_scores_shapes,
                      "indicator": _indicator_shapes, "neighbors": _neighbors_shapes,
                      "selector": _selector_shapes}.get(kind, _regressor_shapes)
            parser = (_outputs_parser(alias, ("variable", "float"))
                      if cls_name == "FeatureAgglomeration" else None)
            if kind == "delegate":
                shapes, parser = _delegate_shapes, _delegate_parser(alias)
            if kind == "neighbors":
                parser = _outputs_parser(alias, ("distances", "float"), ("indices", "int64"))
            update_registered_converter(cls, alias, shapes, fct, parser=parser,
                                        overwrite=True,
                                        options=options if kind == "delegate" else None)
    if not wrap:
        return
    for module, cls_name, alias, params in AS_IF:
        conv = get_converter(alias)
        if getattr(getattr(conv, "_fct", conv), "_onnxbridge", False):
            continue
        cls = getattr(importlib.import_module(module), cls_name)
        update_registered_converter(cls, alias, _AsIf(get_shape_calculator(alias), params).shape(),
                                    _AsIf(conv, params).converter(),
                                    options=conv.get_allowed_options())
    onehot = get_converter("SklearnOneHotEncoder")
    if not getattr(getattr(onehot, "_fct", onehot), "_onnxbridge", False):
        from sklearn.preprocessing import OneHotEncoder

        wrapped = _one_hot_float(onehot)
        wrapped._onnxbridge = True  # type: ignore[attr-defined]
        update_registered_converter(OneHotEncoder, "SklearnOneHotEncoder",
                                    get_shape_calculator("SklearnOneHotEncoder"), wrapped,
                                    options=onehot.get_allowed_options())


# -- a graph fix: k-nearest neighbours with weights="distance" --------------------------------------
def fix_distance_weights(proto: Any) -> int:
    """Give skl2onnx's ``weights="distance"`` neighbour graphs scikit-learn's weights.

    skl2onnx 1.20 writes the weights as ``Reciprocal(Max(Mul(d, -1), 1e-6))`` on the TopK
    distances ``d``, which are already positive: every weight becomes 1e6 (a plain average).
    scikit-learn weighs by ``1 / d``, and a row at distance 0 from some training points takes
    their values only (weight 1 each, 0 for the others). The three nodes are replaced by that,
    on ``|d|`` (right whichever sign the distances carry). Returns how many were fixed.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:  # ReduceSum with axes as an input
        return 0
    fixed = 0
    for rec in [n for n in graph.node if n.op_type == "Reciprocal"]:
        mx = producer.get(rec.input[0])
        if mx is None or mx.op_type != "Max" or len(mx.input) != 2:
            continue
        mul = producer.get(mx.input[0])
        eps = inits.get(mx.input[1])
        if mul is None or mul.op_type != "Mul" or eps is None or eps.size != 1:
            continue
        sign = inits.get(mul.input[1])
        topk = producer.get(mul.input[0])
        if sign is None or sign.size != 1 or float(sign.reshape(-1)[0]) != -1.0 \
                or topk is None or topk.op_type != "TopK" or topk.output[0] != mul.input[0]:
            continue
        users = [n for n in graph.node if set(n.input) & {mul.output[0], mx.output[0]}]
        if any(n is not mx and n is not rec for n in users):
            continue
        dtype = eps.dtype
        prefix = f"{rec.output[0]}_sklearn_distance"
        zero = numpy_helper.from_array(np.zeros(1, dtype), f"{prefix}_zero")
        tiny = numpy_helper.from_array(np.full(1, np.finfo(dtype).tiny, dtype), f"{prefix}_tiny")
        axis = numpy_helper.from_array(np.array([1], np.int64), f"{prefix}_axis")
        to = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
        d, eq, eqf, count, has, inv_in = (f"{prefix}_{k}" for k in (
            "d", "eq", "eqf", "count", "has", "safe"))
        new = [
            helper.make_node("Abs", [mul.input[0]], [d]),
            helper.make_node("Equal", [d, zero.name], [eq]),
            helper.make_node("Cast", [eq], [eqf], to=to),
            helper.make_node("ReduceSum", [eqf, axis.name], [count], keepdims=1),
            helper.make_node("Greater", [count, zero.name], [has]),
            helper.make_node("Max", [d, tiny.name], [inv_in]),
            helper.make_node("Reciprocal", [inv_in], [f"{prefix}_inv"]),
            helper.make_node("Where", [has, eqf, f"{prefix}_inv"], [rec.output[0]]),
        ]
        at = min(i for i, n in enumerate(graph.node) if n is mul or n is mx or n is rec)
        keep = [n for n in graph.node if n is not mul and n is not mx and n is not rec]
        del graph.node[:]
        graph.node.extend(keep[:at] + new + keep[at:])
        graph.initializer.extend([zero, tiny, axis])
        producer = {o: n for n in graph.node for o in n.output}
        fixed += 1
    return fixed


# -- a graph fix: tree classifiers trained on one class --------------------------------------------
def fix_one_class_trees(proto: Any) -> int:
    """Make skl2onnx's one-class ``TreeEnsembleClassifier`` give the class and its probability.

    onnxruntime 1.32 answers such a node with the literal label 1 or 0 (the score's sign), not
    the class label, and aborts the process when the label is a string (it reads a second label
    that is not there). The node is replaced by the same trees as a one-target
    ``TreeEnsembleRegressor`` (the score, which is what onnxruntime writes as the probability:
    the leaf values summed, plus a single base value, PROBIT alone applied) and a label column
    gathered from the one class label. Returns how many nodes were replaced.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    fixed = 0
    for index, node in enumerate(list(graph.node)):
        if node.op_type != "TreeEnsembleClassifier" or node.domain != "ai.onnx.ml":
            continue
        attrs = {a.name: a for a in node.attribute}
        ints = list(attrs["classlabels_int64s"].ints) if "classlabels_int64s" in attrs else []
        strings = list(attrs["classlabels_strings"].strings) \
            if "classlabels_strings" in attrs else []
        if len(ints) + len(strings) != 1:
            continue
        base = attrs.get("base_values") or attrs.get("base_values_as_tensor")
        if base is not None and len(helper.get_attribute_value(base).floats
                                    if base.type == base.TENSOR else base.floats) > 1:
            continue
        kept = []
        for a in node.attribute:
            if a.name.startswith("classlabels_"):
                continue
            copy = helper.make_attribute("x", 0)
            copy.CopyFrom(a)
            if a.name.startswith("class_"):
                copy.name = "target_" + a.name[len("class_"):]
            kept.append(copy)
        prefix = f"{node.output[0]}_one_class"
        regressor = helper.make_node("TreeEnsembleRegressor", [node.input[0]],
                                     [node.output[1] if len(node.output) > 1 else
                                      f"{prefix}_scores"], domain="ai.onnx.ml",
                                     name=node.name or prefix)
        regressor.attribute.extend([*kept, helper.make_attribute("n_targets", 1)])
        label = numpy_helper.from_array(np.array(ints if ints else strings, dtype=np.int64
                                                 if ints else object), f"{prefix}_label")
        zero = helper.make_tensor(f"{prefix}_zero", TensorProto.INT64, [1], [0])
        new = [
            regressor,
            helper.make_node("Shape", [node.input[0]], [f"{prefix}_shape"]),
            helper.make_node("Slice", [f"{prefix}_shape", f"{prefix}_slice_start",
                                       f"{prefix}_slice_end"], [f"{prefix}_rows"]),
            helper.make_node("ConstantOfShape", [f"{prefix}_rows"], [f"{prefix}_index"],
                             value=zero),
            helper.make_node("Gather", [label.name, f"{prefix}_index"], [node.output[0]]),
        ]
        graph.initializer.extend([
            label,
            numpy_helper.from_array(np.array([0], np.int64), f"{prefix}_slice_start"),
            numpy_helper.from_array(np.array([1], np.int64), f"{prefix}_slice_end")])
        del graph.node[index + 4 * fixed]
        for k, n in enumerate(new):
            graph.node.insert(index + 4 * fixed + k, n)
        fixed += 1
    return fixed
