"""Text-to-text generation: a transformers encoder-decoder as an encoder and a decoder with a cache.

Imported only when such a model is converted (torch and transformers are imported here).

The cross-attention keys and values depend on the encoder's output only, so they are computed
once, **in the encoder graph**; the decoder graph serves every step (the first one with an empty
self-attention past) and never sees the encoder's hidden states::

    encoder  inputs:  input_ids [batch, encoder_sequence], attention_mask [batch, encoder_sequence]
                      (Whisper: input_features [batch, mel, frames])
             outputs: encoder_hidden_states [batch, encoder_sequence, d_model],
                      present.{i}.encoder.key / .value [batch, heads, encoder_sequence, head_dim]
    decoder  inputs:  decoder_input_ids [batch, decoder_sequence],
                      encoder_attention_mask [batch, encoder_sequence] (text encoders),
                      past_key_values.{i}.decoder.key / .value
                          [batch, heads, past_decoder_sequence, head_dim],
                      past_key_values.{i}.encoder.key / .value (the encoder's present.{i}.encoder.*)
             outputs: logits [batch, decoder_sequence, vocab],
                      present.{i}.decoder.key / .value
                          [batch, heads, past_decoder_sequence + decoder_sequence, head_dim]

:class:`onnxbridge.generate.Seq2SeqModel` holds both and runs the loop.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from onnxbridge.errors import ConversionError
from onnxbridge.plugins._torch_generate import (
    _cache_layers,
    _returned_cache,
    _to_numpy,
    beam_defaults,
)
from onnxbridge.registry import ConvertOptions

__all__ = ["convert_seq2seq"]


def _hidden_size(config: Any) -> int:
    for key in ("d_model", "hidden_size"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    raise ConversionError("the model's config names no hidden size (d_model or hidden_size)",
                          converter="torch")


def _new_cache(model: torch.nn.Module) -> Any:
    from transformers import DynamicCache, EncoderDecoderCache

    # No config: layers are made as they are filled (T5's decoder may have more layers than
    # the config's num_hidden_layers, which counts the encoder's).
    return EncoderDecoderCache(DynamicCache(), DynamicCache())


def _encoder_output(hidden: torch.Tensor) -> Any:
    from transformers.modeling_outputs import BaseModelOutput

    return BaseModelOutput(last_hidden_state=hidden)


class EncoderWithCross(torch.nn.Module):
    """The encoder, then each decoder layer's cross-attention keys and values of its output."""

    def __init__(self, model: torch.nn.Module, feature_name: str, masked: bool) -> None:
        super().__init__()
        self.model = model
        self.feature_name = feature_name
        self.masked = masked

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = args[0]
        mask = args[1] if self.masked else None
        encoder = self.model.get_encoder()  # type: ignore[operator, unused-ignore]
        kwargs: dict[str, Any] = {self.feature_name: features}
        if mask is not None:
            kwargs["attention_mask"] = mask
        hidden = encoder(**kwargs).last_hidden_state
        # One decoder step on a placeholder token fills the cross-attention cache; only the
        # keys and values of the encoder's output are returned (the rest is dead code).
        start = torch.zeros(hidden.shape[0], 1, dtype=torch.long, device=hidden.device)
        out = self.model(encoder_outputs=_encoder_output(hidden), attention_mask=mask,
                         decoder_input_ids=start, cache=_new_cache(self.model), use_cache=True)
        flat: list[torch.Tensor] = []
        for keys, values in _cache_layers(_returned_cache(out).cross_attention_cache):
            flat += [keys, values]
        return (hidden, *flat)


