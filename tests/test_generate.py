"""Text generation: a causal LM exported with a key/value cache, the loop on onnxruntime.

Tiny random-weight configs, token ids only (no tokenizer, nothing downloaded); every result is
compared with transformers' own ``generate``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import onnxbridge  # noqa: E402
from onnxbridge import ConversionError, InputError  # noqa: E402
from onnxbridge.generate import (  # noqa: E402
    GenerativeModel,
    _filter_logits,
    _greedy_or_sampled,
    _StepBinding,
)


def tiny_llama() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128)
    return transformers.LlamaForCausalLM(config).eval()


def reference(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor | None,
              n: int) -> np.ndarray:
    kwargs = {} if mask is None else {"attention_mask": mask}
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0,
                             eos_token_id=None, **kwargs)
    return out.numpy()


@pytest.fixture(scope="module")
def llama() -> tuple[torch.nn.Module, GenerativeModel]:
    model = tiny_llama()
    torch.manual_seed(1)
    m = onnxbridge.to_onnx(model, torch.randint(3, 128, (2, 6)))  # task inferred
    assert isinstance(m, GenerativeModel)
    return model, m


@pytest.mark.slow
def test_decoder_signature_and_cached_verification(
        llama: tuple[torch.nn.Module, GenerativeModel]) -> None:
    _, m = llama
    shapes = {s.name: s.shape for s in m.inputs}
    assert shapes["input_ids"] == ("batch", "sequence")
    assert shapes["past_key_values.0.key"] == ("batch", 2, "past_sequence", 8)
    assert m.output_names[0] == "logits"
    assert m.output_names[1:] == [f"present.{i}.{k}" for i in range(2) for k in ("key", "value")]
    assert m.parity.passed
    # prompt + 3 cached steps + the step after a padded prompt, 5 outputs each
    assert len(m.parity.outputs) == 5 * 5
    assert m.metadata["onnxbridge.task"] == "text-generation"


@pytest.mark.slow
def test_greedy_matches_transformers_token_for_token_with_padding(
        llama: tuple[torch.nn.Module, GenerativeModel], tmp_path: Path) -> None:
    model, m = llama
    torch.manual_seed(2)
    ids = torch.randint(3, 128, (3, 7))
    assert np.array_equal(m.generate(ids, max_new_tokens=16, eos_token_id=None),
                          reference(model, ids, None, 16))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    mask[2, :1] = 0
    got = m.generate(ids.numpy(), attention_mask=mask.numpy(), max_new_tokens=16,
                     eos_token_id=None)
    assert np.array_equal(got, reference(model, ids, mask, 16))
    # token ids alone give the prompt's logits, as the plain forward export did
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.numpy()
    got_logits = m.run(input_ids=ids.numpy(), attention_mask=mask.numpy())
    real = mask.numpy().astype(bool)  # padding positions hold no meaning
    np.testing.assert_allclose(got_logits[real], logits[real], atol=1e-4, rtol=1e-3)
    # saved and loaded, it is still a generator
    path = m.save(tmp_path / "llama.onnx")
    again = onnxbridge.load(path)
    assert isinstance(again, GenerativeModel)
    assert np.array_equal(again.generate(ids, max_new_tokens=4, eos_token_id=None),
                          reference(model, ids, None, 4))


def _cuda_ready() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers() and \
        bool(torch.cuda.is_available())


@pytest.mark.skipif(not _cuda_ready(), reason="needs onnxruntime-gpu and a CUDA device")
def test_greedy_on_cuda_keeps_the_cache_on_the_gpu_and_matches_transformers(
        llama: tuple[torch.nn.Module, GenerativeModel]) -> None:
    """Run on a GPU machine by .ci/gpu/check.sh: the first H200 run found tokens going wrong
    after the first new one (a host input bound once is copied to the device once)."""
    from onnxbridge.generate import _cache_device

    model, m = llama
    torch.manual_seed(3)
    ids = torch.randint(3, 128, (2, 5))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    assert _cache_device(m.session("cuda")) == ("cuda", 0)
    got = m.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=None,
                     providers="cuda")
    assert np.array_equal(got, reference(model, ids, mask, 12))


@pytest.mark.slow
def test_eos_stops_a_row_and_pads_it(llama: tuple[torch.nn.Module, GenerativeModel]) -> None:
    model, m = llama
    ids = torch.randint(3, 128, (2, 5), generator=torch.Generator().manual_seed(3))
    free = m.generate(ids, max_new_tokens=8, eos_token_id=None)
    eos = int(free[0, 7])  # the token row 0 emits third
    got = m.generate(ids, max_new_tokens=8, eos_token_id=eos, pad_token_id=0)
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=eos,
                              pad_token_id=0).numpy()
    assert np.array_equal(got, want)
    # several end ids: each row stops at whichever comes first (row 1 at its own 2nd token)
    both = [eos, int(free[1, 6])]
    got = m.generate(ids, max_new_tokens=8, eos_token_id=both, pad_token_id=0)
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=both,
                              pad_token_id=0).numpy()
    assert np.array_equal(got, want)


@pytest.mark.slow
def test_native_and_public_step_bindings_match_transformers(
        llama: tuple[torch.nn.Module, GenerativeModel]) -> None:
    # the loop calls onnxruntime's native IOBinding per step; the public methods are the
    # fallback where it is missing: both must give transformers' tokens, padding included
    model, m = llama
    ids = torch.randint(3, 128, (2, 5), generator=torch.Generator().manual_seed(7))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    want = reference(model, ids, mask, 12)
    session = m.session()
    assert _StepBinding(session, session.io_binding(), "cpu", 0).raw is not None
    assert _StepBinding(session, session.io_binding(), "cpu", 0, native=False).raw is None
    for native in (True, False):
        got = _greedy_or_sampled(session, ids.numpy(), mask.numpy(), 12, True, set(), 0,
                                 False, 1.0, None, None, np.random.default_rng(0),
                                 native=native)
        assert np.array_equal(got, want), native


@pytest.mark.slow
def test_gpt2_generation_matches(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4,
                                     n_positions=128, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(3, 128, (2, 5))
    m = onnxbridge.to_onnx(model, {"input_ids": ids}, task="text-generation")
    assert np.array_equal(m.generate(ids, max_new_tokens=10, eos_token_id=None),
                          reference(model, ids, None, 10))


def test_sampling_filters_follow_top_k_and_top_p() -> None:
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert np.isfinite(_filter_logits(logits, 2, None)).sum() == 2
    kept = np.isfinite(_filter_logits(logits, None, 0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.7
    assert np.isfinite(_filter_logits(logits, None, 0.1)).sum() == 1  # the top token stays


def test_task_errors_are_clear() -> None:
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ConversionError, match="task='nonsense' is not one of"):
        onnxbridge.to_onnx(model, torch.randn(1, 2), task="nonsense")
    with pytest.raises(ConversionError, match="not a transformers encoder-decoder model"):
        onnxbridge.to_onnx(model, torch.randn(1, 2), task="text2text-generation")


def test_generate_refuses_bad_ids() -> None:
    import onnx

    graph = onnx.helper.make_graph([], "g", [], [])
    m = GenerativeModel(onnx.helper.make_model(graph))
    with pytest.raises(InputError, match="no text-generation metadata"):
        m.generate(np.zeros((1, 3), np.int64))


# Fused attention (onnxbridge/plugins/_genai_fuse.py): the default export of a Llama-like decoder
# runs GroupQueryAttention; fuse=False keeps torch.onnx's graph. Both must match transformers.


def _ops(m: GenerativeModel) -> dict[str, int]:
    return {op.replace("com.microsoft::", ""): n for op, n in m.operator_histogram().items()}


@pytest.mark.slow
def test_fused_llama_holds_group_query_attention(
        llama: tuple[torch.nn.Module, GenerativeModel]) -> None:
    model, m = llama
    ops = _ops(m)
    assert ops.get("GroupQueryAttention") == 2, ops  # one per layer
    assert ops.get("RotaryEmbedding") == 4, ops  # queries and keys
    assert ops.get("SkipSimplifiedLayerNormalization", 0) >= 2, ops
    assert "Softmax" not in ops and "Trilu" not in ops, ops  # no unfused attention left
    assert any("fused for onnxruntime" in note for note in m.parity.notes)
    assert m.generation_info["max_positions"] == 128
    # cached steps go through the fused cache: a long continuation still matches
    ids = torch.randint(3, 128, (1, 5), generator=torch.Generator().manual_seed(4))
    assert np.array_equal(m.generate(ids, max_new_tokens=40, eos_token_id=None),
                          reference(model, ids, None, 40))
    with pytest.raises(InputError, match="fuse=False"):
        m.generate(ids, max_new_tokens=124, eos_token_id=None)  # 5 + 124 > 128 positions


@pytest.mark.slow
def test_fused_qwen2_matches_transformers_with_padding() -> None:
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128)
    model = transformers.Qwen2ForCausalLM(config).eval()  # q/k/v projections with bias
    ids = torch.randint(3, 128, (2, 6), generator=torch.Generator().manual_seed(5))
    m = onnxbridge.to_onnx(model, ids, task="text-generation")
    ops = _ops(m)
    assert ops.get("GroupQueryAttention") == 2, ops
    # q, k and v (with their biases) from one MatMul + Add per layer, split for the rotary;
    # 2 layers x (qkv, o, gate, up, down) + lm_head
    assert ops.get("MatMul") == 11 and ops.get("Split") == 2, ops
    # every RMS norm fused, the first one (no residual yet) included
    assert ops.get("SkipSimplifiedLayerNormalization") == 5 and "ReduceMean" not in ops, ops
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    got = m.generate(ids, attention_mask=mask, max_new_tokens=20, eos_token_id=None)
    assert np.array_equal(got, reference(model, ids, mask, 20))


@pytest.mark.slow
def test_fuse_false_keeps_the_exported_graph() -> None:
    model = tiny_llama()
    ids = torch.randint(3, 128, (1, 6), generator=torch.Generator().manual_seed(6))
    m = onnxbridge.to_onnx(model, ids, task="text-generation", fuse=False)
    ops = _ops(m)
    assert "GroupQueryAttention" not in ops and "Softmax" in ops, ops
    assert "max_positions" not in m.generation_info
    assert np.array_equal(m.generate(ids, max_new_tokens=12, eos_token_id=None),
                          reference(model, ids, None, 12))


def test_weights_only_dtype_is_refused_for_generation_naming_compute_dtype() -> None:
    # dtype= keeps float32 edges, but a generation export's edges include the cache: before,
    # the option was dropped without a word and the export ran in the source's dtype.
    model = tiny_llama().to(torch.bfloat16)
    with pytest.raises(ConversionError, match="compute_dtype='float32' instead"):
        onnxbridge.to_onnx(model, torch.randint(3, 128, (1, 4)), task="text-generation",
                           dtype="float32")
    with pytest.raises(ConversionError, match="compute_dtype='float16' instead"):
        onnxbridge.to_onnx(model, torch.randint(3, 128, (1, 4)), task="text-generation",
                           dtype=torch.float16)


# Round 4: one preallocated cache shared by past and present (fused graphs on CPU), and the
# smaller attention-bias subgraph (GroupQueryAttention masks the future itself; the bias hides
# padding only). Both are checked against transformers' tokens, left padding included.


@pytest.mark.slow
def test_shared_cache_and_growing_cache_match_transformers(
        llama: tuple[torch.nn.Module, GenerativeModel]) -> None:
    from onnxbridge.generate import _shared_cache_possible

    model, m = llama
    session = m.session("cpu")
    assert m.generation_info.get("fused") and _shared_cache_possible(session, True)
    assert not _shared_cache_possible(session, False)  # the exported graph's cache grows
    ids = torch.randint(3, 128, (3, 6), generator=torch.Generator().manual_seed(8))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    mask[2, :4] = 0
    want = reference(model, ids, mask, 24)
    for shared in (True, False):
        got = _greedy_or_sampled(session, ids.numpy(), mask.numpy(), 24, True, set(), 0,
                                 False, 1.0, None, None, np.random.default_rng(0),
                                 shared=shared)
        assert np.array_equal(got, want), shared
    # sampling goes through the same cache: one seed, the same draws either way
    sampled = [_greedy_or_sampled(session, ids.numpy(), mask.numpy(), 12, True, set(), 0, True,
                                  0.8, 20, 0.9, np.random.default_rng(5), shared=shared)
               for shared in (True, False)]
    assert np.array_equal(sampled[0], sampled[1])


@pytest.mark.slow
def test_fused_bias_subgraph_is_small_and_keeps_left_padding(
        llama: tuple[torch.nn.Module, GenerativeModel]) -> None:
    model, m = llama
    ops = _ops(m)
    # the padding bias: Mul, ArgMax, Cast (seqlens_k), Shape, Cast (total length), Unsqueeze,
    # Gather, Unsqueeze, Shape, Expand; no causal mask of our own (no Range, no LessOrEqual)
    assert "Range" not in ops and "LessOrEqual" not in ops and "Where" not in ops, ops
    assert len(m.proto.graph.node) <= 41, ops
    ids = torch.randint(3, 128, (2, 8), generator=torch.Generator().manual_seed(9))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # most of row 0 is padding
    assert np.array_equal(m.generate(ids, mask, max_new_tokens=20, eos_token_id=None),
                          reference(model, ids, mask, 20))


@pytest.mark.slow
def test_small_decoders_generate_on_one_thread_by_default(
        llama: tuple[torch.nn.Module, GenerativeModel], monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxbridge.generate import SMALL_DECODER, _generation_threads

    model, m = llama
    info = m.generation_info
    assert info["parameters"] == sum(p.numel() for p in model.parameters()) < SMALL_DECODER
    monkeypatch.delenv("ONNXBRIDGE_THREADS", raising=False)
    assert _generation_threads(info, None) == 1
    assert _generation_threads(info, 2) == 2  # the caller's choice wins
    assert _generation_threads({**info, "parameters": SMALL_DECODER}, None) is None
    monkeypatch.setenv("ONNXBRIDGE_THREADS", "2")
    assert _generation_threads(info, None) is None  # the session reads the variable
    monkeypatch.delenv("ONNXBRIDGE_THREADS")
    ids = torch.randint(3, 128, (1, 5), generator=torch.Generator().manual_seed(10))
    assert np.array_equal(m.generate(ids, max_new_tokens=6, eos_token_id=None),
                          reference(model, ids, None, 6))


@pytest.mark.slow
def test_sliding_window_cache_with_left_padding_matches_transformers() -> None:
    # A sliding-window model's cache keeps only the last window-1 positions, so each step's
    # mask must be the columns of those positions: with the whole mask, a left-padded row's
    # logits were off by ~0.1 as soon as the window slid (greedy and beam tokens then parted).
    torch.manual_seed(0)
    config = transformers.MistralConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
        sliding_window=8)
    model = transformers.MistralForCausalLM(config).eval()
    ids = torch.randint(3, 128, (3, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    mask[2, :4] = 0
    m = onnxbridge.to_onnx(model, torch.randint(3, 128, (2, 6)))
    got = m.generate(ids, mask, max_new_tokens=20, eos_token_id=None)
    np.testing.assert_array_equal(got, reference(model, ids, mask, 20))
    with torch.no_grad():
        beams = model.generate(ids, attention_mask=mask, max_new_tokens=12, num_beams=3,
                               do_sample=False, pad_token_id=0, eos_token_id=None).numpy()
    np.testing.assert_array_equal(
        m.generate(ids, mask, max_new_tokens=12, num_beams=3, eos_token_id=None), beams)
