"""Text generation: a transformers causal LM as one ONNX decoder with a key/value cache.

Imported only when such a model is converted (torch and transformers are imported here).

The exported graph serves the prompt and every next token alike::

    inputs:  input_ids [batch, sequence], attention_mask [batch, total_sequence],
             position_ids [batch, sequence] (when the model takes them),
             past_key_values.{i}.key / .value [batch, heads, past_sequence, head_dim]
    outputs: logits [batch, sequence, vocab],
             present.{i}.key / .value [batch, heads, past_sequence + sequence, head_dim]

The prompt runs with a past of length 0. :mod:`onnxbridge.generate` runs the loop.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import torch

from onnxbridge.errors import ConversionError
from onnxbridge.registry import ConvertOptions, mro_paths

__all__ = ["TASKS", "convert_causal_lm", "infer_task"]

TASKS = ("text-generation", "text2text-generation", "forward")
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def infer_task(model: torch.nn.Module) -> str:
    """The task a transformers model's class implies ("forward" when none applies)."""
    if "transformers.modeling_utils.PreTrainedModel" not in mro_paths(model):
        return "forward"
    name = type(model).__name__
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        # T5, BART, Marian, Whisper ... (*ForConditionalGeneration); a multimodal causal
        # *ForConditionalGeneration (LLaVA) has no encoder-decoder config and stays "forward".
        if hasattr(model, "generate") and hasattr(model, "get_encoder"):
            return "text2text-generation"
        return "forward"
    if name.endswith(_CAUSAL_SUFFIXES) and hasattr(model, "generate"):
        return "text-generation"
    return "forward"


def beam_defaults(generation: Any) -> dict[str, Any]:
    """The generation config's beam search settings (transformers' defaults when unset)."""
    def get(key: str, default: Any) -> Any:
        value = getattr(generation, key, None) if generation is not None else None
        return default if value is None else value

    stopping = get("early_stopping", False)
    return {"num_beams": int(get("num_beams", 1)),
            "length_penalty": float(get("length_penalty", 1.0)),
            "early_stopping": stopping if stopping == "never" else bool(stopping)}


def _takes(model: torch.nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


class DecoderWithPast(torch.nn.Module):
    """The model called with a cache built from flat tensors; returns logits and the new cache."""

    def __init__(self, model: torch.nn.Module, layers: int, position_ids: bool) -> None:
        super().__init__()
        self.model = model
        self.layers = layers
        self.position_ids = position_ids
        # transformers 5.2x names the argument ``cache``; earlier versions ``past_key_values``.
        self.cache_arg = "cache" if _takes(model, "cache") else "past_key_values"

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        input_ids, attention_mask = args[0], args[1]
        rest = args[2:]
        kwargs: dict[str, Any] = {}
        if self.position_ids:
            kwargs["position_ids"], rest = rest[0], rest[1:]
        cache = DynamicCache(config=getattr(self.model, "config", None))
        for i in range(self.layers):
            cache.update(rest[2 * i], rest[2 * i + 1], i)
        kwargs[self.cache_arg] = cache
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True,
                         **kwargs)
        flat: list[torch.Tensor] = []
        for layer in _cache_layers(_returned_cache(out)):
            flat += [layer[0], layer[1]]
        return (out.logits, *flat)


def _returned_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _cache_layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise ConversionError(
            f"the model's cache is a {type(cache).__name__}, not a key/value cache with layers;"
            " text-generation export supports transformers decoders with a DynamicCache"
            " (Llama, Mistral, Qwen2, Phi, Gemma, GPT-2, GPT-NeoX, OPT, Falcon, Bloom ...)."
            " Pass task='forward' to export the plain forward instead",
            converter="torch",
        )
    out = []
    for layer in layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
            raise ConversionError(
                f"cache layer {type(layer).__name__} holds no key/value tensors (a recurrent or"
                " linear-attention layer); text-generation export needs attention caches only."
                " Pass task='forward' to export the plain forward instead",
                converter="torch",
            )
        out.append((keys, values))
    return out


