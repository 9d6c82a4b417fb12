"""Finding runs of repeated blocks (ResNet stages, transformer layers) to draw once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

from onnxbridge.viz.graph import _Op

_LONGEST_BLOCK = 200  # the longest repeated block looked for, in nodes
_CANDIDATE_BUDGET = 200_000  # candidate runs weighed one by one before only first starts count


# -- finding repeated blocks -----------------------------------------------------------------------
@dataclass
class _Run:
    start: int
    length: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.length * self.count

    @property
    def saved(self) -> int:
        return self.length * (self.count - 1)


def _signatures(ops: list[_Op], constants: set[str]) -> list[tuple[Any, ...]]:
    """Per op: what it is and where each input comes from, as a distance back in the op list."""
    producer: dict[str, int] = {}
    sigs: list[tuple[Any, ...]] = []
    for i, op in enumerate(ops):
        refs: list[Any] = []
        for name in op.inputs:
            if not name:
                refs.append("")
            elif name in constants:
                refs.append("c")
            elif name in producer:
                refs.append(i - producer[name])
            else:
                refs.append("g")  # a graph input
        sigs.append((op.domain, op.op_type, len(op.outputs), tuple(refs)))
        for name in op.outputs:
            producer[name] = i
    return sigs


def _matches(sigs: list[tuple[Any, ...]], a: int, b: int) -> bool:
    """Whether op ``b`` repeats op ``a`` one block later (block length ``b - a``).

    Inputs must come from the same place relative to the op, except that two inputs which both
    reach back a whole block or more count as "from outside the block" and match.
    """
    sa, sb = sigs[a], sigs[b]
    if sa[:3] != sb[:3] or len(sa[3]) != len(sb[3]):
        return False
    length = b - a
    for ra, rb in zip(sa[3], sb[3], strict=True):
        if ra != rb and not (isinstance(ra, int) and isinstance(rb, int) and min(ra, rb) >= length):
            return False
    return True


def _cut_penalties(ops: list[_Op], constants: set[str]) -> list[int]:
    """How bad a block boundary before each op would be: many tensors crossing it, and two ops
    of the same module on both sides, both say the cut falls inside a block rather than between."""
    n = len(ops)
    live = [0] * (n + 2)
    producer: dict[str, int] = {}
    last_use: dict[str, int] = {}
    for i, op in enumerate(ops):
        for name in op.inputs:
            if name and name not in constants:
                last_use[name] = i
        for name in op.outputs:
            producer[name] = i
    for name, last in last_use.items():
        first = producer.get(name, -1) + 1  # live across every cut after its producer
        if first <= last:
            live[first] += 1
            live[last + 1] -= 1
    penalties = []
    running = 0
    for q in range(n + 1):
        running += live[q]
        depth = 0
        if 0 < q < n and ops[q - 1].scope and ops[q].scope:
            left, right = re.split(r"[./]", ops[q - 1].scope), re.split(r"[./]", ops[q].scope)
            while depth < min(len(left), len(right)) and left[depth] == right[depth]:
                depth += 1
        penalties.append(100 * depth + running)
    return penalties


def _find_runs(ops: list[_Op], constants: set[str]) -> list[_Run]:
    """Non-overlapping runs of a block repeated back to back, chosen to fold away the most ops.

    For every block length, ``reach[i]`` counts how far the graph from op i keeps repeating itself
    with that period; a dynamic programme then picks the runs that save the most boxes, and
    between equal savings the runs whose boundaries fall between modules.

    Near-linear in the number of ops: each block length is one pass of numpy over the ops (the
    slow signature compare only where two ops are of one kind but differ in their inputs). When
    there are more than ``_CANDIDATE_BUDGET`` candidate runs (a long chain of one op makes one
    per position and length), only runs that start in the first period of a repeating stretch
    are kept: a later start is the same run with fewer copies.
    """
    import numpy as np

    n = len(ops)
    if n < 3:
        return []
    sigs = _signatures(ops, constants)
    penalty = np.asarray(_cut_penalties(ops, constants), dtype=np.int64)  # n + 1 cuts
    exact_ids: dict[tuple[Any, ...], int] = {}
    kind_ids: dict[tuple[Any, ...], int] = {}
    exact = np.fromiter((exact_ids.setdefault(s, len(exact_ids)) for s in sigs), np.int64, n)
    kind = np.fromiter((kind_ids.setdefault((*s[:3], len(s[3])), len(kind_ids)) for s in sigs),
                       np.int64, n)
    longest = min(_LONGEST_BLOCK, n // 2, max(8, 2_000_000 // n))
    candidates: list[list[tuple[int, int, int]]] = [[] for _ in range(n)]  # (length, count, cost)
    found: list[tuple[int, Any, Any, Any, Any]] = []
    total = 0
    for length in range(1, longest + 1):
        m = n - length  # pairs (i, i + length)
        same = exact[:m] == exact[length:]
        for i in np.flatnonzero(~same & (kind[:m] == kind[length:])).tolist():
            same[i] = _matches(sigs, i, i + length)
        if not same.any():
            continue
        # reach[i]: how many consecutive pairs from i on match (0 where pair i does not).
        idx = np.arange(m)
        stop = np.where(same, m, idx)  # the first non-matching pair at or after i
        stop = np.minimum.accumulate(stop[::-1])[::-1]
        reach = stop - idx
        count = 1 + reach // length
        keep = (count > 1) & (length * (count - 1) >= 2)
        starts = np.flatnonzero(keep)
        if not len(starts):
            continue
        # A run starting one period after another of the same stretch is that run, shorter.
        first = np.ones(m, dtype=bool)
        first[length:] = reach[:-length] < reach[length:] + length
        total += len(starts)
        # stride[j] = penalty[j] + penalty[j + length] + ... : a run's boundary cost in O(1).
        padded = np.zeros(-(-(n + 1) // length) * length, dtype=np.int64)
        padded[: n + 1] = penalty
        stride = padded.reshape(-1, length)[::-1].cumsum(axis=0)[::-1].reshape(-1)
        counts = count[starts]
        after = starts + (counts + 1) * length
        costs = stride[starts] - np.where(after < len(stride), stride[np.minimum(after, len(stride) - 1)], 0)
        found.append((length, starts, counts, costs, first[starts]))
    prune = total > _CANDIDATE_BUDGET
    for length, starts, counts, costs, first_period in found:
        if prune:
            starts, counts, costs = starts[first_period], counts[first_period], costs[first_period]
        for i, c, cost in zip(starts.tolist(), counts.tolist(), costs.tolist(), strict=True):
            candidates[i].append((length, c, cost))
    # best[i]: (ops saved, -boundary penalty) for the graph from op i on, and the run taken there.
    best: list[tuple[int, int]] = [(0, 0)] * (n + 1)
    choice: list[tuple[int, int] | None] = [None] * (n + 1)
    for i in range(n - 1, -1, -1):
        top = best[i + 1]
        taken = None
        for length, c, cost in candidates[i]:
            rest = best[i + length * c]
            score = (rest[0] + length * (c - 1), rest[1] - cost)
            if score > top:
                top, taken = score, (length, c)
        best[i], choice[i] = top, taken
    runs: list[_Run] = []
    i = 0
    while i < n:
        picked = choice[i]
        if picked is None:
            i += 1
        else:
            runs.append(_Run(i, picked[0], picked[1]))
            i += picked[0] * picked[1]
    return runs


def _common_scope(scopes: list[str]) -> str:
    parts = [re.split(r"[./]", s) for s in scopes if s]
    if not parts:
        return ""
    common: list[str] = []
    for pieces in zip(*parts, strict=False):
        if len(set(pieces)) != 1:
            break
        common.append(pieces[0])
    if not common:
        return ""
    # Give the prefix back in its own spelling (dots or slashes) from the first scope.
    first = scopes[0] if scopes[0] else next(s for s in scopes if s)
    cut = 0
    for _ in common:
        match = re.search(r"[./]", first[cut:])
        cut = len(first) if match is None else cut + match.end()
    return first[:cut].rstrip("./")
