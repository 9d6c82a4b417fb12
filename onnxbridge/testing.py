"""Conformance kit for converter plugins, shipped with onnxbridge.

Run it on your converter the way scikit-learn's ``check_estimator`` runs on an estimator: a set of
named checks, each a plain function, that work under pytest (one test per check and case, so
``-k check_parity`` works) and without it.

Under pytest:

    from onnxbridge.testing import Case, parametrize_with_checks

    @parametrize_with_checks("my-converter", [Case(MyModel().fit(X), X[:8], id="small")])
    def test_conformance(check):
        check()

Without pytest:

    from onnxbridge.testing import check_converter
    results = check_converter("my-converter", [Case(model, sample)])   # raises if any check fails

Known gaps are declared, never hidden: ``expected_failed_checks={"check_name": "reason"}`` turns
those checks into expected failures (xfail under pytest) that must still fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxbridge.errors import ConversionError, OnnxBridgeError
from onnxbridge.registry import ConverterSpec, ConvertOptions, call_converter, default_registry
from onnxbridge.verify import Tolerance, compare_outputs

__all__ = ["Case", "CheckResult", "check_converter", "converter_checks", "parametrize_with_checks"]

# Frameworks a converter's entry point must not import when it is only discovered.
HEAVY_FRAMEWORKS = ("torch", "sklearn", "skl2onnx", "xgboost", "lightgbm", "catboost",
                    "onnxmltools", "tensorflow", "jax", "transformers", "pandas")


@dataclass
class Case:
    """One model and sample to check a converter on, with the options and tolerance it needs."""

    model: Any
    sample: Any
    id: str = "case"
    options: dict[str, Any] = field(default_factory=dict)
    tolerance: Tolerance | None = None


@dataclass
class CheckResult:
    name: str
    case: str
    passed: bool
    expected_failure: str | None = None
    error: str | None = None

    def __str__(self) -> str:
        state = "ok" if self.passed else ("xfail" if self.expected_failure else "FAIL")
        why = f": {self.error}" if self.error else ""
        return f"{state:5} {self.name}[{self.case}]{why}"


def _spec(converter: str | ConverterSpec) -> ConverterSpec:
    return converter if isinstance(converter, ConverterSpec) else default_registry().get(converter)


def _convert(spec: ConverterSpec, case: Case) -> Any:
    from onnxbridge.runtime import runtime_support

    options = ConvertOptions(options=dict(case.options), max_opset=runtime_support().opsets[""])
    return call_converter(spec, case.model, case.sample, options)


def _to_onnx(spec: ConverterSpec, case: Case) -> Any:
    import onnxbridge

    return onnxbridge.to_onnx(case.model, case.sample, converter=spec, tolerance=case.tolerance,
                              **case.options)


# -- the checks ------------------------------------------------------------------------------
def check_class_names_resolve(spec: ConverterSpec, case: Case) -> None:
    """Every class name the spec declares imports, and the case's model matches the spec."""
    import importlib

    for path in spec.classes:
        module_name, _, qualname = path.rpartition(".")
        obj: Any = None
        # The module part may itself contain dots of nested classes: try the longest module first.
        parts = path.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                obj = None
                continue
            break
        assert isinstance(obj, type), (
            f"spec {spec.name!r} names class {path!r}, which does not import as a class"
            f" (module {module_name!r}, name {qualname!r}); check the spelling against"
            " f'{cls.__module__}.{cls.__qualname__}'"
        )
    from onnxbridge.registry import mro_paths

    assert set(spec.classes) & set(mro_paths(case.model)), (
        f"the case's model {type(case.model).__qualname__} does not match any class of spec"
        f" {spec.name!r}: {spec.classes}"
    )


