"""OnnxModel: an ``onnx.ModelProto`` plus its signature, provenance, parity, saving and running."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxbridge.errors import InputError, RunError
from onnxbridge.io import (
    CAST_MODES,
    InputCheck,
    SharedDim,
    check_shared_dims,
    input_checks,
    plain_feeds,
    shared_dims,
    to_feeds,
)
from onnxbridge.runtime import plan
from onnxbridge.runtime.session import (  # noqa: F401 (the custom-op names, importable from here)
    CUSTOM_OP_LIBRARY_KEY,
    KNOWN_CUSTOM_OP_LIBRARIES,
    SessionCache,
    _register_custom_op_library,
    proto_session,
)
from onnxbridge.signature import Dim, TensorSpec, _type_str, graph_signature  # noqa: F401
from onnxbridge.verify import stored_parity as _stored_parity

if TYPE_CHECKING:
    import onnx
    import onnxruntime

    from onnxbridge._to_torch import OnnxTorchModule
    from onnxbridge.runtime import ProviderRequest
    from onnxbridge.verify import ParityReport
    from onnxbridge.viz import GraphView

__all__ = ["OnnxModel", "TensorSpec"]


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
        data_dir: str | os.PathLike[str] | None = None,
        data_owner: Any = None,
    ) -> None:
        self.proto = proto
        # The folder of the external data files the proto's tensors name (a large model's
        # weights stay there, read by onnxruntime); None when the proto holds every weight.
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._data_owner = data_owner  # keeps a temporary data folder alive with the model
        self._checker_findings: list[str] | None = None  # onnx.checker's, worked out on demand
        self.parity = parity if parity is not None else _stored_parity(proto)
        self.source = source
        self._session_hooks: list[Callable[[onnxruntime.SessionOptions], None]] = []
        self._sessions = SessionCache(self._new_session)
        self._signature: tuple[list[TensorSpec], list[TensorSpec]] | None = None
        # For the hot path of run(): the input checks and output names, worked out once.
        self._checks: list[InputCheck] | None = None
        self._shared: list[SharedDim] = []
        self._output_names: list[str] = []
        self._columns: tuple[list[str] | None] | None = None  # None: not read from metadata yet
        self._optional: list[TensorSpec] | None = None
        self._images: int | None = None  # a detection export's image count (0: not one)

    # -- signature and metadata ------------------------------------------------------------------
    def _signature_now(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        if self._signature is None:
            self._signature = graph_signature(self.proto)
        return self._signature

    @property
    def inputs(self) -> list[TensorSpec]:
        """The graph's inputs (initializers listed as inputs are left out)."""
        return list(self._signature_now()[0])

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self._signature_now()[1])

    @property
    def optional_inputs(self) -> list[TensorSpec]:
        """Graph inputs with a default in the file (an initializer of the same name, IR 4+):
        ``run`` uses the default unless one is given by name (``m.run(x, scale=s)``)."""
        return list(self._optional_specs())

    def _optional_specs(self) -> list[TensorSpec]:
        if self._optional is None:
            g = self.proto.graph
            init = {t.name for t in g.initializer}
            self._optional = [TensorSpec.from_value_info(v) for v in g.input
                              if v.name in init] if self.proto.ir_version >= 4 else []
        return self._optional

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    @property
    def checker_findings(self) -> list[str]:
        """What onnx.checker says about the model ([] when nothing): findings, not refusals
        (onnxruntime runs models the checker complains about). Run on first use, not at load."""
        if self._checker_findings is None:
            from onnxbridge._files import checker_findings

            self._checker_findings = checker_findings(self.proto)
        return list(self._checker_findings)

    @checker_findings.setter
    def checker_findings(self, findings: list[str]) -> None:
        self._checker_findings = list(findings)

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ``metadata_props`` as a dict (a copy: use ``set_metadata`` to change)."""
        return {p.key: p.value for p in self.proto.metadata_props}

    def set_metadata(self, key: str, value: str) -> None:
        self._columns = None  # the recorded DataFrame columns are read again
        self._images = None
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
        """The serialized model, weights included (ValueError when that exceeds protobuf's
        2 GB limit: use ``save(path)``, which writes the weights to an external data file)."""
        from onnxbridge._files import (
            PROTOBUF_LIMIT,
            external_bytes,
            has_external_data,
            load_proto,
            model_size,
        )

        outside = external_bytes(self.proto) if has_external_data(self.proto) else 0
        if model_size(self.proto) + outside > PROTOBUF_LIMIT:
            raise ValueError(
                "this model is over protobuf's 2 GB limit and cannot be one byte string;"
                " use save(path), which writes its weights to an external data file"
            )
        if outside or has_external_data(self.proto):
            whole, _ = load_proto(self.proto, base_dir=self.data_dir, keep_external_above=2**62)
            return whole.SerializeToString()
        return self.proto.SerializeToString()

    def save(self, path: str | os.PathLike[str], *, external_data: bool | None = None) -> Path:
        """Write the model atomically and return its path.

        One self-contained file while it fits protobuf's 2 GB limit and holds its weights;
        above it, when its weights are in external files, or with ``external_data=True``, the
        weights go to a data file beside it, ``<name>.<random>.data``, named by the new model
        (switched in one step; the data file of the model it replaces is removed after). A
        converted model's temporary data file is moved there rather than copied (same file
        system), and the model then uses the saved files, as if loaded from them.
        """
        from onnxbridge._files import save_proto

        before = self._data_files()
        written = save_proto(self.proto, path, external_data=external_data,
                             data_dir=self.data_dir, move_data=self._owns_data_dir())
        if before and not all(f.exists() for f in before):
            self._use_saved(written[0])
        return written[0]

    def _data_files(self) -> set[Path]:
        from onnx import TensorProto

        from onnxbridge._files import external_range, iter_tensors

        if self.data_dir is None:
            return set()
        return {self.data_dir / external_range(t)[0] for t in iter_tensors(self.proto)
                if t.data_location == TensorProto.EXTERNAL}

    def _use_saved(self, path: Path) -> None:
        """Switch to the files just saved at ``path``: the model's own data file was moved
        there (a converter's temporary one) or replaced by that save, as if loaded from it.
        Sessions made already keep working (onnxruntime has read or mapped the old file)."""
        from onnxbridge._files import load_proto

        proto, folder = load_proto(path, keep_external_above=0)
        self.proto, self.data_dir, self._data_owner = proto, folder, None

    def _owns_data_dir(self) -> bool:
        """Whether ``data_dir`` is a temporary folder this model holds (a converter's), whose
        files nothing writes again: save may hard-link them instead of copying."""
        import tempfile

        owner = self._data_owner
        return isinstance(owner, tempfile.TemporaryDirectory) and self.data_dir is not None \
            and os.path.abspath(owner.name) == os.path.abspath(self.data_dir)

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
        return self._sessions.get(providers, threads, strict)

    def _new_session(
        self, wanted: Sequence[ProviderRequest], threads: int | None, strict: bool, explicit: bool
    ) -> onnxruntime.InferenceSession:
        return proto_session(self.proto, wanted, threads=threads, strict=strict, explicit=explicit,
                             hooks=list(self._session_hooks), data_dir=self.data_dir,
                             label=f"model {self.source!r}" if self.source else None)

    def add_session_hook(self, hook: Callable[[onnxruntime.SessionOptions], None]) -> None:
        """Call ``hook(options)`` on the SessionOptions of every session created from now on
        (to register a custom-operator library, say); sessions already made are dropped."""
        self._session_hooks.append(hook)
        self._sessions.clear()

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
        cast: str = "safe",
        **inputs: Any,
    ) -> Any:
        """Run the model on numpy arrays, DataFrames, lists or torch tensors.

        Inputs go by position (graph order) or by name. Returns one array for a one-output
        model, a tuple otherwise, or a dict of output name -> array with ``as_dict=True``.
        Torch tensors on a CUDA device are bound in place (no copy to the host) when the session
        runs on CUDA; ``io_binding=True`` binds torch tensors on any device. With
        ``strict=True`` a session that did not get every provider asked for raises ProviderError
        instead of warning. An input of another dtype is cast only when every value survives
        (int64 values that fit int32, float64 values within float32's range, integers exact as
        floats); otherwise InputError, unless ``cast="unsafe"`` asks for numpy's cast. A numpy
        masked array with masked values is an InputError (fill it: ``x.filled(np.nan)``).
        A torchvision detection model converted from one image takes a list of any number of
        images (run one by one; outputs ``boxes_0, scores_0, labels_0, boxes_1, ...``).
        """
        if cast != "safe" and cast not in CAST_MODES:
            raise InputError(f"cast must be one of {CAST_MODES}, got {cast!r}")
        count = self._images if self._images is not None else self._image_count()
        if count and not inputs:  # a detection export: any number of images (_per_image)
            from onnxbridge._per_image import images_call, run_images

            images = images_call(count, args)
            if images is not None:
                return run_images(self, count, images, as_dict=as_dict, providers=providers,
                                  io_binding=io_binding, strict=strict, cast=cast)
        default = self._sessions.default
        run: Any = None
        if (providers is None and default is not None and default[0] == plan._GENERATION
                and not strict):
            session, run = default[1], default[2]  # the hot path: default providers, made already
        elif strict:
            session = self.session(providers, strict=True)
        elif providers is None:
            _, session, run = self._default_session()
        else:
            session = self.session(providers)
        if io_binding is None:
            feeds = plain_feeds(self._input_checks(), args, inputs)
            if feeds is not None:
                if self._shared:  # inputs that share a symbolic axis got the same size there
                    check_shared_dims(self._shared, feeds)
                # Inputs are checked already: skip onnxruntime's Python-side re-validation (and
                # its silent retry on the CPU after a provider failure) when the binding has it.
                if run is None:
                    raw = getattr(session, "_sess", None)
                    run = raw.run if raw is not None else None
                if run is not None:
                    try:
                        results = run(self._output_names, feeds, None)
                    except Exception as exc:
                        raise _run_failed(self, exc) from exc
                    if not as_dict:
                        return results[0] if len(results) == 1 else tuple(results)
                    return self._pack(results, as_dict)
                try:
                    return self._pack(session.run(None, feeds), as_dict)
                except Exception as exc:
                    raise _run_failed(self, exc) from exc
        specs = self._signature_now()[0]
        if io_binding is not False and _has_torch_tensor(args, inputs):
            from onnxbridge.io import bind_torch_inputs

            bound = bind_torch_inputs(session, specs, args, inputs, force=bool(io_binding))
            if bound is not None:
                binding, _tensors = bound  # the tensors stay alive until the run is over
                try:
                    session.run_with_iobinding(binding)
                except Exception as exc:
                    raise _run_failed(self, exc) from exc
                return self._pack(binding.copy_outputs_to_cpu(), as_dict)
        self._input_checks()  # the shared axes, worked out once
        feeds = to_feeds(specs, args, inputs, cast=cast, columns=self._recorded_columns(),
                         shared=self._shared, optional=self._optional_specs())
        try:
            if run is not None:  # checked and cast by to_feeds: the compiled run, as above
                return self._pack(run(self._output_names, feeds, None), as_dict)
            return self._pack(session.run(None, feeds), as_dict)
        except Exception as exc:
            raise _run_failed(self, exc) from exc

    def _image_count(self) -> int:
        from onnxbridge._per_image import image_count

        self._images = image_count(self.metadata)
        return self._images

    def _default_session(self) -> tuple[int, onnxruntime.InferenceSession, Any]:
        # The hot path of run(): one compare instead of resolving providers on every call.
        entry = self._sessions.default_session()  # the session first: it names a bad model
        self._input_checks()
        return entry

    def _recorded_columns(self) -> list[str] | None:
        """The DataFrame columns recorded at conversion (read once; set_metadata resets it)."""
        if self._columns is None:
            from onnxbridge._frames import frame_columns

            self._columns = (frame_columns(self.metadata),)
        return self._columns[0]

    def _input_checks(self) -> list[InputCheck]:
        checks = self._checks
        if checks is None:
            self._output_names = self.output_names
            specs = self._signature_now()[0]
            self._shared = shared_dims(specs)
            checks = self._checks = input_checks(specs)
        return checks

    def _pack(self, results: list[Any], as_dict: bool) -> Any:
        if as_dict:
            return dict(zip(self.output_names, results, strict=True))
        return results[0] if len(results) == 1 else tuple(results)

    # -- display -------------------------------------------------------------------------------
    def _facts(self) -> list[tuple[str, str]]:
        from onnxbridge.viz.card import model_facts

        return model_facts(self.proto, self.parity.summary() if self.parity is not None else None)

    def __repr__(self) -> str:
        from onnxbridge._text import shown

        # Text from the file is data: one line per fact, control characters escaped, cut.
        name = shown(self.name or "model", 120)
        lines = [f"OnnxModel '{name}'"]
        lines.append("  inputs:  " + (shown("; ".join(str(s) for s in self.inputs), 2000)
                                      or "none (the model computes its outputs alone)"))
        optional = self.optional_inputs
        if optional:  # old exporters list every weight as an input: name a few, count the rest
            shown_ones = "; ".join(str(s) for s in optional[:5]) + (
                f"; and {len(optional) - 5} more" if len(optional) > 5 else "")
            lines.append("  optional inputs (defaults in the file; give by name to override): "
                         + shown(shown_ones, 2000))
        lines.append("  outputs: " + shown("; ".join(str(s) for s in self.outputs), 2000))
        lines += [f"  {k}: {v}" for k, v in self._facts()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """A compact card for Jupyter: signature, size, provenance, parity, providers (where
        run() would go, worked out without creating a session)."""
        from onnxbridge.viz.card import card_html

        return card_html(self.proto, self._facts(), plan.planned_providers())

    def show(self, **kwargs: Any) -> GraphView:
        """The graph as a picture, drawn inline by Jupyter (``m.show()``); ``.save("g.svg")`` writes it.

        Keyword arguments go to ``onnxbridge.viz.to_svg``: ``collapse=False`` draws every repeated
        block, ``max_nodes`` bounds the boxes drawn.
        """
        from onnxbridge.viz import GraphView, to_svg

        return GraphView(to_svg(self.proto, **kwargs))

    def to_torch(self, sample: Any = None, *, verify: bool = True,
                 tolerance: Any = None) -> OnnxTorchModule:
        """A ``torch.nn.Module`` computing this model's outputs, its weights trainable parameters.

        Checked against onnxruntime on ``sample`` (the inputs by position or a dict by name),
        or on random inputs at batches 1 and 3; ParityError when it differs, the report in
        ``.parity``. Needs torch (``onnxbridge[torch]``); see docs/guide-to-torch.md.
        """
        try:
            from onnxbridge._to_torch import to_torch
        except ModuleNotFoundError as exc:
            if exc.name != "torch":
                raise
            from onnxbridge.errors import ConversionError

            raise ConversionError("to_torch() needs PyTorch: pip install 'onnxbridge[torch]'") from exc
        return to_torch(self, sample, verify=verify, tolerance=tolerance)


def _run_failed(model: OnnxModel, exc: Exception) -> Exception:
    """onnxruntime's failure while running, as a RunError naming the model."""
    from onnxbridge._text import shown

    reason = shown(" ".join(str(exc).split()), 600)
    return RunError(f"onnxruntime failed to run model {shown(model.name or 'model', 80)!r}:"
                    f" {type(exc).__name__}: {reason}")


def _has_torch_tensor(args: Sequence[Any], inputs: Mapping[str, Any]) -> bool:
    if "torch" not in sys.modules:  # no tensor without torch (and this is the cheap question)
        return False
    from onnxbridge.io import is_torch_tensor

    values = list(args) + list(inputs.values())
    if len(values) == 1 and isinstance(values[0], (tuple, Mapping)):
        values = list(values[0].values() if isinstance(values[0], Mapping) else values[0])
    return any(is_torch_tensor(v) for v in values)
