"""A held-out-style sweep of PyTorch models through ``onnxbridge.to_onnx`` (not a test).

    nice -n 10 python benchmarks/sweep_torch_zoo.py                 # every case, one process each
    nice -n 10 python benchmarks/sweep_torch_zoo.py --only bert gpt2
    nice -n 10 python benchmarks/sweep_torch_zoo.py --out /tmp/sweep.md --json /tmp/sweep.json

Each case is a tiny random-weight model (Hugging Face transformers configs, timm when installed,
and hand-written export traps) built here, nothing downloaded. Each runs in its own process
(so one case's memory or crash stays its own) and gets one verdict:

- **passed**: ``to_onnx(model, sample)`` returned a model whose parity report passed, and an
  independent check agrees: ``m.run`` against the torch model's own outputs on a *second*
  input (another batch and length where the model has them), or for text generation
  ``m.generate`` against ``model.generate`` (greedy, token for token);
- **refused**: an ``onnxbridge`` error (ConversionError, UnsupportedOperatorError, ...) that
  names the problem: the case cannot convert and the user is told why;
- **failed**: any other exception (a raw torch/onnxruntime error), or wrong numbers / tokens.

Cases marked ``expect="refused"`` (operators without an ONNX form) are as expected when refused
with a named error (or converted and checked); every other case only when passed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# -- cases -------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    build: Callable[[], Any]  # -> model (eval, random weights)
    sample: Callable[[int, int], Any]  # (batch, length) -> the call's inputs
    kind: str = "forward"  # "forward", "generate", "seq2seq-generate", "detection"
    expect: str = "passed"  # "refused": an unsupported operator must be refused clearly
    second: tuple[int, int] = (3, 7)  # the independent check's batch and length
    group: str = ""


CASES: dict[str, Case] = {}


def case(name: str, sample: Callable[[int, int], Any], group: str, **kw: Any) -> Callable[
        [Callable[[], Any]], Callable[[], Any]]:
    def register(build: Callable[[], Any]) -> Callable[[], Any]:
        CASES[name] = Case(name, build, sample, group=group, **kw)
        return build
    return register


VOCAB = 99


def ids(b: int, s: int, vocab: int = VOCAB, **extra: Any) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(b * 100 + s)
    out = {"input_ids": torch.randint(3, vocab, (b, s), generator=g),
           "attention_mask": torch.ones(b, s, dtype=torch.int64)}
    out.update(extra)
    return out


def ids_only(b: int, s: int) -> dict[str, Any]:
    return {"input_ids": ids(b, s)["input_ids"]}


def with_types(b: int, s: int) -> dict[str, Any]:
    import torch

    return ids(b, s, token_type_ids=torch.zeros(b, s, dtype=torch.int64))


def choices(b: int, s: int) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(b * 10 + s)
    return {"input_ids": torch.randint(3, VOCAB, (b, 4, s), generator=g),
            "attention_mask": torch.ones(b, 4, s, dtype=torch.int64)}


def seq2seq(b: int, s: int) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(b * 7 + s)
    return {**ids(b, s), "decoder_input_ids": torch.randint(3, VOCAB, (b, max(2, s - 2)),
                                                             generator=g)}


def pixels(size: int, channels: int = 3) -> Callable[[int, int], Any]:
    def make(b: int, s: int) -> Any:
        import torch

        return torch.Generator().manual_seed(b + s) and torch.rand(
            b, channels, size, size, generator=torch.Generator().manual_seed(b + s))
    return make


def audio(b: int, s: int) -> Any:
    import torch

    return {"input_values": torch.randn(b, 400 + 40 * s,
                                        generator=torch.Generator().manual_seed(b + s))}


def hf(config_name: str, model_name: str, **config: Any) -> Callable[[], Any]:
    def build() -> Any:
        import torch
        import transformers

        torch.manual_seed(0)
        cfg = getattr(transformers, config_name)(**config)
        return getattr(transformers, model_name)(cfg).eval()
    return build


TEXT = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 37, "max_position_embeddings": 64}
DECODER = {**TEXT, "num_key_value_heads": 2, "pad_token_id": 0, "bos_token_id": 1,
           "eos_token_id": 2}


def register_hf() -> None:
    text = [
        ("bert-seqcls", "BertConfig", "BertForSequenceClassification", with_types, TEXT),
        ("bert-multiple-choice", "BertConfig", "BertForMultipleChoice", choices, TEXT),
        ("roberta-tokcls", "RobertaConfig", "RobertaForTokenClassification", ids,
         {**TEXT, "pad_token_id": 1}),
        ("distilbert-qa", "DistilBertConfig", "DistilBertForQuestionAnswering", ids,
         {"vocab_size": VOCAB, "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 37}),
        ("albert-mlm", "AlbertConfig", "AlbertForMaskedLM", ids,
         {**TEXT, "embedding_size": 16}),
        ("electra-seqcls", "ElectraConfig", "ElectraForSequenceClassification", ids,
         {**TEXT, "embedding_size": 16}),
        ("deberta-v2-seqcls", "DebertaV2Config", "DebertaV2ForSequenceClassification", ids,
         TEXT),
        ("xlm-roberta-mlm", "XLMRobertaConfig", "XLMRobertaForMaskedLM", ids,
         {**TEXT, "pad_token_id": 1}),
        ("mpnet-mlm", "MPNetConfig", "MPNetForMaskedLM", ids, TEXT),
        ("mobilebert-seqcls", "MobileBertConfig", "MobileBertForSequenceClassification", ids,
         {**TEXT, "embedding_size": 16, "intra_bottleneck_size": 32,
          "true_hidden_size": 32, "num_feedforward_networks": 1}),
        ("convbert-tokcls", "ConvBertConfig", "ConvBertForTokenClassification", ids,
         {**TEXT, "embedding_size": 32}),
    ]
    for name, cfg, cls, sample, kw in text:
        case(name, sample, "text")(hf(cfg, cls, **kw))
    decoders: list[tuple[str, str, str, dict[str, Any]]] = [
        ("gpt2-lm", "GPT2Config", "GPT2LMHeadModel",
         {"vocab_size": VOCAB, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64,
          "bos_token_id": 1, "eos_token_id": 2}),
        ("llama-lm", "LlamaConfig", "LlamaForCausalLM", DECODER),
        ("mistral-lm", "MistralConfig", "MistralForCausalLM", DECODER),
        ("qwen2-lm", "Qwen2Config", "Qwen2ForCausalLM", DECODER),
        ("phi-lm", "PhiConfig", "PhiForCausalLM", DECODER),
        ("gemma-lm", "GemmaConfig", "GemmaForCausalLM", {**DECODER, "head_dim": 8}),
        ("gpt-neox-lm", "GPTNeoXConfig", "GPTNeoXForCausalLM", DECODER),
        ("opt-lm", "OPTConfig", "OPTForCausalLM",
         {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2,
          "num_attention_heads": 4, "ffn_dim": 37, "max_position_embeddings": 64,
          "word_embed_proj_dim": 32, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}),
        ("bloom-lm", "BloomConfig", "BloomForCausalLM",
         {"vocab_size": VOCAB, "hidden_size": 32, "n_layer": 2, "n_head": 4,
          "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}),
        ("falcon-lm", "FalconConfig", "FalconForCausalLM",
         {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2,
          "num_attention_heads": 4, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}),
    ]
    for name, cfg, cls, kw in decoders:
        case(name, ids, "decoder", kind="generate")(hf(cfg, cls, **kw))
    # The same decoder called as a plain forward (task="forward" is not given: a user who only
    # wants logits still gets the generation export; this one asks for the forward).
    gpt2 = decoders[0][3]
    case("gpt2-forward", ids, "decoder", kind="forward-task")(hf("GPT2Config", "GPT2LMHeadModel",
                                                                 **gpt2))
    s2s = [
        ("t5", "T5Config", "T5ForConditionalGeneration",
         {"vocab_size": VOCAB, "d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 2,
          "num_heads": 4, "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1}),
        ("bart", "BartConfig", "BartForConditionalGeneration",
         {"vocab_size": VOCAB, "d_model": 32, "encoder_layers": 2, "decoder_layers": 2,
          "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 37,
          "decoder_ffn_dim": 37, "max_position_embeddings": 64}),
        ("marian", "MarianConfig", "MarianMTModel",
         {"vocab_size": VOCAB, "d_model": 32, "encoder_layers": 2, "decoder_layers": 2,
          "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 37,
          "decoder_ffn_dim": 37, "max_position_embeddings": 64, "pad_token_id": 0,
          "decoder_start_token_id": 0, "eos_token_id": 2}),
        ("mbart", "MBartConfig", "MBartForConditionalGeneration",
         {"vocab_size": VOCAB, "d_model": 32, "encoder_layers": 2, "decoder_layers": 2,
          "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 37,
          "decoder_ffn_dim": 37, "max_position_embeddings": 64}),
    ]
    for name, cfg, cls, kw in s2s:
        case(f"{name}-forward", seq2seq, "seq2seq")(hf(cfg, cls, **kw))
        case(f"{name}-generate", ids, "seq2seq", kind="seq2seq-generate")(hf(cfg, cls, **kw))
    vision = {"image_size": 32, "patch_size": 8, "num_channels": 3, "hidden_size": 32,
              "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37,
              "num_labels": 5}
    images: list[tuple[str, str, str, dict[str, Any], int]] = [
        ("vit-imgcls", "ViTConfig", "ViTForImageClassification", vision, 32),
        ("deit-imgcls", "DeiTConfig", "DeiTForImageClassification", vision, 32),
        ("beit-imgcls", "BeitConfig", "BeitForImageClassification", vision, 32),
        ("convnext-imgcls", "ConvNextConfig", "ConvNextForImageClassification",
         {"num_stages": 2, "hidden_sizes": [8, 16], "depths": [1, 1], "num_labels": 5}, 32),
        ("swin-imgcls", "SwinConfig", "SwinForImageClassification",
         {"image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 1],
          "num_heads": [2, 2], "window_size": 4, "num_labels": 5}, 32),
        ("resnet-imgcls", "ResNetConfig", "ResNetForImageClassification",
         {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "num_labels": 5}, 32),
        ("segformer-seg", "SegformerConfig", "SegformerForSemanticSegmentation",
         {"num_encoder_blocks": 2, "depths": [1, 1], "sr_ratios": [2, 1],
          "hidden_sizes": [8, 16], "num_attention_heads": [1, 2], "decoder_hidden_size": 16,
          "num_labels": 4, "patch_sizes": [7, 3], "strides": [4, 2]}, 32),
        ("yolos-detect", "YolosConfig", "YolosForObjectDetection",
         {**vision, "image_size": [32, 32], "num_detection_tokens": 5}, 32),
    ]
    for name, cfg, cls, kw, size in images:
        def image_sample(b: int, s: int, size: int = size) -> Any:
            return {"pixel_values": pixels(size)(b, s)}

        case(name, image_sample, "vision",
             second=(3, 0))(hf(cfg, cls, **kw))
    case("detr-detect", lambda b, s: {"pixel_values": pixels(64)(b, s)}, "vision",
         second=(3, 0))(hf("DetrConfig", "DetrForObjectDetection", use_timm_backbone=False,
                           backbone_config={"model_type": "resnet", "embedding_size": 8,
                                            "hidden_sizes": [8, 16], "depths": [1, 1],
                                            "out_features": ["stage2"]},
                           d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=4, decoder_attention_heads=4,
                           encoder_ffn_dim=37, decoder_ffn_dim=37, num_queries=5,
                           use_pretrained_backbone=False, num_labels=3))
    audio_cfg = {"vocab_size": 20, "hidden_size": 32, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "intermediate_size": 37,
                 "conv_dim": (16, 16), "conv_stride": (5, 4), "conv_kernel": (10, 8),
                 "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
                 "num_labels": 3}
    case("wav2vec2-ctc", audio, "audio")(hf("Wav2Vec2Config", "Wav2Vec2ForCTC", **audio_cfg))
    case("wav2vec2-audiocls", audio, "audio")(
        hf("Wav2Vec2Config", "Wav2Vec2ForSequenceClassification", **audio_cfg))
    case("hubert-ctc", audio, "audio")(hf("HubertConfig", "HubertForCTC", **audio_cfg))

    def ast_sample(b: int, s: int) -> Any:
        import torch

        return {"input_values": torch.randn(b, 64, 16, generator=torch.Generator().manual_seed(b))}

    case("ast-audiocls", ast_sample, "audio", second=(3, 0))(
        hf("ASTConfig", "ASTForAudioClassification", hidden_size=32, num_hidden_layers=2,
           num_attention_heads=4, intermediate_size=37, patch_size=8, max_length=64,
           num_mel_bins=16, frequency_stride=8, time_stride=8, num_labels=3))

    def whisper_sample(b: int, s: int) -> Any:
        import torch

        g = torch.Generator().manual_seed(b + s)
        return {"input_features": torch.randn(b, 16, 60, generator=g),
                "decoder_input_ids": torch.randint(3, VOCAB, (b, s), generator=g)}

    whisper = hf("WhisperConfig", "WhisperForConditionalGeneration", vocab_size=VOCAB,
                 num_mel_bins=16, d_model=32, encoder_layers=1, decoder_layers=1,
                 encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37,
                 decoder_ffn_dim=37, max_source_positions=30, max_target_positions=32,
                 pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    case("whisper-forward", whisper_sample, "audio", second=(3, 5))(whisper)

    def clip_sample(b: int, s: int) -> Any:
        return {**ids(b, s), "pixel_values": pixels(32)(b, s)}

    case("clip-two-input", clip_sample, "multimodal")(
        hf("CLIPConfig", "CLIPModel",
           text_config={"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "intermediate_size": 37,
                        "max_position_embeddings": 64},
           vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32,
                          "num_hidden_layers": 2, "num_attention_heads": 4,
                          "intermediate_size": 37}, projection_dim=16))


def register_timm() -> None:
    def timm_model(name: str, **kw: Any) -> Callable[[], Any]:
        def build() -> Any:
            import timm
            import torch

            torch.manual_seed(0)
            return timm.create_model(name, pretrained=False, num_classes=5, **kw).eval()
        return build

    case("timm-resnet18", pixels(64), "timm", second=(3, 0))(timm_model("resnet18"))
    case("timm-vit-tiny", pixels(32), "timm", second=(3, 0))(
        timm_model("vit_tiny_patch16_224", img_size=32, depth=2))
    case("timm-mobilenetv3", pixels(64), "timm", second=(3, 0))(
        timm_model("mobilenetv3_small_050"))


# -- hand-written traps -----------------------------------------------------------------------
def seeded_build(cls: Any) -> Callable[[], Any]:
    def build() -> Any:
        import torch

        torch.manual_seed(0)
        return cls().eval()
    return build


def register_traps() -> None:
    import torch
    from torch import nn

    def x(b: int, s: int) -> Any:
        return torch.randn(b, 6, generator=torch.Generator().manual_seed(b + s))

    class DictOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(6, 3), nn.Linear(6, 2)

        def forward(self, x: Any) -> Any:
            return {"logits": self.a(x), "aux": {"score": self.b(x).sigmoid()}}

    class TupleOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 3)

        def forward(self, x: Any) -> Any:
            h = self.a(x)
            return h, (h.relu(), h.sum(-1))

    class NoneOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 3)

        def forward(self, x: Any) -> Any:
            return self.a(x), None, self.a(x).tanh()

    class KwOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 3)

        def forward(self, *, features: Any, scale: Any) -> Any:
            return self.a(features) * scale

    class Counter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 3)
            self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

        def forward(self, x: Any) -> Any:
            self.steps += 1  # type: ignore[operator,assignment]
            return self.a(x)

    class RunningMean(nn.Module):  # in-place buffer update whose value is used
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(6))

        def forward(self, x: Any) -> Any:
            self.mean.mul_(0.9).add_(0.1 * x.mean(0))  # type: ignore[operator]
            return x - self.mean

    class Branch(nn.Module):
        def forward(self, x: Any) -> Any:
            if x.sum() > 0:
                return x * 2
            return x - 1

    class Index(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 4)

        def forward(self, x: Any, idx: Any) -> Any:
            return self.emb(idx).sum(1) + torch.gather(x, 1, idx % 6).float().sum(1, keepdim=True)

    class Masked(nn.Module):
        def forward(self, x: Any, mask: Any) -> Any:
            return x.masked_fill(~mask, 0.0).sum(-1)

    class Reshape(nn.Module):  # batch-1 sample, reshape that folds the batch
        def forward(self, x: Any) -> Any:
            return x.view(x.shape[0], 2, 3).softmax(-1).reshape(-1, 6)

    class Lstm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(6, 5, batch_first=True)

        def forward(self, x: Any, h0: Any, c0: Any) -> Any:
            out, (h, c) = self.lstm(x, (h0, c0))
            return out, h, c

    class Scalar(nn.Module):
        def forward(self, x: Any) -> Any:
            return (x ** 2).mean()

    class Unique(nn.Module):  # a value-dependent output size
        def forward(self, x: Any) -> Any:
            return torch.unique(x.round())

    class Eig(nn.Module):  # no ONNX operator for it
        def forward(self, x: Any) -> Any:
            return torch.linalg.eigvalsh(x @ x.transpose(-1, -2))

    class Bf16(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 3)

        def forward(self, x: Any) -> Any:
            return self.a(x)

    class Float64(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 3).double()

        def forward(self, x: Any) -> Any:
            return self.a(x.double())

    def g(b: int, s: int) -> Any:
        return torch.Generator().manual_seed(b * 31 + s)

    simple = [("trap-dict-output", DictOut, x), ("trap-tuple-output", TupleOut, x),
              ("trap-none-output", NoneOut, x), ("trap-step-counter", Counter, x),
              ("trap-running-mean", RunningMean, x), ("trap-data-branch", Branch, x),
              ("trap-scalar-output", Scalar, x), ("trap-float64", Float64, x)]
    for name, cls, sample in simple:
        case(name, sample, "trap")(seeded_build(cls))
    case("trap-kwargs-only", lambda b, s: {"features": x(b, s), "scale": torch.tensor(2.0)},
         "trap")(lambda: (torch.manual_seed(0), KwOnly().eval())[1])
    # A plain module's axes other than the batch are fixed unless dynamic_axes= names them:
    # the second check changes the batch only.
    case("trap-int64-index", lambda b, s: (x(b, s), torch.randint(0, 50, (b, s), generator=g(
        b, s))), "trap", second=(3, 0))(lambda: (torch.manual_seed(0), Index().eval())[1])
    case("trap-bool-mask", lambda b, s: (torch.randn(b, s, generator=g(b, s)),
                                         torch.rand(b, s, generator=g(b, 1)) > 0.5), "trap",
         second=(3, 0))(lambda: Masked().eval())
    case("trap-batch1-then-3", lambda b, s: x(b, s), "trap", second=(3, 0))(
        lambda: Reshape().eval())
    CASES["trap-batch1-then-3"].sample = lambda b, s: x(1 if s == 5 else b, s)
    case("trap-lstm-state", lambda b, s: (torch.randn(b, s, 6, generator=g(b, s)),
                                          torch.zeros(1, b, 5), torch.zeros(1, b, 5)), "trap")(
        lambda: (torch.manual_seed(0), Lstm().eval())[1])
    case("trap-bf16", x, "trap")(lambda: (torch.manual_seed(0), Bf16().to(torch.bfloat16)
                                          .eval())[1])
    CASES["trap-bf16"].sample = lambda b, s: x(b, s).to(torch.bfloat16)
    register_more_traps(x, g)
    case("unsupported-unique", x, "unsupported", expect="refused")(lambda: Unique().eval())
    case("unsupported-eigvalsh", lambda b, s: torch.randn(b, 3, 3, generator=g(b, s)),
         "unsupported", expect="refused")(lambda: Eig().eval())


def register_more_traps(x: Callable[[int, int], Any], g: Callable[[int, int], Any]) -> None:
    from collections import namedtuple

    import torch
    from torch import nn

    Pair = namedtuple("Pair", ["mean", "spread"])

    class NamedTupleOut(nn.Module):
        def forward(self, x: Any) -> Any:
            return Pair(x.mean(-1), x.std(-1))

    class OptionalArg(nn.Module):  # the sample gives x only; mask defaults to None
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 3)

        def forward(self, x: Any, mask: Any = None) -> Any:
            y = self.a(x)
            return y if mask is None else y * mask

    class PerRowLoop(nn.Module):  # a Python loop over the batch
        def forward(self, x: Any) -> Any:
            return torch.stack([x[i] * (i + 1) for i in range(x.shape[0])])

    class FastPathEncoder(nn.Module):  # nn.TransformerEncoder's eval fast path
        def __init__(self) -> None:
            super().__init__()
            layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

        def forward(self, x: Any, pad: Any) -> Any:
            return self.enc(x, src_key_padding_mask=pad)

    class Mha(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.att = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x: Any) -> Any:
            return self.att(x, x, x, need_weights=True)

    class Gru(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(6, 5, num_layers=2, bidirectional=True, batch_first=True)

        def forward(self, x: Any) -> Any:
            return self.gru(x)[0]

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bag = nn.EmbeddingBag(30, 4, mode="mean")

        def forward(self, idx: Any) -> Any:
            return self.bag(idx)

    class TopK(nn.Module):
        def forward(self, x: Any) -> Any:
            values, index = x.topk(3, dim=-1)
            return values, index, x.argsort(-1), x.cumsum(-1)

    class Item(nn.Module):  # a Python number taken from a tensor
        def forward(self, x: Any) -> Any:
            return x / float(x.abs().max().item())

    class InPlaceInput(nn.Module):  # writes into its own input
        def forward(self, x: Any) -> Any:
            x.mul_(2)
            return x + 1

    class Hooked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 3)
            self.a.register_forward_hook(lambda mod, inp, out: out * 10)

        def forward(self, x: Any) -> Any:
            return self.a(x)

    class Interp(nn.Module):
        def forward(self, x: Any) -> Any:
            return nn.functional.interpolate(x, scale_factor=2, mode="bilinear")

    class Scripted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = torch.jit.script(nn.Sequential(nn.Linear(6, 4), nn.ReLU()))

        def forward(self, x: Any) -> Any:
            return self.inner(x) + 1

    class Half(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(6, 3)

        def forward(self, x: Any) -> Any:
            return self.a(x)

    class NestedDictIn(nn.Module):
        def forward(self, batch: Any) -> Any:
            return batch["a"] * batch["b"]["c"]

    def seq(b: int, s: int) -> Any:
        return torch.randn(b, s, 6, generator=g(b, s))

    def seq8(b: int, s: int) -> Any:
        return torch.randn(b, s, 8, generator=g(b, s))

    seeded = [("trap-namedtuple-output", NamedTupleOut, x, (3, 7)),
              ("trap-optional-arg", OptionalArg, x, (3, 7)),
              ("trap-python-loop-over-batch", PerRowLoop, x, (3, 7)),
              ("trap-mha-weights", Mha, seq8, (3, 0)),
              ("trap-gru-bidirectional", Gru, seq, (3, 7)),
              ("trap-topk-argsort", TopK, x, (3, 7)),
              ("trap-item-scale", Item, x, (3, 7)),
              ("trap-forward-hook", Hooked, x, (3, 7)),
              ("trap-scripted-submodule", Scripted, x, (3, 7))]
    for name, cls, sample, second in seeded:
        case(name, sample, "trap", second=second)(seeded_build(cls))
    case("trap-transformer-fastpath", lambda b, s: (
        seq8(b, s), torch.arange(s).expand(b, s) >= s - 1), "trap", second=(3, 0))(
        lambda: (torch.manual_seed(0), FastPathEncoder().eval())[1])
    case("trap-embedding-bag", lambda b, s: torch.randint(0, 30, (b, s), generator=g(b, s)),
         "trap", second=(3, 0))(lambda: (torch.manual_seed(0), Bag().eval())[1])
    case("trap-inplace-input", x, "trap")(lambda: InPlaceInput().eval())
    case("trap-interpolate", lambda b, s: torch.rand(b, 2, 5, 5, generator=g(b, s)), "trap",
         second=(3, 0))(lambda: Interp().eval())
    case("trap-float16", lambda b, s: x(b, s).half(), "trap", second=(3, 0))(
        lambda: (torch.manual_seed(0), Half().half().eval())[1])
    case("trap-nested-dict-input", lambda b, s: ({"a": x(b, s), "b": {"c": x(b, s + 1)}},),
         "trap", second=(3, 0))(lambda: NestedDictIn().eval())


def register_detection() -> None:
    def ssd() -> Any:
        import torch
        from torchvision.models.detection import ssdlite320_mobilenet_v3_large

        torch.manual_seed(0)
        model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                              num_classes=3, detections_per_img=20)
        for m in model.modules():  # torchvision's own init ties every score (no signal)
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        return model.eval()

    def images(b: int, s: int) -> Any:
        import torch

        return [torch.rand(3, 96 + 8 * i, 112, generator=torch.Generator().manual_seed(i + s))
                for i in range(b)]

    case("torchvision-ssdlite", images, "detection", kind="detection", second=(3, 0))(ssd)


def register_all() -> None:
    register_hf()
    try:
        import timm  # noqa: F401
    except ImportError:
        pass
    else:
        register_timm()
    register_traps()
    register_detection()


# -- one case ---------------------------------------------------------------------------------
def flat(value: Any) -> list[Any]:
    """A model output as a flat list of tensors (dicts by insertion, tuples in order, no None)."""
    import torch

    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [value]
    if hasattr(value, "to_tuple"):
        value = value.to_tuple()
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in flat(v)]
    return []


def call(model: Any, sample: Any) -> Any:
    import torch

    with torch.no_grad():
        if isinstance(sample, dict):
            return model(**sample)
        if isinstance(sample, tuple):
            return model(*sample)
        return model(sample)


def leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [t for v in value.values() for t in leaves(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in leaves(v)]
    return [value]


def cloned(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: cloned(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cloned(v) for v in value)
    return value


def numpy_inputs(m: Any, sample: Any) -> tuple[list[Any], dict[str, Any]]:
    import torch

    def arr(t: Any) -> Any:
        return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
    if isinstance(sample, dict) and all(isinstance(v, torch.Tensor) for v in sample.values()):
        return [], {k: arr(v) for k, v in sample.items()}
    return [arr(t) for t in leaves(sample)], {}


def check_forward(c: Case, model: Any, m: Any) -> str | None:
    """m.run against the torch model on a second input; None when they agree."""
    import numpy as np

    second = c.sample(*c.second) if c.second[1] else c.sample(c.second[0], 5)
    want = [t.detach().float().numpy() for t in flat(call(model, cloned(second)))]
    args, kw = numpy_inputs(m, second)
    got = m.run(*args, **kw)
    got = list(got) if isinstance(got, tuple) else [got]
    if len(got) != len(want):
        return f"{len(got)} ONNX outputs for the torch model's {len(want)}"
    for name, g_, w in zip(m.output_names, got, want, strict=True):
        if np.shape(g_) != w.shape:
            return f"{name}: shape {np.shape(g_)} vs torch {w.shape} at {c.second}"
        scale = float(np.abs(w).max()) if w.size else 0.0
        diff = float(np.abs(np.asarray(g_, np.float64) - w).max()) if w.size else 0.0
        if diff > 1e-3 * max(1.0, scale):
            return f"{name}: max abs diff {diff:.3g} vs torch at {c.second}"
    return None


def check_generate(c: Case, model: Any, m: Any) -> str | None:
    import numpy as np
    import torch

    prompt = c.sample(2, 6)
    with torch.no_grad():
        want = model.generate(**prompt, max_new_tokens=6, do_sample=False).numpy()
    got = np.asarray(m.generate(prompt["input_ids"].numpy(),
                                attention_mask=prompt["attention_mask"].numpy(),
                                max_new_tokens=6))
    if got.shape != want.shape or not (got == want).all():
        return f"greedy tokens differ: {got.tolist()} vs transformers {want.tolist()}"
    return None


def check_detection(c: Case, model: Any, m: Any) -> str | None:
    import numpy as np

    images = c.sample(*c.second) if c.second[1] else c.sample(c.second[0], 5)
    want = call(model, images)
    got = m.run([im.numpy() for im in images], as_dict=True)
    for i, w in enumerate(want):
        order = np.argsort(-got[f"scores_{i}"])
        theirs = np.argsort(-w["scores"].numpy())
        if len(order) != len(theirs):
            return f"image {i}: {len(order)} detections vs torch {len(theirs)}"
        diff = np.abs(got[f"boxes_{i}"][order] - w["boxes"].numpy()[theirs]).max()
        if diff > 1e-2:
            return f"image {i}: boxes differ by {diff:.3g}"
    return None


def run_case(name: str) -> dict[str, Any]:
    import warnings

    warnings.simplefilter("ignore")
    import onnxbridge
    from onnxbridge.errors import OnnxBridgeError

    c = CASES[name]
    started = time.perf_counter()
    result: dict[str, Any] = {"case": name, "group": c.group}
    try:
        model = c.build()
        sample = c.sample(1 if c.kind == "detection" else 2, 5)
        kw: dict[str, Any] = {"task": "forward"} if c.kind == "forward-task" else {}
        given = cloned(sample)
        m = onnxbridge.to_onnx(model, sample, **kw)
        if m.parity is not None and not m.parity.passed:
            result.update(verdict="failed", detail="parity report did not pass (no error)")
        elif any(not a.equal(b) for a, b in zip(leaves(given), leaves(sample), strict=True)):
            result.update(verdict="failed", detail="to_onnx changed the sample's values")
        else:
            check = {"generate": check_generate, "seq2seq-generate": check_generate,
                     "detection": check_detection}.get(c.kind, check_forward)
            announced = [n for n in (m.parity.notes if m.parity is not None else [])
                         if n.startswith("kept at the sample's size")]
            try:
                problem = check(c, model, m)
            except OnnxBridgeError as exc:
                if not announced:  # a size silently fixed
                    raise RuntimeError(f"converted, but the second input failed:"
                                       f" {type(exc).__name__}: {exc}") from exc
                # A size the conversion said it had to fix, and the run names: refused, clearly.
                raise type(exc)(f"converted at the sample's size ({announced[0][:90]}...);"
                                f" the second input: {exc}") from exc
            except Exception as exc:  # converted, then failed on the second input
                problem = f"converted, but the second input failed: {type(exc).__name__}: {exc}"
            result.update(verdict="failed" if problem else "passed",
                          detail=problem or (m.parity.summary() if m.parity is not None
                                             and hasattr(m.parity, "summary") else ""))
    except OnnxBridgeError as exc:
        result.update(verdict="refused", detail=f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" ({tb[-1].filename.rsplit('/', 2)[-1]}:{tb[-1].lineno})" if tb else ""
        result.update(verdict="failed", detail=f"{type(exc).__name__}{where}: {exc}")
    if c.expect == "refused":  # converting it right is fine too
        result["ok"] = result["verdict"] in ("refused", "passed")
    else:
        result["ok"] = result["verdict"] == "passed"
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="case names (or substrings) to run")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one case, in this process
    parser.add_argument("--out", help="append the markdown table to this file")
    parser.add_argument("--json", help="write the results as JSON lines here")
    parser.add_argument("--timeout", type=int, default=420)
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    register_all()
    if args.list:
        print("\n".join(CASES))
        return
    if args.case:
        print("RESULT " + json.dumps(run_case(args.case)), flush=True)
        return
    names = [n for n in CASES if not args.only or any(o in n for o in args.only)]
    results = []
    for name in names:
        try:
            proc = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True,
                                  text=True, timeout=args.timeout,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            result = json.loads(line[-1][7:]) if line else {
                "case": name, "group": CASES[name].group, "verdict": "failed", "ok": False,
                "detail": f"process died (rc {proc.returncode}): {proc.stderr[-300:]}"}
        except subprocess.TimeoutExpired:
            result = {"case": name, "group": CASES[name].group, "verdict": "failed",
                      "ok": False, "detail": f"timed out after {args.timeout} s"}
        results.append(result)
        print(f"{name:28s} {result['verdict']:8s} {result.get('seconds', '-'):>6} s "
              f"{str(result.get('detail', ''))[:300]}", flush=True)
        if args.json:
            with open(args.json, "a", encoding="utf-8") as f:
                f.write(json.dumps(result) + "\n")
    ok = sum(bool(r["ok"]) for r in results)
    table = [f"{ok}/{len(results)} as expected (passed, or refused where the operator has no"
             " ONNX form)", "", "| case | group | verdict | s | detail |", "|---|---|---|---|---|"]
    for r in results:
        detail = str(r.get("detail", "")).replace("|", "/").replace("\n", " ")[:160]
        table.append(f"| {r['case']} | {r['group']} | {r['verdict']} | {r.get('seconds', '-')}"
                     f" | {detail} |")
    text = "\n".join(table)
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n\n")


if __name__ == "__main__":
    main()
