"""Finding runs of repeated blocks (ResNet stages, transformer layers) to draw once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

from onnxbridge.viz.graph import _Op

_LONGEST_BLOCK = 200  # the longest repeated block looked for, in nodes


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
    """
    n = len(ops)
    if n < 3:
        return []
    sigs = _signatures(ops, constants)
    penalty = _cut_penalties(ops, constants)
    longest = min(_LONGEST_BLOCK, n // 2, max(8, 2_000_000 // n))
    candidates: list[list[_Run]] = [[] for _ in range(n)]
    for length in range(1, longest + 1):
        reach = 0
        for i in range(n - length - 1, -1, -1):
            reach = reach + 1 if _matches(sigs, i, i + length) else 0
            count = 1 + reach // length
            if count > 1 and length * (count - 1) >= 2:
                candidates[i].append(_Run(i, length, count))
    # best[i]: (ops saved, -boundary penalty) for the graph from op i on, and the run taken there.
    best: list[tuple[int, int]] = [(0, 0)] * (n + 1)
    choice: list[_Run | None] = [None] * (n + 1)
    for i in range(n - 1, -1, -1):
        best[i] = best[i + 1]
        for run in candidates[i]:
            rest = best[run.end]
            cost = sum(penalty[run.start + j * run.length] for j in range(run.count + 1))
            score = (rest[0] + run.saved, rest[1] - cost)
            if score > best[i]:
                best[i], choice[i] = score, run
    runs: list[_Run] = []
    i = 0
    while i < n:
        taken = choice[i]
        if taken is None:
            i += 1
        else:
            runs.append(taken)
            i = taken.end
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
