"""Back from ONNX to PyTorch: ``OnnxModel.to_torch()`` (imported only when called; needs torch).

An ``OnnxTorchModule`` runs the ONNX graph node by node with torch operations, in eager mode.
Floating-point initializers with at least one axis become ``nn.Parameter``s (trainable), the
coefficients of the ONNX-ML linear operators too; scalars, integer tensors, BatchNormalization's
running statistics and Scaler/Normalizer constants are buffers. The operators covered are those
onnxbridge's converters emit (PyTorch, the neural and linear scikit-learn models, tree ensembles
(``_to_torch_trees``: leaf values are parameters), If/Loop/Scan with their subgraphs, ONNX local
functions (each call runs the function body as a plan of its own), the indexing operators with
data-dependent shapes skl2onnx uses (Compress, NonZero, ScatterND, GatherND, ...)); any other
operator is named in an ``UnsupportedOperatorError`` before anything runs. String tensors are
numpy arrays of ``str`` (torch has none).

Why our own: onnx2torch 1.5 (its last release, 2024) stops at opset-19 Reshape and Cast 21,
which torch 2.14's exporter emits; onnx2pytorch 0.6 converts the PyTorch graphs but keeps
MatMul weights as plain tensors (not trainable) and has no ONNX-ML operators.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor

from onnxbridge.errors import ConversionError, ParityError, UnsupportedOperatorError

if TYPE_CHECKING:
    from onnxbridge.model import OnnxModel
    from onnxbridge.verify import ParityReport

__all__ = ["OnnxTorchModule", "SUPPORTED_OPERATORS", "to_torch"]

Attrs = dict[str, Any]
Op = Callable[["_Ctx", list[Any], Attrs], Any]

_ML = "ai.onnx.ml"


class _Ctx:
    """What an operator may need besides its inputs: the module (ML-op parameters), the opset."""

    def __init__(self, module: OnnxTorchModule, node_key: str, opset: int,
                 values: Mapping[str, Any]) -> None:
        self.module = module
        self.node_key = node_key
        self.opset = opset
        self.values = values  # every name visible where the node runs (for subgraphs)

    def param(self, what: str) -> Any:
        return self.module.get_tensor(f"{self.node_key}.{what}")


# -- helpers ---------------------------------------------------------------------------------------
def _ints(t: Any) -> list[int]:
    if t is None:
        return []
    if isinstance(t, torch.Tensor):
        return [int(v) for v in t.reshape(-1).tolist()]
    return [int(v) for v in t]


def _torch_dtype(onnx_type: int) -> torch.dtype:
    np_dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_type))
    if np_dtype == np.bool_:
        return torch.bool
    return torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype


def _axes(x: Tensor, axes: Sequence[int]) -> list[int]:
    return [a + x.dim() if a < 0 else a for a in axes]


def _pads(pads: Sequence[int], nd: int) -> list[int]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] -> F.pad's [e_last, b_last, ..., b1, e1] order."""
    if not pads:
        return []
    out: list[int] = []
    for i in reversed(range(nd)):
        out += [int(pads[i]), int(pads[i + nd])]
    return out


def _reduce_axes(ctx: _Ctx, ins: list[Any], a: Attrs, since: int) -> list[int] | None:
    axes = _ints(ins[1]) if len(ins) > 1 and ins[1] is not None else list(a.get("axes", []))
    if not axes:
        return None
    return axes


