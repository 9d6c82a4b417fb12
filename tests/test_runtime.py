"""Execution providers: ranking with injected device lists, real probes, overrides, threads.

On a machine with the CUDA build of onnxruntime, the tests marked `gpu` show CUDA chosen,
TensorRT skipped with its reason (when its libraries are missing) and results matching the CPU.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
from conftest import make_scale_model
from onnx import numpy_helper

import onnxbridge
from onnxbridge import InputError, OnnxModel, ProviderError, runtime
from onnxbridge.io import bind_torch_inputs
from onnxbridge.runtime import ProbeResult, plan_providers

# onnxruntime-gpu lists CUDA even where it cannot start (no driver, no CUDA libraries): both count.
CUDA_LISTED = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
GPU = CUDA_LISTED and runtime.probe_provider("CUDAExecutionProvider").ok


def probe_from(failures: dict[str, str]):  # type: ignore[no-untyped-def]
    def probe(name: str) -> ProbeResult:
        if name in failures:
            return ProbeResult(name, False, failures[name])
        return ProbeResult(name, True, "ran a test model")

    return probe


def test_ranking_prefers_fast_providers_and_keeps_cpu_last() -> None:
    available = ["CPUExecutionProvider", "OpenVINOExecutionProvider", "CUDAExecutionProvider",
                 "TensorrtExecutionProvider", "AzureExecutionProvider"]
    plan = plan_providers(available, probe_from({}))
    assert plan.order == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                          "OpenVINOExecutionProvider", "CPUExecutionProvider"]
    assert "AzureExecutionProvider" in plan.skipped


def test_failed_probe_is_skipped_with_its_reason() -> None:
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    plan = plan_providers(available, probe_from({"TensorrtExecutionProvider": "libnvinfer.so missing"}))
    assert plan.order == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert plan.skipped["TensorrtExecutionProvider"] == "libnvinfer.so missing"
    text = str(plan)
    assert "FAIL TensorrtExecutionProvider: libnvinfer.so missing" in text
    assert "CUDAExecutionProvider > CPUExecutionProvider" in text


def test_cpu_is_always_there_even_if_not_listed() -> None:
    plan = plan_providers(["DmlExecutionProvider"], probe_from({"DmlExecutionProvider": "no GPU"}))
    assert plan.order == ["CPUExecutionProvider"]


def test_real_probe_on_cpu_passes_and_is_cached() -> None:
    first = runtime.probe_provider("CPUExecutionProvider")
    assert first.ok, first.reason
    assert runtime.probe_provider("CPUExecutionProvider") is first
    # with options, a provider is probed with them (another device may fail where one works)
    with_options = ("CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"})
    probed = runtime.probe_provider(with_options)
    assert probed is not first and probed.ok, probed.reason
    assert runtime.probe_provider(with_options) is probed


@pytest.mark.skipif(GPU, reason="needs a machine where CUDA cannot start")
def test_real_probe_detects_a_silent_fallback() -> None:
    # onnxruntime accepts a request for a CUDA it cannot start and quietly runs on the CPU.
    result = runtime._run_probe("CUDAExecutionProvider")
    assert not result.ok
    if CUDA_LISTED:  # onnxruntime-gpu without a GPU or CUDA libraries: the library that is missing
        assert "not found" in result.reason, result.reason
    else:
        assert "fell back to CPUExecutionProvider" in result.reason


def test_provider_spellings() -> None:
    norm = runtime.normalize_providers
    assert norm("cpu") == ("CPUExecutionProvider",)
    assert norm("cuda, cpu") == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert norm([("cuda", {"device_id": 1}), "cpu"]) == (
        ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider")
    with pytest.raises(ProviderError, match="cannot read provider"):
        norm([42])  # type: ignore[list-item]
    with pytest.raises(ProviderError, match="empty"):
        norm("")


def test_override_order_call_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXBRIDGE_PROVIDERS", "cpu")
    assert runtime.resolve_providers() == (("CPUExecutionProvider",), True)
    onnxbridge.set_default_providers(["CPUExecutionProvider"])
    try:
        assert runtime.resolve_providers("cuda")[0] == ("CUDAExecutionProvider",)
        monkeypatch.delenv("ONNXBRIDGE_PROVIDERS")
        assert runtime.resolve_providers() == (("CPUExecutionProvider",), True)
    finally:
        onnxbridge.set_default_providers(None)
    assert runtime.resolve_providers()[1] is False


@pytest.mark.skipif(CUDA_LISTED, reason="CUDA is in this build")
def test_requesting_a_provider_not_in_the_build_is_a_clear_error(scale_model: onnx.ModelProto) -> None:
    m = OnnxModel(scale_model)
    with pytest.raises(ProviderError, match="not in this onnxruntime build.*onnxruntime-gpu"):
        m.run(np.ones((1, 3), np.float32), providers="cuda")


def test_run_strict(scale_model: onnx.ModelProto) -> None:
    m = OnnxModel(scale_model)
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(m.run(x, providers="cpu", strict=True), m.run(x))
    if not CUDA_LISTED:
        with pytest.raises(ProviderError, match="not in this onnxruntime build"):
            m.run(x, providers="cuda,cpu", strict=True)
    elif not GPU:  # listed, cannot start: strict refuses, naming why
        with pytest.raises(ProviderError, match="CUDAExecutionProvider could not start.*not found"):
            m.run(x, providers="cuda,cpu", strict=True)


def test_session_reports_what_it_runs_on_and_is_cached(scale_model: onnx.ModelProto) -> None:
    m = OnnxModel(scale_model)
    assert m.providers[-1] == "CPUExecutionProvider"
    assert m.session() is m.session()
    assert m.session("cpu") is m.session(["CPUExecutionProvider"])
    assert m.session("cpu", threads=1) is not m.session("cpu")
    assert m.session("cpu", threads=1).get_session_options().intra_op_num_threads == 1


def test_threads_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXBRIDGE_THREADS", "2")
    assert runtime.session_options().intra_op_num_threads == 2
    monkeypatch.setenv("ONNXBRIDGE_THREADS", "many")
    with pytest.raises(ProviderError, match="not a whole number"):
        runtime.session_options()


def test_concurrent_runs_match_serial_and_share_one_session() -> None:
    rng = np.random.default_rng(0)
    m = OnnxModel(make_scale_model(rng.random(64).astype(np.float32), features=64))
    inputs = [rng.random((8, 64)).astype(np.float32) for _ in range(32)]
    serial = [m.run(x) for x in inputs]
    fresh = OnnxModel(make_scale_model(rng.random(64).astype(np.float32), features=64))
    fresh.proto.CopyFrom(m.proto)
    results: dict[int, np.ndarray] = {}
    sessions = set()
    barrier = threading.Barrier(8)

    def work(k: int) -> None:
        barrier.wait()
        sessions.add(id(fresh.session()))  # first-use creation races here, serialised inside
        for i in range(k, len(inputs), 8):
            results[i] = fresh.run(inputs[i])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sessions) == 1
    weight = numpy_helper.to_array(m.proto.graph.initializer[0])
    for i, expected in enumerate(serial):
        by_hand = inputs[i] * weight  # y = x * w, computed without onnxruntime
        np.testing.assert_allclose(expected, by_hand, rtol=1e-6)
        np.testing.assert_array_equal(results[i], expected)


def test_torch_tensors_through_io_binding(scale_model: onnx.ModelProto) -> None:
    torch = pytest.importorskip("torch")
    m = OnnxModel(scale_model)
    x = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    by_hand = np.array([[0, 2, 6], [3, 8, 15]], np.float32)  # x * [1, 2, 3]
    np.testing.assert_array_equal(m.run(x, io_binding=True), by_hand)
    # The binding itself: the tensor's own memory (float32, contiguous: no copy) is bound.
    x32 = x.float()
    session = m.session()
    bound = bind_torch_inputs(session, m.inputs, [x32], {}, force=True)
    assert bound is not None, "torch tensors were not bound"
    binding, kept = bound
    assert kept[0].data_ptr() == x32.data_ptr()
    session.run_with_iobinding(binding)
    np.testing.assert_array_equal(binding.copy_outputs_to_cpu()[0], by_hand)
    assert bind_torch_inputs(session, m.inputs, [x32], {}) is None  # CPU tensors, not forced
    assert bind_torch_inputs(session, m.inputs, [x.numpy()], {}, force=True) is None
    with pytest.raises(InputError, match=r"expects shape \[batch, 3\]"):
        m.run(torch.ones(2, 4), io_binding=True)
    with pytest.raises(InputError, match="could lose values"):
        m.run(torch.ones(2, 3, dtype=torch.complex64), io_binding=True)


def test_explicit_fallback_warns_and_strict_raises() -> None:
    # What a session with missing TensorRT libraries reports: asked [TRT, CPU], got [CPU].
    asked = ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    got = ["CPUExecutionProvider"]
    with pytest.warns(onnxbridge.OnnxBridgeWarning, match="TensorrtExecutionProvider could not start"):
        assert runtime.check_session_providers(asked, got, strict=False, explicit=True) == [
            "TensorrtExecutionProvider"]
    with pytest.raises(ProviderError, match="could not start"):
        runtime.check_session_providers(asked, got, strict=True, explicit=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the automatic order already probed: no warning
        runtime.check_session_providers(asked, got, strict=False, explicit=False)
        runtime.check_session_providers(got, got, strict=True, explicit=True)


@pytest.mark.skipif(not GPU, reason="needs onnxruntime-gpu and a CUDA device")
def test_gpu_cuda_chosen_tensorrt_reason_and_results_match_cpu() -> None:
    plan = runtime.auto_plan()
    print(plan)
    assert "CUDAExecutionProvider" in plan.order
    if "TensorrtExecutionProvider" not in plan.order:
        assert "TensorrtExecutionProvider" in plan.skipped
    rng = np.random.default_rng(1)
    m = OnnxModel(make_scale_model(rng.random(256).astype(np.float32), features=256))
    x = rng.random((16, 256)).astype(np.float32)
    assert "CUDAExecutionProvider" in m.providers
    expected = m.run(x, providers="cpu")
    np.testing.assert_allclose(m.run(x), expected, rtol=1e-6)
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        return
    # CUDA tensors are bound where they are: the binding holds the tensor's own memory.
    xc = torch.from_numpy(x).cuda()
    session = m.session()
    bound = bind_torch_inputs(session, m.inputs, [xc], {})
    assert bound is not None
    assert bound[1][0].data_ptr() == xc.data_ptr()
    np.testing.assert_allclose(m.run(xc), expected, rtol=1e-6)
    # A tensor whose producing kernels are still queued on torch's stream when run() starts.
    queue = torch.zeros(4096, 4096, device="cuda")
    for _ in range(20):
        queue = queue @ queue
    late = queue[:16, :256] + xc
    np.testing.assert_allclose(m.run(late), expected, rtol=1e-6)
    # float64 and not contiguous: cast and made contiguous on the device.
    strided = torch.from_numpy(np.ascontiguousarray(x.T)).cuda().double().T
    assert not strided.is_contiguous()
    np.testing.assert_allclose(m.run(strided), expected, rtol=1e-6)


# What onnxruntime-gpu 1.31.1 logged on this CPU machine (without and with torch's CUDA libraries
# loaded), and what a driver without a visible device logs: the reason must name the cause.
ORT_LOG = ("[E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] ... [ONNXRuntimeError] :"
           " 1 : FAIL : Failed to load library /site/onnxruntime/capi/libonnxruntime_providers_"
           "{ep}.so with error: {lib}: cannot open shared object file: No such file or directory\n")


@pytest.mark.parametrize(("ep", "lib", "expected"), [
    ("cuda", "libcuda.so.1", "no NVIDIA driver (libcuda.so.1 not found)"),
    ("cuda", "libcublasLt.so.13", "runtime libraries are not found (libcublasLt.so.13): pip install"),
    ("cuda", "libcudnn.so.9", "cuDNN 9 is not found (libcudnn.so.9)"),
    ("tensorrt", "libnvinfer.so.10", "TensorRT libraries are not installed (libnvinfer.so.10"),
    ("cuda", "libfoo.so.3", "a library needed by libonnxruntime_providers_cuda.so is not found:"
                            " libfoo.so.3"),
])
def test_probe_reasons_name_the_missing_library(ep: str, lib: str, expected: str) -> None:
    reason = runtime.explain_failure("\x1b[1;31m" + ORT_LOG.format(ep=ep, lib=lib) + "\x1b[m")
    assert reason is not None and expected in reason


def test_probe_reasons_for_cuda_errors_and_silence() -> None:
    log = "CUDA failure 100: no CUDA-capable device is detected ; GPU=0 ; hostname=x ; file=..."
    reason = runtime.explain_failure(log)
    assert reason is not None and reason.startswith("CUDA failure 100: no CUDA-capable device")
    assert "CUDA_VISIBLE_DEVICES" in reason
    assert runtime.explain_failure("") is None


def test_installed_runtime_is_one_package_and_loaded() -> None:
    packages = runtime.runtime_packages()
    assert runtime.loaded_package() in {p.name for p in packages}
    beside = runtime.runtime_packages(importable_only=True)  # the quick look: the loaded folder
    assert beside and set(beside) <= set(packages)
    folders = [p.folder for p in packages]
    if len(folders) == len(set(folders)):  # no two packages share a folder: nothing to warn about
        assert runtime.install_problems() == []


def test_probe_capture_keeps_what_is_not_onnxruntimes(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    capfd.readouterr()
    with runtime._capture_output() as captured:
        print("a line of the user's program")
        os.write(2, b"2026-01-01 [E:onnxruntime:Default, x.cc:1] Failed to load library\n")
        os.write(1, b"*************** EP Error ***************\n")
        os.write(2, b"a warning from another thread\n")
    out, err = capfd.readouterr()
    assert out == "a line of the user's program\n"
    assert err == "a warning from another thread\n"
    assert "Failed to load library" in captured.text and "EP Error" in captured.text


def test_versions_are_measured_only_to_explain_a_refusal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    ok = OnnxModel(make_scale_model()).save(tmp_path / "ok.onnx")
    too_new = make_scale_model(opset=runtime.runtime_support().opsets[""] + 1)
    new = OnnxModel(too_new).save(tmp_path / "new.onnx")
    code = f"""
