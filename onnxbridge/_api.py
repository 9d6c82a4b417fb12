"""The user's verbs: ``to_onnx`` (resolve -> convert -> wrap -> verify) and ``load``."""

from __future__ import annotations

import datetime
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from onnxbridge._version import __version__
from onnxbridge.errors import OnnxBridgeWarning, ParityError
from onnxbridge.model import OnnxModel, TensorSpec
from onnxbridge.registry import (
    ConversionResult,
    ConverterInfo,
    ConverterSpec,
    ConvertOptions,
    call_converter,
    default_registry,
)
from onnxbridge.verify import ParityReport, Tolerance, compare_outputs

__all__ = ["converters", "load", "register", "to_onnx"]


def to_onnx(
    model: Any,
    sample: Any,
    *,
    opset: int | None = None,
    dynamic_batch: bool = True,
    verify: bool | Literal["warn"] = True,
    converter: str | ConverterSpec | None = None,
    name: str | None = None,
    tolerance: Tolerance | None = None,
    **options: Any,
) -> OnnxModel:
    """Convert a trained model to ONNX and check it against the source model on ``sample``.

    ``sample`` is what you would pass the model to predict: a numpy array, a DataFrame, a
    tensor, a tuple of tensors or a dict of keyword tensors. ``verify=True`` raises ParityError
    when outputs differ beyond tolerance, ``"warn"`` warns instead, ``False`` skips the check.
    Converter-specific ``options`` are passed through (unknown ones are an error).

    Examples:
        >>> m = onnxbridge.to_onnx(LogisticRegression().fit(X, y), X[:5])   # doctest: +SKIP
        >>> m.parity.passed                                                  # doctest: +SKIP
        True
    """
    if verify not in (True, False, "warn"):
        raise ValueError(f"verify must be True, False or 'warn', got {verify!r}")
    registry = default_registry()
    spec = registry.resolve(model, converter)
    from onnxbridge.runtime import runtime_installed, runtime_support

    if opset is not None and (not isinstance(opset, int) or isinstance(opset, bool) or opset < 1):
        raise ValueError(f"opset must be a positive int or None, got {opset!r}")
    # The newest opset onnxruntime loads caps the converter's choice. Verifying needs onnxruntime
    # (a clear ProviderError here, before any conversion work); converting alone does not.
    need_runtime = verify is not False or runtime_installed()
    conv_options = ConvertOptions(
        opset=opset, dynamic_batch=dynamic_batch, name=name, options=dict(options),
        max_opset=runtime_support().opsets[""] if need_runtime else None,
    )
    result = call_converter(spec, model, sample, conv_options)
    if name:
        result.proto.graph.name = name
    m = OnnxModel(result.proto)
    _write_provenance(m, spec, result, model)
    if verify is not False:
        report = verify_conversion(m, result, sample, dynamic_batch, tolerance)
        m.parity = report
        m.set_metadata("onnxbridge.parity_summary", report.summary())
        m.set_metadata("onnxbridge.parity", report.to_json())
        if not report.verified:
            warnings.warn(
                f"{spec.name}: the model was converted but not verified ({report.reason})",
                OnnxBridgeWarning,
                stacklevel=2,
            )
        elif not report.passed:
            if verify == "warn":
                warnings.warn(f"parity check failed:\n{report}", OnnxBridgeWarning, stacklevel=2)
            else:
                raise ParityError(
                    report,
                    f"{spec.name}: the ONNX model does not reproduce the source model on the"
                    " sample. Pass verify='warn' to keep it anyway, or tolerance= to loosen.",
                )
    return m


def _write_provenance(
    m: OnnxModel, spec: ConverterSpec, result: ConversionResult, model: Any
) -> None:
    created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    import json

    def signature(specs: list[TensorSpec]) -> str:
        return json.dumps([
            {"name": s.name, "type": s.type, "shape": None if s.shape is None else list(s.shape)}
            for s in specs
        ])

    values = {
        "onnxbridge.version": __version__,
        "onnxbridge.converter": spec.name,
        "onnxbridge.framework": result.framework or spec.framework or "",
        "onnxbridge.framework_version": result.framework_version or "",
        "onnxbridge.created": created,
        "onnxbridge.opset": str(m.opset or ""),
        "onnxbridge.ir_version": str(m.ir_version),
        "onnxbridge.inputs": signature(m.inputs),
        "onnxbridge.outputs": signature(m.outputs),
    }
    classes = getattr(model, "classes_", None) if "label" in result.output_kinds.values() else None
    if classes is not None:  # a classifier's labels, so a reader knows what the probabilities mean
        try:
            values["onnxbridge.classes"] = json.dumps([c.item() if hasattr(c, "item") else c
                                                       for c in list(classes)])
        except (TypeError, ValueError):
            values["onnxbridge.classes"] = json.dumps([str(c) for c in list(classes)])
    values.update(result.metadata)
    for key, value in values.items():
        if value:
            m.set_metadata(key, str(value))


