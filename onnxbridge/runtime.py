"""Execution providers: detect what the machine has, rank it, prove each choice runs, make sessions.

onnxruntime can list a provider that cannot start (TensorRT listed, its libraries missing) and
then silently run on the CPU. So every candidate is *probed* once per process: a session on a
tiny model, asking for that provider alone, must report it and compute the right answer. A
provider that fails is skipped with its reason (``onnxbridge providers`` prints them), and a
session that ends up on other providers than asked for warns, or raises with ``strict=True``.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from onnxbridge.errors import LoadError, OnnxBridgeWarning, ProviderError

if TYPE_CHECKING:
    import onnxruntime

__all__ = [
    "DEFAULT_ORDER",
    "HardwareDevice",
    "ProbeResult",
    "ProviderPlan",
    "ProviderRequest",
    "create_session",
    "detect",
    "normalize_providers",
    "plan_providers",
    "probe_provider",
    "resolve_providers",
    "RuntimeSupport",
    "check_compatible",
    "compatibility_problems",
    "runtime_support",
    "set_default_providers",
]

# A provider given by name, or as (name, options) as onnxruntime takes it.
ProviderRequest = str | tuple[str, dict[str, Any]]

# The default preference, fastest first. CPU is always last and always there.
DEFAULT_ORDER = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
    "OpenVINOExecutionProvider",
    "CPUExecutionProvider",
)
CPU = "CPUExecutionProvider"

# Short names users may type, and the onnxruntime names they stand for.
ALIASES = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}

ENV_PROVIDERS = "ONNXBRIDGE_PROVIDERS"
ENV_THREADS = "ONNXBRIDGE_THREADS"

# onnxruntime reports races when sessions are created concurrently: create them one at a time.
_SESSION_LOCK = threading.Lock()
_PROBE_LOCK = threading.Lock()
_PROBES: dict[str, ProbeResult] = {}
_PROCESS_DEFAULT: tuple[ProviderRequest, ...] | None = None
_GENERATION = 0


@dataclass(frozen=True)
class HardwareDevice:
    """A device onnxruntime's discovery reports, with the provider that can use it."""

    provider: str
    kind: str  # "CPU", "GPU", "NPU"
    vendor: str
    device_id: int

    def __str__(self) -> str:
        return f"{self.kind} {self.vendor} (id {self.device_id}) via {self.provider}"


@dataclass(frozen=True)
class ProbeResult:
    """Whether a provider really ran a tiny model, and why not when it did not."""

    provider: str
    ok: bool
    reason: str
    seconds: float = 0.0


@dataclass
class ProviderPlan:
    """The order ``run`` will use, and what was skipped with the reason."""

    order: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    devices: list[HardwareDevice] = field(default_factory=list)
    available: list[str] = field(default_factory=list)
    probes: list[ProbeResult] = field(default_factory=list)

    def __str__(self) -> str:
        lines = ["hardware found:"]
        lines += [f"  {d}" for d in self.devices] or ["  (onnxruntime device discovery not available)"]
        lines.append("onnxruntime providers in this build: " + ", ".join(self.available))
        lines.append("probes:")
        for p in self.probes:
            state = "ok  " if p.ok else "FAIL"
            lines.append(f"  {state} {p.provider}: {p.reason} ({p.seconds * 1000:.0f} ms)")
        lines.append("run() will use, in order: " + " > ".join(self.order))
        for name, why in self.skipped.items():
            lines.append(f"  skipped {name}: {why}")
        return "\n".join(lines)


def _full_name(name: str) -> str:
    key = name.strip()
    return ALIASES.get(key.lower(), key)


def normalize_providers(providers: str | Sequence[ProviderRequest]) -> tuple[ProviderRequest, ...]:
    """``"cpu"``, ``"cuda,cpu"``, ``["cuda", "cpu"]`` or (name, options) pairs, as full names."""
    if isinstance(providers, str):
        providers = [p for p in providers.split(",") if p.strip()]
    out: list[ProviderRequest] = []
    for p in providers:
        if isinstance(p, str):
            out.append(_full_name(p))
        elif isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], str) and isinstance(
            p[1], dict
        ):
            out.append((_full_name(p[0]), dict(p[1])))
        else:
            raise ProviderError(
                f"cannot read provider {p!r}: give a name such as 'cpu' or 'cuda', or a"
                " (name, options) pair"
            )
    if not out:
        raise ProviderError("an empty provider list was given; use 'cpu' at least")
    return tuple(out)


def provider_name(p: ProviderRequest) -> str:
    return p if isinstance(p, str) else p[0]


def set_default_providers(providers: str | Sequence[ProviderRequest] | None) -> None:
    """Set the providers every later ``run`` uses in this process (None: back to automatic).

    Examples:
        >>> onnxbridge.set_default_providers("cpu")    # doctest: +SKIP
    """
    global _PROCESS_DEFAULT, _GENERATION
    _PROCESS_DEFAULT = None if providers is None else normalize_providers(providers)
    _GENERATION += 1


