"""Text generation on onnxruntime: the token loop for a decoder exported with a key/value cache.

``to_onnx(model, ids, task="text-generation")`` (inferred for transformers ``*ForCausalLM``
classes) returns a :class:`GenerativeModel`; ``m.generate(input_ids)`` returns token ids as
``transformers``' ``generate`` does. The cache stays in onnxruntime's memory between steps:
each step's ``present.*`` outputs (OrtValues) are bound as the next step's ``past_key_values.*``
inputs through IO binding, never copied into numpy. No framework is imported here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxbridge._beam import cache_length
from onnxbridge.errors import InputError
from onnxbridge.model import OnnxModel

__all__ = ["GenerativeModel", "Seq2SeqModel"]

#: Decoders with fewer parameters than this generate on one onnxruntime thread by default: a
#: step is too short to share between threads (tiny Llama: 1 thread as fast as 2; 20M
#: parameters: 6.4 ms a token on 1 thread, 12.0 on 2, 1.8x the CPU time; see
#: benchmarks/RESULTS.md, "Round 4 generation"). Larger ones get onnxruntime's own choice
#: (one thread per physical core).
SMALL_DECODER = 50_000_000


class _ModelOwn:
    """The default of ``eos_token_id``: the model's own end ids (``None`` means none at all)."""

    def __repr__(self) -> str:
        return "<the model's own>"


MODEL_OWN: Any = _ModelOwn()


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def _next_tokens(logits: np.ndarray, do_sample: bool, temperature: float, top_k: int | None,
                 top_p: float | None, rng: Any) -> np.ndarray:
    """One token per row: the most likely (greedy), or drawn from the filtered distribution."""
    if not do_sample:
        return logits.argmax(axis=-1)
    probs = _softmax(_filter_logits(logits / temperature, top_k, top_p))
    return np.array([rng.choice(probs.shape[-1], p=row) for row in probs])


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
        eos_token_id: int | Sequence[int] | None = MODEL_OWN,
        pad_token_id: int | None = None,
        seed: int | None = None,
        providers: Any = None,
        threads: int | None = None,
        num_beams: int | None = None,
        length_penalty: float | None = None,
        early_stopping: bool | str | None = None,
    ) -> np.ndarray:
        """Token ids [batch, prompt + new] continuing ``input_ids``, as transformers' generate.

        Greedy by default (``do_sample=False``); with ``do_sample=True`` the next token is drawn
        after ``temperature``, ``top_k`` and ``top_p``. ``attention_mask`` marks padding (pad on
        the left for a batch of prompts of different lengths). A row stops at ``eos_token_id``
        (the model's own when not given; ``None`` turns it off, as in transformers) and is
        filled with ``pad_token_id`` afterwards; the loop stops when every row has stopped or
        after ``max_new_tokens``. ``num_beams > 1``: beam search (``length_penalty``,
        ``early_stopping`` as transformers defines them; the model's own generation config
        gives the defaults), the best beam of each row returned. ``threads``: onnxruntime's
        intra-op threads; by default ONNXBRIDGE_THREADS, else 1 for a decoder under
        ``SMALL_DECODER`` (50M) parameters, else onnxruntime's choice.
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
        eos_set, pad = _eos_and_pad(info, eos_token_id, pad_token_id)
        rng = np.random.default_rng(seed)

        limit = info.get("max_positions")
        if limit and ids.shape[1] + max_new_tokens > int(limit):
            raise InputError(
                f"a prompt of {ids.shape[1]} tokens plus max_new_tokens={max_new_tokens} goes past"
                f" the {limit} positions the fused rotary cache holds (the model's"
                " max_position_embeddings); generate fewer tokens, or export with fuse=False")
        session = self.session(providers, threads=_generation_threads(info, threads))
        beams = _beam_settings(info, num_beams, do_sample, length_penalty, early_stopping)
        if beams is not None:
            from onnxbridge._beam import decoder_beams

            return decoder_beams(session, ids, mask, max_new_tokens, bool(info.get(
                "position_ids")), _eos_list(info, eos_token_id), int(pad), *beams,
                *_cache_device(session))
        return _greedy_or_sampled(session, ids, mask, max_new_tokens, bool(info.get(
            "position_ids")), eos_set, int(pad), do_sample, temperature, top_k, top_p, rng,
            shared=_shared_cache_possible(session, bool(info.get("fused"))))


def _generation_threads(info: dict[str, Any], threads: int | None) -> int | None:
    """The intra-op thread count for generate: the caller's, else ONNXBRIDGE_THREADS, else 1
    for a decoder under SMALL_DECODER parameters, else onnxruntime's choice (None)."""
    from onnxbridge.runtime.names import ENV_THREADS

    if threads is not None or os.environ.get(ENV_THREADS, "").strip():
        return threads
    size = info.get("parameters")
    return 1 if isinstance(size, int) and size < SMALL_DECODER else None


