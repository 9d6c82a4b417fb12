"""Text generation: ms per new token and prompt time, onnxbridge (fused and not) against peers.

    python benchmarks/bench_generate.py            # tiny Llama and Qwen2, 16-token prompt, 32 new
    python benchmarks/bench_generate.py --quick    # fewer repeats
    python benchmarks/bench_generate.py --large    # ~0.85B-parameter random Llama and Qwen2 (minutes
                                                   # each; run under flock /work/signals/bigmem.lock)
    python benchmarks/bench_generate.py --large --kind qwen2 --repeats 3   # one config
    python benchmarks/bench_generate.py --out results.md
    python benchmarks/bench_generate.py --threads 1 --cpu-time   # CPU time, not wall time

Runners, same prompt, greedy, 2 threads each (torch.set_num_threads(2); onnxruntime intra-op
threads 2): onnxbridge with fused attention (the default: GroupQueryAttention), onnxbridge with
fuse=False (torch.onnx's graph), transformers' eager generate, and onnxruntime-genai's model
builder (when ``onnxruntime_genai`` imports; built offline from the random model saved with
save_pretrained and a word-level tokenizer made here). Tokens are compared with transformers';
the column says whether they match. "Prompt" is generate with 1 new token; "per token" is
(time for 33 new - prompt) / 32, from the fastest of the repeats (for onnxruntime-genai, its
token loop's time for 33 new - for 1 new, without creating the generator; the machine is
shared, the median is what other processes leave over). Runners are timed in turns, each
turn after one untimed call of the same runner. Optimum does not install with transformers 5
and is not measured.
Random weights only; nothing is downloaded. On a crowded machine wall times say more about the
other processes than about the runners: ``--threads 1 --cpu-time`` times each runner with this
process's CPU time (time.process_time) on one thread, the work each runner does per token.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

from _common import report

THREADS = 2
CLOCK = time.perf_counter
GENAI = True
PROMPT = 16
NEW = 32
LOOP_TIMES: list[float] = []  # onnxruntime-genai's token loop, timed inside its runner


def build(kind: str, large: bool = False) -> Any:
    import torch
    import transformers

    torch.manual_seed(0)
    if large:
        size: dict[str, Any] = dict(vocab_size=32000, hidden_size=2048, num_hidden_layers=16,
                    num_attention_heads=32, num_key_value_heads=8, intermediate_size=5632,
                    max_position_embeddings=512)
    else:
        size = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128)
    if kind == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**size)).eval()
    return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**size)).eval()


def _peak_gb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 2**20


def genai_runner(model: Any, ids: Any, want: Any, folder: str) -> tuple[Callable[[int], Any],
                                                                         str] | str:
    """onnxruntime-genai's model builder run on the saved model; (generate, build note) or why not."""
    try:
        import onnxruntime_genai as og
    except ImportError:
        return "onnxruntime-genai is not installed"
    import numpy as np
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = int(model.config.vocab_size)
    source, out = os.path.join(folder, "hf"), os.path.join(folder, "genai")
    model.save_pretrained(source)
    words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=words, unk_token="t0").save_pretrained(
        source)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", source, "-o", out,
         "-p", "fp32", "-e", "cpu", "-c", os.path.join(folder, "cache")],
        capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return "model builder failed: " + done.stderr.strip().splitlines()[-1][:200]
    config_path = os.path.join(out, "genai_config.json")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    config["model"]["decoder"]["session_options"]["intra_op_num_threads"] = THREADS
    # No early stop: an end-of-sequence id the reference never emits (genai requires one).
    unused = min(set(range(vocab)) - {int(t) for t in want[0, PROMPT:]})
    config["model"]["eos_token_id"] = config["model"]["pad_token_id"] = unused
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(config, f)
    og_model = og.Model(out)
    prompt = ids.numpy()

    def generate(n: int) -> Any:
        params = og.GeneratorParams(og_model)
        params.set_search_options(max_length=PROMPT + n, do_sample=False)
        generator = og.Generator(og_model, params)
        generator.append_tokens(prompt)
        start = CLOCK()
        while not generator.is_done():
            generator.generate_next_token()
        # the token loop alone: creating the generator (several ms, and noisy) would drown
        # the 32 tokens' difference that "ms / new token" is taken from
        LOOP_TIMES.append(CLOCK() - start)
        return np.array(generator.get_sequence(0))[None]

    nodes = len(__import__("onnx").load(os.path.join(out, "model.onnx"),
                                        load_external_data=False).graph.node)
    return generate, (f"build {seconds:.0f} s, builder peak RSS"
                      f" {_peak_gb(resource.RUSAGE_CHILDREN):.1f} GB, {nodes} nodes")


