"""Parity comparison: tolerances by dtype, labels, NaN, shapes, the report's text."""

from __future__ import annotations

import numpy as np
import pytest

from onnxbridge.verify import ParityReport, compare_outputs, default_tolerance


def test_float32_within_and_beyond_tolerance() -> None:
    exp = np.linspace(0, 1, 12, dtype=np.float32).reshape(4, 3)
    (ok,) = compare_outputs(["y"], [exp], [exp + 1e-6])
    assert ok.passed and ok.max_abs == pytest.approx(1e-6, rel=0.1)
    bad = exp.copy()
    bad[2, 1] += 0.01
    (fail,) = compare_outputs(["y"], [exp], [bad])
    assert not fail.passed and fail.worst_row == 2
    assert fail.max_abs == pytest.approx(0.01, rel=1e-3)


def test_labels_need_exact_agreement_and_report_it() -> None:
    (r,) = compare_outputs(["label"], [np.array([0, 1, 1, 2])], [np.array([0, 1, 2, 2])],
                           kinds={"label": "label"})
    assert not r.passed and r.label_agreement == 0.75 and r.worst_row == 2
    (s,) = compare_outputs(["label"], [np.array(["a", "b"])], [np.array(["a", "b"], dtype=object)],
                           kinds={"label": "label"})
    assert s.passed and s.label_agreement == 1.0


def test_nan_in_same_place_matches_elsewhere_fails() -> None:
    exp = np.array([[np.nan, 1.0]], np.float32)
    assert compare_outputs(["y"], [exp], [exp.copy()])[0].passed
    assert not compare_outputs(["y"], [exp], [np.array([[0.0, 1.0]], np.float32)])[0].passed


def test_shape_and_count_mismatch() -> None:
    (r,) = compare_outputs(["y"], [np.ones((2, 3))], [np.ones((3, 2, 2))])
    assert not r.passed and "shape" in (r.problem or "")
    (c,) = compare_outputs(["y", "z"], [np.ones(2)], [np.ones(2), np.ones(2)])
    assert not c.passed and "2 outputs" in (c.problem or "")
    # Exact: [N] against [N, 1] or [1, N] is a different output, whatever the values.
    for shape in ((4, 1), (1, 4)):
        r = compare_outputs(["y"], [np.ones(4)], [np.ones(shape)])[0]
        assert not r.passed and "shape" in (r.problem or "")
    # Dtype families must agree too: a float label is not an integer one.
    r = compare_outputs(["y"], [np.arange(4)], [np.arange(4.0)], kinds={"y": "label"})[0]
    assert not r.passed and "dtype" in (r.problem or "")


def test_tolerance_override_forms() -> None:
    exp, act = np.zeros(3, np.float32), np.full(3, 0.05, np.float32)
    assert not compare_outputs(["y"], [exp], [act])[0].passed
    assert compare_outputs(["y"], [exp], [act], tolerance=0.1)[0].passed
    assert compare_outputs(["y"], [exp], [act], tolerance={"y": (0.1, 0.0)})[0].passed
    assert not compare_outputs(["y"], [exp], [act], tolerance={"other": 1.0})[0].passed


# The documented defaults (docs/architecture.md, "Verify"): (atol, rtol) by dtype.
DOCUMENTED = {np.float32: (1e-4, 1e-3), np.float64: (1e-8, 1e-6)}


@pytest.mark.parametrize("dtype", list(DOCUMENTED))
def test_default_tolerances_are_the_documented_values(dtype: type) -> None:
    atol, rtol, _ = default_tolerance(np.dtype(dtype), "value")
    assert (atol, rtol) == pytest.approx(DOCUMENTED[dtype], rel=1e-12)
    assert default_tolerance(np.dtype(np.int64), "value")[:2] == (0.0, 0.0)
    assert default_tolerance(np.dtype(dtype), "label")[:2] == (0.0, 0.0)


def test_float32_tolerance_by_value() -> None:
    """|onnx - source| <= 1e-4 + 1e-3 * |source|, element-wise, checked on both sides."""
    exp = np.array([0.0, 100.0], np.float64)  # float64 arithmetic, compared as float32 outputs
    for delta, ok in ((0.9e-4, True), (1.2e-4, False)):  # at 0: atol alone
        act = exp + np.array([delta, 0.0])
        assert compare_outputs(["y"], [exp.astype(np.float32)], [act.astype(np.float32)]
                               )[0].passed is ok, delta
    for delta, ok in ((0.095, True), (0.11, False)):  # at 100: 1e-4 + 0.1
        act = exp + np.array([0.0, delta])
        assert compare_outputs(["y"], [exp.astype(np.float32)], [act.astype(np.float32)]
                               )[0].passed is ok, delta


