"""The public surface: exact __all__, a light import, the error tree."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import onnxbridge
from onnxbridge import errors

PUBLIC = {
    "AmbiguousConverterError", "ConversionError", "ConversionResult", "ConvertOptions",
    "ConverterInfo", "ConverterNotFoundError", "ConverterSpec", "InputError", "LoadError",
    "OnnxBridgeError", "OnnxBridgeWarning", "OnnxModel", "OutputParity", "ParityError",
    "ParityReport", "PluginLoadError", "ProviderError", "RunError", "TensorSpec", "UnsupportedModelError",
    "UnsupportedOperatorError", "__version__", "converters", "load", "register",
    "set_default_providers", "to_onnx",
    "Zoo",
}

HEAVY = ["torch", "sklearn", "skl2onnx", "xgboost", "lightgbm", "catboost", "onnxmltools",
         "pandas", "transformers", "onnxscript", "tensorflow", "keras", "tf2onnx", "jax", "jax2onnx",
         "flax"]
# Installed only by `nox -s frameworks`: the lightness test still checks them where present.
OPTIONAL = {"pandas", "transformers", "tensorflow", "keras", "tf2onnx", "jax", "jax2onnx", "flax"}


def test_all_is_exactly_the_public_names() -> None:
    assert set(onnxbridge.__all__) == PUBLIC
    assert len(onnxbridge.__all__) == len(PUBLIC)
    for name in onnxbridge.__all__:
        assert hasattr(onnxbridge, name), name
    import pkgutil

    # Anything else reachable as an attribute is a submodule imported by some other test.
    exported = {n for n in dir(onnxbridge) if not n.startswith("_")}
    submodules = {m.name for m in pkgutil.iter_modules(onnxbridge.__path__)}
    assert exported - PUBLIC <= submodules


@pytest.mark.parametrize("installed", HEAVY)
def test_frameworks_are_installed_for_the_lightness_test(installed: str) -> None:
    # The lightness test below only proves something when the frameworks are importable.
    pytest.importorskip(installed) if installed in OPTIONAL else __import__(installed)


def test_import_is_light_in_a_fresh_process() -> None:
    code = (
        "import sys, json, onnxbridge\n"
        "onnxbridge.converters()\n"  # discovery reads specs, which must not import frameworks
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_error_tree() -> None:
    e = errors
    for cls in (e.ConverterNotFoundError, e.AmbiguousConverterError, e.PluginLoadError,
                e.ConversionError, e.ParityError, e.LoadError, e.InputError, e.ProviderError,
                e.RunError):
        assert issubclass(cls, e.OnnxBridgeError)
    assert issubclass(e.UnsupportedOperatorError, e.ConversionError)
    assert issubclass(e.UnsupportedModelError, e.ConversionError)
    assert issubclass(e.ConverterNotFoundError, TypeError)
    assert issubclass(e.LoadError, ValueError) and issubclass(e.InputError, ValueError)
    assert issubclass(e.ProviderError, RuntimeError)
    for cls in e.__all__:
        assert cls in (errors.__doc__ or "") or cls == "OnnxBridgeWarning"
