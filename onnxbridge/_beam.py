"""Beam search for :mod:`onnxbridge.generate`: the bookkeeping, in numpy, as transformers does it.

The rules follow transformers' ``generate(num_beams=K, do_sample=False)`` (5.x) so that the
tokens match: each step keeps the ``max(2, 1 + len(eos)) * K`` best continuations of all beams
(accumulated float32 log-probabilities), continues with the best ``K`` that did not end, and
keeps the best ``K`` ended hypotheses, scored by ``log p / new_length ** length_penalty``. A
hypothesis ends at an end token or at the length limit. ``early_stopping`` is ``False`` (stop
when no running beam could beat the worst kept hypothesis at its current length), ``True``
(stop once ``K`` hypotheses are kept) or ``"never"``. The caller runs the model and reorders
its key/value cache with the beam indices each step returns. No framework is imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from onnxbridge.errors import InputError

__all__ = ["BeamSearch", "check_beam_options", "expand", "log_softmax"]

_BLOCKED = np.float32(-1.0e9)  # transformers' score for a candidate that may not be chosen


def check_beam_options(num_beams: int, do_sample: bool, length_penalty: float,
                       early_stopping: Any, vocab: int) -> None:
    """Refuse what beam search here does not do, naming the fix."""
    if not isinstance(num_beams, (int, np.integer)) or isinstance(num_beams, bool) \
            or num_beams < 1:
        raise InputError(f"num_beams must be an integer >= 1; got {num_beams!r}")
    if num_beams == 1:
        return
    if do_sample:
        raise InputError("num_beams > 1 with do_sample=True (beam sampling) is not supported;"
                         " pass do_sample=False for beam search, or num_beams=1 to sample")
    if early_stopping not in (True, False, "never"):
        raise InputError(f"early_stopping must be True, False or 'never'; got {early_stopping!r}")
    if not np.isfinite(float(length_penalty)):
        raise InputError(f"length_penalty must be a finite number; got {length_penalty!r}")
    if vocab and 2 * num_beams > vocab:
        raise InputError(f"num_beams={num_beams} needs a vocabulary of at least {2 * num_beams}"
                         f" tokens (the model has {vocab}); pass fewer beams")


def expand(array: np.ndarray, num_beams: int) -> np.ndarray:
    """Each row repeated ``num_beams`` times in place (row b's beams are rows b*K .. b*K+K-1)."""
    return np.ascontiguousarray(np.repeat(array, num_beams, axis=0))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float32 log-probabilities of the last axis, as torch's log_softmax computes them."""
    x = logits.astype(np.float32, copy=False)
    shifted = x - x.max(axis=-1, keepdims=True)
    out: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return out


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values of each row, largest first (ties: lowest index)."""
    return np.argsort(-values, axis=-1, kind="stable")[:, :k]


class BeamSearch:
    """The beams of a batch: feed each step's log-probabilities, read the tokens to run next."""

    def __init__(self, prompt: np.ndarray, num_beams: int, max_length: int,
                 eos: Sequence[int], pad: int | None, length_penalty: float = 1.0,
                 early_stopping: bool | str = False) -> None:
        batch, length = prompt.shape
        self.batch, self.beams, self.max_length = batch, num_beams, max_length
        self.prompt_length = self.length = length
        self.eos = np.array(list(eos), dtype=np.int64)
        self.length_penalty, self.early_stopping = float(length_penalty), early_stopping
        self.keep = max(2, 1 + self.eos.size) * num_beams
        # transformers fills unused positions with pad (else the first end id) when there are
        # end ids, else with -1 (never seen then: every hypothesis reaches the length limit)
        fill = (pad if pad else int(self.eos[0])) if self.eos.size else -1
        self.running = np.full((batch, num_beams, max_length), fill, dtype=np.int64)
        self.running[:, :, :length] = prompt[:, None, :]
        self.scores = np.zeros((batch, num_beams), dtype=np.float32)
        self.scores[:, 1:] = _BLOCKED  # only the first beam's continuations count at first
        self.ended = self.running.copy()
        self.ended_scores = np.full((batch, num_beams), _BLOCKED, dtype=np.float32)
        self.ended_flags = np.zeros((batch, num_beams), dtype=bool)
        self.ended_lengths = np.zeros((batch, num_beams), dtype=np.int64)
        self.open = np.ones(batch, dtype=bool)  # can a running beam still beat the ended ones?

    def last_tokens(self) -> np.ndarray:
        """The running beams' newest tokens, [batch * beams, 1], for the next model step."""
        return np.ascontiguousarray(
            self.running[:, :, self.length - 1].reshape(-1, 1))

    def step(self, log_probs: np.ndarray) -> tuple[np.ndarray, bool]:
        """Advance by one token given [batch * beams, vocab] log-probabilities (processed).

        Returns the flat index of the source row of each new running beam (reorder the cache
        with it) and whether the search is over.
        """
        b, k = self.batch, self.beams
        at = np.arange(b)[:, None]  # with an index per row: x[at, idx] picks along axis 1
        vocab = log_probs.shape[-1]
        total = (log_probs.reshape(b, k, vocab).astype(np.float32)
                 + self.scores[:, :, None]).reshape(b, k * vocab)
        picked = _top(total, self.keep)
        cand_scores = total[at, picked]
        source, token = picked // vocab, picked % vocab
        cand = self.running[at, source]
        cand[:, :, self.length] = token
        hits = np.isin(token, self.eos) if self.eos.size else np.zeros_like(token, dtype=bool)
        if self.length + 1 >= self.max_length:
            hits = np.ones_like(hits)

        # the next running beams: the best continuations that did not end
        running_scores = cand_scores + hits.astype(np.float32) * _BLOCKED
        best = _top(running_scores, k)
        self.running = cand[at, best]
        self.scores = running_scores[at, best]
        rows = (source[at, best] + at * k).reshape(-1)

        # the ended hypotheses: the best K of those kept and those ending now among the top K
        new_length = self.length + 1 - self.prompt_length
        ending = hits & (np.arange(self.keep) < k)[None, :]
        scored = cand_scores / np.float32(new_length ** self.length_penalty)
        if self.early_stopping is True:
            scored = scored + (self.ended_flags.all(axis=1, keepdims=True)
                               ).astype(np.float32) * _BLOCKED
        scored = scored + (~self.open[:, None]).astype(np.float32) * _BLOCKED
        scored = scored + (~ending).astype(np.float32) * _BLOCKED
        merged_scores = np.concatenate([self.ended_scores, scored], axis=1)
        keep = _top(merged_scores, k)
        self.ended = np.concatenate([self.ended, cand], axis=1)[at, keep]
        self.ended_scores = merged_scores[at, keep]
        self.ended_flags = np.concatenate([self.ended_flags, ending], axis=1)[at, keep]
        lengths = np.full((b, self.keep), new_length, dtype=np.int64)
        self.ended_lengths = np.concatenate([self.ended_lengths, lengths], axis=1)[at, keep]

        self.length += 1
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            hypothetical = self.max_length - self.prompt_length
        else:
            hypothetical = self.length - self.prompt_length
        best_running = self.scores[:, 0] / np.float32(hypothetical ** self.length_penalty)
        worst = np.where(self.ended_flags, self.ended_scores.min(axis=1, keepdims=True),
                         _BLOCKED)
        self.open &= (best_running[:, None] > worst).any(axis=1)
        done = (not self.open.any()
                or (self.early_stopping is True and bool(self.ended_flags.all()))
                or bool(hits.all()))
        return rows, done

    def result(self) -> np.ndarray:
        """The best hypothesis of each batch row, [batch, prompt + longest best's new tokens]."""
        length = self.prompt_length + int(self.ended_lengths[:, 0].max())
        return self.ended[:, 0, :length].copy()


def _reordered(values: list[Any], rows: np.ndarray, device: str, device_id: int) -> list[Any]:
    """Cache OrtValues with their batch rows taken in ``rows``' order (unchanged if in order)."""
    if np.array_equal(rows, np.arange(rows.size)):
        return values
    import onnxruntime

    return [onnxruntime.OrtValue.ortvalue_from_numpy(
        np.ascontiguousarray(value.numpy()[rows]), device, device_id) for value in values]


def _empty_cache(spec: Any, rows: int, device: str, device_id: int) -> Any:
    import onnxruntime

    dtype = np.float16 if "float16" in spec.type else np.float32
    empty = np.zeros((rows, int(spec.shape[1]), 0, int(spec.shape[3])), dtype=dtype)
    return onnxruntime.OrtValue.ortvalue_from_numpy(empty, device, device_id)


def _run_step(session: Any, binding: Any, past: dict[str, Any], present_names: list[str],
              device: str, device_id: int) -> list[Any]:
    """One decoder step on ``binding`` (its other inputs bound): the cache bound as it is,
    logits to the host, the new cache left on ``device``."""
    for name, value in past.items():
        binding.bind_ortvalue_input(name, value)
    binding.bind_output("logits", "cpu")
    for name in present_names:
        binding.bind_output(name, device, device_id)
    session.run_with_iobinding(binding)
    return list(binding.get_outputs())


def cache_length(value: Any) -> int:
    """The positions a cache OrtValue holds (axis 2 of [batch, heads, length, dim])."""
    return int(value.shape()[2])


def decoder_beams(session: Any, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int,
                  uses_positions: bool, eos: Sequence[int], pad: int, num_beams: int,
                  length_penalty: float, early_stopping: bool | str, device: str,
                  device_id: int) -> np.ndarray:
    """Beam search with a decoder exported with a cache (the names of _torch_generate)."""
    batch, prompt = ids.shape
    if max_new_tokens == 0:
        return ids.copy()
    search = BeamSearch(ids, num_beams, prompt + max_new_tokens, eos, pad, length_penalty,
                        early_stopping)
    inputs = {i.name: i for i in session.get_inputs()}
    past_names = [n for n in inputs if n.startswith("past_key_values.")]
    present_names = [o.name for o in session.get_outputs()][1:]
    rows = batch * num_beams
    past = {n: _empty_cache(inputs[n], rows, device, device_id) for n in past_names}
    tokens, masks = expand(ids, num_beams), expand(mask, num_beams)
    positions = np.where(masks == 0, 1, np.cumsum(masks, axis=-1) - 1)
    binding = session.io_binding()
    while True:
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        binding.bind_cpu_input("input_ids", tokens)
        # the mask covers the keys this step sees (a sliding-window cache keeps the last ones)
        keys = min(masks.shape[1], tokens.shape[1] + min(
            (cache_length(v) for v in past.values()), default=masks.shape[1]))
        binding.bind_cpu_input("attention_mask", np.ascontiguousarray(masks[:, -keys:]))
        if uses_positions:
            binding.bind_cpu_input("position_ids", np.ascontiguousarray(positions))
        results = _run_step(session, binding, past, present_names, device, device_id)
        order, done = search.step(log_softmax(results[0].numpy()[:, -1, :]))
        if done:
            return search.result()
        presents = _reordered(list(results[1:]), order, device, device_id)
        past = {n.replace("present.", "past_key_values.", 1): v
                for n, v in zip(present_names, presents, strict=True)}
        tokens = search.last_tokens()
        masks = np.ascontiguousarray(np.concatenate(
            [masks, np.ones((rows, 1), dtype=masks.dtype)], axis=1))
        positions = positions[:, -1:] + 1


def seq2seq_beams(session: Any, start: np.ndarray, cross: dict[str, Any],
                  encoder_mask: np.ndarray | None, max_new_tokens: int, eos: Sequence[int],
                  pad: int, num_beams: int, length_penalty: float,
                  early_stopping: bool | str, process: Any, device: str,
                  device_id: int) -> np.ndarray:
    """Beam search with a seq2seq decoder (the names of _torch_seq2seq).

    ``cross`` holds the encoder's ``present.*`` OrtValues for the beams' rows (each batch row
    repeated ``num_beams`` times), ``encoder_mask`` the encoder mask for those rows;
    ``process(log_probs, length)`` applies the forced and suppressed tokens in place.
    """
    batch, prompt = start.shape
    if max_new_tokens == 0:
        return start.copy()
    search = BeamSearch(start, num_beams, prompt + max_new_tokens, eos, pad, length_penalty,
                        early_stopping)
    inputs = {i.name: i for i in session.get_inputs()}
    present_names = [o.name for o in session.get_outputs()][1:]
    rows = batch * num_beams
    past: dict[str, Any] = {}
    for name, spec in inputs.items():
        if name.startswith("past_key_values.") and name.endswith((".decoder.key",
                                                                   ".decoder.value")):
            past[name] = _empty_cache(spec, rows, device, device_id)
        elif name.startswith("past_key_values."):
            past[name] = cross[name.replace("past_key_values.", "present.", 1)]
    tokens = expand(start, num_beams)
    binding = session.io_binding()
    while True:
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        binding.bind_cpu_input("decoder_input_ids", tokens)
        if encoder_mask is not None and "encoder_attention_mask" in inputs:
            binding.bind_cpu_input("encoder_attention_mask", encoder_mask)
        results = _run_step(session, binding, past, present_names, device, device_id)
        log_probs = log_softmax(results[0].numpy()[:, -1, :])
        process(log_probs, search.length)
        order, done = search.step(log_probs)
        if done:
            return search.result()
        presents = _reordered(list(results[1:]), order, device, device_id)
        for name, value in zip(present_names, presents, strict=True):
            past[name.replace("present.", "past_key_values.", 1)] = value
        tokens = search.last_tokens()