def test_report_text_and_dict() -> None:
    exp = np.zeros((3, 2), np.float32)
    report = ParityReport(outputs=compare_outputs(["y"], [exp], [exp + 1.0], batch=3))
    assert not report.passed
    text = str(report)
    assert "FAILED" in text and "FAIL y (batch 3" in text and "worst row 0" in text
    assert report.to_dict()["passed"] is False
    assert report.worst is not None and report.worst.name == "y"
    assert ParityReport(verified=False, reason="no reference").summary() == "not verified: no reference"


def _report() -> ParityReport:
    from onnxbridge.verify import OutputParity

    return ParityReport(
        outputs=[
            OutputParity("label", "label", 1, (1,), "int64", None, None, 0.0, 0.0, "exact: label",
                         0, 1.0, True),
            OutputParity("proba", "value", 1, (1, 3), "float32", 2.5e-7, 1e-6, 1e-4, 1e-3,
                         "float32 rounding", 0, None, True),
            OutputParity("proba", "value", 3, (3, 3), "float32", 0.25, 0.5, 1e-4, 1e-3,
                         "float32 rounding", 2, None, False),
        ],
        verified=True, reason=None, notes=["sample had 1 row"], provider="CPUExecutionProvider")


def test_report_texts_are_exact() -> None:
    report = _report()
    assert report.summary() == "FAILED: 2 outputs on batches [1, 3], max abs 0.25"
    assert report.outputs[0].line() == "ok   label (batch 1, label, int64), agreement 100.0000%"
    assert report.outputs[2].line() == (
        "FAIL proba (batch 3, value, float32), max abs 0.25, max rel 0.5, tol atol=0.0001"
        " rtol=0.001 (float32 rounding), worst row 2")
    assert str(report).splitlines()[0] == (
        "parity FAILED: 2 outputs on batches [1, 3], max abs 0.25 (ONNX side on"
        " CPUExecutionProvider)")
    assert str(report).splitlines()[-1] == "  note: sample had 1 row"
    report.outputs.pop()
    assert report.summary() == "passed: 2 outputs on batches [1], max abs 2.5e-07"
    unverified = ParityReport(verified=False, reason="no reference")
    assert unverified.summary() == "not verified: no reference" and not unverified.passed


def test_stored_report_round_trips() -> None:
    import json

    for report in (_report(), ParityReport(verified=False, reason="verify=False")):
        data = json.loads(report.to_json())
        assert data["passed"] is report.passed and data["verified"] is report.verified
        assert ParityReport.from_dict(data) == report  # every field, shapes as tuples again
    assert ParityReport.from_dict({}) == ParityReport()  # an empty record: nothing, verified


def _op(name: str, **fields: object) -> object:
    from onnxbridge.verify import OutputParity

    base: dict[str, object] = dict(name=name, kind="value", batch=None, shape=(), dtype="float64",
                                   max_abs=None, max_rel=None, atol=0.0, rtol=0.0,
                                   tolerance_reason="", worst_row=None, label_agreement=None,
                                   passed=True, problem=None)
    base.update(fields)
    return OutputParity(**base)  # type: ignore[arg-type]


