"""PyTorch converter benchmarks: export cost and CPU inference speed, as ratios from one run.

    python benchmarks/bench_torch.py            # full: 224x224 images, more repeats
    python benchmarks/bench_torch.py --quick    # a minute or so: fewer repeats
    python benchmarks/bench_torch.py --out results.md

Export: ``onnxbridge.to_onnx`` (export + tidy + parity check at two batch sizes) against
``torch.onnx.export`` called directly with the same exporter (dynamo=True, dynamic batch), so the
price of verification and post-processing is visible.
Inference: ``m.run`` (onnxruntime, CPU) against torch eager (eval, no_grad) on the same input,
at batch 1 and 8. Times are medians; every model has random weights.
"""

from __future__ import annotations

import argparse
import os
import platform
import warnings
from pathlib import Path
from typing import Any

from _common import median_seconds, report


def direct_export(model: Any, x: Any) -> Any:
    """What a careful user writes by hand: eval, dynamic batch, dynamo exporter, weights inline."""
    import torch

    from onnxbridge.plugins._torch_export import quiet

    model.eval()
    with quiet(), torch.no_grad():
        program = torch.onnx.export(
            model, (x,), dynamo=True, verbose=False, input_names=["x"],
            dynamic_shapes=({0: "batch"},),
        )
        return program.model_proto


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller export image")
    parser.add_argument("--out", type=Path, help="write the markdown table here too")
    args = parser.parse_args()

    import torch
    import torchvision

    import onnxbridge

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    export_repeats = 1 if args.quick else 3
    run_repeats = 5 if args.quick else 20
    image = 224
    names = ["resnet18", "mobilenet_v3_small"]

    lines = [
        f"### PyTorch benchmarks{' (--quick)' if args.quick else ''}",
        "",
        f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__},"
        f" {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores,"
        f" torch threads {torch.get_num_threads()}; images 3x{image}x{image}, random weights.",
        "",
        "#### Export time (dynamo exporter, dynamic batch)",
        "",
        "| model | torch.onnx.export | onnxbridge.to_onnx | ratio (to_onnx / export) |",
        "|---|---|---|---|",
    ]
    models = {name: getattr(torchvision.models, name)(weights=None).eval() for name in names}
    converted = {}
    for name, model in models.items():
        x = torch.randn(1, 3, image, image)
        # torch.export specialises a batch of 1, so the direct call gets a batch of 2.
        x2 = torch.randn(2, 3, image, image)
        direct = median_seconds(lambda m=model, x=x2: direct_export(m, x), export_repeats, 0)
        ours = median_seconds(lambda m=model, x=x: onnxbridge.to_onnx(m, x), export_repeats, 0)
        converted[name] = onnxbridge.to_onnx(model, x)
        lines.append(f"| {name} | {direct:.2f} s | {ours:.2f} s | {ours / direct:.2f}x |")
        print(lines[-1], flush=True)

    lines += [
        "",
        "#### CPU inference (median per call)",
        "",
        "| model | batch | torch eager | onnxbridge m.run | speed-up (torch / onnx) |",
        "|---|---|---|---|---|",
    ]
    for name, model in models.items():
        m = converted[name]
        for batch in (1, 8):
            x = torch.randn(batch, 3, image, image)
            xn = x.numpy()

            def eager(model: Any = model, x: Any = x) -> Any:
                with torch.no_grad():
                    return model(x)

            t_torch = median_seconds(eager, run_repeats, 2)
            t_onnx = median_seconds(lambda m=m, xn=xn: m.run(xn), run_repeats, 2)
            lines.append(
                f"| {name} | {batch} | {t_torch * 1000:.1f} ms | {t_onnx * 1000:.1f} ms |"
                f" {t_torch / t_onnx:.2f}x |"
            )
            print(lines[-1], flush=True)

    print()
    report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