def _eos_and_pad(info: dict[str, Any], eos_token_id: Any, pad_token_id: int | None
                 ) -> tuple[set[int], int]:
    """The ids that end a row and the id that fills a finished row, as transformers' generate.

    End ids: the caller's (``None`` or ``[]``: none, no row ends early), else the exporter's
    record of the model's own. Pad: the caller's, the record's, else the first end id, else 0.
    """
    eos_list = _eos_list(info, eos_token_id)
    eos_set = set(eos_list)
    pad = pad_token_id if pad_token_id is not None else info.get("pad_token_id")
    if pad is None:
        pad = int(eos_list[0]) if eos_list else 0
    return eos_set, int(pad)


def _eos_list(info: dict[str, Any], eos_token_id: Any) -> list[int]:
    """The end ids in the order given (transformers pads with the first)."""
    eos = info.get("eos_token_id") if isinstance(eos_token_id, _ModelOwn) else eos_token_id
    return [] if eos is None else [int(e) for e in (eos if isinstance(eos, (list, tuple))
                                                   else [eos])]


def _beam_settings(info: dict[str, Any], num_beams: int | None, do_sample: bool,
                   length_penalty: float | None, early_stopping: Any
                   ) -> tuple[int, float, bool | str] | None:
    """(beams, length penalty, early stopping) for beam search, or None for one beam.

    Unset values come from the model's generation config as recorded at export (transformers'
    defaults: 1 beam, length_penalty 1.0, early_stopping False); a recorded ``num_beams``
    applies only without sampling, as the caller's ``do_sample=True`` asks for one beam.
    """
    from onnxbridge._beam import check_beam_options

    given = num_beams is not None
    if num_beams is None:
        num_beams = 1 if do_sample else int(info.get("num_beams") or 1)
    penalty = float(info.get("length_penalty", 1.0) if length_penalty is None
                    else length_penalty)
    stopping = info.get("early_stopping", False) if early_stopping is None else early_stopping
    check_beam_options(num_beams, do_sample and given, penalty, stopping,
                       int(info.get("vocab_size") or 0))
    return None if num_beams == 1 else (num_beams, penalty, stopping)


def _cache_device(session: Any) -> tuple[str, int]:
    """Where the KV cache stays between steps: the device of the session's first provider.

    On CUDA (and TensorRT, which runs on CUDA memory) the ``present.*`` outputs are bound to the
    GPU and fed back as the next step's ``past_key_values.*`` without a trip through the host.
    """
    first = session.get_providers()[0]
    if first in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        options = session.get_provider_options().get(first, {})
        return "cuda", int(options.get("device_id", 0) or 0)
    return "cpu", 0


