"""Small models and rows shared by the Spark, Ray and Dask tests (tests/test_scale_*.py)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

import onnxbridge
from onnxbridge import OnnxModel


def rows(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Three float features with a few NaN, plus a string id column that the models do not use."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "e"])
    frame.loc[frame.index[::7], "b"] = np.nan
    frame["id"] = [f"row{i}" for i in range(n)]
    return frame


@functools.cache  # one conversion per test process; the tests only read the model
def classifier() -> OnnxModel:
    """Imputer + logistic regression with string labels, converted from a numeric frame: one
    matrix input whose columns (a, b, e) are recorded; outputs a string `label` [N] and float
    `probabilities` [N, 3]."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train = rows(300, seed=1)
    x = train[["a", "b", "e"]]
    y = np.where(x["a"] > 0.5, "high", np.where(x["a"] < -0.5, "low", "mid"))
    model = make_pipeline(SimpleImputer(), LogisticRegression()).fit(x, y)
    return onnxbridge.to_onnx(model, x[:5])


@functools.cache
def regressor() -> OnnxModel:
    """A small LightGBM regressor (it takes NaN natively) with one matrix input X [N, 3]."""
    import lightgbm

    train = rows(300, seed=2)
    x = train[["a", "b", "e"]].to_numpy(np.float32)
    y = np.nan_to_num(x[:, 0]) * 2 + np.nan_to_num(x[:, 1])
    model = lightgbm.LGBMRegressor(n_estimators=20, num_leaves=7, verbose=-1).fit(x, y)
    return onnxbridge.to_onnx(model, x[:5])
