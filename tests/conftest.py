"""Shared fixtures: small real ONNX models and fake frameworks written to a temp folder."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

# The cross-process cache of onnxruntime's accepted versions (runtime/compat.py) stays off in
# tests (and in their child processes): each test sees onnxruntime's own answers; the tests of
# the cache set a file of their own.
os.environ["ONNXBRIDGE_RUNTIME_CACHE"] = "off"

from onnxbridge import registry


def make_scale_model(
    weight: np.ndarray | None = None, *, batch: str | int = "batch", features: int = 3,
    opset: int = 17,
) -> onnx.ModelProto:
    """y = x * w, with x [batch, features] float32 and w an initializer."""
    w = np.arange(1, features + 1, dtype=np.float32) if weight is None else weight
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, features])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked install_state(NAME) run only when ONNXBRIDGE_INSTALL_STATE is NAME
    (`nox -s runtime_installs` sets it); elsewhere they are deselected, not skipped."""
    state = os.environ.get("ONNXBRIDGE_INSTALL_STATE", "")
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("install_state")
        (drop if marker is not None and marker.args[0] != state else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def scale_model() -> onnx.ModelProto:
    return make_scale_model()


FAKE_FRAMEWORK = '''
class Base:
    def __init__(self, factor=2.0):
        self.factor = factor
    def predict(self, x):
        import numpy as np
        return np.asarray(x, dtype=np.float32) * np.float32(self.factor)

class Child(Base):
    pass

class GrandChild(Child):
    pass

class Other:
    pass
'''

FAKE_PLUGIN = '''
import numpy as np
from onnx import TensorProto, helper, numpy_helper
from onnxbridge import ConversionResult, ConverterSpec

def convert(model, sample, options):
    w = np.full(np.shape(sample)[1:], model.factor, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"])], "fake",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", w.shape[0]])],
        initializer=[numpy_helper.from_array(w, "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return ConversionResult(proto, reference=lambda x: [model.predict(x)], framework="fakefw")

def wrong_convert(model, sample, options):
    proto = convert(model, sample, options).proto
    proto.graph.node[0].op_type = "Mull"   # not an ONNX operator: the checker must refuse it
    return proto

def lying_convert(model, sample, options):
    result = convert(model, sample, options)
    result.reference = lambda x: [model.predict(x) + 1.0]
    return result

def mutating_convert(model, sample, options):
    model.factor = 99.0
    return convert(model, sample, options)

def returns_none(model, sample, options):
    return None

def raises(model, sample, options):
    raise RuntimeError("boom inside the converter")

SPECS = [ConverterSpec(name="fake-base", classes=("fakefw.Base",), converter="fakeplugin:convert",
                       framework="fakefw")]
'''


@pytest.fixture
def fake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fake framework `fakefw` and a plugin module `fakeplugin`, importable for the test only."""
    (tmp_path / "fakefw.py").write_text(textwrap.dedent(FAKE_FRAMEWORK))
    (tmp_path / "fakeplugin.py").write_text(textwrap.dedent(FAKE_PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("fakefw", "fakeplugin"):
        sys.modules.pop(name, None)


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> registry.Registry:
    """Make to_onnx use an empty registry (no entry points) for the duration of a test."""
    reg = registry.Registry(entry_points=[])
    monkeypatch.setattr(registry, "_default", reg)
    return reg