VERIFY_PROVIDER = "CPUExecutionProvider"


def _run_both(
    m: OnnxModel, result: ConversionResult, sample: Any
) -> tuple[Sequence[Any], Sequence[Any], int | None]:
    from onnxbridge.io import batch_size, to_feeds

    assert result.reference is not None
    expected = list(result.reference(sample))
    feeds = to_feeds(m.inputs, (sample,), {})
    # The CPU provider is onnxruntime's reference: the report is about the conversion, not about
    # a GPU's TF32 or fused kernels, and no TensorRT engine is built just to verify.
    actual = list(m.session(VERIFY_PROVIDER).run(None, feeds))
    return expected, actual, batch_size(feeds)


def verify_conversion(
    m: OnnxModel,
    result: ConversionResult,
    sample: Any,
    dynamic_batch: bool,
    tolerance: Tolerance | None,
) -> ParityReport:
    """Run source and ONNX model on the sample (and on a second batch size) and compare."""
    from onnxbridge.io import resize_batch

    if result.reference is None:
        return ParityReport(verified=False, reason="the converter gives no way to run the source model")
    report = ParityReport(notes=list(result.notes), provider=VERIFY_PROVIDER)
    samples = [sample]
    # Every input must have a symbolic first axis for a second batch size to make sense.
    batched = bool(m.inputs) and all(s.shape and not isinstance(s.shape[0], int) for s in m.inputs)
    if dynamic_batch and batched:
        # A batch-1 sample is checked at 3 as well (the axis must really be dynamic), others at 1.
        from onnxbridge.io import batch_size, to_feeds

        n = batch_size(to_feeds(m.inputs, (sample,), {}))
        other = resize_batch(sample, 3 if n == 1 else 1) if n is not None else None
        if other is not None:
            samples.append(other)
    samples += list(result.extra_samples)
    for s in samples:
        expected, actual, batch = _run_both(m, result, s)
        report.outputs += compare_outputs(
            m.output_names, expected, actual, kinds=result.output_kinds, batch=batch,
            tolerance=tolerance, converter_tolerances=result.tolerances,
        )
    return report


def load(
    source: Any,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    max_bytes: int | None = None,
    check_runtime: bool = True,
    sha256: str | Mapping[str, str] | None = None,
    trust: bool = False,
) -> OnnxModel:
    """Load an ONNX model from a path, bytes, a binary file object or an ``onnx.ModelProto``.

    An ``https://`` URL or ``hf://org/repo/file.onnx`` is downloaded to a local cache first: it
    needs ``sha256=`` (the file's hash, or a dict of file name -> hash covering external data
    files) unless ``trust=True`` (docs/guide-model-zoo.md).

    External weights are read from the model's folder (or ``base_dir`` for bytes and streams).
    With ``check_runtime`` (the default), a model whose IR version or opsets are newer than the
    installed onnxruntime supports raises LoadError naming both versions and the fix.

    Examples:
        >>> m = onnxbridge.load("model.onnx")   # doctest: +SKIP
    """
    if isinstance(source, str) and source.startswith(("https://", "http://", "hf://")):
        from onnxbridge._remote import load_remote

        return load_remote(source, sha256=sha256, trust=trust, max_bytes=max_bytes,
                           check_runtime=check_runtime)
    from onnxbridge._files import check_graph, load_proto
    from onnxbridge.runtime import check_compatible, runtime_installed

    proto, _folder = load_proto(source, base_dir=base_dir, max_bytes=max_bytes)
    label = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    what = f"model {label!r}" if label else "this model"
    if check_runtime and runtime_installed():  # without onnxruntime, run() says what to install
        check_compatible(proto, what)
    check_graph(proto, what, source)
    return OnnxModel(proto, source=label)


def register(spec: ConverterSpec, *, replace: bool = False) -> ConverterSpec:
    """Register a converter in this process (for notebooks and tests); returns it."""
    return default_registry().register(spec, replace=replace)


def converters() -> list[ConverterInfo]:
    """Every converter known (with its package) and every plugin that failed to load."""
    return default_registry().converters()
