"""Boxes and a layered layout: rows by distance from the inputs, edges routed around boxes."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

from onnxbridge.viz.graph import _TIMES, _Graph, _Op
from onnxbridge.viz.grouping import _common_scope, _find_runs, _Run

_MAX_BOX_W = 250.0
_MIN_BOX_W = 72.0
_GAP_X = 22.0
_GAP_Y = 30.0

# Box colours (fill, stroke) by what an operator does: the eye finds the heavy ops first.
_PALETTE: dict[str, tuple[str, str]] = {
    "linear": ("#dbeafe", "#2563eb"),
    "activation": ("#fee2e2", "#dc2626"),
    "norm": ("#dcfce7", "#16a34a"),
    "pool": ("#ede9fe", "#7c3aed"),
    "shape": ("#f1f5f9", "#64748b"),
    "math": ("#fef3c7", "#d97706"),
    "control": ("#fce7f3", "#db2777"),
    "ml": ("#cffafe", "#0891b2"),
    "other": ("#f8fafc", "#475569"),
}
_CATEGORY: dict[str, str] = {}
for _cat, _ops in {
    "linear": "Conv ConvTranspose ConvInteger Gemm MatMul MatMulInteger QLinearConv QLinearMatMul "
              "Attention MultiHeadAttention RNN LSTM GRU Einsum",
    "activation": "Relu LeakyRelu PRelu Elu Selu Celu Sigmoid HardSigmoid Tanh Softmax LogSoftmax Gelu "
                  "FastGelu Erf Softplus Softsign HardSwish Mish Swish ThresholdedRelu Clip",
    "norm": "BatchNormalization LayerNormalization InstanceNormalization GroupNormalization "
            "LpNormalization MeanVarianceNormalization SimplifiedLayerNormalization "
            "SkipLayerNormalization RMSNormalization Dropout",
    "pool": "MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool ReduceMean ReduceMax ReduceMin "
            "ReduceSum ReduceProd ReduceL1 ReduceL2 ReduceLogSumExp ArgMax ArgMin TopK",
    "shape": "Reshape Transpose Concat Split Gather GatherElements GatherND Slice Squeeze Unsqueeze "
             "Flatten Shape Size Expand Cast CastLike Identity Pad Tile ScatterND ScatterElements "
             "ConstantOfShape Range Resize Upsample DepthToSpace SpaceToDepth NonZero Where",
    "math": "Add Sub Mul Div Pow Sqrt Exp Log Abs Neg Reciprocal Max Min Sum Mean Floor Ceil Round "
            "Equal Less Greater LessOrEqual GreaterOrEqual Not And Or Xor Sign Mod CumSum",
    "control": "If Loop Scan SequenceMap",
}.items():
    for _op in _ops.split():
        _CATEGORY[_op] = _cat


# -- layout ----------------------------------------------------------------------------------------
@dataclass
class _Item:
    kind: str                        # op, input, output, group, port, more, dummy
    w: float
    h: float
    lines: list[tuple[str, int, bool, str]] = field(default_factory=list)  # text, size, bold, colour
    tooltip: str = ""
    colours: tuple[str, str] = _PALETTE["other"]
    group: _Layout | None = None
    header: str = ""
    badge: str = ""
    port_in: float = 0.0             # where edges enter / leave, as an offset from the centre
    port_out: float = 0.0
    x: float = 0.0                   # centre
    y: float = 0.0                   # top


@dataclass
class _Layout:
    items: list[_Item]
    edges: list[tuple[int, int]]
    routes: list[list[tuple[float, float]]] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0


def _text_width(text: str, size: int, bold: bool) -> float:
    return len(text) * size * (0.62 if bold else 0.56)


def _fit(text: str, size: int, bold: bool, room: float) -> str:
    limit = max(4, int(room / (size * (0.62 if bold else 0.56))))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _box(kind: str, lines: list[tuple[str, int, bool, str]], tooltip: str,
         colours: tuple[str, str]) -> _Item:
    room = _MAX_BOX_W - 16
    lines = [(_fit(t, s, b, room), s, b, c) for t, s, b, c in lines if t]
    w = max([_MIN_BOX_W] + [_text_width(t, s, b) + 18 for t, s, b, _ in lines])
    h = 10 + sum(s + 4 for _, s, _, _ in lines)
    return _Item(kind, min(w, _MAX_BOX_W), h, lines, tooltip, colours)


def _op_item(op: _Op) -> _Item:
    kind = op.op_type if op.domain in ("", "ai.onnx") else f"{op.domain}::{op.op_type}"
    category = "ml" if op.domain == "ai.onnx.ml" else _CATEGORY.get(op.op_type, "other")
    lines = [(kind, 12, True, "#0f172a"), (op.name or (op.outputs[0] if op.outputs else ""), 10, False,
                                            "#475569")]
    if op.weights:
        lines.append((", ".join(op.weights), 10, False, "#334155"))
    return _box("op", lines, op.tooltip, _PALETTE[category])


def _layout(items: list[_Item], edges: list[tuple[int, int]]) -> _Layout:
    """Place ``items`` in layers (sets their x, y) and route ``edges`` around them."""
    n = len(items)
    edges = list(dict.fromkeys((s, d) for s, d in edges if s != d))
    succ: list[list[int]] = [[] for _ in range(n)]
    pred: list[list[int]] = [[] for _ in range(n)]
    for s, d in edges:
        succ[s].append(d)
        pred[d].append(s)
    # Items come in topological order; an edge pointing backwards (a malformed graph) is dropped.
    edges = [(s, d) for s, d in edges if s < d]
    layer = [0] * n
    for s, d in sorted(edges):
        layer[d] = max(layer[d], layer[s] + 1)
    for v in reversed(range(n)):  # a source (not an input) sits just above its first consumer
        later = [d for d in succ[v] if d > v]
        if not [p for p in pred[v] if p < v] and later and items[v].kind not in ("input", "port"):
            layer[v] = min(layer[d] for d in later) - 1

    # Waypoints for edges that skip layers, so they can be routed between boxes.
    nodes: list[_Item] = list(items)
    node_layer = list(layer)
    up: list[list[int]] = [[] for _ in range(n)]
    down: list[list[int]] = [[] for _ in range(n)]
    chains: list[list[int]] = []
    for s, d in edges:
        chain = [s]
        for lay in range(layer[s] + 1, layer[d]):
            nodes.append(_Item("dummy", 6.0, 0.0))
            node_layer.append(lay)
            up.append([])
            down.append([])
            chain.append(len(nodes) - 1)
        chain.append(d)
        for a, b in itertools.pairwise(chain):
            down[a].append(b)
            up[b].append(a)
        chains.append(chain)
    depth = max(node_layer, default=-1) + 1
    rows: list[list[int]] = [[] for _ in range(depth)]
    for v in sorted(range(len(nodes)), key=lambda v: (v >= n, v)):
        rows[node_layer[v]].append(v)

    # Order each row by the mean position of its neighbours (a few sweeps both ways).
    index = {v: i for row in rows for i, v in enumerate(row)}
    for sweep in range(8):
        seq = range(1, depth) if sweep % 2 == 0 else range(depth - 2, -1, -1)
        for lay in seq:
            row = rows[lay]

            def centre(v: int, nbrs: list[list[int]] = up if sweep % 2 == 0 else down) -> float:
                near = nbrs[v]
                return sum(index[u] for u in near) / len(near) if near else float(index[v])

            row.sort(key=centre)
            for i, v in enumerate(row):
                index[v] = i

    # Horizontal places: pack, then pull each node towards its neighbours without overlapping.
    xs = [0.0] * len(nodes)
    for row in rows:
        x = 0.0
        for v in row:
            xs[v] = x + nodes[v].w / 2
            x += nodes[v].w + _GAP_X

    def settle(row: list[int], want: list[float]) -> None:
        if not row:
            return
        gaps = [(nodes[a].w + nodes[b].w) / 2 + _GAP_X for a, b in itertools.pairwise(row)]
        left = [want[0]]
        for i in range(1, len(row)):
            left.append(max(want[i], left[-1] + gaps[i - 1]))
        right = [want[-1]]
        for i in range(len(row) - 2, -1, -1):
            right.append(min(want[i], right[-1] - gaps[i]))
        right.reverse()
        for v, a, b in zip(row, left, right, strict=True):
            xs[v] = (a + b) / 2

    for sweep in range(12):
        seq = range(1, depth) if sweep % 2 == 0 else range(depth - 2, -1, -1)
        nbrs = up if sweep % 2 == 0 else down
        for lay in seq:
            row = rows[lay]
            settle(row, [
                (sum(xs[u] for u in nbrs[v]) / len(nbrs[v])) if nbrs[v] else xs[v] for v in row
            ])

    # Vertical places: rows as tall as their tallest box.
    tops: list[float] = []
    y = 0.0
    for row in rows:
        tops.append(y)
        y += max((nodes[v].h for v in row), default=0.0) + _GAP_Y
    left_edge = min((xs[v] - nodes[v].w / 2 for v in range(len(nodes))), default=0.0)
    for v, item in enumerate(nodes):
        row_h = max(nodes[u].h for u in rows[node_layer[v]])
        item.x = xs[v] - left_edge
        item.y = tops[node_layer[v]] + (row_h - item.h) / 2
    layout = _Layout(items, edges)
    layout.width = max((it.x + it.w / 2 for it in nodes), default=0.0)
    layout.height = max(y - _GAP_Y, 0.0)
    for chain in chains:
        src, dst = nodes[chain[0]], nodes[chain[-1]]
        points = [(src.x + src.port_out, src.y + src.h)]
        points += [(nodes[v].x, nodes[v].y) for v in chain[1:-1]]
        points.append((dst.x + dst.port_in, dst.y))
        layout.routes.append(points)
    return layout


def _group_item(ops: list[_Op], run: _Run, produced_outside: set[str], used_outside: set[str]) -> _Item:
    """One instance of a repeated block, laid out inside a frame marked with its count."""
    block = ops[run.start: run.start + run.length]
    inner = [_op_item(op) for op in block]
    producer = {name: i for i, op in enumerate(block) for name in op.outputs}
    edges: list[tuple[int, int]] = []
    entering: list[int] = []
    leaving: list[int] = []
    for i, op in enumerate(block):
        for name in op.inputs:
            if name in producer and producer[name] < i:
                edges.append((producer[name], i))
            elif name in produced_outside:
                entering.append(i)
        if any(name in used_outside for name in op.outputs):
            leaving.append(i)
    items = list(inner)
    shift = 0
    if entering:
        items.insert(0, _Item("port", 1.0, 1.0))
        shift = 1
        edges = [(s + 1, d + 1) for s, d in edges] + [(0, i + 1) for i in dict.fromkeys(entering)]
    if leaving:
        items.append(_Item("port", 1.0, 1.0))
        edges += [(i + shift, len(items) - 1) for i in dict.fromkeys(leaving)]
    layout = _layout(items, edges)
    scopes = [_common_scope([op.scope for op in ops[s: s + run.length]])
              for s in range(run.start, run.end, run.length)]
    if scopes[0] and scopes[-1] and scopes[0] != scopes[-1]:
        where = f"{scopes[0]} … {scopes[-1]}"
    else:
        where = scopes[0]
    header = f"{run.length} nodes each" + (f"  ·  {where}" if where else "")
    pad = 12.0
    head = 24.0
    item = _Item("group", max(layout.width + 2 * pad, _text_width(header, 11, False) + 60),
                 layout.height + pad + head, tooltip=f"{run.count} repeats of a {run.length}-node block"
                 + (f"\n{where}" if where else ""), header=header, badge=f"{_TIMES}{run.count}")
    item.group = layout
    ox = (item.w - layout.width) / 2
    if entering:
        item.port_in = ox + items[0].x - item.w / 2
    if leaving:
        item.port_out = ox + items[-1].x - item.w / 2
    return item


def _build(graph: _Graph, collapse: bool, max_nodes: int) -> tuple[_Layout, int]:
    """The top-level layout and the number of ops left out by ``max_nodes``."""
    ops = graph.ops
    runs = _find_runs(ops, graph.constants) if collapse else []
    # Units: each op, or a run of repeated blocks, becomes one item of the top-level layout.
    units: list[tuple[int, int, _Run | None]] = []
    i = 0
    for found in runs:
        units += [(j, j + 1, None) for j in range(i, found.start)]
        units.append((found.start, found.end, found))
        i = found.end
    units += [(j, j + 1, None) for j in range(i, len(ops))]

    items: list[_Item] = []
    where: dict[str, int] = {}  # tensor name -> item producing it
    edges: list[tuple[int, int]] = []
    for name, type_text in graph.inputs:
        where[name] = len(items)
        items.append(_box("input", [(name, 12, True, "#0c4a6e"), (type_text, 10, False, "#0369a1")],
                          f"graph input {name}: {type_text}", ("#e0f2fe", "#0284c7")))
    consumers: dict[str, set[int]] = {}
    for k, (a, b, _) in enumerate(units):
        for op in ops[a:b]:
            for name in op.inputs:
                consumers.setdefault(name, set()).add(k)
    drawn = 0
    left_out = 0
    frontier: list[int] = []
    for k, (a, b, run) in enumerate(units):
        size = run.length if run is not None else 1
        if drawn + size > max_nodes:
            left_out = len(ops) - a
            frontier = sorted({where[n] for op in ops[a:] for n in op.inputs if n in where})
            break
        drawn += size
        index = len(items)
        if run is None:
            items.append(_op_item(ops[a]))
        else:
            block = ops[run.start: run.start + run.length]
            outside_in = {n for op in ops[run.start + run.length: run.end] for n in op.inputs}
            outside_in |= {n for n, ks in consumers.items() if any(j != k for j in ks)}
            produced = {n for op in block for n in op.outputs}
            items.append(_group_item(ops, run, set(where) - produced, outside_in | {
                name for name, _ in graph.outputs}))
        for op in ops[a:b]:
            for name in op.inputs:
                if name in where:
                    edges.append((where[name], index))
        for op in ops[a:b]:
            for name in op.outputs:
                where.setdefault(name, index)
    if left_out:
        items.append(_box("more", [(f"… {left_out} more nodes not drawn", 11, True, "#7c2d12"),
                                   ("raise max_nodes to see them", 10, False, "#9a3412")],
                          f"max_nodes={max_nodes} was reached", ("#ffedd5", "#ea580c")))
        edges += [(f, len(items) - 1) for f in frontier]
    for name, type_text in graph.outputs:
        if name in where or name in graph.constants:
            src = where.get(name)
            items.append(_box("output", [(name, 12, True, "#14532d"), (type_text, 10, False, "#15803d")],
                              f"graph output {name}: {type_text}", ("#dcfce7", "#16a34a")))
            if src is not None:
                edges.append((src, len(items) - 1))
    return _layout(items, edges), left_out
