"""Framework files given to ``onnxbridge convert``: no code runs without --trust, no crash.

Every "this format is safe" claim in docs/security.md is a test here whose crafted file carries a
marker payload (it would create a file) that must never run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from onnxbridge import LoadError
from onnxbridge._sources import check_pt2_archive, load_source_model
from onnxbridge.cli import main

ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    """Pickles to a call of os.system that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _rewrite(src: Path, dst: Path, change: Callable[[str, bytes], bytes | None],
             extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info, data)
        for name, data in (extra or {}).items():
            zout.writestr(name, data)
    return dst


def _json_member(suffix: str, edit: Callable[[dict], None]) -> Callable[[str, bytes], bytes]:
    def change(name: str, data: bytes) -> bytes:
        if name.endswith(suffix):
            doc = json.loads(data)
            edit(doc)
            return json.dumps(doc).encode()
        return data
    return change


@pytest.fixture(scope="module")
def pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean .pt2 (dynamic batch, a weight, a buffer and a tensor constant) and a sample."""
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("pt2")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)
            self.register_buffer("b", torch.ones(3))
            self.c = torch.arange(3.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x) + self.b + self.c

    torch.manual_seed(0)
    x = torch.randn(2, 4)
    ep = torch.export.export(Net().eval(), (x,), dynamic_shapes={"x": {0: torch.export.Dim("n")}})
    torch.export.save(ep, str(folder / "clean.pt2"))
    np.save(folder / "x.npy", x.numpy())
    return folder


def _pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


def _torch_save_bytes(marker: Path) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    return buf.getvalue()


def _crafted_pt2(kind: str, clean: Path, dst: Path, marker: Path) -> Path:
    """Each way a .pt2 makes torch.export.load (or .module()) run code, found in torch 2.14."""
    payload = f"__import__('os').system('touch {marker}')"
    root = _root_name(clean)
    if kind == "sample-inputs-pickle":  # torch.load(weights_only=True) falls back to a full load
        return _rewrite(clean, dst, lambda n, d: _torch_save_bytes(marker)
                        if n.endswith("sample_inputs/model.pt") else d)
    if kind == "weight-pickle":  # a weight marked use_pickle: torch.load(weights_only=False)
        def edit(doc: dict) -> None:
            doc["config"]["lin.weight"].update(use_pickle=True, path_name="weight_9")
        return _rewrite(clean, dst, _json_member("model_weights_config.json", edit),
                        {f"{root}/data/weights/weight_9": _torch_save_bytes(marker)})
    if kind == "opaque-constant":  # an opaque constant: plain pickle.loads
        def edit(doc: dict) -> None:
            doc["config"]["c"].update(use_pickle=True, path_name="opaque_obj_0")
        return _rewrite(clean, dst, _json_member("model_constants_config.json", edit),
                        {f"{root}/data/constants/opaque_obj_0": _pickle_bytes(marker)})
    if kind == "sympy-expression":  # symbolic shapes are parsed with sympy.sympify (eval)
        def edit(doc: dict) -> None:
            found = 0
            todo: list[object] = [doc]
            while todo:
                node = todo.pop()
                if isinstance(node, dict):
                    if "expr_str" in node:
                        node["expr_str"] = payload
                        found += 1
                    todo.extend(node.values())
                elif isinstance(node, list):
                    todo.extend(node)
            assert found
        return _rewrite(clean, dst, _json_member("models/model.json", edit))
    if kind == "guard-code":  # guards are compiled with exec by .module() and run on each call
        def edit(doc: dict) -> None:
            doc["guards_code"] = [f"{payload} == 0"]
        return _rewrite(clean, dst, _json_member("models/model.json", edit))
    raise AssertionError(kind)


def _root_name(clean: Path) -> str:
    with zipfile.ZipFile(clean) as z:
        return z.namelist()[0].split("/", 1)[0]


PT2_ATTACKS = ["sample-inputs-pickle", "weight-pickle", "opaque-constant", "sympy-expression",
               "guard-code"]


@pytest.mark.parametrize("kind", PT2_ATTACKS)
def test_pt2_payloads_never_run_without_trust(pt2: Path, tmp_path: Path, kind: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "ran"
    bad = _crafted_pt2(kind, pt2 / "clean.pt2", tmp_path / "bad.pt2", marker)
    code = main(["convert", str(bad), "-s", str(pt2 / "x.npy"), "-o", str(tmp_path / "o.onnx"),
                 "--quiet"])
    assert not marker.exists(), f"{kind}: the payload ran"
    assert code == 1
    err = capsys.readouterr().err
    assert "bad.pt2" in err and "refused" in err and "--trust" in err


def test_the_crafted_pt2_files_do_run_code_in_torch(pt2: Path, tmp_path: Path) -> None:
    """The payloads are real: torch itself runs each one (so refusing them matters)."""
    torch = pytest.importorskip("torch")
    for kind in PT2_ATTACKS:
        marker = tmp_path / f"ran-{kind}"
        bad = _crafted_pt2(kind, pt2 / "clean.pt2", tmp_path / f"{kind}.pt2", marker)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.suppress(Exception):  # several fail after the payload ran
                torch.export.load(str(bad)).module()(torch.randn(2, 4))
        assert marker.exists(), f"{kind}: torch did not run the payload"


def test_clean_pt2_converts_without_trust(pt2: Path, tmp_path: Path) -> None:
    import onnxbridge

    out = tmp_path / "clean.onnx"
    assert main(["convert", str(pt2 / "clean.pt2"), "-s", str(pt2 / "x.npy"), "-o", str(out),
                 "--quiet"]) == 0
    assert onnxbridge.load(out).parity.passed  # type: ignore[union-attr]


def test_pt2_with_compiled_code_or_odd_targets_is_refused(pt2: Path, tmp_path: Path) -> None:
    root = _root_name(pt2 / "clean.pt2")
    so = _rewrite(pt2 / "clean.pt2", tmp_path / "aoti.pt2", lambda n, d: d,
                  {f"{root}/data/aotinductor/model/model.so": b"\x7fELF"})
    with pytest.raises(LoadError, match="compiled code"):
        check_pt2_archive(so.read_bytes(), "'aoti.pt2'")

    def retarget(doc: dict) -> None:
        doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.ops.aten.save.default"
    saver = _rewrite(pt2 / "clean.pt2", tmp_path / "save.pt2",
                     _json_member("models/model.json", retarget))
    with pytest.raises(LoadError, match="aten.save"):
        check_pt2_archive(saver.read_bytes(), "'save.pt2'")
    with pytest.raises(LoadError, match="not a zip"):
        check_pt2_archive(b"not a zip", "'x.pt2'")


def test_torchscript_runs_code_at_load_so_it_needs_trust(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A TorchScript module's __setstate__ runs inside torch.jit.load and can write files."""
    torch = pytest.importorskip("torch")
    marker = tmp_path / "ran"

    class Writer(torch.nn.Module):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.w = torch.ones(4)
            self.path = path

        @torch.jit.export
        def __getstate__(self) -> tuple[torch.Tensor, bool, str]:
            return (self.w, self.training, self.path)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, bool, str]) -> None:
            self.w = state[0]
            self.training = state[1]
            self.path = state[2]
            torch.ops.aten.save(self.w, self.path)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.w

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(Writer(str(marker))), str(tmp_path / "m.pt"))
        assert not marker.exists()
        np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
        code = main(["convert", str(tmp_path / "m.pt"), "-s", str(tmp_path / "x.npy"), "-o",
                     str(tmp_path / "o.onnx"), "--quiet"])
        assert not marker.exists() and code == 1
        assert "--trust" in capsys.readouterr().err
        torch.jit.load(str(tmp_path / "m.pt"))  # what --trust would do: the payload runs
    assert marker.exists()


