"""Generation options beyond greedy: end-token semantics and beam search, against transformers.

Tiny random-weight models, token ids only; every result is compared with transformers' own
``generate`` on the same torch model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_generate import tiny_llama  # noqa: E402
from test_generate_seq2seq import tiny_bart, tiny_t5  # noqa: E402

import onnxbridge  # noqa: E402
from onnxbridge import InputError  # noqa: E402
from onnxbridge._beam import check_beam_options  # noqa: E402
from onnxbridge.generate import GenerativeModel, Seq2SeqModel  # noqa: E402


def want(model: torch.nn.Module, ids: torch.Tensor, **kwargs: Any) -> np.ndarray:
    """transformers' own tokens (the independent reference)."""
    with torch.no_grad():
        return model.generate(ids, do_sample=False, **kwargs).numpy()


def ended_early(tokens: np.ndarray, eos: int, prompt: int) -> bool:
    """Does some row hold its end token before its last column (so a row stopped early)?"""
    return bool((tokens[:, prompt:-1] == eos).any())


@pytest.fixture(scope="module")
def phi() -> tuple[torch.nn.Module, GenerativeModel, torch.Tensor]:
    # Seed 1: row 0 emits Phi's end token (id 2) at its 3rd new token.
    torch.manual_seed(1)
    config = transformers.PhiConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64,
                                    max_position_embeddings=128)
    model = transformers.PhiForCausalLM(config).eval()
    ids = torch.randint(3, 128, (2, 6))
    m = onnxbridge.to_onnx(model, ids)
    assert isinstance(m, GenerativeModel)
    return model, m, ids


@pytest.mark.slow
def test_phi_eos_none_turns_the_end_token_off_as_transformers_does(
        phi: tuple[torch.nn.Module, GenerativeModel, torch.Tensor]) -> None:
    """The "Phi differs at one row's 2nd new token" finding: not numerics, but eos_token_id=None.

    transformers' generate takes an explicit ``eos_token_id=None`` as "no end token"; onnxbridge
    took it as "the model's own" and stopped the row that emitted the model's end id.
    """
    model, m, ids = phi
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    for given in (None, mask):
        kwargs = {} if given is None else {"attention_mask": given}
        free = want(model, ids, max_new_tokens=20, eos_token_id=None, pad_token_id=0, **kwargs)
        assert ended_early(free, 2, ids.shape[1])  # the model's end id, then more tokens
        got = m.generate(ids, max_new_tokens=20, eos_token_id=None, pad_token_id=0,
                         **{k: v.numpy() for k, v in kwargs.items()})
        np.testing.assert_array_equal(got, free)
        # not given: the model's own end id stops that row, padded with it (no pad id known)
        np.testing.assert_array_equal(m.generate(ids, max_new_tokens=20, **kwargs),
                                      want(model, ids, max_new_tokens=20, **kwargs))
    # Phi's partial rotary embedding under beam search, with left padding
    np.testing.assert_array_equal(
        m.generate(ids, mask, max_new_tokens=10, num_beams=3),
        want(model, ids, attention_mask=mask, max_new_tokens=10, num_beams=3))


@pytest.fixture(scope="module")
def llama() -> tuple[torch.nn.Module, GenerativeModel]:
    model = tiny_llama()
    m = onnxbridge.to_onnx(model, torch.randint(3, 128, (2, 6)))  # fused attention
    assert isinstance(m, GenerativeModel)
    return model, m


