"""Resolution rules, plugin discovery and the converter contract."""

from __future__ import annotations

import sys
import warnings
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest

import onnxbridge
from onnxbridge import (
    AmbiguousConverterError,
    ConversionError,
    ConverterNotFoundError,
    ConverterSpec,
    OnnxBridgeWarning,
    ParityError,
    PluginLoadError,
)
from onnxbridge.registry import Registry, mro_paths


def ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group="onnxbridge.converters")


def spec(name: str, cls: str, priority: int = 0, converter: str = "fakeplugin:convert") -> ConverterSpec:
    return ConverterSpec(name=name, classes=(cls,), converter=converter, priority=priority)


def registry_with(*specs: ConverterSpec) -> Registry:
    reg = Registry(entry_points=[])
    for s in specs:
        reg.register(s)
    return reg


def test_mro_paths_are_fully_qualified(fake_env: Path) -> None:
    import fakefw

    assert mro_paths(fakefw.GrandChild()) == [
        "fakefw.GrandChild", "fakefw.Child", "fakefw.Base", "builtins.object"
    ]


def test_nearest_class_in_mro_wins_over_priority(fake_env: Path) -> None:
    import fakefw

    reg = registry_with(spec("base", "fakefw.Base", priority=100), spec("child", "fakefw.Child"))
    assert reg.resolve(fakefw.GrandChild()).name == "child"
    assert reg.resolve(fakefw.Base()).name == "base"


def test_priority_breaks_a_distance_tie(fake_env: Path) -> None:
    import fakefw

    reg = registry_with(spec("low", "fakefw.Child"), spec("high", "fakefw.Child", priority=5))
    assert reg.resolve(fakefw.Child()).name == "high"


def test_remaining_tie_is_ambiguous_and_names_candidates(fake_env: Path) -> None:
    import fakefw

    reg = registry_with(spec("one", "fakefw.Child"), spec("two", "fakefw.Child"))
    with pytest.raises(AmbiguousConverterError, match="converter=NAME") as info:
        reg.resolve(fakefw.Child())
    assert set(info.value.candidates) == {"one", "two"}


def test_forced_converter_by_name_and_unknown_name(fake_env: Path) -> None:
    import fakefw

    reg = registry_with(spec("one", "fakefw.Child"), spec("two", "fakefw.Child"))
    assert reg.resolve(fakefw.Child(), "two").name == "two"
    with pytest.raises(ConverterNotFoundError, match="no converter named 'three'.*one, two"):
        reg.resolve(fakefw.Child(), "three")


def test_not_found_names_type_installed_failed_and_extra(fake_env: Path) -> None:
    import fakefw

    with pytest.warns(OnnxBridgeWarning):
        reg = Registry(entry_points=[ep("broken", "no_such_module_xyz:SPECS")])
        reg.register(spec("base", "fakefw.Base"))
    with pytest.raises(ConverterNotFoundError) as info:
        reg.resolve(fakefw.Other())
    text = str(info.value)
    assert "fakefw.Other" in text and "base" in text and "broken" in text
    assert isinstance(info.value, TypeError)

    class XGBLike:
        pass

    XGBLike.__module__ = "xgboost.sklearn"
    with pytest.raises(ConverterNotFoundError, match=r'pip install "onnxbridge\[xgboost\]"'):
        reg.resolve(XGBLike())


def test_entry_point_discovery_loads_specs_not_converters(fake_env: Path) -> None:
    import fakefw

    reg = Registry(entry_points=[ep("fake", "fakeplugin:SPECS")])
    sys.modules.pop("fakefw", None)
    assert [s.name for s in reg.specs()] == ["fake-base"]
    # Dispatch compares strings: resolving needs no import of the framework by the registry.
    assert "fakefw" not in sys.modules
    assert reg.resolve(fakefw.Child()).name == "fake-base"