def test_pickle_and_joblib_payloads_need_trust(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for name in ("m.pkl", "m.joblib", "m.pickle"):
        (tmp_path / name).write_bytes(_pickle_bytes(marker))
        with pytest.raises(LoadError, match="--trust"):
            load_source_model(tmp_path / name)
    assert not marker.exists()


@pytest.mark.slow
def test_skops_loads_only_default_trusted_types(tmp_path: Path) -> None:
    skops_io = pytest.importorskip("skops.io")
    marker = tmp_path / "ran"
    (tmp_path / "w14payload.py").write_text(
        "from pathlib import Path\n"
        "class Payload:\n"
        "    def __init__(self, marker): self.marker = marker\n"
        "    def __setstate__(self, state):\n"
        "        Path(state['marker']).write_text('ran')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import w14payload  # type: ignore[import-not-found]

        skops_io.dump(w14payload.Payload(str(marker)), tmp_path / "m.skops")
        with pytest.raises(LoadError, match="does not trust"):
            load_source_model(tmp_path / "m.skops")
        assert not marker.exists()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("w14payload", None)


# -- tree models: data only, parsed in a child process ----------------------------------------
@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lightgbm = pytest.importorskip("lightgbm")
    xgboost = pytest.importorskip("xgboost")
    folder = tmp_path_factory.mktemp("trees")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    lightgbm.train({"objective": "binary", "num_leaves": 4, "verbose": -1},
                   lightgbm.Dataset(x, y), num_boost_round=3).save_model(str(folder / "l.txt"))
    booster = xgboost.train({"max_depth": 2}, xgboost.DMatrix(x, y), num_boost_round=3)
    booster.save_model(str(folder / "x.json"))
    np.save(folder / "x.npy", x[:20])
    return folder


def _bad_tree_file(trees: Path, kind: str, dst: Path) -> Path:
    text = (trees / ("l.txt" if kind.startswith("lgb") else "x.json")).read_text()
    if kind == "lgb-tree-sizes":
        sizes = next(ln for ln in text.splitlines() if ln.startswith("tree_sizes="))
        values = sizes.split("=")[1].split()
        values[1] = "999999"
        text = text.replace(sizes, "tree_sizes=" + " ".join(values))
    elif kind == "lgb-children":
        tree = text.index("Tree=0")
        right = text.index("right_child=", tree)
        end = text.index("\n", right)
        text = text[:right] + "right_child=" + " ".join(
            "99999" for _ in text[right:end].split("=")[1].split()) + text[end:]
    elif kind == "lgb-truncated":
        text = text[: len(text) // 3]
    else:
        doc = json.loads(text)
        tree = doc["learner"]["gradient_booster"]["model"]["trees"][0]
        if kind == "xgb-children":
            tree["left_children"][0] = 99999
        elif kind == "xgb-feature":
            tree["split_indices"][0] = 10**8
        elif kind == "xgb-cycle":
            tree["left_children"][0] = tree["right_children"][0] = 0
        text = json.dumps(doc)
    dst.write_text(text)
    return dst


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "suffix"), [("lgb-tree-sizes", ".txt"), ("xgb-children", ".json")])
def test_a_crashing_tree_file_is_an_error_not_a_dead_process(trees: Path, tmp_path: Path,
                                                            kind: str, suffix: str) -> None:
    """These files kill the framework's parser (SIGSEGV); the convert command must survive."""
    bad = _bad_tree_file(trees, kind, tmp_path / f"bad{suffix}")
    done = subprocess.run(
        [sys.executable, "-m", "onnxbridge", "convert", str(bad), "-s", str(trees / "x.npy"),
         "-o", str(tmp_path / "o.onnx")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 1, (done.returncode, done.stderr[-500:])
    assert f"bad{suffix}" in done.stderr
    assert "malformed" in done.stderr or "not a usable" in done.stderr
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lgb-children", "lgb-truncated", "xgb-feature", "xgb-cycle"])
def test_malformed_tree_files_are_load_errors(trees: Path, tmp_path: Path, kind: str) -> None:
    suffix = ".txt" if kind.startswith("lgb") else ".json"
    bad = _bad_tree_file(trees, kind, tmp_path / f"bad{suffix}")
    with pytest.raises(LoadError, match="bad"):
        load_source_model(bad, sample=np.load(trees / "x.npy"))


def test_the_crafted_tree_files_do_crash_the_framework(trees: Path, tmp_path: Path) -> None:
    """The same files kill a process that parses them directly (so the child matters)."""
    bad = _bad_tree_file(trees, "lgb-tree-sizes", tmp_path / "bad.txt")
    done = subprocess.run([sys.executable, "-c", "import sys, lightgbm;"
                           " lightgbm.Booster(model_file=sys.argv[1])", str(bad)],
                          capture_output=True, timeout=300)
    assert done.returncode < 0


@pytest.mark.slow
def test_text_in_tree_files_is_data(trees: Path, tmp_path: Path) -> None:
    """Feature names and attributes holding code or a pickle are carried, never run."""
    xgboost = pytest.importorskip("xgboost")
    marker = tmp_path / "ran"
    booster = xgboost.Booster(model_file=str(trees / "x.json"))
    booster.set_attr(note=f"__import__('os').system('touch {marker}')",
                     blob=_pickle_bytes(marker).hex())
    booster.feature_names = [f"__import__('os').system('touch {marker}')#{i}" for i in range(4)]
    booster.save_model(str(tmp_path / "m.json"))
    model = load_source_model(tmp_path / "m.json", sample=np.load(trees / "x.npy"))
    assert model.attr("note").startswith("__import__") and not marker.exists()


def test_a_saved_model_folder_needs_trust_and_other_folders_are_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A SavedModel restores TensorFlow graph functions (which can read and write files): the
    CLI loads one only with --trust, before TensorFlow is imported; a folder without
    saved_model.pb is named as such; to_onnx(folder) says how to load it. (A real SavedModel
    converting with --trust: tests/test_plugin_tensorflow.py, in `nox -s frameworks`.)"""
    import onnxbridge
    from onnxbridge import ConverterNotFoundError

    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    np.save(tmp_path / "x.npy", np.ones((1, 3), np.float32))
    args = ["-s", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.onnx")]
    assert main(["convert", str(folder), *args]) != 0
    err = capsys.readouterr().err
    assert "is a TensorFlow SavedModel" in err and "--trust" in err, err
    assert "tensorflow" not in sys.modules or os.environ.get("ONNXBRIDGE_REQUIRE_FRAMEWORKS")
    assert not (tmp_path / "o.onnx").exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(LoadError, match="is a folder, not a model file.*has none"):
        load_source_model(plain, trust=True)
    with pytest.raises(ConverterNotFoundError, match=r"TensorFlow SavedModel folder.*"
                                                     r"tf\.saved_model\.load\(path\).*--trust"):
        onnxbridge.to_onnx(str(folder), np.ones((1, 3), np.float32))
