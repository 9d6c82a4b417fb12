"""Saving with external data as one unit, link-safe writes, every tensor through the external-data
checks, checker findings as warnings (issues 13, 14 items 3-5, 16), with real files."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_scale_model
from onnx import TensorProto, helper, numpy_helper

import onnxbridge
from onnxbridge import LoadError, OnnxModel
from onnxbridge._files import (
    PROTOBUF_LIMIT,
    atomic_write,
    checker_findings,
    is_large,
    iter_tensors,
    load_proto,
    model_size,
    save_proto,
)
from onnxbridge.cli import main

FEATURES = 1024  # 4 KiB of weights: over the 1 KiB threshold, so they go to the data file


def marked_model(value: float) -> onnx.ModelProto:
    """y = x * w with every weight ``value`` and the same value in the metadata: a model whose
    file and data file came from different saves shows it."""
    proto = make_scale_model(np.full(FEATURES, value, np.float32), features=FEATURES)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "mark", str(value)
    return proto


def assert_whole(m: OnnxModel) -> float:
    mark = float(m.metadata["mark"])
    y = m.run(np.ones((1, FEATURES), np.float32))
    np.testing.assert_array_equal(y, np.full((1, FEATURES), mark, np.float32))
    return mark


def data_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".data"))


# -- issue 14 item 5: a save with external data is one unit --------------------------------------
def test_each_external_save_names_its_own_data_file_and_removes_the_old(tmp_path: Path) -> None:
    target = tmp_path / "m.onnx"
    OnnxModel(marked_model(1.0)).save(target, external_data=True)
    (first,) = data_files(tmp_path)
    OnnxModel(marked_model(2.0)).save(target, external_data=True)
    (second,) = data_files(tmp_path)
    assert first != second  # the new model names a new file; the old one is gone after
    proto = onnx.load_model(str(target), load_external_data=False)
    assert {e.value for e in proto.graph.initializer[0].external_data if e.key == "location"} == {second}
    assert assert_whole(onnxbridge.load(target)) == 2.0
    OnnxModel(marked_model(3.0)).save(target)  # a self-contained save removes it too
    assert data_files(tmp_path) == []
    assert assert_whole(onnxbridge.load(target)) == 3.0


def test_second_external_save_in_the_current_folder(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    OnnxModel(marked_model(1.0)).save("m.onnx", external_data=True)
    OnnxModel(marked_model(2.0)).save("m.onnx", external_data=True)
    assert assert_whole(onnxbridge.load("m.onnx")) == 2.0
    assert len(data_files(tmp_path)) == 1


def test_a_saved_external_model_resaves_from_its_files(tmp_path: Path) -> None:
    first = OnnxModel(marked_model(4.0)).save(tmp_path / "a.onnx", external_data=True)
    proto, folder = load_proto(first, keep_external_above=0)  # weights stay in their file
    assert folder is not None and proto.graph.initializer[0].data_location == TensorProto.EXTERNAL
    save_proto(proto, tmp_path / "b.onnx", data_dir=folder)
    assert assert_whole(onnxbridge.load(tmp_path / "b.onnx")) == 4.0
    assert assert_whole(onnxbridge.load(first)) == 4.0


SAVER = """
import sys
sys.path.insert(0, {tests!r})
from test_files import marked_model
from onnxbridge import OnnxModel
models = [OnnxModel(marked_model(v)) for v in (1.0, 2.0)]
print("ready", flush=True)
i = 0
while True:
    models[i % 2].save({target!r}, external_data=True)
    i += 1
