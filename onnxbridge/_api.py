"""The user's verbs: ``to_onnx`` (resolve -> convert -> wrap -> verify) and ``load``."""

from __future__ import annotations

import contextlib
import datetime
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from onnxbridge._version import __version__
from onnxbridge.errors import (
    ConversionError,
    ConverterNotFoundError,
    LoadError,
    OnnxBridgeWarning,
    ParityError,
)
from onnxbridge.model import OnnxModel, TensorSpec
from onnxbridge.registry import (
    ConversionResult,
    ConverterInfo,
    ConverterSpec,
    ConvertOptions,
    call_converter,
    default_registry,
)
from onnxbridge.verify import OutputParity, ParityReport, Tolerance, compare_outputs

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
    _check_model_and_sample(model, sample)
    registry = default_registry()
    try:
        spec = registry.resolve(model, converter)
    except ConverterNotFoundError as exc:
        _refuse_path_as_model(model, exc)
        raise
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
    model_class = getattr(result, "model_class", None) or OnnxModel
    m = model_class(result.proto, data_dir=result.data_dir, data_owner=result.data_owner)
    _write_provenance(m, spec, result, model)
    if verify is not False:
        try:
            report = verify_conversion(m, result, sample, dynamic_batch, tolerance)
        except LoadError as exc:
            raise _bfloat16_hint(m, spec.name, exc) or exc from exc
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
                    f"{spec.name}: the ONNX model does not reproduce the source model (see"
                    " which check below). Pass verify='warn' to keep it anyway, or tolerance="
                    " to loosen.",
                )
    return m


def _bfloat16_hint(m: OnnxModel, converter: str, exc: Exception) -> ConversionError | None:
    """A clear error when onnxruntime's CPU provider lacks a bfloat16 kernel the model needs."""
    from onnx import TensorProto

    from onnxbridge._files import iter_tensors

    text = str(exc)
    if "NOT_IMPLEMENTED" not in text or not any(
            t.data_type == TensorProto.BFLOAT16 for t in iter_tensors(m.proto)):
        return None
    return ConversionError(
        f"{converter}: the model has bfloat16 weights, and onnxruntime's CPU provider has no"
        f" bfloat16 kernel for one of its operators, so it cannot be verified here"
        f" ({' '.join(text.split())[:300]}). Pass dtype='float32' (or dtype='float16') to"
        " to_onnx to export the weights in a dtype the CPU runs, or verify=False to keep the"
        " bfloat16 model for a provider that runs it (CUDA).",
        converter=converter,
    )
_DATA_SUFFIXES = (".npy", ".npz", ".csv", ".parquet", ".pt", ".pth", ".json", ".txt")


def _check_model_and_sample(model: Any, sample: Any) -> None:
    """Mistakes a first conversion makes, said before any converter sees them."""
    from onnxbridge.errors import ConverterNotFoundError, InputError

    if isinstance(model, OnnxModel) or (type(model).__name__ == "ModelProto"
                                        and type(model).__module__.startswith("onnx")):
        raise ConverterNotFoundError(
            f"the model is already an ONNX model ({type(model).__name__}): there is nothing to"
            " convert. Run it with m.run(x), save it with m.save(path); an onnx.ModelProto or an"
            " .onnx file becomes an OnnxModel with onnxbridge.load(...)"
        )
    if sample is None:
        raise InputError(
            "to_onnx needs a sample: a few rows of what you would pass the model to predict"
            " (X[:20], a tensor, a DataFrame); it fixes the input signature and is used to"
            " verify the conversion"
        )
    if isinstance(sample, os.PathLike) or (
        isinstance(sample, str) and (sample.lower().endswith(_DATA_SUFFIXES)
                                     or os.path.isfile(sample))
    ):
        path = os.fspath(sample)
        raise InputError(
            f"the sample is a file path ({path!r}); to_onnx needs the data itself: read it first"
            " (np.load(path), pd.read_csv(path), torch.load(path)). The command line reads files:"
            " onnxbridge convert MODEL --sample x.npy -o model.onnx"
        )


