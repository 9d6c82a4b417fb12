"""Quickstart: a scikit-learn pipeline over a mixed DataFrame, to ONNX and back.

Run: python examples/quickstart_sklearn.py   (needs: pip install "onnxbridge[cpu,sklearn]")
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import onnxbridge


def main() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "age": rng.integers(18, 80, 300).astype(np.float64),
        "income": rng.lognormal(10, 0.5, 300),
        "city": rng.choice(["Lyon", "Oslo", "Porto"], 300),
    })
    target = (frame["age"] > 45) ^ (frame["city"] == "Oslo")
    model = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), ["age", "income"]),
                           ("cat", OneHotEncoder(), ["city"])]),
        RandomForestClassifier(n_estimators=20, max_depth=5, random_state=0),
    ).fit(frame, target)

    m = onnxbridge.to_onnx(model, frame[:50])       # one graph input per column
    print(m)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = onnxbridge.load(m.save(Path(tmp) / "pipeline.onnx"))
    labels, probabilities = loaded.run(frame[:5])   # the same DataFrame goes in
    print("labels:", labels, "\nprobabilities:\n", probabilities)
    assert (labels == model.predict(frame[:5])).all()


if __name__ == "__main__":
    main()
