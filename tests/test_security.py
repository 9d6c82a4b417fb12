"""Untrusted models, broken plugins and crash-safe saving, with real files in a temp folder."""

from __future__ import annotations

import importlib.metadata as md
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_scale_model
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import onnxbridge
from onnxbridge import LoadError, OnnxBridgeWarning, OnnxModel
from onnxbridge.registry import Registry

FEATURES = 512  # weights of 2 KiB, so they go to the external file


def external_model(folder: Path, name: str = "m.onnx") -> tuple[Path, onnx.ModelProto]:
    """A model saved with its weights in <name>.data, and its proto as written."""
    w = np.arange(FEATURES, dtype=np.float32)
    path = OnnxModel(make_scale_model(w, features=FEATURES)).save(folder / name, external_data=True)
    return path, onnx.load_model(str(path), load_external_data=False)


def data_file(path: Path) -> Path:
    """The data file the model at ``path`` names (each save gives it a name of its own)."""
    (location,) = {e.value for t in onnx.load_model(str(path), load_external_data=False).graph.initializer
                   for e in t.external_data if e.key == "location"}
    return path.parent / location


def rewrite_external(path: Path, proto: onnx.ModelProto, **entries: str) -> None:
    tensor = proto.graph.initializer[0]
    info = {e.key: e.value for e in tensor.external_data}
    info.update(entries)
    del tensor.external_data[:]
    for key, value in info.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    path.write_bytes(proto.SerializeToString())


# -- external data ---------------------------------------------------------------------------
def test_external_data_inside_the_folder_loads(tmp_path: Path) -> None:
    path, _ = external_model(tmp_path)
    x = np.ones((1, FEATURES), np.float32)
    np.testing.assert_array_equal(onnxbridge.load(path).run(x), x * np.arange(FEATURES))


@pytest.mark.parametrize(
    ("location", "match"),
    [
        ("/etc/passwd", "is absolute"),
        ("../secret.bin", "climbs out"),
        ("sub/../../secret.bin", "climbs out"),
        ("..\\secret.bin", "climbs out"),
        ("missing.bin", "does not exist"),
    ],
)
def test_external_location_outside_the_folder_is_refused(tmp_path: Path, location: str, match: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 4 * FEATURES)
    (folder / "sub").mkdir()
    path, proto = external_model(folder)
    rewrite_external(path, proto, location=location)
    with pytest.raises(LoadError, match=match):
        onnxbridge.load(path)


def test_symlinked_data_file_and_folder_are_refused(tmp_path: Path) -> None:
    path, proto = external_model(tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "w.data").write_bytes(data_file(path).read_bytes())
    os.symlink(outside / "w.data", tmp_path / "link.data")
    rewrite_external(path, proto, location="link.data")
    with pytest.raises(LoadError, match="symbolic link"):
        onnxbridge.load(path)
    os.symlink(outside, tmp_path / "linkdir")
    rewrite_external(path, proto, location="linkdir/w.data")
    with pytest.raises(LoadError, match="symbolic link .*'linkdir'"):
        onnxbridge.load(path)


def test_hardlinked_data_file_is_refused(tmp_path: Path) -> None:
    path, _proto = external_model(tmp_path)
    os.link(data_file(path), tmp_path / "other.data")
    with pytest.raises(LoadError, match="2 hard links"):
        onnxbridge.load(path)


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ({"offset": "999999999"}, "past the end"),
        ({"length": str(10**12)}, "past the end"),
        ({"offset": "12abc"}, "is not a number"),
        ({"offset": "-4"}, "must not be negative"),
    ],
)
def test_bad_offsets_are_refused_before_reading(tmp_path: Path, entries: dict[str, str], match: str) -> None:
    path, proto = external_model(tmp_path)
    rewrite_external(path, proto, **entries)
    with pytest.raises(LoadError, match=match):
        onnxbridge.load(path)


def test_unknown_external_keys_warn_and_are_ignored(tmp_path: Path) -> None:
    path, proto = external_model(tmp_path)
    rewrite_external(path, proto, surprise="1")
    with pytest.warns(OnnxBridgeWarning, match="unknown external-data keys.*surprise"):
        m = onnxbridge.load(path)
    assert m.run(np.ones((1, FEATURES), np.float32)).shape == (1, FEATURES)


def test_weights_cannot_change_under_a_live_session(tmp_path: Path) -> None:
    path, _ = external_model(tmp_path)
    m = onnxbridge.load(path)
    x = np.ones((1, FEATURES), np.float32)
    before = m.run(x)
    data = data_file(path)
    data.write_bytes(b"\x00" * data.stat().st_size)  # overwritten in place
    np.testing.assert_array_equal(m.run(x), before)
    np.testing.assert_array_equal(m.run(x, providers="cpu"), before)  # even a new session


