"""What every benchmark script shares: a median timer and appending its tables to --out.

The scripts run as `python benchmarks/NAME.py`, so this folder is on sys.path.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1,
                   sync: Callable[[], Any] | None = None) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones.

    ``sync`` (e.g. torch.cuda.synchronize) runs after each call, inside the timing.
    """
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(text: str, out: str | None) -> None:
    """Print the tables, and append them to ``out`` (run_all.py collects them all there)."""
    print(text)
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n\n")
