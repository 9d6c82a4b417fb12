"""Graph pictures (onnxbridge.viz) and the notebook card (OnnxModel._repr_html_)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxbridge
from onnxbridge import OnnxModel, viz
from onnxbridge.verify import OutputParity, ParityReport

SVG = "{http://www.w3.org/2000/svg}"


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto], inits: list[onnx.TensorProto] = (),  # type: ignore[assignment]
           name: str = "g") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def small_model() -> onnx.ModelProto:
    """x -> MatMul -> Add -> Relu -> Softmax, plus a Constant folded into a Mul."""
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="dense"),
        helper.make_node("Add", ["h", "b"], ["hb"], name="bias"),
        helper.make_node("Relu", ["hb"], ["r"], name="act"),
        helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2.0, np.float32))),
        helper.make_node("Mul", ["r", "two"], ["m"], name="scale"),
        helper.make_node("Softmax", ["m"], ["y"], name="probs", axis=-1),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w, b])


def repeated_model(blocks: int = 10) -> onnx.ModelProto:
    """A stem, then ``blocks`` copies of MatMul -> Add(residual) -> Relu, then a head."""
    inits = []
    nodes = [helper.make_node("Abs", ["x"], ["t0"], name="stem")]
    for i in range(blocks):
        inits.append(numpy_helper.from_array(np.eye(4, dtype=np.float32), f"layer{i}.w"))
        nodes += [
            helper.make_node("MatMul", [f"t{i}", f"layer{i}.w"], [f"mm{i}"], name=f"/layer.{i}/MatMul"),
            helper.make_node("Add", [f"mm{i}", f"t{i}"], [f"add{i}"], name=f"/layer.{i}/Add"),
            helper.make_node("Relu", [f"add{i}"], [f"t{i + 1}"], name=f"/layer.{i}/Relu"),
        ]
    nodes.append(helper.make_node("Sigmoid", [f"t{blocks}"], ["y"], name="head"))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits,
                  name="stack")


def boxes(svg: str, kind: str = "op") -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == f"obz-{kind}"]


def texts(svg: str) -> list[str]:
    return [t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}text")]


# -- the SVG ---------------------------------------------------------------------------------------
def test_svg_is_well_formed_and_shows_every_op() -> None:
    proto = small_model()
    svg = viz.to_svg(OnnxModel(proto))
    root = ET.fromstring(svg)  # raises on malformed XML
    assert root.tag == f"{SVG}svg" and float(root.get("width", 0)) > 100
    words = texts(svg)
    for op in ("MatMul", "Add", "Relu", "Mul", "Softmax"):
        assert op in words, op
    assert "Constant" not in words  # folded into its consumer, shown as a weight
    assert any("[4×3]" in w for w in words)  # the MatMul's weight shape  # noqa: RUF001
    assert {"x", "y"} <= set(words)  # the graph's input and output
    assert len(boxes(svg)) == 5 and len(boxes(svg, "input")) == 1 and len(boxes(svg, "output")) == 1
    # Five ops in a chain: one edge each from x, between the ops, and to y.
    edges = [p for p in root.iter(f"{SVG}path") if p.get("class") == "obz-edge"]
    assert len(edges) == 6
    assert "6 nodes drawn as 5 boxes" in svg and "2 initializers" in svg and "1 Constant node" in svg


def test_svg_accepts_a_model_proto_and_rejects_other_things() -> None:
    assert viz.to_svg(small_model()).startswith("<svg")
    with pytest.raises(TypeError, match="OnnxModel or onnx.ModelProto"):
        viz.to_svg("model.onnx")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_nodes"):
        viz.to_svg(small_model(), max_nodes=0)


def test_layout_keeps_boxes_apart_and_in_order() -> None:
    root = ET.fromstring(viz.to_svg(repeated_model(3), collapse=False))
    rects = []
    for g in root.iter(f"{SVG}g"):
        if g.get("class") in ("obz-op", "obz-input", "obz-output"):
            r = g.find(f"{SVG}rect")
            assert r is not None
            rects.append(tuple(float(r.get(k, 0)) for k in ("x", "y", "width", "height")))
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            apart = a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]
            assert apart, (a, b)
    ys = [r[1] for r in rects]
    assert ys == sorted(ys)  # a chain in file order flows downwards


def test_repeated_blocks_collapse_into_one_frame_with_a_count() -> None:
    proto = repeated_model(10)
    full = viz.to_svg(proto, collapse=False)
    folded = viz.to_svg(proto)
    assert len(boxes(full)) == 32 and not boxes(full, "group")
    (group,) = boxes(folded, "group")
    assert len(boxes(folded)) == 5  # stem, one MatMul/Add/Relu block, head
    words = texts(folded)
    assert "×10" in words  # noqa: RUF001
    assert any("3 nodes each" in w and "layer.0 … layer.9" in w for w in words)
    # The frame encloses the block's three boxes.
    frame = group.find(f"{SVG}rect")
    assert frame is not None
    fx, fy, fw, fh = (float(frame.get(k, 0)) for k in ("x", "y", "width", "height"))
    inner = [b.find(f"{SVG}rect") for b in boxes(folded)]
    enclosed = [r for r in inner if r is not None and fx <= float(r.get("x", 0))
                and float(r.get("x", 0)) + float(r.get("width", 0)) <= fx + fw
                and fy <= float(r.get("y", 0)) <= fy + fh]
    assert len(enclosed) == 3


def test_no_collapse_for_blocks_that_differ() -> None:
    proto = repeated_model(4)
    proto.graph.node[5].op_type = "Sub"  # the second block's Add becomes a Sub: no longer a repeat
    svg = viz.to_svg(proto)
    group_texts = [t for g in boxes(svg, "group") for t in g.itertext()]
    assert "×4" not in group_texts  # noqa: RUF001
    assert "Sub" in texts(svg)


def test_max_nodes_bounds_the_picture() -> None:
    svg = viz.to_svg(repeated_model(10), collapse=False, max_nodes=7)
    assert len(boxes(svg)) == 7
    (more,) = boxes(svg, "more")
    assert "25 more nodes not drawn" in "".join(more.itertext())
    assert not boxes(svg, "output")  # its producer was not drawn


def test_hostile_names_stay_text() -> None:
    evil = "<script>alert(1)</script>"
    proto = _model([helper.make_node("Relu", [evil], ["y\x01&"], name='"><svg onload=x>')],
                   [helper.make_tensor_value_info(evil, TensorProto.FLOAT, [2])],
                   [helper.make_tensor_value_info("y\x01&", TensorProto.FLOAT, [2])], name="a<b")
    svg = viz.to_svg(proto)
    root = ET.fromstring(svg)
    assert not [e for e in root.iter() if "script" in e.tag or e.get("onload")]
    assert evil in texts(svg)
    page = viz.to_html(proto)
    assert evil not in page and "&lt;script&gt;" in page


def test_graphs_without_nodes_and_with_subgraphs() -> None:
    empty = _model([], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])])
    svg = viz.to_svg(empty)
    assert not boxes(svg) and len(boxes(svg, "input")) == 1 and len(boxes(svg, "output")) == 1

    branch = helper.make_graph([helper.make_node("Neg", ["x"], ["z"])], "b", [],
                               [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])])
    cond = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch, name="pick")
    proto = _model([cond], [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    svg = viz.to_svg(proto)
    (node,) = boxes(svg)
    title = node.find(f"{SVG}title")
    assert title is not None and "then_branch = subgraph of 1 nodes" in (title.text or "")


def test_to_html_is_a_whole_page() -> None:
    m = OnnxModel(repeated_model(3))
    page = viz.to_html(m)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert 'class="onnxbridge-model"' in page and "<svg" in page and "Operators" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    assert "https://" not in page


def test_show_returns_an_inline_picture(tmp_path: Path) -> None:
    m = OnnxModel(repeated_model(3))
    view = m.show(collapse=False)
    assert view._repr_svg_().startswith("<svg") and len(boxes(view._repr_svg_())) == 11
    assert "<svg" in view._repr_html_()
    path = view.save(tmp_path / "g.svg")
    ET.parse(path)


def test_importing_onnxbridge_does_not_import_viz() -> None:
    code = ("import sys, onnxbridge; assert 'onnxbridge.viz' not in sys.modules\n"
            "import onnxbridge.viz\n"
            "heavy = {'torch', 'sklearn', 'IPython', 'matplotlib', 'graphviz'} & set(sys.modules)\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_resnet18_is_readable() -> None:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.resnet18(weights=None).eval()
    m = onnxbridge.to_onnx(net, torch.randn(1, 3, 64, 64))
    nodes = len(m.proto.graph.node)
    svg = m.show()._repr_svg_()
    drawn = len(boxes(svg))
    assert drawn < min(nodes, 80)
    assert boxes(svg, "group") and any(t.startswith("×") for t in texts(svg))  # noqa: RUF001
    root = ET.fromstring(svg)
    assert float(root.get("width", 0)) < 1200  # a narrow column, not a sprawling sheet
    assert len(boxes(viz.to_svg(m, collapse=False))) == nodes


# -- the notebook card -----------------------------------------------------------------------------
def _parity(passed: bool) -> ParityReport:
    return ParityReport(outputs=[OutputParity(
        name="y", kind="values", batch=2, shape=(2, 3), dtype="float32", max_abs=0.0 if passed else 0.5,
        max_rel=0.0, atol=1e-5, rtol=1e-4, tolerance_reason="float32", worst_row=None,
        label_agreement=None, passed=passed)])


def test_card_shows_signature_provenance_parity_and_providers() -> None:
    proto = small_model()
    for key, value in (("onnxbridge.converter", "sklearn"), ("onnxbridge.framework", "scikit-learn"),
                       ("onnxbridge.framework_version", "1.5.2")):
        proto.metadata_props.add(key=key, value=value)
    m = OnnxModel(proto, parity=_parity(True))
    card = m._repr_html_()
    assert "<th" in card and ">dtype<" in card and ">shape<" in card
    assert "<code>x</code>" in card and "float32" in card and "[batch, 4]" in card
    assert "<code>y</code>" in card and "[batch, 3]" in card
    assert "scikit-learn 1.5.2 by sklearn" in card and "ai.onnx 17" in card
    assert "passed: 1 outputs" in card and "#1a7f37" in card  # green
    assert "CPUExecutionProvider" in card and "runs on" in card
    assert len(m._sessions) == 0  # displaying did not load the model

    failed = OnnxModel(small_model(), parity=_parity(False))._repr_html_()
    assert "FAILED: 1 outputs" in failed and "#cf222e" in failed  # red
    unknown = OnnxModel(small_model())._repr_html_()
    assert "not checked" in unknown


def test_card_reads_a_stored_parity_report() -> None:
    proto = small_model()
    proto.metadata_props.add(key="onnxbridge.parity", value=json.dumps(_parity(True).to_dict()))
    assert "passed: 1 outputs" in OnnxModel(proto)._repr_html_()


def test_card_escapes_hostile_names() -> None:
    evil = "<script>alert(1)</script>"
    proto = _model([helper.make_node("Relu", [evil], ["y"])],
                   [helper.make_tensor_value_info(evil, TensorProto.FLOAT, [2])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], name="<b>bold</b>")
    proto.metadata_props.add(key="onnxbridge.converter", value="<img src=x onerror=alert(1)>")
    card = OnnxModel(proto)._repr_html_()
    assert "<script>" not in card and "<img" not in card and "<b>bold" not in card
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in card


def test_card_shows_a_bad_provider_setting_instead_of_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXBRIDGE_PROVIDERS", "cpu")
    assert "CPUExecutionProvider (as set)" in OnnxModel(small_model())._repr_html_()
    monkeypatch.setenv("ONNXBRIDGE_PROVIDERS", ",")
    assert "cannot tell: an empty provider list" in OnnxModel(small_model())._repr_html_()