def test_every_field_of_a_comparison_by_hand() -> None:
    exact = "exact: label values must be equal"
    (labels,) = compare_outputs(["label"], [np.array([0, 1, 4, 2])], [np.array([1, 1, 2, 2])],
                                kinds={"label": "label"}, batch=4)
    # differences [1, 0, 2, 0]; relative to the source's [0, 1, 4, 2]: 1 / (a tiny 1e-300), 0.5
    assert labels == _op("label", kind="label", batch=4, shape=(4,), dtype="int64", max_abs=2.0,
                         max_rel=1.0 / 1e-300, tolerance_reason=exact, worst_row=0, label_agreement=0.5,
                         passed=False)
    (no_rows,) = compare_outputs(["label"], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)],
                                 kinds={"label": "label"})
    assert no_rows.passed and no_rows.label_agreement == 1.0
    # Float labels are still labels: exact, whatever the dtype's rounding would allow.
    (floats,) = compare_outputs(["label"], [np.array([0.0, 2.0])], [np.array([0.0, 2.0])],
                                kinds={"label": "label"})
    assert floats == _op("label", kind="label", shape=(2,), max_abs=0.0, max_rel=0.0,
                         tolerance_reason=exact, label_agreement=1.0)
    (text,) = compare_outputs(["name"], [np.array(["a", "b"])], [np.array(["a", "c"], object)])
    assert text == _op("name", shape=(2,), dtype="object", worst_row=1, label_agreement=0.5,
                       tolerance_reason="exact: object values must be equal", passed=False)
    inf, nan = np.inf, np.nan
    exp = np.array([[0.0, 1.0], [inf, nan], [2.0, 4.0]])
    given = "given by the caller or converter"
    # diff 0.5 against atol 0.5 + rtol 0 * 0: on the boundary, which passes (<=).
    (edge,) = compare_outputs(["y"], [exp], [np.array([[0.5, 1.0], [inf, nan], [2.0, 4.004]])],
                              tolerance=(0.5, 1e-3), batch=3)
    assert edge == _op("y", batch=3, shape=(3, 2), max_abs=0.5, max_rel=0.5 / 1e-12, atol=0.5,
                       rtol=1e-3, tolerance_reason=given, worst_row=0)
    (far,) = compare_outputs(["y"], [exp], [np.array([[0.0, 1.0], [1e30, nan], [2.0, 5.0]])],
                             tolerance=(0.5, 1e-3))
    assert far == _op("y", shape=(3, 2), max_abs=inf, max_rel=inf, atol=0.5, rtol=1e-3,
                      tolerance_reason=given, worst_row=1, passed=False)
    # The worst row is the one furthest beyond its tolerance, not the largest difference.
    (rows,) = compare_outputs(["y"], [np.array([[100.0], [0.0]])], [np.array([[100.5], [0.2]])])
    assert rows.worst_row == 1 and rows.max_abs == 0.5 and not rows.passed
    (shape,) = compare_outputs(["y"], [np.ones((2, 3))], [np.ones((3, 2, 2))], batch=2)
    assert shape == _op("y", batch=2, shape=(3, 2, 2), atol=1e-8, rtol=1e-6,
                        tolerance_reason="float64 rounding", passed=False,
                        problem="shape [3, 2, 2] but the source gives [2, 3]")
    (nan_vs_number,) = compare_outputs(["y"], [np.array([nan])], [np.array([1.0])])
    assert nan_vs_number.max_abs == inf and not nan_vs_number.passed
    (empty,) = compare_outputs(["y"], [np.zeros((0, 3))], [np.zeros((0, 3))])
    assert empty == _op("y", shape=(0, 3), max_abs=0.0, max_rel=0.0, atol=1e-8, rtol=1e-6,
                        tolerance_reason="float64 rounding")
    (count,) = compare_outputs(["y", "z"], [np.ones(2)], [np.ones(2), np.ones(2)], batch=2)
    assert count == _op("y, z", batch=2, dtype="?", passed=False,
                        problem="the ONNX model gives 2 outputs, the source 1")


def test_converter_tolerances_apply_unless_the_caller_gives_one() -> None:
    exp, act = np.zeros(2, np.float32), np.full(2, 0.05, np.float32)
    declared = {"y": (0.1, 0.0)}
    (r,) = compare_outputs(["y"], [exp], [act], converter_tolerances=declared)
    assert r.passed and (r.atol, r.rtol) == (0.1, 0.0)
    assert r.tolerance_reason == "given by the caller or converter"
    (other,) = compare_outputs(["z"], [exp], [act], converter_tolerances=declared)
    assert not other.passed and other.atol == 1e-4  # declared for another output
    (caller,) = compare_outputs(["y"], [exp], [act], tolerance=(0.01, 0.0),
                                converter_tolerances=declared)
    assert not caller.passed and caller.atol == 0.01  # the caller's tolerance wins


def test_unknown_float_dtypes_get_float32_tolerances() -> None:
    assert default_tolerance(np.dtype(np.longdouble), "value")[:2] == (1e-4, 1e-3)


def test_report_texts_without_errors_or_provider() -> None:
    from onnxbridge.verify import OutputParity

    label = OutputParity("label", "label", 2, (2,), "str", None, None, 0.0, 0.0, "exact", None,
                         1.0, True)
    report = ParityReport(outputs=[label])
    assert report.summary() == "passed: 1 output on batches [2]"
    assert str(report) == ("parity passed: 1 output on batches [2]\n"
                           "  ok   label (batch 2, label, str), agreement 100.0000%")
