"""How much time does `import onnxbridge` add? Measured side by side in fresh processes.

Two measures, each the median of --repeat fresh interpreters:
- wall: perf_counter around `import onnx, onnxruntime` and then around `import onnxbridge`;
- importtime: the cumulative microseconds `python -X importtime` reports for the top-level
  `onnxbridge` import alone, and for `onnx` and `onnxruntime` on the same run.
Target (issue 2): onnxbridge adds under 50 ms over onnx + onnxruntime.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys

from _common import report

WALL = (
    "import time; t0 = time.perf_counter(); import onnx, onnxruntime; t1 = time.perf_counter();"
    " import onnxbridge; t2 = time.perf_counter(); print((t1 - t0) * 1e3, (t2 - t1) * 1e3)"
)


def wall_once() -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", WALL], capture_output=True, text=True, check=True)
    base, added = out.stdout.split()
    return float(base), float(added)


def importtime_once(statement: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", statement],
                          capture_output=True, text=True, check=True)
    top: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if m and not m.group(2).startswith(" "):
            top[m.group(2).strip()] = int(m.group(1)) / 1000.0
    return top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args()
    n = 3 if args.quick else args.repeat

    walls = [wall_once() for _ in range(n)]
    base = statistics.median(w[0] for w in walls)
    added = statistics.median(w[1] for w in walls)
    alone = [importtime_once("import onnxbridge").get("onnxbridge", float("nan")) for _ in range(n)]
    deps = [importtime_once("import onnx, onnxruntime") for _ in range(n)]
    onnx_ms = statistics.median(d.get("onnx", float("nan")) for d in deps)
    ort_ms = statistics.median(d.get("onnxruntime", float("nan")) for d in deps)
    alone_ms = statistics.median(alone)

    rows = [
        f"| measure (median of {n} fresh processes) | ms | ratio to onnx + onnxruntime |",
        "|---|---:|---:|",
        f"| import onnx + onnxruntime (wall) | {base:.1f} | 1.00 |",
        f"| import onnxbridge after them (wall, added) | {added:.1f} | {added / base:.3f} |",
        f"| -X importtime: onnx | {onnx_ms:.1f} | |",
        f"| -X importtime: onnxruntime | {ort_ms:.1f} | |",
        f"| -X importtime: onnxbridge alone (numpy included) | {alone_ms:.1f} |"
        f" {alone_ms / (onnx_ms + ort_ms):.3f} |",
    ]
    verdict = "met" if added < 50 else "MISSED"
    text = "\n".join(["### Import time", "", *rows, "",
                      f"Target: onnxbridge adds under 50 ms over onnx + onnxruntime: {verdict}"
                      f" ({added:.1f} ms added)."])
    report(text, args.out)


if __name__ == "__main__":
    main()
