"""The onnxbridge command, run as users run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxbridge import OnnxModel
from onnxbridge.cli import main


def test_demo_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "demo.onnx"
    proc = subprocess.run([sys.executable, "-m", "onnxbridge", "demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "verified against scikit-learn: passed" in proc.stdout
    assert "labels agree on 100.0% of rows" in proc.stdout
    assert out.stat().st_size > 0


def test_info_and_run(tmp_path: Path, scale_model: onnx.ModelProto,
                      capsys: pytest.CaptureFixture[str]) -> None:
    path = OnnxModel(scale_model).save(tmp_path / "m.onnx")
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "x: float32 [batch, 3]" in text and "Mul x1" in text
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "-o",
                 str(tmp_path / "y.npz")]) == 0
    with np.load(tmp_path / "y.npz") as y:
        np.testing.assert_array_equal(y["y"], [[1, 2, 3], [1, 2, 3]])


def test_errors_are_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "missing.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("onnxbridge info: error: no such model file") and "Traceback" not in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2


def test_converters_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    main(["converters"])
    assert "sklearn [onnxbridge]" in capsys.readouterr().out
