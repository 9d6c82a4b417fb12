"""Parity: does the ONNX model compute what the source model computed on the same input?"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["OutputParity", "ParityReport", "Tolerance", "compare_outputs", "default_tolerance"]

# A single number (used as both atol and rtol), an (atol, rtol) pair, or one of those per output.
Tolerance = float | tuple[float, float] | Mapping[str, float | tuple[float, float]]

# (atol, rtol) by dtype; |onnx - source| <= atol + rtol * |source| must hold element-wise.
_FLOAT_TOLERANCE: dict[str, tuple[float, float]] = {
    "float16": (1e-2, 1e-2),
    "bfloat16": (2e-2, 2e-2),
    "float32": (1e-4, 1e-3),
    "float64": (1e-8, 1e-6),
}


def default_tolerance(dtype: np.dtype, kind: str) -> tuple[float, float, str]:
    """(atol, rtol, why) for an output of this dtype and kind."""
    if kind == "label" or dtype.kind in "biuOUSM":
        return 0.0, 0.0, f"exact: {kind if kind == 'label' else dtype} values must be equal"
    name = dtype.name
    atol, rtol = _FLOAT_TOLERANCE.get(name, _FLOAT_TOLERANCE["float32"])
    return atol, rtol, f"{name} rounding"


@dataclass
class OutputParity:
    """How one output of the ONNX model compares with the source model's."""

    name: str
    kind: str
    batch: int | None
    shape: tuple[int, ...]
    dtype: str
    max_abs: float | None
    max_rel: float | None
    atol: float
    rtol: float
    tolerance_reason: str
    worst_row: int | None
    label_agreement: float | None
    passed: bool
    problem: str | None = None

    def line(self) -> str:
        status = "ok  " if self.passed else "FAIL"
        if self.problem:
            return f"{status} {self.name} (batch {self.batch}): {self.problem}"
        parts = [f"{status} {self.name} (batch {self.batch}, {self.kind}, {self.dtype})"]
        if self.label_agreement is not None:
            parts.append(f"agreement {self.label_agreement:.4%}")
        if self.max_abs is not None:
            parts.append(f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}")
            parts.append(f"tol atol={self.atol:g} rtol={self.rtol:g} ({self.tolerance_reason})")
        if not self.passed and self.worst_row is not None:
            parts.append(f"worst row {self.worst_row}")
        return ", ".join(parts)


@dataclass
class ParityReport:
    """The comparison of every output on every batch checked; ``passed`` when all are within."""

    outputs: list[OutputParity] = field(default_factory=list)
    verified: bool = True
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    provider: str | None = None  # the onnxruntime provider the ONNX side ran on
    # True for a report read back from a model file: a claim made at conversion, not a check
    # made here (see from_record and `onnxbridge check --verify-recorded`).
    recorded: bool = False

    @property
    def passed(self) -> bool:
        return self.verified and all(o.passed for o in self.outputs)

    @property
    def batch_sizes(self) -> list[int]:
        return sorted({o.batch for o in self.outputs if o.batch is not None})

    @property
    def worst(self) -> OutputParity | None:
        """The output furthest from its tolerance (a failing one first)."""
        if not self.outputs:
            return None

        def badness(o: OutputParity) -> float:
            if not o.passed:
                return math.inf if o.max_abs is None else 1e300 + (o.max_abs or 0)
            if o.max_abs is None:
                return 0.0
            return o.max_abs / (o.atol + 1e-300)

        return max(self.outputs, key=badness)

    def summary(self) -> str:
        """One line: ``passed: 3 outputs on batches [1, 3], max abs 2.4e-07``; a report read
        from a file says ``recorded at conversion (not re-checked here): passed: ...``."""
        if not self.verified:
            line = f"not verified: {self.reason}"
        else:
            errors = [o.max_abs for o in self.outputs if o.max_abs is not None]
            worst = f", max abs {max(errors):.3g}" if errors else ""
            state = "passed" if self.passed else "FAILED"
            count = len({o.name for o in self.outputs})
            outputs = "1 output" if count == 1 else f"{count} outputs"
            line = f"{state}: {outputs} on batches {self.batch_sizes}{worst}"
        return f"{RECORDED_PREFIX}{line}" if self.recorded else line

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "verified": self.verified,
            "reason": self.reason,
            "notes": list(self.notes),
            "provider": self.provider,
            "outputs": [asdict(o) for o in self.outputs],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParityReport:
        """Rebuild a report from ``to_dict()`` output (as stored in a model's metadata)."""
        fields = set(OutputParity.__dataclass_fields__)
        outputs = []
        for o in data.get("outputs", []):
            values = {k: v for k, v in o.items() if k in fields}
            values["shape"] = tuple(values.get("shape") or ())
            outputs.append(OutputParity(**values))
        return cls(outputs=outputs, verified=bool(data.get("verified", True)),
                   reason=data.get("reason"), notes=list(data.get("notes", [])),
                   provider=data.get("provider"))

    @classmethod
    def from_record(cls, text: str) -> ParityReport | None:
        """The report a conversion stored in a model's metadata, checked field by field, marked
        ``recorded``; None when the text is not a well-formed report (never raises)."""
        from onnxbridge._text import own_json

        data = own_json(text)
        if data is None:
            return None
        try:
            outputs = data.get("outputs", [])
            notes = data.get("notes", [])
            if not isinstance(outputs, list) or not isinstance(notes, list) or len(outputs) > 10_000:
                return None
            parsed = [_output_from_record(o) for o in outputs]
            if any(o is None for o in parsed) or not all(isinstance(n, str) for n in notes):
                return None
            verified, reason, provider = (data.get("verified", True), data.get("reason"),
                                          data.get("provider"))
            if not isinstance(verified, bool) or not _opt(reason, str) or not _opt(provider, str):
                return None
            return cls(outputs=[o for o in parsed if o is not None], verified=verified,
                       reason=reason, notes=list(notes), provider=provider, recorded=True)
        except (TypeError, ValueError, AttributeError, OverflowError):
            return None

    def __str__(self) -> str:
        lines = [f"parity {self.summary()}" + (f" (ONNX side on {self.provider})"
                                                if self.provider else "")]
        lines += ["  " + o.line() for o in self.outputs]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


