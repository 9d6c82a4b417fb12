"""Models whose weights live in external files, models over 2 GB, and dtype= (issue 13).

The logic runs on tiny models with external data forced (``external_data=True``); two slow tests
take a model over 2 GB through every step, compared with PyTorch and with torch.onnx.export's
own file. Large files go to a temporary folder removed at the end of each test.
"""

from __future__ import annotations

import fcntl
import gc
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxbridge
from onnxbridge import OnnxBridgeWarning, OnnxModel
from onnxbridge._files import has_external_data, load_proto
from onnxbridge.cli import main
from onnxbridge.registry import model_fingerprint

torch = pytest.importorskip("torch")


def mlp(width: int = 64, layers: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)]).eval()


def reference(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).float().numpy()


def test_forced_external_data_keeps_weights_in_files_end_to_end(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    model = mlp()
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    m = onnxbridge.to_onnx(model, torch.from_numpy(x), external_data=True)
    assert m.data_dir is not None and has_external_data(m.proto)  # the proto holds no weights
    assert m.parity is not None and m.parity.passed
    np.testing.assert_allclose(m.run(x), reference(model, x), rtol=1e-4, atol=1e-5)
    assert "in external data" in repr(m) and "in external data" in m._repr_html_()
    temporary = m.data_dir
    path = m.save(tmp_path / "m.onnx")  # weights in files: saved as model + data file
    assert len(list(tmp_path.glob("m.onnx.*.data"))) == 1
    # The converter's data file was moved there, not copied: the model now uses the saved
    # files (as if loaded from them) and its temporary folder is gone.
    assert m.data_dir == tmp_path and not temporary.exists()
    np.testing.assert_allclose(onnxbridge.OnnxModel(m.proto, data_dir=m.data_dir).run(x),
                               reference(model, x), rtol=1e-4, atol=1e-5)
    whole = onnxbridge.load(m.to_bytes())  # under 2 GB the bytes carry the weights
    np.testing.assert_allclose(whole.run(x), reference(model, x), rtol=1e-4, atol=1e-5)
    # Loaded with a threshold of 0 the weights stay in the file; onnxruntime reads them there.
    proto, folder = load_proto(path, keep_external_above=0)
    kept = OnnxModel(proto, data_dir=folder)
    np.testing.assert_allclose(kept.run(x), reference(model, x), rtol=1e-4, atol=1e-5)
    kept.save(tmp_path / "again.onnx")
    kept.save(tmp_path / "whole.onnx", external_data=False)  # weights read in: one file
    assert not has_external_data(onnx.load_model(str(tmp_path / "whole.onnx"), load_external_data=False))
    np.testing.assert_allclose(onnxbridge.load(tmp_path / "whole.onnx").run(x),
                               reference(model, x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(onnxbridge.load(tmp_path / "again.onnx").run(x),
                               reference(model, x), rtol=1e-4, atol=1e-5)
    with pytest.raises(onnxbridge.LoadError, match="base_dir"):
        onnxbridge.load(path.read_bytes())
    np.testing.assert_allclose(onnxbridge.load(path.read_bytes(), base_dir=tmp_path).run(x),
                               reference(model, x), rtol=1e-4, atol=1e-5)
    assert main(["check", str(path)]) == 0
    assert main(["info", str(path)]) == 0
    capsys.readouterr()
    unsaved = onnxbridge.to_onnx(model, torch.from_numpy(x), external_data=True, verify=False)
    folder_of_m = unsaved.data_dir
    del unsaved
    gc.collect()
    assert not folder_of_m.exists()  # the converted model's temporary folder goes with it


def test_verification_lends_the_modules_own_weights_to_onnxruntime() -> None:
    """The weights are held once while verifying: the session computes with the module's memory."""
    from onnxbridge._api import _verify_session
    from onnxbridge.plugins._torch_export import convert_module
    from onnxbridge.registry import ConvertOptions

    model = mlp(width=128, layers=2)
    x = np.random.default_rng(1).standard_normal((2, 128)).astype(np.float32)
    result = convert_module(model, torch.from_numpy(x),
                            ConvertOptions(options={"external_data": True}))
    params = {name: p.detach().numpy() for name, p in model.named_parameters()}
    names = {t.name for t in result.proto.graph.initializer}
    assert set(params) <= names and set(result.shared_weights) == set(params)
    for name, array in result.shared_weights.items():  # views of the parameters, not copies
        assert np.shares_memory(array, params[name])
    m = OnnxModel(result.proto, data_dir=result.data_dir, data_owner=result.data_owner)
    session = _verify_session(m, result)
    before = session.run(None, {m.inputs[0].name: x})[0]
    np.testing.assert_allclose(before, reference(model, x), rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # onnxruntime made no copy: a change in place shows in its output
        model[0].weight.mul_(2.0)
    after = session.run(None, {m.inputs[0].name: x})[0]
    assert not np.allclose(after, before, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(after, reference(model, x), rtol=1e-4, atol=1e-5)
    # The model's own sessions read the data file, written before the change.
    np.testing.assert_allclose(m.run(x), before, rtol=1e-5, atol=1e-6)


def test_fingerprint_sees_in_place_changes_without_copying_weights() -> None:
    model = mlp(width=1024, layers=1)  # a 4 MiB weight: fingerprinted by its version counter
    before = model_fingerprint(model)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert model_fingerprint(model) != before
    small = mlp(width=8, layers=1)  # small tensors are hashed byte by byte
    before = model_fingerprint(small)
    with torch.no_grad():
        small[0].bias.data[0] += 1.0  # .data bypasses the version counter
    assert model_fingerprint(small) != before


@pytest.mark.parametrize("source", [torch.float32, torch.bfloat16])
def test_dtype_float16_exports_half_weights_with_float32_edges(source: torch.dtype) -> None:
    model = mlp().to(source)
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    m = onnxbridge.to_onnx(model, torch.from_numpy(x), dtype="float16")
    weights = [t for t in m.proto.graph.initializer if len(t.dims) == 2]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert {t.name for t in weights} == {"0.weight", "1.weight", "2.weight"}  # the source's names
    assert m.inputs[0].dtype == np.float32 and m.outputs[0].dtype == np.float32
    assert m.parity is not None and m.parity.passed
    assert "atol=0.05" in str(m.parity) if source == torch.bfloat16 else "atol=0.01" in str(m.parity)
    assert any("weights exported as float16" in n for n in m.parity.notes)
    expected = reference(model, x.astype(np.float32)) if source == torch.float32 else \
        model(torch.from_numpy(x).to(source)).float().detach().numpy()
    np.testing.assert_allclose(m.run(x), expected, atol=2e-2, rtol=2e-2)
    assert next(model.parameters()).dtype == source  # the user's model is untouched


def test_bfloat16_model_exported_as_float32_runs_on_cpu() -> None:
    model = mlp().to(torch.bfloat16)
    x = np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32)
    m = onnxbridge.to_onnx(model, torch.from_numpy(x), dtype="float32")
    assert m.parity is not None and m.parity.passed
    with torch.no_grad():
        expected = model(torch.from_numpy(x).bfloat16()).float().numpy()
    np.testing.assert_allclose(m.run(x), expected, atol=5e-2, rtol=5e-2)


def test_bfloat16_weights_on_cpu_say_what_to_do() -> None:
    x = torch.randn(2, 64)
    with pytest.raises(onnxbridge.OnnxBridgeError, match="dtype='float32'"):
        onnxbridge.to_onnx(mlp(), x, dtype="bfloat16")
    with pytest.raises(onnxbridge.ConversionError, match="is not one of"):
        onnxbridge.to_onnx(mlp(), x, dtype="int8")


# -- over 2 GB -----------------------------------------------------------------------------------
WIDTH, LAYERS = 8192, 9  # 9 x 8192 x 8192 float32 = 2.4 GB of weights


def big_model() -> torch.nn.Module:
    layers = []
    gen = torch.Generator().manual_seed(0)
    for _ in range(LAYERS):
        layer = torch.nn.Linear(WIDTH, WIDTH, bias=True)
        with torch.no_grad():  # random weights, scaled so activations stay around 1
            layer.weight.copy_(torch.randn(WIDTH, WIDTH, generator=gen) / WIDTH**0.5)
            layer.bias.zero_()
        layers.append(layer)
    return torch.nn.Sequential(*layers).eval()


@pytest.fixture
def one_large_at_a_time() -> Iterator[None]:
    """The two tests over 2 GB never run at once (pytest-xdist workers), to bound memory."""
    with open("/tmp/onnxbridge-large-tests.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.mark.slow
@pytest.mark.usefixtures("one_large_at_a_time")
def test_over_2gb_to_onnx_save_load_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = big_model()
    x = np.random.default_rng(0).standard_normal((2, WIDTH)).astype(np.float32)
    expected = reference(model, x)
    m = onnxbridge.to_onnx(model, torch.from_numpy(x))
    assert m.parity is not None and m.parity.passed
    assert "GiB" in repr(m) and "GiB" in m._repr_html_()
    path = m.save(tmp_path / "big.onnx")
    del m
    gc.collect()
    (data,) = tmp_path.glob("big.onnx.*.data")
    assert data.stat().st_size > 2**31 and path.stat().st_size < 2**20
    del model
    gc.collect()
    loaded = onnxbridge.load(path)
    assert loaded.data_dir == tmp_path.resolve()  # the weights were not read into the proto
    np.testing.assert_allclose(loaded.run(x), expected, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="2 GB"):
        loaded.to_bytes()
    del loaded  # one session of 2.4 GB at a time: each command below makes its own
    gc.collect()
    assert main(["check", str(path)]) == 0
    assert main(["view", str(path), "--html", "--no-browser", "--out", str(tmp_path / "v.html")]) == 0
    assert main(["bench", str(path), "--batch", "1", "--seconds", "0.05", "--warmup", "1",
                 "--min-runs", "1", "-q"]) == 0
    capsys.readouterr()
    with pytest.raises(onnxbridge.LoadError, match="base_dir"):
        onnxbridge.load(path.read_bytes())


@pytest.mark.slow
@pytest.mark.usefixtures("one_large_at_a_time")
def test_loads_a_file_over_2gb_written_by_torch_onnx_export(tmp_path: Path) -> None:
    model = big_model()
    x = torch.randn(2, WIDTH)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(tmp_path / "peer.onnx"), dynamo=True,
                          external_data=True, input_names=["x"])
    with torch.no_grad():
        expected = model(x).numpy()
    del model
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error", OnnxBridgeWarning)
        m = onnxbridge.load(tmp_path / "peer.onnx")
    np.testing.assert_allclose(m.run(x.numpy()), expected, rtol=1e-3, atol=1e-3)
    assert "GiB" in repr(m)
