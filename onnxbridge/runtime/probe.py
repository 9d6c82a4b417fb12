"""Probing: can a provider really run a tiny model here? Output capture and failure reasons."""

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
from collections.abc import Iterator
from dataclasses import dataclass, replace

from onnxbridge.runtime.devices import new_session
from onnxbridge.runtime.install import _SESSION_LOCK, _build_info, ort
from onnxbridge.runtime.names import CUDA_EP, TENSORRT_EP, ProviderRequest, provider_name

_PROBE_LOCK = threading.Lock()
_PROBES: dict[tuple[str, tuple[tuple[str, str], ...]], ProbeResult] = {}


@dataclass(frozen=True)
class ProbeResult:
    """Whether a provider really ran a tiny model, and why not when it did not."""

    provider: str
    ok: bool
    reason: str
    seconds: float = 0.0
    log: str = ""  # what onnxruntime printed during the probe (``onnxbridge providers -v``)


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
