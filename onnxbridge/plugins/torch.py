"""PyTorch modules (torchvision, Hugging Face transformers, your own) through ``torch.onnx``.

This module is what the entry point loads at discovery, so it stays light: torch is imported
only when a model is converted. The task decides the export: the plain forward
(:mod:`onnxbridge.plugins._torch_export`), a causal LM's decoder with a cache
(:mod:`onnxbridge.plugins._torch_generate`) or an encoder-decoder bundle
(:mod:`onnxbridge.plugins._torch_seq2seq`). See docs/guide-pytorch.md and
docs/guide-generation.md for the options.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from onnxbridge.errors import ConversionError
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

    Options (keywords of ``to_onnx``): ``task`` ("text-generation", "text2text-generation",
    "forward"; inferred from a transformers model's class), ``exporter`` ("auto", "dynamo",
    "torchscript"), ``dynamic_axes`` ({input: {axis: name}} or {input: [axis, ...]}),
    ``input_names``, ``output_names`` and ``custom_ops`` ({torch op: "domain::OpType"}).
    """
    from onnxbridge.plugins._torch_export import PLAIN_OPTIONS, convert_module, generation_model
    from onnxbridge.plugins._torch_generate import TASKS, infer_task

    task = options.pop("task", None)
    if task is not None and task not in TASKS:
        raise ConversionError(f"task={task!r} is not one of {', '.join(map(repr, TASKS))}",
                              converter="torch")
    wanted = task or infer_task(model)
    plain = any(options.options.get(k) and options.options.get(k) != "auto"
                for k in PLAIN_OPTIONS)
    # A sample with the decoder's own inputs is a call of the forward, not a prompt.
    plain = plain or (wanted == "text2text-generation" and isinstance(sample, Mapping)
                      and any(str(k).startswith("decoder_") for k in sample))
    if wanted == "forward" or (task is None and plain):
        return convert_module(model, sample, options)
    trial = dataclasses.replace(options, options=dict(options.options))
    external = trial.options.get("external_data")  # generation_model takes the plain options
    try:
        source, inputs = generation_model(model, sample, trial)
        if wanted == "text-generation":
            from onnxbridge.plugins._torch_generate import convert_causal_lm

            result: ConversionResult = convert_causal_lm(source, inputs, trial,
                                                         task_given=task is not None,
                                                         external=external)
        else:
            from onnxbridge.plugins._torch_seq2seq import convert_seq2seq

            result = convert_seq2seq(source, inputs, trial, task_given=task is not None,
                                     external=external)
    except ConversionError as exc:
        if task is not None:
            raise
        # Inferred, not asked for: the plain forward is still what the user can have.
        result = convert_module(model, sample, options)
        result.notes.append(f"{wanted} export (inferred from {type(model).__name__}) failed, so"
                            f" the plain forward was exported: {exc}")
        return result
    options.options.clear()
    options.options.update(trial.options)
    return result
