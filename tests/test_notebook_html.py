"""The notebook card and the `onnxbridge view` page, rendered by a real headless Chromium.

Needs Debian's ``chromium`` package (and ``fonts-liberation`` for readable text). Without it the
test is skipped, except under CI (the CI variable set), where a missing browser is a failure.
Screenshots are kept in ``test-artifacts/`` at the repository root for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxbridge import OnnxModel, viz
from onnxbridge.verify import OutputParity, ParityReport

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# A hostile input name: if the card failed to escape it, the browser would run it.
HOSTILE = "<script>document.documentElement.setAttribute('data-pwned','yes')</script>"


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (Debian: apt-get install -y chromium fonts-liberation)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must run the browser test")
        pytest.skip(reason)
    return CHROMIUM


def _browser(chromium: Path, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={profile}", "--window-size=1200,900", *args,
        page.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr[-2000:]}"
    return result


def _png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of an 8-bit PNG (what Chromium writes), decoded with zlib."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    step = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * step
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - step] if i >= step else 0
            b, c = prev[i], (prev[i - step] if i >= step else 0)
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                near = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + near) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[i] for i in range(len(r)) if i % step < 3) for r in rows]


def _check_screenshot(path: Path, name: str, colours: list[str]) -> None:
    assert path.exists() and path.stat().st_size > 5000, "no screenshot, or an empty one"
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(path, ARTIFACTS / name)
    width, height, rows = _png_pixels(path)
    assert (width, height) == (1200, 900)
    pixels = {row[i:i + 3] for row in rows[::3] for i in range(0, len(row), 9)}
    assert len(pixels) > 20, f"{name} is nearly one colour: {len(pixels)} colours"
    for hex_colour in colours:  # box fills drawn as flat colours must show up as such
        want = bytes.fromhex(hex_colour.lstrip("#"))
        assert any(want in row for row in rows), f"{name}: no {hex_colour} pixel"


def _model() -> OnnxModel:
    """A conv stem, four repeated residual blocks and a head, with a hostile input name."""
    inits = [numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "stem.weight")]
    nodes = [helper.make_node("Conv", [HOSTILE, "stem.weight"], ["t0"], name="stem", pads=[1, 1, 1, 1])]
    for i in range(4):
        inits.append(numpy_helper.from_array(np.ones((4, 4, 3, 3), np.float32), f"block{i}.weight"))
        nodes += [
            helper.make_node("Conv", [f"t{i}", f"block{i}.weight"], [f"c{i}"], name=f"/block.{i}/conv",
                             pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"/block.{i}/relu"),
            helper.make_node("Add", [f"r{i}", f"t{i}"], [f"t{i + 1}"], name=f"/block.{i}/add"),
        ]
    nodes += [helper.make_node("GlobalAveragePool", ["t4"], ["pooled"], name="pool"),
              helper.make_node("Flatten", ["pooled"], ["logits"], name="flatten")]
    graph = helper.make_graph(
        nodes, "ResidualToy",
        [helper.make_tensor_value_info(HOSTILE, TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])], initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    for key, value in (("onnxbridge.converter", "torch"), ("onnxbridge.framework", "torch"),
                       ("onnxbridge.framework_version", "2.5.0")):
        proto.metadata_props.add(key=key, value=value)
    parity = ParityReport(outputs=[OutputParity(
        name="logits", kind="values", batch=2, shape=(2, 4), dtype="float32", max_abs=3e-7,
        max_rel=1e-7, atol=1e-5, rtol=1e-4, tolerance_reason="float32", worst_row=None,
        label_agreement=None, passed=True)])
    return OnnxModel(proto, parity=parity)


def _dom(chromium: Path, page: Path, tmp_path: Path) -> str:
    return _browser(chromium, page, tmp_path / "profile", "--dump-dom").stdout


def test_notebook_card_renders_in_a_browser(chromium: Path, tmp_path: Path) -> None:
    m = _model()
    # What Jupyter puts in the page: the card (m's _repr_html_), then m.show()'s _repr_html_.
    page = tmp_path / "card.html"
    page.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
                    f"{m._repr_html_()}<hr>{m.show()._repr_html_()}</body></html>", encoding="utf-8")
    shot = tmp_path / "card.png"
    _browser(chromium, page, tmp_path / "profile", f"--screenshot={shot}")
    _check_screenshot(shot, "notebook-card.png", ["#dafbe1", "#dbeafe", "#fee2e2"])

    dom = _dom(chromium, page, tmp_path)
    assert 'data-pwned="yes"' not in dom, "the hostile input name ran as a script"
    text = re.sub(r"<[^>]+>", " ", dom)
    for expected in ("OnnxModel", "ResidualToy", "float32", "[batch, 1, 8, 8]", "logits", "passed: 1 output",
                     "torch 2.5.0 by torch", "CPUExecutionProvider", "GlobalAveragePool", "×4",  # noqa: RUF001
                     "3 nodes each"):
        assert expected in text, expected
    assert "&lt;script&gt;document.documentElement" in dom  # shown as text


def test_view_page_renders_in_a_browser(chromium: Path, tmp_path: Path) -> None:
    page = tmp_path / "view.html"
    page.write_text(viz.to_html(_model()), encoding="utf-8")
    shot = tmp_path / "view.png"
    _browser(chromium, page, tmp_path / "profile", f"--screenshot={shot}")
    _check_screenshot(shot, "view-page.png", ["#dafbe1", "#dbeafe", "#e0f2fe"])

    dom = _dom(chromium, page, tmp_path)
    assert 'data-pwned="yes"' not in dom
    text = re.sub(r"<[^>]+>", " ", dom)
    for expected in ("Operators", "Metadata", "onnxbridge.framework_version", "Conv", "Flatten",
                     "passed: 1 output", "×4"):  # noqa: RUF001
        assert expected in text, expected