"""


@pytest.mark.slow
def test_concurrent_savers_and_a_kill_leave_one_whole_model(tmp_path: Path) -> None:
    target = tmp_path / "m.onnx"
    OnnxModel(marked_model(5.0)).save(target, external_data=True)
    tests = str(Path(__file__).parent)
    procs = [subprocess.Popen([sys.executable, "-c", SAVER.format(tests=tests, target=str(target))],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    stop = threading.Event()
    errors: list[BaseException] = []

    def thread_saver(value: float) -> None:
        m = OnnxModel(marked_model(value))
        while not stop.is_set():
            try:
                m.save(target, external_data=True)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=thread_saver, args=(v,)) for v in (6.0, 7.0, 8.0, 9.0)]
    for t in threads:
        t.start()
    seen: set[float] = set()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        seen.add(assert_whole(onnxbridge.load(target)))  # never a model with another's weights
    procs[0].send_signal(signal.SIGKILL)  # killed wherever it is, mid-save or not
    stop.set()
    for t in threads:
        t.join()
    procs[1].send_signal(signal.SIGKILL)
    for p in procs:
        p.wait(timeout=30)
    assert not errors, errors
    assert len(seen) >= 2
    assert_whole(onnxbridge.load(target))
    # The next save leaves exactly the model and its one data file (dead savers' temporary
    # files on this host are removed; orphaned data files of killed saves may remain).
    OnnxModel(marked_model(1.0)).save(target, external_data=True)
    assert assert_whole(onnxbridge.load(target)) == 1.0
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".onnxbridge-tmp")]


def test_another_hosts_temporary_files_are_left_alone(tmp_path: Path) -> None:
    host = "".join(c if c.isalnum() or c in "_-" else "_" for c in socket.gethostname())[:40]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = tmp_path / f".m.onnx.{host}.{dead.pid}.abc.onnxbridge-tmp"
    theirs = tmp_path / f".m.onnx.otherhost.{dead.pid}.abc.onnxbridge-tmp"
    mine.write_bytes(b"x")
    theirs.write_bytes(b"x")
    OnnxModel(marked_model(1.0)).save(tmp_path / "m.onnx", external_data=True)
    assert theirs.exists()  # the pid means nothing on another host
    assert not mine.exists()  # this host's dead writer: removed


# -- issue 14 item 4: writes never follow links and keep permissions -----------------------------
def test_save_replaces_a_planted_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "models"
    folder.mkdir()
    os.symlink(victim, folder / "m.onnx")
    OnnxModel(marked_model(1.0)).save(folder / "m.onnx")
    assert victim.read_text() == "precious"
    assert not (folder / "m.onnx").is_symlink()
    assert assert_whole(onnxbridge.load(folder / "m.onnx")) == 1.0


def test_writes_keep_the_permission_bits_of_the_file_they_replace(tmp_path: Path) -> None:
    target = tmp_path / "m.onnx"
    OnnxModel(marked_model(1.0)).save(target)
    os.chmod(target, 0o640)
    OnnxModel(marked_model(2.0)).save(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    OnnxModel(marked_model(2.0)).save(target, external_data=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    text = tmp_path / "t.csv"
    text.write_text("old")
    os.chmod(text, 0o600)
    atomic_write(text, "new")
    assert text.read_text() == "new" and stat.S_IMODE(text.stat().st_mode) == 0o600


def test_cli_view_and_bench_outputs_do_not_follow_links(tmp_path: Path) -> None:
    model = OnnxModel(make_scale_model()).save(tmp_path / "m.onnx")
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("m.html", "b.csv"):
        (outside / name).write_text("precious")
        os.symlink(outside / name, tmp_path / name)
    assert main(["view", str(model), "--html", "--no-browser", "--out", str(tmp_path / "m.html")]) == 0
    assert main(["bench", str(model), "--batch", "1", "--seconds", "0.05", "--warmup", "1", "-q",
                 "--csv", str(tmp_path / "b.csv")]) == 0
    for name in ("m.html", "b.csv"):
        assert (outside / name).read_text() == "precious"
        assert not (tmp_path / name).is_symlink() and (tmp_path / name).stat().st_size > 0


# -- issue 14 item 3: every tensor goes through the external-data checks -------------------------
def sparse_model(folder: Path, location: str, values: np.ndarray) -> Path:
    """y = x + dense(S), with S a sparse initializer whose values live in ``location``."""
    indices = numpy_helper.from_array(np.array([0, 2], np.int64), "S_indices")
    vals = numpy_helper.from_array(values, "S")  # a sparse tensor is named by its values
    vals.ClearField("raw_data")
    vals.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(values.nbytes))):
        entry = vals.external_data.add()
        entry.key, entry.value = key, value
    sparse = helper.make_sparse_tensor(vals, indices, [4])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "S"], ["y"])], "sparse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        sparse_initializer=[sparse])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "sparse.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_sparse_initializer_external_data_is_checked_and_read_in(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.array([1.5, -2.0], np.float32)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "s.data").write_bytes(values.tobytes())
    (tmp_path / "secret.bin").write_bytes(np.array([9.0, 9.0], np.float32).tobytes())
    monkeypatch.chdir(tmp_path)  # a read relative to the current folder would find secret.bin
    with pytest.raises(LoadError, match="climbs out"):
        onnxbridge.load(sparse_model(folder, "../secret.bin", values))
    with pytest.raises(LoadError, match="does not exist"):
        onnxbridge.load(sparse_model(folder, "secret.bin", values))
    m = onnxbridge.load(sparse_model(folder, "s.data", values))
    assert all(t.data_location != TensorProto.EXTERNAL for t in iter_tensors(m.proto))
    np.testing.assert_array_equal(m.run(np.zeros(4, np.float32)), [1.5, 0, -2.0, 0])


@pytest.mark.parametrize(
    ("location", "match"),
    [(".", "names the folder"), ("./", "names the folder"), ("a" * 300, "too long"),
     ("m.onnx/w.data", "cannot be opened"), ("", "no location")],
)
def test_odd_locations_are_load_errors(tmp_path: Path, location: str, match: str) -> None:
    path = OnnxModel(marked_model(1.0)).save(tmp_path / "m.onnx", external_data=True)
    proto = onnx.load_model(str(path), load_external_data=False)
    for e in proto.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = location
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(LoadError, match=match):
        onnxbridge.load(path)


def test_shared_bytes_count_against_the_cap(tmp_path: Path) -> None:
    w = np.ones(1 << 16, np.float32)  # 256 KiB, named by 40 initializers
    (tmp_path / "w.data").write_bytes(w.tobytes())
    inits = []
    for i in range(40):
        t = onnx.TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[w.size])
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "w.data"), ("offset", "0"), ("length", str(w.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        inits.append(t)
    nodes = [helper.make_node("Sum", [f"w{i}" for i in range(40)], ["y"])]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [w.size])
    graph = helper.make_graph(nodes, "many", [], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "many.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(LoadError, match="adds up to more than"):
        onnxbridge.load(tmp_path / "many.onnx", max_bytes=4 << 20)
    assert onnxbridge.load(tmp_path / "many.onnx").run()[0] == pytest.approx(40.0)


# -- issue 16: checker findings are warnings when onnxruntime runs the model ---------------------
def ir3_model() -> onnx.ModelProto:
    """onnxruntime's own datasets/mul_1.onnx shape: IR 3, an initializer not among the inputs."""
    w = numpy_helper.from_array(np.array([2.0, 3.0], np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["X", "W"], ["Y"])], "mul_1",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 3
    return model


