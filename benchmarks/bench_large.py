"""Large models: time and peak memory of onnxbridge against torch.onnx.export + bare onnxruntime.

Each step runs in a fresh child process, so each peak RSS (``ru_maxrss``) is that step's alone,
and so is its CPU time (user + system, all threads, of the timed part: steadier than wall-clock
seconds on a shared machine):

- ``model only``: building the PyTorch model (random weights): the floor under every convert row;
- ``torch.onnx.export``: ``torch.onnx.export(model, x, path, dynamo=True, external_data=True)``;
- ``to_onnx + save``: ``onnxbridge.to_onnx(model, x)`` (export and verification) then ``save``;
- ``to_onnx(verify=False) + save``: the export part alone;
- ``InferenceSession + run``: ``onnxruntime.InferenceSession(path)`` and one run (batch 2);
- ``load + run``: ``onnxbridge.load(path)`` and one ``run``.

The model is ``n`` layers of ``nn.Linear(8192, 8192)`` (256 MiB of float32 weights each).
Usage: ``python benchmarks/bench_large.py [--layers 2,9] [--repeat 3] [--folder /tmp/bench-large]``;
prints a markdown table. With ``--repeat N`` the steps run in turns (all steps, then all steps
again, N times: a burst of load from elsewhere hits both sides of a ratio alike) and each
figure is the median of N; the time and CPU ratios are those of the medians, and the range of
the N per-turn ratios is printed below the table. Before each step, outside its timing, dirty
pages are flushed (``os.sync``) and the earlier steps' files dropped from the page cache
(``posix_fadvise(DONTNEED)``, those files only), so that no step pays for writing back or
reclaiming the memory of another step's files.
Files are deleted after each size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

COMMON = """
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
import numpy as np, torch
WIDTH = 8192
def build(layers):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(layers)]).eval()
    return model, torch.randn(2, WIDTH)
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
CPU0 = 0.0
def start():
    global CPU0
    CPU0 = cpu()
    return time.perf_counter()
def done(seconds):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "cpu": cpu() - CPU0, "peak": peak}))
layers, folder = int(sys.argv[1]), sys.argv[2]
"""

STEPS = {
    "model only": """
model, x = build(layers)
start()
done(0.0)
""",
    "torch.onnx.export": """
model, x = build(layers)
t = start()
torch.onnx.export(model, (x,), folder + "/peer.onnx", dynamo=True, external_data=True,
                  input_names=["x"], dynamic_shapes=({0: "batch"},))
done(time.perf_counter() - t)
""",
    "to_onnx + save": """
import onnxbridge
model, x = build(layers)
t = start()
m = onnxbridge.to_onnx(model, x)
m.save(folder + "/ours.onnx")
assert m.parity.passed
done(time.perf_counter() - t)
""",
    "to_onnx(verify=False) + save": """
import onnxbridge
model, x = build(layers)
t = start()
m = onnxbridge.to_onnx(model, x, verify=False)
m.save(folder + "/ours2.onnx")
done(time.perf_counter() - t)
""",
    "InferenceSession + run": """
import onnxruntime
x = np.ones((2, WIDTH), np.float32)
t = start()
s = onnxruntime.InferenceSession(folder + "/peer.onnx", providers=["CPUExecutionProvider"])
s.run(None, {"x": x})
done(time.perf_counter() - t)
""",
    "load + run": """
import onnxbridge
x = np.ones((2, WIDTH), np.float32)
t = start()
m = onnxbridge.load(folder + "/peer.onnx")
m.run(x, providers="cpu")
done(time.perf_counter() - t)
""",
}
PAIRS = {"to_onnx + save": "torch.onnx.export", "to_onnx(verify=False) + save": "torch.onnx.export",
         "load + run": "InferenceSession + run"}


def _evict(folder: Path) -> None:
    """Write back and drop from the page cache the files the earlier steps wrote (only these):
    else a later step pays the kernel's reclaim of their pages (5 GiB each at the largest size)."""
    os.sync()
    for path in folder.rglob("*"):
        if path.is_file() and hasattr(os, "posix_fadvise"):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_step(name: str, layers: int, folder: Path) -> dict[str, float]:
    _evict(folder)  # outside the timing: no step pays for the previous ones' files
    out = subprocess.run([sys.executable, "-c", COMMON + STEPS[name], str(layers), str(folder)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="2,9", help="model sizes in 256 MiB layers")
    parser.add_argument("--repeat", type=int, default=1, help="turns of all steps (medians)")
    parser.add_argument("--folder", default=None, help="where the model files go (deleted after)")
    args = parser.parse_args()
    print("| model | step | seconds | CPU s | peak RSS GiB | time ratio | CPU ratio | memory ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    spreads: list[str] = []
    for layers in (int(n) for n in args.layers.split(",")):
        turns: list[dict[str, dict[str, float]]] = []
        for _ in range(max(1, args.repeat)):
            folder = Path(tempfile.mkdtemp(prefix="bench-large-", dir=args.folder))
            try:
                turns.append({name: run_step(name, layers, folder) for name in STEPS})
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        results = {name: _median([t[name] for t in turns]) for name in STEPS}
        size = f"{layers * 0.25:.2f} GiB ({layers} x Linear(8192, 8192))"
        for name, r in results.items():
            base = results.get(PAIRS.get(name, ""))
            ratio_t = f"{r['seconds'] / base['seconds']:.2f}" if base else ""
            ratio_c = f"{r['cpu'] / base['cpu']:.2f}" if base and base["cpu"] else ""
            ratio_m = f"{r['peak'] / base['peak']:.2f}" if base else ""
            print(f"| {size} | {name} | {r['seconds']:.1f} | {r['cpu']:.1f} |"
                  f" {r['peak'] / 2**30:.2f} | {ratio_t} | {ratio_c} | {ratio_m} |", flush=True)
            if base and len(turns) > 1:
                pair = [(t[name], t[PAIRS[name]]) for t in turns]
                wall = [a["seconds"] / b["seconds"] for a, b in pair]
                cpu = [a["cpu"] / b["cpu"] for a, b in pair if b["cpu"]]
                spreads.append(f"{size}, {name}: per-turn time ratio {min(wall):.2f}-{max(wall):.2f},"
                               f" CPU ratio {min(cpu):.2f}-{max(cpu):.2f} ({len(turns)} turns)")
    for line in spreads:
        print(f"\n- {line}" if line is spreads[0] else f"- {line}")


if __name__ == "__main__":
    main()