def _refuse_path_as_model(model: Any, exc: Exception) -> None:
    """No converter takes a string: a file name given as the model gets the way to convert it."""
    if isinstance(model, (str, bytes, os.PathLike)):
        shown = os.fspath(model) if isinstance(model, os.PathLike) else model
        from pathlib import Path

        from onnxbridge._sources import is_saved_model

        if not isinstance(shown, bytes) and is_saved_model(Path(shown)):
            raise ConverterNotFoundError(
                f"the model is the path of a TensorFlow SavedModel folder ({shown!r:.80}): load"
                " it first with tf.saved_model.load(path) (it restores the model's graph"
                " functions: only folders you trust) and pass what it returns, or convert it"
                " from the command line: onnxbridge convert FOLDER --trust --sample x.npy"
                " -o model.onnx"
            ) from exc
        raise ConverterNotFoundError(
            f"the model is a {type(model).__name__} ({shown!r:.80}), not a trained model object:"
            " load it with its framework first (joblib.load, torch.jit.load, xgboost.Booster(...)),"
            " or convert the file from the command line: onnxbridge convert FILE --sample x.npy"
            " -o model.onnx; an .onnx file is read with onnxbridge.load(path)"
        ) from exc


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


def _verify_session(m: OnnxModel, result: ConversionResult | None = None) -> Any:
    """The session verification runs on: the model's own CPU session; for a model whose weights
    are in external files, a one-off session (verify.lending_session: the source's own tensors
    lent to onnxruntime where the converter names them, no prepacked copies), dropped after."""
    if m.data_dir is None:
        return m.session(VERIFY_PROVIDER)
    from onnxbridge.verify import lending_session

    return lending_session(m.proto, m.data_dir, getattr(result, "shared_weights", None) or {},
                           VERIFY_PROVIDER)


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, type)


def _feeds_sample(sample: Any) -> Any:
    """The sample with nested tuples/lists of arrays flattened, one ONNX input per array.

    ``(x, (h0, c0))`` becomes ``(x, h0, c0)``, ``{"x": x, "hx": (h, c)}`` becomes
    ``{"x": x, "hx_0": h, "hx_1": c}`` and a list of arrays a tuple; anything else is unchanged.
    """

    if type(sample).__module__.startswith("torch") and str(getattr(sample, "dtype", "")) \
            == "torch.bfloat16":
        return sample.float()  # numpy has no bfloat16; the ONNX input is cast from float32
    if isinstance(sample, dict) and any(str(getattr(v, "dtype", "")) == "torch.bfloat16"
                                        for v in sample.values()):
        sample = {k: v.float() if str(getattr(v, "dtype", "")) == "torch.bfloat16" else v
                  for k, v in sample.items()}
    if isinstance(sample, tuple) and any(str(getattr(v, "dtype", "")) == "torch.bfloat16"
                                         for v in sample):
        sample = tuple(v.float() if str(getattr(v, "dtype", "")) == "torch.bfloat16" else v
                       for v in sample)

    def nested(value: Any) -> bool:
        return isinstance(value, (tuple, list)) and bool(value) and all(
            _is_array(v) or nested(v) for v in value)

    def leaves(value: Any, name: str, out: dict[str, Any]) -> None:
        if isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                leaves(item, f"{name}_{i}", out)
        else:
            out[name] = value

    if isinstance(sample, dict) and any(nested(v) for v in sample.values()):
        out: dict[str, Any] = {}
        for key, value in sample.items():
            leaves(value, str(key), out)
        return out
    if isinstance(sample, (tuple, list)) and nested(sample) and (
            isinstance(sample, list) or any(isinstance(v, (tuple, list)) for v in sample)):
        flat: dict[str, Any] = {}
        leaves(sample, "", flat)
        values = tuple(flat.values())
        return values[0] if len(values) == 1 else values
    return sample


class _RunFailure(Exception):
    """The ONNX model (or the source model) failed on one of the verification samples."""


def _sizes(feeds: Any) -> str:
    return ", ".join(f"{k} {list(getattr(v, 'shape', ()))}" for k, v in feeds.items())


_ORT_CAUSES = (
    ("re-use buffer", "two inputs share a symbolic axis name but have different sizes here"),
    ("dim_param", "two inputs share a symbolic axis name but have different sizes here"),
    ("Got invalid dimensions", "an axis is fixed in the ONNX model; make it dynamic with"
     " dynamic_axes={input: {axis: name}}"),
    ("cannot be reshaped", "the exporter baked a size of the export sample into a Reshape; the"
     " axis is not really dynamic (dynamic_axes={input: {axis: None}} fixes it)"),
    ("Could not find an implementation", "onnxruntime's CPU provider has no kernel for an"
     " operator at this dtype (bfloat16 has almost none): export the compute in float32"
     " (model.float(), or to_onnx(..., compute_dtype='float32') for PyTorch)"),
    ("NOT_IMPLEMENTED", "onnxruntime's CPU provider has no kernel for an operator at this"
     " dtype (bfloat16 has almost none): export the compute in float32 (model.float(), or"
     " to_onnx(..., compute_dtype='float32') for PyTorch)"),
    ("Broadcast", "a size of the export sample was baked into the graph"),
)


