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

__all__ = ["register_own_converters", "OWN_CONVERTERS"]


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
AFFINE = ("FactorAnalysis", "FastICA", "SparsePCA", "MiniBatchSparsePCA", "FeatureAgglomeration")


def _affine(scope: Any, operator: Any, container: Any) -> None:
    est = operator.raw_operator
    n = int(est.n_features_in_)
    # one batch of n + 2 rows (SparsePCA gives a 1-D result for a single row)
    probe = np.asarray(est.transform(np.vstack([np.eye(n), np.zeros((2, n))])),
                       dtype=np.float64)
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
    for attr in ("constant_", "dual_coef_"):
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
    width = int(np.asarray(est.transform(np.zeros((2, est.n_features_in_)))).shape[1])
    cls = DoubleTensorType if isinstance(operator.inputs[0].type, DoubleTensorType) \
        else FloatTensorType
    operator.outputs[0].type = cls([n, width])


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


def _one_output_parser(scope: Any, model: Any, inputs: Any, custom_parsers: Any = None) -> Any:
    """Declare a single ``variable`` output (FeatureAgglomeration is a ClusterMixin, which
    skl2onnx would give a label and scores, but it only transforms)."""
    from skl2onnx._supported_operators import _get_sklearn_operator_name
    from skl2onnx.common.data_types import FloatTensorType

    operator = scope.declare_local_operator(_get_sklearn_operator_name(type(model)), model)
    operator.inputs = inputs
    operator.outputs.append(scope.declare_local_variable("variable", FloatTensorType()))
    return operator.outputs


def register_own_converters() -> None:
    """Register (or re-register) onnxbridge's converters with skl2onnx."""
    import importlib

    from skl2onnx import update_registered_converter
    from skl2onnx.common._registration import get_converter, get_shape_calculator
    from sklearn.impute import SimpleImputer

    original = get_converter("SklearnSimpleImputer")
    if not getattr(getattr(original, "_fct", original), "_onnxbridge", False):
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
            update_registered_converter(cls, alias, _classifier_shapes, fct, options=options)
        else:
            shapes = {"transform": _transform_shapes, "vector": _vector_shapes,
                      "label_scores": _label_scores_shapes,
                      "indicator": _indicator_shapes,
                      "selector": _selector_shapes}.get(kind, _regressor_shapes)
            parser = _one_output_parser if cls_name == "FeatureAgglomeration" else None
            update_registered_converter(cls, alias, shapes, fct, parser=parser)
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