def test_ir3_initializer_outside_the_inputs_loads_and_check_shows_the_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mul_1.onnx"
    path.write_bytes(ir3_model().SerializeToString())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # load runs no checker (issue 16: first-call cost)
        m = onnxbridge.load(path)
    np.testing.assert_array_equal(m.run(np.array([1.0, 1.0], np.float32)), [2.0, 3.0])
    assert any("not in graph input" in f for f in m.checker_findings)  # worked out on demand
    assert main(["check", str(path)]) == 0
    assert "warn onnx.checker" in capsys.readouterr().out
    assert main(["info", str(path)]) == 0
    assert "onnx.checker warns" in capsys.readouterr().out


def test_a_model_neither_accepts_is_refused_when_its_session_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["a"], ["c"], name="weird")], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    m = onnxbridge.load(model.SerializeToString())  # load makes no session
    with pytest.raises(LoadError, match="onnxruntime cannot load.*Frobnicate.*onnx.checker finds"
                                        " the graph invalid too.*Frobnicate"):
        m.run(np.ones(1, np.float32))
    path = tmp_path / "weird.onnx"
    path.write_bytes(model.SerializeToString())
    assert main(["check", str(path)]) == 1
    assert "FAIL onnxruntime session" in capsys.readouterr().out
    assert main(["info", str(path)]) == 1  # it used to say "onnxruntime loads the model anyway"
    out = capsys.readouterr().out
    assert "(onnxruntime cannot load it either)" in out and "CANNOT load it" in out


# -- issue 13: sizes and checks that never serialise a large proto -------------------------------
def test_model_size_matches_protobuf_and_a_lowered_limit_forces_external(tmp_path: Path) -> None:
    proto = marked_model(1.0)
    assert abs(model_size(proto) - proto.ByteSize()) < 256
    assert not is_large(proto) and is_large(proto, limit=1000) and PROTOBUF_LIMIT < 2**31
    written = save_proto(proto, tmp_path / "m.onnx", limit=1000)  # "too big": external data
    assert len(written) == 2 and written[1].name.endswith(".data")
    assert assert_whole(onnxbridge.load(written[0])) == 1.0


def test_checker_runs_on_a_weightless_copy_of_external_models(tmp_path: Path) -> None:
    path = OnnxModel(ir3_model()).save(tmp_path / "m.onnx", external_data=True, )
    proto = onnx.load_model(str(path), load_external_data=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert any("not in graph input" in f for f in checker_findings(proto))
    assert checker_findings(onnx.load_model(str(
        OnnxModel(marked_model(1.0)).save(tmp_path / "ok.onnx", external_data=True)),
        load_external_data=False)) == []
