"""onnxbridge.Zoo: a verified local catalog (manifests, tamper checks, unconverted models)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_scale_model

import onnxbridge
from onnxbridge import LoadError, Zoo
from onnxbridge.zoo import ZooError


@pytest.fixture
def scale_model() -> onnxbridge.OnnxModel:
    return onnxbridge.load(make_scale_model())


def test_add_writes_a_manifest_with_hashes_signature_and_parity(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    model = LogisticRegression().fit(x, x[:, 0] > 0)
    src = tmp_path / "model.skops"
    src.write_bytes(b"pretend skops bytes")
    zoo = Zoo(tmp_path / "zoo")
    entry = zoo.add(model, "churn", sample=x[:5], tags=["tabular", "prod"], source=src)
    assert (entry.name, entry.version, entry.status) == ("churn", "1", "converted")
    manifest = json.loads((tmp_path / "zoo" / "churn" / "1" / "manifest.json").read_text())
    for rel in ("model.onnx", "source/model.skops"):  # hashes computed independently here
        data = (tmp_path / "zoo" / "churn" / "1" / rel).read_bytes()
        assert manifest["files"][rel] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert manifest["framework"] == "scikit-learn" and manifest["framework_version"]
    assert manifest["parity"]["passed"] is True
    assert manifest["signature"]["inputs"][0]["type"] == "tensor(float)"
    assert manifest["versions"]["onnx"] == onnx.__version__
    assert manifest["size"] == sum(f["size"] for f in manifest["files"].values())
    loaded = zoo.load("churn")
    np.testing.assert_array_equal(loaded.run(x)[0], model.predict(x))
    assert zoo.get("churn").source_path.read_bytes() == b"pretend skops bytes"


def test_versions_overwrite_and_search(tmp_path: Path, scale_model: onnxbridge.OnnxModel) -> None:
    zoo = Zoo(tmp_path)
    zoo.add(scale_model, "scale", tags=["toy"])
    zoo.add(scale_model, "scale")
    assert [e.version for e in zoo.list()] == ["1", "2"]
    assert zoo.get("scale").version == "2"
    before = (tmp_path / "scale" / "1" / "manifest.json").read_bytes()
    with pytest.raises(ZooError, match="already in the zoo.*overwrite=True"):
        zoo.add(scale_model, "scale", version="1")
    assert (tmp_path / "scale" / "1" / "manifest.json").read_bytes() == before
    zoo.add(scale_model, "scale", version="1", overwrite=True, tags=["replaced"])
    assert zoo.get("scale", "1").tags == ["replaced"]
    zoo.add(scale_model, "other", version="10")
    zoo.add(scale_model, "other", version="9")
    assert [e.version for e in zoo.list() if e.name == "other"] == ["9", "10"]
    assert [e.name for e in zoo.search(tag="replaced")] == ["scale"]
    assert {e.name for e in zoo.search(input="tensor(float)")} == {"scale", "other"}
    assert zoo.search(input="tensor(string)") == []
    assert [e.version for e in zoo.search("oth")] == ["9", "10"]
    with pytest.raises(ZooError, match="not allowed"):
        zoo.add(scale_model, "../escape")
    with pytest.raises(ZooError, match=r"missing:3 is not in the zoo"):
        zoo.load("missing", "3")
    zoo.remove("other", "9")
    assert [e.version for e in zoo.list() if e.name == "other"] == ["10"]


def test_tampered_missing_or_extra_file_is_refused_by_name(tmp_path: Path) -> None:
    big = onnxbridge.load(make_scale_model(np.ones(4096, np.float32), features=4096))
    zoo = Zoo(tmp_path)
    zoo.add(big, "big")
    big.save(tmp_path / "ext.onnx", external_data=True)
    zoo.add(tmp_path / "ext.onnx", "ext", external_data=True)
    files = sorted(json.loads((tmp_path / "ext" / "1" / "manifest.json").read_text())["files"])
    assert len(files) == 2 and "model.onnx" in files  # the external data file is listed too
    data_file = next(f for f in files if f != "model.onnx")
    path = tmp_path / "ext" / "1" / data_file
    raw = bytearray(path.read_bytes())
    raw[100] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(LoadError, match=rf"{data_file}: sha256 differs"):
        zoo.load("ext")
    assert zoo.verify()["ext:1"] and zoo.verify()["big:1"] == []
    (tmp_path / "big" / "1" / "notes.txt").write_text("x")
    with pytest.raises(LoadError, match="notes.txt: not listed"):
        zoo.load("big")
    (tmp_path / "big" / "1" / "notes.txt").unlink()
    (tmp_path / "big" / "1" / "model.onnx").unlink()
    with pytest.raises(LoadError, match="model.onnx: missing"):
        zoo.load("big")
    with pytest.raises(LoadError):
        zoo.export("big", "1", tmp_path / "out")


def test_unconverted_models_are_part_of_the_inventory(tmp_path: Path) -> None:
    zoo = Zoo(tmp_path)

    class NotAModel:
        pass

    with pytest.raises(onnxbridge.ConverterNotFoundError):
        zoo.add(NotAModel(), "odd", sample=np.zeros((1, 2)))
    entry = zoo.add(NotAModel(), "odd", sample=np.zeros((1, 2)), fallback="served by the Python service")
    assert entry.status == "unconverted"
    assert entry.manifest["reason"].startswith("ConverterNotFoundError")
    assert entry.manifest["versions"]["onnxbridge"] == onnxbridge.__version__
    entry2 = zoo.record_unconverted("gpt", reason="dynamic control flow", fallback="torch.compile",
                                    framework="torch", tags=["nlp"])
    assert "NOT CONVERTED (dynamic control flow); fallback: torch.compile" in entry2.summary()
    assert [e.name for e in zoo.search(status="unconverted")] == ["gpt", "odd"]
    with pytest.raises(ZooError, match="was not converted.*Python service"):
        zoo.load("odd")


def test_import_stays_light() -> None:
    code = ("import sys, onnxbridge, onnxbridge.zoo\n"
            "heavy = ('pandas', 'pyspark', 'ray', 'dask', 'mlflow', 'sklearn')\n"
            "print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli(tmp_path: Path, scale_model: onnxbridge.OnnxModel, capsys: pytest.CaptureFixture[str]) -> None:
    from onnxbridge.cli import main

    path = scale_model.save(tmp_path / "scale.onnx")
    root = str(tmp_path / "zoo")
    assert main(["zoo", "--root", root, "add", "scale", str(path), "--tag", "toy"]) == 0
    assert main(["zoo", "--root", root, "add", "scale", str(path), "--version", "1"]) == 1
    assert "already in the zoo" in capsys.readouterr().err
    assert main(["zoo", "--root", root, "add", "lstm", "--reason", "loops", "--fallback", "torch"]) == 0
    capsys.readouterr()
    assert main(["zoo", "--root", root, "ls"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("lstm:1") and "NOT CONVERTED (loops)" in out[0]
    assert out[1].startswith("scale:1 [toy]")
    assert main(["zoo", "--root", root, "show", "scale:1"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["files"]["model.onnx"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["zoo", "--root", root, "verify"]) == 0
    capsys.readouterr()
    (tmp_path / "zoo" / "scale" / "1" / "model.onnx").write_bytes(b"tampered")
    assert main(["zoo", "--root", root, "verify", "scale"]) == 1
    assert "model.onnx: sha256 differs" in capsys.readouterr().out
    assert main(["zoo", "--root", root, "export", "lstm:1", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "manifest.json").is_file()
    assert main(["zoo", "--root", root, "rm", "scale"]) == 1
    assert main(["zoo", "--root", root, "rm", "scale:1"]) == 0
    assert not (tmp_path / "zoo" / "scale").exists()
