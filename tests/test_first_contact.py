"""Frictions a new user met (issue 16): the CLI, messages and noise, tried as users try them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxbridge import OnnxModel


def gather_model() -> onnx.ModelProto:
    """out = table[idx]: a good model that random indices (0..9) do not fit (3 rows)."""
    table = np.arange(6, dtype=np.float32).reshape(3, 2)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["out"], axis=0)], "lookup",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run_cli(*args: str, timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onnxbridge", *args], capture_output=True,
                          text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]


# -- check ---------------------------------------------------------------------------------------
def test_check_does_not_fail_a_good_model_on_generated_data(tmp_path: Path) -> None:
    path = OnnxModel(gather_model()).save(tmp_path / "lookup.onnx")
    proc = _run_cli("check", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout
    assert "could not exercise the model with generated data" in proc.stdout
    assert "-i inputs.npz" in proc.stdout
    assert "ok   onnxruntime session" in proc.stdout


def test_check_runs_on_real_inputs(tmp_path: Path) -> None:
    path = OnnxModel(gather_model()).save(tmp_path / "lookup.onnx")
    np.savez(tmp_path / "good.npz", idx=np.array([0, 2, 1], np.int64))
    proc = _run_cli("check", str(path), "-i", str(tmp_path / "good.npz"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ok   run on {tmp_path / 'good.npz'}: out [3, 2]" in proc.stdout
    # Real inputs that do not fit are the user's claim about the model: a failure.
    np.savez(tmp_path / "bad.npz", idx=np.array([7], np.int64))
    proc = _run_cli("check", str(path), "-i", str(tmp_path / "bad.npz"))
    assert proc.returncode == 1 and "FAIL run on" in proc.stdout


def test_check_fails_a_model_onnxruntime_cannot_run(tmp_path: Path) -> None:
    # An operator of a domain onnxruntime does not implement: its IR version and opsets pass.
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    path.write_bytes(proto.SerializeToString())
    proc = _run_cli("check", str(path))
    assert proc.returncode == 1 and "FAIL onnxruntime session" in proc.stdout, proc.stdout
    # info says only what it checked: the IR version and opsets, not "can load it".
    proc = _run_cli("info", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "can load it" not in proc.stdout
    assert "supports its IR version and opsets (operators not checked" in proc.stdout


# -- run, view, bare command ---------------------------------------------------------------------
def test_run_into_a_closed_pipe_ends_quietly(tmp_path: Path, scale_model: onnx.ModelProto) -> None:
    path = OnnxModel(scale_model).save(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.ones((4, 3), np.float32))
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line, as `| head -0` leaves it
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "onnxbridge", "run", str(path), "-i", str(tmp_path / "x.npy")],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_view_no_browser_returns_with_netron_installed(tmp_path: Path,
                                                       scale_model: onnx.ModelProto) -> None:
    pytest.importorskip("netron")
    path = OnnxModel(scale_model).save(tmp_path / "m.onnx")
    try:
        proc = _run_cli("view", str(path), "--no-browser", "--port", "0", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("onnxbridge view --no-browser did not return")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m.html").read_text(encoding="utf-8").count("<svg") >= 1


def test_bare_command_prints_help() -> None:
    proc = _run_cli()
    assert proc.returncode == 0 and proc.stderr == ""
    for command in ("convert", "check", "run", "view"):
        assert command in proc.stdout


def test_parity_summary_counts_in_words() -> None:
    from onnxbridge.verify import OutputParity, ParityReport

    row = OutputParity(name="y", kind="value", batch=2, shape=(2, 3), dtype="float32", max_abs=0.0,
                       max_rel=0.0, atol=1e-4, rtol=1e-3, tolerance_reason="float32",
                       worst_row=None, label_agreement=None, passed=True)
    one = ParityReport(outputs=[row])
    assert one.summary().startswith("passed: 1 output on batches [2]")


# -- convert: torch files ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torch_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("torch-sources")
    model = torch.nn.Linear(4, 2).eval()
    torch.export.save(torch.export.export(model, (torch.randn(2, 4),)), str(folder / "static.pt2"))
    with pytest.warns(FutureWarning):  # torch's own deprecation, which convert must not repeat
        torch.jit.save(torch.jit.trace(model, torch.randn(2, 4)), str(folder / "traced.pt"))
    np.save(folder / "x2.npy", np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32))
    np.save(folder / "x3.npy", np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32))
    return folder


@pytest.mark.slow
def test_static_program_with_another_batch_size_gets_the_hint(torch_sources: Path) -> None:
    proc = _run_cli("convert", str(torch_sources / "static.pt2"), "-s",
                    str(torch_sources / "x3.npy"), "-o", str(torch_sources / "s.onnx"), timeout=300)
    assert proc.returncode == 1
    assert "Guard failed" in proc.stderr and "--fixed-batch" in proc.stderr
    assert "exported for fixed input sizes" in proc.stderr


@pytest.mark.slow
def test_converting_torchscript_prints_no_torch_deprecation(torch_sources: Path) -> None:
    proc = _run_cli("convert", str(torch_sources / "traced.pt"), "--trust", "-s",
                    str(torch_sources / "x2.npy"), "-o", str(torch_sources / "t.onnx"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "FutureWarning" not in proc.stderr and "deprecated" not in proc.stderr, proc.stderr


# -- PyTorch opset= ------------------------------------------------------------------------------
def _small_torch_model() -> object:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()


@pytest.mark.slow
@pytest.mark.parametrize("opset", [13, 17, 21])
def test_torch_opset_is_honoured(opset: int) -> None:
    import torch

    import onnxbridge

    m = onnxbridge.to_onnx(_small_torch_model(), torch.randn(2, 4), opset=opset)
    written = [o.version for o in m.proto.opset_import if o.domain in ("", "ai.onnx")]
    assert written == [opset] and m.parity is not None and m.parity.passed


@pytest.mark.slow
def test_torchscript_exporter_at_opset_7() -> None:
    import torch

    import onnxbridge

    m = onnxbridge.to_onnx(_small_torch_model(), torch.randn(2, 4), opset=7, exporter="torchscript")
    assert m.opset == 7 and m.parity is not None and m.parity.passed


@pytest.mark.parametrize(("opset", "exporter", "newest"), [
    (99, "auto", "ONNX_MAX_OPSET"), (21, "torchscript", "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET")])
def test_torch_opset_out_of_range_is_refused_with_the_range(opset: int, exporter: str,
                                                            newest: str) -> None:
    import torch

    import onnxbridge

    newest = str(getattr(torch.onnx._constants, newest))  # what torch says it writes

    with pytest.raises(onnxbridge.ConversionError, match=rf"opset={opset} is outside .* 7 to {newest}"):
        onnxbridge.to_onnx(_small_torch_model(), torch.randn(2, 4), opset=opset, exporter=exporter)


# -- onnxruntime's own log lines -----------------------------------------------------------------
def test_run_errors_and_check_print_no_onnxruntime_log_lines(tmp_path: Path) -> None:
    path = OnnxModel(gather_model()).save(tmp_path / "lookup.onnx")
    script = (
        "import numpy as np, onnxbridge\n"
        f"m = onnxbridge.load({str(path)!r})\n"
        "try:\n"
        "    m.run(np.array([7], np.int64))\n"
        "except Exception as exc:\n"
        "    print('raised', type(exc).__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert "raised" in proc.stdout, proc.stdout + proc.stderr
    assert "onnxruntime:" not in proc.stderr and "\x1b[" not in proc.stderr, proc.stderr
    proc = _run_cli("check", str(path))
    assert "onnxruntime:" not in proc.stderr and "\x1b[" not in proc.stderr, proc.stderr


# -- two inputs sharing a batch axis -------------------------------------------------------------
def two_input_model() -> onnx.ModelProto:
    """y = a + b, both [batch, 3]."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "add",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 3]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("form", ["positional", "keywords", "dict", "float64 (cast)"])
