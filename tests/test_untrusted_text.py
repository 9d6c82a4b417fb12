"""Text from a model file is data: no terminal control, no forged lines, capped, parsed safely;
a stored parity report is shown as a claim and can be re-checked (check --verify-recorded)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import make_scale_model

from onnxbridge import OnnxModel
from onnxbridge._text import own_json, shown
from onnxbridge.cli import main
from onnxbridge.verify import OutputParity, ParityReport

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
HOSTILE = "ok\x1b]0;pwned\x07\x1b[2J\r\n  parity: passed (forged line)\u202egnp.exe\x9b31m"


def _report(dtype: str = "float32", name: str = "y", batches: tuple[int, ...] = (1, 3)) -> str:
    outputs = [OutputParity(name=name, kind="values", batch=b, shape=(b, 3), dtype=dtype,
                            max_abs=0.0, max_rel=0.0, atol=1e-4, rtol=1e-3,
                            tolerance_reason="float32 rounding", worst_row=None,
                            label_agreement=None, passed=True) for b in batches]
    return ParityReport(outputs=outputs, provider="CPUExecutionProvider").to_json()


def _saved(tmp_path: Path, **metadata: str) -> Path:
    m = OnnxModel(make_scale_model())
    for key, value in metadata.items():
        m.set_metadata(key, value)
    return m.save(tmp_path / "m.onnx")


def test_shown_escapes_every_control_character_and_caps_length() -> None:
    text = shown(HOSTILE)
    assert not CONTROL.search(text) and "\n" not in text and "\r" not in text
    assert "\\x1b" in text and "\\n" in text and "\\u202e" in text  # visible, not acted on
    assert shown("naïve 日本 tab\tend") == "naïve 日本 tab\\tend"
    long = shown("x" * 40_000_000)
    assert len(long) < 400 and "40,000,000 characters" in long


@pytest.mark.parametrize("text", [
    "[" * 100_000 + "]" * 100_000,          # RecursionError in json.loads
    '{"a": ' * 50_000 + "1" + "}" * 50_000,
    "x" * (2 << 20),                         # over the size cap
    "not json", "[1, 2]", "NaN",
])
def test_own_json_never_raises(text: str) -> None:
    assert own_json(text) is None


@pytest.mark.parametrize("outputs", [
    [{"name": "y", "max_abs": "big"}],
    [{"name": 5}], "not a list", [[1, 2]],
    [json.loads(_report())["outputs"][0] | {"shape": ["a"]}],
    [json.loads(_report())["outputs"][0] | {"passed": "yes"}],
    [json.loads(_report())["outputs"][0] | {"atol": None}],
])
def test_an_ill_typed_stored_report_is_ignored(outputs: object) -> None:
    doc = json.loads(_report())
    doc["outputs"] = outputs
    assert ParityReport.from_record(json.dumps(doc)) is None


def test_a_stored_report_is_a_claim_recorded_at_conversion() -> None:
    report = ParityReport.from_record(_report())
    assert report is not None and report.recorded and report.passed
    assert report.summary().startswith("recorded at conversion (not re-checked here): passed")
    assert ParityReport.from_record(_report()) == report  # a well-formed report reads back whole


def test_info_prints_metadata_as_inert_text(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = _saved(tmp_path, **{"evil\x1b[31m\nkey": HOSTILE, "huge": "A" * 40_000_000})
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert not CONTROL.search(out) and "\r" not in out
    assert not any(line.lstrip().startswith("parity: passed (forged") for line in out.splitlines())
    assert len(out) < 20_000  # the 40 MB value is cut
    assert "40,000,000 characters" in out


def test_verify_recorded_rechecks_what_the_file_allows(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = _saved(tmp_path, **{"onnxbridge.parity": _report()})
    assert main(["check", str(path), "--verify-recorded"]) == 0
    out = capsys.readouterr().out
    assert "ok   re-run at batch 1" in out and "ok   re-run at batch 3" in out
    assert "cannot be re-run from the .onnx file alone" in out


@pytest.mark.parametrize(("report", "expected"), [
    (_report(dtype="int64"), "dtype float32, recorded int64"),
    (_report(name="logits"), "missing: logits"),
    ('{"outputs": [{"name": 1}]}', "not a well-formed report"),
    (None, "carries none"),
])
def test_verify_recorded_fails_a_false_claim(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             report: str | None, expected: str) -> None:
    path = _saved(tmp_path, **({"onnxbridge.parity": report} if report else {}))
    assert main(["check", str(path), "--verify-recorded"]) == 1
    assert expected in capsys.readouterr().out


def test_a_recorded_shape_that_does_not_hold_fails(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(_report())
    doc["outputs"][0]["shape"] = [1, 5]
    path = _saved(tmp_path, **{"onnxbridge.parity": json.dumps(doc)})
    assert main(["check", str(path), "--verify-recorded"]) == 1
    assert "shape [1, 3], recorded [1, 5]" in capsys.readouterr().out


def _hostile_model(tmp_path: Path, **metadata: str) -> Path:
    """Graph, input, output and producer names and metadata carrying terminal control."""
    proto = make_scale_model()
    proto.graph.name = "g" + HOSTILE
    proto.producer_name = "p" + HOSTILE
    for value in (*proto.graph.input, *proto.graph.output):
        old = value.name
        value.name = old + HOSTILE
        for node in proto.graph.node:
            node.input[:] = [value.name if n == old else n for n in node.input]
            node.output[:] = [value.name if n == old else n for n in node.output]
    m = OnnxModel(proto)
    for key, value in {"k" + HOSTILE: HOSTILE, "huge": "B" * 40_000_000, **metadata}.items():
        m.set_metadata(key, value)
    return m.save(tmp_path / "hostile.onnx")


def test_repr_card_html_and_info_show_model_text_inert(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import onnxbridge
    from onnxbridge.viz import to_html

    path = _hostile_model(tmp_path)
    m = onnxbridge.load(path)
    text = repr(m)
    assert not CONTROL.search(text) and len(text.splitlines()) == 8 and len(text) < 20_000
    assert "\\x1b" in text  # shown, escaped
    for page in (m._repr_html_(), to_html(m)):
        assert not CONTROL.search(page) and "\r" not in page and len(page) < 2_000_000
        assert "pwned" in page  # the names are there, inert
    assert "BBBB" in page and "40,000,000 characters" in page  # the page's metadata, cut
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert not CONTROL.search(out) and len(out) < 20_000
    assert all(line.startswith(("OnnxModel", "  ")) for line in out.splitlines())


@pytest.mark.parametrize("stored", [
    "[" * 100_000 + "]" * 100_000,
    json.dumps({"outputs": [{"name": "y", "max_abs": "big", "passed": True}]}),
    json.dumps(json.loads(_report()) | {"outputs": [json.loads(_report())["outputs"][0]
                                                    | {"max_abs": "1e-3"}]}),
])
def test_a_hostile_stored_report_never_breaks_load_repr_or_info(
        tmp_path: Path, stored: str, capsys: pytest.CaptureFixture[str]) -> None:
    import onnxbridge

    path = _saved(tmp_path, **{"onnxbridge.parity": stored})
    m = onnxbridge.load(path)
    assert m.parity is None
    assert "parity" not in repr(m) and "not checked" in m._repr_html_()
    assert main(["info", str(path)]) == 0 and "OnnxModel" in capsys.readouterr().out


def test_a_stored_summary_alone_is_shown_as_a_claim(tmp_path: Path) -> None:
    import onnxbridge

    path = _saved(tmp_path, **{"onnxbridge.parity_summary": "passed: everything, trust me"})
    m = onnxbridge.load(path)
    assert "parity: recorded at conversion (not re-checked here): passed: everything" in repr(m)
    assert "#1a7f37" not in m._repr_html_()  # never the green of a check made here


def test_check_and_error_lines_quote_names_inert(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Checker and error messages quote node and tensor names from the file."""
    proto = make_scale_model()
    proto.graph.node[0].op_type = "NoSuchOp\x1b[2J"
    proto.graph.node[0].name = "n\x1b]0;pwned\x07"
    path = tmp_path / "bad.onnx"
    path.write_bytes(proto.SerializeToString())
    assert main(["info", str(path)]) == 1
    assert main(["run", str(path), "-i", str(path)]) == 1
    captured = capsys.readouterr()
    assert "NoSuchOp" in captured.err
    assert not CONTROL.search(captured.out + captured.err)


def test_info_shows_a_bounded_number_of_metadata_entries(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from onnxbridge.viz import to_html

    m = OnnxModel(make_scale_model())
    for i in range(5000):
        entry = m.proto.metadata_props.add()
        entry.key, entry.value = f"k{i:05d}", "v"
    path = m.save(tmp_path / "many.onnx")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "k00000: v" in out and "k04999" not in out and "4,800 more entries" in out
    assert len(out.splitlines()) < 300
    page = to_html(m)
    assert "k00199" in page and "k00200" not in page and "4,800 more entries" in page
