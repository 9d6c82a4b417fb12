"""Text generation on onnxruntime: the token loop for a decoder exported with a key/value cache.

``to_onnx(model, ids, task="text-generation")`` (inferred for transformers ``*ForCausalLM``
classes) returns a :class:`GenerativeModel`; ``m.generate(input_ids)`` returns token ids as
``transformers``' ``generate`` does. The cache stays in onnxruntime's memory between steps:
each step's ``present.*`` outputs (OrtValues) are bound as the next step's ``past_key_values.*``
inputs through IO binding, never copied into numpy. No framework is imported here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from onnxbridge.errors import InputError
from onnxbridge.model import OnnxModel

__all__ = ["GenerativeModel"]


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def _filter_logits(logits: np.ndarray, top_k: int | None, top_p: float | None) -> np.ndarray:
    """Logits with everything outside the top k and the top-p nucleus set to -inf."""
    out = logits.astype(np.float64, copy=True)
    if top_k is not None and 0 < top_k < out.shape[-1]:
        kth = np.sort(out, axis=-1)[:, -top_k][:, None]
        out[out < kth] = -np.inf
    if top_p is not None and 0.0 < top_p < 1.0:
        order = np.argsort(-out, axis=-1)
        ranked = np.take_along_axis(out, order, axis=-1)
        cumulative = np.cumsum(_softmax(ranked), axis=-1)
        drop = cumulative - _softmax(ranked) >= top_p  # keep the first token always
        ranked[drop] = -np.inf
        np.put_along_axis(out, order, ranked, axis=-1)
    return out


class GenerativeModel(OnnxModel):
    """An OnnxModel that is a decoder with a key/value cache: it adds :meth:`generate`."""

    @property
    def generation_info(self) -> dict[str, Any]:
        """What the exporter recorded: layers, whether position_ids are fed, eos and pad ids."""
        raw = self.metadata.get("onnxbridge.generation")
        if not raw:
            raise InputError("this model has no text-generation metadata; export it with"
                             " to_onnx(model, ids, task='text-generation')")
        info: dict[str, Any] = json.loads(raw)
        return info

    def run(self, *args: Any, as_dict: bool = False, **kwargs: Any) -> Any:
        """As OnnxModel.run; given token ids only, the prompt's logits (as a plain export gives).

        ``m.run(ids)``, ``m.run(input_ids=ids)`` or ``m.run({"input_ids": ids,
        "attention_mask": mask})`` run the prompt with an empty cache and return the logits
        alone (``{"logits": ...}`` with ``as_dict=True``); a full feed (with
        ``past_key_values.*``) returns every output.
        """
        options = {k: kwargs.pop(k) for k in ("providers", "io_binding", "strict") if k in kwargs}
        given: dict[str, Any] = dict(kwargs)
        if len(args) == 1 and isinstance(args[0], dict) and not kwargs:
            given = dict(args[0])
        elif len(args) in (1, 2) and not kwargs:
            given = {"input_ids": args[0]}
            if len(args) == 2:
                given["attention_mask"] = args[1]
        elif args:
            return super().run(*args, as_dict=as_dict, **options, **kwargs)
        if not set(given) <= {"input_ids", "attention_mask"} or "input_ids" not in given:
            return super().run(*args, as_dict=as_dict, **options, **kwargs)
        feeds = self.prompt_feeds(given["input_ids"], given.get("attention_mask"))
        logits = super().run(feeds, as_dict=True, **options)["logits"]
        return {"logits": logits} if as_dict else logits

    def prompt_feeds(self, input_ids: Any, attention_mask: Any = None) -> dict[str, np.ndarray]:
        """The full feeds for a prompt: mask, position ids and an empty cache filled in."""
        ids = _host_array(input_ids)
        ids = ids.astype(np.int64)
        if attention_mask is None:
            mask = np.ones_like(ids)
        else:
            mask = _host_array(attention_mask).astype(np.int64)
        feeds: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": mask}
        for spec in self.inputs:
            if spec.name == "position_ids":
                feeds["position_ids"] = np.where(mask == 0, 1, np.cumsum(mask, axis=-1) - 1)
            elif spec.name.startswith("past_key_values."):
                dims: list[Any] = list(spec.shape or ())
                dtype = spec.dtype if spec.dtype is not None else np.dtype(np.float32)
                size = (int(ids.shape[0]), int(dims[1]), 0, int(dims[3]))
                feeds[spec.name] = np.zeros(size, dtype=dtype)
        return feeds

    def generate(
        self,
        input_ids: Any,
        attention_mask: Any = None,
        *,
        max_new_tokens: int = 20,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = 50,
        top_p: float | None = 1.0,
        eos_token_id: int | Sequence[int] | None = None,
        pad_token_id: int | None = None,
        seed: int | None = None,
        providers: Any = None,
        threads: int | None = None,
    ) -> np.ndarray:
        """Token ids [batch, prompt + new] continuing ``input_ids``, as transformers' generate.

        Greedy by default (``do_sample=False``); with ``do_sample=True`` the next token is drawn
        after ``temperature``, ``top_k`` and ``top_p``. ``attention_mask`` marks padding (pad on
        the left for a batch of prompts of different lengths). A row stops at ``eos_token_id``
        (the model's own by default) and is filled with ``pad_token_id`` afterwards; the loop
        stops when every row has stopped or after ``max_new_tokens``.
        """
        info = self.generation_info
        ids = _host_array(input_ids)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.dtype.kind not in "iu" or ids.shape[1] == 0:
            raise InputError(f"input_ids must be integer token ids [batch, sequence]; got"
                             f" {ids.dtype} {list(ids.shape)}")
        ids = ids.astype(np.int64)
        if attention_mask is None:
            mask = np.ones_like(ids)
        else:
            mask = _host_array(attention_mask).astype(np.int64)
            if mask.shape != ids.shape:
                raise InputError(f"attention_mask {list(mask.shape)} must have input_ids' shape"
                                 f" {list(ids.shape)}")
        if max_new_tokens < 0:
            raise InputError("max_new_tokens must be >= 0")
        if do_sample and temperature <= 0:
            raise InputError("temperature must be > 0 when do_sample=True")
        eos = info.get("eos_token_id") if eos_token_id is None else eos_token_id
        eos_list: list[Any] = [] if eos is None else list(eos) if isinstance(
            eos, (list, tuple)) else [eos]
        eos_set = {int(e) for e in eos_list}
        pad = pad_token_id if pad_token_id is not None else info.get("pad_token_id")
        if pad is None:
            pad = min(eos_set) if eos_set else 0
        rng = np.random.default_rng(seed)

        session = self.session(providers, threads=threads)
        inputs = {i.name: i for i in session.get_inputs()}
        past_names = [n for n in inputs if n.startswith("past_key_values.")]
        present_names = [o.name for o in session.get_outputs()]
        import onnxruntime

        batch = ids.shape[0]
        binding = session.io_binding()
        device = "cpu"
        past: list[Any] = []
        for name in past_names:
            shape = inputs[name].shape  # [batch, heads, past_sequence, head_dim]
            elem = inputs[name].type
            dtype = np.float16 if "float16" in elem else np.float32
            if "bfloat16" in elem:
                raise InputError("a bfloat16 cache cannot be made on this provider; export the"
                                 " compute in float32")
            empty = np.zeros((batch, int(shape[1]), 0, int(shape[3])), dtype=dtype)
            past.append(onnxruntime.OrtValue.ortvalue_from_numpy(empty))
        finished = np.zeros(batch, dtype=bool)
        step_ids = ids
        out = ids
        uses_positions = bool(info.get("position_ids"))
        for _ in range(max_new_tokens):
            binding.clear_binding_inputs()
            binding.clear_binding_outputs()
            binding.bind_cpu_input("input_ids", np.ascontiguousarray(step_ids))
            binding.bind_cpu_input("attention_mask", np.ascontiguousarray(mask))
            if uses_positions:
                pos = np.where(mask == 0, 1, np.cumsum(mask, axis=-1) - 1)
                binding.bind_cpu_input(
                    "position_ids", np.ascontiguousarray(pos[:, -step_ids.shape[1]:]))
            for name, value in zip(past_names, past, strict=True):
                binding.bind_ortvalue_input(name, value)
            for name in present_names:
                binding.bind_output(name, device)
            session.run_with_iobinding(binding)
            results = binding.get_outputs()
            logits = results[0].numpy()[:, -1, :]
            past = list(results[1:])
            if do_sample:
                scores = _filter_logits(logits / temperature, top_k, top_p)
                probs = _softmax(scores)
                nxt = np.array([rng.choice(probs.shape[-1], p=row) for row in probs])
            else:
                nxt = logits.argmax(axis=-1)
            nxt = np.where(finished, pad, nxt).astype(np.int64)
            out = np.concatenate([out, nxt[:, None]], axis=1)
            if eos_set:
                finished |= np.isin(nxt, list(eos_set))
            if finished.all():
                break
            step_ids = nxt[:, None]
            mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        return out


def _host_array(value: Any) -> np.ndarray:
    """A numpy array from token ids or a mask given as numpy, a list or a torch tensor."""
    return np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
