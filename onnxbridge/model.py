"""OnnxModel: an ``onnx.ModelProto`` plus its signature, provenance, parity, saving and running."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxbridge.io import InputCheck, input_checks, plain_feeds
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
    ) -> None:
        self.proto = proto
        self.parity = parity if parity is not None else _stored_parity(proto)
        self.source = source
        self._session_hooks: list[Callable[[onnxruntime.SessionOptions], None]] = []
        self._sessions = SessionCache(self._new_session)
        self._signature: tuple[list[TensorSpec], list[TensorSpec]] | None = None
        # For the hot path of run(): the input checks and output names, worked out once.
        self._checks: list[InputCheck] | None = None
        self._output_names: list[str] = []

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
        return self._sessions.get(providers, threads, strict)

    def _new_session(
        self, wanted: Sequence[ProviderRequest], threads: int | None, strict: bool, explicit: bool
    ) -> onnxruntime.InferenceSession:
        return proto_session(self.proto, wanted, threads=threads, strict=strict, explicit=explicit,
                             hooks=list(self._session_hooks))

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
                # Inputs are checked already: skip onnxruntime's Python-side re-validation (and
                # its silent retry on the CPU after a provider failure) when the binding has it.
                if run is None:
                    raw = getattr(session, "_sess", None)
                    run = raw.run if raw is not None else None
                if run is not None:
                    results = run(self._output_names, feeds, None)
                    if not as_dict:
                        return results[0] if len(results) == 1 else tuple(results)
                    return self._pack(results, as_dict)
                return self._pack(session.run(None, feeds), as_dict)
        specs = self._signature_now()[0]
        if io_binding is not False and _has_torch_tensor(args, inputs):
            from onnxbridge.io import bind_torch_inputs

            bound = bind_torch_inputs(session, specs, args, inputs, force=bool(io_binding))
            if bound is not None:
                binding, _tensors = bound  # the tensors stay alive until the run is over
                session.run_with_iobinding(binding)
                return self._pack(binding.copy_outputs_to_cpu(), as_dict)
        from onnxbridge._frames import frame_columns
        from onnxbridge.io import to_feeds

        feeds = to_feeds(specs, args, inputs, columns=frame_columns(self.metadata))
        return self._pack(session.run(None, feeds), as_dict)

    def _default_session(self) -> tuple[int, onnxruntime.InferenceSession, Any]:
        # The hot path of run(): one compare instead of resolving providers on every call.
        entry = self._sessions.default_session()  # the session first: it names a bad model
        self._input_checks()
        return entry

    def _input_checks(self) -> list[InputCheck]:
        checks = self._checks
        if checks is None:
            self._output_names = self.output_names
            checks = self._checks = input_checks(self._signature_now()[0])
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
        name = self.name or "model"
        lines = [f"OnnxModel {name!r}"]
        lines.append("  inputs:  " + "; ".join(str(s) for s in self.inputs))
        lines.append("  outputs: " + "; ".join(str(s) for s in self.outputs))
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


def _has_torch_tensor(args: Sequence[Any], inputs: Mapping[str, Any]) -> bool:
    from onnxbridge.io import is_torch_tensor

    values = list(args) + list(inputs.values())
    if len(values) == 1 and isinstance(values[0], (tuple, Mapping)):
        values = list(values[0].values() if isinstance(values[0], Mapping) else values[0])
    return any(is_torch_tensor(v) for v in values)
