"""Resolution rules, plugin discovery and the converter contract."""

from __future__ import annotations

import sys
import warnings
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

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
    with pytest.raises(ConversionError, match="does not know the option.*colour") as info:
        onnxbridge.to_onnx(fakefw.Base(), np.ones((2, 4), np.float32), colour="red")
    assert info.value.converter == "fake"


# -- found by mutation testing (nox -s mutation): each test kills mutants a user would notice ----
def _dist(tmp: Path, name: str, entry_points: str) -> object:
    """A real installed-distribution record (dist-info folder) with the given entry points."""
    import importlib.metadata

    info = tmp / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[onnxbridge.converters]\n{entry_points}\n")
    (dist,) = importlib.metadata.distributions(path=[str(tmp)])
    return dist


def test_plugin_package_is_recorded_and_blocks_by_name_or_package(
    fake_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (fake_env / "otherplugin.py").write_text(
        "from onnxbridge import ConverterSpec\n"
        "SPECS = [ConverterSpec(name='other', classes=('fakefw.Other',), converter='fakeplugin:convert')]\n"
        "BROKEN = 42\n"
    )
    dist = _dist(fake_env, "fakepkg", "fake = fakeplugin:SPECS\nother = otherplugin:SPECS\n"
                                      "broken = otherplugin:BROKEN")
    eps = list(dist.entry_points)  # type: ignore[attr-defined]
    with pytest.warns(OnnxBridgeWarning, match="broken"):
        reg = Registry(entry_points=eps)
        specs = {s.name: s for s in reg.specs()}
    assert sorted(specs) == ["fake-base", "other"]
    assert {s.package for s in specs.values()} == {"fakepkg"}
    (failure,) = reg.failures()
    assert (failure.plugin, failure.package) == ("broken", "fakepkg")
    assert isinstance(failure.__cause__, TypeError)
    last = reg.converters()[-1]
    assert (last.name, last.package, last.classes, last.priority, last.status) == (
        "broken", "fakepkg", (), 0, "failed")
    rows = [str(r) for r in reg.converters()]
    assert rows == ["fake-base [fakepkg] priority=0: fakefw.Base",
                    "other [fakepkg] priority=0: fakefw.Other",
                    "broken [fakepkg] FAILED: TypeError: entry point must name a non-empty list of"
                    " ConverterSpec, got int"]
    # Blocked by entry-point name: that one is skipped and the ones after it still load.
    monkeypatch.setenv("ONNXBRIDGE_BLOCK_PLUGINS", " fake , broken")
    assert [s.name for s in Registry(entry_points=eps).specs()] == ["other"]
    # Blocked by package: all of its entry points.
    monkeypatch.setenv("ONNXBRIDGE_BLOCK_PLUGINS", "somethingelse,fakepkg")
    assert Registry(entry_points=eps).specs() == []


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "Yes", "on", "ON", " on "])
def test_disable_plugins_accepts_the_documented_values(
    monkeypatch: pytest.MonkeyPatch, fake_env: Path, value: str
) -> None:
    monkeypatch.setenv("ONNXBRIDGE_DISABLE_PLUGINS", value)
    assert Registry(entry_points=[ep("fake", "fakeplugin:SPECS")]).specs() == []


@pytest.mark.parametrize("value", ["", "0", "no", "off"])
def test_disable_plugins_other_values_load_plugins(
    monkeypatch: pytest.MonkeyPatch, fake_env: Path, value: str
) -> None:
    monkeypatch.setenv("ONNXBRIDGE_DISABLE_PLUGINS", value)
    assert [s.name for s in Registry(entry_points=[ep("fake", "fakeplugin:SPECS")]).specs()] == ["fake-base"]


