"""A model's card: its facts as text (``repr``) and the compact HTML card Jupyter shows.

Drawn from the proto and what the caller knows (the parity summary, where ``run`` would go):
nothing here imports the model wrapper or creates a session.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from onnxbridge.signature import format_shape, graph_signature

if TYPE_CHECKING:
    import onnx

__all__ = ["card_html", "human_bytes", "model_facts", "parity_badge"]


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def model_facts(proto: onnx.ModelProto, parity: str | None) -> list[tuple[str, str]]:
    """(label, text) pairs: opsets, IR version, producer, size, provenance, parity summary."""
    meta = {p.key: p.value for p in proto.metadata_props}
    parameters = 0
    for t in proto.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        parameters += n
    producer = f"{proto.producer_name} {proto.producer_version}".strip()
    facts = [
        ("opset", ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import)),
        ("ir version", str(int(proto.ir_version))),
        ("producer", producer or "unknown"),
        ("parameters", f"{parameters:,}"),
        ("size", human_bytes(proto.ByteSize())),
    ]
    if "onnxbridge.converter" in meta:
        framework = meta.get("onnxbridge.framework", "?")
        version = meta.get("onnxbridge.framework_version", "")
        converter = meta["onnxbridge.converter"]
        facts.append(("converted from", f"{framework} {version} by {converter}".replace("  ", " ")))
    parity = parity if parity is not None else meta.get("onnxbridge.parity_summary")
    if parity:
        facts.append(("parity", parity))
    return facts


def parity_badge(summary: str) -> str:
    """The parity summary in green (passed), red (failed) or amber (not verified or unknown)."""
    if summary.startswith("passed"):
        fg, bg = "#1a7f37", "#dafbe1"
    elif summary.startswith("FAILED"):
        fg, bg = "#cf222e", "#ffebe9"
    else:
        fg, bg = "#9a6700", "#fff8c5"
    text = summary or "not checked (this model carries no parity report)"
    return (f'<span class="onnxbridge-parity" style="color:{fg};background:{bg};border-radius:4px;'
            f'padding:0 5px">{html.escape(text)}</span>')


def card_html(proto: onnx.ModelProto, facts: list[tuple[str, str]], runs_on: str) -> str:
    """A compact card for Jupyter: signature, size, provenance, parity, providers."""
    esc = html.escape
    cell = 'style="text-align:left;padding:1px 12px 1px 0;vertical-align:top"'
    head = 'style="text-align:left;padding:1px 12px 1px 0;color:#57606a;font-weight:600"'
    rows = []
    inputs, outputs = graph_signature(proto)
    for role, specs in (("input", inputs), ("output", outputs)):
        for s in specs:
            shape = "" if s.dtype is None else format_shape(s.shape)
            rows.append(
                f'<tr title="{esc(str(s))}"><td {cell}>{esc(role)}</td>'
                f"<td {cell}><code>{esc(s.name)}</code></td><td {cell}>{esc(s.dtype_name)}</td>"
                f"<td {cell}><code>{esc(shape)}</code></td></tr>"
            )
    rendered = [
        f"<tr><th {head}>{esc(key)}</th>"
        f"<td {cell}>{parity_badge(value) if key == 'parity' else esc(value)}</td></tr>"
        for key, value in facts
    ]
    if all(key != "parity" for key, _ in facts):
        rendered.append(f"<tr><th {head}>parity</th><td {cell}>{parity_badge('')}</td></tr>")
    rendered.append(f"<tr><th {head}>runs on</th><td {cell}>{esc(runs_on)}</td></tr>")
    name = proto.graph.name
    nodes = len(proto.graph.node)
    subtitle = f"{nodes} node{'s' if nodes != 1 else ''} · {human_bytes(proto.ByteSize())}"
    return (
        '<div class="onnxbridge-model" style="font-family:-apple-system,\'Segoe UI\',Helvetica,'
        "Arial,sans-serif;font-size:13px;line-height:1.45;color:#1f2328;text-align:left;"
        'display:inline-block;border:1px solid #d0d7de;border-radius:6px;padding:8px 14px">'
        f'<div style="margin-bottom:4px"><b>OnnxModel</b> <code>{esc(name or "model")}</code>'
        f' <span style="color:#57606a">{esc(subtitle)}</span></div>'
        '<table style="border-collapse:collapse;font-size:inherit;margin:2px 0 6px">'
        f"<tr><th {head}>role</th><th {head}>name</th><th {head}>dtype</th><th {head}>shape</th></tr>"
        f'{"".join(rows)}</table>'
        f'<table style="border-collapse:collapse;font-size:inherit">{"".join(rendered)}</table></div>'
    )


def model_card(proto: onnx.ModelProto) -> str:
    """The card for a bare proto: the parity report it stores, where ``run`` would go."""
    from onnxbridge.runtime.plan import planned_providers
    from onnxbridge.verify import stored_parity

    report = stored_parity(proto)
    return card_html(proto, model_facts(proto, report.summary() if report else None),
                     planned_providers())
