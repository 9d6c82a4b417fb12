"""Tabular models: onnxbridge (onnxruntime) against each library's own predict, side by side.

For every model it measures, in one run and on the same machine:

- inference at batch 1 and batch 10,000: ``m.run(X)`` against native ``predict_proba``
  (``predict`` for regressors), as median wall times and their ratio (< 1: ONNX is faster);
- conversion: ``onnxbridge.to_onnx`` (convert + verify) against calling skl2onnx,
  onnxmltools or CatBoost's export directly.

    python benchmarks/bench_tabular.py --quick --out bench.md
"""

from __future__ import annotations

import argparse
import platform
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import median_seconds, report


def _direct_sklearn(model: Any, X: np.ndarray) -> Any:
    from skl2onnx import to_onnx

    return to_onnx(model, X[:1].astype(np.float32), options={"zipmap": False})


def _direct_xgboost(model: Any, X: np.ndarray) -> Any:
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    return convert_xgboost(model, initial_types=[("X", FloatTensorType([None, X.shape[1]]))])


def _direct_lightgbm(model: Any, X: np.ndarray) -> Any:
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    return convert_lightgbm(model, initial_types=[("X", FloatTensorType([None, X.shape[1]]))],
                            zipmap=False)


def _direct_catboost(model: Any, X: np.ndarray) -> Any:
    from catboost.utils import convert_to_onnx_object

    return convert_to_onnx_object(model)


def _models(quick: bool) -> list[tuple[str, Callable[[], Any], Callable[..., Any]]]:
    import catboost
    import lightgbm
    import xgboost
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    threads = {"n_jobs": 2}
    return [
        ("LogisticRegression", lambda: LogisticRegression(max_iter=1000), _direct_sklearn),
        ("RandomForest (100 trees)",
         lambda: RandomForestClassifier(100, max_depth=10, random_state=0, **threads),
         _direct_sklearn),
        ("HistGradientBoosting (100 iter)",
         lambda: HistGradientBoostingClassifier(max_iter=100, random_state=0), _direct_sklearn),
        ("XGBoost (100 trees)",
         lambda: xgboost.XGBClassifier(n_estimators=100, max_depth=6, **threads),
         _direct_xgboost),
        ("XGBoost (1,000 trees)",
         lambda: xgboost.XGBClassifier(n_estimators=1000, max_depth=6, **threads),
         _direct_xgboost),
        ("LightGBM (500 trees)",
         lambda: lightgbm.LGBMClassifier(n_estimators=500, verbose=-1, **threads),
         _direct_lightgbm),
        ("CatBoost (500 trees)",
         lambda: catboost.CatBoostClassifier(iterations=500, depth=6, verbose=0,
                                             thread_count=2),
         _direct_catboost),
    ]


def run(quick: bool) -> str:
    from sklearn.datasets import make_classification

    import onnxbridge

    n_train = 2000 if quick else 20000
    X, y = make_classification(n_train + 10000, 20, n_informative=10, random_state=0)
    X_train, y_train, X_test = X[:n_train], y[:n_train], X[n_train:]
    repeats_1 = 30 if quick else 300
    repeats_big = 2 if quick else 7
    rows = []
    conv_rows = []
    for name, make, direct in _models(quick):
        model = make().fit(X_train, y_train)
        conv_repeats = 1 if quick else 3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Untimed first: one-time costs (imports, onnxruntime's limits, session set-up code)
            # must not be charged to whichever converter happens to run first.
            m = onnxbridge.to_onnx(model, X_test[:200])
            try:
                t_direct: float | None = median_seconds(
                    lambda d=direct, mo=model: d(mo, X_test), conv_repeats)
            except Exception:  # skl2onnx alone fails on HistGradientBoosting with onnx >= 1.17
                t_direct = None
            t_bridge = median_seconds(
                lambda mo=model: onnxbridge.to_onnx(mo, X_test[:200]), conv_repeats)
        conv_rows.append((name, t_bridge, t_direct, m.parity.summary() if m.parity else ""))
        session = m.session()
        feeds_names = m.input_names
        dtype = m.inputs[0].dtype
        for batch in (1, 10000):
            x = X_test[:batch]
            feed = {feeds_names[0]: x.astype(dtype)}
            reps = repeats_1 if batch == 1 else repeats_big
            native = median_seconds(lambda x=x, model=model: model.predict_proba(x), reps)
            via_run = median_seconds(lambda x=x, m=m: m.run(x), reps)
            raw = median_seconds(lambda feed=feed, s=session: s.run(None, feed), reps)
            rows.append((name, batch, native, via_run, raw))
    return _render(rows, conv_rows, quick)


def _ms(t: float) -> str:
    return f"{t * 1000:.3f}" if t < 0.01 else f"{t * 1000:.1f}"


def _render(rows: list[tuple[Any, ...]], conv_rows: list[tuple[Any, ...]], quick: bool) -> str:
    import onnxruntime

    lines = [
        "### Tabular models: scikit-learn, XGBoost, LightGBM, CatBoost",
        "",
        f"Machine: {platform.processor() or platform.machine()}, onnxruntime"
        f" {onnxruntime.__version__}, CPUExecutionProvider, {'--quick' if quick else 'full'} run.",
        "",
        "Inference (median wall time in ms; ratio = onnxbridge / native, < 1 is faster):",
        "",
        "| model | batch | native predict_proba | onnxbridge m.run | ratio |"
        " ORT session.run | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, batch, native, via_run, raw in rows:
        lines.append(f"| {name} | {batch:,} | {_ms(native)} | {_ms(via_run)} |"
                     f" {via_run / native:.3g} | {_ms(raw)} | {raw / native:.3g} |")
    lines += [
        "",
        "Conversion (seconds, median after one untimed call; onnxbridge includes verification"
        " on 200 rows and 1 row):",
        "",
        "| model | onnxbridge.to_onnx | direct converter | ratio | parity |",
        "|---|---:|---:|---:|---|",
    ]
    for name, t_bridge, t_direct, parity in conv_rows:
        if t_direct is None:
            lines.append(f"| {name} | {t_bridge:.3g} | fails | - | {parity} |")
        else:
            lines.append(f"| {name} | {t_bridge:.3g} | {t_direct:.3g} |"
                         f" {t_bridge / t_direct:.1f} | {parity} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small training set and few repeats (a minute or two)")
    parser.add_argument("--out", help="also write the markdown tables to this file")
    args = parser.parse_args()
    report(run(args.quick), args.out)


if __name__ == "__main__":
    main()
