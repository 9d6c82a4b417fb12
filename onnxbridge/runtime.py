"""onnxruntime sessions: which execution providers to ask for, and creating sessions safely."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from onnxbridge.errors import LoadError, ProviderError

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["ProviderRequest", "create_session", "normalize_providers"]

# A provider given by name, or as (name, options) as onnxruntime takes it.
ProviderRequest = str | tuple[str, dict[str, Any]]

# Short names users may type, and the onnxruntime names they stand for.
ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}

# onnxruntime reports races when sessions are created concurrently: create them one at a time.
_SESSION_LOCK = threading.Lock()


def _full_name(name: str) -> str:
    return ALIASES.get(name.lower(), name)


def normalize_providers(
    providers: str | Sequence[ProviderRequest] | None,
) -> tuple[ProviderRequest, ...]:
    """``"cpu"``, ``"cuda,cpu"``, ``["cuda", "cpu"]`` or (name, options) pairs, as full names."""
    if providers is None:
        return ("CPUExecutionProvider",)
    if isinstance(providers, str):
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    out: list[ProviderRequest] = []
    for p in providers:
        if isinstance(p, str):
            out.append(_full_name(p))
        elif isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str):
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


def create_session(
    model: bytes | str,
    providers: Sequence[ProviderRequest],
    options: onnxruntime.SessionOptions | None = None,
) -> onnxruntime.InferenceSession:
    """An InferenceSession on ``providers``, turning onnxruntime's failures into our errors."""
    import onnxruntime

    available = set(onnxruntime.get_available_providers())
    missing = [provider_name(p) for p in providers if provider_name(p) not in available]
    if missing:
        raise ProviderError(
            f"execution provider(s) {missing} are not in this onnxruntime build"
            f" (it has {sorted(available)}); install the matching onnxruntime package"
            " (onnxruntime-gpu for CUDA/TensorRT) or ask for 'cpu'"
        )
    with _SESSION_LOCK:
        try:
            return onnxruntime.InferenceSession(
                model, sess_options=options, providers=list(providers)
            )
        except Exception as exc:
            text = str(exc)
            raise LoadError(f"onnxruntime cannot load this model: {text}") from exc
