"""Provider names: the short names users type, the default preference, and requests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onnxbridge.errors import ProviderError

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
CUDA_EP = "CUDAExecutionProvider"
TENSORRT_EP = "TensorrtExecutionProvider"

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