class DecoderWithCrossPast(torch.nn.Module):
    """One decoder step given the self-attention past and the precomputed cross keys/values."""

    def __init__(self, model: torch.nn.Module, layers: int, masked: bool, hidden: int) -> None:
        super().__init__()
        self.model = model
        self.layers = layers
        self.masked = masked
        self.hidden = hidden

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ids = args[0]
        mask = args[1] if self.masked else None
        rest = args[2:] if self.masked else args[1:]
        cache = _new_cache(self.model)
        for i in range(self.layers):
            cache.self_attention_cache.update(rest[4 * i], rest[4 * i + 1], i)
            cache.cross_attention_cache.update(rest[4 * i + 2], rest[4 * i + 3], i)
            cache.is_updated[i] = True
        cross = rest[2]
        # The cross keys/values are cached, so the decoder reads only the encoder output's
        # batch and length; zeros of that size stand in for it.
        placeholder = cross.new_zeros(cross.shape[0], cross.shape[2], self.hidden)
        out = self.model(encoder_outputs=_encoder_output(placeholder), attention_mask=mask,
                         decoder_input_ids=ids, cache=cache, use_cache=True)
        flat: list[torch.Tensor] = []
        for keys, values in _cache_layers(_returned_cache(out).self_attention_cache):
            flat += [keys, values]
        return (out.logits, *flat)


# Half precision: |onnx - torch| <= HALF_ULPS * eps * (largest |value| of that output) +
# HALF_RTOL * |torch|. Both sides round every layer to float16 (torch on CPU and onnxruntime
# accumulate and order operations differently), so the differences scale with the values'
# magnitude, not with each element: a fixed atol of 1e-2 fails a model with values near 50.
HALF_ULPS = 64
HALF_RTOL = 1e-2


def _largest(value: Any) -> float:
    array = _to_numpy(value) if isinstance(value, torch.Tensor) else np.asarray(value)
    finite = np.abs(array[np.isfinite(array)]) if array.size else array
    return float(finite.max()) if finite.size else 0.0


def half_tolerances(dtype: torch.dtype, scales: Mapping[str, float]
                    ) -> dict[str, tuple[float, float]]:
    """(atol, rtol) per output for a half-precision export ({} for float32 and wider)."""
    if dtype not in (torch.float16, torch.bfloat16):
        return {}
    eps = float(torch.finfo(dtype).eps)
    return {name: (HALF_ULPS * eps * max(scale, 1.0), HALF_RTOL) for name, scale in scales.items()}


def _tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))