class _StepBinding:
    """The calls the token loop makes on an IOBinding each step, at the least cost.

    onnxruntime's Python IOBinding wraps a native one; its wrapper methods do bookkeeping
    (an OrtValue wrapper per output, a device object per bound output) that costs more than a
    tiny decoder's whole step. Where the native binding is there (``_iobinding`` and the
    session's ``_sess``, as in onnxruntime 1.x) the loop calls it directly; otherwise it uses
    the public methods. Arrays bound as inputs must outlive the run: the caller keeps them.
    """

    def __init__(self, session: Any, binding: Any, device: str, device_id: int,
                 native: bool = True) -> None:
        self.session, self.binding = session, binding
        self.device, self.device_id = device, device_id
        self.raw: Any = None
        if native:
            try:
                from onnxruntime.capi import _pybind_state as c

                raw, sess = binding._iobinding, session._sess
                for method in ("bind_input", "bind_ortvalue_input", "bind_output",
                               "get_outputs"):
                    getattr(raw, method)
                import onnxruntime

                maker = getattr(onnxruntime, "OrtDevice", None)
                if maker is not None and hasattr(maker, "make"):  # what bind_output itself uses
                    self.c_device = maker.make(device, device_id)._get_c_device()
                else:
                    kind = c.OrtDevice.cuda() if device == "cuda" else c.OrtDevice.cpu()
                    self.c_device = c.OrtDevice(kind, c.OrtDevice.default_memory(), device_id)
                self.run_native = sess.run_with_iobinding
                self.raw = raw
            except (ImportError, AttributeError, TypeError):
                self.raw = None

    def host_input(self, name: str, array: np.ndarray) -> None:
        """A host array as an input (copied to the device now when the session runs there)."""
        if self.raw is not None:
            self.raw.bind_input(name, array)
        else:
            self.binding.bind_cpu_input(name, array)

    def value_input(self, name: str, value: Any) -> None:
        """A value from :meth:`outputs` (an earlier run's output) as an input, no copy."""
        if self.raw is not None:
            self.raw.bind_ortvalue_input(name, value)
        else:
            self.binding.bind_ortvalue_input(name, value)

    def device_output(self, name: str) -> None:
        """An output that onnxruntime allocates on the cache's device."""
        if self.raw is not None:
            self.raw.bind_output(name, self.c_device)
        else:
            self.binding.bind_output(name, self.device, self.device_id)

    def run(self) -> None:
        if self.raw is not None:
            self.run_native(self.raw, None)
        else:
            self.session.run_with_iobinding(self.binding)

    def outputs(self) -> Any:
        """The last run's outputs, in the session's output order."""
        return self.raw.get_outputs() if self.raw is not None else self.binding.get_outputs()


def _shared_cache_possible(session: Any, fused: bool) -> bool:
    """Whether past and present can be one preallocated buffer: a fused graph (every cache
    goes through GroupQueryAttention, which writes the new entries into a shared buffer) on
    the CPU provider. Elsewhere (the exported graph's Concat, CUDA: not checked on a GPU yet)
    the cache grows by one position a step."""
    return fused and _cache_device(session) == ("cpu", 0) and \
        session.get_providers()[0] == "CPUExecutionProvider"


