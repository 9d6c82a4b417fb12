"""Graph forms for tree ensembles, chosen by ``strategy=``.

Every tree converter first builds onnxruntime's ``TreeEnsembleRegressor``/``Classifier`` node
(``"tree_ensemble"``, the library-faithful reference: XGBoost default directions, LightGBM
missing types and CatBoost nan_mode are already encoded in its attributes). The other forms
replace that node by standard ONNX operators computing the same outputs, so they run on any
provider with kernels for Gather, GatherElements, MatMul, Where and comparisons (CUDA included):

- ``"gemm"``: Hummingbird's GEMM form (Nakandala et al., OSDI 2020): all node conditions at
  once, then per tree ``conditions @ C == D`` finds the leaf and ``leaf @ E`` its values.
- ``"tree_traversal"``: every (row, tree) walks down one level per step by gathering the node's
  feature, threshold and children.
- ``"perfect_tree_traversal"``: trees padded to complete binary trees, so a child is ``2i + bit``.
- ``"oblivious"``: symmetric trees (CatBoost): one split per level, leaf index from the bits.
- ``"tree_ensemble_chunked"``: the TreeEnsemble operator split into chunks of trees whose partial
  sums are added (each chunk stays in cache while it scores all rows).
- ``"auto"``: picks among these by model shape, provider and expected batch size.

Decisions are computed as onnxruntime's operator does, in the input's float type: every split is
normalised to ``x <= t`` (``x < t`` becomes ``x <= nextafter(t, -inf)``, ``>``/``>=`` swap the
children) and NaN is routed by reading a copy of the features where NaN is -inf (goes left) or
+inf (goes right), so no extra work per node is needed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxbridge.errors import UnsupportedModelError

if TYPE_CHECKING:
    import onnx

    from onnxbridge.registry import ConvertOptions

__all__ = [
    "STRATEGIES",
    "apply_tree_options",
    "TreeForm",
    "apply_strategy",
    "choose_strategy",
    "read_ensemble",
]

STRATEGIES = ("tree_ensemble", "tree_ensemble_chunked", "gemm", "tree_traversal",
              "perfect_tree_traversal", "oblivious", "auto")
_TREE_OPS = ("TreeEnsembleRegressor", "TreeEnsembleClassifier")
_MAX_PADDED = 1 << 22  # leaves of all padded trees (perfect traversal, oblivious)
_MAX_GEMM = _MAX_PADDED * 4  # path entries (trees x internal nodes x leaves) of the GEMM form
# On a GPU, the GEMM form for batches up to this many rows x path entries (its multiply-adds
# per batch). From the H200 run (benchmarks/RESULTS.md, onnxruntime-gpu 1.31.1): GEMM took
# 0.21-0.23 ms at 1 and 100 rows against 0.36-0.53 ms for the traversal and oblivious forms
# (xgb100: 378,200 path entries; cb500: 2,016,000), and lost at 10,000 rows (1.23 vs 0.66-0.73
# ms; 4.72 vs 1.13 ms). Linear in rows between those, the crossings are at about 2,300 rows
# (8.6e8 row-entries) and 700 rows (1.4e9); the limit is below both.
_GPU_GEMM_WORK = 1 << 29
_MIN_OPSET = 13
# Trees per TreeEnsemble node in tree_ensemble_chunked: with no more trees than pool threads,
# onnxruntime splits the rows across its threads once per node (its "parallel by rows" branch)
# instead of meeting at a barrier every 128 rows (its "parallel by trees" branch); measured
# 1.4-1.9x faster from 20,000 rows on 2 threads (benchmarks/RESULTS.md).
_CHUNK_TREES = 2


class TreeForm(UnsupportedModelError):
    """A graph form cannot represent this ensemble (the message says why)."""


@dataclass
class Ensemble:
    """One TreeEnsemble node, normalised: per tree, nodes in local order, split ``x <= t``."""

    kind: str                      # "regressor" | "classifier"
    n_outputs: int                 # targets or classes
    dtype: np.dtype[Any]           # the dtype decisions are made in (the node input's)
    feature: list[np.ndarray] = field(default_factory=list)     # int64, -1 at leaves
    threshold: list[np.ndarray] = field(default_factory=list)   # dtype
    left: list[np.ndarray] = field(default_factory=list)        # local child ids (-1 at leaves)
    right: list[np.ndarray] = field(default_factory=list)
    nan_left: list[np.ndarray] = field(default_factory=list)    # bool
    values: list[np.ndarray] = field(default_factory=list)      # [n_nodes, n_outputs]
    base: np.ndarray = field(default_factory=lambda: np.zeros(0))
    post_transform: str = "NONE"
    average: bool = False
    class_ids_used: tuple[int, ...] = ()
    weights_all_positive: bool = True
    mirrored: bool = False         # binary classifier whose class 0 values are -class 1's
    labels: Any = None             # classifier labels (int64 array or list of bytes)
    # read with every_mode=True only (to_torch follows onnxruntime's operator exactly):
    aggregate: str = "SUM"         # SUM | AVERAGE | MIN | MAX
    equal: list[np.ndarray] = field(default_factory=list)       # bool: split is x == t
    weighted: list[np.ndarray] = field(default_factory=list)    # bool [n_nodes, n_outputs]

    @property
    def n_trees(self) -> int:
        return len(self.feature)

    def depths(self) -> np.ndarray:
        out = []
        for t in range(self.n_trees):
            depth = np.zeros(len(self.feature[t]), dtype=np.int64)
            best = 0
            for i in range(len(depth)):  # nodes are in pre-order, parents first
                if self.left[t][i] >= 0:
                    depth[self.left[t][i]] = depth[self.right[t][i]] = depth[i] + 1
                    best = max(best, int(depth[i]) + 1)
            out.append(best)
        return np.asarray(out, dtype=np.int64)

    def n_internal(self) -> int:
        return int(sum(int((f >= 0).sum()) for f in self.feature))


# -- reading the TreeEnsemble node -----------------------------------------------------------------
def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    from onnx import helper, numpy_helper

    out: dict[str, Any] = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if a.name.endswith("_as_tensor"):
            out[a.name[: -len("_as_tensor")]] = numpy_helper.to_array(value)
        else:
            out[a.name] = value
    return out


def _prev(t: np.ndarray) -> np.ndarray:
    return np.nextafter(t, np.asarray(-np.inf, dtype=t.dtype))


def read_ensemble(node: onnx.NodeProto, dtype: np.dtype[Any], *,
                  every_mode: bool = False) -> Ensemble:
    """Normalise a ``TreeEnsembleRegressor``/``Classifier`` node (ai.onnx.ml 1-3).

    ``every_mode``: also read BRANCH_EQ/NEQ splits (``equal``, NEQ as EQ with the children
    swapped), MIN/MAX aggregation and PROBIT, and which leaves carry a weight per output
    (``weighted``), for an evaluator that follows the operator itself (``to_torch``).
    """
    a = _attrs(node)
    classifier = node.op_type == "TreeEnsembleClassifier"
    agg = a.get("aggregate_function", b"SUM")
    agg = agg.decode() if isinstance(agg, bytes) else str(agg)
    if agg not in (("SUM", "AVERAGE", "MIN", "MAX") if every_mode else ("SUM", "AVERAGE")):
        raise TreeForm(f"aggregate_function {agg} has no tensor form")
    post = a.get("post_transform", b"NONE")
    post = post.decode() if isinstance(post, bytes) else str(post)
    if post not in ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", *(("PROBIT",) if every_mode
                                                                    else ())):
        raise TreeForm(f"post_transform {post} has no tensor form")
    prefix = "class" if classifier else "target"
    if classifier:
        labels: Any = (np.asarray(a["classlabels_int64s"], dtype=np.int64)
                       if "classlabels_int64s" in a else list(a.get("classlabels_strings", [])))
        n_out = len(labels)
    else:
        labels = None
        n_out = int(a.get("n_targets", 1))
    tree_ids = np.asarray(a["nodes_treeids"], dtype=np.int64)
    node_ids = np.asarray(a["nodes_nodeids"], dtype=np.int64)
    feats = np.asarray(a["nodes_featureids"], dtype=np.int64)
    thr = np.asarray(a["nodes_values"]).astype(dtype)
    modes = [m.decode() if isinstance(m, bytes) else str(m) for m in a["nodes_modes"]]
    t_ids = np.asarray(a["nodes_truenodeids"], dtype=np.int64)
    f_ids = np.asarray(a["nodes_falsenodeids"], dtype=np.int64)
    missing = np.asarray(a.get("nodes_missing_value_tracks_true", [0] * len(modes)),
                         dtype=np.int64).astype(bool)
    w_tree = np.asarray(a[f"{prefix}_treeids"], dtype=np.int64)
    w_node = np.asarray(a[f"{prefix}_nodeids"], dtype=np.int64)
    w_id = np.asarray(a[f"{prefix}_ids"], dtype=np.int64)
    w_val = np.asarray(a[f"{prefix}_weights"]).astype(np.float64)
    known = ("LEAF", "BRANCH_LEQ", "BRANCH_LT", "BRANCH_GT", "BRANCH_GTE",
             *(("BRANCH_EQ", "BRANCH_NEQ") if every_mode else ()))
    bad = sorted({m for m in modes if m not in known})
    if bad:
        raise TreeForm(f"split mode(s) {bad} (categorical splits) have no tensor form here")
    ens = Ensemble(kind="classifier" if classifier else "regressor", n_outputs=n_out,
                   dtype=np.dtype(dtype), post_transform=post, average=agg == "AVERAGE",
                   labels=labels, aggregate=agg)
    base = a.get("base_values")
    ens.base = np.zeros(0) if base is None else np.asarray(base, dtype=np.float64)
    ens.class_ids_used = tuple(sorted({int(i) for i in w_id})) if classifier else ()
    ens.weights_all_positive = bool((w_val >= 0).all())

    order = np.lexsort((node_ids, tree_ids))
    uniq_trees, starts = np.unique(tree_ids[order], return_index=True)
    bounds = [*starts.tolist(), len(order)]
    keys: dict[tuple[int, int], tuple[int, int]] = {}  # (tree id, node id) -> (tree, local)
    is_leaf_mode = np.asarray([m == "LEAF" for m in modes])
    for k, tree in enumerate(uniq_trees):
        rows = order[bounds[k]: bounds[k + 1]]
        local = {int(node_ids[r]): i for i, r in enumerate(rows)}
        # pre-order walk from the root so parents come before children
        root = int(node_ids[rows[0]])
        seq: list[int] = []
        stack = [local[root]]
        while stack:
            i = stack.pop()
            seq.append(i)
            r = rows[i]
            if not is_leaf_mode[r]:
                stack.append(local[int(f_ids[r])])
                stack.append(local[int(t_ids[r])])
        pos = {old: new for new, old in enumerate(seq)}
        n = len(seq)
        feature = np.full(n, -1, dtype=np.int64)
        threshold = np.zeros(n, dtype=dtype)
        left = np.full(n, -1, dtype=np.int64)
        right = np.full(n, -1, dtype=np.int64)
        nan_left = np.zeros(n, dtype=bool)
        equal = np.zeros(n, dtype=bool)
        for new, old in enumerate(seq):
            r = rows[old]
            mode = modes[r]
            if mode == "LEAF":
                keys[(int(tree), int(node_ids[r]))] = (k, new)
                continue
            yes, no = pos[local[int(t_ids[r])]], pos[local[int(f_ids[r])]]
            t = thr[r: r + 1]
            if mode in ("BRANCH_LEQ", "BRANCH_LT"):
                left[new], right[new], nan_left[new] = yes, no, missing[r]
            elif mode == "BRANCH_EQ":
                left[new], right[new], nan_left[new], equal[new] = yes, no, missing[r], True
            elif mode == "BRANCH_NEQ":  # x != t == not (x == t); NaN != t is true: yes
                left[new], right[new], nan_left[new], equal[new] = no, yes, False, True
            else:  # x > t == not (x <= t); x >= t == not (x < t)
                left[new], right[new], nan_left[new] = no, yes, not missing[r]
            if mode in ("BRANCH_LT", "BRANCH_GTE"):
                t = _prev(t)
            feature[new] = feats[r]
            threshold[new] = t[0]
        ens.feature.append(feature)
        ens.threshold.append(threshold)
        ens.left.append(left)
        ens.right.append(right)
        ens.nan_left.append(nan_left)
        ens.values.append(np.zeros((n, n_out), dtype=np.float64))
        if every_mode:
            ens.equal.append(equal)
            ens.weighted.append(np.zeros((n, n_out), dtype=bool))
    for tr, nid, cid, val in zip(w_tree, w_node, w_id, w_val, strict=True):
        where = keys.get((int(tr), int(nid)))
        if where is None or cid >= n_out:
            raise TreeForm(f"leaf weight for tree {tr} node {nid} does not match a leaf")
        ens.values[where[0]][where[1], int(cid)] += val
        if every_mode:
            ens.weighted[where[0]][where[1], int(cid)] = True
    if classifier and n_out == 2 and ens.class_ids_used == (0, 1) and ens.n_trees:
        v = np.concatenate(ens.values)
        ens.mirrored = bool((v[:, 0] == -v[:, 1]).all()) and (
            len(ens.base) == 0 or (len(ens.base) == 2 and ens.base[0] == -ens.base[1]))
    return ens


# -- building graphs -----------------------------------------------------------------------------
class _Builder:
    """Nodes and initializers of one replacement subgraph, with unique names."""

    def __init__(self, prefix: str, gpu: bool = False) -> None:
        self.prefix = prefix
        self.gpu = gpu  # the graph is for a GPU provider (picks kernels that it has)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{self.prefix}{hint}_{self._n}"

    def const(self, value: Any, hint: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None,
           output: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = output or self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(op_type),
                                           **attrs))
        return out


def _features(b: _Builder, x: str, ens: Ensemble) -> tuple[str, int]:
    """The features the forms read, transposed to [F, N] (gathering whole rows of it is a
    copy of contiguous memory), and the row offset of its second copy.

    Every decision is ``x <= t`` (NaN compares false, so it goes right). Where some split sends
    NaN left, a second copy of the features with NaN as -inf follows the first one.
    """
    internal = [f >= 0 for f in ens.feature]
    want_left = any(bool((nl & m).any()) for nl, m in zip(ens.nan_left, internal, strict=True))
    xt = b.op("Transpose", [x], perm=[1, 0])
    if not want_left:
        return xt, 0
    n_feat = int(max((int(f.max()) for f in ens.feature if len(f)), default=0)) + 1
    xs = b.op("Slice", [xt, b.const(np.array([0], np.int64)),
                        b.const(np.array([n_feat], np.int64)), b.const(np.array([0], np.int64))])
    low = b.op("Where", [b.op("IsNaN", [xs]), b.const(np.array(-np.inf, dtype=ens.dtype)), xs])
    return b.op("Concat", [xs, low], axis=0), n_feat


def _node_columns(ens: Ensemble, t: int, offset: int) -> np.ndarray:
    """Row of each node of tree ``t`` in the feature matrix from :func:`_features`."""
    f = np.where(ens.feature[t] >= 0, ens.feature[t], 0)
    return np.where(ens.nan_left[t], f + offset, f)


def _check_inf_thresholds(ens: Ensemble) -> None:
    # NaN going left reads -inf, which must be <= every threshold it meets
    for f, t, nl in zip(ens.feature, ens.threshold, ens.nan_left, strict=True):
        if bool(((f >= 0) & nl & np.isneginf(t)).any()):
            raise TreeForm("a split at -inf with missing values going left")


def _sum_trees(b: _Builder, vals: str) -> str:
    """[T, N, K] leaf values -> [N, K] sums."""
    return b.op("ReduceSum", [vals, b.const(np.array([0], np.int64))], keepdims=0)


def _columns(ens: Ensemble) -> np.ndarray:
    """The columns of leaf values a form computes: a classifier's scored classes (class 0
    alone for XGBoost's binary form), only class 1 when class 0's values are its negation
    (CatBoost's binary form; :func:`_unmirror` restores class 0), else every output."""
    if ens.mirrored:
        return np.array([1])
    if ens.kind == "classifier" and ens.class_ids_used:
        return np.arange(max(ens.class_ids_used) + 1)
    return np.arange(ens.n_outputs)


def _unmirror(b: _Builder, sums: str, ens: Ensemble) -> str:
    """[N, 1] sums of class 1 -> [N, 2] with class 0 = -class 1 (exact: same order of sums)."""
    if not ens.mirrored:
        return sums
    return b.op("Concat", [b.op("Neg", [sums]), sums], axis=1)


def _leaf_values(b: _Builder, ens: Ensemble, leaves: np.ndarray, flat: str) -> str:
    """Sum over trees of ``leaves[flat]`` ([T, N] indices) as [N, K] (K: :func:`_columns`)."""
    columns = _columns(ens)
    if len(columns) == 1:  # one value per leaf: element-wise gather, summed by a MatMul
        table = b.const(leaves[:, int(columns[0])].astype(ens.dtype), "leaves")
        n_trees = ens.n_trees
        flat = b.op("Reshape", [flat, b.const(np.array([-1], np.int64))])
        vals = b.op("Reshape", [b.op("GatherElements", [table, flat], axis=0),
                                b.const(np.array([n_trees, -1], np.int64))])       # [T, N]
        return _sum_rows(b, vals, ens)
    leaves = leaves[:, columns]
    return _sum_trees(b, b.op("Gather", [b.const(leaves.astype(ens.dtype), "leaves"), flat]))


def _sum_rows(b: _Builder, vals: str, ens: Ensemble) -> str:
    """[T, N] values -> [N, 1] sums over trees (a MatMul by ones: faster than ReduceSum)."""
    ones = b.const(np.ones((1, ens.n_trees), dtype=ens.dtype))
    return b.op("Transpose", [b.op("MatMul", [ones, vals])], perm=[1, 0])


def _gemm_shape(ens: Ensemble) -> tuple[int, int]:
    """(internal nodes, leaves) of the largest tree: the GEMM form's padded sizes."""
    i_max = max(1, max((int((f >= 0).sum()) for f in ens.feature), default=1))
    return i_max, max((int((f < 0).sum()) for f in ens.feature), default=1)


def _form_gemm(b: _Builder, x: str, ens: Ensemble) -> str:
    _check_inf_thresholds(ens)
    xf, off = _features(b, x, ens)
    n_trees, columns = ens.n_trees, _columns(ens)
    k = len(columns)
    inner = [np.flatnonzero(f >= 0) for f in ens.feature]
    leaves = [np.flatnonzero(f < 0) for f in ens.feature]
    i_max, l_max = _gemm_shape(ens)
    if n_trees * i_max * l_max > _MAX_GEMM:
        raise TreeForm(f"the GEMM form of {n_trees} trees of {l_max} leaves would hold"
                       f" {n_trees * i_max * l_max:,} path entries; use 'tree_traversal'")
    cols = np.zeros((n_trees, i_max), dtype=np.int64)
    thr = np.zeros((n_trees, i_max), dtype=ens.dtype)
    c_mat = np.zeros((n_trees, l_max, i_max), dtype=ens.dtype)   # C transposed
    d_vec = np.full((n_trees, l_max, 1), -1, dtype=ens.dtype)
    e_mat = np.zeros((n_trees, k, l_max), dtype=ens.dtype)       # E transposed
    for t in range(n_trees):
        col_t = _node_columns(ens, t, off)
        ipos = {int(n): i for i, n in enumerate(inner[t])}
        lpos = {int(n): j for j, n in enumerate(leaves[t])}
        cols[t, : len(inner[t])] = col_t[inner[t]]
        thr[t, : len(inner[t])] = ens.threshold[t][inner[t]]
        # walk down: the path (internal node, went left) to every leaf
        stack: list[tuple[int, list[tuple[int, bool]]]] = [(0, [])]
        while stack:
            node, path = stack.pop()
            if ens.feature[t][node] < 0:
                j = lpos[node]
                for i, went_left in path:
                    c_mat[t, j, ipos[i]] = 1 if went_left else -1
                d_vec[t, j, 0] = sum(1 for _, went_left in path if went_left)
                e_mat[t, :, j] = ens.values[t][node][columns]
                continue
            stack.append((int(ens.left[t][node]), [*path, (node, True)]))
            stack.append((int(ens.right[t][node]), [*path, (node, False)]))
    g = b.op("Gather", [xf, b.const(cols.reshape(-1), "cols")], axis=0)          # [T*I, N]
    cond = b.op("Cast", [b.op("LessOrEqual", [g, b.const(thr.reshape(-1, 1), "thr")])],
                to=_onnx_type(ens.dtype))
    cond = b.op("Reshape", [cond, b.const(np.array([n_trees, i_max, -1], np.int64))])
    paths = b.op("MatMul", [b.const(c_mat, "C"), cond])                            # [T, L, N]
    hit = b.op("Cast", [b.op("Equal", [paths, b.const(d_vec, "D")])], to=_onnx_type(ens.dtype))
    vals = b.op("MatMul", [b.const(e_mat, "E"), hit])                              # [T, K, N]
    sums = b.op("ReduceSum", [vals, b.const(np.array([0], np.int64))], keepdims=0)
    return b.op("Transpose", [sums], perm=[1, 0])


def _flat_nodes(ens: Ensemble) -> tuple[np.ndarray, ...]:
    offsets = np.cumsum([0] + [len(f) for f in ens.feature])[:-1]
    left, right = [], []
    for t in range(ens.n_trees):
        own = np.arange(len(ens.feature[t])) + offsets[t]
        is_leaf = ens.feature[t] < 0
        left.append(np.where(is_leaf, own, ens.left[t] + offsets[t]))
        right.append(np.where(is_leaf, own, ens.right[t] + offsets[t]))
    return offsets, np.concatenate(left), np.concatenate(right)


def _form_traversal(b: _Builder, x: str, ens: Ensemble) -> str:
    _check_inf_thresholds(ens)
    xf, off = _features(b, x, ens)
    roots, left, right = _flat_nodes(ens)
    cols = np.concatenate([_node_columns(ens, t, off) for t in range(ens.n_trees)])
    thr = np.concatenate(ens.threshold)
    values = np.concatenate(ens.values)
    depth = int(ens.depths().max())
    col = lambda v: v.reshape(-1, 1)  # noqa: E731  (per tree, broadcast over rows)
    if depth == 0:
        zero = b.op("Mul", [b.op("Gather", [xf, b.const(np.zeros(ens.n_trees, np.int64))],
                                 axis=0), b.const(np.array(0, dtype=ens.dtype))])
        idx = b.op("Add", [b.op("Cast", [zero], to=7), b.const(col(roots.astype(np.int64)))])
    else:
        # the first level: every row is at the root of every tree
        xr = b.op("Gather", [xf, b.const(cols[roots], "cols")], axis=0)       # [T, N]
        go = b.op("LessOrEqual", [xr, b.const(col(thr[roots]), "thr")])
        idx = b.op("Where", [go, b.const(col(left[roots])), b.const(col(right[roots]))])
    c_cols, c_thr = b.const(cols, "cols"), b.const(thr, "thr")
    c_left, c_right = b.const(left, "left"), b.const(right, "right")
    for _ in range(1, depth):
        xv = b.op("GatherElements", [xf, b.op("Gather", [c_cols, idx])], axis=0)
        go = b.op("LessOrEqual", [xv, b.op("Gather", [c_thr, idx])])
        idx = b.op("Where", [go, b.op("Gather", [c_left, idx]), b.op("Gather", [c_right, idx])])
    return _leaf_values(b, ens, values, idx)


def _perfect(ens: Ensemble, off: int) -> tuple[int, list[np.ndarray], list[np.ndarray],
                                              np.ndarray]:
    """Trees padded to complete depth D: per level [T, 2^d] rows and thresholds, leaves
    [T, 2^D, K] (a leaf above depth D fills its whole padded subtree). Child ``2i + 1`` is the
    left one, so the bit is the decision ``x <= t`` itself."""
    depth = max(1, int(ens.depths().max()))
    n_trees = ens.n_trees
    if n_trees * 2 ** depth > _MAX_PADDED:
        raise TreeForm(f"{n_trees} trees of depth {depth} padded to complete trees would hold"
                       f" {n_trees * 2 ** depth:,} leaves (limit {_MAX_PADDED:,}); use"
                       " 'tree_traversal'")
    cols = [np.zeros((n_trees, 2 ** d), dtype=np.int64) for d in range(depth)]
    thr = [np.zeros((n_trees, 2 ** d), dtype=ens.dtype) for d in range(depth)]
    leaves = np.zeros((n_trees, 2 ** depth, ens.n_outputs), dtype=ens.dtype)
    for t in range(n_trees):
        col_t = _node_columns(ens, t, off)
        stack = [(0, 0, 0)]  # (node, level, index in level)
        while stack:
            node, d, i = stack.pop()
            if ens.feature[t][node] < 0:
                span = 2 ** (depth - d)
                leaves[t, i * span: (i + 1) * span] = ens.values[t][node]
                continue
            cols[d][t, i] = col_t[node]
            thr[d][t, i] = ens.threshold[t][node]
            stack.append((int(ens.left[t][node]), d + 1, 2 * i + 1))
            stack.append((int(ens.right[t][node]), d + 1, 2 * i))
    return depth, cols, thr, leaves


def _form_perfect(b: _Builder, x: str, ens: Ensemble) -> str:
    _check_inf_thresholds(ens)
    xf, off = _features(b, x, ens)
    depth, cols, thr, leaves = _perfect(ens, off)
    n_trees = ens.n_trees
    xr = b.op("Gather", [xf, b.const(cols[0][:, 0], "cols")], axis=0)           # [T, N]
    idx = b.op("Cast", [b.op("LessOrEqual", [xr, b.const(thr[0][:, :1], "thr")])], to=7)
    for d in range(1, depth):
        offsets = (np.arange(n_trees, dtype=np.int64) * 2 ** d).reshape(-1, 1)
        flat = b.op("Add", [idx, b.const(offsets)])
        xv = b.op("GatherElements",
                  [xf, b.op("Gather", [b.const(cols[d].reshape(-1), "cols"), flat])], axis=0)
        go = b.op("Cast", [b.op("LessOrEqual", [xv, b.op("Gather", [b.const(thr[d].reshape(-1),
                                                                              "thr"), flat])])],
                  to=7)
        idx = b.op("Add", [b.op("Add", [idx, idx]), go])
    offsets = (np.arange(n_trees, dtype=np.int64) * 2 ** depth).reshape(-1, 1)
    flat = b.op("Add", [idx, b.const(offsets)])
    return _leaf_values(b, ens, leaves.reshape(-1, ens.n_outputs), flat)


def oblivious_levels(ens: Ensemble) -> int | None:
    """The deepest tree's depth if every tree is symmetric (one split per level), else None.
    Trees may differ in depth (CatBoost stops a tree early when no split helps): a shallower
    tree's leaves fill its padded subtrees, so the bits of its missing levels do not matter."""
    depths = ens.depths()
    if not len(depths) or int(depths.max()) == 0:
        return None
    for t in range(ens.n_trees):
        level = [0]
        while ens.feature[t][level[0]] >= 0:
            keys = {(int(ens.feature[t][n]), ens.threshold[t][n].tobytes(),
                     bool(ens.nan_left[t][n])) for n in level}
            if len(keys) != 1 or any(ens.feature[t][n] < 0 for n in level):
                return None
            level = [int(c) for n in level for c in (ens.left[t][n], ens.right[t][n])]
        if any(ens.feature[t][n] >= 0 for n in level):
            return None
    return int(depths.max())


def _form_oblivious(b: _Builder, x: str, ens: Ensemble) -> str:
    depth = oblivious_levels(ens)
    if depth is None:
        raise TreeForm("the trees are not symmetric (oblivious): one split per level")
    _check_inf_thresholds(ens)
    xf, off = _features(b, x, ens)
    _, cols, thr, leaves = _perfect(ens, off)
    n_trees = ens.n_trees
    level_cols = np.stack([c[:, 0] for c in cols], axis=1).reshape(-1)   # [T*D]
    level_thr = np.stack([t[:, 0] for t in thr], axis=1).reshape(-1)
    # Each distinct split once, feature by feature: a row of the features against a column of
    # its thresholds (no copy of the features), then the bits in tree order.
    keys = np.stack([level_cols.astype(np.float64), level_thr.astype(np.float64)], axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    parts = []
    zero = b.const(np.array([0], np.int64))
    for f in np.unique(uniq[:, 0]).astype(np.int64):
        mine = uniq[:, 0] == f
        row = b.op("Slice", [xf, b.const(np.array([f], np.int64)),
                             b.const(np.array([f + 1], np.int64)), zero])          # [1, N]
        parts.append(b.op("LessOrEqual", [row, b.const(
            uniq[mine, 1].astype(ens.dtype).reshape(-1, 1), "thr")]))
    bits = parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=0)          # [U, N]
    # leaf index = sum_d bit_d * 2^(D-1-d): on a CPU up to depth 8, uint8 bits and weights into
    # MatMulInteger's int32 (measured 1.7x faster than float32 and than int8); float32 (exact
    # to 2^24) deeper and on GPUs (onnxruntime's CUDA MatMulInteger takes int8 only)
    integer = depth <= 8 and not b.gpu
    bits = b.op("Cast", [bits], to=2 if integer else 1)
    bits = b.op("Gather", [bits, b.const(inverse.reshape(-1).astype(np.int64), "splits")],
                axis=0)                                                          # [T*D, N]
    bits = b.op("Reshape", [bits, b.const(np.array([n_trees, depth, -1], np.int64))])
    powers = 2 ** np.arange(depth - 1, -1, -1).reshape(1, -1)
    if integer:
        weights = b.const(powers.astype(np.uint8), "bitweights")
        index = b.op("MatMulInteger", [weights, bits])                              # [T, 1, N]
    else:
        weights = b.const(powers.astype(np.float32), "bitweights")
        index = b.op("Cast", [b.op("MatMul", [weights, bits])], to=6)               # int32
    index = b.op("Reshape", [index, b.const(np.array([n_trees, -1], np.int64))])
    columns = _columns(ens)
    if len(columns) == 1:
        # one value per leaf: each tree's own leaves by an element-wise gather (no offsets;
        # far faster than Gather's per-index copies), summed over trees by a MatMul
        table = leaves[..., int(columns[0])].reshape(n_trees, -1).astype(ens.dtype)
        vals = b.op("GatherElements", [b.const(table, "leaves"), index], axis=1)  # [T, N]
        return _sum_rows(b, vals, ens)
    offsets = (np.arange(n_trees, dtype=np.int32) * 2 ** depth).reshape(-1, 1)
    flat = b.op("Add", [index, b.const(offsets)])
    return _leaf_values(b, ens, leaves.reshape(-1, ens.n_outputs), flat)


def _form_chunked(b: _Builder, x: str, ens: Ensemble, node: onnx.NodeProto,
                  chunk_trees: int = _CHUNK_TREES) -> str:
    """The same TreeEnsemble attributes split into regressors of ``chunk_trees`` trees each
    whose raw sums are added, with as many targets as classes scored (one for a binary
    classifier: onnxruntime's one-target loops are faster than its per-class ones)."""
    from onnx import helper

    a = {at.name: helper.get_attribute_value(at) for at in node.attribute}
    for k, v in a.items():  # lists -> arrays once: each chunk takes its rows by a mask
        if isinstance(v, list) and v and not isinstance(v[0], bytes):
            a[k] = np.asarray(v)
    prefix = "class" if node.op_type == "TreeEnsembleClassifier" else "target"
    trees = np.asarray(a["nodes_treeids"], dtype=np.int64)
    w_trees = np.asarray(a[f"{prefix}_treeids"], dtype=np.int64)
    uniq = np.unique(trees)
    chunks = [uniq[i: i + chunk_trees] for i in range(0, len(uniq), chunk_trees)]
    columns = _columns(ens)
    w_ids = np.asarray(a[f"{prefix}_ids"], dtype=np.int64)
    scored = np.isin(w_ids, columns)
    renumber = np.full(max(int(w_ids.max(initial=0)), int(columns.max())) + 1, -1, np.int64)
    renumber[columns] = np.arange(len(columns))
    node_keys = [k for k in a if k.startswith("nodes_")]
    parts = []
    for chunk in chunks:
        keep = np.isin(trees, chunk)
        w_keep = np.isin(w_trees, chunk) & scored
        attrs: dict[str, Any] = {}
        for k in node_keys:
            attrs[k] = _select(a[k], keep)
        for src in ("treeids", "nodeids", "weights"):
            attrs[f"target_{src}"] = _select(a[f"{prefix}_{src}"], w_keep)
        attrs["target_ids"] = renumber[w_ids[w_keep]].tolist()
        attrs["n_targets"] = len(columns)
        attrs["post_transform"] = "NONE"
        parts.append(b.op("TreeEnsembleRegressor", [x], hint="chunk", domain="ai.onnx.ml",
                          **attrs))
    return parts[0] if len(parts) == 1 else b.op("Sum", parts)


def _select(values: Any, keep: np.ndarray) -> Any:
    from onnx import TensorProto, numpy_helper

    if isinstance(values, TensorProto):
        arr = numpy_helper.to_array(values)
        return numpy_helper.from_array(arr[keep] if arr.ndim else arr, values.name)
    if isinstance(values, np.ndarray):
        return values[keep].tolist()
    return [v for v, k in zip(values, keep, strict=True) if k]


def _onnx_type(dtype: np.dtype[Any]) -> int:
    return 11 if np.dtype(dtype) == np.float64 else 1


def _finish(b: _Builder, sums: str, ens: Ensemble, node: onnx.NodeProto) -> None:
    """Average, base values, post transform and labels as onnxruntime's operator gives them,
    written to the replaced node's outputs."""
    if ens.dtype != np.float32:
        sums = b.op("Cast", [sums], to=1)
    if ens.average:
        sums = b.op("Div", [sums, b.const(np.array(ens.n_trees, np.float32))])
    base = ens.base.astype(np.float32)
    post = ens.post_transform
    if post == "SOFTMAX_ZERO":
        raise TreeForm("post_transform SOFTMAX_ZERO has no tensor form here")

    def transform(v: str, output: str | None = None) -> str:
        if post == "LOGISTIC":
            return b.op("Sigmoid", [v], output=output)
        if post == "SOFTMAX":
            return b.op("Softmax", [v], axis=-1, output=output)
        return b.op("Identity", [v], output=output)

    if ens.kind == "regressor":
        if len(base) not in (0, 1, ens.n_outputs):
            raise TreeForm(f"{len(base)} base values for {ens.n_outputs} targets")
        if len(base):
            sums = b.op("Add", [sums, b.const(base, "base")])
        transform(sums, output=node.output[0])
        return
    n, used = ens.n_outputs, ens.class_ids_used
    if n > 2 or (n == 2 and used == (0, 1)):
        if len(base) not in (0, n) or (n == 2 and len(base) == 2):
            raise TreeForm(f"{len(base)} base values for {n} classes")
        if len(base):
            sums = b.op("Add", [sums, b.const(base, "base")])
        scores = transform(sums, output=node.output[1])
    elif n == 2 and used == (0,) and len(base) <= 1:
        s = b.op("Slice", [sums, b.const(np.array([0], np.int64)),
                           b.const(np.array([1], np.int64)), b.const(np.array([1], np.int64))])
        if len(base):
            s = b.op("Add", [s, b.const(base[:1], "base")])
        if ens.weights_all_positive:
            pair = [b.op("Sub", [b.const(np.array(1.0, np.float32)), s]), s]
        elif post == "LOGISTIC":
            pair = [b.op("Sigmoid", [b.op("Neg", [s])]), b.op("Sigmoid", [s])]
        elif post == "NONE":
            pair = [b.op("Neg", [s]), s]
        else:
            raise TreeForm(f"a binary classifier with post_transform {post}")
        scores = b.op("Concat", pair, axis=1, output=node.output[1])
    else:
        raise TreeForm(f"a classifier of {n} classes scoring classes {list(used)}")
    if isinstance(ens.labels, np.ndarray):
        table = b.const(ens.labels, "labels")
    else:
        from onnx import TensorProto, helper

        table = b.name("labels")
        b.inits.append(helper.make_tensor(table, TensorProto.STRING, [len(ens.labels)],
                                          list(ens.labels)))
    best = b.op("ArgMax", [scores], axis=1, keepdims=0)
    b.op("Gather", [table, best], output=node.output[0], axis=0)


_FORMS = {
    "gemm": _form_gemm,
    "tree_traversal": _form_traversal,
    "perfect_tree_traversal": _form_perfect,
    "oblivious": _form_oblivious,
}


# -- choosing and applying -------------------------------------------------------------------------
_SAFE_BEFORE_13 = {"Identity", "Cast", "Mul", "Add", "Sub", "Div", "ArgMax", "Gather", "Concat",
                   "Reshape", "Neg", "Sigmoid", "Less", "Greater", "Where", "Not", "Abs"}


def _input_dtype(graph: onnx.GraphProto, name: str) -> int:
    for vi in [*graph.input, *graph.value_info]:
        if vi.name == name:
            return int(vi.type.tensor_type.elem_type)
    for n in graph.node:
        if name in n.output and n.op_type == "Cast":
            return int(next(a.i for a in n.attribute if a.name == "to"))
    return 1


def _is_gpu(provider: str) -> bool:
    return any(k in provider for k in ("CUDA", "Tensorrt", "ROCM", "Dml", "CoreML"))


def choose_strategy(ens: Ensemble, provider: str, batch_size: int | None) -> tuple[str, str]:
    """The form ``auto`` picks for this ensemble, provider and batch size, and why.

    Measured on a 2-core CPU (benchmarks/bench_trees.py, benchmarks/RESULTS.md): symmetric
    trees are fastest as the oblivious form from a few rows up (3.3x CatBoost's own time at
    10,000 and 1,000,000 rows, against 25-39x for the TreeEnsemble operator); ordinary trees in
    batches of 1,000 rows or more run fastest as TreeEnsemble nodes of 2 trees
    (``tree_ensemble_chunked``: 1.4-1.9x faster than the single operator from 20,000 rows,
    equal at 1,000); one row and small batches, the single TreeEnsemble operator (the padded
    tensor forms lost to it at 100 rows in both sessions' runs). On a GPU (no TreeEnsemble
    kernel), measured on an H200: GEMM while rows x path entries stays under
    ``_GPU_GEMM_WORK`` (it won at 1 and 100 rows, lost at 10,000), then the oblivious form for
    symmetric trees, perfect traversal up to depth 10 and plain traversal deeper. With no
    batch size given, a GPU gets the traversal forms (GEMM's intermediates grow with
    rows x trees x leaves; the traversal forms' with rows x trees only).
    """
    gpu = _is_gpu(provider)
    depth = int(ens.depths().max()) if ens.n_trees else 0
    symmetric = oblivious_levels(ens) is not None
    rows = "unknown" if batch_size is None else str(batch_size)
    where = f"batch {rows} on {provider}"
    if gpu:
        i_max, l_max = _gemm_shape(ens)
        entries = ens.n_trees * i_max * l_max
        if batch_size is not None and entries <= _MAX_GEMM \
                and batch_size * entries <= _GPU_GEMM_WORK:
            return "gemm", (f"rows x path entries {batch_size:,} x {entries:,} <="
                            f" {_GPU_GEMM_WORK:,} (GEMM: fewest kernels), {where}")
        if symmetric:
            return "oblivious", f"symmetric trees, {where}"
        if depth <= 3:
            return "gemm", f"depth {depth} <= 3, {where}"
        if depth <= 10:
            return "perfect_tree_traversal", f"depth {depth} <= 10, {where}"
        return "tree_traversal", f"depth {depth} > 10, {where}"
    if symmetric and batch_size != 1:
        return "oblivious", f"symmetric trees, {where}"
    if batch_size is not None and batch_size >= _LARGE_BATCH and ens.n_trees > _CHUNK_TREES:
        return ("tree_ensemble_chunked",
                f"{ens.n_trees} trees in nodes of {_CHUNK_TREES} (parallel over rows),"
                f" batch {rows} >= {_LARGE_BATCH:,} on {provider}")
    return "tree_ensemble", f"{ens.n_trees} trees of depth <= {depth}, {where}"


_LARGE_BATCH = 1000
# Forms auto runs with onnxruntime's intra-op spinning off at batches of _LARGE_BATCH rows or
# more on a CPU: between the many short parallel sections of these forms (one per TreeEnsemble
# node of 2 trees; one per operator) a spinning pool thread holds its core, which on a machine
# shared with other work takes it from the threads with work to do. Measured (RESULTS.md), at
# 10,000 and 1,000,000 rows: the chunked form 1.3-5x faster in 13 of 14 side-by-side cells
# (1.1x slower in one); the oblivious form 1.3-1.6x faster in 3 of 4 (1.4x slower in one).
_QUIET_FORMS = {"tree_ensemble_chunked", "oblivious"}


@dataclass
class StrategyResult:
    """What :func:`apply_strategy` did: the form used per tree node, and notes."""

    strategy: str
    reason: str
    seconds: float
    metadata: dict[str, str]


def apply_strategy(proto: onnx.ModelProto, strategy: str, *, batch_size_hint: int | None = None,
                   provider: str | None = None) -> StrategyResult | None:
    """Rewrite every TreeEnsemble node of ``proto`` in place into the form ``strategy`` names.

    Returns None when the graph has no tree ensemble. ``auto`` picks per node; a form that
    cannot represent a node raises TreeForm, except under ``auto``, which then keeps it.
    """
    from onnx import TensorProto, helper

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if batch_size_hint is not None and (not isinstance(batch_size_hint, int)
                                        or isinstance(batch_size_hint, bool)
                                        or batch_size_hint < 1):
        raise ValueError(f"batch_size_hint must be a positive int or None, got {batch_size_hint!r}")
    provider = provider or "CPUExecutionProvider"
    start = time.perf_counter()
    graph = proto.graph
    if not any(n.op_type in _TREE_OPS and n.domain == "ai.onnx.ml" for n in graph.node):
        return None
    chosen: list[str] = []
    reasons: list[str] = []
    new_nodes: list[Any] = []
    replaced = 0
    for node in graph.node:
        if not (node.op_type in _TREE_OPS and node.domain == "ai.onnx.ml"):
            new_nodes.append(node)
            continue
        elem = _input_dtype(graph, node.input[0])
        dtype = np.dtype(np.float64) if elem == TensorProto.DOUBLE else np.dtype(np.float32)
        form, reason = strategy, "asked for"
        if strategy == "tree_ensemble":  # today's graph, untouched (and not even read)
            new_nodes.append(node)
            chosen.append(form)
            reasons.append(reason)
            continue
        try:
            ens = read_ensemble(node, dtype)
            if strategy == "auto":
                form, reason = choose_strategy(ens, provider, batch_size_hint)
            if form == "tree_ensemble":
                new_nodes.append(node)
            else:
                b = _Builder(f"{node.name or 'trees'}_{form}_", gpu=_is_gpu(provider))
                x = node.input[0]
                if elem not in (TensorProto.FLOAT, TensorProto.DOUBLE):
                    x = b.op("Cast", [x], to=TensorProto.FLOAT)
                if form == "tree_ensemble_chunked":
                    sums = _form_chunked(b, x, ens, node)
                else:
                    sums = _FORMS[form](b, x, ens)
                sums = _unmirror(b, sums, ens)
                _finish(b, sums, ens, node)
                new_nodes.extend(b.nodes)
                graph.initializer.extend(b.inits)
                replaced += 1
        except TreeForm as exc:
            if strategy != "auto":
                raise TreeForm(f"strategy={strategy!r} cannot represent this model: {exc}."
                               " Use strategy='tree_ensemble' or 'auto'") from None
            new_nodes.append(node)
            form, reason = "tree_ensemble", f"tensor forms do not apply ({exc})"
        chosen.append(form)
        reasons.append(reason)
    if replaced:
        _ensure_opset(proto)
    del graph.node[:]
    graph.node.extend(new_nodes)
    if not any(n.domain == "ai.onnx.ml" for n in graph.node):
        keep = [o for o in proto.opset_import if o.domain != "ai.onnx.ml"]
        del proto.opset_import[:]
        proto.opset_import.extend(keep)
    if replaced and not any(o.domain == "ai.onnx.ml" for o in proto.opset_import) and any(
            n.domain == "ai.onnx.ml" for n in graph.node):
        proto.opset_import.append(helper.make_opsetid("ai.onnx.ml", 1))
    name = chosen[0] if len(set(chosen)) == 1 else ",".join(chosen)
    quiet = strategy == "auto" and not _is_gpu(provider) and batch_size_hint is not None \
        and batch_size_hint >= _LARGE_BATCH and bool(set(chosen) & _QUIET_FORMS)
    if quiet:
        reasons.append("onnxruntime's pool threads sleep between tasks (intra-op spinning"
                       " off: faster on a loaded CPU at large batches)")
    meta = {"onnxbridge.trees.strategy": name,
            "onnxbridge.trees.requested": strategy,
            "onnxbridge.trees.reason": "; ".join(reasons)}
    if strategy == "auto":
        meta["onnxbridge.trees.provider"] = provider
        meta["onnxbridge.trees.batch_size_hint"] = str(batch_size_hint or "")
    if quiet:
        from onnxbridge.runtime.session import SESSION_CONFIG_KEY

        meta[SESSION_CONFIG_KEY] = json.dumps({"session.intra_op.allow_spinning": "0"})
    return StrategyResult(name, "; ".join(reasons), time.perf_counter() - start, meta)


def _ensure_opset(proto: onnx.ModelProto) -> None:
    from onnx import helper

    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            if o.version >= _MIN_OPSET:
                return
            old = {n.op_type for n in proto.graph.node if n.domain in ("", "ai.onnx")}
            if not old <= _SAFE_BEFORE_13:
                raise TreeForm(f"the graph uses opset {o.version} (< {_MIN_OPSET}) with"
                               f" {sorted(old - _SAFE_BEFORE_13)}")
            o.version = _MIN_OPSET
            return
    proto.opset_import.append(helper.make_opsetid("", _MIN_OPSET))
    proto.ir_version = max(proto.ir_version, 7)


def apply_tree_options(proto: onnx.ModelProto, options: ConvertOptions,
                       library: str) -> tuple[dict[str, str], list[str]]:
    """Take ``strategy=``, ``batch_size_hint=`` and ``provider_hint=`` from the converter
    options and rewrite ``proto``'s tree ensembles accordingly.

    Returns the metadata to record and notes for the parity report.
    """
    from onnxbridge.errors import InputError

    asked = "strategy" in options.options
    strategy = options.pop("strategy", "tree_ensemble")
    hint = options.pop("batch_size_hint", None)
    provider = options.pop("provider_hint", None)
    if strategy not in STRATEGIES:
        raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if hint is not None and (not isinstance(hint, int) or isinstance(hint, bool) or hint < 1):
        raise InputError(f"batch_size_hint must be a positive int (rows per run call) or None,"
                         f" got {hint!r}")
    if provider is not None:
        from onnxbridge.runtime import normalize_providers, provider_name

        provider = provider_name(normalize_providers(provider)[0])
    try:
        result = apply_strategy(proto, strategy, batch_size_hint=hint, provider=provider)
    except TreeForm as exc:
        raise UnsupportedModelError(f"{library}: {exc}") from None
    if result is None:
        if strategy != "tree_ensemble":
            raise UnsupportedModelError(
                f"{library}: strategy={strategy!r} applies to tree ensembles, and this model has"
                " none; leave strategy out")
        return {}, []
    if not asked:  # the default graph: nothing to say beyond its name
        return {"onnxbridge.trees.strategy": result.strategy}, []
    note = f"trees as {result.strategy} ({result.reason}; {result.seconds:.2f} s)"
    return result.metadata, [note]


def exact_lightgbm_thresholds(proto: onnx.ModelProto, booster: Any) -> int:
    """Make the trees decide as LightGBM does, in place; returns the thresholds fixed.

    LightGBM compares ``x <= t`` in float64; a float32 feature agrees with that only against
    the largest float32 <= t, while the converter rounds t to the nearest float32 (which can be
    above t, and then a feature equal to it goes the wrong way). LightGBM also reads any
    feature with ``|x| <= 1e-35`` (its kZeroThreshold) as 0, so the graph does too.
    """
    from onnx import helper

    exact: list[dict[tuple[int, bytes], float]] = []
    for tree in booster.dump_model().get("tree_info", []):
        found: dict[tuple[int, bytes], float] = {}
        stack = [tree.get("tree_structure", {})]
        while stack:
            node = stack.pop()
            if "split_feature" not in node:
                continue
            if node.get("decision_type") == "<=":
                t = float(node["threshold"])
                found[(int(node["split_feature"]), np.float32(t).tobytes())] = t
            stack.extend((node["left_child"], node["right_child"]))
        exact.append(found)
    fixed = 0
    for node in proto.graph.node:
        if node.op_type not in _TREE_OPS or node.domain != "ai.onnx.ml":
            continue
        attrs = {a.name: a for a in node.attribute}
        if "nodes_values" not in attrs:
            continue
        values = np.asarray(helper.get_attribute_value(attrs["nodes_values"]), dtype=np.float32)
        trees = helper.get_attribute_value(attrs["nodes_treeids"])
        feats = helper.get_attribute_value(attrs["nodes_featureids"])
        modes = helper.get_attribute_value(attrs["nodes_modes"])
        for i, (tree, feat, mode) in enumerate(zip(trees, feats, modes, strict=True)):
            if mode != b"BRANCH_LEQ" or tree >= len(exact):
                continue
            t = exact[tree].get((int(feat), values[i].tobytes()))
            if t is not None and float(values[i]) > t:
                values[i] = _prev(values[i: i + 1])[0]
                fixed += 1
        if fixed:
            attrs["nodes_values"].CopyFrom(helper.make_attribute("nodes_values", values.tolist()))
    _zero_tiny_features(proto)
    return fixed


def _zero_tiny_features(proto: onnx.ModelProto) -> None:
    """Insert ``x = x * (|x| >= next(1e-35f))`` before each tree node (NaN stays NaN; opset 7
    operators only, as LightGBM's converter may emit opset 8)."""
    graph = proto.graph
    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:
        if node.op_type in _TREE_OPS and node.domain == "ai.onnx.ml":
            b = _Builder(f"{node.name or 'trees'}_lightgbm_zero_")
            tiny = np.nextafter(np.float32(1e-35), np.float32(np.inf))
            x = node.input[0]
            small = b.op("Less", [b.op("Abs", [x]), b.const(np.array(tiny, np.float32))])
            keep = b.op("Cast", [b.op("Not", [small])], to=1)
            node.input[0] = b.op("Mul", [x, keep])
            graph.node.extend(b.nodes)
            graph.initializer.extend(b.inits)
        graph.node.append(node)
    if not any(o.domain in ("", "ai.onnx") for o in proto.opset_import):
        from onnx import helper

        proto.opset_import.append(helper.make_opsetid("", _MIN_OPSET))
