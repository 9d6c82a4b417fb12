"""Execution providers: detect what the machine has, rank it, prove each choice runs, make sessions.

onnxruntime can list a provider that cannot start (TensorRT listed, its libraries missing) and
then silently run on the CPU. So every candidate is *probed* once per process: a session on a
tiny model, asking for that provider alone, must report it and compute the right answer. A
provider that fails is skipped with its reason (``onnxbridge providers`` prints them), and a
session that ends up on other providers than asked for warns, or raises with ``strict=True``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxbridge.errors import LoadError, OnnxBridgeWarning, ProviderError

if TYPE_CHECKING:
    import onnxruntime

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

# onnxruntime reports races when sessions are created concurrently: create them one at a time.
_SESSION_LOCK = threading.Lock()
_PROBE_LOCK = threading.Lock()
_PLAN_LOCK = threading.Lock()
_PROBES: dict[tuple[str, tuple[tuple[str, str], ...]], ProbeResult] = {}
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
    log: str = ""  # what onnxruntime printed during the probe (``onnxbridge providers -v``)


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


# -- the onnxruntime package itself ------------------------------------------------------------
# onnxruntime ships as one package per flavour (onnxruntime, onnxruntime-gpu, -directml, -openvino
# ...), all installing the same `onnxruntime` folder. Two of them in one environment overwrite each
# other's files: the last installed wins, and uninstalling either breaks the other (onnxruntime
# issue #26996). That is why onnxbridge does not depend on any one of them (extras `cpu`, `gpu`).
@dataclass(frozen=True)
class RuntimePackage:
    """An installed distribution that provides the ``onnxruntime`` module."""

    name: str
    version: str
    folder: str  # where its ``onnxruntime`` folder is


INSTALL_HINT = (
    "install exactly one onnxruntime package: pip install 'onnxbridge[cpu]' (CPU only) or"
    " 'onnxbridge[gpu]' (NVIDIA CUDA and TensorRT); onnxruntime-directml, onnxruntime-openvino and"
    " the other flavours work too"
)


def _onnxruntime_folders() -> list[str]:
    """Where ``import onnxruntime`` would look, found without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return []
    return [os.path.realpath(p) for p in (spec.submodule_search_locations or [])] if spec else []


def runtime_packages(*, importable_only: bool = False) -> list[RuntimePackage]:
    """The installed distributions that put files in an ``onnxruntime`` folder.

    ``importable_only`` looks only beside the folder ``import onnxruntime`` uses (one directory
    listing, for the check made on every first run), instead of every package on sys.path.
    """
    from importlib import metadata

    if importable_only:
        dists: Iterable[Any] = [
            metadata.PathDistribution(Path(os.path.dirname(folder)) / entry)
            for folder in _onnxruntime_folders()
            for entry in _listdir(os.path.dirname(folder))
            if entry.lower().startswith(("onnxruntime", "ort_", "ort-"))
            and entry.endswith(".dist-info")
        ]
    else:
        dists = metadata.distributions()
    found: dict[tuple[str, str], RuntimePackage] = {}
    for dist in dists:
        # The folder's name (onnxruntime_gpu-1.31.1.dist-info) says enough to skip the others
        # without parsing their metadata: reading every package's metadata costs ~100 ms.
        folder_name = os.path.basename(str(getattr(dist, "_path", ""))).lower()
        if folder_name and not folder_name.startswith(("onnxruntime", "ort_", "ort-")):
            continue
        try:
            name = str(dist.name or "").lower().replace("_", "-")
        except (KeyError, AttributeError):  # a distribution without a name: not ours to judge
            continue
        if not (name.startswith("onnxruntime") or name.startswith("ort-")):
            continue
        top = (dist.read_text("top_level.txt") or "").split()
        if "onnxruntime" not in top and not any(  # RECORD only when top_level.txt is silent
            f.parts[:2] == ("onnxruntime", "__init__.py") for f in dist.files or []
        ):
            continue  # onnxruntime-extensions, onnxruntime-genai: other modules
        folder = os.path.realpath(str(dist.locate_file("onnxruntime")))
        found[(name, folder)] = RuntimePackage(name, dist.version or "?", folder)
    return sorted(found.values(), key=lambda p: (p.folder, p.name))


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _build_info(key: str) -> str:
    """A field of the loaded onnxruntime's build_and_package_info ("" when unknown)."""
    try:
        from onnxruntime.capi import build_and_package_info
    except Exception:
        return ""
    return str(getattr(build_and_package_info, key, "") or "")


