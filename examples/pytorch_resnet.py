"""PyTorch: a torchvision ResNet-18 (random weights) to ONNX with a batch axis that stays dynamic.

Run: python examples/pytorch_resnet.py   (needs: pip install "onnxbridge[cpu,torch]" torchvision)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision

import onnxbridge


def main() -> None:
    model = torchvision.models.resnet18(weights=None)   # left in train mode, as in many snippets
    sample = torch.randn(1, 3, 64, 64)                   # batch 1
    m = onnxbridge.to_onnx(model, sample)                # exported in eval mode, verified at batch 1 and 3
    assert model.training, "the user's mode is left as it was"
    print(m)
    print(m.parity)
    with tempfile.TemporaryDirectory() as tmp:
        path = m.save(Path(tmp) / "resnet18.onnx")       # one self-contained file
        files = sorted(p.name for p in path.parent.iterdir())
        print(f"{path.name}: {path.stat().st_size / 2**20:.1f} MiB; files written: {files}")
        loaded = onnxbridge.load(path)
    batch = torch.randn(8, 3, 64, 64)
    logits = loaded.run(batch)                           # batch 8 works although the sample had 1
    with torch.no_grad():
        expected = model.eval()(batch).numpy()
    print("batch 8 max abs difference:", float(np.abs(logits - expected).max()))
    assert np.allclose(logits, expected, atol=1e-3)


if __name__ == "__main__":
    main()
