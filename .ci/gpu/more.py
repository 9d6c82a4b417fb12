"""The second half of the GPU check: generation with the KV cache on CUDA, and a >2 GB model.

Run on the GPU machine by .ci/gpu/check.sh (steps 6 and 7), one section per process:

    python3 .ci/gpu/more.py generate OUT.md   # tiny and small random Llama: tokens and ms/token
    python3 .ci/gpu/more.py large OUT.md      # 9 x Linear(8192) (2.4 GB): to_onnx, save, load, run

Random weights only. Every figure is printed and appended to OUT.md as a markdown table.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
import traceback
from typing import Any

import numpy as np


PROVIDER = os.environ.get("MORE_PROVIDER", "cuda")  # (cpu: a dry run elsewhere)


def _best(fn: Any, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def generate(out: list[str]) -> None:
    import torch
    import transformers

    import onnxbridge

    torch.backends.cuda.matmul.allow_tf32 = False
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # (cpu: a dry run elsewhere)
    out += ["### Generation on CUDA (greedy, 16-token prompt, 32 new tokens, batch 1)", "",
            "| model | runner | dtype | providers used | tokens equal transformers | prompt ms |"
            " ms per new token |", "|---|---|---|---|---|---:|---:|"]
    configs = {
        "tiny Llama (2 layers, hidden 64)": dict(hidden_size=64, intermediate_size=128,
                                                 num_hidden_layers=2, num_attention_heads=4,
                                                 num_key_value_heads=2, vocab_size=1000),
        "small Llama (8 layers, hidden 1024, 0.15B)": dict(
            hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
            num_attention_heads=16, num_key_value_heads=4, vocab_size=32000),
    }
    for label, cfg in list(configs.items())[:int(os.environ.get("MORE_CONFIGS", "2"))]:
        torch.manual_seed(0)
        config = transformers.LlamaConfig(max_position_embeddings=256, eos_token_id=None,
                                           pad_token_id=0, **cfg)
        model = transformers.LlamaForCausalLM(config).eval()
        ids = torch.randint(0, cfg["vocab_size"], (1, 16))
        mask = torch.ones_like(ids)

        def hf(m: Any, dev: str, new: int) -> Any:
            with torch.no_grad():
                return m.generate(ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=new,
                                  do_sample=False, pad_token_id=0)

        for dtype in (torch.float32, torch.float16):
            name = str(dtype).replace("torch.", "")
            ref_model = model.to(dtype).to(dev)
            want = hf(ref_model, dev, 32).cpu().numpy()
            t1 = _best(lambda: hf(ref_model, dev, 1))
            t33 = _best(lambda: hf(ref_model, dev, 33))
            out.append(f"| {label} | transformers eager ({dev}) | {name} | torch | - |"
                       f" {t1 * 1e3:.2f} | {(t33 - t1) / 32 * 1e3:.3f} |")
            print(out[-1], flush=True)
            source = model.to("cpu").to(dtype)
            for fuse in (True, False):
                try:
                    m = onnxbridge.to_onnx(source, ids, task="text-generation", fuse=fuse)
                except Exception as exc:
                    out.append(f"| {label} | onnxbridge fuse={fuse} | {name} | to_onnx failed:"
                               f" {type(exc).__name__}: {str(exc)[:300]} | | | |")
                    print(out[-1], flush=True)
                    traceback.print_exc()
                    continue
                for prov in os.environ.get("MORE_PROVIDERS", "cuda,cpu").split(","):
                    try:
                        got = np.asarray(m.generate(ids.numpy(), max_new_tokens=32,
                                                    eos_token_id=[], providers=prov))
                        used = ",".join(p.replace("ExecutionProvider", "")
                                        for p in m.session(prov).get_providers())
                        g1 = _best(lambda: m.generate(ids.numpy(), max_new_tokens=1,
                                                      eos_token_id=[], providers=prov))
                        g33 = _best(lambda: m.generate(ids.numpy(), max_new_tokens=33,
                                                       eos_token_id=[], providers=prov))
                        same = bool(got.shape == want.shape and (got == want).all())
                        agree = int((got[0, 16:] == want[0, 16:]).sum()) if got.shape == \
                            want.shape else -1
                        out.append(f"| {label} | onnxbridge fuse={fuse} ({prov}) | {name} |"
                                   f" {used} | {same} ({agree}/32) | {g1 * 1e3:.2f} |"
                                   f" {(g33 - g1) / 32 * 1e3:.3f} |")
                    except Exception as exc:
                        out.append(f"| {label} | onnxbridge fuse={fuse} ({prov}) | {name} |"
                                   f" failed: {type(exc).__name__}: {str(exc)[:300]} | | | |")
                        traceback.print_exc()
                    print(out[-1], flush=True)
            model = model.to("cpu").float()


def large(out: list[str]) -> None:
    import torch

    import onnxbridge

    torch.backends.cuda.matmul.allow_tf32 = False
    width, layers = int(os.environ.get("MORE_WIDTH", "8192")), 9
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)]).eval()
    x = torch.randn(2, width)
    with torch.no_grad():
        want = model.double()(x.double()).numpy()
        model.float()
    out += ["### A model above 2 GB (9 x Linear(8192), 2.4 GB float32) on CUDA", "",
            "| step | seconds | peak RSS GiB | note |", "|---|---:|---:|---|"]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        m = onnxbridge.to_onnx(model, x)
        out.append(f"| to_onnx (export + verify on CPU) | {time.perf_counter() - start:.1f} |"
                   f" {_rss_gib():.2f} | parity {m.parity.passed} |")
        print(out[-1], flush=True)
        start = time.perf_counter()
        m.save(folder + "/big.onnx")
        out.append(f"| save | {time.perf_counter() - start:.1f} | {_rss_gib():.2f} | |")
        del m
        start = time.perf_counter()
        loaded = onnxbridge.load(folder + "/big.onnx")
        y = loaded.run(x.numpy(), providers=PROVIDER)
        first = time.perf_counter() - start
        used = loaded.session(PROVIDER).get_providers()
        err = float(np.abs(np.asarray(y[0] if isinstance(y, (list, tuple)) else y) - want).max())
        out.append(f"| load + first run (cuda) | {first:.1f} | {_rss_gib():.2f} |"
                   f" {used[0]}; max abs vs float64 torch {err:.2e} |")
        print(out[-1], flush=True)
        xb = np.random.default_rng(0).standard_normal((64, width)).astype(np.float32)
        t = _best(lambda: loaded.run(xb, providers=PROVIDER), 5)
        tc = _best(lambda: loaded.run(xb, providers="cpu"), 2)
        model_gpu = model.to("cuda" if torch.cuda.is_available() else "cpu")
        xg = torch.from_numpy(xb).to(next(model_gpu.parameters()).device)

        def torch_run() -> None:
            with torch.no_grad():
                model_gpu(xg).cpu()

        tt = _best(torch_run, 5)
        out.append(f"| run batch 64: onnxruntime cuda / cpu / torch cuda (ms) |"
                   f" {t * 1e3:.1f} / {tc * 1e3:.1f} / {tt * 1e3:.1f} | {_rss_gib():.2f} |"
                   f" numpy in, numpy out |")
        print(out[-1], flush=True)


if __name__ == "__main__":
    section, path = sys.argv[1], sys.argv[2]
    lines: list[str] = []
    try:
        {"generate": generate, "large": large}[section](lines)
    except Exception:
        traceback.print_exc()
        lines.append(f"{section} stopped: {traceback.format_exc().splitlines()[-1]}")
    with open(path, "a") as fh:
        fh.write("\n".join(lines) + "\n\n")
    print("\n".join(lines))