def check_entry_point_is_light(spec: ConverterSpec, case: Case) -> None:
    """Discovering the plugin (loading its entry point) imports no heavy framework."""
    code = f"""
import importlib.metadata as md, json, sys
import onnxbridge
before = set(sys.modules)
found = False
for ep in md.entry_points(group="onnxbridge.converters"):
    obj = ep.load()
    specs = obj() if callable(obj) and not isinstance(obj, onnxbridge.ConverterSpec) else obj
    specs = [specs] if isinstance(specs, onnxbridge.ConverterSpec) else specs
    if any(s.name == {spec.name!r} for s in specs):
        found = True
        break
new = sorted({{m.split('.')[0] for m in set(sys.modules) - before}})
print(json.dumps({{"found": found, "new": new}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"loading entry points failed:\n{out.stderr[-2000:]}"
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["found"]:
        if spec.package is None:
            return  # registered in-process, not through an entry point: nothing to discover
        raise AssertionError(f"no installed entry point declares converter {spec.name!r}")
    heavy = set(HEAVY_FRAMEWORKS) | ({spec.framework.split(".")[0]} if spec.framework else set())
    eager = sorted(heavy & set(result["new"]))
    assert not eager, (
        f"loading the entry point of {spec.name!r} imports {eager}; import frameworks inside"
        " the convert function, not in the module that holds SPECS"
    )


def check_returns_valid_model(spec: ConverterSpec, case: Case) -> None:
    """The converter returns a ModelProto that passes onnx.checker's full check (run on a
    weight-less copy when its weights are in external files or over 2 GB)."""
    from onnxbridge._files import checker_findings

    findings = checker_findings(_convert(spec, case).proto, full_check=True)
    assert not findings, f"onnx.checker: {findings[0]}"


def check_parity(spec: ConverterSpec, case: Case) -> None:
    """ONNX outputs match the source model's on the case's sample (to_onnx's own verification)."""
    m = _to_onnx(spec, case)
    assert m.parity is not None and m.parity.verified, (
        f"converter {spec.name!r} gives no reference to verify against: return a"
        " ConversionResult with reference="
    )
    assert m.parity.passed, str(m.parity)


def check_dynamic_batch(spec: ConverterSpec, case: Case) -> None:
    """The model runs, and matches the source, at batch sizes other than the sample's."""
    from onnxbridge.io import resize_batch

    m = _to_onnx(spec, case)
    result = _convert(spec, case)
    assert result.reference is not None, (
        f"converter {spec.name!r} gives no reference, so other batch sizes cannot be checked:"
        " return a ConversionResult with reference="
    )
    checked = 0
    for n in (1, 2, 7):
        other = resize_batch(case.sample, n)
        if other is None:
            continue
        expected = list(result.reference(other))
        actual = m.run(other)
        actual = list(actual) if isinstance(actual, tuple) else [actual]
        rows = compare_outputs(m.output_names, expected, actual, kinds=result.output_kinds,
                               batch=n, tolerance=case.tolerance,
                               converter_tolerances=result.tolerances)
        bad = [r.line() for r in rows if not r.passed]
        assert not bad, f"batch {n}:\n" + "\n".join(bad)
        checked += 1
    assert checked, "the sample's batch size cannot be changed (pass an array, tensor or DataFrame)"


def check_model_not_mutated(spec: ConverterSpec, case: Case) -> None:
    """Converting leaves the user's model exactly as it was."""
    from onnxbridge.registry import model_fingerprint

    before = model_fingerprint(case.model)
    assert before is not None, (
        f"cannot fingerprint the case's {type(case.model).__qualname__} (it does not pickle and"
        " has no state_dict), so whether the converter changes it cannot be checked; make it"
        " picklable, or declare expected_failed_checks={'check_model_not_mutated': reason}"
    )
    _convert(spec, case)
    assert model_fingerprint(case.model) == before, "the model was modified"
    training = getattr(case.model, "training", None)
    _convert(spec, case)
    assert getattr(case.model, "training", None) == training, "train/eval mode was changed"


def check_deterministic(spec: ConverterSpec, case: Case) -> None:
    """Converting twice gives the same graph, byte for byte (for a model with external or over-2 GB
    weights, its tensors over 1 KiB are compared by name, type and shape, not read)."""
    from onnxbridge._files import _weightless_copy, has_external_data, is_large

    def graph_bytes(proto: Any) -> bytes:
        if has_external_data(proto) or is_large(proto):
            proto = _weightless_copy(proto, "weights")
        return bytes(proto.graph.SerializeToString(deterministic=True))

    first = graph_bytes(_convert(spec, case).proto)
    second = graph_bytes(_convert(spec, case).proto)
    assert first == second, "two conversions of the same model gave different graphs"


def check_save_load_round_trip(spec: ConverterSpec, case: Case) -> None:
    """save -> load keeps every byte and the outputs."""
    import onnxbridge

    m = _to_onnx(spec, case)
    with tempfile.TemporaryDirectory() as tmp:
        path = m.save(Path(tmp) / "model.onnx")
        loaded = onnxbridge.load(path)
    assert loaded.to_bytes() == m.to_bytes()
    a = m.run(case.sample, as_dict=True)
    b = loaded.run(case.sample, as_dict=True)
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


def check_unsupported_input_raises(spec: ConverterSpec, case: Case) -> None:
    """A sample the converter cannot use gives ConversionError, never a wrong model."""
    bad = Case(case.model, object(), id="bad", options=dict(case.options))
    try:
        _convert(spec, bad)
    except ConversionError:
        return
    except OnnxBridgeError as exc:
        raise AssertionError(f"expected ConversionError, got {type(exc).__name__}: {exc}") from exc
    raise AssertionError("a sample of type object was accepted: the converter must reject it")


CHECKS: tuple[Callable[[ConverterSpec, Case], None], ...] = (
    check_class_names_resolve,
    check_entry_point_is_light,
    check_returns_valid_model,
    check_parity,
    check_dynamic_batch,
    check_model_not_mutated,
    check_deterministic,
    check_save_load_round_trip,
    check_unsupported_input_raises,
)
# Checks about the plugin as a whole run once, on the first case.
_ONCE = {"check_entry_point_is_light"}


def _bind(check: Callable[[ConverterSpec, Case], None], spec: ConverterSpec, case: Case
          ) -> Callable[[], None]:
    def run() -> None:
        check(spec, case)

    run.__name__ = check.__name__
    return run


def converter_checks(
    converter: str | ConverterSpec, cases: Sequence[Case]
) -> Iterator[tuple[str, str, Callable[[], None]]]:
    """Yield (check name, case id, zero-argument check) for every check and case."""
    spec = _spec(converter)
    if not cases:
        raise ValueError("give at least one Case(model, sample) to check the converter on")
    for check in CHECKS:
        for i, case in enumerate(cases):
            if check.__name__ in _ONCE and i:
                continue
            yield check.__name__, case.id, _bind(check, spec, case)


def check_converter(
    converter: str | ConverterSpec,
    cases: Sequence[Case],
    *,
    expected_failed_checks: Mapping[str, str] | None = None,
    raise_on_failure: bool = True,
) -> list[CheckResult]:
    """Run every check without pytest; raise AssertionError listing failures (or return them)."""
    expected = dict(expected_failed_checks or {})
    results = []
    for name, case_id, run in converter_checks(converter, cases):
        try:
            run()
        except Exception as exc:
            results.append(CheckResult(name, case_id, False, expected.get(name),
                                       f"{type(exc).__name__}: {exc}"))
        else:
            err = None if name not in expected else "passed but was expected to fail"
            results.append(CheckResult(name, case_id, name not in expected, None, err))
    failures = [r for r in results if not r.passed and not r.expected_failure]
    if failures and raise_on_failure:
        raise AssertionError("converter checks failed:\n" + "\n".join(str(r) for r in failures))
    return results


def parametrize_with_checks(
    converter: str | ConverterSpec,
    cases: Sequence[Case],
    *,
    expected_failed_checks: Mapping[str, str] | None = None,
) -> Any:
    """A pytest.mark.parametrize over every (check, case): the test receives ``check``."""
    import pytest

    expected = dict(expected_failed_checks or {})
    params = []
    for name, case_id, run in converter_checks(converter, cases):
        marks = [pytest.mark.xfail(strict=True, reason=expected[name])] if name in expected else []
        params.append(pytest.param(run, id=f"{name}[{case_id}]", marks=marks))
    return pytest.mark.parametrize("check", params)