def test_built_in_converters_load_first_and_are_never_disabled(
    fake_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin listed before onnxbridge cannot take a built-in's name; disabling or blocking
    plugins leaves the built-ins alone."""
    import importlib.metadata

    own = [e for e in importlib.metadata.distribution("onnxbridge").entry_points
           if e.group == "onnxbridge.converters"]
    assert own, "onnxbridge's own converters are entry points of the onnxbridge package"
    builtin = own[0].load()[0] if isinstance(own[0].load(), list) else own[0].load()
    (fake_env / "thief.py").write_text(
        "from onnxbridge import ConverterSpec\n"
        f"SPECS = [ConverterSpec(name={builtin.name!r}, classes=('fakefw.Base',),"
        " converter='fakeplugin:convert')]\n"
    )
    with pytest.warns(OnnxBridgeWarning, match="already registered"):
        reg = Registry(entry_points=[ep("aaa-thief", "thief:SPECS"), *own])  # sorts before them all
        spec_ = reg.get(builtin.name)
    assert spec_.package == "onnxbridge" and spec_.classes == builtin.classes
    assert reg.failures()[0].plugin == "aaa-thief"
    monkeypatch.setenv("ONNXBRIDGE_DISABLE_PLUGINS", "1")
    monkeypatch.setenv("ONNXBRIDGE_BLOCK_PLUGINS", f"onnxbridge,{own[0].name}")
    names = {s.name for s in Registry(entry_points=own).specs()}
    assert builtin.name in names and len(names) >= len(own)


def test_entry_point_package_from_a_distribution_without_a_name_attribute(tmp_path: Path) -> None:
    from onnxbridge.registry import _entry_point_package

    class OldDistribution:  # what older importlib_metadata versions hand out: metadata only
        def __init__(self) -> None:
            self.metadata = {"Name": "oldpkg"}

    class WithDist:
        dist = OldDistribution()

    assert _entry_point_package(WithDist()) == "oldpkg"  # type: ignore[arg-type]
    assert _entry_point_package(ep("x", "m:f")) is None  # no distribution: in-process
    dist = _dist(tmp_path, "newpkg", "x = m:f")
    assert _entry_point_package(next(iter(dist.entry_points))) == "newpkg"  # type: ignore[attr-defined]


def test_spec_fields_are_checked_and_normalised() -> None:
    s = ConverterSpec(name="a.b-c_1", classes=["a.B", "a.C"], converter="m:f")  # type: ignore[arg-type]
    assert s.classes == ("a.B", "a.C") and hash(s)
    with pytest.raises(ValueError, match=r"name 'bad name' is not valid"):
        ConverterSpec(name="bad name", classes=("a.B",), converter="m:f")
    with pytest.raises(ValueError, match=r"name 3 is not valid"):
        ConverterSpec(name=3, classes=("a.B",), converter="m:f")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'x': priority must be an int"):
        ConverterSpec(name="x", classes=("a.B",), converter="m:f", priority=True)
    with pytest.raises(ValueError, match=r"'x': priority must be an int"):
        ConverterSpec(name="x", classes=("a.B",), converter="m:f", priority=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"class 'Base' must be a fully qualified class-name string"
                                         r" such as 'sklearn.base.BaseEstimator'"):
        ConverterSpec(name="x", classes=("Base",), converter="m:f")
    with pytest.raises(ValueError, match=r"converter 'm.f' must be 'package.module:function'$"):
        ConverterSpec(name="x", classes=("a.B",), converter="m.f")


def test_spec_load_follows_dotted_attributes_and_refuses_non_functions(fake_env: Path) -> None:
    (fake_env / "nested.py").write_text(
        "class Holder:\n    @staticmethod\n    def convert(model, sample, options):\n        return 7\n"
        "NUMBER = 3\n"
    )
    s = ConverterSpec(name="n", classes=("a.B",), converter="nested:Holder.convert")
    assert s.load()(None, None, None) == 7
    with pytest.raises(TypeError, match=r"^nested:NUMBER is a int, not a function$"):
        ConverterSpec(name="n", classes=("a.B",), converter="nested:NUMBER").load()
    sys.modules.pop("nested", None)


def test_convert_options_opset_and_pop() -> None:
    from onnxbridge.registry import ConvertOptions

    assert ConvertOptions().target_opset(18) == 18
    assert ConvertOptions(max_opset=17).target_opset(18) == 17
    assert ConvertOptions(max_opset=21).target_opset(18) == 18
    assert ConvertOptions(opset=13, max_opset=17).target_opset(18) == 13
    options = ConvertOptions(options={"a": 1})
    assert options.pop("a") == 1 and options.pop("a", "gone") == "gone" and options.pop("b") is None
    assert options.options == {}


def test_registry_rows_are_sorted_and_lookups_name_what_exists(fake_env: Path) -> None:
    reg = registry_with(spec("zeta", "fakefw.Base"), spec("alpha", "fakefw.Other", priority=2))
    assert [str(r) for r in reg.converters()] == ["alpha [in-process] priority=2: fakefw.Other",
                                                  "zeta [in-process] priority=0: fakefw.Base"]
    with pytest.raises(ConverterNotFoundError,
                       match=r"no converter named 'x'; installed converters: alpha, zeta$"):
        reg.get("x")
    with pytest.raises(ConverterNotFoundError, match=r"installed converters: none$"):
        Registry(entry_points=[]).get("x")
    with pytest.raises(ValueError, match=r"'zeta' is already registered \(from in-process\)"):
        reg.register(spec("zeta", "fakefw.Child"))
    with pytest.raises(TypeError, match=r"register\(\) takes a ConverterSpec, got str"):
        reg.register("zeta")  # type: ignore[arg-type]
    assert Registry().specs() == Registry(discover=True).specs() != []  # the built-ins, at least
    assert Registry(discover=False).specs() == []


def test_default_registry_is_one_per_process_until_reset() -> None:
    from onnxbridge.registry import default_registry, reset_default_registry

    first = default_registry()
    assert default_registry() is first
    reset_default_registry()
    second = default_registry()
    assert isinstance(second, Registry) and second is not first and default_registry() is second


CONVERTERS = """
from onnxbridge import ConversionError
import fakeplugin

def uses_options(model, sample, options):
    assert options.target_opset(17) == 17 and options.pop("colour") == "red"
    return fakeplugin.convert(model, sample, options)

def refuses(model, sample, options):
    raise ConversionError("not this one")

def silent(model, sample, options):
    raise ValueError()
"""


def test_converter_calls_get_their_options_and_failures_name_the_converter(
    fake_env: Path, isolated_registry: Registry
) -> None:
    import fakefw

    (fake_env / "convs.py").write_text(CONVERTERS)
    x = np.ones((2, 4), np.float32)
    onnxbridge.register(spec("opts", "fakefw.Base", converter="convs:uses_options"))
    m = onnxbridge.to_onnx(fakefw.Base(2.0), x, converter="opts", colour="red")
    np.testing.assert_allclose(m.run(x), x * 2)
    onnxbridge.register(spec("refuses", "fakefw.Base", converter="convs:refuses"))
    with pytest.raises(ConversionError, match=r"^not this one$") as info:
        onnxbridge.to_onnx(fakefw.Base(), x, converter="refuses")
    assert info.value.converter == "refuses"
    onnxbridge.register(spec("silent", "fakefw.Base", converter="convs:silent"))
    with pytest.raises(ConversionError, match=r"'silent' \(in-process\) failed: ValueError$") as info:
        onnxbridge.to_onnx(fakefw.Base(), x, converter="silent")
    assert isinstance(info.value.__cause__, ValueError)
    sys.modules.pop("convs", None)


def test_a_converter_that_cannot_be_imported_says_which_extra_to_install(
    fake_env: Path, isolated_registry: Registry
) -> None:
    import fakefw

    x = np.ones((2, 4), np.float32)
    onnxbridge.register(ConverterSpec(name="gone", classes=("fakefw.Base",), converter="nosuchmod:f",
                                      extra="fakeextra"))
    with pytest.raises(ConversionError, match=r"'gone' \(in-process\) could not be imported from"
                       r" nosuchmod:f: ModuleNotFoundError: No module named 'nosuchmod'\."
                       r' Try: pip install "onnxbridge\[fakeextra\]"$'):
        onnxbridge.to_onnx(fakefw.Base(), x, converter="gone")
    onnxbridge.register(ConverterSpec(name="gone2", classes=("fakefw.Base",), converter="nosuchmod:f"))
    with pytest.raises(ConversionError, match=r"No module named 'nosuchmod'\.$"):
        onnxbridge.to_onnx(fakefw.Base(), x, converter="gone2")


# -- model_fingerprint: the proof that a converter left the user's model alone ----------------------
def test_fingerprint_of_a_torch_module_sees_every_kind_of_change() -> None:
    import torch

    from onnxbridge.registry import FULL_HASH_BYTES, model_fingerprint

    class WithState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.small = torch.nn.Linear(4, 3)
            self.big = torch.nn.Linear(600, 600)  # 1.4 MB of weights: above FULL_HASH_BYTES
            self.register_buffer("empty", torch.zeros(0))
            self.note = "a"

        def get_extra_state(self) -> dict[str, str]:
            return {"note": self.note}

        def set_extra_state(self, state: dict[str, str]) -> None:
            self.note = state["note"]

    torch.manual_seed(0)
    m = WithState()
    assert m.big.weight.numel() * 4 > FULL_HASH_BYTES >= m.small.weight.numel() * 4
    base = model_fingerprint(m)
    assert base is not None and base == model_fingerprint(m) and len(base) == 32
    twin = WithState()
    twin.load_state_dict(m.state_dict())
    assert model_fingerprint(twin) != base  # same values, other storage: not the same model

    def changed(change: Any) -> bool:
        before = model_fingerprint(m)
        with torch.no_grad():
            change()
        return model_fingerprint(m) != before

    assert changed(lambda: m.small.weight.data.__setitem__((0, 0), 5.0))  # bytes, no version bump
    assert changed(lambda: m.big.weight.add_(1.0))  # a large tensor: its version counter
    assert changed(lambda: setattr(m, "note", "b"))  # extra state, not a tensor
    assert changed(lambda: m.eval())  # training flags
    assert changed(lambda: setattr(m.small, "weight", torch.nn.Parameter(m.small.weight.double())))
    assert changed(lambda: setattr(m.small, "bias", torch.nn.Parameter(m.small.bias[:2].clone())))
    assert changed(lambda: setattr(m.small, "weight", torch.nn.Parameter(m.small.weight.t())))


def test_fingerprint_of_other_models_pickles_them_and_gives_none_when_it_cannot() -> None:
    import threading

    from sklearn.linear_model import LinearRegression

    from onnxbridge.registry import model_fingerprint

    model = LinearRegression().fit(np.arange(8.0).reshape(4, 2), np.arange(4.0))
    base = model_fingerprint(model)
    assert base is not None and base == model_fingerprint(model)
    model.coef_[0] += 1e-9
    assert model_fingerprint(model) != base
    assert model_fingerprint(threading.Lock()) is None  # cannot be pickled: not checked

    class TorchLike:  # state_dict and modules, but not torch's: cannot be fingerprinted
        def state_dict(self, keep_vars: bool = False) -> dict[str, Any]:
            raise RuntimeError("not a real module")

        def modules(self) -> list[Any]:
            return []

    assert model_fingerprint(TorchLike()) is None
