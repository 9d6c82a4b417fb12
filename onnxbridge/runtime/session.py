"""Session creation: options, the session on the providers asked for, and what it really got."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxbridge.errors import LoadError, OnnxBridgeWarning, ProviderError
from onnxbridge.runtime import plan
from onnxbridge.runtime.devices import detect, new_session
from onnxbridge.runtime.install import _SESSION_LOCK, install_problems, ort
from onnxbridge.runtime.names import ENV_PROVIDERS, ENV_THREADS, ProviderRequest, provider_name
from onnxbridge.runtime.probe import probe_provider

if TYPE_CHECKING:
    import onnx
    import onnxruntime


def session_options(threads: int | None = None) -> onnxruntime.SessionOptions:
    """SessionOptions with the thread count from ``threads`` or ONNXBRIDGE_THREADS (0: ORT's own)."""
    onnxruntime = ort()

    options = onnxruntime.SessionOptions()
    if threads is None:
        env = os.environ.get(ENV_THREADS, "").strip()
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise ProviderError(f"{ENV_THREADS}={env!r} is not a whole number") from None
    if threads is not None:
        if threads < 0:
            raise ValueError(f"threads must be 0 (onnxruntime's choice) or more, got {threads}")
        options.intra_op_num_threads = threads
    return options


def create_session(
    model: bytes | str,
    providers: Sequence[ProviderRequest],
    options: onnxruntime.SessionOptions | None = None,
    *,
    strict: bool = False,
    explicit: bool = True,
) -> onnxruntime.InferenceSession:
    """An InferenceSession on ``providers``; checks which providers it really got.

    A provider missing from this onnxruntime build is a ProviderError. A session that came up
    without a provider asked for warns (explicit requests) or raises ProviderError (strict).
    """
    available, _ = detect()
    missing = [provider_name(p) for p in providers if provider_name(p) not in available]
    if missing:
        raise ProviderError(
            f"execution provider(s) {missing} are not in this onnxruntime build"
            f" (it has {available}); install the matching onnxruntime package"
            " (onnxruntime-gpu for CUDA and TensorRT) or ask for 'cpu'"
            + "".join(f". {problem}" for problem in install_problems())
        )
    with _SESSION_LOCK:
        try:
            session = new_session(model, providers, options)
        except Exception as exc:
            raise _session_error(exc) from exc
    # onnxruntime would retry a failed run on the CPU with only a print(); fail loudly instead.
    session.disable_fallback()
    got = session.get_providers()
    reasons = {}
    for p in providers:
        if provider_name(p) not in got and (strict or explicit):
            probe = probe_provider(p)  # cached: the reason it cannot start, with the fix
            if not probe.ok:
                reasons[probe.provider] = probe.reason
    check_session_providers(providers, got, strict=strict, explicit=explicit, reasons=reasons)
    return session


def check_session_providers(
    requested: Sequence[ProviderRequest], got: Sequence[str], *, strict: bool, explicit: bool,
    reasons: dict[str, str] | None = None,
) -> list[str]:
    """The providers asked for that the session did not get: ProviderError when ``strict``,
    a warning when they were asked for explicitly; returns them. ``reasons`` (from the probes)
    say why each could not start."""
    lost = [provider_name(p) for p in requested if provider_name(p) not in got]
    if lost:
        why = "; ".join(f"{name}: {reasons[name]}" for name in lost if reasons and name in reasons)
        message = (
            f"asked for {[provider_name(p) for p in requested]} but the session runs on"
            f" {list(got)}: {', '.join(lost)} could not start"
            + (f" ({why})" if why else " (`onnxbridge providers` shows why)")
        )
        if strict:
            raise ProviderError(message)
        if explicit:
            warnings.warn(message, OnnxBridgeWarning, stacklevel=4)
    return lost


def _session_error(exc: Exception) -> Exception:
    text = str(exc)
    return LoadError(f"onnxruntime cannot load this model: {text}")


# -- the sessions of one model -----------------------------------------------------------------
# Metadata key a converter writes when the graph uses operators from a custom-op library.
CUSTOM_OP_LIBRARY_KEY = "onnxbridge.custom_op_library"
# The libraries a model may ask for by name (a model never names a file path to load).
KNOWN_CUSTOM_OP_LIBRARIES = ("onnxruntime_extensions",)


def _register_custom_op_library(options: onnxruntime.SessionOptions, library: str | None) -> None:
    if not library:
        return
    if library not in KNOWN_CUSTOM_OP_LIBRARIES:
        raise LoadError(
            f"the model asks for custom-operator library {library!r}, which onnxbridge does not"
            f" know (known: {', '.join(KNOWN_CUSTOM_OP_LIBRARIES)}); register it yourself with"
            " m.add_session_hook(lambda options: options.register_custom_ops_library(path))"
        )
    try:
        import onnxruntime_extensions
    except ImportError as exc:
        raise ProviderError(
            "this model uses custom operators implemented in onnxruntime-extensions:"
            " pip install onnxruntime-extensions"
        ) from exc
    options.register_custom_ops_library(onnxruntime_extensions.get_library_path())


def proto_session(
    proto: onnx.ModelProto,
    wanted: Sequence[ProviderRequest],
    *,
    threads: int | None = None,
    strict: bool = False,
    explicit: bool = True,
    hooks: Sequence[Callable[[onnxruntime.SessionOptions], None]] = (),
) -> onnxruntime.InferenceSession:
    """A checked session for a model proto: version check, threads, its custom-op library, the
    hooks on its options; over protobuf's 2 GB limit it is loaded from a temporary file."""
    import tempfile

    from onnxbridge._files import PROTOBUF_LIMIT, save_proto
    from onnxbridge.runtime.compat import check_compatible

    check_compatible(proto, f"model {proto.graph.name!r}")
    options = session_options(threads)
    library = next((p.value for p in proto.metadata_props if p.key == CUSTOM_OP_LIBRARY_KEY), None)
    _register_custom_op_library(options, library)
    for hook in hooks:
        hook(options)
    if proto.ByteSize() <= PROTOBUF_LIMIT:
        return create_session(proto.SerializeToString(), wanted, options, strict=strict,
                              explicit=explicit)
    # Over 2 GB the model cannot be one byte string: onnxruntime reads it from files, and
    # has loaded the weights by the time the session exists, so the files may go after.
    with tempfile.TemporaryDirectory(prefix="onnxbridge-") as tmp:
        path = save_proto(proto, Path(tmp) / "model.onnx", external_data=True)[0]
        return create_session(str(path), wanted, options, strict=strict, explicit=explicit)


# (generation, session, its run function) for the hot path of OnnxModel.run.
DefaultSession = tuple[int, "onnxruntime.InferenceSession", Any]


class SessionCache:
    """The sessions one model has made, one per (providers, threads, strict), reused; and the
    default session with its compiled run function (the hot path of ``OnnxModel.run``)."""

    def __init__(
        self,
        make: Callable[[Sequence[ProviderRequest], int | None, bool, bool],
                       onnxruntime.InferenceSession],
    ) -> None:
        self._make = make  # (providers, threads, strict, explicit) -> a new session
        self._sessions: dict[str, onnxruntime.InferenceSession] = {}
        self._fast: dict[Any, onnxruntime.InferenceSession] = {}
        self._lock = threading.Lock()
        self.default: DefaultSession | None = None

    def __len__(self) -> int:
        return len(self._sessions) + len(self._fast) + (self.default is not None)

    def get(
        self,
        providers: str | Sequence[ProviderRequest] | None = None,
        threads: int | None = None,
        strict: bool = False,
    ) -> onnxruntime.InferenceSession:
        """The session for ``providers`` (None: the default), created on first use."""
        fast_key: Any = None
        if providers is None or isinstance(providers, str):
            fast_key = (providers, threads, strict, plan._GENERATION,
                        os.environ.get(ENV_PROVIDERS))
            cached = self._fast.get(fast_key)
            if cached is not None:
                return cached
        wanted, explicit = plan.resolve_providers(providers)
        key = repr((wanted, threads, strict))
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = self._make(wanted, threads, strict, explicit)
                self._sessions[key] = session
            if fast_key is not None:
                self._fast[fast_key] = session
        return session

    def default_session(self) -> DefaultSession:
        """The default providers' session and its run function, one compare when unchanged.
        ONNXBRIDGE_PROVIDERS is read when this session is made, not on each run."""
        cached = self.default
        if cached is not None and cached[0] == plan._GENERATION:
            return cached
        key = plan._GENERATION
        session = self.get()
        # The compiled session's run when the binding exposes it, else the public one.
        raw = getattr(session, "_sess", None)
        run = raw.run if raw is not None else (
            lambda names, feeds, options: session.run(names, feeds))
        self.default = (key, session, run)
        return self.default

    def clear(self) -> None:
        """Drop every session (new ones are made on next use)."""
        with self._lock:
            self._sessions.clear()
            self._fast.clear()
            self.default = None
