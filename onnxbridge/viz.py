"""Pictures of an ONNX graph: a self-contained SVG and a standalone HTML page, with no drawing library.

Examples:
    >>> svg = onnxbridge.viz.to_svg(m)            # doctest: +SKIP
    >>> m.show()                                   # doctest: +SKIP  (in Jupyter: the picture inline)

The layout is a small layered one: nodes go in rows by their longest distance from the inputs,
rows are ordered by the barycentre of their neighbours, and edges that skip rows are routed
through invisible waypoints so they bend around boxes instead of crossing them. Runs of repeated
blocks (ResNet stages, transformer layers) are drawn once, inside a frame giving their count.
"""

from __future__ import annotations

import ast
import html
import itertools
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

    from onnxbridge.model import OnnxModel

__all__ = ["GraphView", "to_html", "to_svg"]

_FONT = "-apple-system, 'Segoe UI', Helvetica, Arial, 'Liberation Sans', 'DejaVu Sans', sans-serif"
_MAX_BOX_W = 250.0
_MIN_BOX_W = 72.0
_GAP_X = 22.0
_GAP_Y = 30.0
_LONGEST_BLOCK = 200  # the longest repeated block looked for, in nodes
_IDS = itertools.count(1)
_TIMES = "\u00d7"  # the multiplication sign
_BAD_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

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


# -- reading the graph ---------------------------------------------------------------------------
@dataclass
class _Op:
    op_type: str
    domain: str
    name: str
    inputs: list[str]
    outputs: list[str]
    scope: str
    weights: list[str]
    tooltip: str


@dataclass
class _Graph:
    ops: list[_Op]
    inputs: list[tuple[str, str]]   # (name, "float32 [batch, 3]")
    outputs: list[tuple[str, str]]
    constants: set[str]             # initializers and folded Constant outputs
    folded: int                     # Constant nodes drawn as weights of their consumers


def _text(value: object) -> str:
    """Text safe inside XML: no control characters, then escaped."""
    return html.escape(_BAD_XML_CHARS.sub("?", str(value)), quote=True)


def _dims(dims: Sequence[int]) -> str:
    return "[" + _TIMES.join(str(d) for d in dims) + "]" if len(dims) else "scalar"


def _module_scope(node: onnx.NodeProto) -> str:
    """The module a node came from: torch's name scopes when present, else the node name's folder."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                break
            if isinstance(scopes, list) and len(scopes) >= 2:
                return str(scopes[-2])
    if "/" in node.name:
        return node.name.rsplit("/", 1)[0].strip("/")
    return ""


def _attribute_text(attr: onnx.AttributeProto) -> str:
    from onnx import helper

    if attr.type in (attr.GRAPH, attr.GRAPHS):
        graphs = [attr.g] if attr.type == attr.GRAPH else list(attr.graphs)
        return f"subgraph of {sum(len(g.node) for g in graphs)} nodes"
    if attr.type in (attr.TENSOR, attr.SPARSE_TENSOR):
        return "tensor " + _dims(attr.t.dims if attr.type == attr.TENSOR else attr.sparse_tensor.dims)
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _input_names(op_type: str, domain: str, opset: int) -> list[str]:
    from onnx import defs

    try:
        schema = defs.get_schema(op_type, opset, domain)
    except Exception:  # a custom or unknown operator: positions instead of names
        return []
    return [p.name for p in schema.inputs]


def _read_graph(proto: onnx.ModelProto) -> _Graph:
    g = proto.graph
    opsets = {o.domain: o.version for o in proto.opset_import}
    shapes: dict[str, list[int]] = {t.name: list(t.dims) for t in g.initializer}
    shapes.update({t.values.name: list(t.dims) for t in g.sparse_initializer})
    folded = 0
    ops: list[_Op] = []
    for node in g.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and not node.input:
            value = next((a for a in node.attribute if a.name == "value"), None)
            for out in node.output:
                shapes[out] = list(value.t.dims) if value is not None and value.HasField("t") else []
            folded += 1
            continue
        names = _input_names(node.op_type, node.domain, opsets.get(node.domain, opsets.get("", 1)))
        weights = [
            f"{names[i] if i < len(names) else f'in{i}'} {_dims(shapes[name])}"
            for i, name in enumerate(node.input) if name in shapes
        ]
        kind = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        lines = [kind + (f"  {node.name}" if node.name else "")]
        scope = _module_scope(node)
        if scope:
            lines.append(f"module: {scope}")
        lines.append("inputs: " + ", ".join(n or "(none)" for n in node.input))
        lines.append("outputs: " + ", ".join(node.output))
        lines += [f"{a.name} = {_attribute_text(a)}" for a in node.attribute]
        ops.append(_Op(node.op_type, node.domain, node.name, list(node.input), list(node.output),
                       scope, weights, "\n".join(lines)))
    constants = set(shapes)
    inputs = [(v.name, _type_text(v)) for v in g.input if v.name not in constants]
    outputs = [(v.name, _type_text(v)) for v in g.output]
    return _Graph(_topological(ops, {n for n, _ in inputs} | constants), inputs, outputs, constants,
                  folded)


def _type_text(value: onnx.ValueInfoProto) -> str:
    """``float32 [batch, 3]``: the spec's own wording without its name."""
    from onnxbridge.model import TensorSpec

    spec = TensorSpec.from_value_info(value)
    return str(spec)[len(spec.name) + 2:]


