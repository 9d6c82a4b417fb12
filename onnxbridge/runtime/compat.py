"""What the installed onnxruntime can load: IR version and opsets, measured with tiny models.

A version set onnxruntime accepted is remembered per onnxruntime build in a small JSON file
(``ONNXBRIDGE_RUNTIME_CACHE``: a file path, or ``off``; default
``~/.cache/onnxbridge/runtime-accepts.json``), so a fresh process loading a model with the same
versions makes no probe session. A wrong or stale entry costs nothing but the early message:
the model's own session still refuses it, with the same explanation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from onnxbridge.errors import LoadError, ProviderError
from onnxbridge.runtime.install import _SESSION_LOCK, loaded_package, ort


# -- what the installed onnxruntime can load ---------------------------------------------------
@dataclass(frozen=True)
class RuntimeSupport:
    """The newest IR version and opset per domain the installed onnxruntime accepts."""

    version: str
    ir_version: int
    opsets: dict[str, int]


_SUPPORT: RuntimeSupport | None = None


def _accepts(opset: int, ir_version: int, domain: str) -> bool:
    versions = {"": opset} if domain == "" else {"": 13, domain: opset}
    return _accepts_versions(ir_version, versions)


_ACCEPTED: dict[tuple[int, tuple[tuple[str, int], ...]], bool] = {}


ENV_RUNTIME_CACHE = "ONNXBRIDGE_RUNTIME_CACHE"


def _disk_cache() -> tuple[str, str] | None:
    """(file, this onnxruntime build's key) of the cross-process cache, or None when it is off."""
    where = os.environ.get(ENV_RUNTIME_CACHE)
    if where is not None and where.strip().lower() in ("", "0", "off", "no", "false"):
        return None
    path = where or os.path.join(os.path.expanduser("~"), ".cache", "onnxbridge",
                                 "runtime-accepts.json")
    onnxruntime = ort()
    build = f"{loaded_package() or 'onnxruntime'} {onnxruntime.__version__}" \
            f" {os.path.dirname(os.path.abspath(onnxruntime.__file__))}"
    return path, build


def _disk_read() -> dict[str, list[str]]:
    where = _disk_cache()
    if where is None:
        return {}
    try:
        with open(where[0], encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _disk_knows(text: str) -> bool:
    where = _disk_cache()
    entry = _disk_read().get(where[1], []) if where else []
    return isinstance(entry, list) and text in entry


def _disk_remember(text: str) -> None:
    """Add an accepted version set (best effort: a read-only home only loses the shortcut)."""
    where = _disk_cache()
    if where is None:
        return
    path, build = where
    data = _disk_read()
    entry = data.get(build)
    entry = list(entry) if isinstance(entry, list) else []
    if text in entry:
        return
    data[build] = sorted({*entry, text})[-256:]
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        pass


def _accepts_versions(ir_version: int, opsets: dict[str, int]) -> bool:
    """Whether onnxruntime loads a one-node model with this IR version and these opsets (cached
    in this process, and on disk for the answers that were yes)."""
    key = (ir_version, tuple(sorted(opsets.items())))
    if key in _ACCEPTED:
        return _ACCEPTED[key]
    text = f"ir{ir_version} " + " ".join(f"{d or 'ai.onnx'}:{v}" for d, v in key[1])
    if _disk_knows(text):
        _ACCEPTED[key] = True
        return True
    onnxruntime = ort()
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"])], "onnxbridge_version_probe",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
    )
    imports = [helper.make_opsetid(domain, version) for domain, version in sorted(opsets.items())]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = ir_version
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    try:
        with _SESSION_LOCK:
            onnxruntime.InferenceSession(model.SerializeToString(), options,
                                         providers=["CPUExecutionProvider"])
    except Exception as exc:
        if not type(exc).__module__.startswith("onnxruntime"):
            # Not onnxruntime refusing the versions (out of memory, a broken install): no answer,
            # so nothing is cached and the next call asks again.
            raise ProviderError(
                f"could not check whether onnxruntime loads IR version {ir_version} with opsets"
                f" {opsets}: {type(exc).__name__}: {exc}"
            ) from exc
        _ACCEPTED[key] = False  # onnxruntime's own refusal: the same answer every time
        return False
    _ACCEPTED[key] = True
    _disk_remember(text)
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
        onnxruntime = ort()

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
    if _SUPPORT is None:
        # One tiny session with the model's own versions settles the usual case; the newest
        # versions (several sessions) are measured only to explain a refusal.
        versions = {"" if e.domain == "ai.onnx" else e.domain: e.version for e in proto.opset_import}
        wanted = {d: v for d, v in versions.items() if d in ("", "ai.onnx.ml")}
        wanted.setdefault("", 13)
        if _accepts_versions(proto.ir_version, wanted):
            return []
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
            f" onnxruntime (pip install -U {loaded_package() or 'onnxruntime'}), or convert the"
            " model again with"
            " to_onnx(..., opset=N) for an N this onnxruntime supports."
        )