def _greedy_or_sampled(session: Any, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int,
                       uses_positions: bool, eos_set: set[int], pad: int, do_sample: bool,
                       temperature: float, top_k: int | None, top_p: float | None,
                       rng: np.random.Generator, native: bool = True,
                       shared: bool = False) -> np.ndarray:
    """The token loop: IO binding, the cache kept as OrtValues, buffers allocated once.

    With ``shared=True`` (a fused graph on CPU, see :func:`_shared_cache_possible`) each
    layer's cache is one buffer of the final length, bound once as both ``past_key_values.*``
    and ``present.*``: GroupQueryAttention writes each step's keys and values into it in place,
    nothing is allocated or rebound per step. Otherwise each step binds the previous step's
    ``present.*`` OrtValues as ``past_key_values.*`` (no copy). Either way the next token's
    logits go into one preallocated buffer, and input ids, mask and positions come from buffers
    filled in place. ``native=False`` keeps to onnxruntime's public IOBinding methods.
    """
    import onnxruntime

    inputs = {i.name: i for i in session.get_inputs()}
    past_names = [n for n in inputs if n.startswith("past_key_values.")]
    present_names = [o.name for o in session.get_outputs()][1:]
    batch, prompt = ids.shape
    out = np.empty((batch, prompt + max_new_tokens), dtype=np.int64)
    out[:, :prompt] = ids
    if max_new_tokens == 0:
        return out
    masks = np.ones((batch, prompt + max_new_tokens), dtype=np.int64)
    masks[:, :prompt] = mask
    device, device_id = _cache_device(session)
    binding = session.io_binding()
    binding.bind_output("logits", "cpu")
    # the cache: empty (it grows), or the final length (shared by past and present); the
    # arrays stay referenced here while the session writes into them
    length = prompt + max_new_tokens - 1 if shared else 0
    buffers: list[np.ndarray] = []
    for name in past_names:
        shape, elem = inputs[name].shape, inputs[name].type
        if "bfloat16" in elem:
            raise InputError("a bfloat16 cache cannot be made on this provider; export the"
                             " compute in float32")
        dtype = np.float16 if "float16" in elem else np.float32
        buffers.append(np.zeros((batch, int(shape[1]), length, int(shape[3])), dtype=dtype))
        value = onnxruntime.OrtValue.ortvalue_from_numpy(buffers[-1], device, device_id)
        binding.bind_ortvalue_input(name, value)
        if shared:
            binding.bind_ortvalue_output(name.replace("past_key_values.", "present.", 1), value)
    binding.bind_cpu_input("input_ids", ids)
    binding.bind_cpu_input("attention_mask", np.ascontiguousarray(masks[:, :prompt]))
    if uses_positions:
        binding.bind_cpu_input("position_ids",
                               np.where(mask == 0, 1, np.cumsum(mask, axis=-1) - 1))
    if not shared:
        for name in present_names:
            binding.bind_output(name, device, device_id)
    session.run_with_iobinding(binding)
    first = binding.get_outputs()[0].numpy()
    logits = first[:, -1, :]
    step = _StepBinding(session, binding, device, device_id, native)
    results = None if shared else step.outputs()
    # From now on one token per row: fixed-size buffers, bound once, filled in place.
    step_ids = np.empty((batch, 1), dtype=np.int64)
    position = mask.sum(axis=-1, keepdims=True).astype(np.int64)  # cumsum(mask) - 1, next token
    step_logits = np.empty((batch, 1, first.shape[-1]), dtype=first.dtype)
    binding.bind_ortvalue_output("logits", onnxruntime.OrtValue.ortvalue_from_numpy(step_logits))
    finished = np.zeros(batch, dtype=bool)
    any_finished = False
    eos = np.array(sorted(eos_set), dtype=np.int64)
    single_eos = int(eos[0]) if eos.size == 1 else None
    pasts = list(zip(range(1, len(past_names) + 1), past_names, strict=True))
    for index in range(max_new_tokens):
        nxt = _next_tokens(logits, do_sample, temperature, top_k, top_p, rng)
        if any_finished:
            nxt = np.where(finished, pad, nxt)
        out[:, prompt + index] = nxt
        if single_eos is not None:  # a plain comparison: np.isin costs more than a tiny step
            stop = nxt == single_eos
        elif eos.size:
            stop = (nxt[:, None] == eos).any(axis=1)
        if eos.size and stop.any():
            finished |= stop
            any_finished = True
            if finished.all():
                return out[:, :prompt + index + 1]
        if index + 1 == max_new_tokens:
            break
        step_ids[:, 0] = nxt
        total = prompt + index + 1
        # bound again each step: on a GPU provider onnxruntime copies a host input to the device
        # when it is bound, so an in-place change of the bound array would never reach it
        step.host_input("input_ids", step_ids)
        if uses_positions:
            step.host_input("position_ids", position)
        # the mask covers the keys this step sees: a sliding-window model's cache keeps only
        # the window, and its mask columns must be those of the kept positions (the last ones)
        keys = total if results is None else min(total, cache_length(results[1]) + 1)
        step_mask = masks[:, total - keys:total]
        step.host_input("attention_mask", step_mask if batch == 1 else
                        np.ascontiguousarray(step_mask))
        if results is not None:
            for i, name in pasts:
                step.value_input(name, results[i])
            for name in present_names:
                step.device_output(name)
        step.run()
        if results is not None:
            results = step.outputs()
        logits = step_logits[:, -1, :]
        if uses_positions:
            position += 1
    return out


def _encode_on_device(encoder: Any, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """The encoder's outputs by name, left where its provider computes them (the decoder
    steps bind them as they are)."""
    binding = encoder.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, np.ascontiguousarray(value))
    names = [o.name for o in encoder.get_outputs()]
    device, device_id = _cache_device(encoder)
    for name in names:
        binding.bind_output(name, device, device_id)
    encoder.run_with_iobinding(binding)
    return dict(zip(names, binding.get_outputs(), strict=True))


def _host_array(value: Any) -> np.ndarray:
    """A numpy array from token ids or a mask given as numpy, a list or a torch tensor."""
    return np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)


BUNDLE_FILES = ("encoder.onnx", "decoder.onnx")