@pytest.mark.slow
def test_decoder_beam_search_matches_transformers(
        llama: tuple[torch.nn.Module, GenerativeModel]) -> None:
    model, m = llama
    ids = torch.randint(3, 128, (3, 7), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    mask[2, :1] = 0
    for options in ({"num_beams": 2}, {"num_beams": 4, "length_penalty": 0.5},
                    {"num_beams": 3, "early_stopping": True},
                    {"num_beams": 3, "early_stopping": "never", "length_penalty": 2.0}):
        for given in (None, mask):
            kwargs: dict[str, Any] = {} if given is None else {"attention_mask": given}
            reference = want(model, ids, max_new_tokens=12, eos_token_id=None, pad_token_id=0,
                             **options, **kwargs)
            got = m.generate(ids, given, max_new_tokens=12, eos_token_id=None, **options)
            np.testing.assert_array_equal(got, reference, err_msg=str(options))
    # beams differ from greedy on this model (else the test would not see a beam bug)
    assert not np.array_equal(reference, want(model, ids, attention_mask=mask,
                                              max_new_tokens=12, eos_token_id=None,
                                              pad_token_id=0))
    # an end token the best beam meets early: hypotheses end, the row is padded
    free = want(model, ids, max_new_tokens=12, eos_token_id=None, num_beams=3)
    eos = int(free[0, 9])
    reference = want(model, ids, max_new_tokens=12, eos_token_id=eos, pad_token_id=0,
                     num_beams=3)
    assert ended_early(reference, eos, 7) or reference.shape[1] < free.shape[1]
    np.testing.assert_array_equal(
        m.generate(ids, max_new_tokens=12, eos_token_id=eos, pad_token_id=0, num_beams=3),
        reference)
    with pytest.raises(InputError, match="do_sample=False for beam search"):
        m.generate(ids, num_beams=2, do_sample=True)


def encoder_ids() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, 96, (2, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    return ids, mask


def check_seq2seq_beams(model: torch.nn.Module, m: Seq2SeqModel) -> None:
    ids, mask = encoder_ids()
    # the model's own end, pad and forced tokens (BART forces its end token last)
    for options in ({"num_beams": 2}, {"num_beams": 4},
                    {"num_beams": 3, "length_penalty": 0.5, "early_stopping": True}):
        for given in (None, mask):
            kwargs: dict[str, Any] = {} if given is None else {"attention_mask": given}
            np.testing.assert_array_equal(
                m.generate(ids, given, max_new_tokens=12, **options),
                want(model, ids, max_new_tokens=12, **options, **kwargs), err_msg=str(options))
    free = want(model, ids, max_new_tokens=12, eos_token_id=None, num_beams=3)
    eos = int(free[0, 3])
    reference = want(model, ids, max_new_tokens=12, eos_token_id=eos, num_beams=3)
    assert ended_early(reference, eos, 1) or reference.shape[1] < free.shape[1]
    np.testing.assert_array_equal(
        m.generate(ids, max_new_tokens=12, eos_token_id=eos, num_beams=3), reference)


@pytest.mark.slow
def test_t5_beam_search_matches_transformers() -> None:
    model = tiny_t5()
    m = onnxbridge.to_onnx(model, encoder_ids()[0])
    assert isinstance(m, Seq2SeqModel)
    check_seq2seq_beams(model, m)


def test_beam_options_are_checked_with_the_fix_named() -> None:
    with pytest.raises(InputError, match="pass do_sample=False for beam search"):
        check_beam_options(2, True, 1.0, False, 100)
    with pytest.raises(InputError, match="integer >= 1"):
        check_beam_options(0, False, 1.0, False, 100)
    with pytest.raises(InputError, match="True, False or 'never'"):
        check_beam_options(2, False, 1.0, "sometimes", 100)
    with pytest.raises(InputError, match="pass fewer beams"):
        check_beam_options(8, False, 1.0, False, 10)
    check_beam_options(1, True, 1.0, False, 10)  # one beam: sampling is fine


# Half precision for encoder-decoder models: compute_dtype="float16" exports both graphs in
# float16 (the cache too); verification tolerances scale with each output's magnitude.


@pytest.mark.slow
def test_whisper_float16_matches_transformers_float16() -> None:
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8,
        max_source_positions=16, max_target_positions=32, pad_token_id=95, bos_token_id=94,
        eos_token_id=93, decoder_start_token_id=94, init_std=0.5,
        suppress_tokens=None, begin_suppress_tokens=None)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    features = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(1))
    m = onnxbridge.to_onnx(model, features, compute_dtype="float16")
    assert isinstance(m, Seq2SeqModel) and m.parity.passed
    assert any("computed in float16" in note for note in m.parity.notes)
    assert [s.dtype for s in m.encoder.inputs] == [np.dtype(np.float16)]
    assert m.inputs[1].name == "past_key_values.0.decoder.key"
    assert m.inputs[1].dtype == np.dtype(np.float16)
    half = model.half()  # the reference: transformers' own float16 run
    for options in ({}, {"num_beams": 2}):
        with torch.no_grad():
            reference = transformers.GenerationMixin.generate(
                half, features.half(), max_new_tokens=10, do_sample=False, **options).numpy()
        got = m.generate(input_features=features.numpy(), max_new_tokens=10, **options)
        np.testing.assert_array_equal(got, reference, err_msg=str(options))