def _topological(ops: list[_Op], known: set[str]) -> list[_Op]:
    """The ops in an order where producers come first (ONNX requires it; not every file obeys)."""
    available = set(known)
    done: list[_Op] = []
    pending = list(ops)
    while pending:
        left = []
        for op in pending:
            if all(not name or name in available for name in op.inputs):
                done.append(op)
                available.update(op.outputs)
            else:
                left.append(op)
        if len(left) == len(pending):  # inputs that nothing produces: keep file order for the rest
            done += left
            break
        pending = left
    return done


# -- finding repeated blocks -----------------------------------------------------------------------
@dataclass
class _Run:
    start: int
    length: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.length * self.count

    @property
    def saved(self) -> int:
        return self.length * (self.count - 1)


def _signatures(ops: list[_Op], constants: set[str]) -> list[tuple[Any, ...]]:
    """Per op: what it is and where each input comes from, as a distance back in the op list."""
    producer: dict[str, int] = {}
    sigs: list[tuple[Any, ...]] = []
    for i, op in enumerate(ops):
        refs: list[Any] = []
        for name in op.inputs:
            if not name:
                refs.append("")
            elif name in constants:
                refs.append("c")
            elif name in producer:
                refs.append(i - producer[name])
            else:
                refs.append("g")  # a graph input
        sigs.append((op.domain, op.op_type, len(op.outputs), tuple(refs)))
        for name in op.outputs:
            producer[name] = i
    return sigs


def _matches(sigs: list[tuple[Any, ...]], a: int, b: int) -> bool:
    """Whether op ``b`` repeats op ``a`` one block later (block length ``b - a``).

    Inputs must come from the same place relative to the op, except that two inputs which both
    reach back a whole block or more count as "from outside the block" and match.
    """
    sa, sb = sigs[a], sigs[b]
    if sa[:3] != sb[:3] or len(sa[3]) != len(sb[3]):
        return False
    length = b - a
    for ra, rb in zip(sa[3], sb[3], strict=True):
        if ra != rb and not (isinstance(ra, int) and isinstance(rb, int) and min(ra, rb) >= length):
            return False
    return True


def _cut_penalties(ops: list[_Op], constants: set[str]) -> list[int]:
    """How bad a block boundary before each op would be: many tensors crossing it, and two ops
    of the same module on both sides, both say the cut falls inside a block rather than between."""
    n = len(ops)
    live = [0] * (n + 2)
    producer: dict[str, int] = {}
    last_use: dict[str, int] = {}
    for i, op in enumerate(ops):
        for name in op.inputs:
            if name and name not in constants:
                last_use[name] = i
        for name in op.outputs:
            producer[name] = i
    for name, last in last_use.items():
        first = producer.get(name, -1) + 1  # live across every cut after its producer
        if first <= last:
            live[first] += 1
            live[last + 1] -= 1
    penalties = []
    running = 0
    for q in range(n + 1):
        running += live[q]
        depth = 0
        if 0 < q < n and ops[q - 1].scope and ops[q].scope:
            left, right = re.split(r"[./]", ops[q - 1].scope), re.split(r"[./]", ops[q].scope)
            while depth < min(len(left), len(right)) and left[depth] == right[depth]:
                depth += 1
        penalties.append(100 * depth + running)
    return penalties


