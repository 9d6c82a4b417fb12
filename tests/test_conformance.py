"""The conformance kit: the built-in converters and the example plugin pass it, and it can fail."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import onnxbridge
from onnxbridge import ConverterSpec
from onnxbridge.registry import Registry
from onnxbridge.testing import Case, check_converter, converter_checks, parametrize_with_checks


def _sklearn_cases() -> list[Case]:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4)).astype(np.float32)
    return [Case(LogisticRegression().fit(X, X[:, 0] > 0), X[:8], id="logreg")]


@parametrize_with_checks("sklearn", _sklearn_cases())
def test_sklearn_converter_conforms(check) -> None:  # type: ignore[no-untyped-def]
    check()


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((120, 5)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


def _xgboost_cases() -> list[Case]:
    import xgboost

    X, y = _data()
    return [Case(xgboost.XGBClassifier(n_estimators=8, max_depth=3).fit(X, y), X[:8], id="xgb")]


def _lightgbm_cases() -> list[Case]:
    import lightgbm

    X, y = _data()
    model = lightgbm.LGBMRegressor(n_estimators=8, num_leaves=7, verbose=-1).fit(X, y.astype(float))
    return [Case(model, X[:8], id="lgbm")]


def _catboost_cases() -> list[Case]:
    import catboost

    X, y = _data()
    model = catboost.CatBoostClassifier(iterations=8, depth=3, verbose=False,
                                        allow_writing_files=False).fit(X, y)
    return [Case(model, X[:8], id="catboost")]


@parametrize_with_checks("xgboost", _xgboost_cases())
def test_xgboost_converter_conforms(check) -> None:  # type: ignore[no-untyped-def]
    check()


@parametrize_with_checks("lightgbm", _lightgbm_cases())
def test_lightgbm_converter_conforms(check) -> None:  # type: ignore[no-untyped-def]
    check()


@parametrize_with_checks("catboost", _catboost_cases())
def test_catboost_converter_conforms(check) -> None:  # type: ignore[no-untyped-def]
    check()


def test_example_plugin_conforms() -> None:
    if os.environ.get("ONNXBRIDGE_REQUIRE_EXAMPLE_PLUGIN") != "1" and "CI" not in os.environ:
        pytest.importorskip("onnxbridge_numpy_poly")
    poly = np.polynomial.Polynomial([1.0, -2.0, 0.5], domain=[0, 4])
    results = check_converter("numpy-poly", [Case(poly, np.linspace(0, 4, 6), id="quadratic")])
    assert len(results) == 9 and all(r.passed for r in results)


# -- the kit catches broken converters -----------------------------------------------------------
NONDETERMINISTIC = '''
import itertools
from fakeplugin import convert
_counter = itertools.count()

def convert_changing(model, sample, options):
    result = convert(model, sample, options)
    result.proto.graph.name = f"fake{next(_counter)}"
    return result
'''


def test_kit_reports_failures_by_name(fake_env: Path, isolated_registry: Registry) -> None:
    import fakefw

    (fake_env / "changing.py").write_text(NONDETERMINISTIC)
    spec = ConverterSpec(name="changing", classes=("fakefw.Base",), converter="changing:convert_changing")
    onnxbridge.register(spec)
    case = Case(fakefw.Base(2.0), np.ones((3, 4), np.float32), id="ones")
    with pytest.raises(AssertionError, match=r"FAIL  check_deterministic\[ones\]"):
        check_converter("changing", [case])
    results = check_converter("changing", [case],
                              expected_failed_checks={"check_deterministic": "graph name varies"})
    by_name = {r.name: r for r in results}
    assert by_name["check_deterministic"].expected_failure == "graph name varies"
    assert by_name["check_parity"].passed
    # A check declared as failing that passes is reported too.
    stale = check_converter("changing", [case], raise_on_failure=False,
                            expected_failed_checks={"check_parity": "not really"})
    assert {r.name: r for r in stale}["check_parity"].error == "passed but was expected to fail"


def test_a_model_that_cannot_be_fingerprinted_fails_the_mutation_check(
    fake_env: Path, isolated_registry: Registry
) -> None:
    import fakefw

    onnxbridge.register(ConverterSpec(name="fake", classes=("fakefw.Base",),
                                      converter="fakeplugin:convert"))
    model = fakefw.Base(2.0)
    model.hook = lambda: None  # type: ignore[attr-defined]  # a lambda does not pickle
    case = Case(model, np.ones((3, 4), np.float32), id="unpicklable")
    results = {r.name: r for r in check_converter("fake", [case], raise_on_failure=False)}
    assert not results["check_model_not_mutated"].passed
    assert "cannot fingerprint" in (results["check_model_not_mutated"].error or "")
    assert results["check_parity"].passed  # the rest of the kit still runs
    declared = check_converter("fake", [case], expected_failed_checks={
        "check_model_not_mutated": "holds a lambda"})
    assert {r.name: r for r in declared}["check_model_not_mutated"].expected_failure


def test_checks_are_named_and_need_a_case(fake_env: Path, isolated_registry: Registry) -> None:
    import fakefw

    onnxbridge.register(ConverterSpec(name="fake", classes=("fakefw.Base",), converter="fakeplugin:convert"))
    names = [n for n, _, _ in converter_checks("fake", [Case(fakefw.Base(), np.ones((2, 4)))])]
    assert names[0] == "check_class_names_resolve" and "check_parity" in names and len(names) == 9
    with pytest.raises(ValueError, match="at least one Case"):
        list(converter_checks("fake", []))
    wrong = ConverterSpec(name="wrong", classes=("fakefw.Nope",), converter="fakeplugin:convert")
    with pytest.raises(AssertionError, match="does not import as a class"):
        check_converter(wrong, [Case(fakefw.Base(), np.ones((2, 4), np.float32))])


def _torch_cases() -> list[Case]:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    return [Case(net, torch.randn(4, 5), id="mlp")]


@pytest.mark.slow
@parametrize_with_checks("torch", _torch_cases())
def test_torch_converter_conforms(check) -> None:  # type: ignore[no-untyped-def]
    check()