def loaded_package() -> str | None:
    """Which flavour's files ``import onnxruntime`` loads (``onnxruntime-gpu``, say), if known."""
    return _build_info("package_name") or None


def install_problems() -> list[str]:
    """Two onnxruntime packages in one folder: what is wrong and the command that fixes it."""
    by_folder: dict[str, list[RuntimePackage]] = {}
    for package in runtime_packages(importable_only=True):
        by_folder.setdefault(package.folder, []).append(package)
    problems = []
    for folder, packages in by_folder.items():
        if len(packages) < 2:
            continue
        names = [p.name for p in packages]
        keep = next((n for n in names if n != "onnxruntime"), names[0])
        loaded = loaded_package()
        problems.append(
            f"{' and '.join(f'{p.name} {p.version}' for p in packages)} are installed in the same"
            f" folder ({folder}) and overwrite each other's files"
            + (f"; the files loaded now are {loaded}'s" if loaded else "")
            + f". Keep one: pip uninstall -y {' '.join(names)} && pip install {keep}"
        )
    return problems


def _repair_hint() -> str:
    problems = install_problems()
    if problems:
        return " ".join(problems)
    packages = runtime_packages()
    if packages:
        pins = " ".join(f"{p.name}=={p.version}" for p in packages)
        return f"Reinstall it: pip install --force-reinstall --no-deps {pins}"
    return f"Reinstall it: {INSTALL_HINT}"


def ort() -> Any:
    """The onnxruntime module, or ProviderError saying what to install (or how to repair it)."""
    try:
        import onnxruntime
    except ImportError as exc:
        if runtime_packages():
            raise ProviderError(
                f"onnxruntime is installed but cannot be imported ({exc}). {_repair_hint()}"
            ) from exc
        raise ProviderError(
            f"onnxruntime is not installed; onnxbridge needs it to verify and run models: {INSTALL_HINT}"
        ) from exc
    if not hasattr(onnxruntime, "InferenceSession"):  # a half-removed install: a bare folder
        raise ProviderError(
            "the onnxruntime package is broken: its folder has no InferenceSession (this happens"
            f" when one of two onnxruntime packages in one folder is uninstalled). {_repair_hint()}"
        )
    return onnxruntime


def runtime_installed() -> bool:
    """Whether some onnxruntime package can be imported (without importing it)."""
    return bool(_onnxruntime_folders())


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


class _Captured:
    text = ""


@contextlib.contextmanager
def _capture_output() -> Iterator[_Captured]:
    """Collect what onnxruntime prints while a provider starts, instead of showing it.

    A provider that cannot start writes its reason (the library that failed to load) only to the
    process's stderr from C++, and onnxruntime's Python layer prints its fallback to stdout. Both
    file descriptors (and ``sys.stdout``) are pointed at temporary files for the moment of the
    probe (probes run one at a time), so the reason can be read and the terminal stays clean.
    Lines that are not onnxruntime's (another thread printing meanwhile) are written back.
    """
    captured = _Captured()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = {fd: os.dup(fd) for fd in (1, 2)}
    except (OSError, ValueError, AttributeError):  # no real stdout/stderr (pythonw): no capture
        yield captured
        return
    with tempfile.TemporaryFile() as out_sink, tempfile.TemporaryFile() as err_sink:
        python_out = io.StringIO()
        old_stdout = sys.stdout
        try:
            os.dup2(out_sink.fileno(), 1)
            os.dup2(err_sink.fileno(), 2)
            sys.stdout = python_out
            yield captured
        finally:
            sys.stdout = old_stdout
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            texts = []
            for sink in (out_sink, err_sink):
                sink.seek(0)
                texts.append(_ANSI.sub("", sink.read().decode("utf-8", "replace")))
            texts[0] += python_out.getvalue()
            captured.text = "".join(texts)
            for text, stream in zip(texts, (sys.stdout, sys.stderr), strict=True):
                others = [line for line in text.splitlines(keepends=True) if not _ORT_LINE.search(line)]
                if others:
                    with contextlib.suppress(Exception):
                        stream.write("".join(others))


