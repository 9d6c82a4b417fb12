"""Pictures of an ONNX graph: a self-contained SVG and a standalone HTML page, with no drawing library.

Examples:
    >>> svg = onnxbridge.viz.to_svg(m)            # doctest: +SKIP
    >>> m.show()                                   # doctest: +SKIP  (in Jupyter: the picture inline)

The layout is a small layered one: nodes go in rows by their longest distance from the inputs,
rows are ordered by the barycentre of their neighbours, and edges that skip rows are routed
through invisible waypoints so they bend around boxes instead of crossing them. Runs of repeated
blocks (ResNet stages, transformer layers) are drawn once, inside a frame giving their count.
"""


from onnxbridge.viz.html import to_html
from onnxbridge.viz.svg import GraphView, to_svg

__all__ = ["GraphView", "to_html", "to_svg"]
