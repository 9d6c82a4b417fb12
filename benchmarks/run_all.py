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
    body = parts.read_text() if parts.exists() else ""
    parts.unlink(missing_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    Path(args.out).write_text(
        f"# Benchmark results\n\nMeasured {stamp} on {machine()}.\n"
        f"Produced by `nox -s bench` (benchmarks/run_all.py{' --quick' if args.quick else ''}).\n\n"
        + body
        + (f"\nFailed: {', '.join(failed)}\n" if failed else "")
    )
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
