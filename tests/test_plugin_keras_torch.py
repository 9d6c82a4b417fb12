"""Keras 3 on the PyTorch backend, in `nox -s tests` (torch is there; the frameworks session,
where TensorFlow lives, has no torch). The model is built and converted in a process of its own
with KERAS_BACKEND=torch, compared with Keras's own predict (tests/_keras_backends.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from _keras_backends import OTHER_BACKEND


@pytest.mark.slow
def test_torch_backend_converts() -> None:
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("torch") is None:
        if os.environ.get("ONNXBRIDGE_REQUIRE_TEST_EXTRA") == "1":  # set by `nox -s tests`
            pytest.fail("keras and torch are installed by the test extra; one is missing")
        pytest.skip("needs keras and torch")
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    out = subprocess.run([sys.executable, "-c", OTHER_BACKEND, "torch"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "converted on torch" in out.stdout
