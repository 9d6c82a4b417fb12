"""How does the graph picture's time grow with the length of a graph? Chains of 750 to 6,000
alternating Neg/Relu nodes (the worst case for finding repeated blocks: every position and
block length repeats), drawn with the defaults (blocks folded, at most 400 boxes) and whole.

Target (issue 14): near-linear; 6,000 nodes well under 2 s. Ratios are to the 750-node chain,
measured side by side in this one process (the CPU may be shared).
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import report
from onnx import TensorProto, helper

from onnxbridge.viz import to_svg


def chain(n: int) -> object:
    nodes = [helper.make_node("Relu" if i % 2 else "Neg", [f"t{i}"], [f"t{i + 1}"])
             for i in range(n)]
    graph = helper.make_graph(nodes, "chain",
                              [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info(f"t{n}", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def seconds(model: object, repeat: int, **kwargs: object) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        to_svg(model, **kwargs)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repeat")
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args()
    repeat = 1 if args.quick else 3
    sizes = [750, 1500, 3000, 6000]
    folded = {n: seconds(chain(n), repeat) for n in sizes}
    whole = {n: seconds(chain(n), repeat, collapse=False, max_nodes=10**6) for n in sizes}
    rows = ["| nodes | folded s | ratio | whole s | ratio | nodes ratio |",
            "|---:|---:|---:|---:|---:|---:|"]
    for n in sizes:
        rows.append(f"| {n:,} | {folded[n]:.3f} | {folded[n] / folded[sizes[0]]:.1f} |"
                    f" {whole[n]:.3f} | {whole[n] / whole[sizes[0]]:.1f} | {n / sizes[0]:.0f} |")
    verdict = "met" if max(folded[6000], whole[6000]) < 2.0 else "MISSED"
    text = "\n".join([f"### Graph picture on long chains (median of {repeat})", "", *rows, "",
                      f"Target: 6,000 nodes well under 2 s: {verdict}"
                      f" ({folded[6000]:.2f} s folded, {whole[6000]:.2f} s whole)."])
    report(text, args.out)


if __name__ == "__main__":
    main()
