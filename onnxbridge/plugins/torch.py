"""PyTorch modules (torchvision, Hugging Face transformers, your own) through ``torch.onnx``.

This module is what the entry point loads at discovery, so it stays light: torch is imported
only when a model is converted (in :mod:`onnxbridge.plugins._torch_export`).
See docs/guide-pytorch.md for what ``to_onnx`` does with a module and which options it takes.
"""

from __future__ import annotations

from typing import Any

from onnxbridge.registry import ConversionResult, ConverterSpec, ConvertOptions

SPECS = [
    ConverterSpec(
        name="torch",
        classes=("torch.nn.modules.module.Module",),
        converter="onnxbridge.plugins.torch:convert",
        framework="torch",
        extra="torch",
        description="any torch.nn.Module (torch.export-based exporter, TorchScript as fallback)",
    )
]


def convert(model: Any, sample: Any, options: ConvertOptions) -> ConversionResult:
    """Export ``model`` on ``sample`` (a tensor, a tuple of tensors or a dict of keyword tensors).

    Options (keywords of ``to_onnx``): ``exporter`` ("auto", "dynamo", "torchscript"),
    ``dynamic_axes`` ({input: {axis: name}} or {input: [axis, ...]}), ``input_names``,
    ``output_names`` and ``custom_ops`` ({torch op: "domain::OpType"}).
    """
    from onnxbridge.plugins._torch_export import convert_module

    return convert_module(model, sample, options)