def _reduce(fn: Callable[..., Tensor], since: int = 18) -> Op:
    def op(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
        x = ins[0]
        axes = _reduce_axes(ctx, ins, a, since)
        keep = bool(a.get("keepdims", 1))
        if axes is None:
            if a.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        return fn(x, dim=tuple(_axes(x, axes)), keepdim=keep)
    return op


def _empty_reduction(x: Tensor, dim: tuple[int, ...], keepdim: bool, fill: float) -> Tensor:
    """ONNX: reducing nothing gives the operation's identity (-inf for max, +inf for min)."""
    shape = [1 if i in dim or i - x.dim() in dim else s for i, s in enumerate(x.shape)]
    if not keepdim:
        shape = [s for i, s in enumerate(x.shape) if i not in dim and i - x.dim() not in dim]
    if x.is_floating_point():
        return torch.full(shape, fill, dtype=x.dtype)
    info: Any = torch.iinfo(x.dtype) if x.dtype != torch.bool else None
    value = (fill > 0) if info is None else (info.max if fill > 0 else info.min)
    return torch.full(shape, value, dtype=x.dtype)


def _amax(x: Tensor, dim: tuple[int, ...], keepdim: bool) -> Tensor:
    if any(x.shape[d] == 0 for d in dim):
        return _empty_reduction(x, dim, keepdim, -math.inf)
    return torch.amax(x, dim=dim, keepdim=keepdim)


def _amin(x: Tensor, dim: tuple[int, ...], keepdim: bool) -> Tensor:
    if any(x.shape[d] == 0 for d in dim):
        return _empty_reduction(x, dim, keepdim, math.inf)
    return torch.amin(x, dim=dim, keepdim=keepdim)


def _prod(x: Tensor, dim: tuple[int, ...], keepdim: bool) -> Tensor:
    for d in sorted(dim, reverse=True):
        x = torch.prod(x, dim=d, keepdim=keepdim)
    return x


def _l2(x: Tensor, dim: tuple[int, ...], keepdim: bool) -> Tensor:
    return torch.sqrt(torch.sum(x * x, dim=dim, keepdim=keepdim))


def _logsumexp(x: Tensor, dim: tuple[int, ...], keepdim: bool) -> Tensor:
    return torch.logsumexp(x, dim=dim, keepdim=keepdim)


def _logsum(x: Tensor, dim: tuple[int, ...], keepdim: bool) -> Tensor:
    return torch.log(torch.sum(x, dim=dim, keepdim=keepdim))


def _l1(x: Tensor, dim: tuple[int, ...], keepdim: bool) -> Tensor:
    return torch.sum(torch.abs(x), dim=dim, keepdim=keepdim)


def _div(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x, y = ins
    if not x.is_floating_point() and not y.is_floating_point():
        return torch.div(x, y, rounding_mode="trunc")
    return x / y


def _softmax(log: bool) -> Op:
    def op(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
        x = ins[0]
        fn = torch.log_softmax if log else torch.softmax
        if ctx.opset >= 13:
            return fn(x, dim=int(a.get("axis", -1)))
        axis = _axes(x, [int(a.get("axis", 1))])[0]  # before 13: over the flattened tail
        shape = x.shape
        return fn(x.reshape(*shape[:axis], -1), dim=-1).reshape(shape)
    return op


def _gemm(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x, w = ins[0], ins[1]
    if a.get("transA", 0):
        x = x.t()
    if a.get("transB", 0):
        w = w.t()
    y = float(a.get("alpha", 1.0)) * (x @ w)
    if len(ins) > 2 and ins[2] is not None:
        y = y + float(a.get("beta", 1.0)) * ins[2]
    return y


def _conv(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    nd = x.dim() - 2
    strides = list(a.get("strides", [1] * nd))
    dilations = list(a.get("dilations", [1] * nd))
    pads = list(a.get("pads", [0] * 2 * nd))
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for i in range(nd):
            size = x.shape[2 + i]
            out = -(-size // strides[i])
            total = max(0, (out - 1) * strides[i] + (w.shape[2 + i] - 1) * dilations[i] + 1 - size)
            small = total // 2
            begins.append(total - small if auto == "SAME_LOWER" else small)
            ends.append(total - begins[-1])
        pads = begins + ends
    elif auto == "VALID":
        pads = [0] * 2 * nd
    group = int(a.get("group", 1))
    fn = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
          3: torch.nn.functional.conv3d}[nd]
    if pads[:nd] == pads[nd:]:
        return fn(x, w, b, stride=strides, padding=pads[:nd], dilation=dilations, groups=group)
    x = torch.nn.functional.pad(x, _pads(pads, nd))
    return fn(x, w, b, stride=strides, padding=0, dilation=dilations, groups=group)


def _conv_transpose(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    nd = x.dim() - 2
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or "output_shape" in a:
        raise ConversionError("ConvTranspose with auto_pad SAME or output_shape is not supported")
    pads = list(a.get("pads", [0] * 2 * nd))
    if pads[:nd] != pads[nd:]:
        raise ConversionError("ConvTranspose with asymmetric pads is not supported")
    fn = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
          3: torch.nn.functional.conv_transpose3d}[nd]
    return fn(x, w, b, stride=list(a.get("strides", [1] * nd)), padding=pads[:nd],
              output_padding=list(a.get("output_padding", [0] * nd)),
              groups=int(a.get("group", 1)), dilation=list(a.get("dilations", [1] * nd)))


def _pool(kind: str) -> Op:
    def op(ctx: _Ctx, ins: list[Any], a: Attrs) -> Any:
        x = ins[0]
        nd = x.dim() - 2
        kernel = list(a["kernel_shape"])
        strides = list(a.get("strides", [1] * nd))
        pads = list(a.get("pads", [0] * 2 * nd))
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise ConversionError(f"{kind}Pool with auto_pad={a['auto_pad']} is not supported")
        ceil = bool(a.get("ceil_mode", 0))
        padding: Any = pads[:nd]
        if pads[:nd] != pads[nd:]:
            fill = -math.inf if kind == "Max" else 0.0
            x = torch.nn.functional.pad(x, _pads(pads, nd), value=fill)
            padding = 0
        if kind == "Max":
            mx: Any = {1: torch.nn.functional.max_pool1d, 2: torch.nn.functional.max_pool2d,
                       3: torch.nn.functional.max_pool3d}[nd]
            return mx(x, kernel, strides, padding, list(a.get("dilations", [1] * nd)), ceil)
        avg: Any = {1: torch.nn.functional.avg_pool1d, 2: torch.nn.functional.avg_pool2d,
                    3: torch.nn.functional.avg_pool3d}[nd]
        return avg(x, kernel, strides, padding, ceil, bool(a.get("count_include_pad", 0)))
    return op


def _batch_norm(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x, scale, bias, mean, var = ins[:5]
    return torch.nn.functional.batch_norm(x, mean, var, scale, bias, training=False,
                                          eps=float(a.get("epsilon", 1e-5)))


def _layer_norm(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    axis = _axes(x, [int(a.get("axis", -1))])[0]
    shape = tuple(x.shape[axis:])
    return torch.nn.functional.layer_norm(x, shape, scale.expand(shape),
                                          None if bias is None else bias.expand(shape),
                                          eps=float(a.get("epsilon", 1e-5)))


def _instance_norm(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    return torch.nn.functional.instance_norm(ins[0], weight=ins[1], bias=ins[2],
                                             eps=float(a.get("epsilon", 1e-5)))


def _reshape(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x = ins[0]
    shape = _ints(ins[1])
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _flatten(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x = ins[0]
    axis = _axes(x, [int(a.get("axis", 1))])[0] if x.dim() else 0
    lead = int(np.prod(x.shape[:axis])) if axis else 1
    return x.reshape(lead, -1)


def _squeeze(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x = ins[0]
    axes = _ints(ins[1]) if len(ins) > 1 and ins[1] is not None else list(a.get("axes", []))
    if not axes:
        return x.squeeze()
    for d in sorted(_axes(x, axes), reverse=True):
        x = x.squeeze(d)
    return x


def _unsqueeze(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x = ins[0]
    axes = _ints(ins[1]) if len(ins) > 1 and ins[1] is not None else list(a["axes"])
    rank = x.dim() + len(axes)
    for d in sorted(a_ + rank if a_ < 0 else a_ for a_ in axes):
        x = x.unsqueeze(d)
    return x


def _split(ctx: _Ctx, ins: list[Any], a: Attrs) -> Any:
    x = ins[0]
    axis = int(a.get("axis", 0))
    sizes = _ints(ins[1]) if len(ins) > 1 and ins[1] is not None else list(a.get("split", []))
    if not sizes:
        n = int(a.get("num_outputs", ctx.module._n_outputs[ctx.node_key]))
        chunk = -(-x.shape[axis] // n)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(n)]
    return tuple(torch.split(x, sizes, dim=axis))


def _slice(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x = ins[0]
    if len(ins) == 1:  # before opset 10: attributes
        starts, ends, axes, steps = list(a["starts"]), list(a["ends"]), list(a.get("axes", [])), []
    else:
        starts, ends = _ints(ins[1]), _ints(ins[2])
        axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else []
        steps = _ints(ins[4]) if len(ins) > 4 and ins[4] is not None else []
    axes = _axes(x, axes or list(range(len(starts))))
    steps = steps or [1] * len(starts)
    index: list[Any] = [slice(None)] * x.dim()
    flips = []
    for ax, s, e, st in zip(axes, starts, ends, steps, strict=True):
        size = x.shape[ax]
        if st > 0:
            s = max(0, min(size, s + size if s < 0 else s))
            e = max(0, min(size, e + size if e < 0 else e))
            index[ax] = slice(s, e, st)
        else:  # negative step: torch has none, so slice then flip
            s = max(-1, min(size - 1, s + size if s < 0 else s))
            e = max(-1, min(size - 1, e + size if e < 0 else e))
            if s <= e:
                index[ax] = slice(0, 0)
                continue
            index[ax] = slice(e + 1, s + 1)
            flips.append((ax, -st))
    y = x[tuple(index)]
    for ax, st in flips:
        y = torch.flip(y, dims=[ax])
        if st != 1:
            y = y.narrow(ax, 0, y.shape[ax]).index_select(
                ax, torch.arange(0, y.shape[ax], st, device=y.device))
    return y


def _gather(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x, idx = ins
    axis = _axes(x, [int(a.get("axis", 0))])[0]
    idx = idx.long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = torch.index_select(x, axis, idx.reshape(-1))
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]))


def _gather_elements(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x, idx = ins
    axis = _axes(x, [int(a.get("axis", 0))])[0]
    idx = idx.long()
    return torch.gather(x, axis, torch.where(idx < 0, idx + x.shape[axis], idx))


def _shape(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    dims = list(ins[0].shape)
    start = a.get("start", 0)
    end = a.get("end", len(dims))
    return torch.tensor(dims[start:end], dtype=torch.int64)


def _constant(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    return ctx.param("value")


def _constant_of_shape(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    value = a.get("value")
    fill = (torch.from_numpy(numpy_helper.to_array(value).copy()).reshape(-1)
            if value is not None else torch.zeros(1, dtype=torch.float32))
    return fill.expand(_ints(ins[0])).clone() if _ints(ins[0]) else fill.reshape(())


def _cast(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    return ins[0].to(_torch_dtype(int(a["to"])))


def _expand(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x = ins[0]
    shape = _ints(ins[1])
    rank = max(x.dim(), len(shape))
    target = [1] * (rank - len(shape)) + shape
    current = [1] * (rank - x.dim()) + list(x.shape)
    full = [c if t == 1 else t for t, c in zip(target, current, strict=True)]
    return x.reshape(current).expand(full)


def _range(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    start, limit, delta = ins
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


def _where(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    return torch.where(ins[0].bool(), ins[1], ins[2])


def _pad(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x = ins[0]
    pads = _ints(ins[1]) if len(ins) > 1 else list(a["pads"])
    value = ins[2].item() if len(ins) > 2 and ins[2] is not None and ins[2].numel() else \
        float(a.get("value", 0.0))
    axes = _axes(x, _ints(ins[3])) if len(ins) > 3 and ins[3] is not None else list(range(x.dim()))
    full = [0] * 2 * x.dim()
    for i, ax in enumerate(axes):
        full[ax], full[ax + x.dim()] = pads[i], pads[i + len(axes)]
    given = str(a.get("mode", "constant"))
    mode = {"edge": "replicate"}.get(given, given)
    if mode == "constant":
        return torch.nn.functional.pad(x, _pads(full, x.dim()), value=value)
    nd = x.dim()
    # reflect/replicate pads only the trailing axes in torch
    lead = next((i for i in range(nd) if full[i] or full[i + nd]), nd)
    trailing = nd - lead
    return torch.nn.functional.pad(x, _pads(full[lead:nd] + full[nd + lead:], trailing), mode=mode)


def _arg(fn: Callable[..., Tensor]) -> Op:
    def op(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
        x = ins[0]
        axis = int(a.get("axis", 0))
        keep = bool(a.get("keepdims", 1))
        if a.get("select_last_index", 0):
            flipped = torch.flip(x, dims=[axis])
            out = x.shape[axis] - 1 - fn(flipped, dim=axis, keepdim=keep)
        else:
            out = fn(x, dim=axis, keepdim=keep)
        return out.to(torch.int64)
    return op


def _clip(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x = ins[0]
    low = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("min")
    high = ins[2] if len(ins) > 2 and ins[2] is not None else a.get("max")
    if isinstance(low, torch.Tensor):
        low = low.item()
    if isinstance(high, torch.Tensor):
        high = high.item()
    return torch.clamp(x, low, high)


def _variadic(fn: Callable[[Tensor, Tensor], Tensor]) -> Op:
    def op(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
        out = ins[0]
        for t in ins[1:]:
            out = fn(out, t)
        return out
    return op


def _mean(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    out = ins[0]
    for t in ins[1:]:
        out = out + t
    return out / len(ins)


def _trilu(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    k = int(ins[1].item()) if len(ins) > 1 and ins[1] is not None else 0
    return torch.triu(ins[0], k) if a.get("upper", 1) else torch.tril(ins[0], k)


def _gelu(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    return torch.nn.functional.gelu(ins[0], approximate=a.get("approximate", "none"))


def _dropout(ctx: _Ctx, ins: list[Any], a: Attrs) -> Any:
    x = ins[0]
    if ctx.module._n_outputs[ctx.node_key] > 1:
        return x, torch.ones_like(x, dtype=torch.bool)
    return x


def _cumsum(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x = ins[0]
    axis = int(ins[1].item())
    if a.get("reverse", 0):
        x = torch.flip(x, [axis])
    out = torch.cumsum(x, axis)
    if a.get("exclusive", 0):
        out = out - x
    return torch.flip(out, [axis]) if a.get("reverse", 0) else out


def _gru(ctx: _Ctx, ins: list[Any], a: Attrs) -> Any:
    """ONNX GRU, forward or bidirectional, default activations (sigmoid, tanh)."""
    x, w, r = ins[0], ins[1], ins[2]
    b = ins[3] if len(ins) > 3 else None
    if len(ins) > 4 and ins[4] is not None:
        raise ConversionError("GRU with sequence_lens is not supported")
    h0 = ins[5] if len(ins) > 5 else None
    if a.get("layout", 0):
        x = x.transpose(0, 1)
    if [s.lower() for s in a.get("activations", ["Sigmoid", "Tanh"] * 2)][:2] != ["sigmoid", "tanh"]:
        raise ConversionError("GRU with activations other than Sigmoid, Tanh is not supported")
    hidden = int(a["hidden_size"])
    dirs = 2 if a.get("direction", "forward") == "bidirectional" else 1
    reverse_only = a.get("direction", "forward") == "reverse"
    before = bool(a.get("linear_before_reset", 0))
    ys, hs = [], []
    for d in range(dirs):
        wz, wr, wh = w[d].split(hidden)
        rz, rr, rh = r[d].split(hidden)
        if b is not None:
            wbz, wbr, wbh, rbz, rbr, rbh = b[d].split(hidden)
        else:
            wbz = wbr = wbh = rbz = rbr = rbh = x.new_zeros(hidden)
        h = h0[d] if h0 is not None else x.new_zeros(x.shape[1], hidden)
        steps = range(x.shape[0] - 1, -1, -1) if (d == 1 or reverse_only) else range(x.shape[0])
        out: list[Any] = [None] * x.shape[0]
        for t in steps:
            xt = x[t]
            z = torch.sigmoid(xt @ wz.t() + h @ rz.t() + wbz + rbz)
            rt = torch.sigmoid(xt @ wr.t() + h @ rr.t() + wbr + rbr)
            if before:
                n = torch.tanh(xt @ wh.t() + rt * (h @ rh.t() + rbh) + wbh)
            else:
                n = torch.tanh(xt @ wh.t() + (rt * h) @ rh.t() + rbh + wbh)
            h = (1 - z) * n + z * h
            out[t] = h
        ys.append(torch.stack(out))  # [seq, batch, hidden]
        hs.append(h)
    y = torch.stack(ys, dim=1)  # [seq, dirs, batch, hidden]
    y_h = torch.stack(hs)
    if a.get("layout", 0):
        y, y_h = y.permute(2, 0, 1, 3), y_h.transpose(0, 1)
    return y, y_h


def _lstm(ctx: _Ctx, ins: list[Any], a: Attrs) -> Any:
    """ONNX LSTM, forward or bidirectional, default activations, no peepholes."""
    x, w, r = ins[0], ins[1], ins[2]
    b = ins[3] if len(ins) > 3 else None
    if (len(ins) > 4 and ins[4] is not None) or (len(ins) > 7 and ins[7] is not None):
        raise ConversionError("LSTM with sequence_lens or peepholes is not supported")
    h0 = ins[5] if len(ins) > 5 else None
    c0 = ins[6] if len(ins) > 6 else None
    if a.get("layout", 0):
        x = x.transpose(0, 1)
    acts = [s.lower() for s in a.get("activations", ["Sigmoid", "Tanh", "Tanh"] * 2)][:3]
    if acts != ["sigmoid", "tanh", "tanh"] or a.get("input_forget", 0):
        raise ConversionError("LSTM with other activations or input_forget is not supported")
    hidden = int(a["hidden_size"])
    dirs = 2 if a.get("direction", "forward") == "bidirectional" else 1
    reverse_only = a.get("direction", "forward") == "reverse"
    ys, hs, cs = [], [], []
    for d in range(dirs):
        bias = (b[d][: 4 * hidden] + b[d][4 * hidden:]) if b is not None else x.new_zeros(4 * hidden)
        h = h0[d] if h0 is not None else x.new_zeros(x.shape[1], hidden)
        c = c0[d] if c0 is not None else x.new_zeros(x.shape[1], hidden)
        steps = range(x.shape[0] - 1, -1, -1) if (d == 1 or reverse_only) else range(x.shape[0])
        out: list[Any] = [None] * x.shape[0]
        for t in steps:
            gates = x[t] @ w[d].t() + h @ r[d].t() + bias
            i, o, f, g = gates.split(hidden, dim=-1)  # ONNX order: input, output, forget, cell
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            out[t] = h
        ys.append(torch.stack(out))
        hs.append(h)
        cs.append(c)
    y, y_h, y_c = torch.stack(ys, dim=1), torch.stack(hs), torch.stack(cs)
    if a.get("layout", 0):
        y, y_h, y_c = y.permute(2, 0, 1, 3), y_h.transpose(0, 1), y_c.transpose(0, 1)
    return y, y_h, y_c


# -- ONNX-ML ---------------------------------------------------------------------------------------
def _post_transform(scores: Tensor, how: str) -> Tensor:
    if how == "NONE":
        return scores
    if how == "LOGISTIC":
        return torch.sigmoid(scores)
    if how == "SOFTMAX":
        return torch.softmax(scores, dim=-1)
    if how == "SOFTMAX_ZERO":
        e = torch.where(scores == 0, torch.zeros_like(scores),
                        torch.exp(scores - scores.max(dim=-1, keepdim=True).values))
        return e / e.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    if how == "PROBIT":
        return math.sqrt(2.0) * torch.erfinv(2 * scores - 1)
    raise ConversionError(f"post_transform {how!r} is not supported")


def _linear_regressor(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x = ins[0].to(torch.float32) if not ins[0].is_floating_point() else ins[0]
    coef = ctx.param("coefficients")
    targets = int(a.get("targets", 1))
    y = x @ coef.reshape(targets, -1).t().to(x.dtype)
    if ctx.module.has_tensor(f"{ctx.node_key}.intercepts"):
        y = y + ctx.param("intercepts").to(x.dtype)
    return _post_transform(y, a.get("post_transform", "NONE"))


def _linear_classifier(ctx: _Ctx, ins: list[Any], a: Attrs) -> Any:
    x = ins[0].to(torch.float32) if not ins[0].is_floating_point() else ins[0]
    labels = ctx.param("classlabels")
    coef = ctx.param("coefficients")
    n_classes = labels.shape[0]
    rows = coef.numel() // x.shape[-1]
    scores = x @ coef.reshape(rows, -1).t().to(x.dtype)
    if ctx.module.has_tensor(f"{ctx.node_key}.intercepts"):
        scores = scores + ctx.param("intercepts").to(x.dtype)
    how = a.get("post_transform", "NONE")
    if rows == 1 and n_classes == 2:  # one score for the positive class (onnxruntime's layout)
        s = scores[:, 0]
        if how == "NONE":
            label = _take(labels, (s > 0).long())
            out = torch.stack([-s, s], dim=1)
        else:
            p = _post_transform(s, how)
            label = _take(labels, (p > 0.5).long())
            out = torch.stack([1 - p, p], dim=1)
        return label, out
    out = _post_transform(scores, how)
    return _take(labels, torch.argmax(scores, dim=1)), out


def _take(table: Any, index: Tensor) -> Any:
    """``table[index]`` for a tensor or a numpy array of strings."""
    if isinstance(table, np.ndarray):
        return table[index.detach().cpu().numpy()]
    return table[index]


def _scaler(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x = ins[0].to(torch.float32) if not ins[0].is_floating_point() else ins[0]
    return (x - ctx.param("offset").to(x.dtype)) * ctx.param("scale").to(x.dtype)


def _normalizer(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x = ins[0].to(torch.float32) if not ins[0].is_floating_point() else ins[0]
    norm = a.get("norm", "MAX")
    if norm == "MAX":
        d = x.abs().amax(dim=1, keepdim=True)
    elif norm == "L1":
        d = x.abs().sum(dim=1, keepdim=True)
    else:
        d = torch.sqrt((x * x).sum(dim=1, keepdim=True))
    return x / torch.where(d == 0, torch.ones_like(d), d)


def _array_feature_extractor(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x, idx = ins
    return torch.index_select(x, x.dim() - 1, idx.reshape(-1).long())


def _imputer(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    """ai.onnx.ml Imputer: values equal to ``replaced_value_*`` (NaN: any NaN) take the imputed
    value of their column (or the one value given for all)."""
    x = ins[0]
    if x.is_floating_point():
        values = torch.tensor(list(a.get("imputed_value_floats", [])), dtype=x.dtype)
        bad = float(a.get("replaced_value_float", 0.0))
        hit = torch.isnan(x) if math.isnan(bad) else x == bad
    else:
        values = torch.tensor(list(a.get("imputed_value_int64s", [])), dtype=x.dtype)
        hit = x == int(a.get("replaced_value_int64", 0))
    if values.numel() not in (1, x.shape[-1]):
        raise ConversionError(f"Imputer has {values.numel()} imputed values for"
                              f" {x.shape[-1]} columns")
    return torch.where(hit, values.expand(x.shape[-1]) if values.numel() == 1 else values, x)


def _one_hot_encoder(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    """ai.onnx.ml OneHotEncoder: one more axis, one position per category (float output)."""
    x = ins[0]
    if "cats_strings" in a:
        cats = [str(c) for c in a["cats_strings"]]
        table = {c: i for i, c in enumerate(cats)}
        flat = [table.get(str(v), -1) for v in _np(x).reshape(-1)]
        index = torch.tensor(flat, dtype=torch.int64).reshape(tuple(_np(x).shape))
    else:
        cats_t = torch.tensor(list(a["cats_int64s"]), dtype=torch.int64)
        xi = x.to(torch.int64)
        index = torch.where(xi.unsqueeze(-1) == cats_t, torch.arange(len(cats_t)), -1).amax(-1) \
            if len(cats_t) else torch.full_like(xi, -1)
    n = len(a["cats_strings"]) if "cats_strings" in a else len(a.get("cats_int64s") or [])
    if not int(a.get("zeros", 1)) and bool((index < 0).any()):
        raise ConversionError("OneHotEncoder(zeros=0) met a value that is not a category")
    out = torch.nn.functional.one_hot(index.clamp_min(0), n).to(torch.float32)
    return out * (index >= 0).unsqueeze(-1).to(torch.float32)


def _dft(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    """DFT (opset 17 and 20): the last axis holds [real] or [real, imaginary]."""
    x = ins[0]
    length = int(_ints(ins[1])[0]) if len(ins) > 1 and ins[1] is not None and ins[1].numel() \
        else None
    if ctx.opset >= 20:
        axis = int(_ints(ins[2])[0]) if len(ins) > 2 and ins[2] is not None else -2
    else:
        axis = int(a.get("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    signal = torch.complex(x[..., 0], x[..., 1]) if x.shape[-1] == 2 else x[..., 0]
    if not signal.is_complex():
        signal = signal.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)
    fn = torch.fft.ifft if a.get("inverse", 0) else torch.fft.fft
    out = fn(signal, n=length, dim=axis)
    if a.get("onesided", 0):
        out = out.narrow(axis, 0, out.shape[axis] // 2 + 1)
    return torch.stack([out.real, out.imag], dim=-1).to(x.dtype)


def _resize(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    """Resize (opset 11+) over the spatial axes, in the forms torch's interpolate computes:
    nearest (asymmetric, floor), linear and cubic (half_pixel / pytorch_half_pixel /
    align_corners; cubic with coefficient -0.75)."""
    x = ins[0]
    scales = ins[2] if len(ins) > 2 and ins[2] is not None and ins[2].numel() else None
    sizes = ins[3] if len(ins) > 3 and ins[3] is not None and ins[3].numel() else None
    if ctx.opset < 11 or a.get("axes") is not None or a.get("antialias", 0) \
            or a.get("exclude_outside", 0) \
            or a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise ConversionError("Resize before opset 11, or with axes/antialias/exclude_outside/"
                              "keep_aspect_ratio_policy, is not supported")
    nd = x.dim() - 2
    mode = str(a.get("mode", "nearest"))
    ctm = str(a.get("coordinate_transformation_mode", "half_pixel"))
    kwargs: dict[str, Any] = {}
    if sizes is not None:
        want = _ints(sizes)
        if want[:2] != list(x.shape[:2]):
            raise ConversionError("Resize of the batch or channel axis is not supported")
        kwargs["size"] = want[2:]
    else:
        assert scales is not None
        factors = [float(v) for v in scales.reshape(-1).tolist()]
        if factors[:2] != [1.0, 1.0]:
            raise ConversionError("Resize of the batch or channel axis is not supported")
        kwargs["scale_factor"] = factors[2:]
    if mode == "nearest":
        if ctm != "asymmetric" or a.get("nearest_mode", "round_prefer_floor") != "floor":
            raise ConversionError(f"Resize nearest with {ctm}/{a.get('nearest_mode')} is not"
                                  " supported (asymmetric/floor is)")
        return torch.nn.functional.interpolate(x, mode="nearest", **kwargs)
    if mode == "cubic" and float(a.get("cubic_coeff_a", -0.75)) != -0.75:
        raise ConversionError("Resize cubic with cubic_coeff_a other than -0.75 is not supported")
    if ctm not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        raise ConversionError(f"Resize {mode} with {ctm} is not supported")
    out_len = kwargs.get("size") or [math.floor(x.shape[2 + i] * f)
                                     for i, f in enumerate(kwargs["scale_factor"])]
    if ctm == "pytorch_half_pixel" and min(out_len) <= 1:
        raise ConversionError("Resize pytorch_half_pixel to a length-1 axis is not supported")
    torch_mode = {"linear": {1: "linear", 2: "bilinear", 3: "trilinear"}.get(nd),
                  "cubic": {2: "bicubic"}.get(nd)}.get(mode)
    if torch_mode is None:
        raise ConversionError(f"Resize {mode} over {nd} axes is not supported")
    return torch.nn.functional.interpolate(x, mode=torch_mode,
                                           align_corners=ctm == "align_corners", **kwargs)


def _svm_kernel(x: Tensor, vectors: Tensor, kind: str, params: Sequence[float]) -> Tensor:
    """[N, V] kernel values between rows and support vectors (onnxruntime's SVM kernels)."""
    gamma, coef0, degree = [*params, 0.0, 0.0, 0.0][:3]
    if kind == "RBF":
        diff = x.unsqueeze(1) - vectors.unsqueeze(0)
        return torch.exp(-gamma * (diff * diff).sum(-1))
    dot = x @ vectors.t()
    if kind == "LINEAR":
        return dot
    if kind == "POLY":
        return torch.pow(gamma * dot + coef0, degree)
    if kind == "SIGMOID":
        return torch.tanh(gamma * dot + coef0)
    raise ConversionError(f"SVM kernel {kind!r} is not supported")


def _svm_regressor(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x = ins[0].to(torch.float32)
    coef = ctx.param("coefficients")
    rho = ctx.param("rho")
    n_sv = int(a.get("n_supports", 0))
    if n_sv > 0:
        vectors = ctx.param("support_vectors").reshape(n_sv, -1)
        y = _svm_kernel(x, vectors, str(a.get("kernel_type", "LINEAR")),
                        a.get("kernel_params", [])) @ coef.reshape(-1) + rho[0]
    else:
        y = x @ coef.reshape(-1) + rho[0]
    if int(a.get("one_class", 0)):
        y = torch.where(y > 0, torch.ones_like(y), -torch.ones_like(y))
    return y.reshape(-1, 1)


def _svm_classifier(ctx: _Ctx, ins: list[Any], a: Attrs) -> Any:
    """ai.onnx.ml SVMClassifier as onnxruntime computes it, without probabilities (prob_a):
    one-vs-one votes (the first class with the most votes wins) and the pairwise scores, or
    the linear form (one score per class)."""
    x = ins[0].to(torch.float32)
    labels = ctx.param("classlabels")
    coef, rho = ctx.param("coefficients"), ctx.param("rho")
    per_class = [int(v) for v in a.get("vectors_per_class", [])]
    n_classes = len(labels)
    if not per_class:  # linear: scores = x . coef_c + rho[0]
        scores = x @ coef.reshape(n_classes, -1).t() + rho[0]
        best = torch.argmax(scores, dim=1)  # the first of equal maxima
        if n_classes == 2:
            top = scores.gather(1, best.unsqueeze(1)).squeeze(1)
            positive = (top >= 0.5) if ctx.module._meta[ctx.node_key] else (top > 0)
            best = torch.where(positive, torch.ones_like(best), best)
        return _take(labels, best), scores
    n_sv = sum(per_class)
    kernels = _svm_kernel(x, ctx.param("support_vectors").reshape(n_sv, -1),
                          str(a.get("kernel_type", "LINEAR")), a.get("kernel_params", []))
    coef = coef.reshape(n_classes - 1, n_sv)
    starts = np.cumsum([0, *per_class])
    pairs, votes = [], torch.zeros(x.shape[0], n_classes, dtype=torch.int64)
    k = 0
    for i in range(n_classes - 1):
        si = slice(int(starts[i]), int(starts[i + 1]))
        for j in range(i + 1, n_classes):
            sj = slice(int(starts[j]), int(starts[j + 1]))
            s = (kernels[:, si] * coef[j - 1, si]).sum(1) + (kernels[:, sj] * coef[i, sj]).sum(1) \
                + rho[k]
            k += 1
            pairs.append(s)
            winner = torch.where(s > 0, i, j)
            votes = votes + torch.nn.functional.one_hot(winner, n_classes)
    best = torch.argmax(votes, dim=1)  # torch returns the first of equal maxima
    scores = torch.stack(pairs, dim=1)
    if ctx.module.has_tensor(f"{ctx.node_key}.prob_a"):  # Platt scaling, then pairwise coupling
        return _take(labels, best), _svm_probabilities(ctx, scores, n_classes)
    if n_classes == 2:
        scores = torch.cat([-scores, scores], dim=1)
    return _take(labels, best), scores


def _svm_probabilities(ctx: _Ctx, pair_scores: Tensor, k: int) -> Tensor:
    """libsvm's probabilities, as onnxruntime computes them: each pairwise score through its
    sigmoid (prob_a, prob_b), clipped to [1e-7, 1 - 1e-7], then the pairwise coupling of Wu,
    Lin and Weng (2004), iterated per row until its error is below 0.005 / k (100 steps at most).
    """
    prob_a, prob_b = ctx.param("prob_a"), ctx.param("prob_b")
    pairwise = torch.sigmoid(-(pair_scores * prob_a + prob_b)).clamp(1e-7, 1 - 1e-7)
    n = pair_scores.shape[0]
    r = pair_scores.new_zeros(n, k, k)
    idx = 0
    for i in range(k - 1):
        for j in range(i + 1, k):
            r[:, i, j] = pairwise[:, idx]
            r[:, j, i] = 1 - pairwise[:, idx]
            idx += 1
    q = -r.transpose(1, 2) * r  # q[t][j] = -r[j][t] r[t][j] off the diagonal
    diag = (r * r).sum(dim=1) - (torch.diagonal(r, dim1=1, dim2=2) ** 2)  # sum_j r[j][t]^2
    q = q - torch.diag_embed(torch.diagonal(q, dim1=1, dim2=2)) + torch.diag_embed(diag)
    p = pair_scores.new_full((n, k), 1.0 / k)
    eps = 0.005 / k
    for _ in range(100):
        qp = torch.einsum("ntj,nj->nt", q, p)
        pqp = (p * qp).sum(dim=1)
        active = (qp - pqp.unsqueeze(1)).abs().amax(dim=1) >= eps
        if not bool(active.any()):
            break
        for t in range(k):
            diff = (-qp[:, t] + pqp) / q[:, t, t]
            diff = torch.where(active, diff, torch.zeros_like(diff))
            p = p.clone()
            p[:, t] = p[:, t] + diff
            scale = 1 + diff
            pqp = (pqp + diff * (diff * q[:, t, t] + 2 * qp[:, t])) / scale / scale
            qp = (qp + diff.unsqueeze(1) * q[:, t, :]) / scale.unsqueeze(1)
            p = p / scale.unsqueeze(1)
    return p


def _binarizer(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x = ins[0]
    return (x > float(a.get("threshold", 0.0))).to(x.dtype)


# -- strings (numpy arrays of str: torch has no string tensors) -------------------------------------
def _as_strings(array: np.ndarray) -> np.ndarray:
    flat = [v.decode() if isinstance(v, bytes) else str(v) for v in array.reshape(-1).tolist()]
    return np.array(flat, dtype=object).reshape(array.shape)


def _as_value(value: Any) -> Any:
    """A forward() argument as a tensor, or as a numpy array of str for strings."""
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if array.dtype.kind in "OSU":
        return _as_strings(array)
    return torch.as_tensor(array if array.flags.writeable else array.copy())


def _np(v: Any) -> Any:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v


def _back(v: np.ndarray) -> Any:
    """A numpy result: strings stay numpy, numbers become a tensor again."""
    v = np.asarray(v)
    return v if v.dtype.kind in "OSU" else torch.from_numpy(np.ascontiguousarray(v))


def _string_cast(ins: list[Any], a: Attrs) -> Any:
    x, to = _np(ins[0]), int(a["to"])
    if to == onnx.TensorProto.STRING:
        return _as_strings(x.astype(object) if x.dtype.kind != "O" else x)
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(to)
    return _back(np.array([float(v) for v in x.reshape(-1)], dtype=np.float64)
                 .astype(np_dtype).reshape(x.shape))


def _string_gather(ins: list[Any], a: Attrs) -> Any:
    x, idx = _np(ins[0]), _np(ins[1]).astype(np.int64)
    return _back(np.take(x, idx, axis=int(a.get("axis", 0)), mode="wrap"))


def _string_reshape(ins: list[Any], a: Attrs) -> Any:
    x, shape = _np(ins[0]), [int(d) for d in _np(ins[1]).reshape(-1)]
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return _back(x.reshape(shape))


def _string_axes(ins: list[Any], a: Attrs) -> list[int]:
    if len(ins) > 1 and ins[1] is not None:
        return [int(v) for v in _np(ins[1]).reshape(-1)]
    return [int(v) for v in a.get("axes", [])]


def _string_squeeze(ins: list[Any], a: Attrs) -> Any:
    x = _np(ins[0])
    axes = _string_axes(ins, a)
    return _back(np.squeeze(x, axis=tuple(axes)) if axes else np.squeeze(x))


def _string_unsqueeze(ins: list[Any], a: Attrs) -> Any:
    x = _np(ins[0])
    axes = _string_axes(ins, a)
    rank = x.ndim + len(axes)
    for d in sorted(v + rank if v < 0 else v for v in axes):
        x = np.expand_dims(x, d)
    return _back(x)


_STRING_OPS: dict[str, Callable[[list[Any], Attrs], Any]] = {
    "Identity": lambda ins, a: ins[0],
    "Cast": _string_cast,
    "Gather": _string_gather,
    "Reshape": _string_reshape,
    "Squeeze": _string_squeeze,
    "Unsqueeze": _string_unsqueeze,
    "Flatten": lambda ins, a: _back(_np(ins[0]).reshape(
        int(np.prod(_np(ins[0]).shape[: int(a.get("axis", 1))])), -1)),
    "Concat": lambda ins, a: _back(np.concatenate([_np(v) for v in ins], axis=int(a["axis"]))),
    "Transpose": lambda ins, a: _back(np.transpose(_np(ins[0]), a.get("perm"))),
    "Equal": lambda ins, a: _back(_np(ins[0]) == _np(ins[1])),
    "Shape": lambda ins, a: torch.tensor(list(_np(ins[0]).shape)[a.get("start", 0):a.get("end")],
                                         dtype=torch.int64),
    "Size": lambda ins, a: torch.tensor(_np(ins[0]).size, dtype=torch.int64),
    "ArrayFeatureExtractor": lambda ins, a: _back(np.take(
        _np(ins[0]), _np(ins[1]).reshape(-1).astype(np.int64), axis=-1)),
}


def _label_encoder(ctx: _Ctx, ins: list[Any], a: Attrs) -> Any:
    """ai.onnx.ml LabelEncoder 1-4: a lookup table from keys to values, with a default."""
    x = _np(ins[0])
    if "classes_strings" in a:  # version 1: string <-> position
        classes = list(a["classes_strings"])
        if x.dtype.kind in "OSU":
            table: dict[Any, Any] = {c: i for i, c in enumerate(classes)}
            default: Any = int(a.get("default_int64", -1))
            out_dtype: Any = np.int64
        else:
            table = dict(enumerate(classes))
            default = a.get("default_string", "_Unused")
            out_dtype = object
    else:
        keys = _ml_list(a, "keys")
        values = _ml_list(a, "values")
        table = dict(zip(keys, values, strict=True))
        sample = values[0] if values else 0
        if isinstance(sample, str):
            default, out_dtype = a.get("default_string", "_Unused"), object
        elif isinstance(sample, float):
            default, out_dtype = float(a.get("default_float", -0.0)), np.float32
        else:
            default, out_dtype = int(a.get("default_int64", -1)), np.int64
        if "default_tensor" in a:
            default = numpy_helper.to_array(a["default_tensor"]).reshape(-1)[0]
            default = default.decode() if isinstance(default, bytes) else default.item()
    nan_value = next((v for k, v in table.items() if isinstance(k, float) and math.isnan(k)), None)

    def look(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return default if nan_value is None else nan_value
        return table.get(v, default)

    flat = [look(v.item() if isinstance(v, np.generic) else v) for v in x.reshape(-1)]
    return _back(np.array(flat, dtype=out_dtype).reshape(x.shape))


def _ml_list(a: Attrs, what: str) -> list[Any]:
    for kind in ("strings", "int64s", "floats"):
        if f"{what}_{kind}" in a:
            return [float(v) if kind == "floats" else v for v in a[f"{what}_{kind}"]]
    if f"{what}_tensor" in a:
        arr = numpy_helper.to_array(a[f"{what}_tensor"]).reshape(-1)
        return [v.decode() if isinstance(v, bytes) else v.item() for v in arr]
    return []


def _zipmap(ctx: _Ctx, ins: list[Any], a: Attrs) -> list[dict[Any, float]]:
    """ai.onnx.ml ZipMap: one dict per row, class label -> probability (as onnxruntime)."""
    labels: list[Any] = list(a.get("classlabels_int64s") or a.get("classlabels_strings") or [])
    rows = _np(ins[0]).reshape(-1, len(labels)).tolist()
    return [dict(zip(labels, r, strict=True)) for r in rows]


# -- more standard operators (k-nearest neighbours, integer matrix products) --------------------------
def _topk(ctx: _Ctx, ins: list[Any], a: Attrs) -> Any:
    x = ins[0]
    k = int(_ints(ins[1])[0]) if len(ins) > 1 else int(a["k"])
    axis = int(a.get("axis", -1))
    largest = bool(a.get("largest", 1))
    # onnxruntime keeps the lower index first among equal values: a stable sort does the same
    order = torch.sort(x, dim=axis, descending=largest, stable=True).indices.narrow(axis, 0, k)
    return torch.gather(x, axis, order), order


def _matmul_integer(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x, w = ins[0].to(torch.int64), ins[1].to(torch.int64)
    if len(ins) > 2 and ins[2] is not None:
        x = x - ins[2].to(torch.int64)
    if len(ins) > 3 and ins[3] is not None:
        w = w - ins[3].to(torch.int64)
    return torch.matmul(x.double(), w.double()).to(torch.int32)


def _sum_square(x: Tensor, dim: tuple[int, ...], keepdim: bool) -> Tensor:
    return torch.sum(x * x, dim=dim, keepdim=keepdim)


# -- control flow: subgraphs run eagerly, seeing the names of the graphs around them -------------------
def _if(ctx: _Ctx, ins: list[Any], a: Attrs) -> Any:
    branch = a["then_branch"] if bool(ins[0].reshape(-1)[0]) else a["else_branch"]
    outs = ctx.module.run_plan(branch, ctx.values, {})
    return outs[0] if len(outs) == 1 else tuple(outs)


def _loop(ctx: _Ctx, ins: list[Any], a: Attrs) -> Any:
    body = a["body"]
    trips = int(ins[0].reshape(-1)[0]) if ins and ins[0] is not None else None
    cond = bool(ins[1].reshape(-1)[0]) if len(ins) > 1 and ins[1] is not None else True
    carried = list(ins[2:])
    n_carried = len(carried)
    scans: list[list[Any]] = []
    i = 0
    while (trips is None or i < trips) and cond:
        feeds = dict(zip(body.inputs, [torch.tensor(i, dtype=torch.int64),
                                       torch.tensor(cond), *carried], strict=True))
        outs = ctx.module.run_plan(body, ctx.values, feeds)
        cond = bool(outs[0].reshape(-1)[0])
        carried = outs[1: 1 + n_carried]
        if not scans:
            scans = [[] for _ in outs[1 + n_carried:]]
        for store, value in zip(scans, outs[1 + n_carried:], strict=True):
            store.append(value)
        i += 1
    n_scans = len(body.outputs) - 1 - n_carried
    stacked = [torch.stack(s) if s else torch.zeros(0) for s in (scans or [[]] * n_scans)]
    results = [*carried, *stacked]
    return results[0] if len(results) == 1 else tuple(results)


def _scan(ctx: _Ctx, ins: list[Any], a: Attrs) -> Any:
    if ctx.opset < 9:
        raise ConversionError("Scan before opset 9 (batched, with sequence_lens) is not supported")
    body = a["body"]
    m = int(a["num_scan_inputs"])
    states, xs = list(ins[: len(ins) - m]), list(ins[len(ins) - m:])
    in_axes = [int(v) for v in a.get("scan_input_axes", [0] * m)]
    in_dirs = [int(v) for v in a.get("scan_input_directions", [0] * m)]
    in_axes = [ax + x.dim() if ax < 0 else ax for ax, x in zip(in_axes, xs, strict=True)]
    steps = xs[0].shape[in_axes[0]] if xs else 0
    n_out = len(body.outputs) - len(states)
    collected: list[list[Any]] = [[] for _ in range(n_out)]
    for t in range(steps):
        slices = [x.select(ax, steps - 1 - t if d else t)
                  for x, ax, d in zip(xs, in_axes, in_dirs, strict=True)]
        outs = ctx.module.run_plan(body, ctx.values,
                                   dict(zip(body.inputs, [*states, *slices], strict=True)))
        states = outs[: len(states)]
        for store, value in zip(collected, outs[len(states):], strict=True):
            store.append(value)
    out_axes = [int(v) for v in a.get("scan_output_axes", [0] * n_out)]
    out_dirs = [int(v) for v in a.get("scan_output_directions", [0] * n_out)]
    scanned = []
    for store, ax, d in zip(collected, out_axes, out_dirs, strict=True):
        if not store:
            scanned.append(torch.zeros(0))
            continue
        items = store[::-1] if d else store
        rank = items[0].dim() + 1
        scanned.append(torch.stack(items, dim=ax + rank if ax < 0 else ax))
    results = [*states, *scanned]
    return results[0] if len(results) == 1 else tuple(results)


# -- indexing with data-dependent shapes (skl2onnx's KNNImputer and friends) ---------------------------
def _fix_negative(idx: Tensor, size: int | Tensor) -> Tensor:
    idx = idx.long()
    return torch.where(idx < 0, idx + size, idx)


def _compress(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x, cond = ins[0], ins[1].reshape(-1).bool()
    if "axis" not in a:
        x, axis = x.reshape(-1), 0
    else:
        axis = _axes(x, [int(a["axis"])])[0]
    keep = torch.nonzero(cond[: x.shape[axis]]).reshape(-1)  # a shorter condition drops the rest
    return torch.index_select(x, axis, keep)


def _nonzero(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    x = ins[0]
    if x.dim() == 0:  # onnxruntime: a scalar is one element of a 1-D tensor
        x = x.reshape(1)
    return torch.nonzero(x).t().contiguous()


_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


def _scatter_nd(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    data, indices, updates = ins
    k = indices.shape[-1]
    lead = data.shape[:k]
    idx = indices.reshape(-1, k).long()
    size = torch.tensor(list(lead), dtype=torch.int64)
    idx = torch.where(idx < 0, idx + size, idx)
    strides = torch.tensor([int(np.prod(lead[i + 1:])) for i in range(k)], dtype=torch.int64)
    linear = (idx * strides).sum(dim=1)
    flat = data.reshape(int(np.prod(lead)), *data.shape[k:])
    upd = updates.reshape(-1, *data.shape[k:]).to(data.dtype)
    how = str(a.get("reduction", "none"))
    if how == "none":
        out = flat.index_put((linear,), upd)
    elif how == "add":
        out = flat.index_put((linear,), upd, accumulate=True)
    else:
        index = linear.reshape(-1, *[1] * (upd.dim() - 1)).expand_as(upd)
        out = torch.scatter_reduce(flat, 0, index, upd, _REDUCE[how], include_self=True)
    return out.reshape(data.shape)


def _scatter_elements(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    data, indices, updates = ins
    axis = _axes(data, [int(a.get("axis", 0))])[0]
    idx = _fix_negative(indices, data.shape[axis])
    how = str(a.get("reduction", "none"))
    if how == "none":
        return torch.scatter(data, axis, idx, updates.to(data.dtype))
    return torch.scatter_reduce(data, axis, idx, updates.to(data.dtype), _REDUCE[how],
                                include_self=True)


def _gather_nd(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    data, indices = ins
    b = int(a.get("batch_dims", 0))
    k = indices.shape[-1]
    batch = int(np.prod(data.shape[:b]))
    d = data.reshape(batch, *data.shape[b:])
    idx = indices.reshape(batch, -1, k).long()
    size = torch.tensor(list(data.shape[b:b + k]), dtype=torch.int64)
    idx = torch.where(idx < 0, idx + size, idx)
    rows = torch.arange(batch).unsqueeze(1).expand(batch, idx.shape[1])
    out = d[(rows, *idx.unbind(-1))]
    return out.reshape(*indices.shape[:-1], *data.shape[b + k:])


# -- sequences: Python lists of tensors ---------------------------------------------------------------
def _position(seq: list[Any], pos: Any, *, insert: bool = False) -> int:
    n = len(seq)
    p = int(_ints(pos)[0])
    p = p + n if p < 0 else p
    if not 0 <= p <= (n if insert else n - 1):
        raise ConversionError(f"sequence position {int(_ints(pos)[0])} is out of range for a"
                              f" sequence of {n} tensor(s)")
    return p


def _sequence_insert(ctx: _Ctx, ins: list[Any], a: Attrs) -> list[Any]:
    seq = list(ins[0])
    at = len(seq) if len(ins) < 3 or ins[2] is None else _position(seq, ins[2], insert=True)
    seq.insert(at, ins[1])
    return seq


def _sequence_erase(ctx: _Ctx, ins: list[Any], a: Attrs) -> list[Any]:
    seq = list(ins[0])
    at = len(seq) - 1 if len(ins) < 2 or ins[1] is None else _position(seq, ins[1])
    if not seq:
        raise ConversionError("SequenceErase on an empty sequence")
    del seq[at]
    return seq


def _split_to_sequence(ctx: _Ctx, ins: list[Any], a: Attrs) -> list[Any]:
    x = ins[0]
    axis = _axes(x, [int(a.get("axis", 0))])[0]
    split = ins[1] if len(ins) > 1 else None
    if split is None:  # pieces of one, the axis dropped unless keepdims
        pieces = list(torch.split(x, 1, dim=axis))
        return pieces if a.get("keepdims", 1) else [p.squeeze(axis) for p in pieces]
    if split.dim() == 0:  # equal pieces of that size, the last one may be smaller
        return list(torch.split(x, int(split.item()), dim=axis))
    return list(torch.split(x, _ints(split), dim=axis))


def _concat_from_sequence(ctx: _Ctx, ins: list[Any], a: Attrs) -> Tensor:
    seq, axis = ins[0], int(a["axis"])
    if a.get("new_axis", 0):
        rank = seq[0].dim() + 1
        return torch.stack(seq, dim=axis + rank if axis < 0 else axis)
    return torch.cat(seq, dim=axis)


def _sequence_map(ctx: _Ctx, ins: list[Any], a: Attrs) -> Any:
    """SequenceMap: the body runs once per position; sequence inputs give their i-th tensor."""
    body: _Plan = a["body"]
    n = len(ins[0])
    results: list[list[Any]] = [[] for _ in body.outputs]
    for i in range(n):
        args = [v[i] if isinstance(v, list) else v for v in ins]
        outs = ctx.module.run_plan(body, ctx.values, dict(zip(body.inputs, args, strict=True)))
        for store, value in zip(results, outs, strict=True):
            store.append(value)
    return results[0] if len(results) == 1 else tuple(results)


def _tree_ensemble(ctx: _Ctx, ins: list[Any], a: Attrs) -> Any:
    from onnxbridge._to_torch_trees import tree_ensemble

    return tree_ensemble(ctx, ins, a)


def _unary(fn: Callable[[Tensor], Tensor]) -> Op:
    return lambda ctx, ins, a: fn(ins[0])


def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> Op:
    return lambda ctx, ins, a: fn(ins[0], ins[1])


F = torch.nn.functional
_OPS: dict[tuple[str, str], Op] = {
    ("", "Add"): _binary(torch.add), ("", "Sub"): _binary(torch.sub),
    ("", "Mul"): _binary(torch.mul), ("", "Div"): _div, ("", "Pow"): _binary(torch.pow),
    ("", "Equal"): _binary(torch.eq), ("", "Less"): _binary(torch.lt),
    ("", "Greater"): _binary(torch.gt), ("", "LessOrEqual"): _binary(torch.le),
    ("", "GreaterOrEqual"): _binary(torch.ge), ("", "And"): _binary(torch.logical_and),
    ("", "Or"): _binary(torch.logical_or), ("", "Xor"): _binary(torch.logical_xor),
    ("", "Not"): _unary(torch.logical_not), ("", "Max"): _variadic(torch.maximum),
    ("", "Min"): _variadic(torch.minimum), ("", "Sum"): _variadic(torch.add), ("", "Mean"): _mean,
    ("", "Relu"): _unary(torch.relu), ("", "Sigmoid"): _unary(torch.sigmoid),
    ("", "Tanh"): _unary(torch.tanh), ("", "Exp"): _unary(torch.exp), ("", "Log"): _unary(torch.log),
    ("", "Sqrt"): _unary(torch.sqrt), ("", "Reciprocal"): _unary(torch.reciprocal),
    ("", "Neg"): _unary(torch.neg), ("", "Abs"): _unary(torch.abs), ("", "Erf"): _unary(torch.erf),
    ("", "Floor"): _unary(torch.floor), ("", "Ceil"): _unary(torch.ceil),
    ("", "Round"): _unary(torch.round), ("", "Sign"): _unary(torch.sign),
    ("", "Sin"): _unary(torch.sin), ("", "Cos"): _unary(torch.cos),
    ("", "Softplus"): _unary(F.softplus), ("", "Softsign"): _unary(F.softsign),
    ("", "IsNaN"): _unary(torch.isnan), ("", "Identity"): _unary(lambda x: x),
    ("", "HardSwish"): _unary(F.hardswish), ("", "Mish"): _unary(F.mish),
    ("", "Selu"): _unary(F.selu),
    ("", "LeakyRelu"): lambda ctx, ins, a: F.leaky_relu(ins[0], float(a.get("alpha", 0.01))),
    ("", "Elu"): lambda ctx, ins, a: F.elu(ins[0], float(a.get("alpha", 1.0))),
    ("", "HardSigmoid"): lambda ctx, ins, a: torch.clamp(
        float(a.get("alpha", 0.2)) * ins[0] + float(a.get("beta", 0.5)), 0, 1),
    ("", "PRelu"): lambda ctx, ins, a: torch.where(ins[0] >= 0, ins[0], ins[0] * ins[1]),
    ("", "Gelu"): _gelu, ("", "Clip"): _clip, ("", "Dropout"): _dropout,
    ("", "Softmax"): _softmax(False), ("", "LogSoftmax"): _softmax(True),
    ("", "MatMul"): _binary(torch.matmul), ("", "Gemm"): _gemm,
    ("", "Einsum"): lambda ctx, ins, a: torch.einsum(a["equation"], *ins),
    ("", "Conv"): _conv, ("", "ConvTranspose"): _conv_transpose,
    ("", "MaxPool"): _pool("Max"), ("", "AveragePool"): _pool("Average"),
    ("", "GlobalAveragePool"): lambda ctx, ins, a: ins[0].mean(
        dim=tuple(range(2, ins[0].dim())), keepdim=True),
    ("", "GlobalMaxPool"): lambda ctx, ins, a: ins[0].amax(
        dim=tuple(range(2, ins[0].dim())), keepdim=True),
    ("", "BatchNormalization"): _batch_norm, ("", "LayerNormalization"): _layer_norm,
    ("", "InstanceNormalization"): _instance_norm,
    ("", "Reshape"): _reshape, ("", "Flatten"): _flatten,
    ("", "Transpose"): lambda ctx, ins, a: ins[0].permute(
        list(a.get("perm", reversed(range(ins[0].dim()))))),
    ("", "Squeeze"): _squeeze, ("", "Unsqueeze"): _unsqueeze,
    ("", "Concat"): lambda ctx, ins, a: torch.cat(
        [t for t in ins if t is not None], dim=int(a["axis"])),
    ("", "Split"): _split, ("", "Slice"): _slice, ("", "Gather"): _gather,
    ("", "GatherElements"): _gather_elements, ("", "Shape"): _shape,
    ("", "Size"): lambda ctx, ins, a: torch.tensor(ins[0].numel(), dtype=torch.int64),
    ("", "Constant"): _constant, ("", "ConstantOfShape"): _constant_of_shape,
    ("", "Cast"): _cast, ("", "CastLike"): lambda ctx, ins, a: ins[0].to(ins[1].dtype),
    ("", "Expand"): _expand, ("", "Tile"): lambda ctx, ins, a: ins[0].repeat(_ints(ins[1])),
    ("", "Range"): _range, ("", "Where"): _where, ("", "Pad"): _pad,
    ("", "ReduceMean"): _reduce(torch.mean), ("", "ReduceSum"): _reduce(torch.sum, 13),
    ("", "ReduceMax"): _reduce(_amax), ("", "ReduceMin"): _reduce(_amin),
    ("", "ReduceProd"): _reduce(_prod), ("", "ReduceL2"): _reduce(_l2),
    ("", "ArgMax"): _arg(torch.argmax), ("", "ArgMin"): _arg(torch.argmin),
    ("", "CumSum"): _cumsum, ("", "Trilu"): _trilu, ("", "GRU"): _gru, ("", "LSTM"): _lstm,
    (_ML, "LinearRegressor"): _linear_regressor, (_ML, "LinearClassifier"): _linear_classifier,
    (_ML, "Scaler"): _scaler, (_ML, "Normalizer"): _normalizer,
    (_ML, "ArrayFeatureExtractor"): _array_feature_extractor, (_ML, "Binarizer"): _binarizer,
    (_ML, "TreeEnsembleRegressor"): _tree_ensemble, (_ML, "TreeEnsembleClassifier"): _tree_ensemble,
    (_ML, "TreeEnsemble"): _tree_ensemble,
    (_ML, "LabelEncoder"): _label_encoder, (_ML, "ZipMap"): _zipmap,
    ("", "Mod"): lambda ctx, ins, a: (torch.fmod if a.get("fmod", 0) else torch.remainder)(
        ins[0], ins[1]),
    ("", "TopK"): _topk, ("", "MatMulInteger"): _matmul_integer,
    ("", "ReduceSumSquare"): _reduce(_sum_square),
    ("", "If"): _if, ("", "Loop"): _loop, ("", "Scan"): _scan,
    ("", "DFT"): _dft, ("", "Resize"): _resize,
    (_ML, "Imputer"): _imputer, (_ML, "OneHotEncoder"): _one_hot_encoder,
    (_ML, "SVMRegressor"): _svm_regressor, (_ML, "SVMClassifier"): _svm_classifier,
    ("", "ReduceLogSumExp"): _reduce(_logsumexp), ("", "ReduceLogSum"): _reduce(_logsum),
    ("", "ReduceL1"): _reduce(_l1),
    ("", "Compress"): _compress, ("", "NonZero"): _nonzero, ("", "ScatterND"): _scatter_nd,
    ("", "ScatterElements"): _scatter_elements, ("", "GatherND"): _gather_nd,
    ("", "SequenceEmpty"): lambda ctx, ins, a: [],
    ("", "SequenceConstruct"): lambda ctx, ins, a: list(ins),
    ("", "SequenceAt"): lambda ctx, ins, a: ins[0][_position(ins[0], ins[1])],
    ("", "SequenceLength"): lambda ctx, ins, a: torch.tensor(len(ins[0]), dtype=torch.int64),
    ("", "SequenceInsert"): _sequence_insert, ("", "SequenceErase"): _sequence_erase,
    ("", "SplitToSequence"): _split_to_sequence, ("", "ConcatFromSequence"): _concat_from_sequence,
    ("", "SequenceMap"): _sequence_map,
}

#: Operators ``to_torch`` runs, as ``"Op"`` (default ONNX domain) or ``"ai.onnx.ml::Op"``.
SUPPORTED_OPERATORS = sorted(op if dom == "" else f"{dom}::{op}" for dom, op in _OPS)

# Inputs that hold running statistics, not weights: kept as buffers.
_STAT_INPUTS = {"BatchNormalization": (3, 4)}


def _domain(node: onnx.NodeProto) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


def _default_opset(imports: Sequence[onnx.OperatorSetIdProto], default: int) -> int:
    opsets = {o.domain: o.version for o in imports}
    return int(opsets.get("", opsets.get("ai.onnx", default)))


def _bind_attributes(node: onnx.NodeProto, given: Mapping[str, onnx.AttributeProto],
                     defaults: Mapping[str, onnx.AttributeProto]) -> onnx.NodeProto:
    """A function body's node with its attribute references (``ref_attr_name``) resolved from
    the calling node, else from the function's defaults; unset references are dropped."""
    if not any(a.ref_attr_name for a in node.attribute):
        return node
    out = onnx.NodeProto()
    out.CopyFrom(node)  # a small node of a function body, not a model
    del out.attribute[:]
    for a in node.attribute:
        if not a.ref_attr_name:
            out.attribute.append(a)
            continue
        source = given.get(a.ref_attr_name) or defaults.get(a.ref_attr_name)
        if source is not None:
            bound = onnx.AttributeProto()
            bound.CopyFrom(source)
            bound.name = a.name
            out.attribute.append(bound)
    return out


def _call_function(ctx: _Ctx, ins: list[Any], a: Attrs) -> Any:
    """A call of an ONNX local function: its body runs as a plan of its own (no outer names)."""
    plan: _Plan = a["function"]
    # trailing optional inputs may be left out by the caller
    feeds = {name: ins[i] if i < len(ins) else None for i, name in enumerate(plan.inputs)}
    outs = ctx.module.run_plan(plan, {}, feeds)
    return outs[0] if len(outs) == 1 else tuple(outs)


class _Plan:
    """One graph (the main one or a subgraph of If/Loop/Scan) ready to run."""

    def __init__(self, inputs: list[str], outputs: list[str], inits: dict[str, str],
                 opset: int, closed: bool = False) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.inits = inits  # ONNX initializer name -> the module's attribute key
        self.opset = opset  # the default domain's opset where this graph runs
        self.closed = closed  # a function body: sees no names from the caller's graph
        self.nodes: list[tuple[Op, str, list[str], list[str], Attrs, str]] = []


_Functions = Mapping[tuple[str, str], onnx.FunctionProto]


def _missing_operators(nodes: Sequence[onnx.NodeProto], functions: _Functions,
                       seen: set[tuple[str, str]] | None = None) -> set[str]:
    """Operators of ``nodes``, their subgraphs and the local functions they call that to_torch
    cannot run."""
    seen = set() if seen is None else seen
    missing: set[str] = set()
    for n in nodes:
        op = (_domain(n), n.op_type)
        if op in functions:
            if op not in seen:
                seen.add(op)
                missing |= _missing_operators(functions[op].node, functions, seen)
        elif op not in _OPS:
            missing.add(n.op_type if _domain(n) == "" else f"{_domain(n)}::{n.op_type}")
        for a in n.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                missing |= _missing_operators(g.node, functions, seen)
    return missing


def _value_types(graph: onnx.GraphProto) -> dict[str, int]:
    """Element types the graph declares (inputs, value_info, outputs, Cast targets)."""
    types: dict[str, int] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = int(vi.type.tensor_type.elem_type)
    for t in graph.initializer:
        types[t.name] = int(t.data_type)
    for n in graph.node:
        if n.op_type == "Cast" and _domain(n) == "":
            to = next((a.i for a in n.attribute if a.name == "to"), None)
            if to is not None:
                types.setdefault(n.output[0], int(to))
    return types


class OnnxTorchModule(torch.nn.Module):
    """An ONNX graph run node by node with torch operations; its weights are parameters.

    ``forward`` takes the graph inputs by position (graph order) or by name, as torch tensors
    (numpy arrays are converted), and returns one tensor for a one-output graph, else a tuple
    in graph output order (``output_names``). String tensors (class labels, category columns)
    stay numpy arrays of ``str``: torch has no strings. A ZipMap output is a list of dicts, as
    onnxruntime gives it; an ONNX sequence (input or output) is a list of tensors. ``parity``
    is the check made when it was built.
    """

    def __init__(self, proto: onnx.ModelProto, data_dir: str | None = None) -> None:
        super().__init__()
        graph = proto.graph
        # ONNX local functions (skl2onnx writes them, e.g. KNNImputer): each call becomes a plan
        # of its own, built from the function body; a function may call other functions
        self._functions: dict[tuple[str, str], onnx.FunctionProto] = {
            (f.domain, f.name): f for f in proto.functions}
        missing = sorted(_missing_operators(graph.node, self._functions))
        if missing:
            raise UnsupportedOperatorError(
                f"to_torch() cannot run operator(s) {', '.join(missing)}: it covers the operators"
                " onnxbridge's converters emit for neural networks, linear models, tree"
                " ensembles and control flow (onnxbridge._to_torch.SUPPORTED_OPERATORS). Keep"
                " this model in ONNX (m.run), or convert the original model to PyTorch another"
                " way",
                operators=missing, framework="torch",
            )
        self.parity: ParityReport | None = None
        # DataFrame -> feeds, set by to_torch() (it knows the model's recorded columns)
        self._frames: Callable[[Any], Mapping[str, Any]] | None = None
        self._opset = _default_opset(proto.opset_import, 21)
        self._keys: dict[str, str] = {}  # ONNX tensor name -> attribute name
        self._n_outputs: dict[str, int] = {}
        self._meta: dict[str, Any] = {}  # node key -> what an operator prepared at build time
        self._strings: dict[str, np.ndarray] = {}  # string constants (torch has no strings)
        self._data_dir = data_dir or ""
        self._n_nodes = 0
        initializers = {t.name for t in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in initializers]
        self.output_names = [o.name for o in graph.output]
        self._zipmap_outputs = {n.output[0] for n in graph.node if n.op_type == "ZipMap"}
        self._sequence_inputs = {i.name for i in graph.input
                                 if i.type.WhichOneof("value") == "sequence_type"}
        # declared element types of tensor inputs: a tensor of another type is cast to it, as
        # m.run casts what it is given (a float64 array for a float32 input, say)
        self._input_dtypes: dict[str, torch.dtype] = {}
        for i in graph.input:
            elem = i.type.tensor_type.elem_type if i.type.HasField("tensor_type") else 0
            if elem and elem != onnx.TensorProto.STRING and i.name in self.input_names:
                with contextlib.suppress(TypeError, ValueError, KeyError):
                    self._input_dtypes[i.name] = _torch_dtype(elem)
        for value in graph.output:
            kind = value.type.WhichOneof("value")
            tensors = kind == "tensor_type" or (
                kind == "sequence_type"
                and value.type.sequence_type.elem_type.WhichOneof("value") == "tensor_type")
            if not tensors and value.name not in self._zipmap_outputs:
                raise UnsupportedOperatorError(
                    f"to_torch() returns tensors and lists of tensors; output {value.name!r} is"
                    " neither (a map not made by ZipMap, or an optional)",
                    operators=["non-tensor output"], framework="torch",
                )
        self._graph = self._plan(graph, "", self._opset)

    # -- building ------------------------------------------------------------------------------
    def _plan(self, graph: onnx.GraphProto, scope: str, opset: int) -> _Plan:
        """Register a graph's initializers and node state; subgraphs recursively."""
        stats = {n.input[i] for n in graph.node for i in _STAT_INPUTS.get(n.op_type, ())
                 if i < len(n.input)}
        inits: dict[str, str] = {}
        for t in graph.initializer:
            array = numpy_helper.to_array(t, base_dir=self._data_dir)
            trainable = array.dtype.kind == "f" and array.ndim > 0 and t.name not in stats
            self._add(scope + t.name, array, trainable)
            inits[t.name] = scope + t.name
        names = set(inits)
        plan = _Plan([i.name for i in graph.input if i.name not in names],
                     [o.name for o in graph.output], inits, opset)
        self._add_nodes(plan, graph.node, _value_types(graph), ())
        return plan

    def _function_plan(self, node: onnx.NodeProto, key: str, stack: tuple[str, ...]) -> _Plan:
        """A plan for one call of a local function: its body with the call's attributes."""
        fn = self._functions[(_domain(node), node.op_type)]
        name = f"{fn.domain}::{fn.name}"
        if name in stack:
            raise UnsupportedOperatorError(
                f"to_torch(): local function {name} calls itself (recursion is not ONNX)",
                operators=[name], framework="torch")
        given = {a.name: a for a in node.attribute}
        defaults = {a.name: a for a in fn.attribute_proto}
        opset = _default_opset(fn.opset_import, self._opset)
        plan = _Plan(list(fn.input), list(fn.output), {}, opset, closed=True)
        body = [_bind_attributes(n, given, defaults) for n in fn.node]
        types = _value_types(onnx.helper.make_graph(body, "f", [], []))
        self._add_nodes(plan, body, types, (*stack, name))
        return plan

    def _add_nodes(self, plan: _Plan, nodes: Sequence[onnx.NodeProto], types: dict[str, int],
                   stack: tuple[str, ...]) -> None:
        for node in nodes:
            key = f"node{self._n_nodes}_{node.op_type}"
            self._n_nodes += 1
            self._n_outputs[key] = len(node.output)
            if (_domain(node), node.op_type) in self._functions:
                attrs_f: Attrs = {"function": self._function_plan(node, key, stack)}
                plan.nodes.append((_call_function, node.op_type, list(node.input),
                                   list(node.output), attrs_f, key))
                continue
            attrs: Attrs = {}
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    attrs[a.name] = self._plan(a.g, f"{key}.{a.name}/", plan.opset)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    raise UnsupportedOperatorError(
                        f"to_torch() does not run {node.op_type}'s list of graphs",
                        operators=[node.op_type], framework="torch")
                else:
                    attrs[a.name] = self._attr(a)
            self._node_state(key, node, attrs, types)
            op = _OPS[(_domain(node), node.op_type)]
            plan.nodes.append((op, node.op_type, list(node.input), list(node.output), attrs, key))

    @staticmethod
    def _attr(a: onnx.AttributeProto) -> Any:
        if a.type == onnx.AttributeProto.TENSOR:
            return a.t
        value = onnx.helper.get_attribute_value(a)
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, list) and value and isinstance(value[0], bytes):
            return [v.decode() for v in value]
        return value

    def _add(self, name: str, array: Any, trainable: bool) -> None:
        array = np.asarray(array)
        if array.dtype.kind in "OSU":  # strings: kept aside as numpy arrays of str
            self._strings[name] = _as_strings(array)
            return
        base = re.sub(r"\W", "_", name) or "t"
        key = base
        n = 1
        while hasattr(self, key) or key in self._keys.values():
            n += 1
            key = f"{base}_{n}"
        tensor = torch.from_numpy(np.array(array, copy=True))
        if trainable:
            self.register_parameter(key, torch.nn.Parameter(tensor))
        else:
            self.register_buffer(key, tensor)
        self._keys[name] = key

    def has_tensor(self, name: str) -> bool:
        return name in self._keys or name in self._strings

    def get_tensor(self, name: str) -> Any:
        if name in self._strings:
            return self._strings[name]
        return getattr(self, self._keys[name])

    def _node_state(self, key: str, node: onnx.NodeProto, a: Attrs,
                    types: dict[str, int]) -> None:
        """Tensors a node keeps in attributes become parameters or buffers of the module."""
        if node.op_type == "Constant":
            if "value" in a:
                array = numpy_helper.to_array(a["value"])
            elif "sparse_value" in a:
                raise UnsupportedOperatorError("to_torch() does not read sparse constants",
                                               operators=["Constant(sparse_value)"], framework="torch")
            else:
                field = next(k for k in a if k.startswith("value_"))
                dtype = {"value_float": np.float32, "value_floats": np.float32,
                         "value_int": np.int64, "value_ints": np.int64,
                         "value_string": object, "value_strings": object}.get(field)
                if dtype is None:
                    raise UnsupportedOperatorError(f"to_torch() does not read Constant {field}",
                                                   operators=[f"Constant({field})"], framework="torch")
                array = np.array(a[field], dtype=dtype)
            self._add(f"{key}.value", array, False)
        elif node.op_type in ("TreeEnsembleRegressor", "TreeEnsembleClassifier"):
            from onnxbridge._to_torch_trees import tree_state

            self._meta[key] = tree_state(self, key, node, types)
        elif node.op_type == "TreeEnsemble" and _domain(node) == _ML:  # ai.onnx.ml 5
            from onnxbridge._to_torch_trees import tree_state, v5_as_v3

            meta = tree_state(self, key, v5_as_v3(node), types)
            meta.out_dtype = meta.dtype  # its output has the input's type
            self._meta[key] = meta
        elif node.op_type in ("LinearRegressor", "LinearClassifier"):
            self._add(f"{key}.coefficients", np.array(a["coefficients"], dtype=np.float32), True)
            if "intercepts" in a:
                self._add(f"{key}.intercepts", np.array(a["intercepts"], dtype=np.float32), True)
            if node.op_type == "LinearClassifier":
                if "classlabels_ints" in a:
                    self._add(f"{key}.classlabels",
                              np.array(a["classlabels_ints"], dtype=np.int64), False)
                else:
                    self._add(f"{key}.classlabels",
                              np.array(a.get("classlabels_strings", []), dtype=object), False)
        elif node.op_type in ("SVMRegressor", "SVMClassifier"):
            if node.op_type == "SVMClassifier" and a.get("prob_a") \
                    and not a.get("vectors_per_class"):
                raise UnsupportedOperatorError(
                    "to_torch() does not run a linear SVMClassifier with probabilities",
                    operators=["ai.onnx.ml::SVMClassifier(prob_a)"], framework="torch")
            if a.get("prob_a"):
                for what in ("prob_a", "prob_b"):
                    self._add(f"{key}.{what}", np.array(a[what], dtype=np.float32), False)
            if a.get("post_transform", "NONE") != "NONE":
                raise UnsupportedOperatorError(
                    f"to_torch() runs {node.op_type} with post_transform NONE only",
                    operators=[f"ai.onnx.ml::{node.op_type}({a['post_transform']})"],
                    framework="torch")
            self._add(f"{key}.coefficients", np.array(a["coefficients"], dtype=np.float32), True)
            self._add(f"{key}.rho", np.array(a["rho"], dtype=np.float32), True)
            self._add(f"{key}.support_vectors",
                      np.array(a.get("support_vectors", []), dtype=np.float32), False)
            if node.op_type == "SVMClassifier":
                labels: Any = (np.array(a["classlabels_ints"], dtype=np.int64)
                               if "classlabels_ints" in a
                               else np.array(a.get("classlabels_strings", []), dtype=object))
                self._add(f"{key}.classlabels", labels, False)
                self._meta[key] = bool((np.array(a["coefficients"]) >= 0).all())
        elif node.op_type == "Scaler":
            for what in ("offset", "scale"):
                self._add(f"{key}.{what}", np.array(a.get(what, [0.0 if what == "offset" else 1.0]),
                                                    dtype=np.float32), False)

    # -- running -------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and self._frames is not None and _is_frame(args[0]):
            kwargs = dict(self._frames(args[0]))  # columns matched by name, as m.run does
            args = ()
        if args and kwargs:
            raise TypeError("pass the inputs by position or by name, not both")
        if kwargs:
            unknown = sorted(set(kwargs) - set(self.input_names))
            if unknown:
                raise TypeError(f"unknown input(s) {unknown}; the model takes {self.input_names}")
            args = tuple(kwargs[n] for n in self.input_names)
        if len(args) != len(self.input_names):
            raise TypeError(f"the model takes {len(self.input_names)} input(s)"
                            f" {self.input_names}, got {len(args)}")
        feeds = {name: [_as_value(v) for v in value] if name in self._sequence_inputs
                 else self._typed(name, _as_value(value))
                 for name, value in zip(self.input_names, args, strict=True)}
        results = tuple(self.run_plan(self._graph, {}, feeds))
        return results[0] if len(results) == 1 else results

    def _typed(self, name: str, value: Any) -> Any:
        want = self._input_dtypes.get(name)
        if want is None or not isinstance(value, torch.Tensor) or value.dtype == want:
            return value
        if value.is_floating_point() and not want.is_floating_point:
            return value  # never round floats into an integer input silently
        return value.to(want)

    def run_plan(self, plan: _Plan, outer: Mapping[str, Any], feeds: Mapping[str, Any]) -> list[Any]:
        """Run one graph: ``outer`` holds the names it sees from enclosing graphs."""
        values: dict[str, Any] = {} if plan.closed else dict(outer)
        values[""] = None  # an omitted optional input
        for onnx_name, key in plan.inits.items():
            values[onnx_name] = self.get_tensor(key)
        values.update(feeds)
        for op, op_type, ins, outs, attrs, key in plan.nodes:
            args = [values[i] for i in ins]
            try:
                if any(isinstance(v, np.ndarray) for v in args) and op_type in _STRING_OPS:
                    result = _STRING_OPS[op_type](args, attrs)
                else:
                    result = op(_Ctx(self, key, plan.opset, values), args, attrs)
            except (ConversionError, KeyError):
                raise
            except Exception as exc:
                raise ConversionError(
                    f"to_torch(): node {key} ({', '.join(outs)}) failed:"
                    f" {type(exc).__name__}: {exc}") from exc
            if len(outs) == 1:
                values[outs[0]] = result
            else:
                for name, r in zip(outs, result, strict=False):
                    values[name] = r
        return [values[n] for n in plan.outputs]


def _check(model: OnnxModel, module: OnnxTorchModule, sample: Any, tolerance: Any) -> ParityReport:
    """Compare the module with onnxruntime on the sample, or on random inputs at batches 1, 3."""
    from onnxbridge.io import random_inputs
    from onnxbridge.verify import ParityReport, compare_outputs

    if sample is not None:
        if _is_frame(sample):
            feeds_list = [_frame_feeds(model, sample)]
        elif isinstance(sample, Mapping):
            feeds_list = [{k: np.asarray(v) for k, v in sample.items()}]
        else:
            items = sample if isinstance(sample, (tuple, list)) else (sample,)
            feeds_list = [{n: np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v)
                           for n, v in zip(module.input_names, items, strict=True)}]
    else:
        feeds_list = [random_inputs(model.inputs, batch=b, seed=b) for b in (1, 3)]
    outputs = []
    for feeds in feeds_list:
        expected = model.run(feeds, as_dict=True)
        with torch.no_grad():
            got = module(**{k: _as_value(np.ascontiguousarray(v)) for k, v in feeds.items()})
        got = got if isinstance(got, tuple) else (got,)
        first = next(iter(feeds.values()))
        batch = int(first.shape[0]) if first.ndim else None
        names, want, have = [], [], []
        for name, g in zip(module.output_names, got, strict=True):
            e = expected[name]
            if _is_sequence(e) or _is_sequence(g):  # a list of tensors: entry by entry
                if len(e) != len(g):
                    names.append(name)
                    want.append(np.asarray([len(e)]))
                    have.append(np.asarray([len(g)]))
                    continue
                names += [f"{name}[{i}]" for i in range(len(e))]
                want += [_np(v) for v in e]
                have += [_np(v) for v in g]
            else:
                names.append(name)
                want.append(_comparable(e))
                have.append(_comparable(g))
        outputs += compare_outputs(names, want, have, batch=batch, tolerance=tolerance)
    return ParityReport(outputs=outputs, notes=["to_torch(): the torch module against onnxruntime"])


def _is_sequence(value: Any) -> bool:
    """A sequence output (a list of tensors), not a ZipMap's list of dicts."""
    return isinstance(value, list) and not any(isinstance(v, dict) for v in value)


def _is_frame(value: Any) -> bool:
    from onnxbridge.io import is_dataframe

    return bool(is_dataframe(value))


class _FrameFeeds:
    """A DataFrame as the model's feeds, matched by column name as ``m.run`` matches them
    (plain data: the module stays picklable)."""

    def __init__(self, model: OnnxModel) -> None:
        self.specs = model.inputs
        self.columns = model._recorded_columns()

    def __call__(self, frame: Any) -> dict[str, np.ndarray]:
        from onnxbridge.io import to_feeds

        return to_feeds(self.specs, (frame,), {}, cast="unsafe", columns=self.columns)


def _frame_feeds(model: OnnxModel, frame: Any) -> dict[str, np.ndarray]:
    return _FrameFeeds(model)(frame)


def _comparable(value: Any) -> Any:
    """An output as an array: a ZipMap's list of dicts becomes [rows, classes]."""
    if isinstance(value, list):
        return np.asarray([[row[k] for k in sorted(row)] for row in value], dtype=np.float32)
    return _np(value)


def to_torch(model: OnnxModel, sample: Any = None, *, verify: bool = True,
             tolerance: Any = None) -> OnnxTorchModule:
    """The body of ``OnnxModel.to_torch`` (see there)."""
    data_dir = str(model.data_dir) if model.data_dir is not None else None
    module = OnnxTorchModule(model.proto, data_dir)
    module._frames = _FrameFeeds(model)
    if verify:
        report = _check(model, module, sample, tolerance)
        module.parity = report
        if not report.passed:
            raise ParityError(report, "the torch module does not reproduce the ONNX model's outputs")
    module.eval()
    return module
