"""The scripts in examples/ run as users run them (small models, CPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    "script",
    [
        "quickstart_sklearn.py",
        pytest.param("pytorch_resnet.py", marks=pytest.mark.slow),
        pytest.param("custom_op_torch.py", marks=pytest.mark.slow),
    ],
)
def test_example_runs(script: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "OnnxModel" in proc.stdout