def read_encoder_sample(sample: Any, feature_name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The encoder's input (token ids or audio features) and attention mask from a sample."""
    mask = None
    if isinstance(sample, Mapping):
        decoder = sorted(str(k) for k in sample if str(k).startswith("decoder_"))
        if decoder:
            raise ConversionError(
                f"a text2text-generation sample is the encoder's input only; {decoder} are the"
                " decoder's (it starts from decoder_start_token_id: pass a decoder prompt to"
                " generate(decoder_input_ids=...)). Pass task='forward' to export the plain"
                " forward with these inputs", converter="torch")
        allowed = {feature_name, "attention_mask"}
        if feature_name not in sample or not set(sample) <= allowed:
            raise ConversionError(
                f"a text2text-generation sample is the encoder's {feature_name}: a tensor, or a"
                f" dict with {feature_name} (and attention_mask); got keys {sorted(sample)}",
                converter="torch")
        features, mask = sample[feature_name], sample.get("attention_mask")
    elif isinstance(sample, (tuple, list)) and len(sample) in (1, 2):
        features = sample[0]
        mask = sample[1] if len(sample) == 2 else None
    else:
        features = sample
    x = _tensor(features)
    if feature_name == "input_ids":
        if x.ndim != 2 or x.dtype not in (torch.int64, torch.int32):
            raise ConversionError(
                f"text2text-generation needs integer token ids of shape [batch, sequence]; got"
                f" {x.dtype} {list(x.shape)}", converter="torch")
        x = x.long()
    elif not x.is_floating_point() or x.ndim != 3:
        raise ConversionError(
            f"{feature_name} must be float features [batch, mel, frames]; got {x.dtype}"
            f" {list(x.shape)}", converter="torch")
    return x, None if mask is None else _tensor(mask).long()


def _token_ids(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return None if value is None else int(value)


def generation_info(model: Any, layers: int, feature_name: str, masked: bool) -> dict[str, Any]:
    """What the loop needs from the model's config and generation config."""
    config = model.config
    generation = getattr(model, "generation_config", None)

    def pick(key: str) -> Any:
        value = getattr(generation, key, None) if generation is not None else None
        return value if value is not None else getattr(config, key, None)

    return {
        "layers": layers,
        "encoder_input": feature_name,
        "encoder_attention_mask": masked,
        # transformers' generate starts from bos_token_id when decoder_start_token_id is unset
        # (MBart, and any config that leaves it None).
        "decoder_start_token_id": _token_ids(pick("decoder_start_token_id")
                                             if pick("decoder_start_token_id") is not None
                                             else pick("bos_token_id")),
        "eos_token_id": _token_ids(pick("eos_token_id")),
        "pad_token_id": _token_ids(pick("pad_token_id")),
        "forced_bos_token_id": _token_ids(pick("forced_bos_token_id")),
        "forced_eos_token_id": _token_ids(pick("forced_eos_token_id")),
        "suppress_tokens": _token_ids(pick("suppress_tokens")),
        "begin_suppress_tokens": _token_ids(pick("begin_suppress_tokens")),
        "vocab_size": int(getattr(config, "vocab_size", 0) or 0),
        **beam_defaults(generation),
    }


def _export(wrapper: torch.nn.Module, model: torch.nn.Module, args: Sequence[torch.Tensor],
            input_names: list[str], output_names: list[str], axes: list[dict[int, str]],
            options: ConvertOptions, what: str, data_dir: str | None = None) -> Any:
    from onnxbridge.plugins._torch_export import (
        ExportJob,
        _torch_default_opset,
        describe_failure,
        eval_mode,
        export_dynamo,
        quiet,
        tidy_proto,
    )

    with eval_mode(model), torch.no_grad():
        shapes = [tuple(t.shape) for t in wrapper(*args)]
    job = ExportJob(wrapper=wrapper, args=tuple(args), input_names=input_names,
                    output_names=output_names, output_shapes=shapes, axes=axes,
                    opset=options.target_opset(_torch_default_opset()), custom_ops={})
    job.data_dir = data_dir  # weights written to files there (a large model), not the proto
    with eval_mode(model), quiet():
        try:
            proto = export_dynamo(job)
        except ConversionError:
            raise
        except Exception as exc:
            half = any(p.dtype == torch.float16 for p in model.parameters())
            if half and "DataDependent" in describe_failure(exc, limit=100000):
                raise ConversionError(
                    f"the model's {what} could not be exported in float16: its layers check"
                    " float16 values for overflow with a Python `if` on the tensor's values"
                    " (BART and Marian: `if ... not torch.isfinite(h).all()`), which"
                    " torch.export cannot trace. Export it in float32 (leave out"
                    " compute_dtype, or pass compute_dtype='float32'); T5 and Whisper export in"
                    f" float16 ({describe_failure(exc, limit=200)})",
                    converter="torch") from exc
            raise ConversionError(
                f"the model's {what} could not be exported for text2text generation"
                f" ({describe_failure(exc)}). Pass task='forward' to export the plain forward"
                " (no cache) instead", converter="torch") from exc
    name = f"{options.name or type(model).__name__}_{what}"
    return tidy_proto(proto, job, list(job.args), name)


def convert_seq2seq(model: Any, sample: Any, options: ConvertOptions, task_given: bool,
                    external: bool | None = None) -> Any:
    """Export an encoder (with cross keys/values) and a decoder with past, verified together.

    ``external`` (the ``external_data=`` option; None: by weight size) puts each graph's
    weights in a data file of its own, as for a large plain export.
    """
    from onnxbridge.plugins._torch_export import describe_failure

    try:
        return _convert(model, sample, options, task_given, external)
    except ConversionError:
        raise
    except Exception as exc:  # the model refused a call with a cache: say what was tried
        raise ConversionError(
            f"{type(model).__name__} failed when run as an encoder and a decoder with a cache"
            f" for text2text generation ({describe_failure(exc)}). Pass task='forward' to"
            " export the plain forward (no cache) instead", converter="torch") from exc


def _convert(model: Any, sample: Any, options: ConvertOptions, task_given: bool,
             external: bool | None = None) -> Any:
    from onnxbridge.plugins._torch_export import TorchConversionResult, eval_mode, want_external

    if not hasattr(model, "get_encoder") or not getattr(model.config, "is_encoder_decoder", False):
        raise ConversionError(
            f"{type(model).__name__} is not a transformers encoder-decoder model (no get_encoder"
            " or config.is_encoder_decoder); text2text-generation exports T5, BART, Marian,"
            " Whisper and their kin. Pass task='forward' for the plain forward",
            converter="torch")
    encoder = model.get_encoder()
    feature_name = "input_features" if _takes(encoder, "input_features") else "input_ids"
    masked = feature_name == "input_ids"
    features, mask = read_encoder_sample(sample, feature_name)
    if masked and mask is None:
        mask = torch.ones_like(features)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    hidden_size = _hidden_size(model.config)
    enc_wrapper = EncoderWithCross(model, feature_name, masked)

    def run(wrapper: torch.nn.Module, args: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with eval_mode(model), torch.no_grad():
            return [t.cpu() for t in wrapper(*[a.to(device) for a in args])]

    def enc_args(x: torch.Tensor, m: torch.Tensor | None) -> list[torch.Tensor]:
        return [x, m] if masked and m is not None else [x]

    probe = run(enc_wrapper, enc_args(features[:1], None if mask is None else mask[:1]))
    layers = (len(probe) - 1) // 2
    if layers == 0 or probe[1].ndim != 4:
        raise ConversionError("the model's cross-attention cache holds no [batch, heads, length,"
                              " head_dim] keys; text2text-generation cannot export it",
                              converter="torch")
    dtype = probe[1].dtype
    dec_wrapper = DecoderWithCrossPast(model, layers, masked, hidden_size)
    config_vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    high = max(2, config_vocab)

    # Export sizes: all different and above 1, so that torch.export keeps each one symbolic.
    gen = torch.Generator().manual_seed(0)
    b, s, p, e = 3, 2, 6, 5
    if masked:
        ex_features = torch.randint(0, high, (b, e), generator=gen)
        ex_mask = torch.ones(b, e, dtype=torch.long)
        ex_mask[1, -2:] = 0
    else:
        ex_features = torch.randn(b, *features.shape[1:], generator=gen).to(features.dtype)
        ex_mask = None
    enc_in = enc_args(ex_features, ex_mask)
    enc_out = run(enc_wrapper, enc_in)
    cross_names = [f"present.{i}.encoder.{k}" for i in range(layers) for k in ("key", "value")]
    enc_input_names = [feature_name] + (["attention_mask"] if masked else [])
    enc_axes = ([{0: "batch", 1: "encoder_sequence"}, {0: "batch", 1: "encoder_sequence"}]
                if masked else [{0: "batch"}])
    enc_output_names = ["encoder_hidden_states", *cross_names]
    folders: dict[str, Any] = {}
    if want_external(model, external):  # one folder per graph: each writes its own data file
        import tempfile

        folders = {what: tempfile.TemporaryDirectory(prefix="onnxbridge-weights-")
                   for what in ("encoder", "decoder")}
    enc_proto = _export(enc_wrapper, model, [a.to(device) for a in enc_in], enc_input_names,
                        enc_output_names, enc_axes, options, "encoder",
                        folders["encoder"].name if folders else None)

    def dec_args(ids: torch.Tensor, m: torch.Tensor | None, self_past: Sequence[torch.Tensor],
                 cross: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        args = [ids] + ([m] if masked and m is not None else [])
        for i in range(layers):
            args += [self_past[2 * i], self_past[2 * i + 1], cross[2 * i], cross[2 * i + 1]]
        return args

    def empty_self(batch: int) -> list[torch.Tensor]:
        return [torch.zeros(batch, t.shape[1], 0, t.shape[3], dtype=dtype)
                for t in probe[1:]]

    ex_ids = torch.randint(0, high, (b, p + s), generator=gen)
    first = run(dec_wrapper, dec_args(ex_ids[:, :p], ex_mask, empty_self(b), enc_out[1:]))
    dec_in = dec_args(ex_ids[:, p:], ex_mask, first[1:], enc_out[1:])
    dec_input_names = ["decoder_input_ids"] + (["encoder_attention_mask"] if masked else [])
    dec_axes: list[dict[int, str]] = [{0: "batch", 1: "decoder_sequence"}]
    if masked:
        dec_axes.append({0: "batch", 1: "encoder_sequence"})
    for i in range(layers):
        dec_input_names += [f"past_key_values.{i}.decoder.key", f"past_key_values.{i}.decoder.value",
                            f"past_key_values.{i}.encoder.key", f"past_key_values.{i}.encoder.value"]
        cross_axis = {0: "batch", 2: "encoder_sequence"}
        dec_axes += [{0: "batch", 2: "past_decoder_sequence"}] * 2 + [cross_axis] * 2
    dec_output_names = ["logits"] + [f"present.{i}.decoder.{k}" for i in range(layers)
                                     for k in ("key", "value")]
    dec_proto = _export(dec_wrapper, model, [a.to(device) for a in dec_in], dec_input_names,
                        dec_output_names, dec_axes, options, "decoder",
                        folders["decoder"].name if folders else None)

    info = generation_info(model, layers, feature_name, masked)
    start = info["decoder_start_token_id"]
    if start is None:
        start = info["pad_token_id"] if info["pad_token_id"] is not None else 0
        info["decoder_start_token_id"] = start

    # Verification of the decoder: the first step (empty past), three cached steps, on the
    # cross keys/values torch's encoder gives for the sample; then the same for a batch of 2
    # with padding in the encoder input (text encoders).
    checks: list[tuple[str, dict[str, np.ndarray]]] = []

    def as_feeds(args: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
        return {n: _to_numpy(a) for n, a in zip(dec_input_names, args, strict=True)}

    scales: dict[str, float] = {}  # the largest |value| of each decoder output on the checks

    def steps(x: torch.Tensor, m: torch.Tensor | None, label: str, count: int) -> None:
        cross = run(enc_wrapper, enc_args(x, m))[1:]
        ids = torch.full((x.shape[0], 1), int(start), dtype=torch.long)
        past = empty_self(x.shape[0])
        for step in range(count + 1):
            args = dec_args(ids, m, past, cross)
            what = "the first decoder step" if step == 0 else f"cached step {step}"
            checks.append((f"{what} ({label})", as_feeds(args)))
            outs = run(dec_wrapper, args)
            for name, value in zip(dec_output_names, outs, strict=True):
                scales[name] = max(scales.get(name, 0.0), _largest(value))
            ids, past = outs[0][:, -1].argmax(-1, keepdim=True), outs[1:]

    steps(features, mask, "the sample", 3)
    if masked and features.shape[1] >= 3:
        padded = features[:1].repeat(2, 1)
        pad_mask = torch.ones_like(padded)
        pad_mask[1, -2:] = 0
        steps(padded, pad_mask, "a padded batch of 2", 1)

    def reference(x: Any) -> list[np.ndarray]:
        if not isinstance(x, Mapping):
            raise ConversionError("a text2text-generation decoder is verified on its full feeds",
                                  converter="torch")
        got = run(dec_wrapper, [torch.as_tensor(np.asarray(x[n])) for n in dec_input_names])
        return [_to_numpy(t) for t in got]

    enc_samples: list[tuple[str, list[torch.Tensor]]] = [("the sample", enc_args(features, mask))]
    if masked:
        other = torch.randint(0, high, (features.shape[0] + 1, features.shape[1] + 2),
                              generator=gen)
        other_mask = torch.ones_like(other)
        other_mask[0, -3:] = 0
        enc_samples.append(("other ids, batch and length", [other, other_mask]))
    else:
        enc_samples.append(("other features and batch",
                            [torch.randn(features.shape[0] + 1, *features.shape[1:],
                                         generator=gen).to(features.dtype)]))

    def encoder_checks(bundle: Any, tolerance: Any) -> list[Any]:
        """Compare the ONNX encoder with torch's on the sample and on other values and sizes."""
        from onnxbridge.verify import compare_outputs

        session = bundle.encoder.session("CPUExecutionProvider")
        lines: list[Any] = []
        names = [f"encoder: {n}" for n in enc_output_names]
        for what, args in enc_samples:
            feeds = {n: _to_numpy(a) for n, a in zip(enc_input_names, args, strict=True)}
            expected = [_to_numpy(t) for t in run(enc_wrapper, args)]
            try:
                actual = session.run(None, feeds)
            except Exception as exc:  # onnxruntime's own error, wrapped with what was tried
                sizes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
                from onnxbridge.verify import OutputParity

                lines.append(OutputParity(
                    name=f"encoder on {what}", kind="value", batch=None, shape=(), dtype="?",
                    max_abs=None, max_rel=None, atol=0.0, rtol=0.0, tolerance_reason="",
                    worst_row=None, label_agreement=None, passed=False,
                    problem=f"onnxruntime failed to run the encoder on {what}, inputs {sizes}:"
                            f" {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"))
                continue
            lines += compare_outputs(
                names, expected, actual, batch=int(args[0].shape[0]), tolerance=tolerance,
                converter_tolerances=half_tolerances(
                    dtype, {n: _largest(e) for n, e in zip(names, expected, strict=True)}))
        return lines

    notes = [f"exported for text2text generation: an encoder (with the {layers} decoder layers'"
             " cross-attention keys/values) and a decoder with a self-attention cache, verified"
             " on the encoder (the sample, other values and sizes), the first decoder step and 3"
             " cached steps" + (", and a padded batch" if masked else "")]
    tolerances = half_tolerances(dtype, scales)
    if tolerances:
        notes.append(f"computed in {str(dtype).replace('torch.', '')}: each output is compared"
                     f" within {HALF_ULPS} x eps ({torch.finfo(dtype).eps:.3g}) x its largest"
                     " |value| on the checks (the rounding of a few layers at that scale), rtol"
                     f" {HALF_RTOL}; greedy tokens may part from float32 ones at near ties")
    if not task_given:
        notes.append(f"task 'text2text-generation' inferred from {type(model).__name__}; pass"
                     " task='forward' for the plain forward without a cache")
    torch_class = f"{type(model).__module__}.{type(model).__qualname__}"
    metadata = {
        "onnxbridge.task": "text2text-generation",
        "onnxbridge.generation": json.dumps(info),
        "onnxbridge.torch.exporter": "dynamo",
        "onnxbridge.torch.model_class": torch_class,
    }
    for key, value in {**metadata, "onnxbridge.role": "encoder"}.items():
        entry = enc_proto.metadata_props.add()
        entry.key, entry.value = key, value
    from onnxbridge.generate import Seq2SeqModel
    from onnxbridge.model import OnnxModel

    enc_model = OnnxModel(enc_proto, data_dir=folders["encoder"].name if folders else None,
                          data_owner=folders.get("encoder"))
    factory: Callable[..., Any] = functools.partial(Seq2SeqModel.from_protos, encoder=enc_model)
    return TorchConversionResult(
        proto=dec_proto,
        reference=reference,
        framework="torch",
        framework_version=torch.__version__,
        metadata={**metadata, "onnxbridge.role": "decoder"},
        notes=notes,
        verify_samples=checks,
        model_class=factory,
        more_checks=encoder_checks,
        tolerances=tolerances,
        data_dir=folders["decoder"].name if folders else None,
        data_owner=folders.get("decoder"),
    )


def _takes(module: torch.nn.Module, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
