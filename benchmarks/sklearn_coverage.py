"""Which scikit-learn estimators onnxbridge converts, and whether the ONNX model matches.

Every estimator in sklearn.utils.all_estimators() that can be built (meta-estimators get a
small default inner estimator) and fitted on a small synthetic data set is converted with
``onnxbridge.to_onnx(est, X)`` and sorted into: converted and matching, converted but
mismatching (ParityError), or unsupported (the converter refused), with the reason.

    python benchmarks/sklearn_coverage.py --out docs/coverage.md
"""

from __future__ import annotations

import argparse
import inspect
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np


class _Timeout(Exception):
    pass


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def stop(signum: int, frame: Any) -> None:
        raise _Timeout(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _data() -> dict[str, np.ndarray]:
    from sklearn.datasets import make_classification

    X, y = make_classification(120, 4, n_informative=3, n_redundant=0, n_classes=3,
                               random_state=0)
    X = X - X.min(axis=0) + 0.1  # positive: some estimators (chi2, NB) need it
    yr = X @ np.array([1.0, -2.0, 0.5, 0.3]) + 0.1 * y
    return {"X": X, "y": y, "yr": yr,
            # what some estimators need instead (tried in turn when the first fails):
            "yb": (y > 0).astype(int),  # binary-only classifiers (thresholds)
            "yc2": np.column_stack([y, (y > 0).astype(int)]),  # multi-output classifiers
            "ypos": np.exp(yr / 4),  # Poisson / Gamma targets
            "y2": np.column_stack([yr, X[:, 0] - X[:, 1]])}  # multi-output regressors, CCA


# Feature selectors need an inner estimator with coef_ or feature_importances_.
_SELECTORS = {"SelectFromModel", "RFE", "RFECV", "SequentialFeatureSelector"}


def _frozen() -> dict[str, Any]:
    from sklearn.preprocessing import StandardScaler

    return {"estimator": StandardScaler().fit(_data()["X"])}


def _search(grid: str) -> Callable[[], dict[str, Any]]:
    def kwargs() -> dict[str, Any]:
        from sklearn.linear_model import LogisticRegression

        return {"estimator": LogisticRegression(max_iter=500), grid: {"C": [0.1, 1.0]}}

    return kwargs


def _self_training() -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    return {"estimator": LogisticRegression(max_iter=500)}


# Arguments some estimators need beyond their defaults to fit on this data.
_EXTRA: dict[str, Callable[[], dict[str, Any]]] = {
    "GaussianRandomProjection": lambda: {"n_components": 2},
    "SparseRandomProjection": lambda: {"n_components": 2},
    "FrozenEstimator": _frozen,
    "GridSearchCV": _search("param_grid"),
    "RandomizedSearchCV": _search("param_distributions"),
    "SelfTrainingClassifier": _self_training,
}


def _build(cls: type) -> Any:
    """An instance with defaults, filling required estimator arguments with small ones."""
    from sklearn.base import ClassifierMixin, RegressorMixin
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    if cls.__name__ in _EXTRA:
        kwargs.update(_EXTRA[cls.__name__]())
    if issubclass(cls, ClassifierMixin) or cls.__name__ in _SELECTORS:
        inner: Any = LogisticRegression(max_iter=500)
        pair = [("a", LogisticRegression(max_iter=500)), ("b", LogisticRegression(C=0.1))]
    elif issubclass(cls, RegressorMixin):
        inner = Ridge()
        pair = [("a", Ridge()), ("b", Ridge(alpha=10.0))]
    else:
        inner = StandardScaler()
        pair = [("a", StandardScaler()), ("b", StandardScaler(with_mean=False))]
    for name, p in params.items():
        if name in kwargs or p.default is not inspect.Parameter.empty or name == "self" \
                or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if name in {"estimator", "base_estimator"}:
            kwargs[name] = inner
        elif name in {"estimators", "transformer_list", "steps"}:
            kwargs[name] = pair
        elif name == "transformers":
            kwargs[name] = [("a", StandardScaler(), [0, 1]), ("b", "passthrough", [2, 3])]
        else:
            raise TypeError(f"needs the argument {name!r}")
    if "random_state" in params and "random_state" not in kwargs:
        kwargs["random_state"] = 0
    return cls(**kwargs)


def _fit(est: Any, data: dict[str, np.ndarray]) -> tuple[Any, np.ndarray]:
    """The fitted estimator and the features it was fitted on. Targets are tried in turn
    (multi-class, then binary or multi-output; a regression target, then a positive or a
    two-column one) until one fits."""
    from sklearn.base import ClassifierMixin, RegressorMixin

    X = data["X"]
    if type(est).__name__ == "IsotonicRegression":  # one feature
        return est.fit(X[:, :1], data["yr"]), X[:, :1]
    if isinstance(est, ClassifierMixin):
        targets = ["y", "yb", "yc2"]
    elif isinstance(est, RegressorMixin):
        targets = ["yr", "ypos", "y2"]
    else:
        try:
            return est.fit(X, data["y"]), X
        except TypeError:
            return est.fit(X), X
        except ValueError:
            targets = ["y2"]
    for i, key in enumerate(targets):
        try:
            return est.fit(X, data[key]), X
        except (ValueError, IndexError):
            if i == len(targets) - 1:
                raise
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    cause = exc.__cause__
    if "failed:" in line and cause is not None:
        line = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"
    return line.replace("|", "/")[:400]


def run() -> list[tuple[str, str, str]]:
    from sklearn.utils import all_estimators

    import onnxbridge

    data = _data()
    rows: list[tuple[str, str, str]] = []
    for name, cls in all_estimators():
        try:
            with _time_limit(240), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est, features = _fit(_build(cls), data)
        except Exception as exc:
            rows.append((name, "not fitted", f"{type(exc).__name__}: {_first_line(exc)}"))
            continue
        try:
            with _time_limit(420), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = onnxbridge.to_onnx(est, features[:40])
            note = "; ".join(m.parity.notes) if m.parity and m.parity.notes else ""
            rows.append((name, "matching", note[:160]))
        except onnxbridge.ParityError as exc:
            worst = exc.report.worst
            rows.append((name, "mismatching", worst.line()[:160] if worst else "parity failed"))
        except Exception as exc:
            rows.append((name, "unsupported", _first_line(exc)))
    return rows


def render(rows: list[tuple[str, str, str]], seconds: float) -> str:
    import skl2onnx
    import sklearn

    counts = {k: sum(1 for r in rows if r[1] == k)
              for k in ("matching", "mismatching", "unsupported", "not fitted")}
    tried = counts["matching"] + counts["mismatching"] + counts["unsupported"]
    lines = [
        "# scikit-learn coverage",
        "",
        f"Generated by `python benchmarks/sklearn_coverage.py --out docs/coverage.md` with"
        f" scikit-learn {sklearn.__version__} and skl2onnx {skl2onnx.__version__}"
        f" ({seconds:.0f} s).",
        "",
        f"Of {len(rows)} estimators in `sklearn.utils.all_estimators()`, {tried} could be"
        " fitted on a small synthetic data set (120 rows, 4 positive features, 3 classes; a"
        " binary, two-column or positive target where an estimator needs one):",
        "",
        f"- **converted and matching: {counts['matching']}**",
        f"- converted but mismatching: {counts['mismatching']}",
        f"- unsupported (the converter refused): {counts['unsupported']}",
        f"- not fitted on this data (needs arguments or other data): {counts['not fitted']}",
        "",
        "Each fitted estimator is converted with `onnxbridge.to_onnx(est, X[:40])`, which"
        " checks the ONNX model against the estimator on that sample (and on one row).",
        "",
        "| estimator | result | reason or note |",
        "|---|---|---|",
    ]
    order = {"matching": 0, "mismatching": 1, "unsupported": 2, "not fitted": 3}
    for name, status, reason in sorted(rows, key=lambda r: (order[r[1]], r[0])):
        lines.append(f"| {name} | {status} | {reason} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the markdown report here (default: print it)")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = run()
    text = render(rows, time.perf_counter() - start)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    print(text if not args.out else "\n".join(text.splitlines()[:14]))


if __name__ == "__main__":
    main()
