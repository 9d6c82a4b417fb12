"""Fused attention for an exported decoder: onnxruntime's GroupQueryAttention and friends.

``torch.onnx.export`` writes each attention layer of a transformers decoder as some 60 small
nodes (head reshapes, rotary embedding, cache concatenation, key/value head repetition, the
scaled dot product, the mask). For one token at a time, onnxruntime spends more time starting
those nodes than computing them. :func:`fuse_decoder` rewrites each layer into

    MatMul(x, Wqkv) + bqkv -> Split -> RotaryEmbedding(q), RotaryEmbedding(k)
        -> GroupQueryAttention(q, k, v, past, bias)

(``com.microsoft`` contrib operators; the past and present caches keep their
``[batch, kv_heads, length, head_dim]`` layout and names; the q/k/v projections are packed
into one MatMul when their weights are held in memory), builds the attention bias once for
all layers from ``attention_mask`` (padding only: GroupQueryAttention masks the future itself;
causal and window for a sliding-window model), and fuses RMS norms into
``SkipSimplifiedLayerNormalization`` (onnxscript's rules; the first norm, without a residual,
as a Skip norm of x with itself).

The rewrite recognises each layer from what it computes, not from node names: the ``present``
output's Concat, the rotary pattern ``x * cos + rotate_half(x) * sin`` on the projected heads,
and the heads merged back before the output projection. A layer that does not look like that
is left as exported; the caller verifies the fused graph against the source model and keeps
the unfused one when they differ. Imported only when such a model is converted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

__all__ = ["FusePlan", "fuse_decoder", "FUSED_OPS"]

MS = "com.microsoft"
FUSED_OPS = ("GroupQueryAttention", "RotaryEmbedding")


@dataclass
class FusePlan:
    """What the source model says about its attention (read on the torch side)."""

    layers: int
    num_heads: int
    kv_heads: int
    head_dim: int
    scales: list[float]
    cos_cache: np.ndarray  # [max_positions, head_dim // 2]
    sin_cache: np.ndarray
    # Per layer: the sliding window (keys visible to a query: the last `window` positions).
    windows: list[int | None] = field(default_factory=list)


class _NoMatch(Exception):
    pass


def _node(value: Any, op: str, domain: str = "") -> Any:
    node = value.producer() if value is not None else None
    domains = (domain,) if domain else ("", "ai.onnx")
    if node is None or node.op_type != op or node.domain not in domains:
        raise _NoMatch(op)
    return node


def _ints(value: Any) -> list[int] | None:
    import onnx_ir as ir

    tensor = ir.convenience.get_const_tensor(value)
    if tensor is None:
        return None
    return [int(v) for v in np.asarray(tensor.numpy()).reshape(-1)]


def _attr(node: Any, name: str, default: Any = None) -> Any:
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def _heads_of(value: Any) -> Any:
    """The [batch, sequence, heads * head_dim] value that Reshape + Transpose(0,2,1,3) split."""
    transpose = _node(value, "Transpose")
    if list(_attr(transpose, "perm", [])) != [0, 2, 1, 3]:
        raise _NoMatch("perm")
    reshape = _node(transpose.inputs[0], "Reshape")
    source = reshape.inputs[0]
    if source.shape is None or len(source.shape) != 3:
        raise _NoMatch("rank")
    return source


def _slice_start(node: Any) -> int:
    starts = _ints(node.inputs[1])
    axes = _ints(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
    if starts is None or len(starts) != 1 or (axes is not None and axes not in ([-1], [3])):
        raise _NoMatch("slice")
    return starts[0]


def _rotary_input(value: Any, half: int) -> tuple[Any, Any]:
    """(x, cos) when ``value`` is x * cos + rotate_half(x) * sin (x in [batch, heads, seq, d])."""
    add = _node(value, "Add")
    for first, second in ((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0])):
        try:
            plain, rotated = _node(first, "Mul"), _node(second, "Mul")
            for cat_value, _sin in ((rotated.inputs[0], rotated.inputs[1]),
                                    (rotated.inputs[1], rotated.inputs[0])):
                try:
                    cat = _node(cat_value, "Concat")
                except _NoMatch:
                    continue
                if _attr(cat, "axis") not in (-1, 3) or len(cat.inputs) != 2:
                    raise _NoMatch("concat")
                neg = _node(cat.inputs[0], "Neg")
                upper = _node(neg.inputs[0], "Slice")
                lower = _node(cat.inputs[1], "Slice")
                x = upper.inputs[0]
                if lower.inputs[0] is not x or _slice_start(upper) != half or \
                        _slice_start(lower) != 0:
                    raise _NoMatch("halves")
                if x not in (plain.inputs[0], plain.inputs[1]):
                    raise _NoMatch("x")
                cos = plain.inputs[1] if plain.inputs[0] is x else plain.inputs[0]
                return x, cos
        except _NoMatch:
            continue
    raise _NoMatch("rotary")


def _linear(value: Any) -> tuple[Any, np.ndarray, np.ndarray | None] | None:
    """(x, W, b) when value is MatMul(x, W) (+ b) with W and b held in memory, else None."""
    import onnx_ir as ir

    node = value.producer()
    bias = None
    if node is not None and node.op_type == "Add" and node.domain in ("", "ai.onnx"):
        for mm_value, b_value in ((node.inputs[0], node.inputs[1]),
                                  (node.inputs[1], node.inputs[0])):
            mm = mm_value.producer() if mm_value is not None else None
            if mm is not None and mm.op_type == "MatMul" and b_value is not None and \
                    b_value.const_value is not None:
                node, bias = mm, b_value.const_value
                break
        else:
            return None
    if node is None or node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
        return None
    weight = node.inputs[1].const_value if node.inputs[1] is not None else None
    held = (weight, bias) if bias is not None else (weight,)
    if weight is None or any(isinstance(t, ir.ExternalTensor) for t in held):
        return None  # weights in external files stay where they are (no packed copy)
    w = np.asarray(weight.numpy())
    b = None if bias is None else np.asarray(bias.numpy())
    if w.ndim != 2 or (b is not None and b.shape != (w.shape[1],)):
        return None
    return node.inputs[0], w, b


def _packed_projection(graph: Any, values: Sequence[Any], add: Any, const: Any,
                       name: str) -> Any:
    """One MatMul (+ one bias Add) for the q, k and v projections of the same input, or None."""
    found = [_linear(v) for v in values]
    if any(f is None for f in found):
        return None
    parts = [f for f in found if f is not None]
    x = parts[0][0]
    if any(p[0] is not x for p in parts) or len({p[1].dtype for p in parts}) != 1:
        return None
    biases = [p[2] for p in parts]
    if any(b is None for b in biases) and not all(b is None for b in biases):
        # only some have a bias: the others get zeros (adding 0 changes nothing)
        biases = [np.zeros(p[1].shape[1], p[1].dtype) if b is None else b
                  for p, b in zip(parts, biases, strict=True)]
    weight = const(f"onnxbridge_fused.{name}.qkv_weight",
                   np.ascontiguousarray(np.concatenate([p[1] for p in parts], axis=1)))
    out = add("MatMul", [x, weight])
    if biases[0] is not None:
        out = add("Add", [out, const(f"onnxbridge_fused.{name}.qkv_bias",
                                     np.concatenate([b for b in biases if b is not None]))])
    return out


def _merged_output(start: Any, limit: int = 80) -> Any:
    """The Reshape output [batch, seq, heads * d] after Transpose(0,2,1,3) downstream of start."""
    seen: set[int] = set()
    frontier = [start]
    found = []
    while frontier and len(seen) < limit:
        value = frontier.pop()
        for user, _ in value.uses():
            if id(user) in seen:
                continue
            seen.add(id(user))
            if user.op_type == "Transpose" and list(_attr(user, "perm", [])) == [0, 2, 1, 3]:
                users = [u for u, _ in user.outputs[0].uses()]
                if len(users) == 1 and users[0].op_type == "Reshape":
                    out = users[0].outputs[0]
                    if out.shape is not None and len(out.shape) == 3:
                        found.append((user, out))
                        continue
            frontier.extend(user.outputs)
    if len({id(f[1]) for f in found}) != 1:
        raise _NoMatch("merge")
    return found[0]


def _concat_of(present: Any, sliding: bool) -> Any:
    """The Concat(past, new) behind a present output (a sliding-window cache slices it)."""
    node = present.producer()
    if sliding and node is not None and node.op_type == "Slice":
        present = node.inputs[0]
    return _node(present, "Concat")


def _past_of(concat: Any, sliding: bool) -> Any:
    if _attr(concat, "axis") not in (-2, 2) or len(concat.inputs) != 2:
        raise _NoMatch("cache axis")
    past = concat.inputs[0]
    node = past.producer()
    if sliding and node is not None and node.op_type == "Slice":
        past = node.inputs[0]
    return past


def _ancestors(value: Any, stop: set[int], limit: int = 200) -> list[Any]:
    """Producers upstream of value, nearest first (breadth first), not crossing ``stop``."""
    nodes: list[Any] = []
    seen: set[int] = set()
    frontier = deque([value])
    while frontier and len(nodes) < limit:
        v = frontier.popleft()
        if id(v) in stop:
            continue
        node = v.producer()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        frontier.extend(i for i in node.inputs if i is not None)
    return nodes


def fuse_decoder(proto: onnx.ModelProto, plan: FusePlan) -> tuple[onnx.ModelProto, dict[str, int]]:
    """The decoder with fused attention and norms; counts of what was fused.

    Raises ValueError when a layer's attention is not recognised (the caller keeps the
    unfused graph).
    """
    import onnx_ir as ir
    from onnx_ir.passes.common import RemoveUnusedNodesPass

    model = ir.serde.deserialize_model(proto)
    graph = model.graph
    inputs = {v.name: v for v in graph.inputs}
    outputs = {v.name: i for i, v in enumerate(graph.outputs)}
    for needed in ("input_ids", "attention_mask", "position_ids"):
        if needed not in inputs:
            raise ValueError(f"the decoder has no {needed} input")
    dtype = inputs["past_key_values.0.key"].dtype
    np_dtype = np.float16 if dtype == ir.DataType.FLOAT16 else np.float32
    half = plan.head_dim // 2
    new_nodes: list[ir.Node] = []

    def add(op: str, ins: Sequence[Any], domain: str = "", n_out: int = 1,
            **attrs: Any) -> Any:
        node = ir.node(op, list(ins), attributes=attrs, domain=domain, num_outputs=n_out)
        new_nodes.append(node)
        return node.outputs if n_out > 1 else node.outputs[0]

    def const(name: str, array: np.ndarray) -> Any:
        value = ir.Value(name=name, shape=ir.Shape(array.shape),
                         type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                         const_value=ir.tensor(array, name=name))
        graph.register_initializer(value)
        return value

    cos_cache = const("onnxbridge_fused.cos_cache", plan.cos_cache.astype(np_dtype))
    sin_cache = const("onnxbridge_fused.sin_cache", plan.sin_cache.astype(np_dtype))
    mask, ids, positions = inputs["attention_mask"], inputs["input_ids"], inputs["position_ids"]

    # Shared by every layer: lengths for GroupQueryAttention and the additive attention bias.
    # GroupQueryAttention masks the future itself (causal), so the bias only has to hide
    # padding: each row's [T] pattern, repeated for its S queries, [B, 1, S, T].
    # seqlens_k: total - 1 for every row, as ArgMax's last index of a row of zeros.
    zeros = add("Mul", [mask, const("onnxbridge_fused.zero_scalar", np.array(0, np.int64))])
    seqlens = add("Cast", [add("ArgMax", [zeros], axis=1, keepdims=0, select_last_index=1)],
                  to=ir.DataType.INT32)
    total32 = add("Cast", [add("Shape", [mask], start=1, end=2)], to=ir.DataType.INT32)
    table = const("onnxbridge_fused.padding_bias",  # finite: a row of padding only is no NaN
                  np.array([np.finfo(np_dtype).min, 0], np_dtype))
    axes = const("onnxbridge_fused.axes12", np.array([1, 2], np.int64))
    per_key = add("Gather", [table, add("Unsqueeze", [mask, axes])])  # [B, 1, 1, T]
    queries_shape = add("Shape", [add("Unsqueeze", [positions, const(
        "onnxbridge_fused.axes13", np.array([1, 3], np.int64))])])  # [B, 1, S, 1]
    padding_bias = add("Expand", [per_key, queries_shape])
    biases: dict[int | None, Any] = {None: padding_bias}

    window_parts: list[Any] = []

    def bias_for(window: int | None) -> Any:
        if window not in biases:  # a sliding window: causal, window and padding, [B, 1, S, T]
            if not window_parts:  # what every window shares, made once
                one_s = const("onnxbridge_fused.one_scalar", np.array(1, np.int64))
                total = add("Squeeze", [add("Shape", [mask], start=1, end=2)])
                seq = add("Squeeze", [add("Shape", [ids], start=1, end=2)])
                keys = add("Range", [const("onnxbridge_fused.zero_s", np.array(0, np.int64)),
                                     total, one_s])  # [T]
                queries = add("Unsqueeze", [add("Range", [add("Sub", [total, seq]), total,
                                                          one_s]),
                                            const("onnxbridge_fused.one", np.array([1], np.int64))])
                padding = add("Unsqueeze", [add("Cast", [mask], to=ir.DataType.BOOL),
                                            const("onnxbridge_fused.axes12b",
                                                  np.array([1, 2], np.int64))])
                causal = add("And", [padding, add("LessOrEqual", [keys, queries])])
                window_parts.extend([keys, queries, causal])
                window_parts.append(const("onnxbridge_fused.zero_float", np.array(0, np_dtype)))
                window_parts.append(const("onnxbridge_fused.lowest",
                                          np.array(np.finfo(np_dtype).min, np_dtype)))
            keys, queries, causal, zero_f, lowest = window_parts
            start = add("Sub", [queries, const(f"onnxbridge_fused.window{window}",
                                               np.array(window, np.int64))])
            allowed = add("And", [causal, add("Greater", [keys, start])])  # [B, 1, S, T]
            # finite everywhere: a row of padding only gets a uniform softmax, not NaN
            biases[window] = add("Where", [allowed, zero_f, lowest])
        return biases[window]

    counts = {"GroupQueryAttention": 0, "RotaryEmbedding": 0, "packed QKV projection": 0}
    rewires: list[tuple[Any, Any]] = []
    present_swaps: list[tuple[str, Any]] = []
    for i in range(plan.layers):
        names = (f"present.{i}.key", f"present.{i}.value")
        if names[0] not in outputs or names[1] not in outputs:
            raise ValueError(f"layer {i}: no present outputs")
        try:
            sliding = i < len(plan.windows) and plan.windows[i] is not None
            cat_k = _concat_of(graph.outputs[outputs[names[0]]], sliding)
            cat_v = _concat_of(graph.outputs[outputs[names[1]]], sliding)
            if _past_of(cat_k, sliding) is not inputs[f"past_key_values.{i}.key"] or \
                    _past_of(cat_v, sliding) is not inputs[f"past_key_values.{i}.value"]:
                raise _NoMatch("past")
            k_t, _cos = _rotary_input(cat_k.inputs[1], half)
            k_lin = _heads_of(k_t)
            v_lin = _heads_of(cat_v.inputs[1])
            transpose, merged = _merged_output(cat_k.outputs[0])
            if _merged_output(cat_v.outputs[0])[1] is not merged:
                raise _NoMatch("value path")
            stop = {id(cat_k.outputs[0]), id(cat_v.outputs[0])}
            region = _ancestors(transpose.inputs[0], stop)
            if not any(n.op_type in ("Softmax", "MultiHeadAttention", "Attention")
                       for n in region):
                raise _NoMatch("softmax")
            q_lin = None
            for n in region:  # the nearest rotary embedding upstream is this layer's query
                if n.op_type == "Add":
                    try:
                        q_lin = _heads_of(_rotary_input(n.outputs[0], half)[0])
                        break
                    except _NoMatch:
                        continue
            if q_lin is None:
                raise _NoMatch("query")
        except _NoMatch as exc:
            raise ValueError(f"layer {i}: attention not recognised ({exc})") from None
        # q, k and v from one packed projection (one MatMul, one bias Add, one Split) when
        # their weights allow. The rotary embedding stays outside GroupQueryAttention: its
        # do_rotary=1 rotates a first prompt at positions 0.. whatever position_ids say,
        # which is wrong for left-padded rows.
        packed = _packed_projection(graph, (q_lin, k_lin, v_lin), add, const, f"layer{i}")
        if packed is not None:
            sizes = const(f"onnxbridge_fused.layer{i}.qkv_sizes", np.array(
                [plan.num_heads * plan.head_dim] + [plan.kv_heads * plan.head_dim] * 2,
                np.int64))
            q_lin, k_lin, v_lin = add("Split", [packed, sizes], n_out=3, axis=-1)
        q_rot = add("RotaryEmbedding", [q_lin, positions, cos_cache, sin_cache], domain=MS,
                    interleaved=0)
        k_rot = add("RotaryEmbedding", [k_lin, positions, cos_cache, sin_cache], domain=MS,
                    interleaved=0)
        window = plan.windows[i] if i < len(plan.windows) else None
        attn, present_k, present_v = add(
            "GroupQueryAttention",
            [q_rot, k_rot, v_lin, inputs[f"past_key_values.{i}.key"],
             inputs[f"past_key_values.{i}.value"], seqlens, total32, None, None, None,
             bias_for(window)],
            domain=MS, n_out=3, num_heads=plan.num_heads, kv_num_heads=plan.kv_heads,
            scale=float(plan.scales[i]), do_rotary=0)
        counts["GroupQueryAttention"] += 1
        counts["RotaryEmbedding"] += 2
        counts["packed QKV projection"] += packed is not None
        rewires.append((merged, attn))
        present_swaps += [(names[0], present_k), (names[1], present_v)]

    for node in new_nodes:
        graph.append(node)
    for old, new in rewires:
        ir.convenience.replace_all_uses_with(old, new)
    for name, new in present_swaps:
        index = outputs[name]
        old = graph.outputs[index]
        old.name = f"{name}.unfused"
        new.name = name
        new.shape, new.type = old.shape, old.type
        graph.outputs[index] = new
    graph.sort()
    RemoveUnusedNodesPass()(model)
    counts.update(_fuse_norms(model))
    RemoveUnusedNodesPass()(model)
    kept = {id(v) for v in graph.outputs}
    for name, value in list(graph.initializers.items()):
        if not value.uses() and id(value) not in kept:
            del graph.initializers[name]
    out = ir.serde.serialize_model(model)
    if not any(o.domain == MS for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(MS, 1))
    return out, counts


def _fuse_norms(model: Any) -> dict[str, int]:
    """RMS norms into SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization."""
    try:
        from onnxscript.rewriter.ort_fusions.rms_normalization import fuse_rms_normalization
        from onnxscript.rewriter.ort_fusions.skip_normalization import (
            fuse_skip_rms_normalization,
        )
    except ImportError:  # an onnxscript without these rules: attention is fused all the same
        return {}
    fuse_rms_normalization(model)
    skipped = int(fuse_skip_rms_normalization(model))
    skipped += _unfuse_plain_norms(model)
    return {"SkipSimplifiedLayerNormalization": skipped}


def _unfuse_plain_norms(model: Any) -> int:
    """Rewrite the RMS norms left without a residual input; how many became Skip norms.

    onnxruntime registers SimplifiedLayerNormalization in the default domain, where onnx's
    checker does not know it: in float32 it becomes a SkipSimplifiedLayerNormalization
    (com.microsoft) of x with itself, otherwise plain ONNX operators.
    """
    import onnx_ir as ir

    graph = model.graph
    count = 0
    for node in list(graph):
        if node.op_type != "SimplifiedLayerNormalization" or node.domain not in ("", "ai.onnx"):
            continue
        x, scale = node.inputs[0], node.inputs[1]
        eps = float(_attr(node, "epsilon", 1e-5))
        if x.dtype == ir.DataType.FLOAT:
            # norm(x + x) with 4 * eps is norm(x) exactly in float32: 2x, 4 * sum(x^2) and
            # 4 * (mean + eps) are exact, sqrt(4a) = 2 * sqrt(a), and 2x / (2 * rms) = x / rms.
            # One SkipSimplifiedLayerNormalization (com.microsoft) instead of 7 nodes.
            fused = ir.node("SkipSimplifiedLayerNormalization", [x, x, scale], domain=MS,
                            attributes={"epsilon": 4.0 * eps})
            graph.insert_before(node, [fused])
            ir.convenience.replace_all_uses_with(node.outputs[0], fused.outputs[0])
            if node.outputs[0] in graph.outputs:
                raise ValueError("a fused norm is a graph output")
            graph.remove(node, safe=True)
            count += 1
            continue
        dtype = np.float16 if x.dtype == ir.DataType.FLOAT16 else np.float32
        eps_value = ir.Value(name=f"{node.name}.epsilon", shape=ir.Shape([]),
                             type=ir.TensorType(ir.DataType.from_numpy(np.dtype(dtype))),
                             const_value=ir.tensor(np.array(eps, dtype)))
        axes = ir.Value(name=f"{node.name}.axes", shape=ir.Shape([1]),
                        type=ir.TensorType(ir.DataType.INT64),
                        const_value=ir.tensor(np.array([-1], np.int64)))
        graph.register_initializer(eps_value)
        graph.register_initializer(axes)
        square = ir.node("Mul", [x, x])
        mean = ir.node("ReduceMean", [square.outputs[0], axes], attributes={"keepdims": 1})
        shifted = ir.node("Add", [mean.outputs[0], eps_value])
        root = ir.node("Sqrt", [shifted.outputs[0]])
        inverse = ir.node("Reciprocal", [root.outputs[0]])
        normed = ir.node("Mul", [x, inverse.outputs[0]])
        scaled = ir.node("Mul", [normed.outputs[0], scale])
        graph.insert_before(node, [square, mean, shifted, root, inverse, normed, scaled])
        ir.convenience.replace_all_uses_with(node.outputs[0], scaled.outputs[0])
        if node.outputs[0] in graph.outputs:
            raise ValueError("a fused norm is a graph output")
        graph.remove(node, safe=True)
    return count
