"""The SVG picture of a graph, and ``GraphView`` that Jupyter shows inline."""

from __future__ import annotations

import html
import itertools
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Union

if TYPE_CHECKING:
    import onnx

from onnxbridge.viz.graph import _read_graph
from onnxbridge.viz.layout import _build, _Layout, _text_width

_FONT = "-apple-system, 'Segoe UI', Helvetica, Arial, 'Liberation Sans', 'DejaVu Sans', sans-serif"
_IDS = itertools.count(1)
_BAD_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class GraphView:
    """A graph picture that Jupyter shows inline (``m.show()`` returns one)."""

    def __init__(self, svg: str) -> None:
        self.svg = svg

    def _repr_svg_(self) -> str:
        return self.svg

    def _repr_html_(self) -> str:
        # Tall graphs scroll inside the cell instead of pushing the notebook apart.
        return f'<div style="max-height:760px;overflow:auto">{self.svg}</div>'

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the SVG to ``path`` and return it."""
        target = Path(path)
        target.write_text(self.svg, encoding="utf-8")
        return target

    def __repr__(self) -> str:
        return f"<GraphView: SVG of {len(self.svg):,} characters; display it in Jupyter or save() it>"


def _text(value: object) -> str:
    """Text safe inside XML: no control characters, then escaped."""
    return html.escape(_BAD_XML_CHARS.sub("?", str(value)), quote=True)


def _render(layout: _Layout, ox: float, oy: float, out: list[str], marker: str) -> None:
    for item in layout.items:
        if item.kind == "group" and item.group is not None:
            x0, y0 = ox + item.x - item.w / 2, oy + item.y
            out.append(f'<g class="obz-group"><title>{_text(item.tooltip)}</title>'
                       f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{item.w:.1f}" height="{item.h:.1f}" rx="8"'
                       ' fill="#f8fafc" stroke="#94a3b8" stroke-width="1.2" stroke-dasharray="5,3"/>'
                       f'<rect x="{x0 + 8:.1f}" y="{y0 + 5:.1f}" width="40" height="16" rx="8"'
                       ' fill="#334155"/>'
                       f'<text x="{x0 + 28:.1f}" y="{y0 + 17:.1f}" font-size="11" font-weight="bold"'
                       f' fill="#ffffff" text-anchor="middle">{_text(item.badge)}</text>'
                       f'<text x="{x0 + 54:.1f}" y="{y0 + 17:.1f}" font-size="11" fill="#334155">'
                       f"{_text(item.header)}</text></g>")
            inner_x = x0 + (item.w - item.group.width) / 2
            _render(item.group, inner_x, y0 + 24, out, marker)
    for points in layout.routes:
        (x, y), rest = points[0], points[1:]
        path = [f"M{ox + x:.1f},{oy + y:.1f}"]
        for nx, ny in rest:
            mid = (y + ny) / 2
            path.append(f"C{ox + x:.1f},{oy + mid:.1f} {ox + nx:.1f},{oy + mid:.1f}"
                        f" {ox + nx:.1f},{oy + ny:.1f}")
            x, y = nx, ny
        out.append(f'<path class="obz-edge" d="{" ".join(path)}" fill="none" stroke="#64748b"'
                   f' stroke-width="1.2" marker-end="url(#{marker})"/>')
    for item in layout.items:
        if item.kind in ("group", "port", "dummy"):
            continue
        x0, y0 = ox + item.x - item.w / 2, oy + item.y
        fill, stroke = item.colours
        radius = item.h / 2 if item.kind in ("input", "output") else 5
        out.append(f'<g class="obz-{item.kind}"><title>{_text(item.tooltip)}</title>'
                   f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{item.w:.1f}" height="{item.h:.1f}"'
                   f' rx="{radius:.1f}" fill="{fill}" stroke="{stroke}" stroke-width="1.2"/>')
        ty = y0 + 5
        for text, size, bold, colour in item.lines:
            ty += size + 2
            weight = ' font-weight="bold"' if bold else ""
            out.append(f'<text x="{ox + item.x:.1f}" y="{ty:.1f}" font-size="{size}"{weight}'
                       f' fill="{colour}" text-anchor="middle">{_text(text)}</text>')
            ty += 2
        out.append("</g>")


class HasProto(Protocol):
    """Anything holding a model proto (an ``OnnxModel``): viz reads the proto, nothing else."""

    @property
    def proto(self) -> onnx.ModelProto: ...


# What viz draws: a model proto, or an object carrying one.
Drawable = Union["onnx.ModelProto", HasProto]


def _proto(model: Drawable) -> onnx.ModelProto:
    proto = getattr(model, "proto", model)
    if not hasattr(proto, "graph"):
        raise TypeError(f"expected an OnnxModel or onnx.ModelProto, got {type(model).__name__}")
    return proto  # type: ignore[return-value]


def to_svg(model: Drawable, *, collapse: bool = True, max_nodes: int = 400) -> str:
    """A self-contained SVG picture of the model's main graph.

    ``collapse`` draws a run of repeated blocks once, in a frame marked with the count; at most
    ``max_nodes`` operator boxes are drawn (the rest is counted in a final box). Hover a box
    for its inputs, outputs and attributes.

    Examples:
        >>> Path("graph.svg").write_text(onnxbridge.viz.to_svg(m))   # doctest: +SKIP
    """
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be at least 1, got {max_nodes}")
    proto = _proto(model)
    graph = _read_graph(proto)
    layout, left_out = _build(graph, collapse, max_nodes)
    n_params = sum(_count(t.dims) for t in proto.graph.initializer)
    opset = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import)
    boxes = sum(1 for it in layout.items if it.kind == "op") + sum(
        1 for it in layout.items if it.group is not None for sub in it.group.items if sub.kind == "op")
    facts = [f"{_plural(len(proto.graph.node), 'node')} drawn as {_plural(boxes, 'box')}"
             + (f" ({left_out} not drawn)" if left_out else ""),
             f"{_plural(len(proto.graph.initializer), 'initializer')}, {n_params:,} parameters"]
    if graph.folded:
        facts.append(f"{_plural(graph.folded, 'Constant node')} shown as weights")
    facts.append(f"opset {opset}")
    title = proto.graph.name or "graph"
    margin = 16.0
    # The facts go on two lines so that they do not set the width of a small graph's picture.
    lines = ["  ·  ".join(facts[:1]), "  ·  ".join(facts[1:])]
    head = 60.0
    width = max([layout.width + 2 * margin, 320.0] + [_text_width(t, 11, False) + 2 * margin for t in lines])
    height = layout.height + head + margin
    marker = f"obz-arrow-{next(_IDS)}"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="onnxbridge-graph" width="{width:.0f}"'
        f' height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" font-family="{_text(_FONT)}"'
        f' data-nodes="{len(proto.graph.node)}" data-boxes="{boxes}">',
        f"<title>{_text(title)}: ONNX graph</title>",
        f'<defs><marker id="{marker}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7"'
        ' markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#64748b"/>'
        "</marker></defs>",
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
        f'<text x="{margin}" y="20" font-size="14" font-weight="bold" fill="#0f172a">{_text(title)}</text>',
        f'<text x="{margin}" y="36" font-size="11" fill="#475569">{_text(lines[0])}</text>',
        f'<text x="{margin}" y="50" font-size="11" fill="#475569">{_text(lines[1])}</text>',
    ]
    _render(layout, margin + (width - 2 * margin - layout.width) / 2, head, out, marker)
    out.append("</svg>")
    return "\n".join(out)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('x') else 's'}"


def _count(dims: Sequence[int]) -> int:
    total = 1
    for d in dims:
        total *= d
    return total
