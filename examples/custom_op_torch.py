"""Export a PyTorch model that uses your own operator, and run it with onnxruntime.

    pip install "onnxbridge[cpu,torch]" onnxruntime-extensions
    python examples/custom_op_torch.py

1. The operator is a ``torch.library.custom_op`` (with a fake implementation for tracing).
2. ``to_onnx(..., custom_ops={op: "ai.onnx.contrib::ScaledSoftsign"})`` makes every call of it
   one ONNX node of the custom domain ``ai.onnx.contrib``; ``alpha`` becomes an attribute.
3. onnxruntime-extensions' ``@onnx_op`` gives onnxruntime a Python implementation of that node,
   and its library is registered in the session options.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op

import onnxbridge


# 1. The operator, as PyTorch sees it.
@torch.library.custom_op("example::scaled_softsign", mutates_args=())
def scaled_softsign(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha * x / (1 + x.abs())


@scaled_softsign.register_fake
def _(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.empty_like(x)


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_softsign(self.lin(x), 0.5)


# 3. The operator, as onnxruntime sees it (inputs, outputs and attributes typed).
@onnx_op(
    op_type="ScaledSoftsign",
    inputs=[PyCustomOpDef.dt_float],
    outputs=[PyCustomOpDef.dt_float],
    attrs={"alpha": PyCustomOpDef.dt_float},
)
def scaled_softsign_onnx(x: np.ndarray, **attrs: float) -> np.ndarray:
    return (attrs["alpha"] * x / (1 + np.abs(x))).astype(np.float32)


def main() -> None:
    model = Model().eval()
    # 2. Export, verified against torch through onnxruntime-extensions (batch 1 and 3).
    m = onnxbridge.to_onnx(
        model, torch.randn(1, 8),
        custom_ops={scaled_softsign: "ai.onnx.contrib::ScaledSoftsign"},
    )
    print(m)
    with tempfile.TemporaryDirectory() as tmp:
        path = m.save(Path(tmp) / "custom_op.onnx")
        loaded = onnxbridge.load(path)  # registers the extensions library for its sessions

        # The same file with plain onnxruntime: register the library yourself.
        options = ort.SessionOptions()
        options.register_custom_ops_library(get_library_path())
        session = ort.InferenceSession(str(path), options)
    x = torch.randn(5, 8)
    (got,) = session.run(None, {m.input_names[0]: x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    print("max abs difference to torch:", float(np.abs(got - want).max()))
    assert np.allclose(got, want, atol=1e-5)
    assert np.allclose(loaded.run(x), want, atol=1e-5)


if __name__ == "__main__":
    main()
