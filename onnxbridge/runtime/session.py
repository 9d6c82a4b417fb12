"""Session creation: options, the session on the providers asked for, and what it really got."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxbridge.errors import InputError, LoadError, OnnxBridgeWarning, ProviderError
from onnxbridge.runtime import plan
from onnxbridge.runtime.devices import detect, new_session
from onnxbridge.runtime.install import _SESSION_LOCK, install_problems, ort
from onnxbridge.runtime.names import (
    CPU,
    ENV_PROVIDERS,
    ENV_THREADS,
    ProviderRequest,
    provider_name,
)
from onnxbridge.runtime.probe import probe_provider

if TYPE_CHECKING:
    import onnx
    import onnxruntime


def max_threads() -> int:
    """The most intra-op threads a session may ask for: 4 per CPU core, at least 64. Past the
    core count onnxruntime gains nothing, and each thread costs a stack: 100,000 of them
    exhaust memory or the process's thread limit (a hang or a crash inside onnxruntime)."""
    return max(64, 4 * (os.cpu_count() or 1))


def session_options(threads: int | None = None) -> onnxruntime.SessionOptions:
    """SessionOptions with the thread count from ``threads`` or ONNXBRIDGE_THREADS (0: ORT's own)."""
    where = "threads"
    if threads is None:
        env = os.environ.get(ENV_THREADS, "").strip()
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise ProviderError(f"{ENV_THREADS}={env!r} is not a whole number") from None
            where = ENV_THREADS
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int):
            raise InputError(f"{where} must be a whole number, got {threads!r}")
        if threads < 0:
            raise InputError(f"{where} must be 0 (onnxruntime's choice) or more, got {threads}")
        limit = max_threads()
        if threads > limit:
            raise InputError(
                f"{where}={threads} is over the limit of {limit} threads (4 per CPU core, at"
                f" least 64; this machine has {os.cpu_count()} cores): past the core count"
                " onnxruntime gets no faster, and each thread costs memory for its stack."
                " Use 0 for onnxruntime's own choice, or at most the number of cores")
    options = ort().SessionOptions()
    # onnxruntime prints each failed run and each graph remark as a coloured C++ log line on
    # stderr, beside the exception that says the same: keep only fatal ones (a session hook may
    # set log_severity_level back to 2 to see warnings).
    options.log_severity_level = 4
    if threads is not None:
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
    # The CPU provider is in every build and is no plugin: asking only for it needs no look.
    cpu_only = all(provider_name(p) == CPU for p in providers)
    available = [CPU] if cpu_only else detect()[0]
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
            session = new_session(model, providers, options, plugins=set() if cpu_only else None)
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


# Metadata key of onnxruntime session settings a converter recorded for the model (JSON object);
# only the settings below, with these values, are applied (a model names nothing else).
SESSION_CONFIG_KEY = "onnxbridge.session_config"
MODEL_SESSION_CONFIG = {"session.intra_op.allow_spinning": ("0", "1")}


def _apply_model_session_config(options: onnxruntime.SessionOptions, text: str | None) -> None:
    """Apply the allowed entries of a model's recorded session settings; others are ignored
    with a warning (the session is made without them)."""
    if not text:
        return
    import json

    try:
        entries = json.loads(text)
    except ValueError:
        entries = None
    if not isinstance(entries, dict):
        warnings.warn(f"{SESSION_CONFIG_KEY} in the model's metadata is not a JSON object;"
                      " ignored", OnnxBridgeWarning, stacklevel=3)
        return
    for key, value in entries.items():
        if value in MODEL_SESSION_CONFIG.get(key, ()):
            options.add_session_config_entry(key, value)
        else:
            warnings.warn(f"{SESSION_CONFIG_KEY}: {key}={value!r} is not a setting a model may"
                          f" ask for (allowed: {MODEL_SESSION_CONFIG}); ignored",
                          OnnxBridgeWarning, stacklevel=3)


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
    data_dir: str | os.PathLike[str] | None = None,
    label: str | None = None,
) -> onnxruntime.InferenceSession:
    """A checked session for a model proto: threads, its custom-op library, the
    hooks on its options. A proto whose tensors name external data (checked at load, in
    ``data_dir``) goes to onnxruntime as its small graph, and onnxruntime reads or maps the
    weights from their files itself; a proto over 2 GB with weights inline (built in memory)
    is written to a temporary folder first. Nothing over 2 GB is ever serialised. A model
    onnxruntime refuses is a LoadError saying why (:func:`explain_refusal`); ``label`` names
    the model there (its file), else its graph's name."""
    import tempfile

    from onnxbridge._files import has_external_data, is_large, save_proto, session_config

    options = session_options(threads)
    library = next((p.value for p in proto.metadata_props if p.key == CUSTOM_OP_LIBRARY_KEY), None)
    _register_custom_op_library(options, library)
    _apply_model_session_config(options, next(
        (p.value for p in proto.metadata_props if p.key == SESSION_CONFIG_KEY), None))
    for hook in hooks:  # after the model's own settings: a hook may change them
        hook(options)
    external = has_external_data(proto)
    if external and data_dir is None:
        raise LoadError(
            f"model {proto.graph.name!r} keeps weights in external data files but no folder"
            " was given to find them in; load it with onnxbridge.load(path), or"
            " load(data, base_dir=folder)"
        )
    # No compatibility check first: the session itself is the check (a tiny test session
    # on every load cost more than the model's own on small models); a refusal is explained
    # after the fact.
    try:
        if external and data_dir is not None:
            for key, value in session_config(proto, Path(data_dir)).items():
                options.add_session_config_entry(key, value)
            return create_session(proto.SerializeToString(), wanted, options, strict=strict,
                                  explicit=explicit)
        if not is_large(proto):
            return create_session(proto.SerializeToString(), wanted, options, strict=strict,
                                  explicit=explicit)
        # Over 2 GB the model cannot be one byte string: onnxruntime reads it from files, and
        # has loaded the weights by the time the session exists, so the files may go after.
        with tempfile.TemporaryDirectory(prefix="onnxbridge-") as tmp:
            path = save_proto(proto, Path(tmp) / "model.onnx", external_data=True)[0]
            return create_session(str(path), wanted, options, strict=strict, explicit=explicit)
    except LoadError as exc:
        raise explain_refusal(proto, exc, label or f"model {proto.graph.name!r}") from exc


def explain_refusal(proto: onnx.ModelProto, refusal: LoadError, what: str) -> LoadError:
    """Why onnxruntime refused the model, once it has: IR version or opsets newer than it
    supports (measured now, with the fix), else its own message plus onnx.checker's finding."""
    from onnxbridge._files import checker_findings
    from onnxbridge.runtime.compat import check_compatible

    try:
        check_compatible(proto, what)
    except LoadError as versions:
        return versions
    except Exception:  # measuring the versions failed too: onnxruntime's own message stands
        return refusal
    findings = checker_findings(proto)
    if not findings:
        return refusal
    return LoadError(f"{refusal} (onnx.checker finds the graph invalid too: {findings[0][:500]})")


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
