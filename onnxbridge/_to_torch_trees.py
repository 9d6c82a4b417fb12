"""Tree ensembles for ``to_torch`` (ai.onnx.ml TreeEnsembleRegressor / TreeEnsembleClassifier).

The node is read by :func:`onnxbridge.plugins._trees.read_ensemble` (the reader the tree
strategies use), then evaluated as a tensorised traversal: every (row, tree) pair holds a node
index and moves one level down per step, for as many steps as the deepest tree, by gathering the
node's feature, threshold and children (leaves point at themselves). Leaf values (and base
values) are ``nn.Parameter``s, so a gradient step moves them; thresholds and the structure are
buffers.

Outputs follow onnxruntime's CPU kernel (``tree_ensemble_aggregator.h`` and ``ml_common.h`` in
onnxruntime, read for its behaviour): decisions in the input's float type (float32 for float and
integer inputs, float64 for double), NaN sent by the node's missing-tracks-true flag (BRANCH_NEQ
sends it to the true branch, as ``NaN != t``), sums accumulated in that type, base values,
AVERAGE/MIN/MAX aggregation, the post transforms (a one-target regressor applies PROBIT only, as
onnxruntime does), and the classifier's binary conventions: one scored class gives ``[1 - p, p]``
when every weight is positive, else ``[-s, s]`` or ``[sigmoid(-s), sigmoid(s)]``. A class no
reached leaf scores reads as 0 and cannot be the label.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from onnxbridge.errors import UnsupportedOperatorError

if TYPE_CHECKING:
    import onnx

    from onnxbridge._to_torch import OnnxTorchModule, _Ctx

__all__ = ["TreeMeta", "tree_ensemble", "tree_state", "v5_as_v3"]


class TreeMeta:
    """What a tree node needs at run time besides its tensors (plain Python values)."""

    def __init__(self, *, kind: str, n_outputs: int, depth: int, n_trees: int, post: str,
                 aggregate: str, n_base: int, binary_case: bool, all_positive: bool,
                 string_labels: list[str] | None, dtype: torch.dtype,
                 out_dtype: torch.dtype = torch.float32) -> None:
        self.kind = kind
        self.n_outputs = n_outputs
        self.depth = depth
        self.n_trees = n_trees
        self.post = post
        self.aggregate = aggregate
        self.n_base = n_base
        self.binary_case = binary_case
        self.all_positive = all_positive
        self.string_labels = string_labels
        self.dtype = dtype
        self.out_dtype = out_dtype  # float32 (ai.onnx.ml 1-3); the input's type (TreeEnsemble 5)


def _input_is_double(node: onnx.NodeProto, graph_types: dict[str, int]) -> bool:
    return graph_types.get(node.input[0]) == 11  # TensorProto.DOUBLE


def tree_state(module: OnnxTorchModule, key: str, node: onnx.NodeProto,
               graph_types: dict[str, int]) -> TreeMeta:
    """Read the node, register its parameters and buffers on ``module`` under ``key``."""
    from onnxbridge.plugins._trees import TreeForm, read_ensemble

    double = _input_is_double(node, graph_types)
    dtype = np.dtype(np.float64) if double else np.dtype(np.float32)
    op = f"ai.onnx.ml::{node.op_type}"
    try:
        ens = read_ensemble(node, dtype, every_mode=True)
    except TreeForm as exc:
        raise UnsupportedOperatorError(f"to_torch() cannot run this {node.op_type}: {exc}",
                                       operators=[op], framework="torch") from None
    except (KeyError, ValueError, IndexError) as exc:
        raise UnsupportedOperatorError(
            f"to_torch() cannot read this {node.op_type} (malformed attributes: {exc!r})",
            operators=[op], framework="torch") from None
    n_out = ens.n_outputs
    base = np.asarray(ens.base, dtype=dtype)
    if ens.kind == "classifier" and n_out < 1:
        raise UnsupportedOperatorError(
            f"to_torch() does not run a {node.op_type} without class labels",
            operators=[op], framework="torch")
    if ens.kind == "classifier" and n_out == 1 and not isinstance(ens.labels, np.ndarray):
        raise UnsupportedOperatorError(
            f"to_torch() does not run a {node.op_type} with one string class label: onnxruntime"
            " aborts the process on this node (it reads a second label that is not there)."
            " Predict the single class directly instead of running the trees",
            operators=[op], framework="torch")
    if ens.kind == "classifier" and n_out == 1 and len(base) > 2:
        raise UnsupportedOperatorError(
            f"to_torch(): {len(base)} base values for a one-class {node.op_type}",
            operators=[op], framework="torch")
    if ens.kind == "classifier" and n_out == 2 and len(base) > 2:
        raise UnsupportedOperatorError(
            f"to_torch(): {len(base)} base values for a binary {node.op_type}",
            operators=[op], framework="torch")
    sizes = [len(f) for f in ens.feature]
    offsets = np.cumsum([0, *sizes])[:-1].astype(np.int64)
    feature = np.concatenate(ens.feature) if sizes else np.zeros(0, np.int64)
    is_leaf = feature < 0
    own = np.arange(len(feature), dtype=np.int64)
    shift = np.repeat(offsets, sizes)
    left = np.where(is_leaf, own, np.concatenate(ens.left) + shift) if sizes else own
    right = np.where(is_leaf, own, np.concatenate(ens.right) + shift) if sizes else own
    leaf_row = np.where(is_leaf, np.cumsum(is_leaf) - 1, 0).astype(np.int64)
    values = np.concatenate(ens.values)[is_leaf] if sizes else np.zeros((0, n_out))
    weighted = np.concatenate(ens.weighted)[is_leaf] if sizes else np.zeros((0, n_out), bool)
    add = module._add
    add(f"{key}.feature", np.where(is_leaf, 0, feature), False)
    add(f"{key}.threshold", np.concatenate(ens.threshold).astype(dtype) if sizes
        else np.zeros(0, dtype), False)
    add(f"{key}.left", left, False)
    add(f"{key}.right", right, False)
    add(f"{key}.nan_left", np.concatenate(ens.nan_left) if sizes else np.zeros(0, bool), False)
    add(f"{key}.equal", np.concatenate(ens.equal) if sizes else np.zeros(0, bool), False)
    add(f"{key}.roots", offsets, False)
    add(f"{key}.leaf_row", leaf_row, False)
    add(f"{key}.leaf_values", values.astype(dtype), True)          # trainable
    add(f"{key}.leaf_weighted", weighted, False)
    if len(base):
        add(f"{key}.base_values", base, True)                      # trainable
    string_labels = None
    if ens.kind == "classifier":
        if isinstance(ens.labels, np.ndarray):
            add(f"{key}.labels", ens.labels.astype(np.int64), False)
        else:
            string_labels = [v.decode() if isinstance(v, bytes) else str(v) for v in ens.labels]
    used = set(ens.class_ids_used)
    return TreeMeta(
        kind=ens.kind, n_outputs=n_out, depth=int(ens.depths().max()) if sizes else 0,
        n_trees=len(sizes), post=ens.post_transform, aggregate=ens.aggregate, n_base=len(base),
        binary_case=ens.kind == "classifier" and n_out == 2 and len(used) == 1,
        all_positive=ens.weights_all_positive, string_labels=string_labels,
        dtype=torch.float64 if double else torch.float32)


# -- evaluation -------------------------------------------------------------------------------------
def _leaves(ctx: _Ctx, x: Tensor, meta: TreeMeta) -> Tensor:
    """[N, T] index of the leaf (row of ``leaf_values``) each row reaches in each tree."""
    p = ctx.param
    idx = p("roots").unsqueeze(0).expand(x.shape[0], -1)
    feature, threshold = p("feature"), p("threshold")
    left, right = p("left"), p("right")
    nan_left, equal = p("nan_left"), p("equal")
    for _ in range(meta.depth):
        v = torch.gather(x, 1, feature[idx])
        t = threshold[idx]
        cond = torch.where(equal[idx], v == t, v <= t)
        go = torch.where(torch.isnan(v), nan_left[idx], cond)
        idx = torch.where(go, left[idx], right[idx])
    return p("leaf_row")[idx]


def _erfinv(x: Tensor) -> Tensor:
    """onnxruntime's ErfInv: Winitzki's approximation with a = 0.147 (its PROBIT uses it)."""
    a = 0.147
    sign = torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x))
    log = torch.log((1 - x) * (1 + x))
    v = 2 / (math.pi * a) + 0.5 * log
    return sign * torch.sqrt(-v + torch.sqrt(v * v - log / a))


def _probit(x: Tensor) -> Tensor:
    return math.sqrt(2.0) * _erfinv(2 * x - 1)


def _softmax_zero(x: Tensor) -> Tensor:
    """Softmax over the entries that are not (near) zero; zeros stay zero (onnxruntime)."""
    vmax = x.amax(dim=-1, keepdim=True)
    nonzero = x.abs() > 1e-7
    e = torch.where(nonzero, torch.exp(x - vmax), x * torch.exp(-vmax))
    total = torch.where(nonzero, e, torch.zeros_like(e)).sum(dim=-1, keepdim=True)
    return e / total


def _transform(x: Tensor, post: str) -> Tensor:
    if post == "LOGISTIC":
        return torch.sigmoid(x)
    if post == "SOFTMAX":
        return torch.softmax(x, dim=-1)
    if post == "SOFTMAX_ZERO":
        return _softmax_zero(x)
    if post == "PROBIT":
        return _probit(x)
    return x


def _aggregate(ctx: _Ctx, x: Tensor, meta: TreeMeta) -> tuple[Tensor, Tensor]:
    """[N, K] aggregated leaf values and [N, K] whether any reached leaf scored the output."""
    rows = _leaves(ctx, x, meta)                       # [N, T]
    values = ctx.param("leaf_values")[rows]            # [N, T, K]
    weighted = ctx.param("leaf_weighted")[rows]
    has = weighted.any(dim=1)
    if meta.aggregate in ("MIN", "MAX") and meta.kind == "regressor":  # classifiers always sum
        fill = math.inf if meta.aggregate == "MIN" else -math.inf
        masked = torch.where(weighted, values, torch.full_like(values, fill))
        best = masked.amin(dim=1) if meta.aggregate == "MIN" else masked.amax(dim=1)
        return torch.where(has, best, torch.zeros_like(best)), has
    sums = values.sum(dim=1)
    if meta.aggregate == "AVERAGE" and meta.kind == "regressor":  # classifiers always sum
        sums = sums / meta.n_trees
    return sums, has


def tree_ensemble(ctx: _Ctx, ins: list[Any], a: dict[str, Any]) -> Any:
    meta: TreeMeta = ctx.module._meta[ctx.node_key]
    x = ins[0]
    if x.dim() == 1:
        x = x.reshape(1, -1)
    x = x.to(meta.dtype)
    sums, has = _aggregate(ctx, x, meta)
    base = ctx.param("base_values") if meta.n_base else None
    if meta.kind == "regressor":
        return _regressor(sums, has, base, meta)
    return _classifier(ctx, sums, has, base, meta)


def _regressor(sums: Tensor, has: Tensor, base: Tensor | None, meta: TreeMeta) -> Tensor:
    if meta.n_outputs == 1:  # onnxruntime's one-output path: base_values[0], PROBIT only
        y = sums + base[0] if base is not None and meta.n_base == 1 else sums
        if meta.post == "PROBIT":
            y = _probit(y)
        return y.to(meta.out_dtype)
    if base is not None and meta.n_base == meta.n_outputs:
        sums = sums + base
    y = torch.where(has, sums, torch.zeros_like(sums))
    return _transform(y, meta.post).to(meta.out_dtype)


def _labels(ctx: _Ctx, index: Tensor, meta: TreeMeta) -> Any:
    if meta.string_labels is not None:
        table = np.asarray(meta.string_labels, dtype=object)
        return table[index.detach().cpu().numpy()]
    return ctx.param("labels")[index]


def _one_class(sums: Tensor, base: Tensor | None, meta: TreeMeta) -> tuple[Any, Tensor]:
    """One class label, as onnxruntime's one-output path: the label is the literal 1 or 0 (the
    score's sign), not the class label; the score is raw (PROBIT aside). With two base values it
    scores ``[-s, s]`` with s = sum + base[1], transforms the pair and keeps the first entry."""
    s = sums[:, 0]
    if base is not None and meta.n_base == 2:
        s = s + base[1]
        score = _transform(torch.stack([-s, s], dim=1), meta.post)[:, :1]
    else:
        if base is not None and meta.n_base == 1:
            s = s + base[0]
        score = (_probit(s) if meta.post == "PROBIT" else s).unsqueeze(1)
    return (s > 0).long(), score.to(torch.float32)


def _classifier(ctx: _Ctx, sums: Tensor, has: Tensor, base: Tensor | None,
                meta: TreeMeta) -> tuple[Any, Tensor]:
    if meta.n_outputs == 1:
        return _one_class(sums, base, meta)
    zero = torch.zeros_like(sums)
    if meta.n_outputs > 2:
        if base is not None:  # a base value also makes its class scored
            nb = meta.n_base
            sums = torch.cat([sums[:, :nb] + base[:nb], sums[:, nb:]], dim=1)
            has = torch.cat([torch.ones_like(has[:, :nb]), has[:, nb:]], dim=1)
        masked = torch.where(has, sums, torch.full_like(sums, -math.inf))
        label = _labels(ctx, torch.argmax(masked, dim=1), meta)
        scores = _transform(torch.where(has, sums, zero), meta.post)
        return label, scores.to(torch.float32)
    s0, s1, h0, h1 = sums[:, 0], sums[:, 1], has[:, 0], has[:, 1]
    two = torch.ones_like(h0)   # rows whose scores keep two entries
    second = -1                  # onnxruntime's "add_second_class" before the label decides
    if base is not None and meta.n_base == 2:
        moved = base[1] + s0     # onnxruntime: class 1 scored -> base[1] + score of class 0
        s0 = torch.where(h1, -moved, s0 + base[0])
        s1 = torch.where(h1, moved, s1 + base[1])
    elif base is not None and meta.n_base == 1:
        s0 = s0 + base[0]
        two = h1
    else:
        second = 3
        two = h1
    v0 = torch.where(h0, s0, torch.zeros_like(s0))
    pos = torch.where(two & h1, s1, v0)
    if meta.binary_case:
        threshold = 0.5 if meta.all_positive else 0.0
        positive = pos > threshold
        index = positive.long()
        mixed = not meta.all_positive
    else:
        positive = pos > 0
        index = positive.long()
        mixed = second == 3
    if meta.binary_case or meta.string_labels is not None:
        label = _labels(ctx, index, meta)
    else:  # onnxruntime returns its literal positive/negative labels 1 and 0 here
        label = index
    # scores of rows that kept two entries
    pair = torch.stack([v0, torch.where(h1, s1, torch.zeros_like(s1))], dim=1)
    full = _transform(pair, meta.post)
    # rows with one score
    if meta.post == "PROBIT":
        single = torch.stack([_probit(v0), torch.zeros_like(v0)], dim=1)
    elif meta.binary_case and not mixed:
        single = torch.stack([1 - v0, v0], dim=1)
    elif meta.binary_case or second == 3:
        if meta.post == "LOGISTIC":
            single = torch.stack([torch.sigmoid(-v0), torch.sigmoid(v0)], dim=1)
        else:
            single = torch.stack([-v0, v0], dim=1)
    else:
        single = torch.stack([v0, torch.zeros_like(v0)], dim=1)
    scores = torch.where(two.unsqueeze(1), full, single)
    return label, scores.to(torch.float32)


# -- ai.onnx.ml 5 TreeEnsemble: read as the opset-3 regressor it describes ---------------------------
_V5_MODES = {0: "BRANCH_LEQ", 1: "BRANCH_LT", 2: "BRANCH_GTE", 3: "BRANCH_GT", 4: "BRANCH_EQ",
             5: "BRANCH_NEQ"}
_V5_MEMBER = 6
_V5_AGGREGATE = {0: "AVERAGE", 1: "SUM", 2: "MIN", 3: "MAX"}
# onnxruntime 1.32 reads post_transform 1 as LOGISTIC and 2 as SOFTMAX (its own enum order); the
# ONNX spec and its reference evaluator say 1 SOFTMAX, 2 LOGISTIC. Parity is with onnxruntime.
_V5_POST = {0: "NONE", 1: "LOGISTIC", 2: "SOFTMAX", 3: "SOFTMAX_ZERO", 4: "PROBIT"}


def v5_as_v3(node: onnx.NodeProto) -> onnx.NodeProto:
    """The ``TreeEnsembleRegressor`` (ai.onnx.ml 3) that computes what this ai.onnx.ml 5
    ``TreeEnsemble`` computes, as onnxruntime 1.32 reads it: each tree walked from its root (a
    root whose true and false sides are the same leaf is that leaf: onnxruntime reads it so,
    where the ONNX reference evaluator reads ``leaf_*[root]``), leaves become LEAF
    nodes carrying their one weight, and a BRANCH_MEMBER split becomes a chain of BRANCH_EQ
    nodes, one per member, whose false side leads to the next member."""
    from onnx import helper, numpy_helper

    a: dict[str, Any] = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        a[attr.name] = numpy_helper.to_array(value) if attr.type == attr.TENSOR else value
    op = "ai.onnx.ml::TreeEnsemble"

    def bad(why: str) -> UnsupportedOperatorError:
        return UnsupportedOperatorError(f"to_torch() cannot read this TreeEnsemble: {why}",
                                        operators=[op], framework="torch")

    splits = np.asarray(a.get("nodes_splits", np.zeros(0)))
    dtype = splits.dtype if splits.dtype.kind == "f" else np.dtype(np.float32)
    modes = [int(m) for m in np.asarray(a.get("nodes_modes", []), dtype=np.int64).reshape(-1)]
    feats = list(a.get("nodes_featureids", []))
    t_ids, f_ids = list(a.get("nodes_truenodeids", [])), list(a.get("nodes_falsenodeids", []))
    t_leaf, f_leaf = list(a.get("nodes_trueleafs", [])), list(a.get("nodes_falseleafs", []))
    missing = list(a.get("nodes_missing_value_tracks_true", [])) or [0] * len(modes)
    targets = list(a.get("leaf_targetids", []))
    weights = np.asarray(a.get("leaf_weights", np.zeros(0))).reshape(-1)
    members = np.asarray(a.get("membership_values", np.zeros(0))).reshape(-1)
    n = len(modes)
    if not all(len(v) == n for v in (feats, t_ids, f_ids, t_leaf, f_leaf, missing)) \
            or len(splits.reshape(-1)) != n or len(targets) != len(weights):
        raise bad("its node (or leaf) attributes differ in length")
    bad_modes = sorted({m for m in modes if m not in _V5_MODES and m != _V5_MEMBER})
    if bad_modes:
        raise bad(f"unknown split mode(s) {bad_modes}")
    sets: list[list[float]] = []   # members of each node (empty unless BRANCH_MEMBER)
    pos = 0
    for m in modes:
        chosen: list[float] = []
        if m == _V5_MEMBER:
            while pos < len(members) and not np.isnan(members[pos]):
                chosen.append(float(members[pos]))
                pos += 1
            pos += 1
            if not chosen:
                raise bad("a BRANCH_MEMBER node has no members")
        sets.append(chosen)
    flat_splits = splits.reshape(-1)
    out: dict[str, list[Any]] = {k: [] for k in (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes", "nodes_values",
        "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true",
        "target_treeids", "target_nodeids", "target_ids", "target_weights")}
    for tree, root in enumerate(int(r) for r in a.get("tree_roots", [])):
        if not 0 <= root < n:
            raise bad(f"tree root {root} is out of range")
        single = bool(t_leaf[root]) and bool(f_leaf[root]) and t_ids[root] == f_ids[root]
        next_id = 0
        # (index, is_leaf, member position, where to write this node's id: (list, slot) or None)
        stack: list[tuple[int, bool, int, tuple[str, int] | None]] = [
            (int(t_ids[root]) if single else root, single, 0, None)]
        while stack:
            i, leaf, k, parent = stack.pop()
            nid = next_id
            next_id += 1
            if parent is not None:
                out[parent[0]][parent[1]] = nid
            out["nodes_treeids"].append(tree)
            out["nodes_nodeids"].append(nid)
            if leaf:
                if not 0 <= i < len(weights):
                    raise bad(f"leaf {i} is out of range")
                out["nodes_featureids"].append(0)
                out["nodes_modes"].append("LEAF")
                out["nodes_values"].append(0.0)
                out["nodes_missing_value_tracks_true"].append(0)
                out["nodes_truenodeids"].append(0)
                out["nodes_falsenodeids"].append(0)
                out["target_treeids"].append(tree)
                out["target_nodeids"].append(nid)
                out["target_ids"].append(int(targets[i]))
                out["target_weights"].append(weights[i])
                continue
            if len(out["nodes_nodeids"]) > 4 * (n + len(members) + len(weights)) + 4:
                raise bad("its trees are not trees (a node is reached twice)")
            member = modes[i] == _V5_MEMBER
            out["nodes_featureids"].append(int(feats[i]))
            out["nodes_modes"].append("BRANCH_EQ" if member else _V5_MODES[modes[i]])
            out["nodes_values"].append(sets[i][k] if member else flat_splits[i])
            out["nodes_missing_value_tracks_true"].append(int(missing[i]))
            slot = len(out["nodes_truenodeids"])
            out["nodes_truenodeids"].append(-1)
            out["nodes_falsenodeids"].append(-1)
            # the true side is numbered first (pushed last)
            if member and k + 1 < len(sets[i]):
                stack.append((i, False, k + 1, ("nodes_falsenodeids", slot)))
            else:
                stack.append((int(f_ids[i]), bool(f_leaf[i]), 0, ("nodes_falsenodeids", slot)))
            stack.append((int(t_ids[i]), bool(t_leaf[i]), 0, ("nodes_truenodeids", slot)))
    agg = int(a.get("aggregate_function", 1))
    post = int(a.get("post_transform", 0))
    if agg not in _V5_AGGREGATE or post not in _V5_POST:
        raise bad(f"aggregate_function {agg} / post_transform {post} is not defined")
    values = out.pop("nodes_values")
    tw = out.pop("target_weights")
    attrs: dict[str, Any] = dict(
        out, n_targets=int(a.get("n_targets", 1)), aggregate_function=_V5_AGGREGATE[agg],
        post_transform=_V5_POST[post],
        nodes_values_as_tensor=numpy_helper.from_array(np.asarray(values, dtype=dtype)),
        target_weights_as_tensor=numpy_helper.from_array(np.asarray(tw, dtype=dtype)))
    return helper.make_node("TreeEnsembleRegressor", list(node.input), list(node.output),
                            domain="ai.onnx.ml", **attrs)