import onnxbridge
from onnxbridge import LoadError, runtime
onnxbridge.load({str(ok)!r}).session()
assert runtime._SUPPORT is None, "a loadable model needed no measuring"
try:
    onnxbridge.load({str(new)!r}).session()
except LoadError as exc:
    assert "supports up to" in str(exc), exc
else:
    raise AssertionError("a too-new opset was accepted")
assert runtime._SUPPORT is not None
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_auto_plan_is_made_once_for_threads_arriving_together(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    # auto_plan and its state live in onnxbridge.runtime.plan: patch them there
    monkeypatch.setattr(runtime.plan, "_AUTO_PLAN", None)
    made = []
    real = runtime.plan_providers

    def slow_plan(*args, **kwargs):  # type: ignore[no-untyped-def]
        made.append(1)
        time.sleep(0.05)  # a wide window for a second thread to start its own plan
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime.plan, "plan_providers", slow_plan)
    barrier = threading.Barrier(6)
    plans = []

    def work() -> None:
        barrier.wait()
        plans.append(runtime.auto_plan())

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and len({id(p) for p in plans}) == 1


def test_plugin_providers_start_from_their_discovered_devices(scale_model: onnx.ModelProto) -> None:
    # A plugin EP is known only through get_ep_devices(); this build registers none, so the CPU
    # provider (which onnxruntime also lists as a device) stands in for one on the same path.
    if not hasattr(onnxruntime, "get_ep_devices"):
        pytest.skip("onnxruntime before 1.22 has no device discovery")
    assert runtime.plugin_providers() == set()
    x = {"x": np.ones((2, 3), np.float32)}
    options = onnxruntime.SessionOptions()
    session = runtime.new_session(scale_model.SerializeToString(), ["CPUExecutionProvider"],
                                  options, plugins={"CPUExecutionProvider"})
    # The provider went in through the session options with its discovered devices.
    assert options.has_providers(), "the plugin EP was not added from its devices"
    assert session.get_providers() == ["CPUExecutionProvider"]
    np.testing.assert_array_equal(session.run(None, x)[0], [[1, 2, 3], [1, 2, 3]])
    plain = onnxruntime.SessionOptions()  # a provider that is not a plugin goes by name
    runtime.new_session(scale_model.SerializeToString(), ["CPUExecutionProvider"], plain,
                        plugins=set())
    assert not plain.has_providers()


