"""Execution providers: detect what the machine has, rank it, prove each choice runs, make sessions.

onnxruntime can list a provider that cannot start (TensorRT listed, its libraries missing) and
then silently run on the CPU. So every candidate is *probed* once per process: a session on a
tiny model, asking for that provider alone, must report it and compute the right answer. A
provider that fails is skipped with its reason (``onnxbridge providers`` prints them), and a
session that ends up on other providers than asked for warns, or raises with ``strict=True``.

One idea per module, imported in this order (each only from those before it):
``names`` (provider names) and ``install`` (which onnxruntime is installed, ``ort()``) ->
``devices`` (what the build offers, ``new_session``) -> ``probe`` (can a provider really run)
-> ``plan`` (the order ``run`` uses) -> ``session`` (sessions and their bookkeeping);
``compat`` (IR/opset support) needs only ``install``.

Every name is re-exported here. The process-wide state that is *rebound* (``_AUTO_PLAN``,
``_SUPPORT``, ``_GENERATION``, ``_PROCESS_DEFAULT``) is read through to its module, so
``runtime._SUPPORT`` is always current; to replace it (or a function) in a test, patch the
module that owns it, e.g. ``monkeypatch.setattr(onnxbridge.runtime.plan, "_AUTO_PLAN", None)``.
"""

# Re-exports: every name that was importable from onnxbridge.runtime stays importable.
# ruff: noqa: F401

from __future__ import annotations

from typing import Any

from onnxbridge.runtime import compat, devices, install, names, plan, probe, session
from onnxbridge.runtime.compat import (
    _ACCEPTED,
    RuntimeSupport,
    _accepts,
    _accepts_versions,
    _highest,
    check_compatible,
    compatibility_problems,
    runtime_support,
)
from onnxbridge.runtime.devices import HardwareDevice, detect, new_session, plugin_providers
from onnxbridge.runtime.install import (
    _SESSION_LOCK,
    INSTALL_HINT,
    RuntimePackage,
    _build_info,
    _listdir,
    _onnxruntime_folders,
    _repair_hint,
    install_problems,
    loaded_package,
    ort,
    runtime_installed,
    runtime_packages,
)
from onnxbridge.runtime.names import (
    ALIASES,
    CPU,
    CUDA_EP,
    DEFAULT_ORDER,
    ENV_PROVIDERS,
    ENV_THREADS,
    TENSORRT_EP,
    ProviderRequest,
    _full_name,
    normalize_providers,
    provider_name,
)
from onnxbridge.runtime.plan import (
    _PLAN_LOCK,
    ProviderPlan,
    auto_plan,
    default_generation,
    plan_providers,
    planned_providers,
    resolve_providers,
    set_default_providers,
)
from onnxbridge.runtime.probe import (
    _ANSI,
    _CUDA_FAILURE,
    _CUDA_LIBS,
    _LIBRARY_FAILED,
    _MISSING_SO,
    _ORT_LINE,
    _PRELOADED,
    _PROBE_LOCK,
    _PROBES,
    ProbeResult,
    _capture_output,
    _Captured,
    _cuda_major,
    _is_cuda_library,
    _missing_library,
    _preload_cuda_libraries,
    _probe_model,
    _probe_session,
    _run_probe,
    explain_failure,
    probe_provider,
)
from onnxbridge.runtime.session import (
    SessionCache,
    _session_error,
    check_session_providers,
    create_session,
    session_options,
)

__all__ = [
    "DEFAULT_ORDER",
    "auto_plan",
    "HardwareDevice",
    "ProbeResult",
    "RuntimePackage",
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
    "explain_failure",
    "install_problems",
    "loaded_package",
    "plugin_providers",
    "runtime_installed",
    "runtime_packages",
    "runtime_support",
    "set_default_providers",
]

# Rebound at run time by the module that owns each: read through, never copied.
_LIVE = {"_AUTO_PLAN": plan, "_GENERATION": plan, "_PROCESS_DEFAULT": plan, "_SUPPORT": compat}


def __getattr__(name: str) -> Any:
    owner = _LIVE.get(name)
    if owner is None:
        raise AttributeError(f"module 'onnxbridge.runtime' has no attribute {name!r}")
    return getattr(owner, name)
