"""A standalone HTML page for a model: its card, operator counts, metadata and graph."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

from onnxbridge.viz.card import model_card
from onnxbridge.viz.svg import _FONT, Drawable, _proto, _text, to_svg


def to_html(model: Drawable, *, collapse: bool = True, max_nodes: int = 400) -> str:
    """A standalone HTML page for the model: its card, operator counts, metadata and graph.

    Nothing is fetched from the network; ``onnxbridge view`` writes this page and opens it.
    """
    proto = _proto(model)
    # An OnnxModel's own card (its parity report in memory); a bare proto's from what it stores.
    own_card = getattr(model, "_repr_html_", None) if proto is not model else None
    card = own_card() if callable(own_card) else model_card(proto)
    metadata = {p.key: p.value for p in proto.metadata_props}
    hist = Counter(
        f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        for n in proto.graph.node
    )
    ops = "".join(f"<tr><td>{_text(op)}</td><td class=num>{count}</td></tr>"
                  for op, count in hist.most_common())
    meta = "".join(
        f"<tr><th>{_text(key)}</th><td>{_text(value if len(value) <= 300 else value[:297] + '...')}</td></tr>"
        for key, value in sorted(metadata.items())
    )
    title = proto.graph.name or "model"
    svg = to_svg(proto, collapse=collapse, max_nodes=max_nodes)
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
<div>{card}</div>
<div><h2>Operators</h2><table class="plain">{ops}</table></div>
</div>
<h2>Graph</h2>
<div class="graph">{svg}</div>
<h2>Metadata</h2>
<table class="plain">{meta or "<tr><td>(none)</td></tr>"}</table>
</body>
</html>
"""