class Seq2SeqModel(OnnxModel):
    """An encoder-decoder bundle: this model is the decoder with a cache, ``encoder`` the encoder.

    Made by ``to_onnx(model, ids, task="text2text-generation")`` (inferred for transformers
    encoder-decoder classes); ``save(folder)`` writes ``encoder.onnx`` and ``decoder.onnx``
    into one folder and ``onnxbridge.load(folder)`` returns the bundle again.
    """

    def __init__(self, proto: Any, *, encoder: OnnxModel, **kwargs: Any) -> None:
        super().__init__(proto, **kwargs)
        self.encoder = encoder

    @classmethod
    def from_protos(cls, proto: Any, *, encoder: Any, data_dir: Any = None,
                    data_owner: Any = None) -> Seq2SeqModel:
        """The bundle of a decoder proto and an encoder proto (or OnnxModel)."""
        if not isinstance(encoder, OnnxModel):
            encoder = OnnxModel(encoder, data_dir=data_dir, data_owner=data_owner)
        return cls(proto, encoder=encoder, data_dir=data_dir, data_owner=data_owner)

    @property
    def generation_info(self) -> dict[str, Any]:
        """What the exporter recorded: layers, encoder input, start, eos, pad and forced ids."""
        raw = self.metadata.get("onnxbridge.generation")
        if not raw or self.metadata.get("onnxbridge.task") != "text2text-generation":
            raise InputError("this model has no text2text-generation metadata; export it with"
                             " to_onnx(model, ids, task='text2text-generation')")
        info: dict[str, Any] = json.loads(raw)
        return info

    def save(self, path: Any, *, external_data: bool | None = None) -> Path:
        """Write the encoder and the decoder into the folder ``path`` (made if missing)."""
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder} is a file; an encoder-decoder bundle is saved as a"
                             " folder (encoder.onnx and decoder.onnx): pass a folder path")
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save(folder / BUNDLE_FILES[0], external_data=external_data)
        super().save(folder / BUNDLE_FILES[1], external_data=external_data)
        return folder

    def to_bytes(self) -> bytes:
        raise ValueError("an encoder-decoder bundle is two models; save it with save(folder)"
                         " (or take m.encoder.to_bytes() and the decoder's m.proto)")

    def encode(self, input_ids: Any = None, attention_mask: Any = None, *,
               input_features: Any = None, providers: Any = None,
               threads: int | None = None) -> dict[str, np.ndarray]:
        """The encoder's outputs (hidden states and the cross-attention keys/values) as arrays."""
        feeds = self._encoder_feeds(input_ids, attention_mask, input_features)
        session = self.encoder.session(providers, threads=threads)
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(None, feeds), strict=True))

    def _encoder_feeds(self, input_ids: Any, attention_mask: Any,
                       input_features: Any) -> dict[str, np.ndarray]:
        info = self.generation_info
        name = info.get("encoder_input", "input_ids")
        if name == "input_features":
            given = input_features if input_features is not None else input_ids
            if given is None:
                raise InputError("this model's encoder takes input_features (audio features"
                                 " [batch, mel, frames]); pass input_features=")
            x = _host_array(given)
            if x.ndim != 3 or x.dtype.kind != "f":
                raise InputError(f"input_features must be float [batch, mel, frames]; got"
                                 f" {x.dtype} {list(x.shape)}")
            spec = next((i for i in self.encoder.inputs if i.name == "input_features"), None)
            dtype = spec.dtype if spec is not None and spec.dtype is not None else np.float32
            return {"input_features": x.astype(dtype)}  # float16 for a float16 export
        if input_ids is None:
            raise InputError("pass input_ids (the encoder's token ids [batch, sequence])")
        ids = _host_array(input_ids)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.dtype.kind not in "iu" or ids.shape[1] == 0:
            raise InputError(f"input_ids must be integer token ids [batch, sequence]; got"
                             f" {ids.dtype} {list(ids.shape)}")
        ids = ids.astype(np.int64)
        mask = np.ones_like(ids) if attention_mask is None else _host_array(
            attention_mask).astype(np.int64)
        if mask.shape != ids.shape:
            raise InputError(f"attention_mask {list(mask.shape)} must have input_ids' shape"
                             f" {list(ids.shape)}")
        return {"input_ids": ids, "attention_mask": mask}

    def generate(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        *,
        input_features: Any = None,
        decoder_input_ids: Any = None,
        max_new_tokens: int = 20,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = 50,
        top_p: float | None = 1.0,
        eos_token_id: int | Sequence[int] | None = MODEL_OWN,
        pad_token_id: int | None = None,
        decoder_start_token_id: int | None = None,
        seed: int | None = None,
        providers: Any = None,
        threads: int | None = None,
        num_beams: int | None = None,
        length_penalty: float | None = None,
        early_stopping: bool | str | None = None,
    ) -> np.ndarray:
        """Decoder token ids [batch, 1 + new] (start token first), as transformers' generate.

        The encoder runs once; its cross-attention keys/values and each step's ``present.*``
        stay OrtValues bound through IO binding. Greedy unless ``do_sample=True``; the model's
        ``forced_bos_token_id``, ``forced_eos_token_id``, ``suppress_tokens`` and
        ``begin_suppress_tokens`` apply as in transformers. A row stops at ``eos_token_id`` (the
        model's own when not given; ``None``: never) and is filled with ``pad_token_id`` after.
        ``num_beams > 1``: beam search, as for decoders (the best beam of each row). Whisper:
        pass ``input_features``.
        """
        info = self.generation_info
        enc_feeds = self._encoder_feeds(input_ids, attention_mask, input_features)
        batch = next(iter(enc_feeds.values())).shape[0]
        if max_new_tokens < 0:
            raise InputError("max_new_tokens must be >= 0")
        if do_sample and temperature <= 0:
            raise InputError("temperature must be > 0 when do_sample=True")
        start = decoder_start_token_id if decoder_start_token_id is not None else info.get(
            "decoder_start_token_id")
        if decoder_input_ids is not None:
            out = _host_array(decoder_input_ids).astype(np.int64)
            if out.ndim != 2 or out.shape[0] != batch or out.shape[1] == 0:
                raise InputError(f"decoder_input_ids must be [batch={batch}, length>0]; got"
                                 f" {list(out.shape)}")
        else:
            out = np.full((batch, 1), 0 if start is None else int(start), dtype=np.int64)
        eos_set, pad = _eos_and_pad(info, eos_token_id, pad_token_id)
        forced_bos, forced_eos = info.get("forced_bos_token_id"), info.get("forced_eos_token_id")
        if isinstance(forced_eos, list):
            forced_eos = min(forced_eos) if forced_eos else None
        max_length = out.shape[1] + max_new_tokens
        begin_length = out.shape[1]
        suppress = [int(t) for t in info.get("suppress_tokens") or ()]
        begin_suppress = [int(t) for t in info.get("begin_suppress_tokens") or ()]
        rng = np.random.default_rng(seed)
        beams = _beam_settings(info, num_beams, do_sample, length_penalty, early_stopping)
        if beams is not None:
            return self._beams(enc_feeds, out, max_new_tokens, _eos_list(info, eos_token_id),
                               pad, beams, providers, threads)
        import onnxruntime

        cross = _encode_on_device(self.encoder.session(providers, threads=threads), enc_feeds)

        session = self.session(providers, threads=threads)
        inputs = {i.name: i for i in session.get_inputs()}
        present_names = [o.name for o in session.get_outputs()]
        device, device_id = _cache_device(session)
        past: dict[str, Any] = {}
        for name, spec in inputs.items():
            if name.startswith("past_key_values.") and name.endswith((".decoder.key",
                                                                       ".decoder.value")):
                dtype = np.float16 if "float16" in spec.type else np.float32
                empty = np.zeros((batch, int(spec.shape[1]), 0, int(spec.shape[3])), dtype=dtype)
                past[name] = onnxruntime.OrtValue.ortvalue_from_numpy(empty, device, device_id)
            elif name.startswith("past_key_values."):
                past[name] = cross[name.replace("past_key_values.", "present.", 1)]
        mask = enc_feeds.get("attention_mask")
        binding = session.io_binding()
        finished = np.zeros(batch, dtype=bool)
        step_ids = out
        while out.shape[1] < max_length:
            binding.clear_binding_inputs()
            binding.clear_binding_outputs()
            binding.bind_cpu_input("decoder_input_ids", np.ascontiguousarray(step_ids))
            if mask is not None and "encoder_attention_mask" in inputs:
                binding.bind_cpu_input("encoder_attention_mask", np.ascontiguousarray(mask))
            for name, value in past.items():
                binding.bind_ortvalue_input(name, value)
            binding.bind_output(present_names[0], "cpu")  # the logits, read on the host
            for name in present_names[1:]:
                binding.bind_output(name, device, device_id)
            session.run_with_iobinding(binding)
            results = binding.get_outputs()
            logits = results[0].numpy()[:, -1, :]
            for name, value in zip(present_names[1:], results[1:], strict=True):
                past[name.replace("present.", "past_key_values.", 1)] = value
            cur = out.shape[1]
            if suppress or (begin_suppress and cur == begin_length):
                logits = logits.copy()  # the generation config's suppressed tokens never win
                logits[:, suppress] = -np.inf
                if cur == begin_length:
                    logits[:, begin_suppress] = -np.inf
            if forced_bos is not None and cur == 1:
                nxt = np.full(batch, int(forced_bos), dtype=np.int64)
            elif forced_eos is not None and cur == max_length - 1:
                nxt = np.full(batch, int(forced_eos), dtype=np.int64)
            else:
                nxt = _next_tokens(logits, do_sample, temperature, top_k, top_p, rng)
            nxt = np.where(finished, pad, nxt).astype(np.int64)
            out = np.concatenate([out, nxt[:, None]], axis=1)
            if eos_set:
                finished |= np.isin(nxt, list(eos_set))
            if finished.all():
                break
            step_ids = nxt[:, None]
        return out


    def _beams(self, enc_feeds: dict[str, np.ndarray], start: np.ndarray, max_new_tokens: int,
               eos: list[int], pad: int, beams: tuple[int, float, Any], providers: Any,
               threads: int | None) -> np.ndarray:
        """Beam search: the encoder on each row repeated per beam, then the beams' loop."""
        from onnxbridge._beam import expand, seq2seq_beams

        info = self.generation_info
        num_beams = beams[0]
        feeds = {name: expand(value, num_beams) for name, value in enc_feeds.items()}
        cross = _encode_on_device(self.encoder.session(providers, threads=threads), feeds)
        forced_bos, forced_eos = info.get("forced_bos_token_id"), info.get("forced_eos_token_id")
        if isinstance(forced_eos, list):
            forced_eos = min(forced_eos) if forced_eos else None
        suppress = [int(t) for t in info.get("suppress_tokens") or ()]
        begin_suppress = [int(t) for t in info.get("begin_suppress_tokens") or ()]
        begin, max_length = start.shape[1], start.shape[1] + max_new_tokens

        def process(log_probs: np.ndarray, length: int) -> None:
            """transformers' logits processors, on log-probabilities as its beam search does."""
            log_probs[:, suppress] = -np.inf
            if length == begin:
                log_probs[:, begin_suppress] = -np.inf
            forced = forced_bos if length == 1 else forced_eos if length == max_length - 1 \
                else None
            if forced is not None:
                log_probs[:] = -np.inf
                log_probs[:, int(forced)] = 0.0

        session = self.session(providers, threads=threads)
        return seq2seq_beams(session, start, cross, feeds.get("attention_mask"), max_new_tokens,
                             eos, pad, *beams, process, *_cache_device(session))


def load_bundle(folder: Any, loader: Any) -> Seq2SeqModel:
    """The bundle saved in ``folder``; ``loader(path)`` loads one model file (onnxbridge.load)."""
    root = Path(folder)
    missing = [name for name in BUNDLE_FILES if not (root / name).is_file()]
    if missing:
        from onnxbridge.errors import LoadError

        raise LoadError(f"{root} is a directory without {' and '.join(missing)}; load() of a"
                        " folder reads an encoder-decoder bundle saved by Seq2SeqModel.save"
                        " (encoder.onnx and decoder.onnx); pass a model file's path otherwise")
    decoder = loader(root / BUNDLE_FILES[1])
    encoder = loader(root / BUNDLE_FILES[0])
    model = Seq2SeqModel(decoder.proto, encoder=encoder, source=str(root),
                         data_dir=decoder.data_dir)
    model.checker_findings = decoder.checker_findings
    return model