def measure(kind: str, repeats: int, large: bool) -> list[str]:
    import numpy as np
    import torch

    import onnxbridge

    torch.set_num_threads(THREADS)
    model = build(kind, large)
    print(f"{kind}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters",
          file=sys.stderr, flush=True)
    ids = torch.randint(3, int(model.config.vocab_size), (1, PROMPT),
                        generator=torch.Generator().manual_seed(1))

    def eager(n: int) -> Any:
        with torch.no_grad():
            return model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None,
                                  pad_token_id=0).numpy()

    want = eager(NEW)
    runners: list[tuple[str, Callable[[int], Any], str]] = []
    for fuse in ((True,) if large else (True, False)):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = onnxbridge.to_onnx(model, ids, task="text-generation", fuse=fuse)
        note = (f"export {time.perf_counter() - start:.0f} s, peak RSS {_peak_gb():.1f} GB,"
                f" {len(m.proto.graph.node)} nodes")

        print(f"{kind}: onnxbridge fuse={fuse}: {note}", file=sys.stderr, flush=True)

        def ours(n: int, m: Any = m) -> Any:
            return m.generate(ids, max_new_tokens=n, eos_token_id=None, providers="cpu",
                              threads=THREADS)

        label = ("fused (GroupQueryAttention)" if "fused" in getattr(m, "generation_info", {})
                 else "exported graph")
        runners.append((f"onnxbridge, {label if fuse else 'fuse=False'}", ours, note))
    runners.append(("transformers eager generate", eager, ""))
    with tempfile.TemporaryDirectory(prefix="bench-genai-") as folder:
        genai = genai_runner(model, ids, want, folder) if GENAI else "skipped (--no-genai)"
        if isinstance(genai, str):
            print(f"onnxruntime-genai: {genai}", file=sys.stderr)
        else:
            runners.append(("onnxruntime-genai model builder", genai[0], genai[1]))
            print(f"{kind}: onnxruntime-genai: {genai[1]}", file=sys.stderr, flush=True)
        same = {name: bool(np.array_equal(fn(NEW), want)) for name, fn, _ in runners}
        first: dict[str, list[float]] = {name: [] for name, _, _ in runners}
        total: dict[str, list[float]] = {name: [] for name, _, _ in runners}
        loops: dict[int, list[float]] = {}
        for _ in range(repeats):  # in turns: the machine's load falls on every runner alike
            for name, fn, _ in runners:
                # one untimed call first: the runner before it (its caches, its allocator)
                # otherwise lands on this one's prompt time (0.4 ms on a tiny model here)
                fn(1)
                for n, store in ((1, first), (NEW + 1, total)):
                    start = CLOCK()
                    fn(n)
                    store[name].append(CLOCK() - start)
                    if name.startswith("onnxruntime-genai"):
                        loops.setdefault(n, []).append(LOOP_TIMES[-1])
    eager_per = None
    rows = []
    for name, _, note in runners:
        prompt_s = min(first[name])  # the least disturbed run: the machine is shared
        per = (min(total[name]) - prompt_s) / NEW
        if name.startswith("onnxruntime-genai") and loops:
            per = (min(loops[NEW + 1]) - min(loops[1])) / NEW
        rows.append((name, prompt_s * 1e3, per * 1e3, note))
        if name.startswith("transformers"):
            eager_per = per * 1e3
    size = "~0.85B" if large else "tiny"
    return [f"| {kind} {size} | {name} | {p:.2f} | {t:.3f} | {(eager_per or t) / t:.2f}x |"
            f" {'yes' if same[name] else 'NO'} | {note} |" for name, p, t, note in rows]


def main() -> None:
    global THREADS, CLOCK, GENAI
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--kind", choices=("llama", "qwen2", "both"), default="both",
                        help="which random config (default: both)")
    parser.add_argument("--repeats", type=int, help="timed turns (default 15; 5 with --large)")
    parser.add_argument("--no-genai", action="store_true", help="leave onnxruntime-genai out")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with this process's CPU time instead of wall time")
    args = parser.parse_args()
    THREADS = args.threads
    GENAI = not args.no_genai
    if args.cpu_time:
        CLOCK = time.process_time
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    repeats = args.repeats or (3 if args.quick else 15)
    kinds = ("llama", "qwen2") if args.kind == "both" else (args.kind,)
    head = (f"### Text generation (greedy, {PROMPT}-token prompt, {NEW} new tokens, {THREADS}"
            f" threads, {'CPU time' if args.cpu_time else 'wall time'},"
            f" {platform.processor() or platform.machine()})\n\n"
            "| model | runner | prompt ms | ms / new token | speed-up vs eager | tokens match |"
            " notes |\n|---|---|---|---|---|---|---|")
    if args.large:
        rows = [row for kind in kinds for row in measure(
            kind, args.repeats or max(1, repeats // 3), True)]
    else:
        rows = [row for kind in kinds for row in measure(kind, repeats, False)]
    report("\n".join([head, *rows]), args.out)


if __name__ == "__main__":
    main()