def _explain_ort(text: str) -> str:
    for key, cause in _ORT_CAUSES:
        if key in text:
            return cause
    return "the graph cannot run at these sizes or values"


def _clean(exc: BaseException, limit: int = 400) -> str:
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def _run_both(
    m: OnnxModel, result: ConversionResult, sample: Any, what: str = "the sample",
    session: Any = None,
) -> tuple[Sequence[Any], Sequence[Any], int | None]:
    """The source's and the ONNX model's outputs on ``sample``; _RunFailure when one fails."""
    from onnxbridge.io import batch_size, to_feeds

    assert result.reference is not None
    try:
        feeds = to_feeds(m.inputs, (_feeds_sample(sample),), {})
    except Exception as exc:
        raise _RunFailure(f"{what} does not fit the ONNX model's inputs: {_clean(exc)}") from exc
    chosen = "" if what == "the sample" else " (a size or values onnxbridge chose to check the" \
        " model with; the sample itself passed)"
    try:
        expected = list(result.reference(sample))
    except Exception as exc:
        raise _RunFailure(f"the source model failed on {what}{chosen}, inputs {_sizes(feeds)}:"
                          f" {type(exc).__name__}: {_clean(exc)}") from exc
    # The CPU provider is onnxruntime's reference: the report is about the conversion, not about
    # a GPU's TF32 or fused kernels, and no TensorRT engine is built just to verify.
    try:
        session = session if session is not None else m.session(VERIFY_PROVIDER)
        actual = list(session.run(None, feeds))
    except Exception as exc:
        text = _clean(exc)
        raise _RunFailure(
            f"onnxruntime failed to run the ONNX model on {what}{chosen}, inputs"
            f" {_sizes(feeds)}; likely cause: {_explain_ort(str(exc))}."
            f" onnxruntime said: {type(exc).__name__}: {text}") from exc
    batch = None
    for spec in m.inputs:  # the size of the axis named batch, wherever it is
        for axis, dim in enumerate(spec.shape or ()):
            if dim == "batch" and spec.name in feeds and batch is None:
                batch = int(feeds[spec.name].shape[axis])
    return expected, actual, batch if batch is not None else batch_size(feeds)


def _fresh_samples(sample: Any, seed: int = 0) -> list[tuple[str, Any]]:
    """Samples with the sample's shapes and dtypes but other values.

    Random values within each array's range (per column for a table; whole numbers for a column
    of whole numbers), other valid ids for an
    integer input with more than two values (token ids: within the sample's smallest and largest;
    0/1 masks and booleans stay), and a permutation of the sample's rows (the only fresh sample of
    a DataFrame). Empty when none can be made.
    """
    import numpy as np

    from onnxbridge.io import is_dataframe, is_torch_tensor

    rng = np.random.default_rng(seed)

    def fresh_array(a: np.ndarray) -> np.ndarray:
        if a.size < 2 or a.dtype.kind not in "iuf":
            return a
        if a.dtype.kind == "f":
            finite = np.where(np.isfinite(a), a, np.nan)
            if a.ndim == 2 and a.shape[0] > 1:
                low, high = np.nanmin(finite, axis=0), np.nanmax(finite, axis=0)
            else:
                low, high = np.nanmin(finite), np.nanmax(finite)
            low, high = np.nan_to_num(low), np.nan_to_num(high)
            out = rng.uniform(low, high, size=a.shape)
            # A column of whole numbers (category codes, counts) gets whole numbers.
            whole = np.nan_to_num(finite) == np.round(np.nan_to_num(finite))
            whole = whole.all(axis=0) if a.ndim == 2 and a.shape[0] > 1 else whole.all()
            out = np.where(whole, np.round(out), out).astype(a.dtype)
            return np.where(np.isfinite(a), out, a)
        values = np.unique(a)
        if values.size <= 2:
            return a
        return rng.integers(int(values[0]), int(values[-1]) + 1, size=a.shape).astype(a.dtype)

    def fresh(value: Any, name: str) -> Any:
        if isinstance(value, np.ndarray):
            return value if "mask" in name else fresh_array(value)
        if is_torch_tensor(value):
            import torch

            if "mask" in name or value.dtype == torch.bool or value.is_complex():
                return value
            base = value.detach().cpu()
            as_np = (base.float() if base.dtype == torch.bfloat16 else base).numpy()
            return torch.as_tensor(fresh_array(as_np)).to(dtype=value.dtype, device=value.device)
        if isinstance(value, dict):
            return {k: fresh(v, str(k)) for k, v in value.items()}
        if isinstance(value, (tuple, list)) and all(
                _is_array(v) or isinstance(v, (tuple, list, dict)) for v in value):
            items = [fresh(v, name) for v in value]
            return items if isinstance(value, list) else tuple(items)
        return value

    def rows(value: Any, order: Any) -> Any:
        if is_dataframe(value):
            return value.iloc[order].reset_index(drop=True) if len(value) == len(order) else value
        if _is_array(value) and getattr(value, "ndim", 0) > 0 and value.shape[0] == len(order):
            return value[order] if isinstance(value, np.ndarray) else value[order.tolist()]
        if isinstance(value, dict):
            return {k: rows(v, order) for k, v in value.items()}
        if isinstance(value, (tuple, list)):
            items = [rows(v, order) for v in value]
            return items if isinstance(value, list) else tuple(items)
        return value

    def first_rows(value: Any) -> int | None:
        if is_dataframe(value):
            return len(value)
        if _is_array(value):
            return int(value.shape[0]) if getattr(value, "ndim", 0) > 0 else None
        items = value.values() if isinstance(value, dict) else \
            value if isinstance(value, (tuple, list)) else []
        for item in items:
            n = first_rows(item)
            if n is not None:
                return n
        return None

    out: list[tuple[str, Any]] = []
    if not is_dataframe(sample):
        with contextlib.suppress(Exception):  # a kind of sample this cannot vary
            out.append(("fresh values (random within the sample's range, other valid ids)",
                        fresh(sample, "")))
    n = first_rows(sample)
    if n is not None and n > 1:
        order = rng.permutation(n)
        if (order == np.arange(n)).all():
            order = np.roll(order, 1)
        out.append(("a permutation of the sample's rows", rows(sample, order)))
    return out