# -- odd sources -----------------------------------------------------------------------------
def test_fifo_and_devices_are_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    with pytest.raises(LoadError, match="not a regular file"):
        onnxbridge.load(fifo)
    with pytest.raises(LoadError, match="not a regular file"):
        onnxbridge.load("/dev/zero")


def test_size_cap(tmp_path: Path) -> None:
    path = OnnxModel(make_scale_model()).save(tmp_path / "m.onnx")
    with pytest.raises(LoadError, match="over the 16-byte cap"):
        onnxbridge.load(path, max_bytes=16)
    with open("/dev/zero", "rb") as endless:
        with pytest.raises(LoadError, match="cap|not a ModelProto field"):
            onnxbridge.load(endless, max_bytes=1 << 20)


def _graph(nodes: list[onnx.NodeProto]) -> bytes:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize(
    ("nodes", "match"),
    [
        ([helper.make_node("Frobnicate", ["a"], ["c"], name="weird")], "Frobnicate.*weird"),
        ([helper.make_node("Relu", ["b"], ["c"], name="first"),
          helper.make_node("Relu", ["c"], ["b"], name="second")], "topologically sorted.*first"),
        ([helper.make_node("Relu", ["a"], ["c"], name="x"),
          helper.make_node("Relu", ["a"], ["c"], name="y")], "'c' has been used as output names"),
    ],
)
def test_broken_graphs_name_the_node(nodes: list[onnx.NodeProto], match: str) -> None:
    m = onnxbridge.load(_graph(nodes))  # load runs no checker: the session is the judge
    with pytest.raises(LoadError, match=match):
        m.session()


VALID = make_scale_model().SerializeToString()
X = np.array([[1.0, -2.0, 0.5]], np.float32)
X_TIMES_W = np.array([[1.0, -4.0, 1.5]], np.float32)  # y = x * [1, 2, 3], by hand
# Where the weights [1, 2, 3] sit in the file, and the byte that makes the first one 4.0.
WEIGHTS_AT = VALID.find(np.arange(1, 4, dtype=np.float32).tobytes())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=8),
    truncate=st.integers(0, len(VALID)),
)
@example(cuts=[], truncate=0)  # the file as written: loads, and computes x * w
@example(cuts=[], truncate=len(VALID))
@example(cuts=[(WEIGHTS_AT + 3, 0x40)], truncate=0)  # a weight changed: still a valid model
def test_mutated_bytes_give_only_load_errors(cuts: list[tuple[int, int]], truncate: int) -> None:
    data = bytearray(VALID)
    for index, value in cuts:
        data[index] = value
    data = data[:truncate] if truncate else data
    try:
        m = onnxbridge.load(bytes(data))
    except LoadError:
        assert bytes(data) != VALID, "the unchanged model was refused"
        return
    # What loads must also run, or fail with our errors, never crash the process.
    try:
        y = m.run(X)
    except onnxbridge.OnnxBridgeError:
        assert bytes(data) != VALID, "the unchanged model does not run"
        return
    # Whatever ran computed what its own weights say (read by onnx, not by onnxbridge).
    if [n.op_type for n in onnx.load_from_string(bytes(data)).graph.node] == ["Mul"]:
        proto = onnx.load_from_string(bytes(data))
        weights = onnx.numpy_helper.to_array(proto.graph.initializer[0])
        np.testing.assert_array_equal(y, X * weights)
    if bytes(data) == VALID:
        np.testing.assert_array_equal(y, X_TIMES_W)


def test_a_changed_weight_loads_and_is_used() -> None:
    assert WEIGHTS_AT > 0
    data = bytearray(VALID)
    data[WEIGHTS_AT + 3] = 0x40  # 1.0f (00 00 80 3f) becomes 4.0f (00 00 80 40)
    np.testing.assert_array_equal(onnxbridge.load(bytes(data)).run(X), [[4.0, -4.0, 1.5]])


# -- crash-safe saving -----------------------------------------------------------------------
SAVER = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from conftest import make_scale_model
from onnxbridge import OnnxModel
big = OnnxModel(make_scale_model(np.full(4_000_000, 2.0, np.float32), features=4_000_000))
print("ready", flush=True)
while True:
    big.save({target!r})
