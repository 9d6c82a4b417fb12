"""Resources a user or a file can ask for are bounded, and nothing is written outside the
model's folder as a side effect of loading and running it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import make_scale_model

from onnxbridge import OnnxModel


def test_loading_and_running_writes_nothing_to_the_home_folder(tmp_path: Path) -> None:
    """onnxruntime writes a telemetry device id to ~/.cache on import unless told not to."""
    path = OnnxModel(make_scale_model()).save(tmp_path / "m.onnx")
    home = tmp_path / "home"
    home.mkdir()
    # onnxruntime also skips its telemetry when CI is set (as on CI machines): drop that too, so
    # the control below shows the write this test guards against.
    env = {k: v for k, v in os.environ.items()
           if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME", "CI")} | {"HOME": str(home)}
    code = ("import sys, numpy as np, onnxbridge\n"
            "m = onnxbridge.load(sys.argv[1])\n"
            "assert m.run(np.ones((2, 3), np.float32)).shape == (2, 3)\n")
    subprocess.run([sys.executable, "-c", code, str(path)], env=env, check=True, timeout=120)
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
    # The same run with onnxruntime imported first shows what would be written otherwise.
    subprocess.run([sys.executable, "-c", "import onnxruntime"], env=env, check=True, timeout=120)
    assert any(p.name == "deviceid" for p in home.rglob("*"))


def test_threads_are_bounded_with_the_reason() -> None:
    import pytest

    from onnxbridge import InputError
    from onnxbridge.runtime.session import max_threads

    m = OnnxModel(make_scale_model())
    with pytest.raises(InputError, match=r"threads=100000 is over the limit of \d+ threads"):
        m.session(threads=100000)
    with pytest.raises(InputError, match="whole number"):
        m.session(threads=2.5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="0 .*or more"):
        m.session(threads=-1)
    limit = max_threads()
    assert limit >= 64 and limit >= os.cpu_count()  # type: ignore[operator]
    assert m.session(threads=2).get_session_options().intra_op_num_threads == 2


def test_threads_from_the_environment_are_bounded_too(monkeypatch: object) -> None:
    import pytest

    from onnxbridge import InputError

    monkeypatch.setenv("ONNXBRIDGE_THREADS", "100000")  # type: ignore[attr-defined]
    with pytest.raises(InputError, match="ONNXBRIDGE_THREADS=100000 is over the limit"):
        OnnxModel(make_scale_model()).session()


def test_an_endless_stream_fails_at_once_with_a_reason() -> None:
    import io

    import pytest

    import onnxbridge
    from onnxbridge import LoadError

    class Endless(io.RawIOBase):
        """Bytes without end; counts what was read."""

        def __init__(self, pattern: bytes) -> None:
            self.pattern, self.served = pattern, 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            n = 1 << 20 if n is None or n < 0 else n
            self.served += n
            return (self.pattern * (n // len(self.pattern) + 1))[:n]

    zeros = Endless(b"\0")
    with pytest.raises(LoadError, match="not a ModelProto field"):
        onnxbridge.load(zeros)  # the default cap is 64 GiB: it must not read on
    assert zeros.served <= 1 << 16
    text = Endless(b"hello world ")
    with pytest.raises(LoadError, match="not a ModelProto field"):
        onnxbridge.load(text)
    with pytest.raises(LoadError, match="field 1 appears twice"):
        onnxbridge.load(Endless(b"\x08\x07"))  # ir_version = 7, again and again
    plausible = Endless(b"\x42\x00")  # an empty opset_import, again and again
    with pytest.raises(LoadError, match=r"more than 1,048,576 bytes; pass max_bytes="):
        onnxbridge.load(plausible, max_bytes=1 << 20)
    assert plausible.served <= (1 << 20) + 1


def _runs_by_brute_force(ops: list, constants: set[str]) -> list[tuple[int, int, int]]:
    """The same choice of runs, computed the slow obvious way (every start, every length)."""
    from onnxbridge.viz.grouping import _LONGEST_BLOCK, _cut_penalties, _matches, _signatures

    n = len(ops)
    if n < 3:
        return []
    sigs, penalty = _signatures(ops, constants), _cut_penalties(ops, constants)
    longest = min(_LONGEST_BLOCK, n // 2, max(8, 2_000_000 // n))
    candidates: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for length in range(1, longest + 1):
        for i in range(n - length):
            reach = 0
            while i + reach + length < n and _matches(sigs, i + reach, i + reach + length):
                reach += 1
            count = 1 + reach // length
            if count > 1 and length * (count - 1) >= 2:
                candidates[i].append((length, count))
    best = [(0, 0)] * (n + 1)
    choice: list[tuple[int, int] | None] = [None] * (n + 1)
    for i in range(n - 1, -1, -1):
        best[i] = best[i + 1]
        for length, count in candidates[i]:
            rest = best[i + length * count]
            cost = sum(penalty[i + j * length] for j in range(count + 1) if i + j * length <= n)
            score = (rest[0] + length * (count - 1), rest[1] - cost)
            if score > best[i]:
                best[i], choice[i] = score, (length, count)
    runs, i = [], 0
    while i < n:
        taken = choice[i]
        if taken is None:
            i += 1
        else:
            runs.append((i, *taken))
            i += taken[0] * taken[1]
    return runs


def test_folding_repeated_blocks_matches_the_brute_force_choice() -> None:
    import random

    from onnxbridge.viz.graph import _Op
    from onnxbridge.viz.grouping import _find_runs

    rng = random.Random(14)
    for _ in range(150):
        ops: list[_Op] = []
        current = "x"
        for _block in range(rng.randint(1, 4)):
            pattern = [rng.choice(["Relu", "Add", "Mul"]) for _ in range(rng.randint(1, 4))]
            for repeat in range(rng.randint(1, 5)):
                start = current
                for op in pattern:
                    out = f"v{len(ops)}"
                    inputs = [current] if op == "Relu" else [current, rng.choice([start, "w"])]
                    ops.append(_Op(op, "", out, inputs, [out], f"layer.{repeat}", [], ""))
                    current = out
        got = [(r.start, r.length, r.count) for r in _find_runs(ops, {"w"})]
        assert got == _runs_by_brute_force(ops, {"w"})


def test_a_long_chain_still_folds() -> None:
    from onnx import TensorProto, helper

    from onnxbridge.viz import to_svg

    n = 6000
    nodes = [helper.make_node("Relu" if i % 2 else "Neg", [f"t{i}"], [f"t{i + 1}"])
             for i in range(n)]
    graph = helper.make_graph(nodes, "chain",
                              [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info(f"t{n}", TensorProto.FLOAT, [1])])
    svg = to_svg(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert "×" in svg and svg.count("<g class=\"obz-op\"") < 50  # noqa: RUF001
