"""Text generation: ms per new token and prompt time, onnxbridge against transformers eager.

    python benchmarks/bench_generate.py            # tiny Llama and Qwen2, 16-token prompt, 32 new
    python benchmarks/bench_generate.py --quick    # fewer repeats
    python benchmarks/bench_generate.py --large    # adds a ~1B-parameter random Llama (minutes)
    python benchmarks/bench_generate.py --out results.md

Both sides run greedy decoding on the same prompt with 2 threads (torch.set_num_threads(2); the
onnxruntime session with intra-op threads 2), and the tokens must match or the row says so.
"Prompt" is the first forward (no cache); "per token" is (total - prompt) / (new tokens - 1).
Optimum and onnxruntime-genai are not measured: Optimum does not install with transformers 5
and genai was not in this environment (see docs/guide-generation.md). Random weights only.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from typing import Any

from _common import median_seconds, report

THREADS = 2


def build(kind: str, large: bool = False) -> Any:
    import torch
    import transformers

    torch.manual_seed(0)
    if large:
        size = dict(vocab_size=32000, hidden_size=2048, num_hidden_layers=16,
                    num_attention_heads=32, num_key_value_heads=8, intermediate_size=5632,
                    max_position_embeddings=512)
    else:
        size = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128)
    if kind == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**size)).eval()
    return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**size)).eval()


def measure(kind: str, prompt: int, new: int, repeats: int, large: bool) -> str:
    import numpy as np
    import torch

    import onnxbridge

    torch.set_num_threads(THREADS)
    model = build(kind, large)
    ids = torch.randint(3, int(model.config.vocab_size), (1, prompt),
                        generator=torch.Generator().manual_seed(1))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = onnxbridge.to_onnx(model, ids, task="text-generation")
    export_s = time.perf_counter() - start
    session = m.session("cpu", threads=THREADS)
    assert session is not None

    def ours(n: int) -> Any:
        return m.generate(ids, max_new_tokens=n, eos_token_id=None, providers="cpu",
                          threads=THREADS)

    def theirs(n: int) -> Any:
        with torch.no_grad():
            return model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None,
                                  pad_token_id=0).numpy()

    same = bool(np.array_equal(ours(new), theirs(new)))
    rows = []
    for name, fn in (("onnxbridge (onnxruntime, KV cache)", ours),
                     ("transformers eager generate", theirs)):
        first = median_seconds(lambda fn=fn: fn(1), repeats)
        total = median_seconds(lambda fn=fn: fn(new), repeats)
        per = (total - first) / max(new - 1, 1)
        rows.append((name, first * 1e3, per * 1e3))
    base = rows[1][2]
    lines = [f"| {kind}{' ~1B' if large else ' tiny'} | {name} | {p:.2f} | {t:.3f} |"
             f" {base / t:.2f}x | {'yes' if same else 'NO'} |" for name, p, t in rows]
    lines[0] = lines[0].replace("KV cache)", f"KV cache; export {export_s:.0f} s)", 1)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    repeats = 3 if args.quick else 7
    head = (f"### Text generation (greedy, 16-token prompt, 32 new tokens, {THREADS} threads,"
            f" {platform.processor() or platform.machine()})\n\n"
            "| model | runner | prompt ms | ms / new token | speed-up vs eager |"
            " tokens match |\n|---|---|---|---|---|---|")
    rows = [measure(kind, 16, 32, repeats, False) for kind in ("llama", "qwen2")]
    if args.large:
        rows.append(measure("llama", 16, 32, max(1, repeats // 3), True))
    report("\n".join([head, *rows]), args.out)


if __name__ == "__main__":
    main()