def test_version_check_caches_only_onnxruntimes_own_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxbridge.runtime import compat

    versions = {"": 13, "ai.onnx.ml": 2}  # a combination no other test asks about
    key = (7, tuple(sorted(versions.items())))
    compat._ACCEPTED.pop(key, None)

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise MemoryError("no room for a session")

    # A failure that is not onnxruntime refusing the versions: an error, and no answer kept.
    with monkeypatch.context() as patch:
        patch.setattr(onnxruntime, "InferenceSession", out_of_memory)
        with pytest.raises(ProviderError, match="could not check.*MemoryError"):
            compat._accepts_versions(7, versions)
    assert key not in compat._ACCEPTED
    assert compat._accepts_versions(7, versions) is True  # asked again, of the real onnxruntime
    # onnxruntime's own refusal is an answer, kept for the process.
    assert compat._accepts_versions(7, {"": 10_000}) is False
    assert compat._ACCEPTED[(7, (("", 10_000),))] is False


# -- found by mutation testing (nox -s mutation) ------------------------------------------------------
def test_each_change_of_the_process_default_reaches_cached_sessions() -> None:
    both = ["AzureExecutionProvider", "CPUExecutionProvider"]
    if "AzureExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("needs a second provider (the CPU wheel's Azure provider) to tell sessions apart")
    m = OnnxModel(make_scale_model())
    x = np.ones((2, 3), np.float32)
    try:
        for default in (both, ["CPUExecutionProvider"], both, ["CPUExecutionProvider"]):
            runtime.set_default_providers(default)
            assert m.session().get_providers() == default
            np.testing.assert_allclose(m.run(x), x * [1, 2, 3])
            assert m._sessions.default is not None and m._sessions.default[1].get_providers() == default
        # The rebound state reads live through the package, as it did before the split.
        assert runtime._PROCESS_DEFAULT == runtime.plan._PROCESS_DEFAULT == ("CPUExecutionProvider",)
        assert runtime._GENERATION == runtime.plan._GENERATION
    finally:
        runtime.set_default_providers(None)
    assert runtime._PROCESS_DEFAULT is None
    with pytest.raises(AttributeError, match=r"^module 'onnxbridge.runtime' has no attribute '_NOPE'$"):
        runtime._NOPE  # noqa: B018


def test_new_session_asks_for_exactly_the_providers_given() -> None:
    """onnxruntime's own default is every available provider (Azure too, in the CPU wheel): the
    list given must reach it, not be dropped."""
    from onnxbridge.runtime.devices import new_session

    data = make_scale_model().SerializeToString()
    assert new_session(data, ["CPUExecutionProvider"]).get_providers() == ["CPUExecutionProvider"]
    if "AzureExecutionProvider" in onnxruntime.get_available_providers():
        assert new_session(data, ["AzureExecutionProvider", "CPUExecutionProvider"]).get_providers() == [
            "AzureExecutionProvider", "CPUExecutionProvider"]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = new_session(data, ["CPUExecutionProvider"], options)
    assert session.get_session_options().intra_op_num_threads == 1


def test_the_plan_text_in_full() -> None:
    """What `onnxbridge info` prints: every line, from a plan whose facts the test chose."""
    from onnxbridge.runtime.devices import HardwareDevice

    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "AzureExecutionProvider",
                 "CPUExecutionProvider", "CUDAExecutionProvider"]
    probes = {"TensorrtExecutionProvider": ProbeResult("TensorrtExecutionProvider", False, "no lib", 0.0124),
              "CUDAExecutionProvider": ProbeResult("CUDAExecutionProvider", True, "ran", 0.2),
              "CPUExecutionProvider": ProbeResult("CPUExecutionProvider", True, "ran", 0.001)}
    gpu = HardwareDevice("CUDAExecutionProvider", "GPU", "NVIDIA", 0)
    plan = plan_providers(available, probes.__getitem__, devices=[gpu])
    plan.notes = ["two onnxruntime packages"]
    assert plan.available == available[:4] and plan.devices == [gpu]
    assert str(plan).splitlines() == [
        "warning: two onnxruntime packages",
        "hardware found:",
        "  GPU NVIDIA (id 0) via CUDAExecutionProvider",
        "onnxruntime providers in this build: TensorrtExecutionProvider, CUDAExecutionProvider,"
        " AzureExecutionProvider, CPUExecutionProvider",
        "probes:",
        "  FAIL TensorrtExecutionProvider: no lib (12 ms)",
        "  ok   CUDAExecutionProvider: ran (200 ms)",
        "  ok   CPUExecutionProvider: ran (1 ms)",
        "run() will use, in order: CUDAExecutionProvider > CPUExecutionProvider",
        "  skipped AzureExecutionProvider: not ranked by onnxbridge (not local compute, or a plugin"
        " EP): ask for it by name with providers=[...]",
        "  skipped TensorrtExecutionProvider (probe failed, above)",
    ]
    bare = plan_providers(["CPUExecutionProvider"], probes.__getitem__)
    assert "  (onnxruntime device discovery not available)" in str(bare).splitlines()
    # onnxruntime 1.31's discovery lists only the CPU on a CUDA machine (seen on an H200): the
    # GPU that the CUDA probe ran on is still said, TensorRT's failed probe adds nothing
    cpu = HardwareDevice("CPUExecutionProvider", "CPU", "Intel", 0)
    found = plan_providers(available, probes.__getitem__, devices=[cpu])
    assert str(found).splitlines()[:3] == [
        "hardware found:", "  CPU Intel (id 0) via CPUExecutionProvider",
        "  GPU via CUDAExecutionProvider (its probe ran there; onnxruntime's discovery lists only"
        " plugin providers' devices)"]


def test_detect_reports_what_onnxruntime_discovers() -> None:
    available, devices = runtime.detect()
    assert available[:len(onnxruntime.get_available_providers())] == onnxruntime.get_available_providers()
    if not hasattr(onnxruntime, "get_ep_devices"):
        pytest.skip("this onnxruntime has no device discovery")
    found = onnxruntime.get_ep_devices()
    assert [(d.provider, d.vendor, d.device_id) for d in devices] == [
        (e.ep_name, str(e.device.vendor), int(e.device.device_id)) for e in found]
    assert [d.kind for d in devices] == [str(e.device.type).split(".")[-1] for e in found]
    assert "CPU" in {d.kind for d in devices} and set(available) >= {e.ep_name for e in found}
    assert runtime.auto_plan().devices == devices
