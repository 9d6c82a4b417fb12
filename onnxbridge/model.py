"""OnnxModel: an ``onnx.ModelProto`` plus its signature, provenance, parity, saving and running."""

from __future__ import annotations

import html
import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxbridge import runtime

if TYPE_CHECKING:
    import onnx
    import onnxruntime

    from onnxbridge.runtime import ProviderRequest
    from onnxbridge.verify import ParityReport
    from onnxbridge.viz import GraphView

__all__ = ["OnnxModel", "TensorSpec"]

Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, numpy dtype (None for non-tensor types), shape.

    A dimension is an int when fixed, a string when symbolic (``"batch"``), None when unknown.
    ``type`` is ONNX's own spelling, e.g. ``tensor(float)`` or ``seq(map(int64,tensor(float)))``.
    """

    name: str
    dtype: np.dtype | None
    shape: tuple[Dim, ...] | None
    type: str

    @classmethod
    def from_value_info(cls, vi: onnx.ValueInfoProto) -> TensorSpec:
        from onnx import helper

        t = vi.type
        if t.HasField("tensor_type"):
            elem = t.tensor_type.elem_type
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem)) if elem else None
            shape: tuple[Dim, ...] | None = None
            if t.tensor_type.HasField("shape"):
                shape = tuple(
                    d.dim_value if d.HasField("dim_value")
                    else (d.dim_param or None)
                    for d in t.tensor_type.shape.dim
                )
            return cls(vi.name, dtype, shape, _type_str(t))
        return cls(vi.name, None, None, _type_str(t))

    def __str__(self) -> str:
        from onnxbridge.io import format_shape

        if self.dtype is None:
            return f"{self.name}: {self.type}"
        dtype = "string" if self.dtype == np.dtype(object) else self.dtype.name
        return f"{self.name}: {dtype} {format_shape(self.shape)}"


def _type_str(t: onnx.TypeProto) -> str:
    from onnx import helper

    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({helper.tensor_dtype_to_string(t.tensor_type.elem_type).split('.')[-1].lower()})"
    if kind == "sequence_type":
        return f"seq({_type_str(t.sequence_type.elem_type)})"
    if kind == "map_type":
        key = helper.tensor_dtype_to_string(t.map_type.key_type).split(".")[-1].lower()
        return f"map({key},{_type_str(t.map_type.value_type)})"
    if kind == "optional_type":
        return f"optional({_type_str(t.optional_type.elem_type)})"
    return kind or "unknown"


class OnnxModel:
    """A loaded or converted ONNX model.

    Examples:
        >>> m = onnxbridge.load("model.onnx")   # doctest: +SKIP
        >>> m.inputs, m.outputs                 # doctest: +SKIP
        >>> y = m.run(x)                        # doctest: +SKIP
    """

    def __init__(
        self,
        proto: onnx.ModelProto,
        *,
        parity: ParityReport | None = None,
        source: str | None = None,
    ) -> None:
        self.proto = proto
        self.parity = parity if parity is not None else _stored_parity(proto)
        self.source = source
        self._sessions: dict[str, onnxruntime.InferenceSession] = {}
        self._fast_sessions: dict[Any, onnxruntime.InferenceSession] = {}
        self._session_hooks: list[Callable[[onnxruntime.SessionOptions], None]] = []
        self._lock = threading.Lock()
        self._signature: tuple[list[TensorSpec], list[TensorSpec]] | None = None
        # (generation, session, its run function, input checks) for the hot path of run().
        self._default: tuple[int, onnxruntime.InferenceSession, Any, Any] | None = None
        self._checks: list[tuple[str, Any, int | None, tuple[tuple[int, int], ...]]] | None = None
        self._output_names: list[str] = []

    # -- signature and metadata ------------------------------------------------------------------
    def _signature_now(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        if self._signature is None:
            g = self.proto.graph
            init = {t.name for t in g.initializer}
            ins = [TensorSpec.from_value_info(v) for v in g.input if v.name not in init]
            outs = [TensorSpec.from_value_info(v) for v in g.output]
            self._signature = (ins, outs)
        return self._signature

    @property
    def inputs(self) -> list[TensorSpec]:
        """The graph's inputs (initializers listed as inputs are left out)."""
        return list(self._signature_now()[0])

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self._signature_now()[1])

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ``metadata_props`` as a dict (a copy: use ``set_metadata`` to change)."""
        return {p.key: p.value for p in self.proto.metadata_props}

    def set_metadata(self, key: str, value: str) -> None:
        for p in self.proto.metadata_props:
            if p.key == key:
                p.value = value
                return
        entry = self.proto.metadata_props.add()
        entry.key, entry.value = key, value

    @property
    def opsets(self) -> dict[str, int]:
        """Operator set version per domain (``""`` is the default ONNX domain)."""
        return {o.domain: o.version for o in self.proto.opset_import}

    @property
    def opset(self) -> int | None:
        """The default-domain opset version."""
        ops = self.opsets
        return ops.get("", ops.get("ai.onnx"))

    @property
    def ir_version(self) -> int:
        return int(self.proto.ir_version)

    @property
    def name(self) -> str:
        return self.proto.graph.name

    @property
    def producer(self) -> str:
        version = self.proto.producer_version
        return f"{self.proto.producer_name} {version}".strip()

    def parameter_count(self) -> int:
        """Number of values stored in initializers."""
        total = 0
        for t in self.proto.graph.initializer:
            n = 1
            for d in t.dims:
                n *= d
            total += n
        return total

    def operator_histogram(self) -> Counter[str]:
        """How many nodes of each op type the main graph has (``domain::Op`` outside ONNX)."""
        return Counter(
            f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
            for n in self.proto.graph.node
        )

    # -- bytes and files -----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The serialized model (raises ValueError when it exceeds protobuf's 2 GB limit)."""
        from onnxbridge._files import PROTOBUF_LIMIT

        if self.proto.ByteSize() > PROTOBUF_LIMIT:
            raise ValueError(
                "this model is over protobuf's 2 GB limit and cannot be one byte string;"
                " use save(path), which writes its weights to an external data file"
            )
        return self.proto.SerializeToString()

    def save(self, path: str | os.PathLike[str], *, external_data: bool | None = None) -> Path:
        """Write the model atomically and return its path.

        One self-contained file while it fits protobuf's 2 GB limit; above it (or with
        ``external_data=True``) the weights go to ``<name>.data`` beside it.
        """
        from onnxbridge._files import save_proto

        return save_proto(self.proto, path, external_data=external_data)[0]

    # -- running -------------------------------------------------------------------------------
    def session(
        self,
        providers: str | Sequence[ProviderRequest] | None = None,
        *,
        threads: int | None = None,
        strict: bool = False,
    ) -> onnxruntime.InferenceSession:
        """The onnxruntime session for ``providers``, created on first use and then reused.

        ``providers`` defaults to ``set_default_providers``, then ONNXBRIDGE_PROVIDERS, then the
        fastest provider on this machine that passed its probe (``onnxbridge providers``).
        """
        fast_key: Any = None
        if providers is None or isinstance(providers, str):
            fast_key = (providers, threads, strict, runtime.default_generation(),
                        os.environ.get(runtime.ENV_PROVIDERS))
            cached = self._fast_sessions.get(fast_key)
            if cached is not None:
                return cached
        wanted, explicit = runtime.resolve_providers(providers)
        key = repr((wanted, threads, strict))
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = self._new_session(wanted, threads, strict, explicit)
                self._sessions[key] = session
            if fast_key is not None:
                self._fast_sessions[fast_key] = session
        return session

    def _new_session(
        self, wanted: Sequence[ProviderRequest], threads: int | None, strict: bool, explicit: bool
    ) -> onnxruntime.InferenceSession:
        import tempfile

        from onnxbridge._files import PROTOBUF_LIMIT
        from onnxbridge.runtime import check_compatible, create_session, session_options

        check_compatible(self.proto, f"model {self.name!r}")
        options = session_options(threads)
        _register_custom_op_library(options, self.metadata.get(CUSTOM_OP_LIBRARY_KEY))
        for hook in self._session_hooks:
            hook(options)
        if self.proto.ByteSize() <= PROTOBUF_LIMIT:
            return create_session(self.proto.SerializeToString(), wanted, options,
                                  strict=strict, explicit=explicit)
        # Over 2 GB the model cannot be one byte string: onnxruntime reads it from files, and
        # has loaded the weights by the time the session exists, so the files may go after.
        with tempfile.TemporaryDirectory(prefix="onnxbridge-") as tmp:
            path = self.save(Path(tmp) / "model.onnx", external_data=True)
            return create_session(str(path), wanted, options, strict=strict, explicit=explicit)

    def add_session_hook(self, hook: Callable[[onnxruntime.SessionOptions], None]) -> None:
        """Call ``hook(options)`` on the SessionOptions of every session created from now on
        (to register a custom-operator library, say); sessions already made are dropped."""
        with self._lock:
            self._session_hooks.append(hook)
            self._sessions.clear()
            self._fast_sessions.clear()
            self._default = None

    @property
    def providers(self) -> list[str]:
        """The execution providers the default session really runs on."""
        return list(self.session().get_providers())

    def run(
        self,
        *args: Any,
        providers: str | Sequence[ProviderRequest] | None = None,
        as_dict: bool = False,
        io_binding: bool | None = None,
        strict: bool = False,
        **inputs: Any,
    ) -> Any:
        """Run the model on numpy arrays, DataFrames, lists or torch tensors.

        Inputs go by position (graph order) or by name. Returns one array for a one-output
        model, a tuple otherwise, or a dict of output name -> array with ``as_dict=True``.
        Torch tensors on a CUDA device are bound in place (no copy to the host) when the session
        runs on CUDA; ``io_binding=True`` binds torch tensors on any device. With
        ``strict=True`` a session that did not get every provider asked for raises ProviderError
        instead of warning.
        """
        default = self._default
        if (providers is None and default is not None and default[0] == runtime._GENERATION
                and io_binding is None and not as_dict and not strict):
            # The hot path: numpy arrays of the exact dtype, default providers.
            checks = default[3]
            values = args
            if inputs and not args and len(inputs) == len(checks):
                values = tuple(inputs.get(c[0]) for c in checks)
            if len(values) == len(checks) and (not inputs or not args):
                fast: dict[str, np.ndarray] = {}
                for (name, dtype, rank, fixed), value in zip(checks, values):  # noqa: B905
                    if type(value) is not np.ndarray or value.dtype != dtype:
                        break
                    if rank is not None:
                        shape = value.shape
                        if len(shape) != rank:
                            break
                        if fixed and any(shape[i] != d for i, d in fixed):
                            break
                    fast[name] = value
                else:
                    results = default[2](self._output_names, fast, None)
                    return results[0] if len(results) == 1 else tuple(results)
            session = default[1]
        elif strict:
            session = self.session(providers, strict=True)
        else:
            session = self._default_session() if providers is None else self.session(providers)
        if io_binding is None:
            feeds = self._plain_feeds(args, inputs)
            if feeds is not None:
                # Inputs are checked already: skip onnxruntime's Python-side re-validation (and
                # its silent retry on the CPU after a provider failure) when the binding has it.
                raw = getattr(session, "_sess", None)
                if raw is not None:
                    return self._pack(raw.run(self._output_names, feeds, None), as_dict)
                return self._pack(session.run(None, feeds), as_dict)
        specs = self._signature_now()[0]
        if io_binding is not False and _has_torch_tensor(args, inputs):
            from onnxbridge.io import bind_torch_inputs

            bound = bind_torch_inputs(session, specs, args, inputs, force=bool(io_binding))
            if bound is not None:
                binding, _tensors = bound  # the tensors stay alive until the run is over
                session.run_with_iobinding(binding)
                return self._pack(binding.copy_outputs_to_cpu(), as_dict)
        from onnxbridge.io import to_feeds

        return self._pack(session.run(None, to_feeds(specs, args, inputs)), as_dict)

    def _default_session(self) -> onnxruntime.InferenceSession:
        # The hot path of run(): one compare instead of resolving providers on every call.
        # ONNXBRIDGE_PROVIDERS is read when this session is made, not on each run.
        key = runtime.default_generation()
        cached = self._default
        if cached is not None and cached[0] == key:
            return cached[1]
        session = self.session()
        self._plain_feeds((), {})  # fills self._checks and self._output_names
        assert self._checks is not None
        # The compiled session's run when the binding exposes it, else the public one.
        raw = getattr(session, "_sess", None)
        run = raw.run if raw is not None else (lambda names, feeds, options: session.run(names, feeds))
        self._default = (key, session, run, self._checks)
        return session

    def _plain_feeds(
        self, args: tuple[Any, ...], inputs: dict[str, Any]
    ) -> dict[str, np.ndarray] | None:
        """Feeds for numpy arrays that already have the exact dtype and shape, else None (then
        io.to_feeds does the full work: casts, DataFrames, clear errors)."""
        checks = self._checks
        if checks is None:
            self._output_names = self.output_names
            checks = self._checks = [
                (s.name, s.dtype, None if s.shape is None else len(s.shape),
                 tuple((i, d) for i, d in enumerate(s.shape or ()) if isinstance(d, int)))
                for s in self._signature_now()[0]
            ]
        if inputs:
            if args or len(inputs) != len(checks):
                return None
            try:
                args = tuple(inputs[c[0]] for c in checks)
            except KeyError:
                return None
        elif len(args) != len(checks):
            return None
        feeds = {}
        for (name, dtype, rank, fixed), value in zip(checks, args, strict=True):
            if type(value) is not np.ndarray or value.dtype != dtype:
                return None
            shape = value.shape
            if rank is not None and (len(shape) != rank or any(shape[i] != d for i, d in fixed)):
                return None
            feeds[name] = value
        return feeds

    def _pack(self, results: list[Any], as_dict: bool) -> Any:
        if as_dict:
            return dict(zip(self.output_names, results, strict=True))
        return results[0] if len(results) == 1 else tuple(results)

    # -- display -------------------------------------------------------------------------------
    def _facts(self) -> list[tuple[str, str]]:
        meta = self.metadata
        facts = [
            ("opset", ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in self.opsets.items())),
            ("ir version", str(self.ir_version)),
            ("producer", self.producer or "unknown"),
            ("parameters", f"{self.parameter_count():,}"),
            ("size", _human_bytes(self.proto.ByteSize())),
        ]
        if "onnxbridge.converter" in meta:
            framework = meta.get("onnxbridge.framework", "?")
            version = meta.get("onnxbridge.framework_version", "")
            converter = meta["onnxbridge.converter"]
            facts.append(("converted from", f"{framework} {version} by {converter}".replace("  ", " ")))
        parity = self.parity.summary() if self.parity is not None else meta.get("onnxbridge.parity_summary")
        if parity:
            facts.append(("parity", parity))
        return facts

    def __repr__(self) -> str:
        name = self.name or "model"
        lines = [f"OnnxModel {name!r}"]
        lines.append("  inputs:  " + "; ".join(str(s) for s in self.inputs))
        lines.append("  outputs: " + "; ".join(str(s) for s in self.outputs))
        lines += [f"  {k}: {v}" for k, v in self._facts()]
        return "\n".join(lines)

    def _planned_providers(self) -> str:
        """Where run() would go, worked out without creating a session (displaying a model must
        not load it into onnxruntime)."""
        try:
            wanted, explicit = runtime.resolve_providers(None)
        except Exception as exc:  # a bad ONNXBRIDGE_PROVIDERS: show it rather than fail to display
            return f"cannot tell: {exc}"
        names = " > ".join(runtime.provider_name(p) for p in wanted)
        return f"{names} ({'as set' if explicit else 'automatic, best first'})"

    def _repr_html_(self) -> str:
        """A compact card for Jupyter: signature, size, provenance, parity, providers."""
        from onnxbridge.io import format_shape

        esc = html.escape
        cell = 'style="text-align:left;padding:1px 12px 1px 0;vertical-align:top"'
        head = 'style="text-align:left;padding:1px 12px 1px 0;color:#57606a;font-weight:600"'
        rows = []
        for role, specs in (("input", self.inputs), ("output", self.outputs)):
            for s in specs:
                if s.dtype is None:
                    dtype, shape = s.type, ""
                else:
                    dtype = "string" if s.dtype == np.dtype(object) else s.dtype.name
                    shape = format_shape(s.shape)
                rows.append(
                    f'<tr title="{esc(str(s))}"><td {cell}>{esc(role)}</td>'
                    f"<td {cell}><code>{esc(s.name)}</code></td><td {cell}>{esc(dtype)}</td>"
                    f"<td {cell}><code>{esc(shape)}</code></td></tr>"
                )
        known = self._facts()
        facts = [
            f"<tr><th {head}>{esc(key)}</th>"
            f"<td {cell}>{_parity_badge(value) if key == 'parity' else esc(value)}</td></tr>"
            for key, value in known
        ]
        if all(key != "parity" for key, _ in known):
            facts.append(f"<tr><th {head}>parity</th><td {cell}>{_parity_badge('')}</td></tr>")
        facts.append(f"<tr><th {head}>runs on</th><td {cell}>{esc(self._planned_providers())}</td></tr>")
        nodes = len(self.proto.graph.node)
        subtitle = f"{nodes} node{'s' if nodes != 1 else ''} · {_human_bytes(self.proto.ByteSize())}"
        return (
            '<div class="onnxbridge-model" style="font-family:-apple-system,\'Segoe UI\',Helvetica,'
            "Arial,sans-serif;font-size:13px;line-height:1.45;color:#1f2328;text-align:left;"
            'display:inline-block;border:1px solid #d0d7de;border-radius:6px;padding:8px 14px">'
            f'<div style="margin-bottom:4px"><b>OnnxModel</b> <code>{esc(self.name or "model")}</code>'
            f' <span style="color:#57606a">{esc(subtitle)}</span></div>'
            '<table style="border-collapse:collapse;font-size:inherit;margin:2px 0 6px">'
            f"<tr><th {head}>role</th><th {head}>name</th><th {head}>dtype</th><th {head}>shape</th></tr>"
            f'{"".join(rows)}</table>'
            f'<table style="border-collapse:collapse;font-size:inherit">{"".join(facts)}</table></div>'
        )

    def show(self, **kwargs: Any) -> GraphView:
        """The graph as a picture, drawn inline by Jupyter (``m.show()``); ``.save("g.svg")`` writes it.

        Keyword arguments go to ``onnxbridge.viz.to_svg``: ``collapse=False`` draws every repeated
        block, ``max_nodes`` bounds the boxes drawn.
        """
        from onnxbridge.viz import GraphView, to_svg

        return GraphView(to_svg(self, **kwargs))


