"""onnxbridge.mlflow against a local MLflow file store (started by the test, no server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("mlflow.onnx")


pytestmark = pytest.mark.slow  # importing MLflow and logging a model takes several seconds


def test_log_and_load_back_with_parity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.linear_model import LogisticRegression

    import onnxbridge.mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    model = LogisticRegression().fit(x, x[:, 0] > 0)
    m = onnxbridge.to_onnx(model, x[:5])
    with mlflow.start_run() as run:
        info = onnxbridge.mlflow.log_model(m, "clf")
    meta = mlflow.models.get_model_info(info.model_uri).metadata
    assert meta["onnxbridge"]["framework"] == "scikit-learn"
    assert meta["onnxbridge_parity"]["passed"] is True
    tags = mlflow.get_run(run.info.run_id).data.tags
    assert tags["onnxbridge.parity.clf"].startswith("passed")
    back = onnxbridge.mlflow.load_model(info.model_uri)
    assert back.parity is not None and back.parity.passed
    label, proba = back.run(x)
    np.testing.assert_array_equal(label, model.predict(x))
    np.testing.assert_allclose(proba, model.predict_proba(x), atol=1e-5)
    # MLflow's own pyfunc loader reads the same model.
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    out = pyfunc.predict({"X": x})
    np.testing.assert_array_equal(np.asarray(out["label"]).reshape(-1), model.predict(x))