def _find_runs(ops: list[_Op], constants: set[str]) -> list[_Run]:
    """Non-overlapping runs of a block repeated back to back, chosen to fold away the most ops.

    For every block length, ``reach[i]`` counts how far the graph from op i keeps repeating itself
    with that period; a dynamic programme then picks the runs that save the most boxes, and
    between equal savings the runs whose boundaries fall between modules.
    """
    n = len(ops)
    if n < 3:
        return []
    sigs = _signatures(ops, constants)
    penalty = _cut_penalties(ops, constants)
    longest = min(_LONGEST_BLOCK, n // 2, max(8, 2_000_000 // n))
    candidates: list[list[_Run]] = [[] for _ in range(n)]
    for length in range(1, longest + 1):
        reach = 0
        for i in range(n - length - 1, -1, -1):
            reach = reach + 1 if _matches(sigs, i, i + length) else 0
            count = 1 + reach // length
            if count > 1 and length * (count - 1) >= 2:
                candidates[i].append(_Run(i, length, count))
    # best[i]: (ops saved, -boundary penalty) for the graph from op i on, and the run taken there.
    best: list[tuple[int, int]] = [(0, 0)] * (n + 1)
    choice: list[_Run | None] = [None] * (n + 1)
    for i in range(n - 1, -1, -1):
        best[i] = best[i + 1]
        for run in candidates[i]:
            rest = best[run.end]
            cost = sum(penalty[run.start + j * run.length] for j in range(run.count + 1))
            score = (rest[0] + run.saved, rest[1] - cost)
            if score > best[i]:
                best[i], choice[i] = score, run
    runs: list[_Run] = []
    i = 0
    while i < n:
        taken = choice[i]
        if taken is None:
            i += 1
        else:
            runs.append(taken)
            i = taken.end
    return runs


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


# -- building the picture --------------------------------------------------------------------------
def _common_scope(scopes: list[str]) -> str:
    parts = [re.split(r"[./]", s) for s in scopes if s]
    if not parts:
        return ""
    common: list[str] = []
    for pieces in zip(*parts, strict=False):
        if len(set(pieces)) != 1:
            break
        common.append(pieces[0])
    if not common:
        return ""
    # Give the prefix back in its own spelling (dots or slashes) from the first scope.
    first = scopes[0] if scopes[0] else next(s for s in scopes if s)
    cut = 0
    for _ in common:
        match = re.search(r"[./]", first[cut:])
        cut = len(first) if match is None else cut + match.end()
    return first[:cut].rstrip("./")


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


def _proto(model: OnnxModel | onnx.ModelProto) -> onnx.ModelProto:
    proto = getattr(model, "proto", model)
    if not hasattr(proto, "graph"):
        raise TypeError(f"expected an OnnxModel or onnx.ModelProto, got {type(model).__name__}")
    return proto  # type: ignore[return-value]


def to_svg(model: OnnxModel | onnx.ModelProto, *, collapse: bool = True, max_nodes: int = 400) -> str:
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


def to_html(model: OnnxModel | onnx.ModelProto, *, collapse: bool = True, max_nodes: int = 400) -> str:
    """A standalone HTML page for the model: its card, operator counts, metadata and graph.

    Nothing is fetched from the network; ``onnxbridge view`` writes this page and opens it.
    """
    from onnxbridge.model import OnnxModel

    m = model if isinstance(model, OnnxModel) else OnnxModel(_proto(model))
    hist = Counter(
        f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        for n in m.proto.graph.node
    )
    ops = "".join(f"<tr><td>{_text(op)}</td><td class=num>{count}</td></tr>"
                  for op, count in hist.most_common())
    meta = "".join(
        f"<tr><th>{_text(key)}</th><td>{_text(value if len(value) <= 300 else value[:297] + '...')}</td></tr>"
        for key, value in sorted(m.metadata.items())
    )
    title = m.name or "model"
    svg = to_svg(m, collapse=collapse, max_nodes=max_nodes)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_text(title)} · onnxbridge</title>
<style>
body {{ font-family: {_FONT}; margin: 20px; color: #0f172a; background: #ffffff; }}
h1 {{ font-size: 20px; margin: 0 0 12px; }}
h2 {{ font-size: 15px; margin: 20px 0 6px; }}
.side {{ display: flex; gap: 28px; flex-wrap: wrap; align-items: flex-start; }}
table.plain {{ border-collapse: collapse; font-size: 12px; }}
table.plain th, table.plain td {{ text-align: left; padding: 2px 10px 2px 0; vertical-align: top; }}
table.plain td.num {{ text-align: right; }}
.graph {{ border: 1px solid #e2e8f0; border-radius: 6px; overflow: auto; max-height: 85vh; }}
</style>
</head>
<body>
<h1>{_text(title)}</h1>
<div class="side">
<div>{m._repr_html_()}</div>
<div><h2>Operators</h2><table class="plain">{ops}</table></div>
</div>
<h2>Graph</h2>
<div class="graph">{svg}</div>
<h2>Metadata</h2>
<table class="plain">{meta or "<tr><td>(none)</td></tr>"}</table>
</body>
</html>
"""
