"""What this onnxruntime build offers: providers, discovered devices, plugin EPs, and
``new_session``, the one primitive every session (probes included) is started through."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from onnxbridge.runtime.install import ort
from onnxbridge.runtime.names import CPU, ProviderRequest, provider_name

if TYPE_CHECKING:
    import onnxruntime


@dataclass(frozen=True)
class HardwareDevice:
    """A device onnxruntime's discovery reports, with the provider that can use it."""

    provider: str
    kind: str  # "CPU", "GPU", "NPU"
    vendor: str
    device_id: int

    def __str__(self) -> str:
        return f"{self.kind} {self.vendor} (id {self.device_id}) via {self.provider}"


# -- detection and probing ---------------------------------------------------------------------
def detect() -> tuple[list[str], list[HardwareDevice]]:
    """Providers in this onnxruntime build, and devices from its discovery (1.22+) if present."""
    onnxruntime = ort()

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


def plugin_providers() -> set[str]:
    """Execution providers known only through device discovery: plugin EPs registered with
    ``onnxruntime.register_execution_provider_library`` (onnxruntime 1.22+). onnxruntime starts
    them from session options and their devices, not from the ``providers=`` list."""
    onnxruntime = ort()
    get_ep_devices = getattr(onnxruntime, "get_ep_devices", None)
    if get_ep_devices is None:
        return set()
    try:
        names = {d.ep_name for d in get_ep_devices()}
    except Exception:
        return set()
    return names - set(onnxruntime.get_available_providers())


def new_session(
    model: bytes | str,
    providers: Sequence[ProviderRequest],
    options: onnxruntime.SessionOptions | None = None,
    *,
    plugins: set[str] | None = None,
) -> onnxruntime.InferenceSession:
    """``InferenceSession`` on ``providers``, in order; plugin EPs (``plugins``, by default
    :func:`plugin_providers`) are added with their discovered devices through the session
    options, the others by name. Creation is not locked here: callers hold ``_SESSION_LOCK``."""
    onnxruntime = ort()
    plugins = plugin_providers() if plugins is None else plugins
    if not any(provider_name(p) in plugins for p in providers):
        return onnxruntime.InferenceSession(model, sess_options=options, providers=list(providers))
    options = options if options is not None else onnxruntime.SessionOptions()
    devices = list(onnxruntime.get_ep_devices())
    for p in providers:
        name = provider_name(p)
        values = {str(k): str(v) for k, v in (p[1] if isinstance(p, tuple) else {}).items()}
        if name in plugins:
            options.add_provider_for_devices([d for d in devices if d.ep_name == name], values)
        elif name != CPU:  # the CPU provider is always appended last by onnxruntime itself
            options.add_provider(name, values)
    return onnxruntime.InferenceSession(model, sess_options=options)
