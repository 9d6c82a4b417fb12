"""Provider probes in a fresh process state, the version search, the device list and the probe
reasons in full (issue 12: written against surviving mutants of `runtime/`; docs/testing.md).
References: onnxruntime's own provider list and sessions, a brute-force maximum, texts written here."""

from __future__ import annotations

import os
import time
from pathlib import Path

import onnxruntime
import pytest

from onnxbridge import runtime
from onnxbridge.runtime import compat, devices, install, probe, session

CPU = "CPUExecutionProvider"


@pytest.fixture
def fresh_probes(monkeypatch: pytest.MonkeyPatch) -> dict[object, object]:
    """An empty probe cache, as in a new process (earlier tests have filled the real one)."""
    cache: dict[object, object] = {}
    monkeypatch.setattr(probe, "_PROBES", cache)
    return cache


def test_a_fresh_cpu_probe_runs_the_model_and_reports_every_field(fresh_probes: dict) -> None:
    start = time.perf_counter()
    result = runtime.probe_provider(CPU)
    elapsed = time.perf_counter() - start
    assert result.provider == CPU and result.ok is True
    assert result.reason == "ran a test model"
    assert 0 < result.seconds <= elapsed
    assert isinstance(result.log, str)
    assert list(fresh_probes.values()) == [result]
    assert runtime.probe_provider(CPU) is result  # cached: no second probe
    assert len(fresh_probes) == 1


def test_probes_are_kept_per_provider_option_name_and_value(fresh_probes: dict) -> None:
    plain = runtime.probe_provider(CPU)
    a = runtime.probe_provider((CPU, {"arena_extend_strategy": "kSameAsRequested"}))
    b = runtime.probe_provider((CPU, {"arena_extend_strategy": "kNextPowerOfTwo"}))
    c = runtime.probe_provider((CPU, {"arena_extend_strategy_x": "kNextPowerOfTwo"}))  # b's value
    assert len({id(plain), id(a), id(b), id(c)}) == 4 and len(fresh_probes) == 4
    assert all(r.ok and r.provider == CPU for r in (plain, a, b, c))
    assert runtime.probe_provider((CPU, {"arena_extend_strategy": "kNextPowerOfTwo"})) is b


@pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(),
                    reason="needs the CPU-only onnxruntime (CUDA silently falls back there)")
def test_a_fresh_probe_of_a_provider_this_build_lacks_says_it_fell_back(fresh_probes: dict) -> None:
    start = time.perf_counter()
    result = runtime.probe_provider("CUDAExecutionProvider")
    elapsed = time.perf_counter() - start
    assert result.provider == "CUDAExecutionProvider" and result.ok is False
    assert result.reason == ("session fell back to CPUExecutionProvider (the provider's libraries"
                             " are likely missing)")
    assert 0 < result.seconds <= elapsed
    unknown = runtime.probe_provider("FooExecutionProvider")
    assert unknown.ok is False and unknown.provider == "FooExecutionProvider"
    # what onnxruntime printed is kept for `onnxbridge providers -v`, not shown
    assert "Unknown Provider Type: FooExecutionProvider" in unknown.log


# -- the version search ------------------------------------------------------------------------
@pytest.mark.parametrize("low", [1, 7, 13])
def test_highest_finds_the_brute_force_answer_for_every_hint(low: int) -> None:
    high = low + 20
    for answer in range(low, high + 1):
        asked: list[int] = []

        def accepts(v: int, answer: int = answer, asked: list[int] = asked) -> bool:
            asked.append(v)
            if len(asked) > 64:  # 21 values need at most 7 questions: this one never ends
                raise AssertionError("the search does not end")
            return v <= answer

        expected = max(v for v in range(low, high + 1) if v <= answer)  # brute force
        for hint in [None, low - 1, low, answer - 1, answer, answer + 1, high - 1, high, high + 1]:
            asked.clear()
            got = compat._highest(accepts, low, high, hint=hint)
            assert got == expected, (answer, hint)
            assert all(low <= v <= high for v in asked), (answer, hint, asked)
            if hint == answer and low <= hint < high:
                assert asked == [hint, hint + 1]  # the common case: two probes, no search