# What onnxruntime prints when a provider fails (its C++ log lines, the Python EP Error block) and
# what preload_dlls() prints about libraries it could not load.
_ORT_LINE = re.compile(r"onnxruntime|EP Error|^\*+\s*$|when using \[|Falling back to \[|^\s*$"
                       r"|^Failed to load |cannot open shared object|Visual C\+\+|vc_redist"
                       r"|Skip loading CUDA|is built with CUDA")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LIBRARY_FAILED = re.compile(r"Failed to load library (\S+) with error: ([^\n]+)")
_MISSING_SO = re.compile(r"(lib[\w+.-]+?\.so(?:\.\d+)*): cannot open shared object file")
_CUDA_FAILURE = re.compile(r"(CUDA failure \d+: [^;\n]+|CUDA error[^\n]*)")
_CUDA_LIBS = ("libcudart", "libcublas", "libcublasLt", "libcufft", "libcurand", "libnvrtc",
              "libnvJitLink", "libcusparse", "libcusolver")


def _cuda_major() -> str:
    return _build_info("cuda_version").split(".")[0]


def _missing_library(log: str) -> str | None:
    """The shared library onnxruntime's log says it could not find (``libcublasLt.so.13``)."""
    failed = _LIBRARY_FAILED.search(log)
    missing = _MISSING_SO.search(failed.group(2) if failed else log)
    return missing.group(1) if missing else None


def _is_cuda_library(lib: str) -> bool:
    stem = lib.split(".so")[0]
    return stem in _CUDA_LIBS or stem.startswith("libcudnn")


def explain_failure(log: str) -> str | None:
    """The reason a provider failed to start, read from onnxruntime's own log, with the fix.

    None when the log says nothing recognisable (the caller keeps its generic reason).
    """
    failed = _LIBRARY_FAILED.search(log)
    lib = _missing_library(log)
    cuda = _cuda_major()
    cuda_name = f"CUDA {cuda}" if cuda else "CUDA"
    if lib:
        stem = lib.split(".so")[0]
        if stem == "libcuda":
            return (f"no NVIDIA driver ({lib} not found): this machine has no usable NVIDIA GPU,"
                    " or the container was started without GPU access")
        if stem == "libnvinfer" or stem.startswith("libnvinfer_") or stem.startswith("libnvonnx"):
            return (f"the TensorRT libraries are not installed ({lib} not found): install TensorRT"
                    " 10 and put its lib folder on LD_LIBRARY_PATH, or leave TensorRT out"
                    " (CUDA is used instead when it starts)")
        if stem.startswith("libcudnn"):
            return (f"cuDNN 9 is not found ({lib}): pip install nvidia-cudnn-cu{cuda or 'XX'},"
                    f" or import torch (a {cuda_name} build) before running")
        if stem in _CUDA_LIBS:
            return (f"the {cuda_name} runtime libraries are not found ({lib}): pip install"
                    f" 'onnxruntime-gpu[cuda,cudnn]' and nvidia-cublas, or import torch (a"
                    f" {cuda_name} build) before running")
        where = f" by {os.path.basename(failed.group(1))}" if failed else ""
        return f"a library needed{where} is not found: {lib}"
    if failed:
        return f"{os.path.basename(failed.group(1))} could not be loaded: {failed.group(2).strip()}"
    cuda_failure = _CUDA_FAILURE.search(log)
    if cuda_failure:
        return (f"{cuda_failure.group(1).strip()} (nvidia-smi shows the devices; check"
                " CUDA_VISIBLE_DEVICES)")
    return None


