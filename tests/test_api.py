"""to_onnx, load, save and OnnxModel, with real onnx and onnxruntime."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_scale_model

import onnxbridge
from onnxbridge import ConverterSpec, LoadError, OnnxBridgeWarning, OnnxModel, ParityError
from onnxbridge.registry import Registry


@pytest.fixture
def fake_converted(fake_env: Path, isolated_registry: Registry) -> OnnxModel:
    import fakefw

    onnxbridge.register(
        ConverterSpec(name="fake", classes=("fakefw.Base",), converter="fakeplugin:convert",
                      framework="fakefw")
    )
    return onnxbridge.to_onnx(fakefw.Child(3.0), np.ones((1, 4), np.float32), name="tripler")


def test_to_onnx_verifies_on_sample_and_second_batch(fake_converted: OnnxModel) -> None:
    m = fake_converted
    assert m.parity is not None and m.parity.passed
    assert m.parity.batch_sizes == [1, 3]  # a batch-1 sample is also checked at batch 3
    assert m.name == "tripler"
    np.testing.assert_allclose(m.run(np.ones((5, 4), np.float32)), np.full((5, 4), 3.0))


def test_verification_runs_on_the_cpu_provider_whatever_run_uses(
    fake_env: Path, isolated_registry: Registry
) -> None:
    import fakefw
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("needs an onnxruntime build without CUDA")
    onnxbridge.register(ConverterSpec(name="fake", classes=("fakefw.Base",),
                                      converter="fakeplugin:convert", framework="fakefw"))
    onnxbridge.set_default_providers("cuda")  # run() would refuse: CUDA is not in this build
    try:
        m = onnxbridge.to_onnx(fakefw.Child(3.0), np.ones((2, 4), np.float32))
        assert m.parity is not None and m.parity.passed
        assert m.parity.provider == "CPUExecutionProvider"
        assert "(ONNX side on CPUExecutionProvider)" in str(m.parity)
        with pytest.raises(onnxbridge.ProviderError, match="not in this onnxruntime build"):
            m.run(np.ones((2, 4), np.float32))
    finally:
        onnxbridge.set_default_providers(None)
    loaded = onnxbridge.load(m.to_bytes())
    assert loaded.parity is not None and loaded.parity.provider == "CPUExecutionProvider"


def test_provenance_metadata(fake_converted: OnnxModel) -> None:
    meta = fake_converted.metadata
    assert meta["onnxbridge.converter"] == "fake"
    assert meta["onnxbridge.framework"] == "fakefw"
    assert meta["onnxbridge.version"] == onnxbridge.__version__
    assert meta["onnxbridge.parity_summary"].startswith("passed")
    assert not any(os.sep + "tmp" in v or "home" in v for v in meta.values())


def test_verify_warn_and_off(fake_env: Path, isolated_registry: Registry) -> None:
    import fakefw

    onnxbridge.register(ConverterSpec(name="liar", classes=("fakefw.Base",),
                                      converter="fakeplugin:lying_convert"))
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ParityError) as info:
        onnxbridge.to_onnx(fakefw.Base(), x)
    assert not info.value.report.passed
    assert "FAIL y" in str(info.value) and "worst row" in str(info.value)
    with pytest.warns(OnnxBridgeWarning, match="parity check failed"):
        m = onnxbridge.to_onnx(fakefw.Base(), x, verify="warn")
    assert m.parity is not None and not m.parity.passed
    assert onnxbridge.to_onnx(fakefw.Base(), x, verify=False).parity is None
    # A tolerance wide enough accepts the difference of 1.0.
    assert onnxbridge.to_onnx(fakefw.Base(), x, tolerance=(1.5, 0.0)).parity.passed  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="verify must be"):
        onnxbridge.to_onnx(fakefw.Base(), x, verify="yes")  # type: ignore[arg-type]


def test_signature(scale_model: onnx.ModelProto) -> None:
    m = OnnxModel(scale_model)
    (inp,) = m.inputs
    assert (inp.name, inp.dtype, inp.shape) == ("x", np.dtype(np.float32), ("batch", 3))
    assert m.output_names == ["y"]
    assert m.opset == 17 and m.opsets == {"": 17} and m.ir_version == 8
    assert m.parameter_count() == 3
    assert m.operator_histogram() == {"Mul": 1}
    text = repr(m)
    assert "x: float32 [batch, 3]" in text and "ai.onnx 17" in text
    html = m._repr_html_()
    assert "<table" in html and "float32 [batch, 3]" in html


# -- save and load ---------------------------------------------------------------------------
def test_round_trip_keeps_every_byte(tmp_path: Path, scale_model: onnx.ModelProto) -> None:
    m = OnnxModel(scale_model)
    path = m.save(tmp_path / "m.onnx")
    assert path.read_bytes() == scale_model.SerializeToString()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temp files left
    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes()), scale_model):
        loaded = onnxbridge.load(source)
        assert loaded.to_bytes() == scale_model.SerializeToString()
    with open(path, "rb") as f:
        assert onnxbridge.load(f).output_names == ["y"]


def test_external_data_round_trip(tmp_path: Path) -> None:
    w = np.random.default_rng(0).random(4096).astype(np.float32)
    proto = make_scale_model(w, features=4096)
    before = proto.SerializeToString()
    m = OnnxModel(proto)
    m.save(tmp_path / "big.onnx", external_data=True)
    assert proto.SerializeToString() == before  # the caller's model is untouched
    datas = list(tmp_path.glob("big.onnx.*.data"))
    assert len(datas) == 1 and datas[0].stat().st_size >= w.nbytes
    assert (tmp_path / "big.onnx").stat().st_size < w.nbytes
    # Saving again writes a new data file and removes the old one: no orphaned bytes.
    m.save(tmp_path / "big.onnx", external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir())[0] == "big.onnx"
    assert len(list(tmp_path.glob("big.onnx.*.data"))) == 1 and not datas[0].exists()
    loaded = onnxbridge.load(tmp_path / "big.onnx")
    x = np.ones((2, 4096), np.float32)
    np.testing.assert_array_equal(loaded.run(x), x * w)
    # Bytes that refer to external data need base_dir; with it they load.
    raw = (tmp_path / "big.onnx").read_bytes()
    with pytest.raises(LoadError, match="base_dir"):
        onnxbridge.load(raw)
    np.testing.assert_array_equal(onnxbridge.load(raw, base_dir=tmp_path).run(x), x * w)


def test_failed_save_leaves_previous_file_intact(
    tmp_path: Path, scale_model: onnx.ModelProto, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = OnnxModel(scale_model).save(tmp_path / "m.onnx")
    good = path.read_bytes()
    other = OnnxModel(make_scale_model(np.zeros(3, np.float32)))

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        other.save(path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_save_errors(tmp_path: Path, scale_model: onnx.ModelProto) -> None:
    m = OnnxModel(scale_model)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        m.save(tmp_path / "missing" / "m.onnx")
    with pytest.raises(ValueError, match="is a directory"):
        m.save(tmp_path)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p / "nope.onnx", "no such model file"),
        (lambda p: p, "is a directory"),
        (lambda p: _write(p / "empty.onnx", b""), "empty"),
        (lambda p: _write(p / "junk.onnx", b"\xff\xfe not protobuf at all \x00\x01" * 10),
         "not an ONNX model"),
        (lambda p: _write(p / "half.onnx", make_scale_model().SerializeToString()[:40]),
         "not an ONNX model"),
    ],
)
def test_load_errors_name_the_source(tmp_path: Path, make, match: str) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    with pytest.raises(LoadError, match=match) as info:
        onnxbridge.load(path)
    assert str(path) in str(info.value) or "empty" in match
    assert isinstance(info.value, ValueError)


def test_load_rejects_other_types_and_text_streams() -> None:
    with pytest.raises(LoadError, match="cannot load a model from a int"):
        onnxbridge.load(42)
    with pytest.raises(LoadError, match="binary mode"):
        onnxbridge.load(io.StringIO("hello"))
    with pytest.raises(LoadError, match="cap"):
        onnxbridge.load(make_scale_model().SerializeToString(), max_bytes=10)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_provenance_signature_and_parity_survive_save_and_load(
    fake_converted: OnnxModel, tmp_path: Path
) -> None:
    import json

    meta = fake_converted.metadata
    assert meta["onnxbridge.opset"] == "17" and meta["onnxbridge.ir_version"] == "8"
    assert json.loads(meta["onnxbridge.inputs"]) == [
        {"name": "x", "type": "tensor(float)", "shape": ["batch", 4]}]
    loaded = onnxbridge.load(fake_converted.save(tmp_path / "m.onnx"))
    assert loaded.metadata == meta
    assert loaded.parity is not None and loaded.parity.passed
    # Read back from the file it is a claim made at conversion, shown as such.
    assert loaded.parity.recorded and not fake_converted.parity.recorded  # type: ignore[union-attr]
    assert loaded.parity.summary() == (  # type: ignore[union-attr]
        "recorded at conversion (not re-checked here): " + fake_converted.parity.summary())  # type: ignore[union-attr]
    assert "parity: recorded at conversion (not re-checked here): passed" in repr(loaded)


def test_model_too_new_for_onnxruntime_is_named_clearly(tmp_path: Path) -> None:
    from onnxbridge.runtime import runtime_support

    support = runtime_support()
    too_new = make_scale_model(opset=support.opsets[""] + 1)
    path = OnnxModel(too_new).save(tmp_path / "new.onnx")
    with pytest.raises(LoadError, match=rf"opset {support.opsets[''] + 1} .*up to"
                                        rf" {support.opsets['']}.*opset=N") as info:
        onnxbridge.load(path)  # refused at load, before any session of the model
    assert support.version in str(info.value) and "Upgrade onnxruntime" in str(info.value)
    assert f"model {str(path)!r} needs a newer onnxruntime" in str(info.value)
    m = onnxbridge.load(path, check_runtime=False)  # inspecting is still possible
    assert m.opset == support.opsets[""] + 1
    with pytest.raises(LoadError, match=rf"opset {support.opsets[''] + 1} .*up to"):
        m.run(np.ones((1, 3), np.float32))  # and the session's refusal is explained the same way
    newer_ir = make_scale_model()
    newer_ir.ir_version = support.ir_version + 1
    with pytest.raises(LoadError, match=f"IR version {support.ir_version + 1}"):
        onnxbridge.load(newer_ir)
    with pytest.raises(LoadError, match=f"IR version {support.ir_version + 1}"):
        onnxbridge.load(newer_ir, check_runtime=False).session()


def test_runtime_support_is_measured_not_guessed() -> None:
    from onnxbridge.runtime import _accepts, runtime_support

    support = runtime_support()
    assert support.opsets[""] >= 17 and support.ir_version >= 8
    assert _accepts(support.opsets[""], 8, "") and not _accepts(support.opsets[""] + 1, 8, "")


def test_opset_choice(fake_env: Path, isolated_registry: Registry) -> None:
    from onnxbridge import ConvertOptions

    assert ConvertOptions(max_opset=21).target_opset(23) == 21
    assert ConvertOptions(max_opset=25).target_opset(23) == 23
    assert ConvertOptions(opset=15, max_opset=25).target_opset(23) == 15
    import fakefw

    onnxbridge.register(ConverterSpec(name="fake", classes=("fakefw.Base",), converter="fakeplugin:convert"))
    with pytest.raises(ValueError, match="opset must be a positive int"):
        onnxbridge.to_onnx(fakefw.Base(), np.ones((1, 4), np.float32), opset=0)


def test_classifier_labels_are_recorded(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    import json

    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 3)).astype(np.float32)
    y = np.array(["cat", "dog", "eel"])[np.arange(30) % 3]
    m = onnxbridge.to_onnx(LogisticRegression().fit(X, y), X)
    loaded = onnxbridge.load(m.save(tmp_path / "c.onnx"))
    assert json.loads(loaded.metadata["onnxbridge.classes"]) == ["cat", "dog", "eel"]