# Metadata key a converter writes when the graph uses operators from a custom-op library.
CUSTOM_OP_LIBRARY_KEY = "onnxbridge.custom_op_library"
# The libraries a model may ask for by name (a model never names a file path to load).
KNOWN_CUSTOM_OP_LIBRARIES = ("onnxruntime_extensions",)


def _register_custom_op_library(options: onnxruntime.SessionOptions, library: str | None) -> None:
    if not library:
        return
    if library not in KNOWN_CUSTOM_OP_LIBRARIES:
        from onnxbridge.errors import LoadError

        raise LoadError(
            f"the model asks for custom-operator library {library!r}, which onnxbridge does not"
            f" know (known: {', '.join(KNOWN_CUSTOM_OP_LIBRARIES)}); register it yourself with"
            " m.add_session_hook(lambda options: options.register_custom_ops_library(path))"
        )
    try:
        import onnxruntime_extensions
    except ImportError as exc:
        from onnxbridge.errors import ProviderError

        raise ProviderError(
            "this model uses custom operators implemented in onnxruntime-extensions:"
            " pip install onnxruntime-extensions"
        ) from exc
    options.register_custom_ops_library(onnxruntime_extensions.get_library_path())


def _parity_badge(summary: str) -> str:
    """The parity summary in green (passed), red (failed) or amber (not verified or unknown)."""
    if summary.startswith("passed"):
        fg, bg = "#1a7f37", "#dafbe1"
    elif summary.startswith("FAILED"):
        fg, bg = "#cf222e", "#ffebe9"
    else:
        fg, bg = "#9a6700", "#fff8c5"
    text = summary or "not checked (this model carries no parity report)"
    return (f'<span class="onnxbridge-parity" style="color:{fg};background:{bg};border-radius:4px;'
            f'padding:0 5px">{html.escape(text)}</span>')


def _stored_parity(proto: onnx.ModelProto) -> ParityReport | None:
    """The parity report a conversion wrote into the metadata, if any (None if unreadable)."""
    for entry in proto.metadata_props:
        if entry.key == "onnxbridge.parity":
            from onnxbridge.verify import ParityReport

            try:
                return ParityReport.from_dict(json.loads(entry.value))
            except (ValueError, TypeError, KeyError, AttributeError):
                return None
    return None


def _has_torch_tensor(args: Sequence[Any], inputs: Mapping[str, Any]) -> bool:
    from onnxbridge.io import is_torch_tensor

    values = list(args) + list(inputs.values())
    if len(values) == 1 and isinstance(values[0], (tuple, Mapping)):
        values = list(values[0].values() if isinstance(values[0], Mapping) else values[0])
    return any(is_torch_tensor(v) for v in values)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