def test_inputs_sharing_the_batch_axis_with_different_sizes(form: str) -> None:
    from onnxbridge import InputError

    m = OnnxModel(two_input_model())
    a, b = np.ones((2, 3), np.float32), np.ones((3, 3), np.float32)
    if form == "float64 (cast)":  # the slow path: to_feeds
        a, b = a.astype(np.float64), b.astype(np.float64)
    call = {"positional": lambda: m.run(a, b), "keywords": lambda: m.run(a=a, b=b),
            "dict": lambda: m.run({"a": a, "b": b}), "float64 (cast)": lambda: m.run(a, b)}[form]
    with pytest.raises(InputError, match=r"share the axis 'batch'.*2 for 'a'; 3 for 'b'"):
        call()
    # The same sizes run, and give what numpy gives.
    np.testing.assert_array_equal(m.run({"a": a[:2], "b": b[:2]}), (a[:2] + b[:2]).astype(np.float32))


def test_dict_input_takes_the_fast_path_and_matches() -> None:
    m = OnnxModel(two_input_model())
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 0.5, np.float32)
    checks = m._input_checks()
    from onnxbridge.io import plain_feeds

    feeds = plain_feeds(checks, ({"a": a, "b": b},), {})
    assert feeds is not None and feeds["a"] is a and feeds["b"] is b  # no copy, no slow path
    np.testing.assert_array_equal(m.run({"a": a, "b": b}), a + b)
    np.testing.assert_array_equal(m.run({"b": b, "a": a}), a + b)