@pytest.mark.slow
def test_bart_float16_is_refused_with_the_fix() -> None:
    model = tiny_bart()
    ids, _ = encoder_ids()
    with pytest.raises(onnxbridge.ConversionError, match=r"cannot trace.*Export it in float32"):
        onnxbridge.to_onnx(model, ids, task="text2text-generation", compute_dtype="float16")


@pytest.mark.slow
def test_bart_beams_and_weights_in_external_files_saved_as_one_folder(tmp_path: Any) -> None:
    """Beam search on BART, and the >2 GB path at small scale: external_data=True, as a
    model past the limit gets."""
    from onnxbridge._files import has_external_data

    model = tiny_bart()
    ids, mask = encoder_ids()
    m = onnxbridge.to_onnx(model, ids, external_data=True)
    assert isinstance(m, Seq2SeqModel) and m.parity.passed
    assert has_external_data(m.proto) and has_external_data(m.encoder.proto)
    assert m.data_dir is not None and m.encoder.data_dir not in (None, m.data_dir)
    reference = want(model, ids, attention_mask=mask, max_new_tokens=8)
    np.testing.assert_array_equal(m.generate(ids, mask, max_new_tokens=8), reference)
    folder = m.save(tmp_path / "bundle")
    names = sorted(p.name for p in folder.iterdir())
    assert names[0] == "decoder.onnx" and names[2] == "encoder.onnx", names
    assert names[1].startswith("decoder.onnx.") and names[3].startswith("encoder.onnx."), names
    assert all(name.endswith(".data") for name in (names[1], names[3]))
    back = onnxbridge.load(folder)
    assert isinstance(back, Seq2SeqModel)
    np.testing.assert_array_equal(back.generate(ids, mask, max_new_tokens=8), reference)
    check_seq2seq_beams(model, back)


def test_beam_bookkeeping_by_hand() -> None:
    """Two beams, end id 3, three new tokens at most; the scores worked out on paper."""
    from onnxbridge._beam import BeamSearch

    def rows(*probs: list[float]) -> np.ndarray:
        return np.log(np.array(probs, dtype=np.float32))

    search = BeamSearch(np.array([[9]]), 2, 4, [3], 0)
    # step 1: both rows hold the prompt; only the first beam counts. Token 3 (an end) ranks
    # 4th of the 4 kept, outside the top 2, so it is not kept as a hypothesis.
    order, done = search.step(rows([0.5, 0.3, 0.1, 0.1], [0.5, 0.3, 0.1, 0.1]))
    assert not done and order.tolist() == [0, 0]
    assert search.last_tokens().ravel().tolist() == [0, 1]
    # step 2: beam [9, 0] ends with 3 (log .5 + log .7, over 2 new tokens); both running
    # beams now continue [9, 1]: [9, 1, 0] (log .3 + log .6) and [9, 1, 1] (log .3 + log .2)
    order, done = search.step(rows([0.1, 0.1, 0.1, 0.7], [0.6, 0.2, 0.1, 0.1]))
    assert not done and order.tolist() == [1, 1]
    assert search.ended_scores[0, 0] == pytest.approx((np.log(0.5) + np.log(0.7)) / 2, abs=1e-6)
    # step 3 reaches the length limit: every candidate ends; [9, 1, 1, 0] scores
    # (log .3 + log .2 + log .9) / 3 = -0.973, below [9, 0, 3]'s -0.525
    order, done = search.step(rows([0.25] * 4, [0.9, 0.05, 0.025, 0.025]))
    assert done
    assert search.ended_scores[0, 1] == pytest.approx(
        (np.log(0.3) + np.log(0.2) + np.log(0.9)) / 3, abs=1e-6)
    assert search.ended[0, 1].tolist() == [9, 1, 1, 0]
    assert search.result().tolist() == [[9, 0, 3]]  # the best, cut to its own length
