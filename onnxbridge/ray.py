"""Score a Ray Dataset with an OnnxModel (``pip install onnxbridge[ray]``).

``OnnxPredictor`` is a callable class for ``Dataset.map_batches``: Ray builds one per actor, and
each loads the model and builds its onnxruntime session once, in its constructor. ``predict`` puts
the model in Ray's object store once and starts the actors, with a GPU each when onnxruntime has
CUDA here and the cluster has GPUs.

Examples:
    >>> import onnxbridge, onnxbridge.ray, ray                                  # doctest: +SKIP
    >>> scored = onnxbridge.ray.predict(ray.data.read_parquet("rows/"), m)      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from onnxbridge import _scale

if TYPE_CHECKING:
    import ray.data

__all__ = ["OnnxPredictor", "cuda_available", "predict"]


class OnnxPredictor:
    """Scores one batch (a ``pyarrow.Table`` or a pandas DataFrame) and returns it with the model's
    outputs appended. ``model`` is an OnnxModel, a path, model bytes, or a Ray ObjectRef to them.

    Examples:
        >>> ds.map_batches(OnnxPredictor, fn_constructor_kwargs={"model": "m.onnx"},
        ...                batch_format="pyarrow", concurrency=2)        # doctest: +SKIP
    """

    def __init__(
        self, model: Any, *, columns: Sequence[str] | None = None,
        outputs: Sequence[str] | None = None, prefix: str = "", providers: Any = None,
        ship: _scale.Ship = "auto", keep_columns: bool = True,
    ) -> None:
        import ray

        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        payload = _scale.make_payload(model, ship)
        self.providers = providers
        self.model = _scale.worker_model(payload, providers)  # once per actor, not per batch
        self.columns = _scale.input_columns(self.model, columns)
        self.outputs = _scale.output_columns(self.model, outputs, prefix)
        self.keep = keep_columns

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        if isinstance(batch, (pa.Table, pa.RecordBatch)):
            if self.keep:
                _scale.check_no_clash(batch.schema.names, self.outputs)
            return _scale.score_arrow(self.model, batch, self.columns, self.outputs, self.providers,
                                      self.keep)
        from onnxbridge.io import is_dataframe

        if not is_dataframe(batch):
            raise TypeError(
                f"OnnxPredictor takes pyarrow or pandas batches, got {type(batch).__name__};"
                " call map_batches with batch_format='pyarrow' (or 'pandas')"
            )
        if self.keep:
            _scale.check_no_clash([str(c) for c in batch.columns], self.outputs)
        scores = _scale.score_pandas(self.model, batch, self.columns, self.outputs, self.providers)
        out = batch.copy() if self.keep else batch.iloc[:, :0].copy()
        for o in self.outputs:
            out[o.column] = _scale.to_pandas_column(o, scores[o.column])
        return out


def cuda_available() -> bool:
    """onnxruntime here has the CUDA provider and the Ray cluster has at least one GPU."""
    import ray

    try:
        import onnxruntime
    except ImportError:
        return False
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return False
    return bool(ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0)


def predict(
    ds: ray.data.Dataset, model: Any, *, columns: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None, prefix: str = "", concurrency: int = 2,
    batch_size: int | None = 4096, num_cpus: float | None = None, num_gpus: float | None = None,
    providers: Any = None,
    ship: _scale.Ship = "auto", keep_columns: bool = True,
) -> ray.data.Dataset:
    """``ds`` with the model's outputs appended (lazy, like any Dataset transformation).

    The model goes to Ray's object store once (bytes, or its path above 2 GB or with
    ``ship="path"``), and ``concurrency`` actors each load it once. ``num_gpus=None`` gives each
    actor one GPU and runs the model on CUDA when onnxruntime has CUDA and the cluster has GPUs;
    ``num_gpus=0`` keeps to the CPU. ``num_cpus`` is each actor's CPU reservation (Ray's default
    is 1: leave CPUs for the tasks that read the data, or the actors wait on them forever).
    """
    import ray

    payload = _scale.make_payload(model, ship)
    if num_gpus is None:
        num_gpus = 1 if cuda_available() else 0
    if num_gpus and providers is None:
        providers = "cuda,cpu"
    ref = ray.put(payload)
    kwargs: dict[str, Any] = {
        "model": ref, "columns": columns, "outputs": outputs, "prefix": prefix,
        "providers": providers, "keep_columns": keep_columns,
    }
    resources: dict[str, Any] = {}
    if num_cpus is not None:
        resources["num_cpus"] = num_cpus
    if num_gpus:
        resources["num_gpus"] = num_gpus
    return ds.map_batches(
        OnnxPredictor, fn_constructor_kwargs=kwargs, batch_format="pyarrow", batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=concurrency), **resources,
    )