# -- vague errors at conversion and loading ------------------------------------------------------
@pytest.fixture(scope="module")
def fitted() -> tuple[object, np.ndarray]:
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    return LogisticRegression().fit(X, X[:, 0] > 0), X


def test_a_file_path_as_sample_is_named(fitted: tuple[object, np.ndarray], tmp_path: Path) -> None:
    import onnxbridge

    model, X = fitted
    np.save(tmp_path / "x.npy", X[:5])
    for sample in (str(tmp_path / "x.npy"), tmp_path / "x.npy"):
        with pytest.raises(onnxbridge.InputError, match=r"the sample is a file path.*np\.load"):
            onnxbridge.to_onnx(model, sample)


def test_no_sample_is_named(fitted: tuple[object, np.ndarray]) -> None:
    import onnxbridge

    with pytest.raises(onnxbridge.InputError, match="to_onnx needs a sample"):
        onnxbridge.to_onnx(fitted[0], None)


def test_converting_an_onnx_model_says_it_is_one(fitted: tuple[object, np.ndarray]) -> None:
    import onnxbridge

    model, X = fitted
    m = onnxbridge.to_onnx(model, X[:5])
    for already in (m, m.proto):
        with pytest.raises(onnxbridge.ConverterNotFoundError, match="already an ONNX model"):
            onnxbridge.to_onnx(already, X[:5])


def test_wrong_feature_count_is_said_in_our_words(fitted: tuple[object, np.ndarray]) -> None:
    import onnxbridge

    model, X = fitted
    with pytest.raises(onnxbridge.ConversionError, match=r"3 features .*fitted on 4") as info:
        onnxbridge.to_onnx(model, X[:5, :3])
    assert isinstance(info.value.__cause__, onnxbridge.InputError)  # as the GBDT converters do


def test_a_string_that_is_no_path_is_named_at_load(scale_model: onnx.ModelProto) -> None:
    import onnxbridge

    text = scale_model.SerializeToString().decode("latin-1")  # bytes turned into str by mistake
    with pytest.raises(onnxbridge.LoadError, match="not a path .*NUL.*bytes as bytes"):
        onnxbridge.load(text)


def test_no_feature_name_warnings_when_converting(fitted: tuple[object, np.ndarray]) -> None:
    pd = pytest.importorskip("pandas")
    import warnings

    from sklearn.linear_model import LogisticRegression

    import onnxbridge

    _, X = fitted
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    model = LogisticRegression().fit(frame, X[:, 0] > 0)  # fitted with feature names
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = onnxbridge.to_onnx(model, X[:5])  # an array sample, as users often pass
    assert m.parity is not None and m.parity.passed
    assert not [w for w in caught if "feature names" in str(w.message)], [
        str(w.message) for w in caught]


