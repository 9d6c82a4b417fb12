"""The onnxbridge command, run as users run it."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxbridge import OnnxModel
from onnxbridge.cli import main
from onnxbridge.errors import InputError


def test_demo_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "demo.onnx"
    proc = subprocess.run([sys.executable, "-m", "onnxbridge", "demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "verified against scikit-learn: passed" in proc.stdout
    assert "labels agree on 100.0% of rows" in proc.stdout
    assert out.stat().st_size > 0


def test_info_and_run(tmp_path: Path, scale_model: onnx.ModelProto,
                      capsys: pytest.CaptureFixture[str]) -> None:
    path = OnnxModel(scale_model).save(tmp_path / "m.onnx")
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "x: float32 [batch, 3]" in text and "Mul x1" in text
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "-o",
                 str(tmp_path / "y.npz")]) == 0
    with np.load(tmp_path / "y.npz") as y:
        np.testing.assert_array_equal(y["y"], [[1, 2, 3], [1, 2, 3]])


def test_errors_are_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "missing.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("onnxbridge info: error: no such model file") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "--debug" in err
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    assert main(["--debug", "run", str(tmp_path / "missing.onnx"), "-i", str(tmp_path / "x.npy")]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2


def test_converters_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["converters"]) == 0
    out = capsys.readouterr().out
    assert "sklearn [onnxbridge]" in out
    # Every plugin onnxbridge itself declares (read from its installed metadata) is listed.
    import importlib.metadata as md

    declared = {ep.name for ep in md.entry_points(group="onnxbridge.converters")
                if ep.dist is not None and ep.dist.name == "onnxbridge"}
    assert declared and all(f"{name} [onnxbridge]" in out for name in declared), (declared, out)


def test_converters_exits_1_when_a_plugin_fails(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata as md

    from onnxbridge import OnnxBridgeWarning, registry

    broken = md.EntryPoint("broken", "no_such_module_anywhere:SPECS", "onnxbridge.converters")
    monkeypatch.setattr(registry, "_default", registry.Registry(entry_points=[broken]))
    with pytest.warns(OnnxBridgeWarning, match="broken"):
        assert main(["converters"]) == 1
    assert "broken" in capsys.readouterr().out


# -- convert, check, bench -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tabular_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with saved models of each tabular kind and samples in each format."""
    pd = pytest.importorskip("pandas")
    import catboost
    import lightgbm
    import skops.io
    import xgboost
    from sklearn.linear_model import LogisticRegression

    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    np.save(folder / "x.npy", X[:12])
    np.savez(folder / "x.npz", X=X[:12])
    frame = pd.DataFrame(X[:12], columns=["a", "b", "c", "d"])
    frame.to_csv(folder / "x.csv", index=False)
    frame.to_parquet(folder / "x.parquet")
    xgboost.XGBClassifier(n_estimators=6, max_depth=3).fit(X, y).get_booster().save_model(
        folder / "m.json")
    lightgbm.LGBMRegressor(n_estimators=6, verbose=-1).fit(X, y.astype(float)).booster_.save_model(
        folder / "m.txt")
    catboost.CatBoostClassifier(iterations=6, verbose=False, allow_writing_files=False).fit(
        X, y).save_model(str(folder / "m.cbm"))
    logreg = LogisticRegression().fit(X, y)
    skops.io.dump(logreg, folder / "m.skops")
    import pickle

    (folder / "m.pkl").write_bytes(pickle.dumps(logreg))
    return folder


