"""The onnxbridge exception tree.

Every error raised on purpose by onnxbridge inherits ``OnnxBridgeError``; some also inherit a
builtin so that code written against the builtin keeps working:

    OnnxBridgeError
    +-- ConverterNotFoundError (TypeError)   no converter for this model type
    +-- AmbiguousConverterError              two converters tie for a model
    +-- PluginLoadError                      a converter plugin failed to import
    +-- ConversionError                      the converter failed (the original is __cause__)
    |   +-- UnsupportedOperatorError         names the op(s), the framework, and what to do
    |   +-- UnsupportedModelError            a model feature the backend cannot represent
    +-- ParityError                          ONNX outputs differ from the source beyond tolerance
    +-- LoadError (ValueError)               not an ONNX model, truncated, unsafe external data
    +-- InputError (ValueError)              wrong input name / dtype / shape, said plainly
    +-- ProviderError (RuntimeError)         a requested execution provider cannot run
    +-- RunError (RuntimeError)              onnxruntime failed while running the model

Warnings use ``OnnxBridgeWarning`` so they can be filtered as one family.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onnxbridge.verify import ParityReport

__all__ = [
    "AmbiguousConverterError",
    "ConversionError",
    "ConverterNotFoundError",
    "InputError",
    "LoadError",
    "OnnxBridgeError",
    "OnnxBridgeWarning",
    "ParityError",
    "PluginLoadError",
    "ProviderError",
    "RunError",
    "UnsupportedModelError",
    "UnsupportedOperatorError",
]


class OnnxBridgeWarning(UserWarning):
    """Something worked, but not quite as asked (a plugin failed to load, a provider fell back)."""


class OnnxBridgeError(Exception):
    """Base class of every error onnxbridge raises on purpose."""


class ConverterNotFoundError(OnnxBridgeError, TypeError):
    """No installed converter handles the model's type."""


class AmbiguousConverterError(OnnxBridgeError):
    """Two or more converters match a model equally well; pass ``converter=`` to choose."""

    def __init__(self, message: str, candidates: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.candidates = tuple(candidates)


class PluginLoadError(OnnxBridgeError):
    """A converter plugin could not be imported or declared something malformed."""

    def __init__(self, plugin: str, reason: str, package: str | None = None) -> None:
        where = f" (from package {package!r})" if package else ""
        super().__init__(f"converter plugin {plugin!r}{where} failed to load: {reason}")
        self.plugin = plugin
        self.package = package
        self.reason = reason


class ConversionError(OnnxBridgeError):
    """A converter failed; the original exception is ``__cause__``."""

    def __init__(self, message: str, converter: str | None = None) -> None:
        super().__init__(message)
        self.converter = converter


class UnsupportedOperatorError(ConversionError):
    """The model uses an operator that the ONNX standard operator set cannot express."""

    def __init__(
        self,
        message: str,
        operators: Sequence[str] = (),
        framework: str | None = None,
        converter: str | None = None,
        locations: Sequence[str] = (),
    ) -> None:
        super().__init__(message, converter=converter)
        self.operators = tuple(operators)
        self.framework = framework
        self.locations = tuple(locations)


class UnsupportedModelError(ConversionError):
    """The model uses a feature (a categorical split, an objective) the backend cannot represent."""


class ParityError(OnnxBridgeError):
    """The ONNX model's outputs differ from the source model's beyond tolerance."""

    def __init__(self, report: ParityReport, message: str | None = None) -> None:
        head = message or "the ONNX model does not reproduce the source model's outputs"
        super().__init__(f"{head}\n{report}")
        self.report = report


class LoadError(OnnxBridgeError, ValueError):
    """The source is not a readable, safe ONNX model."""

    def __init__(self, message: str, source: Any = None) -> None:
        super().__init__(message)
        self.source = source


class InputError(OnnxBridgeError, ValueError):
    """An input given to ``run`` does not fit the model's signature."""


class ProviderError(OnnxBridgeError, RuntimeError):
    """A requested onnxruntime execution provider is not available or failed to start."""


class RunError(OnnxBridgeError, RuntimeError):
    """onnxruntime failed while running the model (a node failed on these inputs, or the graph
    is broken in a way only running shows); the original exception is ``__cause__``."""