def test_bench_on_generated_data_that_does_not_fit_says_so(tmp_path: Path) -> None:
    path = OnnxModel(gather_model()).save(tmp_path / "lookup.onnx")
    proc = _run_cli("bench", str(path), "--batch", "2", "--seconds", "0.01", "--min-runs", "2")
    assert proc.returncode == 1
    assert "could not run the model on generated data" in proc.stderr and "-i inputs.npz" in proc.stderr
    assert "onnxruntime:" not in proc.stderr.split("error:", 1)[0]
    np.save(tmp_path / "idx.npy", np.array([0, 1, 2, 1], np.int64))
    proc = _run_cli("bench", str(path), "-i", str(tmp_path / "idx.npy"), "--seconds", "0.01",
                    "--min-runs", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "| CPUExecutionProvider | 4 |" in proc.stdout


def test_a_file_name_as_model_gets_the_way_to_convert_it(fitted: tuple[object, np.ndarray]) -> None:
    import onnxbridge

    with pytest.raises(onnxbridge.ConverterNotFoundError, match=r"the model is a str.*onnxbridge convert"):
        onnxbridge.to_onnx("model.pkl", fitted[1][:5])


def test_run_names_none_and_a_file_path(scale_model: onnx.ModelProto) -> None:
    import onnxbridge

    m = OnnxModel(scale_model)
    with pytest.raises(onnxbridge.InputError, match="input 'x' is None; pass an array"):
        m.run(None)
    with pytest.raises(onnxbridge.InputError, match="looks like a file path: read it first"):
        m.run("x.npy")


# -- the first load + run (issue 16, round 3) ----------------------------------------------------
COUNT_FIRST_CALL = """
import sys
import numpy as np, onnx, onnx.checker, onnxruntime
made, checked = [], []
real_session, real_check = onnxruntime.InferenceSession.__init__, onnx.checker.check_model
def counting_session(self, *args, **kwargs):
    made.append(kwargs.get("providers") or args[2:3])
    real_session(self, *args, **kwargs)
def counting_check(*args, **kwargs):
    checked.append(1)
    return real_check(*args, **kwargs)
onnxruntime.InferenceSession.__init__ = counting_session
onnx.checker.check_model = counting_check
import onnxbridge
m = onnxbridge.load(sys.argv[1])
# at most load's one version probe (a one-node model with the model's versions), no checker
assert len(made) <= 1 and not checked, ("load itself", made, checked)
y = m.run(np.array([[1.0, 2.0, 3.0]], np.float32))
assert np.allclose(y, [[1.0, 4.0, 9.0]]), y
print(len(made), len(checked))
"""


def test_first_load_and_run_make_one_session_and_run_no_checker(
    tmp_path: Path, scale_model: onnx.ModelProto
) -> None:
    """The first call used to make three sessions (a version test model, a CPU probe, the
    model's) and run onnx.checker (its schema warm-up alone ~30 ms): 4x a bare session. Now:
    the tiny version probe (so that load refuses a model too new for onnxruntime) and the
    model's own session, no CPU probe and no checker."""
    path = OnnxModel(scale_model).save(tmp_path / "m.onnx")
    cache = tmp_path / "cache" / "runtime-accepts.json"
    env = {**os.environ, "ONNXBRIDGE_RUNTIME_CACHE": str(cache)}
    counts = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", COUNT_FIRST_CALL, str(path)],
                              capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        counts.append(done.stdout.split())  # sessions made, checker runs
    # The first process probes the versions once; the next one finds them in the cache file.
    assert counts == [["2", "0"], ["1", "0"]], counts
    version = scale_model.opset_import[0].version
    assert f"ir{scale_model.ir_version} ai.onnx:{version}" in cache.read_text()


def test_checker_findings_are_worked_out_on_demand(tmp_path: Path) -> None:
    """m.checker_findings runs onnx.checker when asked (not at load), on the model as loaded."""
    import onnxbridge

    graph = helper.make_graph(  # IR 3: an initializer missing from the graph inputs
        [helper.make_node("Mul", ["X", "W"], ["Y"])], "mul_1",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])],
        initializer=[numpy_helper.from_array(np.array([2.0, 3.0], np.float32), "W")])
    odd = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    odd.ir_version = 3
    with pytest.raises(onnx.checker.ValidationError, match="not in graph input"):
        onnx.checker.check_model(odd)  # the reference: onnx's own verdict
    assert any("not in graph input" in f for f in onnxbridge.load(odd).checker_findings)
    assert onnxbridge.load(gather_model()).checker_findings == []


def test_providers_command_still_shows_the_cpu_probe() -> None:
    """run() no longer probes the CPU provider (it is always kept); `providers` still shows
    that it ran a test model."""
    done = _run_cli("providers")
    assert done.returncode == 0, done.stderr
    assert "ok   CPUExecutionProvider: ran a test model" in done.stdout
    order = next(line for line in done.stdout.splitlines() if line.startswith("run() will use"))
    assert order.endswith("CPUExecutionProvider"), order