def default_generation() -> int:
    """Changes whenever ``set_default_providers`` is called (sessions cache on it)."""
    return _GENERATION


# -- detection and probing ---------------------------------------------------------------------
def detect() -> tuple[list[str], list[HardwareDevice]]:
    """Providers in this onnxruntime build, and devices from its discovery (1.22+) if present."""
    import onnxruntime

    available = list(onnxruntime.get_available_providers())
    devices: list[HardwareDevice] = []
    get_ep_devices = getattr(onnxruntime, "get_ep_devices", None)
    if get_ep_devices is not None:
        try:
            for d in get_ep_devices():
                hw = d.device
                kind = str(hw.type).rsplit(".", 1)[-1]
                devices.append(HardwareDevice(d.ep_name, kind, str(hw.vendor), int(hw.device_id)))
                if d.ep_name not in available:
                    available.append(d.ep_name)
        except Exception:  # discovery is best effort; the provider list still works
            devices = []
    return available, devices


def _probe_model() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        "onnxbridge_probe",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model.SerializeToString()


def _run_probe(provider: ProviderRequest) -> ProbeResult:
    import numpy as np
    import onnxruntime

    name = provider_name(provider)
    start = time.perf_counter()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # a failing provider logs loudly; its reason is kept here
    try:
        with _SESSION_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # onnxruntime warns on fallback; the probe reports it
            session = onnxruntime.InferenceSession(_probe_model(), options, providers=[provider])
        got = session.get_providers()
        if name not in got:
            return ProbeResult(name, False, f"session fell back to {', '.join(got)}"
                               " (the provider's libraries are likely missing)",
                               time.perf_counter() - start)
        a = np.array([1.0, 2.0], np.float32)
        (c,) = session.run(None, {"a": a, "b": a})
        if not np.allclose(c, a + a):
            return ProbeResult(name, False, f"computed {c} for 1+1, 2+2", time.perf_counter() - start)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ProbeResult(name, False, f"{type(exc).__name__}: {text}", time.perf_counter() - start)
    return ProbeResult(name, True, "ran a test model", time.perf_counter() - start)


def probe_provider(provider: ProviderRequest) -> ProbeResult:
    """Probe once per process (cached): can this provider really run a model here?"""
    name = provider_name(provider)
    cached = _PROBES.get(name)
    if cached is not None:
        return cached
    with _PROBE_LOCK:
        cached = _PROBES.get(name)
        if cached is None:
            cached = _PROBES[name] = _run_probe(provider)
    return cached


def plan_providers(
    available: Iterable[str],
    probe: Callable[[str], ProbeResult],
    order: Sequence[str] = DEFAULT_ORDER,
    devices: Sequence[HardwareDevice] = (),
) -> ProviderPlan:
    """Rank the available providers by ``order`` and keep those whose probe passes.

    Pure logic: tests inject ``available`` and ``probe``. Providers not in ``order`` (Azure, say)
    are skipped as not local compute. CPU is always last and always kept.
    """
    available = list(dict.fromkeys(available))
    plan = ProviderPlan(order=[], devices=list(devices), available=available)
    rank = {name: i for i, name in enumerate(order)}
    for name in available:
        if name not in rank:
            plan.skipped[name] = "not a local compute provider onnxbridge ranks"
    for name in sorted((n for n in available if n in rank and n != CPU), key=rank.__getitem__):
        result = probe(name)
        plan.probes.append(result)
        if result.ok:
            plan.order.append(name)
        else:
            plan.skipped[name] = result.reason
    cpu = probe(CPU)  # CPU is kept whatever happens, but its probe is still shown
    plan.probes.append(cpu)
    plan.order.append(CPU)
    return plan


_AUTO_PLAN: ProviderPlan | None = None


def auto_plan() -> ProviderPlan:
    """The automatic provider order for this machine (detected and probed once per process)."""
    global _AUTO_PLAN
    if _AUTO_PLAN is None:
        available, devices = detect()
        _AUTO_PLAN = plan_providers(available, probe_provider, devices=devices)
    return _AUTO_PLAN


def resolve_providers(
    providers: str | Sequence[ProviderRequest] | None = None,
) -> tuple[tuple[ProviderRequest, ...], bool]:
    """The providers to ask for: the call's, else the process default, else the environment
    (ONNXBRIDGE_PROVIDERS), else the probed automatic order. The flag says whether they were
    asked for explicitly (then a fallback is worth a warning)."""
    if providers is not None:
        return normalize_providers(providers), True
    if _PROCESS_DEFAULT is not None:
        return _PROCESS_DEFAULT, True
    env = os.environ.get(ENV_PROVIDERS, "").strip()
    if env:
        return normalize_providers(env), True
    return tuple(auto_plan().order), False


