"""The provider plan: the automatic order for this machine, the process default, resolution."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from onnxbridge.errors import OnnxBridgeWarning
from onnxbridge.runtime.devices import HardwareDevice, detect
from onnxbridge.runtime.install import install_problems
from onnxbridge.runtime.names import (
    CPU,
    DEFAULT_ORDER,
    ENV_PROVIDERS,
    ProviderRequest,
    normalize_providers,
    provider_name,
)
from onnxbridge.runtime.probe import ProbeResult, probe_provider

_PLAN_LOCK = threading.Lock()
_PROCESS_DEFAULT: tuple[ProviderRequest, ...] | None = None
_GENERATION = 0


_GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider",
                            "ROCMExecutionProvider", "MIGraphXExecutionProvider",
                            "DmlExecutionProvider"})


@dataclass
class ProviderPlan:
    """The order ``run`` will use, and what was skipped with the reason."""

    order: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    devices: list[HardwareDevice] = field(default_factory=list)
    available: list[str] = field(default_factory=list)
    probes: list[ProbeResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # problems with the onnxruntime install

    def __str__(self) -> str:
        lines = [f"warning: {note}" for note in self.notes]
        lines.append("hardware found:")
        lines += [f"  {d}" for d in self.devices] or ["  (onnxruntime device discovery not available)"]
        listed = {d.provider for d in self.devices}
        for p in self.probes:  # built-in GPU providers' devices are not in the discovery list
            if p.ok and p.provider in _GPU_PROVIDERS and p.provider not in listed:
                lines.append(f"  GPU via {p.provider} (its probe ran there; onnxruntime's"
                             " discovery lists only plugin providers' devices)")
        lines.append("onnxruntime providers in this build: " + ", ".join(self.available))
        lines.append("probes:")
        for p in self.probes:
            state = "ok  " if p.ok else "FAIL"
            lines.append(f"  {state} {p.provider}: {p.reason} ({p.seconds * 1000:.0f} ms)")
        lines.append("run() will use, in order: " + " > ".join(self.order))
        failed = {p.provider for p in self.probes if not p.ok}
        for name, why in self.skipped.items():
            # a failed probe's reason is printed above; others (Azure) are said here
            lines.append(f"  skipped {name}" + (" (probe failed, above)" if name in failed
                                                 else f": {why}"))
        return "\n".join(lines)


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


def plan_providers(
    available: Iterable[str],
    probe: Callable[[str], ProbeResult],
    order: Sequence[str] = DEFAULT_ORDER,
    devices: Sequence[HardwareDevice] = (),
    *,
    probe_cpu: bool = True,
) -> ProviderPlan:
    """Rank the available providers by ``order`` and keep those whose probe passes.

    Pure logic: tests inject ``available`` and ``probe``. Providers not in ``order`` (Azure, say)
    are skipped as not local compute. CPU is always last and always kept; ``probe_cpu=False``
    keeps it without probing (the probe could not change the plan, only be shown).
    """
    available = list(dict.fromkeys(available))
    plan = ProviderPlan(order=[], devices=list(devices), available=available)
    rank = {name: i for i, name in enumerate(order)}
    for name in available:
        if name not in rank:
            plan.skipped[name] = ("not ranked by onnxbridge (not local compute, or a plugin EP):"
                                  " ask for it by name with providers=[...]")
    for name in sorted((n for n in available if n in rank and n != CPU), key=rank.__getitem__):
        result = probe(name)
        plan.probes.append(result)
        if result.ok:
            plan.order.append(name)
        else:
            plan.skipped[name] = result.reason
    if probe_cpu:  # CPU is kept whatever happens; its probe is only shown
        plan.probes.append(probe(CPU))
    plan.order.append(CPU)
    return plan


_AUTO_PLAN: ProviderPlan | None = None


def auto_plan() -> ProviderPlan:
    """The automatic provider order for this machine (detected and probed once per process).

    The CPU provider is not probed here (it is always kept): ``onnxbridge providers`` shows
    its probe."""
    global _AUTO_PLAN
    if _AUTO_PLAN is not None:
        return _AUTO_PLAN
    with _PLAN_LOCK:  # threads that arrive together wait for one plan (and one warning)
        if _AUTO_PLAN is None:
            available, devices = detect()
            plan = plan_providers(available, probe_provider, devices=devices, probe_cpu=False)
            plan.notes = install_problems()
            for note in plan.notes:  # two onnxruntime packages in one folder: say so once
                warnings.warn(note, OnnxBridgeWarning, stacklevel=4)
            _AUTO_PLAN = plan
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


def planned_providers() -> str:
    """Where ``run`` would go, in words, worked out without creating a session (displaying a
    model must not load it into onnxruntime)."""
    try:
        wanted, explicit = resolve_providers(None)
    except Exception as exc:  # a bad ONNXBRIDGE_PROVIDERS: show it rather than fail to display
        return f"cannot tell: {exc}"
    names = " > ".join(provider_name(p) for p in wanted)
    return f"{names} ({'as set' if explicit else 'automatic, best first'})"