def position_ids_from_mask(mask: np.ndarray, length: int) -> np.ndarray:
    """What transformers' generate passes: cumulative count of real tokens, 1 under padding."""
    pos = np.cumsum(mask, axis=-1) - 1
    pos = np.where(mask == 0, 1, pos)
    return pos[:, -length:].astype(np.int64)


def _read_ids(sample: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    mask = None
    if isinstance(sample, Mapping):
        unknown = sorted(set(sample) - {"input_ids", "attention_mask"})
        if "input_ids" not in sample or unknown:
            raise ConversionError(
                "a text-generation sample is token ids: a [batch, sequence] tensor, or a dict"
                f" with input_ids (and attention_mask); got keys {sorted(sample)}",
                converter="torch",
            )
        ids, mask = sample["input_ids"], sample.get("attention_mask")
    elif isinstance(sample, (tuple, list)) and len(sample) in (1, 2):
        ids = sample[0]
        mask = sample[1] if len(sample) == 2 else None
    else:
        ids = sample
    ids = torch.as_tensor(np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids)
    if ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise ConversionError(
            f"text-generation needs integer token ids of shape [batch, sequence]; got"
            f" {ids.dtype} {list(ids.shape)}", converter="torch")
    if mask is not None:
        mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    return ids.long(), None if mask is None else mask.long()


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def convert_causal_lm(model: Any, sample: Any, options: ConvertOptions, task_given: bool,
                      external: bool | None = None) -> Any:
    """Export a causal LM with past_key_values.* inputs and present.* outputs."""
    from onnxbridge.plugins._torch_export import (
        _WRAPPED,
        ExportJob,
        TorchConversionResult,
        _torch_default_opset,
        eval_mode,
        export_dynamo,
        quiet,
        tidy_proto,
        want_external,
    )

    assert _WRAPPED == "model"
    fuse = options.pop("fuse", True)
    if fuse not in (True, False):
        raise ConversionError(f"fuse={fuse!r} must be True or False", converter="torch")
    ids, mask = _read_ids(sample)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    uses_positions = _takes(model, "position_ids")
    with eval_mode(model):
        out = model(input_ids=ids[:, :1].to(device), use_cache=True)
    layers = _cache_layers(_returned_cache(out))
    n = len(layers)
    keys = layers[0][0]
    if keys.ndim != 4:
        raise ConversionError(f"cache keys of shape {list(keys.shape)} are not [batch, heads,"
                              " length, head_dim]", converter="torch")
    dtype = keys.dtype
    wrapper = DecoderWithPast(model, n, uses_positions)

    # Export sizes: all different, none 0 or 1, so that torch.export keeps each one symbolic.
    gen = torch.Generator().manual_seed(0)
    high = max(2, min(vocab or 2, int(ids.max()) + 1 if ids.numel() else 2))
    b, s, p = 3, 5, 7
    full = torch.randint(0, high, (b, p + s), generator=gen)

    def feeds_for(input_ids: torch.Tensor, attn: torch.Tensor,
                  past: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        length = input_ids.shape[1]
        args = [input_ids, attn]
        if uses_positions:
            args.append(torch.from_numpy(position_ids_from_mask(attn.numpy(), length)))
        return args + list(past)

    def run(args: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with eval_mode(model):
            return list(wrapper(*[a.to(device) for a in args]))

    def empty_past(batch: int) -> list[torch.Tensor]:
        return [torch.zeros(batch, layer[i].shape[1], 0, layer[i].shape[3], dtype=dtype)
                for layer in layers for i in (0, 1)]

    prefix = run(feeds_for(full[:, :p], torch.ones(b, p, dtype=torch.long), empty_past(b)))
    export_args = feeds_for(full[:, p:], torch.ones(b, p + s, dtype=torch.long),
                            [t.cpu() for t in prefix[1:]])
    input_names = ["input_ids", "attention_mask"] + (["position_ids"] if uses_positions else [])
    input_names += [f"past_key_values.{i}.{kind}" for i in range(n) for kind in ("key", "value")]
    output_names = ["logits"] + [f"present.{i}.{kind}" for i in range(n)
                                 for kind in ("key", "value")]
    axes = [{0: "batch", 1: "sequence"}, {0: "batch", 1: "total_sequence"}]
    if uses_positions:
        axes.append({0: "batch", 1: "sequence"})
    axes += [{0: "batch", 2: "past_sequence"} for _ in range(2 * n)]
    job = ExportJob(
        wrapper=wrapper, args=tuple(a.to(device) for a in export_args),
        input_names=input_names, output_names=output_names,
        output_shapes=[tuple(t.shape) for t in run(export_args)], axes=axes,
        opset=options.target_opset(_torch_default_opset()), custom_ops={},
    )
    folder = None
    if want_external(model, external):  # a large model's weights go to files, not the proto
        folder = tempfile.TemporaryDirectory(prefix="onnxbridge-weights-")
        job.data_dir = folder.name
    with eval_mode(model), quiet():
        try:
            proto = export_dynamo(job)
        except ConversionError:
            raise
        except Exception as exc:
            from onnxbridge.plugins._torch_export import describe_failure

            raise ConversionError(
                "the model could not be exported for text generation with a key/value cache"
                f" ({describe_failure(exc)}). Pass task='forward' to export the plain forward"
                " (no cache) instead", converter="torch") from exc
    proto = tidy_proto(proto, job, list(job.args), options.name or type(model).__name__)

    # Verification: the prompt with an empty cache, then cached steps, then a left-padded batch.
    prompt_mask = mask if mask is not None else torch.ones_like(ids)
    checks: list[tuple[str, dict[str, np.ndarray]]] = []
    padded_prompt: dict[str, np.ndarray] | None = None

    def as_feeds(args: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
        return {name: _to_numpy(a) for name, a in zip(input_names, args, strict=True)}

    args = feeds_for(ids, prompt_mask, empty_past(ids.shape[0]))
    checks.append(("the prompt (empty cache)", as_feeds(args)))
    attn = prompt_mask
    outs = run(args)
    for step in range(3):
        token = outs[0][:, -1].argmax(-1, keepdim=True).cpu()
        attn = torch.cat([attn, torch.ones_like(token)], dim=1)
        args = feeds_for(token, attn, [t.cpu() for t in outs[1:]])
        checks.append((f"cached step {step + 1}", as_feeds(args)))
        outs = run(args)
    if ids.shape[1] >= 3:
        padded = ids[:1].repeat(2, 1)
        pad_mask = torch.ones_like(padded)
        pad_mask[1, :2] = 0
        # Padding positions hold no meaning (their values differ between implementations of
        # the mask): the check is the next step after a left-padded prompt, whose logits and
        # new cache entries attend to real tokens only.
        padded_prompt = as_feeds(feeds_for(padded, pad_mask, empty_past(2)))
        first = run(feeds_for(padded, pad_mask, empty_past(2)))
        token = first[0][:, -1].argmax(-1, keepdim=True).cpu()
        pad_mask = torch.cat([pad_mask, torch.ones_like(token)], dim=1)
        checks.append(("the step after a left-padded prompt (batch of 2)",
                       as_feeds(feeds_for(token, pad_mask, [t.cpu() for t in first[1:]]))))

    computed: dict[int, tuple[Any, list[np.ndarray]]] = {}

    def reference(x: Any) -> list[np.ndarray]:
        if not isinstance(x, Mapping):
            raise ConversionError("a text-generation model is verified on its full feeds",
                                  converter="torch")
        if id(x) in computed and computed[id(x)][0] is x:  # the fusion check ran it already
            return computed[id(x)][1]
        got = [_to_numpy(t) for t in run([torch.as_tensor(np.asarray(x[name]))
                                           for name in input_names])]
        computed[id(x)] = (x, got)
        return got

    config = model.config
    generation = getattr(model, "generation_config", None)

    def token_ids(value: Any) -> Any:
        return list(value) if isinstance(value, (list, tuple)) else value

    info = {
        "layers": n,
        "position_ids": uses_positions,
        "eos_token_id": token_ids(getattr(generation, "eos_token_id", None)
                              if generation is not None else getattr(config, "eos_token_id", None)),
        "pad_token_id": getattr(generation, "pad_token_id", None) if generation is not None
        else getattr(config, "pad_token_id", None),
        "vocab_size": vocab,
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    info.update(beam_defaults(generation))
    notes = ["exported for text generation: one decoder with a key/value cache"
             f" ({n} layers, past_key_values.* in, present.* out), verified on the prompt,"
             " 3 cached steps and a left-padded batch"]
    if fuse:
        proto, fused_note, max_positions = _fused(proto, model, n, dtype, checks, reference,
                                                  job.data_dir, padded_prompt)
        notes.append(fused_note)
        if max_positions:
            info["fused"] = True
            info["max_positions"] = max_positions
    if not task_given:
        notes.append(f"task 'text-generation' inferred from {type(model).__name__}; pass"
                     " task='forward' for the plain forward without a cache")
    from onnxbridge.generate import GenerativeModel

    return TorchConversionResult(
        proto=proto,
        reference=reference,
        framework="torch",
        framework_version=torch.__version__,
        metadata={
            "onnxbridge.task": "text-generation",
            "onnxbridge.generation": json.dumps(info),
            "onnxbridge.torch.exporter": "dynamo",
            "onnxbridge.torch.model_class":
                f"{type(model).__module__}.{type(model).__qualname__}",
        },
        notes=notes,
        verify_samples=checks,
        model_class=GenerativeModel,
        data_dir=job.data_dir,
        data_owner=folder,
    )


def _fused(proto: Any, model: Any, layers: int, dtype: torch.dtype,
           checks: Sequence[tuple[str, Mapping[str, np.ndarray]]],
           reference: Any, data_dir: str | None,
           padded_prompt: Mapping[str, np.ndarray] | None = None) -> tuple[Any, str, int]:
    """The fused decoder when it matches the source on every check, else the exported one.

    Returns (proto, note, max positions of the fused rotary cache or 0 when not fused).
    """
    from onnxbridge.plugins._genai_fuse import fuse_decoder

    plan = fusion_plan(model, layers) if dtype in (torch.float32, torch.float16) else \
        f"the cache dtype {dtype} has no fused kernels on CPU"
    if isinstance(plan, str):
        return proto, f"attention not fused: {plan} (the exported graph is kept)", 0
    try:
        fused, counts = fuse_decoder(proto, plan)
        problem = _compare(fused, checks, reference, data_dir, padded_prompt)
    except ValueError as exc:  # a layer the rewrite does not recognise
        problem = str(exc)
    except Exception as exc:  # onnxruntime's errors (InvalidArgument, Fail) are not RuntimeErrors
        problem = f"the fused graph does not run ({type(exc).__name__}: {exc})"
    if problem:
        return proto, (f"attention not fused: {problem}; the exported graph is kept (pass"
                       " fuse=False to skip trying)"), 0
    what = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    return fused, (f"fused for onnxruntime ({what}; {len(fused.graph.node)} nodes, was"
                   f" {len(proto.graph.node)}); fuse=False keeps the exported graph"), \
        int(plan.cos_cache.shape[0])


def _compare(fused: Any, checks: Sequence[tuple[str, Mapping[str, np.ndarray]]],
             reference: Any, data_dir: str | None,
             padded_prompt: Mapping[str, np.ndarray] | None = None) -> str:
    """'' when the fused graph gives the source's outputs on every check, else what differs.

    ``padded_prompt`` (a left-padded prompt, empty cache) is compared where padding leaves a
    meaning: the last position's logits and the cache entries of real tokens.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if data_dir is None:
        source: Any = fused.SerializeToString()
    else:  # the weights stay in data_dir's files, which the fused graph names as before
        source = os.path.join(data_dir, "fused-check.onnx")
        onnx.save(fused, source)
    try:
        session = onnxruntime.InferenceSession(source, options,
                                               providers=["CPUExecutionProvider"])
    finally:
        if data_dir is not None:
            os.remove(source)
    names = [o.name for o in session.get_outputs()]
    for what, feeds in checks:
        got = session.run(None, dict(feeds))
        for name, ours, want in zip(names, got, reference(feeds), strict=True):
            if ours.shape != want.shape or not np.allclose(ours, want, atol=1e-4, rtol=1e-3):
                return f"the fused graph's {name} differs from the model's on {what}"
    if padded_prompt is not None:
        real = np.asarray(padded_prompt["attention_mask"]).astype(bool)
        got = session.run(None, dict(padded_prompt))
        for name, ours, want in zip(names, got, reference(dict(padded_prompt)), strict=True):
            if ours.shape != want.shape:
                return f"the fused graph's {name} has another shape on a left-padded prompt"
            rows = [(ours[b, -1], want[b, -1]) if name == "logits" else
                    (ours[b][:, real[b]], want[b][:, real[b]]) for b in range(len(real))]
            if not all(np.allclose(o, w, atol=1e-4, rtol=1e-3) for o, w in rows):
                return (f"the fused graph's {name} differs from the model's on a left-padded"
                        " prompt's real tokens")
    return ""


def fusion_plan(model: Any, layers: int) -> Any:
    """What fusing attention needs from a Llama-like model, or a string saying why not."""
    from onnxbridge.plugins._genai_fuse import FusePlan

    config = getattr(model, "config", None)
    base = getattr(model, "model", None)
    rotary = getattr(base, "rotary_emb", None)
    blocks = getattr(base, "layers", None)
    if config is None or rotary is None or blocks is None or len(blocks) != layers:
        return "the model has no rotary embedding or decoder layers where Llama has them"
    rope_type = str(getattr(rotary, "rope_type", "default"))
    if rope_type not in ("default", "linear", "llama3", "yarn"):
        return f"its rotary embedding ({rope_type}) changes with the sequence length"
    if getattr(config, "attn_logit_softcapping", None) or getattr(config, "final_logit_softcapping",
                                                                  None):
        return "attention logit soft-capping has no fused form"
    attentions = [getattr(block, "self_attn", None) for block in blocks]
    for attn in attentions:
        if attn is None or not all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj",
                                                              "o_proj", "scaling", "head_dim")):
            return "its attention layers are not q/k/v/o projections"
        if hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
            return "its attention normalises queries and keys (no fused form here)"
    head_dim = int(getattr(attentions[0], "head_dim", 0))
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    positions = int(getattr(config, "max_position_embeddings", 0) or 0)
    if not heads or not positions or head_dim % 2:
        return "its config lacks num_attention_heads or max_position_embeddings"
    with torch.no_grad():
        probe = torch.zeros(1, 1, head_dim, dtype=torch.float32)
        cos, sin = rotary(probe, torch.arange(positions)[None])
    cos, sin = cos[0].float().numpy(), sin[0].float().numpy()
    half = head_dim // 2
    if cos.shape != (positions, head_dim) or not (
            np.array_equal(cos[:, :half], cos[:, half:])
            and np.array_equal(sin[:, :half], sin[:, half:])):
        return "its rotary embedding is partial or interleaved"
    window = getattr(config, "sliding_window", None)
    kinds = getattr(config, "layer_types", None)
    if kinds is not None:
        windows = [int(window) if kind == "sliding_attention" and window else None
                   for kind in kinds]
    else:
        windows = [int(window) if window else None] * layers
    return FusePlan(layers=layers, num_heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                    scales=[float(getattr(a, "scaling", 0.0)) for a in attentions],
                    cos_cache=np.ascontiguousarray(cos[:, :half]),
                    sin_cache=np.ascontiguousarray(sin[:, :half]), windows=windows)
