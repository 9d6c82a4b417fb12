"""onnxbridge under each way onnxruntime can be installed, with the real packages.

`nox -s runtime_installs` moves one fresh virtual environment through these states, one pip
command at a time, and runs the tests of each state (ONNXBRIDGE_INSTALL_STATE names it):

- ``none``: no onnxruntime package at all. Converting works; verifying and running say what to
  install.
- ``gpu``: onnxruntime-gpu alone, on a machine without a usable NVIDIA GPU. CUDA and TensorRT are
  listed but cannot start: each is probed, skipped with the library that is missing, and never
  used silently.
- ``clash``: ``pip install onnxruntime`` on top of it. The two packages share one folder and the
  CPU build's files win (onnxruntime issue #26996); onnxbridge names both and the command to fix it.
- ``broken``: then ``pip uninstall onnxruntime``, which deletes files onnxruntime-gpu also needs.

Each test carries ``install_state(NAME)``; conftest.py deselects those of other states, so the
ordinary test run (no state set) leaves them all out.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import onnxbridge
from onnxbridge import OnnxBridgeWarning, ProviderError, runtime

CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
HAS_NVIDIA_GPU = Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None


def state(name: str) -> pytest.MarkDecorator:
    return pytest.mark.install_state(name)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onnxbridge.cli", *args], capture_output=True,
                          text=True, timeout=300)


def poly_model(tmp_path: Path, verify: bool = False) -> onnxbridge.OnnxModel:
    """A numpy Polynomial through the example plugin: a converter that needs no framework."""
    poly = np.polynomial.Polynomial([1.0, -2.0, 0.5])
    return onnxbridge.to_onnx(poly, np.linspace(-1, 1, 8, dtype=np.float32), verify=verify)


# -- none ---------------------------------------------------------------------------------------
@state("none")
def test_no_runtime_convert_save_load_work_run_says_what_to_install(tmp_path: Path) -> None:
    assert not runtime.runtime_installed()
    assert runtime.runtime_packages() == []
    m = poly_model(tmp_path)
    m = onnxbridge.load(m.save(tmp_path / "poly.onnx"))
    with pytest.raises(ProviderError, match=r"onnxruntime is not installed.*onnxbridge\[cpu\]"
                                            r".*onnxbridge\[gpu\]"):
        m.run(np.ones(4, np.float32))


@state("none")
def test_no_runtime_verify_fails_before_converting(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="onnxruntime is not installed"):
        poly_model(tmp_path, verify=True)


@state("none")
def test_no_runtime_command_line(tmp_path: Path) -> None:
    path = poly_model(tmp_path).save(tmp_path / "poly.onnx")
    info = cli("info", str(path))
    assert info.returncode == 0, info.stderr
    assert "onnxruntime: not installed" in info.stdout
    providers = cli("providers")
    assert providers.returncode == 1
    assert "onnxruntime is not installed" in providers.stderr
    assert len(providers.stderr.strip().splitlines()) == 1


# -- gpu: onnxruntime-gpu where no NVIDIA GPU can be used ---------------------------------------
gpu_without_device = pytest.mark.skipif(
    HAS_NVIDIA_GPU, reason="this machine has an NVIDIA GPU: tests/test_runtime.py covers it")


@state("gpu")
@gpu_without_device
def test_gpu_build_lists_cuda_but_probes_and_skips_it_with_the_missing_library() -> None:
    assert runtime.loaded_package() == "onnxruntime-gpu"
    assert [p.name for p in runtime.runtime_packages()] == ["onnxruntime-gpu"]
    assert runtime.install_problems() == []
    available, _ = runtime.detect()
    assert CUDA in available and TRT in available
    plan = runtime.auto_plan()
    assert plan.order == ["CPUExecutionProvider"]
    for name in (CUDA, TRT):
        reason = plan.skipped[name]
        assert "not found" in reason and ".so" in reason, reason
        assert "pip install" in reason or "NVIDIA driver" in reason or "TensorRT" in reason


@state("gpu")
@gpu_without_device
def test_gpu_build_probe_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    result = runtime._run_probe(CUDA)
    out, err = capfd.readouterr()
    assert not result.ok
    assert out == "" and err == "", (out, err)  # onnxruntime's log went into the reason
    assert "Failed to load library" in result.log  # and is kept for `providers --verbose`


@state("gpu")
@gpu_without_device
def test_gpu_build_explicit_cuda_warns_with_reason_strict_raises(tmp_path: Path) -> None:
    m = poly_model(tmp_path)
    x = np.linspace(-2, 2, 16, dtype=np.float32)
    expected = m.run(x, providers="cpu")
    with pytest.warns(OnnxBridgeWarning, match=r"CUDAExecutionProvider could not start "
                                                r"\(CUDAExecutionProvider: .*not found"):
        got = m.run(x, providers="cuda")
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ProviderError, match="could not start"):
        m.run(x, providers="cuda", strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the automatic order was probed: CPU, without a warning
        assert m.providers == ["CPUExecutionProvider"]
        np.testing.assert_array_equal(m.run(x), expected)


@state("gpu")
@gpu_without_device
def test_gpu_build_providers_command() -> None:
    done = cli("providers")
    assert done.returncode == 0, done.stderr
    assert "loaded: onnxruntime-gpu" in done.stdout
    assert "FAIL CUDAExecutionProvider" in done.stdout
    assert "run() will use, in order: CPUExecutionProvider" in done.stdout
    assert "[E:onnxruntime" not in done.stderr + done.stdout  # onnxruntime's log is not shown
    verbose = cli("providers", "--verbose")
    assert "what onnxruntime printed while probing CUDAExecutionProvider" in verbose.stdout


# -- clash: onnxruntime installed over onnxruntime-gpu ------------------------------------------
@state("clash")
def test_two_packages_in_one_folder_are_named_with_the_fix(tmp_path: Path) -> None:
    names = sorted(p.name for p in runtime.runtime_packages())
    assert names == ["onnxruntime", "onnxruntime-gpu"]
    (problem,) = runtime.install_problems()
    assert "same folder" in problem
    assert "pip uninstall -y onnxruntime" in problem and "onnxruntime-gpu" in problem
    assert problem.endswith("pip install onnxruntime-gpu")
    assert "the files loaded now are onnxruntime's" in problem  # the CPU build won
    with pytest.warns(OnnxBridgeWarning, match="same folder"):
        runtime.auto_plan()
    m = poly_model(tmp_path)
    with pytest.raises(ProviderError, match="not in this onnxruntime build.*same folder"):
        m.run(np.ones(4, np.float32), providers="cuda")
    done = cli("providers")
    assert done.stdout.startswith("onnxruntime packages installed:")
    assert "warning: " in done.stdout and "Keep one:" in done.stdout


# -- broken: one of the two uninstalled ---------------------------------------------------------
@state("broken")
def test_half_removed_install_says_how_to_repair() -> None:
    with pytest.raises(ProviderError, match=r"(broken|cannot be imported).*pip install"
                                            r" --force-reinstall --no-deps onnxruntime-gpu=="):
        runtime.ort()
    done = cli("providers")
    assert done.returncode == 1
    assert "--force-reinstall" in done.stderr