def test_entry_point_may_name_a_callable_or_single_spec(fake_env: Path) -> None:
    (fake_env / "callplugin.py").write_text(
        "from onnxbridge import ConverterSpec\n"
        "def specs():\n"
        "    return [ConverterSpec(name='c', classes=('fakefw.Base',), converter='fakeplugin:convert')]\n"
        "ONE = ConverterSpec(name='d', classes=('fakefw.Other',), converter='fakeplugin:convert')\n"
    )
    reg = Registry(entry_points=[ep("a", "callplugin:specs"), ep("b", "callplugin:ONE")])
    assert sorted(s.name for s in reg.specs()) == ["c", "d"]


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("raise ImportError('missing dependency libfoo')", "ImportError: missing dependency libfoo"),
        ("raise SystemExit(3)", "SystemExit: 3"),
        ("SPECS = 42", "non-empty list of ConverterSpec"),
        ("SPECS = ['not a spec']", "non-ConverterSpec items: str"),
    ],
)
def test_broken_plugin_is_one_warning_and_others_keep_working(
    fake_env: Path, source: str, reason: str
) -> None:
    import fakefw

    (fake_env / "brokenplugin.py").write_text(source + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = Registry(entry_points=[ep("broken", "brokenplugin:SPECS"), ep("fake", "fakeplugin:SPECS")])
        assert reg.resolve(fakefw.Base()).name == "fake-base"
    mine = [w for w in caught if issubclass(w.category, OnnxBridgeWarning)]
    assert len(mine) == 1 and "broken" in str(mine[0].message)
    (failure,) = reg.failures()
    assert isinstance(failure, PluginLoadError) and reason in failure.reason
    rows = {r.name: r for r in reg.converters()}
    assert rows["broken"].status == "failed" and rows["fake-base"].status == "ok"
    sys.modules.pop("brokenplugin", None)


def test_duplicate_spec_name_from_a_plugin_is_recorded_not_applied(fake_env: Path) -> None:
    with pytest.warns(OnnxBridgeWarning, match="already registered"):
        reg = Registry(entry_points=[ep("a", "fakeplugin:SPECS"), ep("b", "fakeplugin:SPECS")])
        reg.specs()
    assert [s.name for s in reg.specs()] == ["fake-base"]


def test_spec_validation_messages() -> None:
    with pytest.raises(ValueError, match="fully qualified"):
        ConverterSpec(name="x", classes=("Base",), converter="m:f")
    with pytest.raises(ValueError, match="package.module:function"):
        ConverterSpec(name="x", classes=("a.B",), converter="m.f")
    with pytest.raises(ValueError, match="handles no classes"):
        ConverterSpec(name="x", classes=(), converter="m:f")
    assert ConverterSpec(name="x", classes="a.B", converter="m:f").classes == ("a.B",)  # type: ignore[arg-type]


def test_register_rejects_duplicates_unless_replace(fake_env: Path, isolated_registry: Registry) -> None:
    onnxbridge.register(spec("mine", "fakefw.Base"))
    with pytest.raises(ValueError, match="already registered"):
        onnxbridge.register(spec("mine", "fakefw.Child"))
    onnxbridge.register(spec("mine", "fakefw.Child"), replace=True)
    assert [r.classes for r in onnxbridge.converters()] == [("fakefw.Child",)]


def test_disable_plugins_env_skips_third_party(monkeypatch: pytest.MonkeyPatch, fake_env: Path) -> None:
    monkeypatch.setenv("ONNXBRIDGE_DISABLE_PLUGINS", "1")
    reg = Registry(entry_points=[ep("fake", "fakeplugin:SPECS")])
    assert reg.specs() == []


# -- the contract every converter call goes through ------------------------------------------
@pytest.mark.parametrize(
    ("function", "error", "match"),
    [
        ("wrong_convert", ConversionError, "onnx.checker rejects"),
        ("returns_none", ConversionError, "returned NoneType, not an onnx.ModelProto"),
        ("raises", ConversionError, "'bad' .*failed: RuntimeError: boom"),
        ("mutating_convert", ConversionError, "modified the model"),
        ("lying_convert", ParityError, "does not reproduce"),
        ("no_such_function", ConversionError, "could not be imported"),
    ],
)
def test_converter_contract(
    fake_env: Path, isolated_registry: Registry, function: str, error: type, match: str
) -> None:
    import fakefw

    onnxbridge.register(spec("bad", "fakefw.Base", converter=f"fakeplugin:{function}"))
    model = fakefw.Base(3.0)
    with pytest.raises(error, match=match) as info:
        onnxbridge.to_onnx(model, np.ones((2, 4), np.float32))
    if isinstance(info.value, ConversionError):
        assert info.value.converter == "bad"


EXITING = """
def exits(model, sample, options):
    raise SystemExit(4)

def interrupted(model, sample, options):
    raise KeyboardInterrupt
"""


@pytest.mark.parametrize(("function", "error"), [("exits", SystemExit),
                                                 ("interrupted", KeyboardInterrupt)])
def test_a_converter_call_lets_exit_and_interrupt_through(
    fake_env: Path, isolated_registry: Registry, function: str, error: type[BaseException]
) -> None:
    """A converter that exits or is interrupted stops the program, as any call would: only
    Exceptions become ConversionError (a plugin's *import* is the place that catches more)."""
    import fakefw

    (fake_env / "exiting.py").write_text(EXITING)
    onnxbridge.register(spec("exiting", "fakefw.Base", converter=f"exiting:{function}"))
    with pytest.raises(error):
        onnxbridge.to_onnx(fakefw.Base(3.0), np.ones((2, 4), np.float32))


def test_unknown_option_is_an_error(fake_env: Path, isolated_registry: Registry) -> None:
    import fakefw

    onnxbridge.register(spec("fake", "fakefw.Base"))
    with pytest.raises(ConversionError, match="does not know the option.*colour"):
        onnxbridge.to_onnx(fakefw.Base(), np.ones((2, 4), np.float32), colour="red")
