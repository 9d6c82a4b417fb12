"""Text-to-text generation: an encoder and a decoder with a cache, the loop on onnxruntime.

Tiny random-weight T5 and BART (no tokenizer, nothing downloaded); every result is compared
with transformers' own ``generate`` on the same torch model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import onnxbridge  # noqa: E402
from onnxbridge import ConversionError, InputError, LoadError  # noqa: E402
from onnxbridge.generate import Seq2SeqModel  # noqa: E402


def tiny_bart() -> torch.nn.Module:
    torch.manual_seed(0)
    # init_std 0.5: a random model that does not repeat one token forever (a cache bug shows)
    config = transformers.BartConfig(
        vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_position_embeddings=64, init_std=0.5)
    return transformers.BartForConditionalGeneration(config).eval()


def tiny_t5() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                   num_heads=4, decoder_start_token_id=0)
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():  # T5's own init makes a random model repeat one token
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.5)
    return model


def ids_and_mask() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 96, (2, 7), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0  # the second row is 4 tokens, padded on the right
    return ids, mask


def reference(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor | None, n: int,
              **kwargs: object) -> np.ndarray:
    if mask is not None:
        kwargs["attention_mask"] = mask
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, **kwargs)
    return out.numpy()


@pytest.fixture(scope="module")
def bart() -> tuple[torch.nn.Module, Seq2SeqModel]:
    model = tiny_bart()
    ids, _ = ids_and_mask()
    m = onnxbridge.to_onnx(model, ids)  # task inferred from BartForConditionalGeneration
    assert isinstance(m, Seq2SeqModel)
    return model, m


@pytest.mark.slow
def test_bart_greedy_matches_transformers_with_padding(
        bart: tuple[torch.nn.Module, Seq2SeqModel]) -> None:
    model, m = bart
    ids, mask = ids_and_mask()
    # The model's own eos, pad, decoder start and forced eos (BART forces eos at the end).
    for given in (None, mask):
        want = reference(model, ids, given, 12)
        got = m.generate(ids, given, max_new_tokens=12)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    assert len(set(want[0].tolist())) > 3  # the tokens vary, so a stale cache would show
    # torch tensors, lists and numpy arrays are all token ids
    np.testing.assert_array_equal(m.generate(ids.tolist(), mask.numpy(), max_new_tokens=12), want)


@pytest.mark.slow
def test_bart_bundle_signature_verification_and_metadata(
        bart: tuple[torch.nn.Module, Seq2SeqModel]) -> None:
    _, m = bart
    enc = {s.name: s.shape for s in m.encoder.inputs}
    assert enc == {"input_ids": ("batch", "encoder_sequence"),
                   "attention_mask": ("batch", "encoder_sequence")}
    assert m.encoder.output_names == ["encoder_hidden_states"] + [
        f"present.{i}.encoder.{k}" for i in range(2) for k in ("key", "value")]
    dec = {s.name: s.shape for s in m.inputs}
    assert dec["decoder_input_ids"] == ("batch", "decoder_sequence")
    assert dec["encoder_attention_mask"] == ("batch", "encoder_sequence")
    assert dec["past_key_values.1.decoder.key"] == ("batch", 4, "past_decoder_sequence", 8)
    assert dec["past_key_values.1.encoder.value"] == ("batch", 4, "encoder_sequence", 8)
    assert m.output_names == ["logits"] + [
        f"present.{i}.decoder.{k}" for i in range(2) for k in ("key", "value")]
    assert m.parity.passed
    names = [o.name for o in m.parity.outputs]
    # decoder: first step + 3 cached steps on the sample, first + 1 cached on a padded batch;
    # encoder: the sample and other ids/sizes, 5 outputs each
    assert names.count("logits") == 6
    assert names.count("encoder: present.1.encoder.value") == 2
    assert {o.batch for o in m.parity.outputs if o.name.startswith("encoder:")} == {2, 3}
    assert m.metadata["onnxbridge.task"] == "text2text-generation"
    assert m.encoder.metadata["onnxbridge.role"] == "encoder"
    info = m.generation_info
    assert (info["decoder_start_token_id"], info["forced_eos_token_id"]) == (2, 2)
    with pytest.raises(ValueError, match="save it with save"):
        m.to_bytes()


@pytest.mark.slow
def test_bart_saved_folder_loads_as_a_bundle(
        bart: tuple[torch.nn.Module, Seq2SeqModel], tmp_path: Path) -> None:
    model, m = bart
    folder = m.save(tmp_path / "bart")
    assert sorted(p.name for p in folder.iterdir()) == ["decoder.onnx", "encoder.onnx"]
    back = onnxbridge.load(folder)
    assert isinstance(back, Seq2SeqModel)
    assert back.parity is not None and back.parity.passed
    ids, mask = ids_and_mask()
    np.testing.assert_array_equal(back.generate(ids, mask, max_new_tokens=8),
                                  reference(model, ids, mask, 8))
    (folder / "encoder.onnx").unlink()
    with pytest.raises(LoadError, match="encoder.onnx"):
        onnxbridge.load(folder)
    with pytest.raises(InputError, match="folder"):
        m.save(folder / "decoder.onnx")


@pytest.mark.slow
def test_bart_decoder_prompt_eos_and_top_k_one_sampling(
        bart: tuple[torch.nn.Module, Seq2SeqModel]) -> None:
    model, m = bart
    ids, mask = ids_and_mask()
    greedy = reference(model, ids, mask, 10)
    # A decoder prompt (the start token and the first two generated ones) continues the same.
    prompt = greedy[:, :3]
    np.testing.assert_array_equal(
        m.generate(ids, mask, decoder_input_ids=prompt, max_new_tokens=7),
        reference(model, ids, mask, 7, decoder_input_ids=torch.from_numpy(prompt)))
    # An eos that row 0 meets early: that row stops and is padded, as in transformers.
    eos = int(greedy[0, 3])
    np.testing.assert_array_equal(m.generate(ids, mask, max_new_tokens=10, eos_token_id=eos),
                                  reference(model, ids, mask, 10, eos_token_id=eos))
    # Sampling from the top 1 token is greedy.
    np.testing.assert_array_equal(
        m.generate(ids, mask, max_new_tokens=10, do_sample=True, top_k=1, seed=0), greedy)


@pytest.mark.slow
def test_t5_greedy_matches_transformers_with_padding() -> None:
    model = tiny_t5()
    ids, mask = ids_and_mask()
    m = onnxbridge.to_onnx(model, {"input_ids": ids, "attention_mask": mask},
                           task="text2text-generation")
    assert isinstance(m, Seq2SeqModel) and m.parity.passed
    for given in (None, mask):
        want = reference(model, ids, given, 12)
        np.testing.assert_array_equal(m.generate(ids, given, max_new_tokens=12), want)
    assert len(set(want.ravel().tolist())) > 4  # not one token repeated


@pytest.mark.slow
def test_a_config_without_decoder_start_starts_from_bos_as_transformers_does() -> None:
    # MBart leaves decoder_start_token_id unset: transformers starts from bos_token_id (0),
    # not from the pad id (1).
    torch.manual_seed(0)
    config = transformers.MBartConfig(
        vocab_size=96, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37,
        max_position_embeddings=64)
    assert config.decoder_start_token_id is None and config.bos_token_id != config.pad_token_id
    model = transformers.MBartForConditionalGeneration(config).eval()
    ids, mask = ids_and_mask()
    m = onnxbridge.to_onnx(model, {"input_ids": ids, "attention_mask": mask})
    assert isinstance(m, Seq2SeqModel)
    want = reference(model, ids, mask, 6)
    assert want[0, 0] == config.bos_token_id
    np.testing.assert_array_equal(m.generate(ids, mask, max_new_tokens=6), want)


def test_text2text_task_errors_are_clear() -> None:
    config = transformers.LlamaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=32)
    llama = transformers.LlamaForCausalLM(config).eval()
    with pytest.raises(ConversionError, match="not a transformers encoder-decoder"):
        onnxbridge.to_onnx(llama, torch.randint(0, 32, (1, 4)), task="text2text-generation")
    bart = tiny_bart()
    with pytest.raises(ConversionError, match="integer token ids"):
        onnxbridge.to_onnx(bart, torch.rand(1, 4), task="text2text-generation")
    with pytest.raises(ConversionError, match=r"\['decoder_input_ids'\] are the decoder's"):
        onnxbridge.to_onnx(bart, {"input_ids": torch.ones(1, 4, dtype=torch.long),
                                  "decoder_input_ids": torch.ones(1, 2, dtype=torch.long)},
                           task="text2text-generation")
    with pytest.raises(ConversionError, match="got keys"):
        onnxbridge.to_onnx(bart, {"ids": torch.ones(1, 4, dtype=torch.long)},
                           task="text2text-generation")


def test_loading_a_folder_without_a_bundle_says_so(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"encoder.onnx and decoder.onnx"):
        onnxbridge.load(tmp_path)


@pytest.mark.slow
def test_whisper_greedy_matches_transformers_with_suppressed_tokens() -> None:
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8,
        max_source_positions=16, max_target_positions=32, pad_token_id=95, bos_token_id=94,
        eos_token_id=93, decoder_start_token_id=94, init_std=0.5,
        suppress_tokens=None, begin_suppress_tokens=None)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    features = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = transformers.GenerationMixin.generate(model, features, max_new_tokens=10)
    # The tokens greedy picks first and most often are suppressed (from the start, once).
    tokens = plain.numpy()[:, 1:].ravel().tolist()
    frequent = max(set(tokens), key=tokens.count)
    first = int(plain[0, 1]) if int(plain[0, 1]) != frequent else int(plain[1, 1])
    model.generation_config.suppress_tokens = [frequent]
    model.generation_config.begin_suppress_tokens = [first]
    m = onnxbridge.to_onnx(model, features)  # task inferred; the encoder takes input_features
    assert isinstance(m, Seq2SeqModel) and m.parity.passed
    assert [s.name for s in m.encoder.inputs] == ["input_features"]
    assert "encoder_attention_mask" not in m.input_names
    with torch.no_grad():
        want = transformers.GenerationMixin.generate(model, features, max_new_tokens=10).numpy()
        own = model.generate(features, max_new_tokens=10).numpy()
    got = m.generate(input_features=features, max_new_tokens=10)
    np.testing.assert_array_equal(got, want)
    assert frequent not in got[:, 1:] and first not in got[:, 1]
    # Whisper's own generate returns the new tokens without the start token.
    np.testing.assert_array_equal(got[:, 1:], own)
