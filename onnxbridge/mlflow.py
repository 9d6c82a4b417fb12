"""Log an OnnxModel to MLflow as an ``onnx`` flavour model, and load one back
(``pip install onnxbridge[mlflow]``).

The model's own metadata (provenance, parity report) travels inside the ONNX file, and is also
written to the MLflow model's ``metadata`` so that it shows in the MLflow UI and API without
opening the model.

Examples:
    >>> import mlflow, onnxbridge.mlflow                                    # doctest: +SKIP
    >>> with mlflow.start_run():                                            # doctest: +SKIP
    ...     info = onnxbridge.mlflow.log_model(m, "model")
    >>> m2 = onnxbridge.mlflow.load_model(info.model_uri)                   # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onnxbridge.model import OnnxModel

__all__ = ["load_model", "log_model", "mlflow_metadata", "save_model"]


def mlflow_metadata(m: OnnxModel) -> dict[str, Any]:
    """What goes into the MLflow model's ``metadata``: our provenance keys and the parity report."""
    meta = m.metadata
    out: dict[str, Any] = {
        "onnxbridge": {k.removeprefix("onnxbridge."): v for k, v in meta.items()
                       if k.startswith("onnxbridge.") and k != "onnxbridge.parity"},
    }
    parity = meta.get("onnxbridge.parity")
    if parity:
        out["onnxbridge_parity"] = json.loads(parity)
    return out


def _providers() -> list[str]:
    import onnxruntime

    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
            if p in onnxruntime.get_available_providers()]


def log_model(m: OnnxModel, name: str = "model", **kwargs: Any) -> Any:
    """``mlflow.onnx.log_model`` with our metadata and parity report; returns MLflow's ModelInfo.

    Extra keyword arguments go to ``mlflow.onnx.log_model`` (``registered_model_name=``,
    ``signature=``, ...). The active run is used, or MLflow starts one.
    """
    import mlflow.onnx

    metadata = {**mlflow_metadata(m), **kwargs.pop("metadata", {})}
    kwargs.setdefault("onnx_execution_providers", _providers())
    params = inspect.signature(mlflow.onnx.log_model).parameters
    where = {"name": name} if "name" in params else {"artifact_path": name}  # MLflow 3 / MLflow 2
    info = mlflow.onnx.log_model(m.proto, metadata=metadata, **where, **kwargs)
    summary = m.metadata.get("onnxbridge.parity_summary")
    if summary and mlflow.active_run() is not None:
        mlflow.set_tag(f"onnxbridge.parity.{name}", summary[:5000])
    return info


def save_model(m: OnnxModel, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """``mlflow.onnx.save_model`` to a local folder, with our metadata and parity report."""
    import mlflow.onnx

    metadata = {**mlflow_metadata(m), **kwargs.pop("metadata", {})}
    kwargs.setdefault("onnx_execution_providers", _providers())
    mlflow.onnx.save_model(m.proto, os.fspath(path), metadata=metadata, **kwargs)


def load_model(model_uri: str) -> OnnxModel:
    """An MLflow onnx-flavour model (``runs:/...``, ``models:/...``, a path) as an OnnxModel,
    with its parity report when onnxbridge converted it."""
    import mlflow.onnx

    import onnxbridge

    return onnxbridge.load(mlflow.onnx.load_model(model_uri))