def _probe_session(provider: ProviderRequest) -> ProbeResult:
    import numpy as np

    onnxruntime = ort()
    name = provider_name(provider)
    start = time.perf_counter()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # a failing provider logs loudly; its reason is kept here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # onnxruntime warns on fallback; the probe reports it
            session = new_session(_probe_model(), [provider], options)
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


_PRELOADED: list[str] = []  # the outcome of onnxruntime.preload_dlls(), once per process


def _preload_cuda_libraries() -> bool:
    """Load CUDA and cuDNN from the nvidia-* pip packages (onnxruntime 1.21+), once."""
    if _PRELOADED:
        return _PRELOADED[0] == "ok"
    preload = getattr(ort(), "preload_dlls", None)
    if preload is None or not _cuda_major():
        _PRELOADED.append("unavailable")
        return False
    try:
        with _capture_output():
            preload()
    except Exception as exc:
        _PRELOADED.append(f"failed: {exc}")
        return False
    _PRELOADED.append("ok")
    return True


def _run_probe(provider: ProviderRequest) -> ProbeResult:
    """Probe one provider: its session must start on it and compute 1+1, 2+2; say why not."""
    name = provider_name(provider)
    with _SESSION_LOCK, _capture_output() as out:
        result = _probe_session(provider)
    if result.ok:
        return replace(result, log=out.text)
    reason = explain_failure(out.text)
    missing = _missing_library(out.text)
    if (name in (CUDA_EP, TENSORRT_EP) and missing and _is_cuda_library(missing)
            and _preload_cuda_libraries()):
        # The CUDA libraries may be installed as pip packages that nothing has loaded yet.
        with _SESSION_LOCK, _capture_output() as retry_out:
            retry = _probe_session(provider)
        if retry.ok:
            note = " after onnxruntime.preload_dlls() loaded CUDA from the nvidia pip packages"
            return replace(retry, reason=retry.reason + note, log=retry_out.text)
        note = " (also after onnxruntime.preload_dlls() looked in the nvidia pip packages)"
        retry_reason = explain_failure(retry_out.text) or retry.reason
        return replace(retry, reason=retry_reason + note, log=out.text + retry_out.text)
    return replace(result, reason=reason or result.reason, log=out.text)


def probe_provider(provider: ProviderRequest) -> ProbeResult:
    """Probe once per process (cached): can this provider really run a model here?

    A provider given with options (``("cuda", {"device_id": 1})``) is probed with them: one
    device may work where another does not.
    """
    options = provider[1] if isinstance(provider, tuple) else {}
    key = (provider_name(provider), tuple(sorted((str(k), str(v)) for k, v in options.items())))
    cached = _PROBES.get(key)
    if cached is not None:
        return cached
    with _PROBE_LOCK:
        cached = _PROBES.get(key)
        if cached is None:
            cached = _PROBES[key] = _run_probe(provider)
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
            plan.skipped[name] = ("not ranked by onnxbridge (not local compute, or a plugin EP):"
                                  " ask for it by name with providers=[...]")
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
    if _AUTO_PLAN is not None:
        return _AUTO_PLAN
    with _PLAN_LOCK:  # threads that arrive together wait for one plan (and one warning)
        if _AUTO_PLAN is None:
            available, devices = detect()
            plan = plan_providers(available, probe_provider, devices=devices)
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


def _accepts_versions(ir_version: int, opsets: dict[str, int]) -> bool:
    """Whether onnxruntime loads a one-node model with this IR version and these opsets (cached)."""
    key = (ir_version, tuple(sorted(opsets.items())))
    if key in _ACCEPTED:
        return _ACCEPTED[key]
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
    except Exception:
        _ACCEPTED[key] = False
        return False
    _ACCEPTED[key] = True
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


def _session_error(exc: Exception) -> Exception:
    text = str(exc)
    return LoadError(f"onnxruntime cannot load this model: {text}")