def _loads(ir_version: int, opsets: dict[str, int]) -> bool:
    """Whether onnxruntime itself loads a one-node model with these versions."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = ir_version
    try:
        onnxruntime.InferenceSession(model.SerializeToString(), providers=[CPU])
    except Exception:
        return False
    return True


def test_runtime_support_is_the_edge_onnxruntime_itself_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "_SUPPORT", None)
    monkeypatch.setattr(compat, "_ACCEPTED", {})
    monkeypatch.setenv(compat.ENV_RUNTIME_CACHE, "off")
    support = runtime.runtime_support()
    assert support.version == onnxruntime.__version__
    ir, opset, ml = support.ir_version, support.opsets[""], support.opsets["ai.onnx.ml"]
    assert set(support.opsets) == {"", "ai.onnx.ml"}
    assert _loads(ir, {"": 13}) and not _loads(ir + 1, {"": 13})
    assert _loads(8, {"": opset}) and not _loads(8, {"": opset + 1})
    assert _loads(8, {"": 13, "ai.onnx.ml": ml}) and not _loads(8, {"": 13, "ai.onnx.ml": ml + 1})
    assert runtime.runtime_support() is support  # measured once per process


# -- the device list ---------------------------------------------------------------------------
def test_detect_lists_each_provider_once_in_onnxruntimes_order() -> None:
    available, found = devices.detect()
    listed = onnxruntime.get_available_providers()
    discovered = [d.ep_name for d in onnxruntime.get_ep_devices()]
    expected = list(listed) + [n for i, n in enumerate(discovered)
                               if n not in listed and n not in discovered[:i]]
    assert available == expected
    assert len(available) == len(set(available))
    assert [(d.provider, d.vendor, d.device_id) for d in found] == [
        (d.ep_name, str(d.device.vendor), int(d.device.device_id)) for d in onnxruntime.get_ep_devices()]
    assert all(d.kind in ("CPU", "GPU", "NPU") for d in found)


def test_thread_limit_is_4_per_core_and_at_least_64() -> None:
    cores = os.cpu_count() or 1
    assert session.max_threads() == (64 if cores <= 16 else 4 * cores)


# -- probe reasons, in full --------------------------------------------------------------------
LOG = ("[E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] [ONNXRuntimeError] : 1 :"
       " FAIL : Failed to load library /site/onnxruntime/capi/libonnxruntime_providers_{ep}.so"
       " with error: {lib}: cannot open shared object file: No such file or directory\n")


@pytest.mark.skipif(bool(probe._cuda_major()), reason="texts for a build without CUDA")
@pytest.mark.parametrize(("ep", "lib", "expected"), [
    ("cuda", "libcuda.so.1", "no NVIDIA driver (libcuda.so.1 not found): this machine has no"
     " usable NVIDIA GPU, or the container was started without GPU access"),
    ("tensorrt", "libnvinfer.so.10", "the TensorRT libraries are not installed (libnvinfer.so.10"
     " not found): install TensorRT 10 and put its lib folder on LD_LIBRARY_PATH, or leave"
     " TensorRT out (CUDA is used instead when it starts)"),
    ("tensorrt", "libnvinfer_plugin.so.10", "the TensorRT libraries are not installed"
     " (libnvinfer_plugin.so.10 not found): install TensorRT 10 and put its lib folder on"
     " LD_LIBRARY_PATH, or leave TensorRT out (CUDA is used instead when it starts)"),
    ("tensorrt", "libnvonnxparser.so.10", "the TensorRT libraries are not installed"
     " (libnvonnxparser.so.10 not found): install TensorRT 10 and put its lib folder on"
     " LD_LIBRARY_PATH, or leave TensorRT out (CUDA is used instead when it starts)"),
    ("cuda", "libcudnn_graph.so.9", "cuDNN 9 is not found (libcudnn_graph.so.9): pip install"
     " nvidia-cudnn-cuXX, or import torch (a CUDA build) before running"),
    ("cuda", "libcublasLt.so.13", "the CUDA runtime libraries are not found (libcublasLt.so.13):"
     " pip install 'onnxruntime-gpu[cuda,cudnn]' and nvidia-cublas, or import torch (a CUDA"
     " build) before running"),
    ("cuda", "libfoo.so.3", "a library needed by libonnxruntime_providers_cuda.so is not found:"
     " libfoo.so.3"),
])
def test_each_probe_reason_in_full(ep: str, lib: str, expected: str) -> None:
    assert probe.explain_failure(LOG.format(ep=ep, lib=lib)) == expected


@pytest.mark.skipif(bool(probe._cuda_major()), reason="texts for a build without CUDA")
def test_probe_reasons_without_the_library_line() -> None:
    assert probe.explain_failure("libcudart.so.12: cannot open shared object file") == (
        "the CUDA runtime libraries are not found (libcudart.so.12): pip install"
        " 'onnxruntime-gpu[cuda,cudnn]' and nvidia-cublas, or import torch (a CUDA build) before"
        " running")
    assert probe.explain_failure("libfoo.so.1: cannot open shared object file") == \
        "a library needed is not found: libfoo.so.1"
    assert probe.explain_failure("Failed to load library /x/libbar.so with error: undefined symbol:"
                                 " cudaFoo\n") == "libbar.so could not be loaded: undefined symbol: cudaFoo"
    assert probe.explain_failure("CUDA error cudaErrorNoDevice: no CUDA-capable device\n") == (
        "CUDA error cudaErrorNoDevice: no CUDA-capable device (nvidia-smi shows the devices;"
        " check CUDA_VISIBLE_DEVICES)")
    assert probe._missing_library(LOG.format(ep="cuda", lib="libz.so.1")) == "libz.so.1"


# -- which installed packages hold the onnxruntime module (read from .dist-info folders) ----------
def _dist_info(site: Path, folder: str, name: str, version: str, top: bytes | None,
               record: bytes | None) -> Path:
    info = site / folder
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if top is not None:
        (info / "top_level.txt").write_bytes(top)
    if record is not None:
        (info / "RECORD").write_bytes(record)
    return info


INIT = b"onnxruntime/__init__.py,sha256=x,10\n"


@pytest.mark.parametrize(("folder", "name", "version", "top", "record", "holds"), [
    ("onnxruntime_gpu-1.31.1.dist-info", "onnxruntime-gpu", "1.31.1", b"onnxruntime\n", None, True),
    ("onnxruntime-1.32.0.dist-info", "onnxruntime", "1.32.0", None, INIT, True),
    ("ort_nightly_gpu-1.33.0.dev1.dist-info", "ort-nightly-gpu", "1.33.0.dev1", None, INIT, True),
    ("onnxruntime.directml-1.20.0.dist-info", "onnxruntime.directml", "1.20.0", b"\xff\xfe\n",
     b"\xff\n" + INIT, True),  # bytes that are not UTF-8 are read past
    ("onnxruntime_extensions-0.14.0.dist-info", "onnxruntime-extensions", "0.14.0",
     b"onnxruntime_extensions\n", b"onnxruntime_extensions/__init__.py,sha256=x,10\n", False),
    ("onnxruntime_genai-0.9.0.dist-info", "onnxruntime-genai", "0.9.0", None, None, False),
    ("numpy-2.4.0.dist-info", "numpy", "2.4.0", b"onnxruntime\n", INIT, False),
])
def test_dist_info_folders_are_read_like_importlib_metadata_reads_them(
        tmp_path: Path, folder: str, name: str, version: str, top: bytes | None,
        record: bytes | None, holds: bool) -> None:
    from importlib import metadata

    info = _dist_info(tmp_path, folder, name, version, top, record)
    got = install._dist_info_package(info)
    if not holds:
        assert got is None
        return
    reference = metadata.Distribution.at(info)  # Python's own reader of the same folder
    normalized = reference.metadata["Name"].lower().replace("_", "-").replace(".", "-")
    assert got == install.RuntimePackage(normalized, reference.version,
                                         os.path.realpath(tmp_path / "onnxruntime"))


def test_a_dist_info_folder_without_a_version_says_so(tmp_path: Path) -> None:
    info = _dist_info(tmp_path, "onnxruntime.dist-info", "onnxruntime", "", b"onnxruntime\n", None)
    got = install._dist_info_package(info)
    assert got is not None and (got.name, got.version) == ("onnxruntime", "?")


# -- thread counts ----------------------------------------------------------------------------
def test_thread_counts_from_the_argument_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxbridge.errors import InputError, ProviderError

    monkeypatch.delenv("ONNXBRIDGE_THREADS", raising=False)
    default = onnxruntime.SessionOptions().intra_op_num_threads  # onnxruntime's own default
    assert session.session_options().intra_op_num_threads == default
    assert session.session_options(0).intra_op_num_threads == 0  # 0: onnxruntime's choice
    assert session.session_options(3).intra_op_num_threads == 3
    limit = session.max_threads()
    assert session.session_options(limit).intra_op_num_threads == limit
    with pytest.raises(InputError, match=f"threads={limit + 1} is over the limit of {limit} threads"):
        session.session_options(limit + 1)
    with pytest.raises(InputError, match="threads must be 0 .onnxruntime's choice. or more, got -1"):
        session.session_options(-1)
    with pytest.raises(InputError, match="threads must be a whole number, got True"):
        session.session_options(True)
    monkeypatch.setenv("ONNXBRIDGE_THREADS", " 0 ")
    assert session.session_options().intra_op_num_threads == 0
    monkeypatch.setenv("ONNXBRIDGE_THREADS", "2")
    assert session.session_options().intra_op_num_threads == 2
    assert session.session_options(5).intra_op_num_threads == 5  # the argument wins
    monkeypatch.setenv("ONNXBRIDGE_THREADS", "-2")
    with pytest.raises(InputError, match="ONNXBRIDGE_THREADS must be 0"):
        session.session_options()
    monkeypatch.setenv("ONNXBRIDGE_THREADS", "two")
    with pytest.raises(ProviderError, match="ONNXBRIDGE_THREADS='two' is not a whole number"):
        session.session_options()