def _failed(names: Sequence[str], problem: str, batch: int | None = None) -> list[OutputParity]:
    return [OutputParity(
        name=", ".join(names) if names else "(model)", kind="value", batch=batch, shape=(),
        dtype="?", max_abs=None, max_rel=None, atol=0.0, rtol=0.0, tolerance_reason="",
        worst_row=None, label_agreement=None, passed=False, problem=problem)]


def verify_conversion(
    m: OnnxModel,
    result: ConversionResult,
    sample: Any,
    dynamic_batch: bool,
    tolerance: Tolerance | None,
) -> ParityReport:
    """Run source and ONNX model on the sample, a second size and fresh values; compare.

    A run that fails (onnxruntime or the source model) becomes a failing line naming the
    outputs, the input sizes tried and the likely cause; a second-size check that cannot run
    is a note and a warning, never a silent pass.
    """
    from onnxbridge.io import resize_batch

    if result.reference is None:
        return ParityReport(verified=False, reason="the converter gives no way to run the source model")
    report = ParityReport(notes=list(result.notes), provider=VERIFY_PROVIDER)
    for problem in getattr(result, "problems", ()):
        report.outputs += _failed(["(conversion)"], problem)
    custom = getattr(result, "verify_samples", None)
    samples: list[tuple[str, Any]] = list(custom) if custom else [("the sample", sample)]
    # Every input must have a symbolic first axis for a second batch size to make sense.
    batched = bool(m.inputs) and all(s.shape and not isinstance(s.shape[0], int) for s in m.inputs)
    if dynamic_batch and batched and not custom:
        # A batch-1 sample is checked at 3 as well (the axis must really be dynamic), others at 1.
        from onnxbridge.io import batch_size, to_feeds

        try:
            n = batch_size(to_feeds(m.inputs, (_feeds_sample(sample),), {}))
        except Exception:
            n = None
        other = resize_batch(sample, 3 if n == 1 else 1) if n is not None else None
        if other is not None:
            samples.append((f"batch size {3 if n == 1 else 1}", other))
    samples += [("the sample resized on every dynamic axis", s) for s in result.extra_samples]
    fresh = [] if custom else _fresh_samples(sample)
    session = _verify_session(m, result)
    for i, (what, s) in enumerate(samples + fresh):
        try:
            expected, actual, batch = _run_both(m, result, s, what, session)
        except _RunFailure as exc:
            if i >= len(samples) and str(exc).startswith("the source model failed"):
                report.notes.append(f"not checked on {what}: {exc}")
                continue
            report.outputs += _failed(m.output_names, str(exc))
            if i == 0:
                break
            continue
        compare = getattr(result, "compare", None) or compare_outputs  # detections: matched
        report.outputs += compare(
            m.output_names, expected, actual, kinds=result.output_kinds, batch=batch,
            tolerance=tolerance, converter_tolerances=result.tolerances,
        )
    more_checks = getattr(result, "more_checks", None)
    if more_checks is not None:  # what the feeds above do not cover (a seq2seq encoder)
        report.outputs += more_checks(m, tolerance)
    batches = {o.batch for o in report.outputs if o.batch is not None}
    dynamic = any(isinstance(d, str) for s in m.inputs for d in (s.shape or ()))
    if dynamic_batch and report.passed and len(batches) < 2 and len(samples) < 2:
        why = ("the sample's kind cannot be resized here" if dynamic else
               "the ONNX model has no symbolic axis (every input size is fixed)")
        message = (f"the ONNX model was checked on the sample's sizes only: a second batch size"
                   f" could not be tried ({why}); it may fail at other sizes")
        report.notes.append(message)
        warnings.warn(message, OnnxBridgeWarning, stacklevel=3)
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

    External weights are found in the model's folder (or ``base_dir`` for bytes and streams),
    checked, and read in when they total at most 256 MiB; larger ones stay in their files and
    onnxruntime reads (or maps) them when a session is made (``m.data_dir`` is that folder).
    A model over 2 GB always has its weights in external files: load its path, or its bytes
    with ``base_dir=`` the folder of its data files.
    With ``check_runtime=True`` (the default) a model whose IR version or opsets are newer than
    the installed onnxruntime supports raises LoadError here, naming both versions and the fix
    (one tiny cached probe session, not a session of the model). The model's own session is
    made by the first ``run`` (or ``session()``); a model onnxruntime refuses for another reason
    (an operator it lacks, a custom-operator library not registered yet) raises LoadError then,
    with what onnx.checker finds wrong. onnx.checker is not run here (``m.checker_findings``,
    ``onnxbridge check`` and ``info`` show what it says).
    A folder written by an encoder-decoder bundle's ``save`` loads as that bundle
    (:class:`onnxbridge.generate.Seq2SeqModel`).

    Examples:
        >>> m = onnxbridge.load("model.onnx")   # doctest: +SKIP
    """
    if isinstance(source, str) and source.startswith(("https://", "http://", "hf://")):
        from onnxbridge._remote import fetch_remote

        source = fetch_remote(source, sha256=sha256, trust=trust, max_bytes=max_bytes)
    from onnxbridge._files import load_proto

    _refuse_non_path_string(source)
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        from onnxbridge.generate import load_bundle  # a folder: an encoder-decoder bundle

        return load_bundle(source, lambda path: load(path, max_bytes=max_bytes,
                                                     check_runtime=check_runtime))
    proto, folder = load_proto(source, base_dir=base_dir, max_bytes=max_bytes)
    label = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    if check_runtime:
        from onnxbridge.runtime import runtime_installed
        from onnxbridge.runtime.compat import check_compatible

        if runtime_installed():  # without onnxruntime, run() says what to install
            check_compatible(proto, f"model {label!r}" if label else "this model")
    model_class = OnnxModel
    if any(p.key == "onnxbridge.task" and p.value == "text-generation"
           for p in proto.metadata_props):
        from onnxbridge.generate import GenerativeModel

        model_class = GenerativeModel
    return model_class(proto, source=label, data_dir=folder)


def _refuse_non_path_string(source: Any) -> None:
    """A str that cannot be a path (a model's bytes decoded, text): say so instead of the OS's
    "embedded null byte" or "file name too long"."""
    from onnxbridge.errors import LoadError

    if isinstance(source, str) and ("\x00" in source or len(source) > 4096):
        raise LoadError(
            f"load() got a string of {len(source)} characters that is not a path"
            + (" (it holds NUL characters)" if "\x00" in source else "")
            + "; pass a file path, the model's bytes as bytes (not str), a binary file object"
            " or an onnx.ModelProto"
        )


def register(spec: ConverterSpec, *, replace: bool = False) -> ConverterSpec:
    """Register a converter in this process (for notebooks and tests); returns it."""
    return default_registry().register(spec, replace=replace)


def converters() -> list[ConverterInfo]:
    """Every converter known (with its package) and every plugin that failed to load."""
    return default_registry().converters()