"""


@pytest.mark.slow
def test_kill_mid_save_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "m.onnx"
    OnnxModel(make_scale_model()).save(target)
    good = target.read_bytes()
    tests = str(Path(__file__).parent)
    proc = subprocess.Popen([sys.executable, "-c", SAVER.format(tests=tests, target=str(target))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    # Wait for the writer's first whole save, so the kill below lands while it writes again.
    deadline = time.monotonic() + 120
    while target.read_bytes() == good and time.monotonic() < deadline:
        time.sleep(0.02)
    seen_big = False
    for delay in (0.05, 0.11, 0.23, 0.31, 0.47):
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL) if delay == 0.47 else None
        content = target.read_bytes()
        # At every moment the file is either the old model or a whole new one.
        assert content == good or onnxbridge.load(content).inputs[0].shape == ("batch", 4_000_000)
        seen_big = seen_big or content != good
    proc.wait(timeout=30)
    assert seen_big, "the writer never replaced the file: nothing was checked mid-save"
    m = onnxbridge.load(target)
    assert m.name == "scale"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "m.onnx"]
    # The killed writer may leave its hidden temporary folder; the next save removes it.
    OnnxModel(make_scale_model()).save(target)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"], leftovers


# -- plugins ---------------------------------------------------------------------------------
def test_malformed_entry_point_is_reported(fake_env: Path) -> None:
    with pytest.warns(OnnxBridgeWarning, match="bad"):
        reg = Registry(entry_points=[md.EntryPoint("bad", "not a valid reference", "onnxbridge.converters"),
                                     md.EntryPoint("fake", "fakeplugin:SPECS", "onnxbridge.converters")])
        names = [s.name for s in reg.specs()]
    assert names == ["fake-base"] and reg.failures()[0].plugin == "bad"


def test_block_list_skips_named_plugins(monkeypatch: pytest.MonkeyPatch, fake_env: Path) -> None:
    monkeypatch.setenv("ONNXBRIDGE_BLOCK_PLUGINS", "fake, other")
    reg = Registry(entry_points=[md.EntryPoint("fake", "fakeplugin:SPECS", "onnxbridge.converters")])
    assert reg.specs() == []


def test_plugin_cannot_take_a_builtin_name() -> None:
    # A third-party entry point listed first that reuses the name "sklearn" is refused; the
    # built-in still loads (onnxbridge's own entry points are loaded first).
    builtin = [ep for ep in md.entry_points(group="onnxbridge.converters") if ep.name == "sklearn"]
    assert builtin, "onnxbridge is not installed with its entry points"
    impostor = md.EntryPoint("sklearn", "onnxbridge.plugins.sklearn:SPECS", "onnxbridge.converters")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = Registry(entry_points=[impostor, *builtin])
        spec = reg.get("sklearn")
    assert spec.package == "onnxbridge"
    assert any("already registered" in str(w.message) for w in caught)


def test_concurrent_loading_and_first_runs(tmp_path: Path) -> None:
    import threading

    path, _ = external_model(tmp_path)
    x = np.ones((2, FEATURES), np.float32)
    expected = onnxbridge.load(path).run(x)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def work() -> None:
        try:
            barrier.wait()
            results.append(onnxbridge.load(path).run(x))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 6
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_names_that_are_not_utf8_are_a_load_error() -> None:
    """protobuf hands back bytes for a name that is not UTF-8, and every reader of names (repr,
    the picture, run) would fail on them: load refuses the file instead (found by test_fuzz)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    node = helper.make_node("Relu", ["x"], ["y"], name="relu_node")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    data = model.SerializeToString()
    at = data.index(b"relu_node")
    with pytest.raises(onnxbridge.LoadError, match="not UTF-8"):
        onnxbridge.load(data[:at] + b"\x80" + data[at + 1:])
    assert onnxbridge.load(data).run(np.array([-1, 2], np.float32)).tolist() == [0, 2]


def test_the_cap_admits_a_model_of_exactly_its_size(tmp_path: Path) -> None:
    """max_bytes is the most a model may have: a stream or file of exactly that size loads, one
    byte more is refused with the cap named (found by mutation testing: `>` vs `>=`)."""
    import io

    data = make_scale_model().SerializeToString()
    x = np.ones((1, 3), np.float32)
    np.testing.assert_allclose(onnxbridge.load(io.BytesIO(data), max_bytes=len(data)).run(x), [[1, 2, 3]])
    with pytest.raises(LoadError, match=rf"gave more than {len(data) - 1:,} bytes; pass max_bytes="):
        onnxbridge.load(io.BytesIO(data), max_bytes=len(data) - 1)
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    np.testing.assert_allclose(onnxbridge.load(path, max_bytes=len(data)).run(x), [[1, 2, 3]])
    with pytest.raises(LoadError, match=rf"over the {len(data) - 1}-byte cap"):
        onnxbridge.load(path, max_bytes=len(data) - 1)
    with pytest.raises(LoadError, match=r"is a text stream; open the file in binary mode \('rb'\)"):
        onnxbridge.load(io.StringIO("not bytes"))