RECORDED_PREFIX = "recorded at conversion (not re-checked here): "


def _opt(value: Any, kind: type | tuple[type, ...]) -> bool:
    return value is None or (isinstance(value, kind) and not isinstance(value, bool))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _output_from_record(o: Any) -> OutputParity | None:
    """One output's entry of a stored report, if every field has the type it must have."""
    if not isinstance(o, dict):
        return None
    shape = o.get("shape") or []
    strings = ("name", "kind", "dtype", "tolerance_reason")
    if not (all(isinstance(o.get(k), str) for k in strings)
            and isinstance(shape, list) and len(shape) <= 64
            and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
            and _opt(o.get("batch"), int) and _opt(o.get("worst_row"), int)
            and all(o.get(k) is None or _number(o.get(k))
                    for k in ("max_abs", "max_rel", "label_agreement"))
            and _number(o.get("atol")) and _number(o.get("rtol"))
            and isinstance(o.get("passed"), bool) and _opt(o.get("problem"), str)):
        return None
    return OutputParity(
        name=o["name"], kind=o["kind"], batch=o.get("batch"), shape=tuple(shape),
        dtype=o["dtype"], max_abs=o.get("max_abs"), max_rel=o.get("max_rel"), atol=o["atol"],
        rtol=o["rtol"], tolerance_reason=o["tolerance_reason"], worst_row=o.get("worst_row"),
        label_agreement=o.get("label_agreement"), passed=o["passed"], problem=o.get("problem"))


def _tolerance_for(name: str, given: Tolerance | None) -> tuple[float, float] | None:
    if given is None:
        return None
    if isinstance(given, Mapping):
        if name not in given:
            return None
        given = given[name]
    if isinstance(given, (int, float)):
        return float(given), float(given)
    atol, rtol = given
    return float(atol), float(rtol)


def _dtype_family(dtype: np.dtype) -> str:
    """'bool', 'integer', 'float', 'complex', 'string' or the dtype itself: widths may differ
    between source and ONNX (float64 against float32, int32 against int64), families not."""
    families = {"b": "bool", "i": "integer", "u": "integer", "f": "float", "c": "complex",
                "O": "string", "U": "string", "S": "string"}
    return families.get(dtype.kind, str(dtype))