@pytest.mark.parametrize(("source", "sample"), [
    ("m.json", "x.npy"), ("m.txt", "x.csv"), ("m.cbm", "x.parquet"), ("m.skops", "x.npz"),
])
def test_convert_saved_models(tabular_files: Path, source: str, sample: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tabular_files / f"{source}.onnx"
    assert main(["convert", str(tabular_files / source), "--sample", str(tabular_files / sample),
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "parity passed" in text and out.exists()
    import onnxbridge

    m = onnxbridge.load(out)
    assert m.parity is not None and m.parity.passed
    assert m.metadata["onnxbridge.converter"] in {"xgboost", "lightgbm", "catboost", "sklearn"}


def test_pickles_need_trust(tabular_files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["convert", str(tabular_files / "m.pkl"), "--sample", str(tabular_files / "x.npy"),
            "-o", str(tabular_files / "p.onnx")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "runs any code" in err and "--trust" in err
    assert not (tabular_files / "p.onnx").exists()
    assert main([*args, "--trust", "--quiet"]) == 0
    assert capsys.readouterr().out == ""  # --quiet
    assert (tabular_files / "p.onnx").exists()


def test_check_passes_and_fails(tabular_files: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import make_scale_model

    from onnxbridge.runtime import runtime_support

    good = OnnxModel(make_scale_model()).save(tmp_path / "good.onnx")
    assert main(["check", str(good)]) == 0
    text = capsys.readouterr().out
    assert "ok   onnx.checker (full)" in text and "ok   run on a generated input: y [2, 3]" in text
    too_new = OnnxModel(make_scale_model(opset=runtime_support().opsets[""] + 1)).save(tmp_path / "new.onnx")
    assert main(["check", str(too_new)]) == 1
    assert "FAIL onnxruntime" in capsys.readouterr().out


def test_bench_table_csv_and_plot(tmp_path: Path, scale_model: onnx.ModelProto,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = OnnxModel(scale_model).save(tmp_path / "m.onnx")
    args = ["bench", str(path), "--batch", "1,4", "--seconds", "0.05", "--csv",
            str(tmp_path / "b.csv"), "--quiet"]
    pytest.importorskip("matplotlib")
    args += ["--plot", str(tmp_path / "b.png")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| CPUExecutionProvider | 4 |" in text and "p99 ms" in text
    lines = (tmp_path / "b.csv").read_text().splitlines()
    assert lines[0].startswith("provider,batch,runs,p50_ms") and len(lines) == 3
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["bench", str(path), "--batch", "0"]) == 1


def test_every_command_has_help_with_an_example() -> None:
    for command in ["demo", "convert", "info", "check", "run", "bench", "view", "providers",
                    "converters"]:
        proc = subprocess.run([sys.executable, "-m", "onnxbridge", command, "--help"],
                              capture_output=True, text=True)
        assert proc.returncode == 0 and "Example:" in proc.stdout, command


def test_progress_is_quiet_when_not_a_terminal(tabular_files: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "onnxbridge", "convert", str(tabular_files / "m.json"), "--sample",
         str(tabular_files / "x.npy"), "-o", str(tabular_files / "q.onnx")],
        capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == ""


def test_progress_shows_on_a_terminal(tabular_files: Path) -> None:
    import os
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.run(
        [sys.executable, "-m", "onnxbridge", "convert", str(tabular_files / "m.txt"), "--sample",
         str(tabular_files / "x.npy"), "-o", str(tabular_files / "t.onnx")],
        stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.returncode == 0
    assert b"converting and verifying ... done" in seen


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("torchcli")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still common
        torch.jit.save(torch.jit.script(net), str(folder / "scripted.pt"))
    x = torch.randn(3, 4)
    torch.export.save(torch.export.export(net, (x,)), str(folder / "static.pt2"))
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      str(folder / "dynamic.pt2"))
    torch.save(net.state_dict(), folder / "weights.pth")
    np.save(folder / "x.npy", x.numpy())
    return folder


@pytest.mark.parametrize(("source", "extra", "batches"), [
    ("scripted.pt", ["--trust"], [1, 3]), ("dynamic.pt2", [], [1, 3]),
    ("static.pt2", ["--fixed-batch"], [3]),
])
def test_convert_torch_files(torch_files: Path, source: str, extra: list[str],
                             batches: list[int]) -> None:
    import onnxbridge

    out = torch_files / f"{source}.onnx"
    assert main(["convert", str(torch_files / source), "-s", str(torch_files / "x.npy"), "-o",
                 str(out), "--quiet", *extra]) == 0
    m = onnxbridge.load(out)
    assert m.parity is not None and m.parity.passed and m.parity.batch_sizes == batches


def test_torch_files_that_cannot_convert_say_why(torch_files: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import onnxbridge

    base = ["-s", str(torch_files / "x.npy"), "-o", str(torch_files / "no.onnx")]
    # A program exported with a fixed batch is converted at that batch (as --fixed-batch does),
    # saying so, and another batch is refused by the ONNX model's own input check.
    with pytest.warns(UserWarning, match="sample's sizes only"):
        assert main(["convert", str(torch_files / "static.pt2"), *base]) == 0
    m = onnxbridge.load(torch_files / "no.onnx")
    assert m.parity is not None and m.parity.batch_sizes == [3]
    assert any("kept at the sample's size" in n for n in m.parity.notes)
    with pytest.raises(InputError, match="axis 0 must be 3"):
        m.run(np.zeros((1, 4), np.float32))
    (torch_files / "no.onnx").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert main(["convert", str(torch_files / "weights.pth"), *base, "--trust"]) == 1
    assert "not a TorchScript archive" in capsys.readouterr().err


def test_view_writes_a_self_contained_page(tmp_path: Path, scale_model: onnx.ModelProto,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = OnnxModel(scale_model).save(tmp_path / "m.onnx")
    out = tmp_path / "m.html"
    assert main(["view", str(path), "--html", "--out", str(out), "--no-browser"]) == 0
    page = out.read_text()
    assert "<svg" in page and "Mul" in page and "http" not in page.split("<svg", 1)[0].lower()


def test_view_serves_netron_on_localhost(tmp_path: Path, scale_model: onnx.ModelProto) -> None:
    pytest.importorskip("netron")
    import socket
    import urllib.request

    path = OnnxModel(scale_model).save(tmp_path / "m.onnx")
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "onnxbridge", "view", str(path), "--serve",
                             "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"localhost:{port}" in line or f"127.0.0.1:{port}" in line, line
        url = line.split(" at ", 1)[1].split()[0]
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200 and b"netron" in response.read().lower()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- issue 16, round 3: outputs that are not plain tensors, models without inputs --------------
def test_run_writes_maps_and_strings_without_pickles(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """ZipMap's probabilities (a map per row) and string labels used to go into the .npz as
    pickled objects, which np.load refuses by default (and `run -i` always)."""
    pytest.importorskip("skl2onnx")
    from onnx import TensorProto, helper
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.random((40, 4)).astype(np.float32)
    labels = np.where(X[:, 0] > 0.5, "yes", "no")
    clf = LogisticRegression().fit(X, labels)
    path = tmp_path / "zipmap.onnx"
    path.write_bytes(to_onnx(clf, X[:1]).SerializeToString())  # skl2onnx's default: ZipMap
    np.save(tmp_path / "x.npy", X[:5])
    assert main(["run", str(path), "-i", str(tmp_path / "x.npy"), "-o",
                 str(tmp_path / "y.npz")]) == 0
    assert "as a [5, 2] array" in capsys.readouterr().out
    with np.load(tmp_path / "y.npz") as y:  # allow_pickle=False, numpy's default
        assert y["output_label"].tolist() == clf.predict(X[:5]).tolist()
        assert y["output_probability.keys"].tolist() == clf.classes_.tolist()
        np.testing.assert_allclose(y["output_probability"], clf.predict_proba(X[:5]), atol=1e-5)
    graph = helper.make_graph(  # a sequence of two tensors out
        [helper.make_node("SequenceConstruct", ["x", "x"], ["s"])], "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)])
    seq = OnnxModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    seq_path = seq.save(tmp_path / "seq.onnx")
    np.save(tmp_path / "v.npy", np.array([1.0, 2.0], np.float32))
    assert main(["run", str(seq_path), "-i", str(tmp_path / "v.npy"), "-o",
                 str(tmp_path / "s.npz")]) == 0
    with np.load(tmp_path / "s.npz") as s:
        np.testing.assert_array_equal(s["s"], [[1.0, 2.0], [1.0, 2.0]])
    capsys.readouterr()
    assert main(["check", str(seq_path)]) == 0  # "s []" read as an empty shape
    assert "s: a sequence of 2 tensors" in capsys.readouterr().out


def test_run_a_model_without_inputs_needs_no_input_file(
    tmp_path: Path, scale_model: onnx.ModelProto, capsys: pytest.CaptureFixture[str]
) -> None:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["y"],
                          value=numpy_helper.from_array(np.array([4.0, 2.0], np.float32)))],
        "const", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = OnnxModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])).save(
        tmp_path / "const.onnx")
    assert main(["run", str(path)]) == 0
    assert "[4. 2.]" in capsys.readouterr().out
    assert main(["info", str(path)]) == 0
    assert "inputs:  none (the model computes its outputs alone)" in capsys.readouterr().out
    needs = OnnxModel(scale_model).save(tmp_path / "m.onnx")
    assert main(["run", str(needs)]) == 1
    assert "takes input(s) x: give them with --input FILE" in capsys.readouterr().err
