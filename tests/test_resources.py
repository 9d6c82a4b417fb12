"""Resources a user or a file can ask for are bounded, and nothing is written outside the
model's folder as a side effect of loading and running it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import make_scale_model

from onnxbridge import OnnxModel


def test_loading_and_running_writes_nothing_to_the_home_folder(tmp_path: Path) -> None:
    """onnxruntime writes a telemetry device id to ~/.cache on import unless told not to."""
    path = OnnxModel(make_scale_model()).save(tmp_path / "m.onnx")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")} | {"HOME": str(home)}
    code = ("import sys, numpy as np, onnxbridge\n"
            "m = onnxbridge.load(sys.argv[1])\n"
            "assert m.run(np.ones((2, 3), np.float32)).shape == (2, 3)\n")
    subprocess.run([sys.executable, "-c", code, str(path)], env=env, check=True, timeout=120)
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
    # The same run with onnxruntime imported first shows what would be written otherwise.
    subprocess.run([sys.executable, "-c", "import onnxruntime"], env=env, check=True, timeout=120)
    assert any(p.name == "deviceid" for p in home.rglob("*"))