def _compare_one(
    name: str, kind: str, expected: Any, actual: Any, batch: int | None,
    override: tuple[float, float] | None,
) -> OutputParity:
    exp = np.asarray(expected)
    act = np.asarray(actual)
    dtype = act.dtype
    atol, rtol, why = default_tolerance(dtype, kind)
    if override is not None:
        atol, rtol, why = override[0], override[1], "given by the caller or converter"
    base: dict[str, Any] = dict(name=name, kind=kind, batch=batch, shape=tuple(act.shape), dtype=str(dtype),
                atol=atol, rtol=rtol, tolerance_reason=why)
    # Exact: a [1, N] or [N, 1] label is not an [N] label, even with the same values.
    if exp.shape != act.shape:
        return OutputParity(**base, max_abs=None, max_rel=None, worst_row=None,
                            label_agreement=None, passed=False,
                            problem=f"shape {list(act.shape)} but the source gives {list(exp.shape)}")
    if _dtype_family(exp.dtype) != _dtype_family(act.dtype):
        return OutputParity(**base, max_abs=None, max_rel=None, worst_row=None,
                            label_agreement=None, passed=False,
                            problem=f"dtype {act.dtype} ({_dtype_family(act.dtype)}) but the"
                                    f" source gives {exp.dtype} ({_dtype_family(exp.dtype)})")
    numeric = exp.dtype.kind in "biuf" and act.dtype.kind in "biuf"
    if kind == "label" or not numeric:
        equal = exp == act if numeric or exp.dtype == act.dtype else exp.astype(str) == act.astype(str)
        equal = np.asarray(equal)
        agreement = float(equal.mean()) if equal.size else 1.0
        # one flag per row; a scalar is one row, and an output with no rows has none
        rows = (equal.reshape(equal.shape[0], -1).all(axis=1) if equal.ndim and equal.size
                else equal.reshape(-1)[:1])
        worst = int(np.argmin(rows)) if rows.size and not rows.all() else None
        max_abs = max_rel = None
        if numeric and exp.size:
            diff = np.abs(exp.astype(np.float64) - act.astype(np.float64))
            max_abs = float(diff.max())
            max_rel = float((diff / np.maximum(np.abs(exp.astype(np.float64)), 1e-300)).max())
        return OutputParity(**base, max_abs=max_abs, max_rel=max_rel, worst_row=worst,
                            label_agreement=agreement, passed=agreement == 1.0)
    e = exp.astype(np.float64)
    a = act.astype(np.float64)
    both_nan = np.isnan(e) & np.isnan(a)
    with np.errstate(invalid="ignore"):  # inf - inf is NaN here, and counted just below
        diff = np.where(both_nan, 0.0, np.abs(e - a))
    diff = np.where(np.isnan(diff), np.inf, diff)
    same_inf = np.isinf(e) & (e == a)
    diff = np.where(same_inf, 0.0, diff)
    if not diff.size:
        return OutputParity(**base, max_abs=0.0, max_rel=0.0, worst_row=None,
                            label_agreement=None, passed=True)
    scale = np.abs(np.where(np.isfinite(e), e, 0.0))
    rel = diff / np.maximum(scale, 1e-12)
    excess = diff / (atol + rtol * scale + 1e-300)
    per_row = excess.reshape(excess.shape[0], -1).max(axis=1) if excess.ndim else excess.reshape(1)
    passed = bool((diff <= atol + rtol * scale).all())
    return OutputParity(**base, max_abs=float(diff.max()), max_rel=float(rel.max()),
                        worst_row=int(np.argmax(per_row)), label_agreement=None, passed=passed)


def compare_outputs(
    names: Sequence[str],
    expected: Sequence[Any],
    actual: Sequence[Any],
    *,
    kinds: Mapping[str, str] | None = None,
    batch: int | None = None,
    tolerance: Tolerance | None = None,
    converter_tolerances: Mapping[str, tuple[float, float]] | None = None,
) -> list[OutputParity]:
    """Compare the source model's outputs with the ONNX model's, output by output, in order."""
    kinds = kinds or {}
    if len(expected) != len(actual):
        return [OutputParity(
            name=", ".join(names), kind="value", batch=batch, shape=(), dtype="?", max_abs=None,
            max_rel=None, atol=0.0, rtol=0.0, tolerance_reason="", worst_row=None,
            label_agreement=None, passed=False,
            problem=f"the ONNX model gives {len(actual)} outputs, the source {len(expected)}",
        )]
    out = []
    for name, exp, act in zip(names, expected, actual, strict=True):
        override = _tolerance_for(name, tolerance)
        if override is None and converter_tolerances and name in converter_tolerances:
            override = converter_tolerances[name]
        out.append(_compare_one(name, kinds.get(name, "value"), exp, act, batch, override))
    return out


def stored_parity(proto: Any) -> ParityReport | None:
    """The parity report a conversion wrote into a model's metadata, marked ``recorded`` (a
    claim, not a check made here); None if absent or not well-formed (never raises)."""
    for entry in proto.metadata_props:
        if entry.key == "onnxbridge.parity":
            return ParityReport.from_record(entry.value)
    return None


def lending_session(proto: Any, data_dir: Any, lent: Mapping[str, np.ndarray],
                    provider: str = "CPUExecutionProvider") -> Any:
    """A one-off CPU session for verifying a model whose weights are in ``data_dir``.

    ``lent`` maps initializer names to CPU arrays over the source model's own memory, whose bytes
    the data files hold (the torch converter checks that): onnxruntime uses them in place
    (``SessionOptions.add_initializer``, no copy) instead of reading the files, so the weights
    are in memory once while both models run. Prepacking is off, so onnxruntime makes no packed
    copy of any weight. The rest is read or mapped from the files. The session keeps the arrays
    alive; drop it when done.
    """
    import onnx
    import onnxruntime

    from onnxbridge.runtime.session import proto_session

    external = {t.name for t in proto.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL}
    values = [(name, onnxruntime.OrtValue.ortvalue_from_numpy(array))
              for name, array in lent.items()
              if name in external and isinstance(array, np.ndarray) and array.flags.c_contiguous]

    def in_place(options: Any) -> None:
        options.add_session_config_entry("session.disable_prepacking", "1")
        for name, value in values:
            options.add_initializer(name, value)

    session = proto_session(proto, [provider], data_dir=data_dir, hooks=[in_place])
    session._onnxbridge_lent = values  # onnxruntime reads this memory for the session's life
    return session

