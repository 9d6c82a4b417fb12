"""onnxbridge: one call from a trained model to a verified ONNX model, one call to run it.

Examples:
    >>> import onnxbridge                                   # doctest: +SKIP
    >>> m = onnxbridge.to_onnx(model, sample)               # doctest: +SKIP
    >>> m.save("model.onnx"); m = onnxbridge.load("model.onnx")   # doctest: +SKIP
    >>> y = m.run(x)                                        # doctest: +SKIP

Importing this package imports no ML framework: each is imported when a model of it is seen.
"""

import os as _os

# onnxruntime 1.32 writes a telemetry device id under ~/.cache/Microsoft when it is imported;
# it honours ORT_DISABLE_TELEMETRY if that is set first (docs/security.md). A value the user
# set is kept.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from onnxbridge._api import converters, load, register, to_onnx
from onnxbridge._version import __version__
from onnxbridge.errors import (
    AmbiguousConverterError,
    ConversionError,
    ConverterNotFoundError,
    InputError,
    LoadError,
    OnnxBridgeError,
    OnnxBridgeWarning,
    ParityError,
    PluginLoadError,
    ProviderError,
    RunError,
    UnsupportedModelError,
    UnsupportedOperatorError,
)
from onnxbridge.model import OnnxModel, TensorSpec
from onnxbridge.registry import ConversionResult, ConverterInfo, ConverterSpec, ConvertOptions
from onnxbridge.runtime import set_default_providers
from onnxbridge.verify import OutputParity, ParityReport
from onnxbridge.zoo import Zoo

__all__ = [
    "AmbiguousConverterError",
    "ConversionError",
    "ConversionResult",
    "ConvertOptions",
    "ConverterInfo",
    "ConverterNotFoundError",
    "ConverterSpec",
    "InputError",
    "LoadError",
    "OnnxBridgeError",
    "OnnxBridgeWarning",
    "OnnxModel",
    "OutputParity",
    "ParityError",
    "ParityReport",
    "PluginLoadError",
    "ProviderError",
    "RunError",
    "TensorSpec",
    "UnsupportedModelError",
    "UnsupportedOperatorError",
    "Zoo",
    "__version__",
    "converters",
    "load",
    "register",
    "set_default_providers",
    "to_onnx",
]
