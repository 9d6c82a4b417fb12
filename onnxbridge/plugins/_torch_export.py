"""The PyTorch converter's work: read the sample, plan dynamic axes, export, tidy, verify hooks.

Imported only when a torch model is converted, so torch is imported at module level here.

How a module is exported:

1. The sample (a tensor, a tuple of tensors, or a dict of keyword tensors) becomes a list of
   positional tensors with names: forward's parameter names, or the dict's keys.
2. The model runs once (eval mode, no_grad) to learn its outputs, which are flattened into named
   tensors (:func:`flatten_outputs` documents the order and the names).
3. A small wrapper module takes the inputs positionally and returns that flat tuple, so both
   exporters see the same plain signature, and the ONNX graph's outputs are ours to name.
4. Dynamic axes are planned (batch, a transformers model's sequence, the user's ``dynamic_axes``);
   any such axis of size 1 in the sample is enlarged to 2 for the export, since torch.export
   specialises sizes 0 and 1 and the graph would then refuse other sizes.
5. The torch.export-based exporter runs first, the TorchScript one when it fails (or the one
   asked for), quietly; the result is tidied (initializer names, inputs an exporter dropped).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch

from onnxbridge.errors import ConversionError, UnsupportedOperatorError
from onnxbridge.registry import ConversionResult, ConvertOptions, mro_paths

__all__ = ["convert_module", "flatten_outputs"]

EXPORTERS = ("auto", "dynamo", "torchscript")
_WRAPPED = "model"  # attribute under which the wrapper holds the user's module
_TRANSFORMERS_BASE = "transformers.modeling_utils.PreTrainedModel"
# Inputs of a transformers model whose axis 1 is the token sequence (for input_values, the
# raw audio of Wav2Vec2, HuBERT, WavLM ...: the samples, which its attention_mask shares).
_SEQUENCE_INPUTS = frozenset({
    "input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds",
    "decoder_input_ids", "decoder_attention_mask", "decoder_inputs_embeds", "input_values",
})
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_DYNAMO_MISSING_OP = re.compile(r"No ONNX function found for <OpOverload\(op='([\w.]+)'")
_TORCHSCRIPT_MISSING_OP = re.compile(r"Exporting the operator '([\w:.]+)' to ONNX")


# -- the sample --------------------------------------------------------------------------------
Structure = Any  # None for a tensor, or ("tuple" | "list", [Structure, ...]) for a nested container


@dataclass
class InputPlan:
    """How the user's sample maps to the ONNX inputs.

    ``style`` is "tensor", "tuple" (positional arguments), "dict" (keyword arguments) or "list"
    (one argument that is a list of tensors, as torchvision's detection models take).
    ``args`` names the call's arguments; ``structure`` says, per argument, whether it is a
    tensor or a nested tuple/list of tensors (an LSTM's ``(h0, c0)``); ``names`` are the ONNX
    inputs, one per tensor, depth first (``hx_0``, ``hx_1`` for a nested pair).
    """

    style: str
    names: list[str]
    args: list[str] = field(default_factory=list)
    structure: list[Structure] = field(default_factory=list)
    # Keyword arguments added to every call (use_cache=False for transformers models).
    fixed_kwargs: dict[str, Any] = field(default_factory=dict)


def _forward_parameters(model: torch.nn.Module) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return []


def _positional_names(model: torch.nn.Module, count: int) -> list[str]:
    names: list[str] = []
    for p in _forward_parameters(model):
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) or len(names) == count:
            break
        names.append(p.name)
    if len(names) < count:
        if count == 1:
            return ["input"]
        names += [f"input_{i}" for i in range(len(names), count)]
    return names


def _model_device(model: torch.nn.Module) -> torch.device:
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def _as_tensor(value: Any, name: str, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value)).to(device)
    raise ConversionError(
        f"sample input {name!r} is a {type(value).__name__}; a PyTorch sample must hold tensors."
        " Pass a tensor, a tuple of tensors, or a dict of keyword tensors (what you would give"
        " the model's forward), e.g. torch.randn(1, 3, 224, 224); nested tuples or lists of"
        " tensors (an LSTM's (h0, c0), a detection model's [image]) are accepted too",
        converter="torch",
    )


def _structure(value: Any, name: str) -> tuple[Structure, list[str]]:
    """A value's nesting and the names of its tensors, depth first."""
    if isinstance(value, (tuple, list)) and not isinstance(value, torch.Tensor):
        if not value:
            raise ConversionError(f"sample input {name!r} is an empty {type(value).__name__}",
                                  converter="torch")
        specs, names = [], []
        for i, item in enumerate(value):
            spec, sub = _structure(item, f"{name}_{i}")
            specs.append(spec)
            names += sub
        return ("list" if isinstance(value, list) else "tuple", specs), names
    return None, [name]


def _leaves(value: Any, spec: Structure) -> list[Any]:
    if spec is None:
        return [value]
    if not isinstance(value, (tuple, list)) or len(value) != len(spec[1]):
        raise ConversionError(
            f"expected a {spec[0]} of {len(spec[1])} item(s) as in the sample, got"
            f" {type(value).__name__}", converter="torch")
    return [leaf for item, sub in zip(value, spec[1], strict=True) for leaf in _leaves(item, sub)]


def _rebuild(spec: Structure, items: Iterator[Any]) -> Any:
    if spec is None:
        return next(items)
    parts = [_rebuild(sub, items) for sub in spec[1]]
    return parts if spec[0] == "list" else tuple(parts)


def plan_inputs(
    model: torch.nn.Module, sample: Any, input_names: Sequence[str] | None
) -> InputPlan:
    """Read the sample's structure and name its tensors."""
    params = _forward_parameters(model)
    if isinstance(sample, Mapping):
        if not sample:
            raise ConversionError("the sample is an empty dict; give the model's inputs",
                                  converter="torch")
        bad = [k for k in sample if not isinstance(k, str)]
        if bad:
            raise ConversionError(f"sample dict keys must be argument names, got {bad!r}",
                                  converter="torch")
        if input_names is not None:
            raise ConversionError(
                "input_names= cannot rename a dict sample: its keys are the input names",
                converter="torch",
            )
        known = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        takes_any = any(p.kind == p.VAR_KEYWORD for p in params)
        unknown = [k for k in sample if k not in known]
        if params and unknown and not takes_any:
            raise ConversionError(
                f"sample key(s) {unknown} are not arguments of {type(model).__name__}.forward;"
                f" it takes {sorted(known)}",
                converter="torch",
            )
        plan = InputPlan("dict", [], list(sample))
        values = list(sample.values())
    elif isinstance(sample, list):
        # One argument that is a list of tensors: torchvision detection models' images.
        plan = InputPlan("list", [], _positional_names(model, 1))
        values = [sample]
        if not sample:
            raise ConversionError("the sample is an empty list; give the model's inputs",
                                  converter="torch")
    elif isinstance(sample, tuple):
        if not sample:
            raise ConversionError("the sample is an empty tuple; give the model's inputs",
                                  converter="torch")
        plan = InputPlan("tuple", [], _positional_names(model, len(sample)))
        values = list(sample)
    else:
        plan = InputPlan("tensor", [], _positional_names(model, 1))
        values = [sample]
    for arg, value in zip(plan.args, values, strict=True):
        spec, names = _structure(value, arg)
        plan.structure.append(spec)
        plan.names += names
    if input_names is not None:
        names = [str(n) for n in input_names]
        if len(names) != len(plan.names) or len(set(names)) != len(names):
            raise ConversionError(
                f"input_names={names} must give {len(plan.names)} distinct name(s), one per"
                " tensor of the sample",
                converter="torch",
            )
        plan.names = names
    if _is_transformers(model):
        takes = {p.name for p in params}
        if "use_cache" in takes and "use_cache" not in plan.args:
            # A key/value cache is a Python object, not a tensor output.
            plan.fixed_kwargs["use_cache"] = False
    return plan


def _sample_values(plan: InputPlan, sample: Any) -> list[Any]:
    """The sample's top-level values, one per call argument."""
    if plan.style == "dict":
        if not isinstance(sample, Mapping):
            raise ConversionError(f"expected a dict sample with keys {plan.args}",
                                  converter="torch")
        missing = [k for k in plan.args if k not in sample]
        if missing:
            raise ConversionError(f"the sample lacks the key(s) {missing}", converter="torch")
        return [sample[k] for k in plan.args]
    if plan.style == "tuple":
        if not isinstance(sample, tuple) or len(sample) != len(plan.args):
            raise ConversionError(f"expected a tuple of {len(plan.args)} item(s)",
                                  converter="torch")
        return list(sample)
    return [sample]


def sample_tensors(plan: InputPlan, sample: Any, device: torch.device) -> list[torch.Tensor]:
    """The sample's tensors in ONNX input order (numpy arrays are accepted too).

    The sample comes in the user's format or flattened to one tensor per ONNX input (a tuple,
    or a dict keyed by the ONNX input names), as onnxbridge's verification feeds it.
    """
    if isinstance(sample, Mapping) and list(sample) == plan.names and plan.names != plan.args:
        leaves = list(sample.values())
    elif (isinstance(sample, tuple) and len(sample) == len(plan.names) != len(plan.args)
          and all(not isinstance(v, (tuple, list)) for v in sample)):
        leaves = list(sample)
    else:
        values = _sample_values(plan, sample)
        leaves = [leaf for value, spec in zip(values, plan.structure, strict=True)
                  for leaf in _leaves(value, spec)]
    return [_as_tensor(v, n, device) for n, v in zip(plan.names, leaves, strict=True)]


def user_format(plan: InputPlan, tensors: Sequence[Any]) -> Any:
    """Flat tensors put back into the user's sample format."""
    items = iter(tensors)
    values = [_rebuild(spec, items) for spec in plan.structure]
    if plan.style == "dict":
        return dict(zip(plan.args, values, strict=True))
    return tuple(values) if plan.style == "tuple" else values[0]


def _call(model: torch.nn.Module, plan: InputPlan, tensors: Sequence[torch.Tensor]) -> Any:
    items = iter(tensors)
    values = [_rebuild(spec, items) for spec in plan.structure]
    if plan.style == "dict":
        return model(**dict(zip(plan.args, values, strict=True)), **plan.fixed_kwargs)
    return model(*values, **plan.fixed_kwargs)


def _copies(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Copies to call the model with: a forward that writes into its inputs in place
    (``x.mul_(2)``, ``ReLU(inplace=True)`` first) must change neither the user's sample nor the
    arrays verification feeds to onnxruntime, nor the next run's inputs."""
    return [t.clone() if isinstance(t, torch.Tensor) else t for t in tensors]


def _is_transformers(model: object) -> bool:
    return _TRANSFORMERS_BASE in mro_paths(model)


# -- outputs -----------------------------------------------------------------------------------
def flatten_outputs(value: Any) -> tuple[list[tuple[str, torch.Tensor]], list[str]]:
    """The model's outputs as (name, tensor) pairs in ONNX output order, and what was skipped.

    Depth first, in the order the model returns them: a lone tensor is ``output``; items of a
    tuple or list are ``output_0``, ``output_1`` ...; a dict, a transformers ModelOutput or a
    namedtuple gives its keys (``logits``, ``last_hidden_state``); nested containers join the
    parts: ``output_1_0`` (tuple in a tuple), ``hidden_states_2`` (tuple in a dict),
    ``scores.cls`` (dict in a dict). None entries are left out; other non-tensor values (a
    cache object, a Python number) cannot be ONNX outputs and are listed as skipped.
    """
    out: list[tuple[str, torch.Tensor]] = []
    skipped: list[str] = []

    def walk(item: Any, name: str | None) -> None:
        if isinstance(item, torch.Tensor):
            out.append((name or "output", item))
        elif item is None:
            return
        elif isinstance(item, Mapping) or hasattr(item, "_fields"):
            pairs = item.items() if isinstance(item, Mapping) else zip(item._fields, item, strict=True)
            for key, sub in pairs:
                walk(sub, str(key) if name is None else f"{name}.{key}")
        elif isinstance(item, (tuple, list)):
            for i, sub in enumerate(item):
                walk(sub, f"{name or 'output'}_{i}")
        else:
            skipped.append(f"{name or 'output'} ({type(item).__name__})")

    walk(value, None)
    return out, skipped


def _unique_names(names: Sequence[str], taken: set[str]) -> list[str]:
    result = []
    used = set(taken)
    for name in names:
        candidate, k = name, 1
        while candidate in used:
            candidate, k = f"{name}_{k}", k + 1
        used.add(candidate)
        result.append(candidate)
    return result


class _FlatModule(torch.nn.Module):
    """Takes the inputs positionally and returns the outputs as a flat tuple of tensors."""

    def __init__(self, model: torch.nn.Module, plan: InputPlan, count: int) -> None:
        super().__init__()
        setattr(self, _WRAPPED, model)
        self.plan = plan
        self.count = count

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        flat, _ = flatten_outputs(_call(getattr(self, _WRAPPED), self.plan, args))
        if len(flat) != self.count:
            raise RuntimeError(
                f"the model returned {len(flat)} tensors here but {self.count} on the sample;"
                " its outputs must not depend on the input values"
            )
        return tuple(t for _, t in flat)


# -- modes and quiet ---------------------------------------------------------------------------
class BufferSnapshot:
    """A copy of every buffer of a module, taken once, to put back after each of onnxbridge's
    runs: one copy for a whole conversion instead of one per call (the sample, the probes, the
    export, each reference run of verification)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.entries = [
            (module, key, value, value.detach().clone())
            for module in model.modules() for key, value in module._buffers.items()
            if isinstance(value, torch.Tensor)
        ]

    def restore(self) -> None:
        """Each buffer object back in its module, with its values as when the copy was taken."""
        with torch.no_grad():
            for module, key, value, copy in self.entries:
                module._buffers[key] = value
                if value.shape == copy.shape and not torch.equal(value, copy):
                    value.copy_(copy)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module, snapshot: BufferSnapshot | None = None) -> Iterator[None]:
    """Eval mode and no_grad inside; every submodule's train/eval flag and buffer restored after.

    A model may update its own state in forward (a step counter, running statistics kept in
    eval): onnxbridge's own runs (the sample, the probes, the exporters' traces, the reference
    runs of verification) must not leave a trace in the user's model. ``snapshot``: the
    buffers' copy to restore from (taken before the first of several runs); None takes one.
    """
    flags = [(m, m.training) for m in model.modules()]
    if snapshot is None or snapshot.model is not model:
        snapshot = BufferSnapshot(model)
    for module, _ in flags:  # what eval() does, also for modules whose eval() raises
        module.training = False  # (the GraphModule of a loaded torch.export program)
    try:
        with torch.no_grad():
            yield
    finally:
        for module, flag in flags:
            module.training = flag
        snapshot.restore()


@contextlib.contextmanager
def quiet(record: list[warnings.WarningMessage] | None = None) -> Iterator[None]:
    """Silence the exporters: Python warnings, prints, and C++ output to the fds 1 and 2.

    With ``record``, the Python warnings are appended to it instead of dropped.
    """
    buffer = io.StringIO()
    saved: list[tuple[int, int]] = []
    with tempfile.TemporaryFile() as sink:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(sink.fileno(), fd)
            except OSError:
                pass
        try:
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer), \
                    warnings.catch_warnings(record=record is not None) as caught:
                warnings.simplefilter("ignore" if record is None else "always")
                try:
                    yield
                finally:
                    if record is not None and caught is not None:
                        record.extend(caught)
        finally:
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)


# -- dynamic axes ------------------------------------------------------------------------------
AxisPlan = list[dict[int, str]]  # per input: axis -> symbolic name


@contextlib.contextmanager
def watch_rnns(model: torch.nn.Module) -> Iterator[list[tuple[bool, tuple[int, ...]]]]:
    """Record (batch_first, input shape) of every recurrent layer called, in call order."""
    seen: list[tuple[bool, tuple[int, ...]]] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], torch.Tensor):
            seen.append((bool(getattr(module, "batch_first", False)), tuple(args[0].shape)))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.RNNBase)]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class _Group:
    """Axes that are one thing (the batch, the sequence) and must change together."""

    label: str
    members: dict[int, int]  # input index -> axis
    # Other axes an input's member could be, tried in order when the first choice fails.
    alternatives: dict[int, list[int]] = field(default_factory=dict)


Probe = Callable[[Sequence[torch.Tensor]], None]


def _grown(n: int) -> int:
    return n + 1


def _resized(tensors: Sequence[torch.Tensor], groups: Sequence[_Group]) -> list[torch.Tensor]:
    out = list(tensors)
    for group in groups:
        for i, axis in group.members.items():
            out[i] = _resize_axis(out[i], axis, _grown(int(tensors[i].shape[axis])))
    return out


def _meaning_groups(
    model: torch.nn.Module,
    plan: InputPlan,
    tensors: Sequence[torch.Tensor],
    dynamic_batch: bool,
    rnns: Sequence[tuple[bool, tuple[int, ...]]],
) -> list[_Group]:
    """Proposed dynamic axes by what they mean: batch, sequence, choices, decoder sequence."""
    groups: dict[str, _Group] = {}
    taken: set[tuple[int, int]] = set()

    def add(label: str, i: int, axis: int) -> None:
        groups.setdefault(label, _Group(label, {})).members[i] = axis
        taken.add((i, axis))

    batch_axis_of_first = 0
    if _is_transformers(model):
        for i, (name, t) in enumerate(zip(plan.names, tensors, strict=True)):
            if name not in _SEQUENCE_INPUTS or t.ndim < 2:
                continue
            seq = "decoder_sequence" if name.startswith("decoder_") else "sequence"
            embeds = name.endswith("inputs_embeds")
            if t.ndim - int(embeds) == 3:  # (batch, choices, sequence[, hidden])
                add("choices", i, 1)
                add(seq, i, 2)
            else:
                add(seq, i, 1)
    elif rnns and tensors and tensors[0].ndim >= 2:
        batch_first, shape = rnns[0]
        first = tensors[0]
        if tuple(first.shape[:2]) == shape[:2]:
            # The first input feeds the first recurrent layer: its time axis is the sequence.
            add("sequence", 0, 1 if batch_first else 0)
            batch_axis_of_first = 0 if batch_first else 1
    if plan.style == "list":
        # A list of images is the batch itself (each image [channels, height, width]); a
        # detection model resizes each image itself, so height and width are free.
        from onnxbridge.plugins._torch_detection import is_detection_model

        if is_detection_model(model):
            for i, (name, t) in enumerate(zip(plan.names, tensors, strict=True)):
                if t.ndim == 3:
                    add(f"{name}_height", i, 1)
                    add(f"{name}_width", i, 2)
        return list(groups.values())
    if dynamic_batch and tensors and tensors[0].ndim > batch_axis_of_first:
        size = int(tensors[0].shape[batch_axis_of_first])
        group = _Group("batch", {})
        for i, t in enumerate(tensors):
            choices = [a for a in range(t.ndim) if t.shape[a] == size and (i, a) not in taken]
            if i == 0:
                choices = [batch_axis_of_first] if batch_axis_of_first in choices else []
            elif rnns and t.ndim == 3 and 1 in choices:
                choices.remove(1)  # a recurrent state (layers, batch, hidden)
                choices.insert(0, 1)
            if choices:
                group.members[i] = choices[0]
                group.alternatives[i] = choices[1:]
        if group.members:
            groups = {"batch": group, **groups}
    return list(groups.values())


def _fits(probe: Probe, tensors: Sequence[torch.Tensor], groups: Sequence[_Group]) -> str | None:
    """None when the model runs with every axis of ``groups`` resized, else why not."""
    try:
        probe(_resized(tensors, groups))
    except Exception as exc:  # the model's own error at that size
        return describe_failure(exc, 200)
    return None


def _settle(probe: Probe, tensors: Sequence[torch.Tensor], group: _Group) -> str | None:
    """Make ``group`` run on its own at another size (other axes, fewer inputs), or say why not."""
    why = _fits(probe, tensors, [group])
    if why is None:
        return None
    for i in list(group.members):  # another axis of one input
        for axis in group.alternatives.get(i, []):
            trial = _Group(group.label, {**group.members, i: axis})
            if _fits(probe, tensors, [trial]) is None:
                group.members = trial.members
                return None
    for i in list(group.members)[1:]:  # one input's axis is not this thing after all
        trial = _Group(group.label, {k: v for k, v in group.members.items() if k != i})
        if _fits(probe, tensors, [trial]) is None:
            group.members = trial.members
            return None
    return why


def _probe_can_change(groups: Sequence[_Group]) -> bool:
    """Whether a failed probe could change the plan: a batch axis alone on one input, with no
    other axis to try, is kept asked for whatever the probe says (see plan_axes), so running
    the model at another size first would only cost a forward pass."""
    return any(g.label != "batch" or len(g.members) > 1 or any(g.alternatives.values())
               for g in groups)


def plan_axes(
    model: torch.nn.Module,
    plan: InputPlan,
    tensors: Sequence[torch.Tensor],
    dynamic_batch: bool,
    dynamic_axes: Any,
    rnns: Sequence[tuple[bool, tuple[int, ...]]] = (),
    probe: Probe | None = None,
) -> tuple[AxisPlan, list[str]]:
    """Which axis of which input is symbolic, its name, and notes on axes kept fixed.

    Axes are proposed by meaning (the batch; a transformers model's sequence, decoder sequence
    and multiple-choice axis; the time axis of a recurrent model's input, batch-first or not;
    a recurrent state's batch on axis 1), then checked by running the model at other sizes:
    an axis that does not run at another size stays fixed, with a note saying why. No probe
    runs when its answer cannot change the plan (a lone batch axis: see _probe_can_change).
    """
    axes: AxisPlan = [{} for _ in tensors]
    notes: list[str] = []
    groups = _meaning_groups(model, plan, tensors, dynamic_batch, rnns)
    if probe is not None and groups and _probe_can_change(groups) \
            and _fits(probe, tensors, groups) is not None:
        kept = []
        for group in groups:
            why = _settle(probe, tensors, group)
            if why is None or group.label == "batch":
                # A batch that does not run at another size stays asked for: the exporter and
                # verification then say what fixes it (dynamic_batch=False).
                kept.append(group)
            else:
                where = ", ".join(f"{plan.names[i]}[{a}]" for i, a in group.members.items())
                notes.append(f"the {group.label} axis ({where}) is kept fixed: the model failed"
                             f" when it changed size ({why})")
        if len(kept) > 1 and _fits(probe, tensors, kept) is not None:
            kept = [g for g in kept if g.label == "batch"]
        groups = kept
    for group in groups:
        for i, axis in group.members.items():
            axes[i][axis] = group.label
    for name, spec in _normalize_dynamic_axes(dynamic_axes, plan.names).items():
        i = plan.names.index(name)
        for axis, label in spec.items():
            rank = tensors[i].ndim
            if not -rank <= axis < rank:
                raise ConversionError(
                    f"dynamic_axes: input {name!r} has {rank} dimension(s)"
                    f" {list(tensors[i].shape)}, so it has no axis {axis}",
                    converter="torch",
                )
            axis %= rank
            if label is None:
                axes[i].pop(axis, None)
            else:
                axes[i][axis] = label
    return axes, notes


def _normalize_dynamic_axes(value: Any, names: Sequence[str]) -> dict[str, dict[int, str | None]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConversionError(
            "dynamic_axes must be a dict such as {'input_ids': {1: 'sequence'}} or"
            f" {{'input_ids': [1]}}; got a {type(value).__name__}",
            converter="torch",
        )
    out: dict[str, dict[int, str | None]] = {}
    for key, spec in value.items():
        if key not in names:
            raise ConversionError(
                f"dynamic_axes names {key!r}, which is not an input; the inputs are {list(names)}."
                " Output axes follow from the inputs and need no entry",
                converter="torch",
            )
        if isinstance(spec, Mapping):
            items = dict(spec)
        elif isinstance(spec, (list, tuple, range)):
            items = {a: f"{key}_dim{a}" for a in spec}
        elif isinstance(spec, int) and not isinstance(spec, bool):
            items = {spec: f"{key}_dim{spec}"}
        else:
            raise ConversionError(
                f"dynamic_axes[{key!r}] must be {{axis: name}} or a list of axes, got {spec!r}",
                converter="torch",
            )
        for axis, label in items.items():
            if not isinstance(axis, int) or isinstance(axis, bool):
                raise ConversionError(f"dynamic_axes[{key!r}]: axis {axis!r} is not an int",
                                      converter="torch")
            if label is not None and (not isinstance(label, str) or not label):
                raise ConversionError(
                    f"dynamic_axes[{key!r}][{axis}]: the name must be a non-empty string"
                    " (or None to keep the axis fixed)",
                    converter="torch",
                )
        out[key] = items
    return out


def _resize_axis(t: Any, axis: int, size: int) -> Any:
    """Tensor (or array) with ``size`` entries along ``axis``, repeating the existing ones."""
    n = t.shape[axis]
    index = [i % n for i in range(size)]
    if isinstance(t, torch.Tensor):
        return t.index_select(axis, torch.tensor(index, device=t.device))
    return np.take(t, index, axis=axis)


def export_tensors(tensors: Sequence[torch.Tensor], axes: AxisPlan) -> list[torch.Tensor]:
    """Tensors to export with: every symbolic axis of size 0 or 1 grown to 2."""
    out = []
    for t, spec in zip(tensors, axes, strict=True):
        for axis in spec:
            if 0 < t.shape[axis] < 2:
                t = _resize_axis(t, axis, 2)
        out.append(t)
    return out


def other_size_sample(plan: InputPlan, tensors: Sequence[torch.Tensor], axes: AxisPlan) -> Any:
    """The sample with every symbolic axis at another size, in the user's format (or None).

    One size per axis name: the batch goes to 3 (from 1 or 2) or one less, other axes to one
    less (or 3 from 1 or 2), so that each name has one size and the names differ from the sample.
    """
    if not any(axes):
        return None
    sizes: dict[str, int] = {}
    if all(spec.get(0) == "batch" for spec in axes):
        # onnxbridge's verification checks a second batch size on its own: keep the sample's.
        if all(set(spec.values()) == {"batch"} for spec in axes):
            return None
        sizes["batch"] = int(tensors[0].shape[0])
    resized = []
    for t, spec in zip(tensors, axes, strict=True):
        for axis, label in spec.items():
            n = int(t.shape[axis])
            if n == 0:
                return None
            t = _resize_axis(t, axis, sizes.setdefault(label, 3 if n <= 2 else n - 1))
        resized.append(t)
    return user_format(plan, resized)


# -- exporting ---------------------------------------------------------------------------------
@dataclass
class ExportJob:
    wrapper: torch.nn.Module
    args: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    output_shapes: list[tuple[int, ...]]
    axes: AxisPlan
    opset: int | None
    custom_ops: dict[Any, Any]
    # A folder to export into with the weights in external data (a large model's weights are
    # then written from the module's own tensors, never copied into a proto); None: in memory.
    data_dir: str | None = None
    # Python warnings the exporter gave (the TorchScript tracer's about baked values).
    warnings: list[warnings.WarningMessage] = field(default_factory=list)
    # The module's own tensors the external data was written from, by file range
    # (shared_weights); verification lends these to onnxruntime instead of a second copy.
    shared: dict[tuple[str, int, int], torch.Tensor] = field(default_factory=dict)


def export_dynamo(job: ExportJob) -> onnx.ModelProto:
    from onnxbridge.plugins._torch_custom_ops import translation_table

    dynamic = tuple(dict(spec) or None for spec in job.axes)
    kwargs: dict[str, Any] = {
        "dynamo": True, "verbose": False, "report": False, "optimize": True,
        "input_names": job.input_names, "output_names": job.output_names,
        "opset_version": job.opset,
        "dynamic_shapes": (dynamic,) if any(dynamic) else None,
    }
    table = translation_table(job.custom_ops)
    if table:
        kwargs["custom_translation_table"] = table
    with quiet():
        program = torch.onnx.export(job.wrapper, job.args, **kwargs)
        assert program is not None
        if job.data_dir is not None:
            program.save(os.path.join(job.data_dir, "model.onnx"), external_data=True)
            start_writeback(job.data_dir)
    _check_not_specialised(program, job)
    if job.data_dir is not None:
        proto = onnx.load(os.path.join(job.data_dir, "model.onnx"), load_external_data=False)
        job.shared = shared_weights(program, proto, job.data_dir)
        return proto
    return program.model_proto


def start_writeback(folder: str) -> None:
    """Start writing the folder's files to disk in a background thread (fsync), while
    verification runs: the first ``save`` moves the data file and fsyncs it, and then finds
    little left to wait for. Best effort: errors are ignored (save's own fsync still runs).
    POSIX only (elsewhere an open file could block the folder's removal)."""
    import threading

    if os.name != "posix":
        return

    def flush(paths: list[str]) -> None:
        for path in paths:
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    with contextlib.suppress(OSError):
        paths = [e.path for e in os.scandir(folder) if e.is_file(follow_symlinks=False)]
        threading.Thread(target=flush, args=(paths,), name="onnxbridge-writeback",
                         daemon=True).start()


def _check_not_specialised(program: Any, job: ExportJob) -> None:
    """Refuse a program in which torch.export fixed an axis that was asked to be dynamic.

    torch.export may quietly keep the sample's size for a dynamic axis (an LSTM unrolled over
    its time steps); the ONNX graph would then fail at any other size.
    """
    exported = getattr(program, "exported_program", None)
    if exported is None:
        return
    placeholders = [n for n in exported.graph.nodes if n.op == "placeholder"]
    user = [n for n in placeholders if n.name not in exported.graph_signature.inputs_to_parameters
            and n.name not in exported.graph_signature.inputs_to_buffers
            and n.name not in exported.graph_signature.inputs_to_lifted_tensor_constants]
    fixed = []
    for node, name, spec in zip(user, job.input_names, job.axes, strict=False):
        val = node.meta.get("val")
        shape = getattr(val, "shape", None)
        if shape is None:
            continue
        for axis, label in spec.items():
            if axis < len(shape) and isinstance(shape[axis], int):
                fixed.append(f"{name}[{axis}] ({label}) = {shape[axis]}")
    if fixed:
        raise ConversionError(
            "torch.export fixed the size of axes that must stay dynamic: " + ", ".join(fixed),
            converter="torch",
        )


_SPECIALISED = re.compile(r"inferred a static shape of (\d+) for dimension inputs\[(\d+)\]"
                          r"\.shape\[(\d+)\]")


def specialised_axes(exc: BaseException, job: ExportJob) -> list[tuple[int, int, str]]:
    """The dynamic axes torch.export reports the model fixed (it inferred a static shape for
    them), removed from ``job.axes`` with every axis of the same name; what was removed."""
    text, seen = "", exc
    for _ in range(5):  # the message may sit on a cause
        text += f" {seen}"
        if seen.__cause__ is None:
            break
        seen = seen.__cause__
    labels = {job.axes[int(i)].get(int(a)) for _, i, a in _SPECIALISED.findall(text)
              if int(i) < len(job.axes)}
    labels.discard(None)
    removed = []
    for i, spec in enumerate(job.axes):
        for axis, label in list(spec.items()):
            if label in labels:
                del spec[axis]
                removed.append((i, axis, label))
    return removed


def export_torchscript(job: ExportJob) -> onnx.ModelProto:
    if job.custom_ops:
        raise ConversionError(
            "custom_ops= maps operators for the torch.export-based exporter only; use"
            " exporter='dynamo' (or register a symbolic with"
            " torch.onnx.register_custom_op_symbolic for TorchScript)",
            converter="torch",
        )
    dynamic_axes: dict[str, dict[int, str]] = {}
    sizes: dict[int, str] = {}
    for name, t, spec in zip(job.input_names, job.args, job.axes, strict=True):
        if spec:
            dynamic_axes[name] = dict(spec)
            for axis, label in spec.items():
                sizes.setdefault(int(t.shape[axis]), label)
    # TorchScript fixes output shapes to the sample's; output axes that have a symbolic input
    # axis's size are made symbolic too (onnxruntime warns on every run otherwise).
    for name, shape in zip(job.output_names, job.output_shapes, strict=True):
        marks = {a: sizes[s] for a, s in enumerate(shape) if s in sizes}
        if marks:
            dynamic_axes[name] = marks
    with contextlib.ExitStack() as stack:
        folder = job.data_dir or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="onnxbridge-torch-"))
        stack.enter_context(quiet(job.warnings))
        path = os.path.join(folder, "model.onnx")
        torch.onnx.export(
            job.wrapper, job.args, path, dynamo=False, input_names=job.input_names,
            output_names=job.output_names, dynamic_axes=dynamic_axes or None,
            opset_version=job.opset,
        )
        return onnx.load(path, load_external_data=job.data_dir is None)


_EXPORT_FUNCTIONS: dict[str, Callable[[ExportJob], onnx.ModelProto]] = {
    "dynamo": export_dynamo,
    "torchscript": export_torchscript,
}


def describe_failure(exc: BaseException, limit: int = 700) -> str:
    """The innermost useful message of an exporter's exception chain, without colour codes."""
    chain = [exc]
    while chain[-1].__cause__ is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__)
    for item in reversed(chain):
        text = _ANSI.sub("", str(item)).strip()
        if text:
            text = re.sub(r"\n\s*\n", "\n", text)
            if len(text) > limit:
                text = text[:limit] + " ..."
            return f"{type(item).__name__}: {text}"
    return type(exc).__name__


def missing_operators(exc: BaseException) -> list[str]:
    """Operators an exporter said it has no ONNX translation for, as ``aten::name``."""
    found: list[str] = []
    seen: set[int] = set()
    item: BaseException | None = exc
    while item is not None and id(item) not in seen:
        seen.add(id(item))
        text = _ANSI.sub("", str(item))
        for op in _DYNAMO_MISSING_OP.findall(text):
            namespace, _, rest = op.partition(".")
            found.append(f"{namespace}::{rest}")
        found += _TORCHSCRIPT_MISSING_OP.findall(text)
        item = item.__cause__ or item.__context__
    return list(dict.fromkeys(found))


def locate_operators(job: ExportJob, operators: Sequence[str]) -> list[str]:
    """Where in the model each operator is called: module path, class, and source line."""
    wanted = {op.replace("::", ".") for op in operators}
    try:
        with quiet():
            program = torch.export.export(job.wrapper, job.args, strict=False)
    except Exception:
        return []
    graphs = [program]
    with contextlib.suppress(Exception), quiet():
        graphs.append(program.run_decompositions())
    for exported in graphs:
        places = []
        for node in exported.graph.nodes:
            target = str(getattr(node, "target", ""))
            base = target.rsplit(".", 1)[0] if target.count(".") >= 2 else target
            if node.op != "call_function" or base not in wanted:
                continue
            places.append(_node_location(base.replace(".", "::", 1), node))
        if places:
            return list(dict.fromkeys(places))
    return []


def _node_location(op: str, node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    where = "the model's forward"
    if stack:
        path, kind = list(stack.values())[-1]
        path = re.sub(r"^L\['self'\]\.?", "", str(path))
        path = re.sub(rf"^{_WRAPPED}\.?", "", path)
        kind_name = getattr(kind, "__name__", str(kind)).rsplit(".", 1)[-1].strip("'>")
        where = f"{path or 'the top module'} ({kind_name})"
    lines = [
        line.strip() for line in str(node.meta.get("stack_trace") or "").splitlines()
        if line.strip().startswith("File ")
    ]
    user_lines = [line for line in lines if f"{os.sep}torch{os.sep}" not in line]
    source = f", {user_lines[-1]}" if user_lines else ""
    return f"{op} in {where}{source}"


def failure_error(
    job: ExportJob, failures: Mapping[str, BaseException], opset: int | None
) -> ConversionError:
    """One error carrying every exporter's cause; UnsupportedOperatorError when ops are missing."""
    operators = [op for exc in failures.values() for op in missing_operators(exc)]
    operators = list(dict.fromkeys(operators))
    causes = "\n".join(
        f"- {name} exporter: {describe_failure(exc)}" for name, exc in failures.items()
    )
    tried = " and ".join(failures)
    if not operators:
        error = ConversionError(
            f"the PyTorch model could not be exported to ONNX (tried the {tried} exporter"
            f"{'s' if len(failures) > 1 else ''}):\n{causes}\n"
            "Check that the model runs on the sample, that forward takes and returns tensors,"
            " and that its control flow does not depend on tensor values (torch.cond does).",
            converter="torch",
        )
    else:
        locations = locate_operators(job, operators)
        where = "".join(f"\n  at {place}" for place in locations)
        opset_text = f"opset {opset}" if opset else "the default opset"
        error = UnsupportedOperatorError(
            f"the model uses operator(s) that ONNX ({opset_text}) cannot express with the"
            f" exporters tried: {', '.join(operators)}{where}\n"
            "What you can do:\n"
            "  1. try another opset: to_onnx(model, sample, opset=N) (newer opsets add operators);\n"
            "  2. rewrite that part of the model with supported operations, or keep it out of"
            " the exported module (run it before or after the ONNX model);\n"
            "  3. export it as a custom operator: to_onnx(..., custom_ops={"
            f"'{operators[0]}': 'my.domain::MyOp'}}) and give onnxruntime an implementation"
            " (see docs/custom-operators.md).\n"
            f"Exporter messages:\n{causes}",
            operators=operators, framework="torch", converter="torch", locations=locations,
        )
    error.causes = dict(failures)  # type: ignore[attr-defined]
    return error


# -- tidying the exported model ----------------------------------------------------------------
def _rename_values(graph: onnx.GraphProto, mapping: Mapping[str, str]) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_values(attr.g, mapping)
            for sub in attr.graphs:
                _rename_values(sub, mapping)


def tidy_proto(
    proto: onnx.ModelProto, job: ExportJob, tensors: Sequence[torch.Tensor], name: str
) -> onnx.ModelProto:
    """Strip the wrapper from weight names, restore inputs an exporter dropped, name the graph."""
    graph = proto.graph
    used = {o for n in graph.node for o in n.output} | {v.name for v in graph.input}
    used |= {t.name for t in graph.initializer}
    prefix = f"{_WRAPPED}."
    mapping: dict[str, str] = {}
    for init in graph.initializer:
        if init.name.startswith(prefix):
            new = init.name[len(prefix):]
            if new and new not in used and new not in mapping.values():
                mapping[init.name] = new
    if mapping:
        for init in graph.initializer:
            init.name = mapping.get(init.name, init.name)
        _rename_values(graph, mapping)
        # Below opset 9 the TorchScript exporter lists weights among the graph inputs (IR 3).
        for vi in [*graph.value_info, *graph.input]:
            vi.name = mapping.get(vi.name, vi.name)
    # An exporter may drop an input the graph does not use; the signature keeps it.
    present = {v.name: v for v in graph.input}
    inputs = []
    for input_name, t, spec in zip(job.input_names, tensors, job.axes, strict=True):
        if input_name in present:
            inputs.append(present[input_name])
            continue
        elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(str(t.dtype).replace("torch.", "")))
        shape = [spec.get(a, int(d)) for a, d in enumerate(t.shape)]
        inputs.append(onnx.helper.make_tensor_value_info(input_name, elem, shape))
    extra = [v for v in graph.input if v.name not in set(job.input_names)]
    del graph.input[:]
    graph.input.extend(inputs + extra)
    outputs = [o.name for o in graph.output]
    if outputs != job.output_names:
        raise ConversionError(
            f"the exporter produced outputs {outputs}, expected {job.output_names}; this is a"
            " bug in onnxbridge's torch converter, please report it",
            converter="torch",
        )
    external = [t.name for t in graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external and job.data_dir is None:
        raise ConversionError(
            f"the exported model keeps {len(external)} weight(s) outside the proto"
            f" ({external[:3]}); this is a bug in onnxbridge's torch converter",
            converter="torch",
        )
    graph.name = name
    return proto


class _KnownRun:
    """One call of the model already made (a copy of its inputs taken before the call, and its
    flattened outputs), kept to answer a later call on equal inputs (same dtypes, shapes,
    devices and values) without running the model again. Outputs above KNOWN_OUTPUTS_UP_TO
    bytes in all are not kept."""

    def __init__(self, inputs: Sequence[torch.Tensor],
                 outputs: Sequence[tuple[str, torch.Tensor]]) -> None:
        size = sum(t.numel() * t.element_size() for _, t in outputs)
        keep = size <= KNOWN_OUTPUTS_UP_TO
        self.inputs = list(inputs) if keep else None
        self.outputs = list(outputs) if keep else None

    def outputs_for(self, inputs: Sequence[torch.Tensor]) -> list[tuple[str, torch.Tensor]] | None:
        if self.inputs is None or self.outputs is None or len(inputs) != len(self.inputs):
            return None
        for a, b in zip(inputs, self.inputs, strict=True):
            if not isinstance(a, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape \
                    or a.device != b.device or not torch.equal(a, b):
                return None
        return list(self.outputs)


# The most bytes of outputs _KnownRun keeps from the sample's call.
KNOWN_OUTPUTS_UP_TO = 2**28


@dataclass
class TorchConversionResult(ConversionResult):
    """A ConversionResult with problems found while converting that verification must report."""

    problems: list[str] = field(default_factory=list)
    # Full feeds to verify on instead of the sample (a text-generation decoder's cached steps).
    verify_samples: list[tuple[str, Any]] | None = None
    # The OnnxModel subclass to_onnx returns (GenerativeModel for text generation), or a
    # callable making one from (proto, data_dir=, data_owner=) (a seq2seq bundle's).
    model_class: Callable[..., Any] | None = None
    # More report lines, made when verifying: more_checks(model, tolerance) (a seq2seq
    # bundle's encoder, which the decoder's feeds do not cover).
    more_checks: Callable[[Any, Any], list[Any]] | None = None
    # Initializer name -> a CPU array over the module's own tensor whose bytes the external
    # data file holds: verification's session uses them instead of reading the file (held once).
    shared_weights: dict[str, np.ndarray] = field(default_factory=dict)
    # Replaces verify.compare_outputs (same signature) where rows are not comparable one by one
    # (a detection model's boxes, matched by label, score and box).
    compare: Callable[..., list[Any]] | None = None


_BAKED = re.compile(r"Converting a tensor to a Python (boolean|number|index)")


def _place(place: str) -> tuple[str, int]:
    filename, _, line = place.rpartition(":")
    return filename, int(line)


def baked_branches(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    """Where the TorchScript tracer turned a tensor's value into a Python bool (a branch)."""
    places = []
    torch_dir = os.path.dirname(torch.__file__) + os.sep
    for w in caught:
        text = str(w.message)
        if str(w.filename).startswith(torch_dir):  # torch's own checks (an LSTM's input sizes)
            continue
        if "Python boolean" in text and _BAKED.search(text):
            places.append(f"{w.filename}:{w.lineno}")
    return list(dict.fromkeys(places))


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy()


def _torch_default_opset() -> int:
    """The opset torch.onnx exports by default (its best-tested one), 18 if it does not say."""
    constants = getattr(torch.onnx, "_constants", None)
    return int(getattr(constants, "ONNX_DEFAULT_OPSET", 18))



# -- weights in files, and dtype= --------------------------------------------------------------
# Weights above this many bytes are exported into a temporary folder as external data (the
# same limit above which a loaded model keeps its weights in their files).
EXTERNAL_WEIGHTS_ABOVE = 2**28
_CAST_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# Parity tolerances (atol, rtol) when the weights are rounded to a half-precision dtype.
HALF_TOLERANCE = {torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 5e-2)}


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the module's parameters and buffers (each tensor counted once)."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def _same_bytes(t: torch.Tensor, path: str, offset: int, length: int, probe: int = 4096) -> bool:
    """The first and last ``probe`` bytes of ``t`` are those at ``offset`` in ``path``."""
    data = t.detach().numpy().reshape(-1).view(np.uint8)
    if data.nbytes != length:
        return False
    n = min(probe, length)
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            head = f.read(n)
            f.seek(offset + length - n)
            tail = f.read(n)
    except OSError:
        return False
    return head == data[:n].tobytes() and tail == data[length - n:].tobytes()


def _file_range(tensor: onnx.TensorProto) -> tuple[str, int, int] | None:
    """(location, offset, length) of an external tensor's data; None if inline or incomplete."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return None
    info = {e.key: e.value for e in tensor.external_data}
    try:
        return info["location"], int(info.get("offset", 0)), int(info["length"])
    except (KeyError, ValueError):
        return None


def shared_weights(program: Any, proto: onnx.ModelProto,
                   folder: str) -> dict[tuple[str, int, int], torch.Tensor]:
    """The module's CPU tensors the exporter wrote external data from (its graph aliases them),
    by the file range holding their bytes. Only contiguous tensors of a dtype numpy holds, whose
    first and last bytes are those of the range; the rest is read from the files. Lending these
    to onnxruntime for verification keeps the weights in memory once."""
    graph = getattr(getattr(program, "model", None), "graph", None)
    initializers = getattr(graph, "initializers", None)
    if initializers is None:
        return {}
    shared: dict[tuple[str, int, int], torch.Tensor] = {}
    for tensor in proto.graph.initializer:
        value = initializers.get(tensor.name)
        raw = getattr(getattr(value, "const_value", None), "raw", None)
        where = _file_range(tensor)
        if where is None or not isinstance(raw, torch.Tensor) or raw.device.type != "cpu" \
                or not raw.is_contiguous() or raw.is_conj() or raw.is_neg() \
                or raw.dtype == torch.bfloat16 or raw.numel() == 0:
            continue
        try:  # a dtype numpy lacks (float8, say) stays in the file
            same = list(raw.shape) == list(tensor.dims) and _same_bytes(
                raw, os.path.join(folder, where[0]), where[1], where[2])
        except (TypeError, RuntimeError):
            same = False
        if same:
            shared[where] = raw.detach()
    return shared


def lent_arrays(proto: onnx.ModelProto,
                shared: Mapping[tuple[str, int, int], torch.Tensor]) -> dict[str, np.ndarray]:
    """Initializer name (as the final proto names it) -> a numpy view of its shared tensor."""
    out: dict[str, np.ndarray] = {}
    for tensor in proto.graph.initializer:
        where = _file_range(tensor)
        if where is not None and where in shared:
            out[tensor.name] = shared[where].numpy()
    return out


def want_external(model: torch.nn.Module, value: Any) -> bool:
    """The ``external_data=`` option: True/False, or None for automatic (by weight size)."""
    if value is not None and not isinstance(value, bool):
        raise ConversionError(f"external_data must be True, False or None, got {value!r}",
                              converter="torch")
    return weight_bytes(model) > EXTERNAL_WEIGHTS_ABOVE if value is None else value


def source_float_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The floating dtype of the module's first floating parameter or buffer."""
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            return t.dtype
    return None


def cast_target(model: torch.nn.Module, dtype: Any) -> torch.dtype | None:
    """The ``dtype=`` option as a torch dtype (None: export the weights as they are)."""
    if dtype is None:
        return None
    key = str(dtype).replace("torch.", "")
    if key not in _CAST_DTYPES:
        raise ConversionError(
            f"dtype={dtype!r} is not one of {', '.join(map(repr, _CAST_DTYPES))}; it is the"
            " dtype the weights are exported in (inputs and outputs stay float32)",
            converter="torch",
        )
    if source_float_dtype(model) is None:
        raise ConversionError(f"dtype={dtype!r} was given but the model has no floating weights",
                              converter="torch")
    return _CAST_DTYPES[key]


def cast_floats(tensors: Sequence[torch.Tensor], dtype: torch.dtype | None) -> list[torch.Tensor]:
    """Floating tensors (float64 excepted) cast to ``dtype``; others as they are."""
    return [t.to(dtype) if dtype is not None and t.is_floating_point()
            and t.dtype != torch.float64 else t for t in tensors]


class _CastModule(torch.nn.Module):
    """Runs ``inner`` (weights in ``dtype``) on inputs cast to ``dtype``; floating outputs come
    back as float32, so the ONNX model takes and gives float32 whatever its weights are."""

    def __init__(self, inner: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        # inner's submodules, parameters and buffers become this module's own, so the ONNX
        # weights keep the source's names (no extra prefix); forward is inner's.
        self._modules.update(inner._modules)
        self._parameters.update(inner._parameters)
        self._buffers.update(inner._buffers)
        self.__dict__["_inner"] = inner
        self.dtype = dtype

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        from torch.utils._pytree import tree_map

        def inward(v: Any) -> Any:
            return v.to(self.dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() \
                and v.dtype != torch.float64 else v

        def outward(v: Any) -> Any:
            return v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() \
                and v.dtype != torch.float64 else v

        args, kwargs = tree_map(inward, (args, kwargs))
        return tree_map(outward, self.__dict__["_inner"](*args, **kwargs))


def cast_module(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``model`` with its floating weights in ``dtype``, wrapped to keep float32 at
    its edges. Each weight is converted straight into the new dtype: the source weights are
    never copied as they are (deepcopy takes the converted tensors from its memo)."""
    import copy

    memo: dict[int, Any] = {}
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) in memo or not t.is_floating_point() or t.dtype == torch.float64:
            continue
        new = t.detach().to(dtype)
        memo[id(t)] = torch.nn.Parameter(new, requires_grad=False) \
            if isinstance(t, torch.nn.Parameter) else new
    try:
        inner = copy.deepcopy(model, memo)
    except Exception as exc:
        raise ConversionError(
            f"dtype= needs a copy of the model with {dtype} weights, and"
            f" {type(model).__name__} cannot be copied ({describe_failure(exc, 200)}); convert"
            f" it yourself with model.to({dtype}) and pass a float32 sample",
            converter="torch",
        ) from exc
    for module in inner.modules():  # exported in eval mode, like the source (see eval_mode)
        module.training = False
    wrapper = _CastModule(inner, dtype)
    wrapper.training = False
    return wrapper


def cast_notes(source: torch.dtype | None, target: torch.dtype | None) -> list[str]:
    if target is None or target == source:
        return []
    return [f"weights exported as {str(target).replace('torch.', '')} (from"
            f" {str(source).replace('torch.', '')}); inputs and outputs are float32; parity is"
            f" against the {str(source).replace('torch.', '')} source model"]


def half_tolerances(names: Sequence[str], source: torch.dtype | None,
                    target: torch.dtype | None) -> dict[str, tuple[float, float]]:
    """Tolerances that fit the coarsest float dtype involved (none when both are float32)."""
    worst = max((HALF_TOLERANCE.get(d, (0.0, 0.0)) for d in (source, target) if d is not None),
                default=(0.0, 0.0))
    return {n: worst for n in names} if worst != (0.0, 0.0) else {}


def opset_range(exporter: str) -> tuple[int, int]:
    """The opsets an exporter can write: torch.export's natively from 18, older ones by conversion
    (which may fail, then the model is refused); TorchScript's up to its own maximum."""
    constants = getattr(torch.onnx, "_constants", None)
    low = int(getattr(constants, "ONNX_MIN_OPSET", 7))
    newest = int(getattr(constants, "ONNX_MAX_OPSET", 23))
    script_newest = int(getattr(constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
    if exporter == "torchscript":
        return low, script_newest
    if exporter == "dynamo":
        return low, newest
    return low, max(newest, script_newest)


def choose_opset(options: ConvertOptions, exporter: str) -> int:
    """The user's opset when an exporter asked for can write it (else a clear refusal), or ours."""
    if options.opset is None:
        return options.target_opset(_torch_default_opset())
    low, high = opset_range(exporter)
    if not low <= options.opset <= high:
        which = "the PyTorch exporters write" if exporter == "auto" else (
            f"the {exporter} exporter writes")
        raise ConversionError(
            f"opset={options.opset} is outside the opsets {which} with torch {torch.__version__}:"
            f" {low} to {high}"
            + ("" if exporter == "torchscript" else
               " (torch.export-based: 18 and newer natively, older ones by conversion)")
            + "; pass one of those, or opset=None for the default",
            converter="torch",
        )
    return options.opset


def _default_opset(proto: onnx.ModelProto) -> int | None:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


COMPUTE_DTYPES = ("float32", "float16", "bfloat16")


def _cast_floats(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return torch.from_numpy(np.ascontiguousarray(value)).to(dtype)
    if isinstance(value, Mapping):
        return {k: _cast_floats(v, dtype) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        items = [_cast_floats(v, dtype) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def with_compute_dtype(model: torch.nn.Module, sample: Any, compute_dtype: Any) -> tuple[Any, Any]:
    """The model (a cast copy) and sample to export for ``compute_dtype``.

    A bfloat16 model is refused unless ``compute_dtype`` is given: onnxruntime's CPU provider has
    no bfloat16 kernels for MatMul/Gemm, so such a model neither verifies nor runs there.
    """
    if compute_dtype is not None and compute_dtype not in COMPUTE_DTYPES:
        raise ConversionError(
            f"compute_dtype={compute_dtype!r} is not one of {', '.join(map(repr, COMPUTE_DTYPES))}",
            converter="torch",
        )
    floats = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if compute_dtype is None:
        if torch.bfloat16 in floats:
            raise ConversionError(
                "the model computes in bfloat16, and onnxruntime's CPU provider has no bfloat16"
                " kernels for MatMul/Gemm: the ONNX model could neither be verified nor run on"
                " CPU. Export the compute in float32: to_onnx(model, sample,"
                " compute_dtype='float32') (onnxbridge casts a copy; inputs and outputs become"
                " float32), or in float16 for a GPU (compute_dtype='float16'), or only the"
                " weights in float32 or float16 with float32 inputs and outputs"
                " (dtype='float32' / dtype='float16'); to keep bfloat16"
                " for a GPU provider that has the kernels, pass compute_dtype='bfloat16',"
                " verify=False",
                converter="torch",
            )
        return model, sample
    target = getattr(torch, compute_dtype)
    if floats <= {target}:
        return model, _cast_floats(sample, target)
    import copy

    return copy.deepcopy(model).to(target), _cast_floats(sample, target)


# -- the converter -----------------------------------------------------------------------------
PLAIN_OPTIONS = ("exporter", "dynamic_axes", "input_names", "output_names", "custom_ops")


def generation_model(model: Any, sample: Any, options: ConvertOptions) -> tuple[Any, Any]:
    """The model and sample a generation export works on (compute_dtype applied), after the
    checks convert_module makes; takes the plain export's options off ``options``."""
    exporter = options.pop("exporter", "auto")
    for key in (*PLAIN_OPTIONS[1:], "external_data"):
        options.pop(key)
    cast = options.pop("dtype", None)
    compute_dtype = options.pop("compute_dtype", None)
    if exporter not in EXPORTERS:
        raise ConversionError(
            f"exporter={exporter!r} is not one of {', '.join(map(repr, EXPORTERS))}",
            converter="torch")
    if not isinstance(model, torch.nn.Module):
        raise ConversionError(f"expected a torch.nn.Module, got {type(model).__name__}",
                              converter="torch")
    if cast is not None and compute_dtype is not None:
        raise ConversionError(
            "pass dtype= (the weights' dtype, float32 inputs and outputs) or compute_dtype= (the"
            " whole model cast, inputs and outputs too), not both", converter="torch")
    if cast is not None:
        # dtype= keeps float32 at the model's edges; a generation export's edges are the
        # cache itself, which takes the compute dtype, so only compute_dtype= means something.
        raise ConversionError(
            f"dtype={cast!r} (a weights-only cast with float32 inputs and outputs) does not"
            " apply to a text-generation export, whose past/present cache takes the model's"
            f" compute dtype: pass compute_dtype={str(cast).replace('torch.', '')!r} instead",
            converter="torch")
    return with_compute_dtype(model, sample, compute_dtype)


def convert_module(model: Any, sample: Any, options: ConvertOptions) -> ConversionResult:
    exporter = options.pop("exporter", "auto")
    dynamic_axes = options.pop("dynamic_axes", None)
    input_names = options.pop("input_names", None)
    output_names = options.pop("output_names", None)
    custom_ops = options.pop("custom_ops", None) or {}
    external = options.pop("external_data", None)
    cast = options.pop("dtype", None)
    compute_dtype = options.pop("compute_dtype", None)
    if exporter not in EXPORTERS:
        raise ConversionError(
            f"exporter={exporter!r} is not one of {', '.join(map(repr, EXPORTERS))}",
            converter="torch",
        )
    if not isinstance(model, torch.nn.Module):
        raise ConversionError(f"expected a torch.nn.Module, got {type(model).__name__}",
                              converter="torch")
    if not isinstance(custom_ops, Mapping):
        raise ConversionError(
            "custom_ops must be a dict {torch op: 'domain::OpType'}, e.g."
            " {'mylib::my_op': 'ai.onnx.contrib::MyOp'}",
            converter="torch",
        )
    if cast is not None and compute_dtype is not None:
        raise ConversionError(
            "pass dtype= (the weights' dtype, float32 inputs and outputs) or compute_dtype= (the"
            " whole model cast, inputs and outputs too), not both", converter="torch")
    if cast is None:  # dtype= casts the weights itself, a bfloat16 source included
        model, sample = with_compute_dtype(model, sample, compute_dtype)
    device = _model_device(model)
    cast_to, source_dtype = cast_target(model, cast), source_float_dtype(model)
    plan = plan_inputs(model, sample, input_names)
    tensors = sample_tensors(plan, sample, device)
    if cast_to is not None:  # the source takes its own dtype; the ONNX model float32
        tensors = cast_floats(tensors, torch.float32)
    first_inputs = cast_floats(tensors, source_dtype if cast_to else None)
    # Taken before the call: a model that changes its inputs in place gets no answer from it.
    first_copy = [t.detach().clone() for t in first_inputs]
    # The buffers as given, copied once for every run below (each restores them after).
    snapshot = BufferSnapshot(model)
    with eval_mode(model, snapshot), watch_rnns(model) as rnns:
        try:
            outputs = _call(model, plan, _copies(first_inputs))
        except Exception as exc:
            if plan.style != "list":
                raise
            raise ConversionError(
                f"the sample is a list, so {type(model).__name__} was called with it as one"
                f" argument (a detection model's list of images), and failed:"
                f" {describe_failure(exc, 300)}. For a model with several inputs pass a tuple"
                " of tensors (tuple(sample)); for one input, one tensor (torch.tensor(sample))",
                converter="torch",
            ) from exc
    flat, skipped = flatten_outputs(outputs)
    if not flat:
        raise ConversionError(
            f"{type(model).__name__} returned no tensors on the sample (it returned"
            f" {type(outputs).__name__}); an ONNX model needs at least one tensor output",
            converter="torch",
        )
    names = _unique_names([n for n, _ in flat], set(plan.names))
    from onnxbridge.plugins._torch_detection import detection_names, is_detection_model

    # A detection model called on its list of images, returning one dict per image (not a
    # part of one, such as an SSD head called on a list of feature maps).
    per_image = detection_names(outputs) if is_detection_model(model) \
        and plan.style == "list" else None
    detection = per_image is not None and len(per_image) == len(flat)
    if detection:
        names = _unique_names(per_image or [], set(plan.names))  # boxes_0, scores_0 ...
    if output_names is not None:
        given = [str(n) for n in output_names]
        if len(given) != len(names) or len(set(given) | set(plan.names)) != len(given) + len(
            set(plan.names)
        ):
            raise ConversionError(
                f"output_names={given} must give {len(names)} distinct name(s), one per output"
                f" tensor ({names} by default), different from the input names",
                converter="torch",
            )
        names = given

    def probe(trial: Sequence[torch.Tensor]) -> None:
        with eval_mode(model, snapshot), quiet():
            got, _ = flatten_outputs(_call(model, plan, _copies(trial)))
        if len(got) != len(flat):
            raise RuntimeError(f"{len(got)} output tensors instead of {len(flat)}")

    axes, axis_notes = plan_axes(model, plan, tensors, options.dynamic_batch, dynamic_axes,
                                 rnns=rnns, probe=probe)
    from onnxbridge.plugins._torch_custom_ops import resolve_custom_ops

    job = ExportJob(
        wrapper=_FlatModule(model if cast_to is None else cast_module(model, cast_to), plan,
                            len(flat)),
        args=tuple(_copies(export_tensors(tensors, axes))),  # tracing runs the model
        input_names=list(plan.names),
        output_names=names,
        output_shapes=[tuple(t.shape) for _, t in flat],
        axes=axes,
        opset=choose_opset(options, exporter),
        custom_ops=resolve_custom_ops(custom_ops),
    )
    folder = None
    if want_external(model, external):
        folder = tempfile.TemporaryDirectory(prefix="onnxbridge-weights-")
        job.data_dir = folder.name
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    if exporter == "auto" and rnns and any("sequence" in spec.values() for spec in axes):
        # torch.export's translation of recurrent layers unrolls them over the sample's time
        # steps (the graph then fails at any other length); TorchScript exports an ONNX LSTM.
        order = ["torchscript", "dynamo"]
    if exporter == "auto" and detection:
        # torchvision writes its detection models for the tracer (is_tracing branches, ONNX
        # NonMaxSuppression); torch.export stops at the first data-dependent box count.
        order = ["torchscript", "dynamo"]
    if isinstance(model, torch.jit.ScriptModule):
        # A scripted module cannot be wrapped or re-traced: the TorchScript exporter takes it
        # as it is and flattens its outputs the same way.
        if exporter == "dynamo":
            raise ConversionError(
                "a TorchScript (scripted) module can only go through the TorchScript exporter;"
                " use exporter='torchscript' or 'auto', or export the original nn.Module",
                converter="torch",
            )
        order = ["torchscript"]
        job.wrapper = model
    failures: dict[str, BaseException] = {}
    proto = None
    used = ""
    specialised: list[str] = []
    with eval_mode(model, snapshot):
        for attempt in order:
            try:
                proto = _EXPORT_FUNCTIONS[attempt](job)
            except Exception as exc:
                # (A recurrent layer's time axis is left to TorchScript's ONNX LSTM/GRU.)
                fixed = specialised_axes(exc, job) if attempt == "dynamo" and not rnns else []
                if not fixed:
                    failures[attempt] = exc
                    continue
                # The model's code fixes an axis asked to be dynamic (a Python loop over
                # x.shape[0]): export that axis at the sample's size rather than let the
                # TorchScript tracer bake the loop into a graph that fails at other sizes.
                job.args = tuple(_copies(export_tensors(tensors, job.axes)))  # not grown
                specialised = [f"{job.input_names[i]}[{a}] ({label}) ="
                               f" {int(job.args[i].shape[a])}" for i, a, label in fixed]
                try:
                    proto = _EXPORT_FUNCTIONS[attempt](job)
                except Exception as again:
                    failures[attempt] = again
                    continue
            written = _default_opset(proto)
            if options.opset is not None and written != options.opset:
                # torch.export's exporter keeps its own opset when converting down fails.
                failures[attempt] = ConversionError(
                    f"the {attempt} exporter wrote opset {written}, not the opset {options.opset}"
                    " asked for (converting"
                    " its graph to that opset failed); pass opset=None or a newer opset",
                    converter="torch",
                )
                proto = None
                continue
            used = attempt
            break
        if proto is None:
            only = next(iter(failures.values()))
            if len(failures) == 1 and isinstance(only, ConversionError):
                raise only
            error = failure_error(job, failures, options.opset)
            if detection and "torchscript" not in failures:
                error.args = (f"{error.args[0]}\nA torchvision detection model's"
                              " post-processing keeps a value-dependent number of boxes, which"
                              " torch.export cannot trace: use exporter='torchscript' (what"
                              " 'auto' does for these models), or export the network without"
                              " it (docs/guide-pytorch.md, Detection models)",
                              *error.args[1:])
            raise error from list(failures.values())[-1]
    # Shapes for tidy_proto come from the original tensors: the export ones may be grown.
    proto = tidy_proto(proto, job, tensors, options.name or type(model).__name__)

    notes = [f"exported with the {used} exporter" + (
        " (torch.export)" if used == "dynamo" else " (TorchScript)")]
    notes += [f"the {name} exporter failed first: {describe_failure(exc, 300)}"
              for name, exc in failures.items()]
    notes += axis_notes
    if specialised:
        notes.append(
            f"kept at the sample's size: {', '.join(specialised)}. torch.export found that the"
            " model's code fixes it (a Python loop or a branch on that size), so the ONNX model"
            " takes that size only; write the code with tensor operations (no int() or range()"
            " of the size) for a dynamic axis")
    baked = baked_branches(job.warnings) if used == "torchscript" else []
    compare = None
    detection_problems: list[str] = []
    if detection:
        from onnxbridge.plugins._torch_detection import (
            compare_detections,
            detection_cap,
            name_detection_axes,
            resize_sizes_in_double,
            score_threshold,
            tracing_aware,
        )

        aware = [p for p in baked if tracing_aware(*_place(p))]
        baked = [p for p in baked if p not in aware]
        notes.append(
            "torchvision detection model: exported with its post-processing (resize and"
            " normalise, score threshold, top-k, batched NMS, boxes mapped back to each image);"
            f" {len(plan.names)} image input(s) of any height and width, outputs"
            " boxes_i/scores_i/labels_i per image with a value-dependent count (detections_i)."
            " Verified by matching detections (label, score, box), not rows"
            + (f"; torchvision's tracer-aware branches at {', '.join(aware)} were traced as"
               " torchvision intends" if aware else ""))
        if per_image is not None and names == per_image:
            name_detection_axes(proto, names, job.output_shapes)
        if resize_sizes_in_double(proto):
            notes.append("the resize's output size is computed in float64 as torchvision does"
                         " (float32 gave 159 px where PyTorch gives 160)")
        compare = compare_detections(score_threshold(model), detection_cap(model), per_image)
        detection_images = len(plan.names)
        notes.append(
            "m.run takes a list of any number of images (the one-image graph run once per image"
            " on one session: each image's detections are the torch model's for it alone)"
            if detection_images == 1 else
            f"this export takes exactly {detection_images} images (torchvision pads the images"
            " of one call to a common size, so they are not independent); convert with one"
            " image for any number")
        if per_image is not None and all(int(d["scores"].numel()) == 0 for d in outputs):
            threshold = score_threshold(model)
            empty = (
                f"the model detects nothing on the sample (score threshold {threshold:g}), so"
                " verification compares nothing: pass an image with objects in it, or lower"
                " the threshold for the conversion (box_score_thresh= / score_thresh= when"
                " building it, or model.roi_heads.score_thresh = 0.0 for an R-CNN,"
                " model.score_thresh = 0.0 for SSD, RetinaNet and FCOS)"
                if threshold else "the model detects nothing on the sample"
                + (" even with score threshold 0" if threshold == 0 else "")
                + ", so verification compares nothing: pass an image with objects in it (with"
                " random weights every box may be dropped as too small or not finite)")
            detection_problems.append(empty)
    if skipped:
        notes.append(f"non-tensor outputs left out of the ONNX model: {', '.join(skipped)}")
    notes += cast_notes(source_dtype, cast_to)
    if plan.fixed_kwargs:
        notes.append("called with " + ", ".join(f"{k}={v!r}" for k, v in plan.fixed_kwargs.items())
                     + " (a key/value cache is not a tensor output)")

    # The outputs of the call on the sample above answer verification's reference run on the
    # same inputs (eval_mode restored the model's state after it): one forward pass less.
    known = _KnownRun(first_copy, flat)

    def reference(x: Any) -> list[np.ndarray]:
        if compute_dtype is not None:
            x = _cast_floats(x, getattr(torch, compute_dtype))
        given = sample_tensors(plan, x, device)
        if cast_to is not None:
            given = cast_floats(given, source_dtype)
        result = known.outputs_for(given)
        if result is None:
            with eval_mode(model, snapshot):
                result, _ = flatten_outputs(_call(model, plan, _copies(given)))
        if len(result) != len(names):
            raise ConversionError(
                f"the model returned {len(result)} output tensors on a resized sample but"
                f" {len(names)} on the sample; its outputs must not depend on the input size",
                converter="torch",
            )
        return [_to_numpy(t) for _, t in result]

    extra = other_size_sample(plan, tensors, axes)
    metadata = {
        "onnxbridge.torch.exporter": used,
        "onnxbridge.torch.input_style": plan.style,
        "onnxbridge.torch.model_class": f"{type(model).__module__}.{type(model).__qualname__}",
    }
    if detection:
        from onnxbridge._per_image import IMAGES_KEY

        metadata[IMAGES_KEY] = str(len(plan.names))
    from onnxbridge.plugins._torch_custom_ops import CUSTOM_OP_LIBRARY_KEY, custom_domains

    domains = custom_domains(proto) if job.custom_ops else []
    if domains:
        metadata[CUSTOM_OP_LIBRARY_KEY] = "onnxruntime_extensions"
        notes.append(
            f"uses custom-domain operators ({', '.join(domains)}): a session needs their"
            " implementation registered (see docs/custom-operators.md)"
        )
    return TorchConversionResult(
        compare=compare,
        problems=[
            f"the TorchScript tracer baked a branch on a tensor value at {place}: the ONNX"
            " model always takes the branch the sample took. Make the condition a tensor"
            " operation (torch.where) or use torch.cond, so that torch.export can export it"
            for place in baked
        ] + detection_problems,
        proto=proto,
        reference=reference,
        framework="torch",
        framework_version=torch.__version__,
        metadata=metadata,
        extra_samples=[extra] if extra is not None else [],
        notes=notes,
        tolerances=half_tolerances(names, source_dtype, cast_to) if cast_to else {},
        data_dir=job.data_dir,
        data_owner=folder,
        shared_weights=lent_arrays(proto, job.shared),
    )