def session_options(threads: int | None = None) -> onnxruntime.SessionOptions:
    """SessionOptions with the thread count from ``threads`` or ONNXBRIDGE_THREADS (0: ORT's own)."""
    import onnxruntime

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
    import onnxruntime

    available, _ = detect()
    missing = [provider_name(p) for p in providers if provider_name(p) not in available]
    if missing:
        raise ProviderError(
            f"execution provider(s) {missing} are not in this onnxruntime build"
            f" (it has {available}); install the matching onnxruntime package"
            " (onnxruntime-gpu for CUDA and TensorRT) or ask for 'cpu'"
        )
    with _SESSION_LOCK:
        try:
            session = onnxruntime.InferenceSession(
                model, sess_options=options, providers=list(providers)
            )
        except Exception as exc:
            raise _session_error(exc) from exc
    # onnxruntime would retry a failed run on the CPU with only a print(); fail loudly instead.
    session.disable_fallback()
    check_session_providers(providers, session.get_providers(), strict=strict, explicit=explicit)
    return session


def check_session_providers(
    requested: Sequence[ProviderRequest], got: Sequence[str], *, strict: bool, explicit: bool
) -> list[str]:
    """The providers asked for that the session did not get: ProviderError when ``strict``,
    a warning when they were asked for explicitly; returns them."""
    lost = [provider_name(p) for p in requested if provider_name(p) not in got]
    if lost:
        message = (
            f"asked for {[provider_name(p) for p in requested]} but the session runs on"
            f" {list(got)}: {', '.join(lost)} could not start (`onnxbridge providers` shows why)"
        )
        if strict:
            raise ProviderError(message)
        if explicit:
            warnings.warn(message, OnnxBridgeWarning, stacklevel=4)
    return lost


# -- what the installed onnxruntime can load ---------------------------------------------------
@dataclass(frozen=True)
class RuntimeSupport:
    """The newest IR version and opset per domain the installed onnxruntime accepts."""

    version: str
    ir_version: int
    opsets: dict[str, int]


_SUPPORT: RuntimeSupport | None = None


def _accepts(opset: int, ir_version: int, domain: str) -> bool:
    import onnxruntime
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"])], "onnxbridge_version_probe",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
    )
    imports = [helper.make_opsetid("", opset if domain == "" else 13)]
    if domain:
        imports.append(helper.make_opsetid(domain, opset))
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = ir_version
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    try:
        with _SESSION_LOCK:
            onnxruntime.InferenceSession(model.SerializeToString(), options,
                                         providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


def _highest(accepts: Callable[[int], bool], low: int, high: int, hint: int | None = None) -> int:
    """The highest n in [low, high] with accepts(n), given accepts(low) and monotonic answers.

    ``hint`` is the likely answer (what the installed onnx package knows): checking it and the
    next value first settles the common case with two tiny sessions instead of a search.
    """
    if hint is not None and low <= hint < high and accepts(hint):
        if not accepts(hint + 1):
            return hint
        low = hint + 1
    while low < high:
        mid = (low + high + 1) // 2
        if accepts(mid):
            low = mid
        else:
            high = mid - 1
    return low


def runtime_support() -> RuntimeSupport:
    """Measured once per process by loading tiny models: onnxruntime has no API that says it."""
    global _SUPPORT
    if _SUPPORT is None:
        import onnx
        import onnxruntime

        # (release, IR version, opset, ai.onnx.ml opset, ...) of the installed onnx package.
        latest = onnx.helper.VERSION_TABLE[-1]
        ml_known = int(latest[3])
        ir = _highest(lambda v: _accepts(13, v, ""), 7, 40, hint=onnx.IR_VERSION)
        opsets = {
            "": _highest(lambda v: _accepts(v, 8, ""), 13, 64, hint=onnx.defs.onnx_opset_version()),
            "ai.onnx.ml": _highest(lambda v: _accepts(v, 8, "ai.onnx.ml"), 1, 16, hint=ml_known),
        }
        _SUPPORT = RuntimeSupport(onnxruntime.__version__, ir, opsets)
    return _SUPPORT


def compatibility_problems(proto: Any) -> list[str]:
    """Why the installed onnxruntime cannot load this model (IR version, opsets); [] if it can."""
    support = runtime_support()
    problems = []
    if proto.ir_version > support.ir_version:
        problems.append(f"IR version {proto.ir_version} (onnxruntime {support.version} reads up to"
                        f" {support.ir_version})")
    for entry in proto.opset_import:
        domain = "" if entry.domain == "ai.onnx" else entry.domain
        newest = support.opsets.get(domain)
        if newest is not None and entry.version > newest:
            problems.append(f"opset {entry.version} of domain {domain or 'ai.onnx'!r} (onnxruntime"
                            f" {support.version} supports up to {newest})")
    return problems


def check_compatible(proto: Any, what: str = "this model") -> None:
    """LoadError naming both versions and the fix when onnxruntime is too old for the model."""
    problems = compatibility_problems(proto)
    if problems:
        raise LoadError(
            f"{what} needs a newer onnxruntime: it uses {'; '.join(problems)}. Upgrade"
            " onnxruntime (pip install -U onnxruntime), or convert the model again with"
            " to_onnx(..., opset=N) for an N this onnxruntime supports."
        )


def _session_error(exc: Exception) -> Exception:
    text = str(exc)
    return LoadError(f"onnxruntime cannot load this model: {text}")
