"""GPU: onnxruntime CUDA vs torch eager, with and without IO binding (needs a CUDA device).

resnet18 and vit_b_16 (random weights) at batch 1 and 32, float32. For onnxruntime:
- numpy in: the input is copied from the host on each call (m.run(x.cpu().numpy()));
- IO binding: a torch CUDA tensor is bound in place (m.run(x_cuda)), nothing copied to the host
  on the way in. Outputs come back to the host in both cases.
On a machine without CUDA (in onnxruntime and torch) it says so and exits 0.
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import median_seconds, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    import onnxruntime

    try:
        import torch
        import torchvision
    except ImportError:
        print("bench_gpu: torch and torchvision are needed; skipped")
        return
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers() or not torch.cuda.is_available():
        print("bench_gpu: no CUDA device with onnxruntime-gpu here; skipped")
        return
    import onnxbridge

    repeats = 10 if args.quick else 50
    lines = ["### GPU: onnxruntime CUDA vs torch eager", "",
             f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}, onnxruntime"
             f" {onnxruntime.__version__}; median of {repeats} calls, outputs copied to the host.", "",
             "| model | batch | torch eager ms | ORT numpy in ms | ORT IO binding ms |"
             " speed-up (torch / ORT binding) |",
             "|---|---:|---:|---:|---:|---:|"]
    models = {"resnet18": torchvision.models.resnet18(weights=None),
              "vit_b_16": torchvision.models.vit_b_16(weights=None)}
    for name, model in models.items():
        model = model.eval()
        m = onnxbridge.to_onnx(model, torch.randn(1, 3, 224, 224))
        assert "CUDAExecutionProvider" in m.providers, m.providers
        gpu_model = model.cuda()
        for batch in (1, 32):
            x = torch.randn(batch, 3, 224, 224, device="cuda")
            host = x.cpu().numpy()

            def eager(x: Any = x, net: Any = gpu_model) -> Any:
                with torch.no_grad():
                    return net(x).cpu()

            t_torch = median_seconds(eager, repeats, sync=torch.cuda.synchronize) * 1000
            t_numpy = median_seconds(lambda host=host, m=m: m.run(host), repeats,
                                     sync=torch.cuda.synchronize) * 1000
            t_bound = median_seconds(lambda x=x, m=m: m.run(x), repeats,
                                     sync=torch.cuda.synchronize) * 1000
            lines.append(f"| {name} | {batch} | {t_torch:.2f} | {t_numpy:.2f} | {t_bound:.2f} |"
                         f" {t_torch / t_bound:.2f}x |")
            print(lines[-1], flush=True)
    report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
