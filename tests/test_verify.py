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


def test_default_tolerances_follow_dtype() -> None:
    assert default_tolerance(np.dtype(np.float64), "value")[0] < default_tolerance(
        np.dtype(np.float32), "value")[0]
    assert default_tolerance(np.dtype(np.int64), "value")[:2] == (0.0, 0.0)


def test_report_text_and_dict() -> None:
    exp = np.zeros((3, 2), np.float32)
    report = ParityReport(outputs=compare_outputs(["y"], [exp], [exp + 1.0], batch=3))
    assert not report.passed
    text = str(report)
    assert "FAILED" in text and "FAIL y (batch 3" in text and "worst row 0" in text
    assert report.to_dict()["passed"] is False
    assert report.worst is not None and report.worst.name == "y"
    assert ParityReport(verified=False, reason="no reference").summary() == "not verified: no reference"
