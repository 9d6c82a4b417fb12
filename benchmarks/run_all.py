"""Run every benchmark in this folder and collect their tables in benchmarks/RESULTS.md.

Usage: python benchmarks/run_all.py [--quick]   (nox -s bench runs it)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    import numpy
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical cores;"
            f" Python {platform.python_version()}, numpy {numpy.__version__},"
            f" onnxruntime {onnxruntime.__version__}")


def tables(markdown: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every markdown table, the title being the heading above it."""
    found = []
    title = "benchmark"
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("#"):
            title = line.lstrip("#").strip()
        if line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1].strip()) <= set("|-: "):
            header = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            found.append((title, header, rows))
            continue
        i += 1
    return found


def _number(text: str) -> float | None:
    cleaned = text.replace("*", "").replace("x", "").replace(",", "").split()[0] if text else ""
    try:
        return float(cleaned)
    except ValueError:
        return None


def plot_ratios(markdown: str, folder: Path) -> list[str]:
    """A bar chart of the first ratio column of every table that has one; returns markdown."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["(plots need matplotlib)"]
    folder.mkdir(exist_ok=True)
    embedded = []
    for n, (title, header, rows) in enumerate(tables(markdown)):
        col = next((i for i, h in enumerate(header) if "ratio" in h.lower() or "speed" in h.lower()),
                   None)
        if col is None:
            continue
        points = [(" / ".join(r[:2]) if col > 1 else r[0], _number(r[col])) for r in rows
                  if len(r) > col]
        points = [(label, value) for label, value in points if value is not None]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(points) + 1.2))
        ax.barh([p[0] for p in points], [p[1] for p in points], color="#4c72b0")
        ax.axvline(1.0, color="#c44e52", linewidth=1)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel(header[col] + " (log scale; the red line is 1)")
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        name = f"plot{n}.png"
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        embedded.append(f"![{title}: {header[col]}](plots/{name})")
    return embedded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller models")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    parts = HERE / ".parts.md"
    parts.unlink(missing_ok=True)
    failed = []
    scripts = [HERE / "import_time.py", *sorted(HERE.glob("bench_*.py"))]
    for script in scripts:
        cmd = [sys.executable, str(script), "--out", str(parts)] + (["--quick"] if args.quick else [])
        print(f"== {script.name}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(script.name)
    # The scikit-learn coverage table has its own page, linked from RESULTS.md and the README.
    print("== sklearn_coverage.py", flush=True)
    coverage = HERE.parent / "docs" / "coverage.md"
    if subprocess.run([sys.executable, str(HERE / "sklearn_coverage.py"), "--out",
                       str(coverage)]).returncode != 0:
        failed.append("sklearn_coverage.py")
    body = parts.read_text() if parts.exists() else ""
    parts.unlink(missing_ok=True)
    plots = plot_ratios(body, HERE / "plots")
    # The docs site includes the tables section only (pymdownx.snippets section markers).
    body = f"<!-- --8<-- [start:tables] -->\n{body}\n<!-- --8<-- [end:tables] -->\n"
    if plots:
        body += "\n### Plots\n\n" + "\n\n".join(plots) + "\n"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    Path(args.out).write_text(
        f"# Benchmark results\n\nMeasured {stamp} on {machine()}.\n"
        f"Produced by `nox -s bench` (benchmarks/run_all.py{' --quick' if args.quick else ''}).\n\n"
        + body
        + "\nscikit-learn coverage (every estimator of all_estimators()):"
        " [docs/coverage.md](../docs/coverage.md)\n"
        + (f"\nFailed: {', '.join(failed)}\n" if failed else "")
    )
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
