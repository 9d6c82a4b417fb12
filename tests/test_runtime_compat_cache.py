"""The accepted-versions check (runtime/compat.py): its answers against onnxruntime's own, and
its cross-process JSON cache (``ONNXBRIDGE_RUNTIME_CACHE``): where it lives, what it holds, what
it ignores. Every test empties the process cache first (mutmut forks from a warm process)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnxruntime
import pytest
from onnx import TensorProto, helper

from onnxbridge.runtime import compat, install


@pytest.fixture(autouse=True)
def _cold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "_ACCEPTED", {})
    monkeypatch.setattr(compat, "_SUPPORT", None)


def _loads(ir_version: int, opsets: dict[str, int]) -> bool:
    """onnxruntime's own answer, with a model built here (the reference)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "ref",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = ir_version
    try:
        onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


def _build() -> str:
    """The build key as documented: package, version, folder of the loaded onnxruntime."""
    package = install.loaded_package() or "onnxruntime"
    return (f"{package} {onnxruntime.__version__}"
            f" {os.path.dirname(os.path.abspath(onnxruntime.__file__))}")


CASES = [
    (8, {"": 13}), (3, {"": 13}), (99, {"": 13}), (8, {"": 10_000}),
    (8, {"": 13, "ai.onnx.ml": 3}), (8, {"": 13, "ai.onnx.ml": 1_000}),
]


@pytest.mark.parametrize(("ir", "opsets"), CASES)
def test_answers_are_onnxruntimes_own(monkeypatch: pytest.MonkeyPatch, ir: int,
                                      opsets: dict[str, int]) -> None:
    monkeypatch.setenv(compat.ENV_RUNTIME_CACHE, "off")
    expected = _loads(ir, opsets)
    assert compat._accepts_versions(ir, opsets) is expected
    assert compat._ACCEPTED[(ir, tuple(sorted(opsets.items())))] is expected
    assert compat._accepts_versions(ir, opsets) is expected  # from the process cache now


@pytest.mark.parametrize("off", ["", "0", "off", "OFF", " no ", "false", "False"])
def test_the_cache_is_off_for_each_documented_spelling(monkeypatch: pytest.MonkeyPatch,
                                                       off: str) -> None:
    monkeypatch.setenv(compat.ENV_RUNTIME_CACHE, off)
    assert compat._disk_cache() is None
    assert compat._disk_read() == {}
    assert compat._disk_knows("ir8 ai.onnx:13") is False
    compat._disk_remember("ir8 ai.onnx:13")  # writes nothing, raises nothing


def test_default_file_is_under_the_home_cache_and_the_key_is_the_build(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(compat.ENV_RUNTIME_CACHE, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    path, build = compat._disk_cache()  # type: ignore[misc]
    assert path == str(tmp_path / ".cache" / "onnxbridge" / "runtime-accepts.json")
    assert build == _build()
    monkeypatch.setenv(compat.ENV_RUNTIME_CACHE, str(tmp_path / "elsewhere.json"))
    assert compat._disk_cache() == (str(tmp_path / "elsewhere.json"), _build())


def test_an_accepted_set_is_written_and_read_back_by_a_fresh_process_state(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = tmp_path / "deep" / "er" / "accepts.json"  # folders made as needed
    monkeypatch.setenv(compat.ENV_RUNTIME_CACHE, str(cache))
    assert _loads(8, {"": 13, "ai.onnx.ml": 3})
    assert compat._accepts_versions(8, {"ai.onnx.ml": 3, "": 13}) is True
    # The text names the domains sorted, ai.onnx for the default one (written by hand here).
    assert json.loads(cache.read_text(encoding="utf-8")) == {_build(): ["ir8 ai.onnx:13 ai.onnx.ml:3"]}
    assert [p.name for p in cache.parent.iterdir()] == ["accepts.json"]  # no temp file left
    # A refusal is not written.
    assert compat._accepts_versions(8, {"": 10_000}) is False
    assert json.loads(cache.read_text(encoding="utf-8")) == {_build(): ["ir8 ai.onnx:13 ai.onnx.ml:3"]}
    # A new process (empty process cache) takes the file's word without a session.
    monkeypatch.setattr(compat, "_ACCEPTED", {})

    def no_session(*args: object, **kwargs: object) -> None:
        raise AssertionError("a session was made although the cache file knew the answer")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_session)
    assert compat._accepts_versions(8, {"": 13, "ai.onnx.ml": 3}) is True
    assert compat._ACCEPTED[(8, (("", 13), ("ai.onnx.ml", 3)))] is True


def test_a_wrong_entry_is_believed_and_entries_of_another_build_are_not(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = tmp_path / "accepts.json"
    monkeypatch.setenv(compat.ENV_RUNTIME_CACHE, str(cache))
    cache.write_text(json.dumps({_build(): ["ir7 ai.onnx:10000"],
                                 "onnxruntime 0.1 /else": ["ir7 ai.onnx:20000"]}), encoding="utf-8")
    assert compat._accepts_versions(7, {"": 10_000}) is True  # the documented cost of a wrong entry
    assert compat._accepts_versions(7, {"": 20_000}) is False  # another build's entry: asked anew
    assert not _loads(7, {"": 20_000})


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '"text"', "", '{"%s": "ir8 ai.onnx:13"}'])
def test_a_broken_file_is_no_answer_and_is_replaced(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path, text: str) -> None:
    cache = tmp_path / "accepts.json"
    monkeypatch.setenv(compat.ENV_RUNTIME_CACHE, str(cache))
    cache.write_text(text.replace("%s", _build().replace("\\", "\\\\")), encoding="utf-8")
    assert compat._disk_knows("ir8 ai.onnx:13") is False
    compat._disk_remember("ir8 ai.onnx:13")
    data = json.loads(cache.read_text(encoding="utf-8"))
    assert data[_build()] == ["ir8 ai.onnx:13"]
    assert compat._disk_knows("ir8 ai.onnx:13") is True


def test_entries_are_kept_sorted_once_each_and_at_most_256(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    cache = tmp_path / "accepts.json"
    monkeypatch.setenv(compat.ENV_RUNTIME_CACHE, str(cache))
    other = {"onnxruntime 0.1 /else": ["ir1 ai.onnx:1"]}
    cache.write_text(json.dumps(other), encoding="utf-8")
    compat._disk_remember("b")
    compat._disk_remember("a")
    compat._disk_remember("b")
    data = json.loads(cache.read_text(encoding="utf-8"))
    assert data == {**other, _build(): ["a", "b"]}  # the other build's entry kept
    for i in range(300):
        compat._disk_remember(f"t{i:03d}")
    kept = json.loads(cache.read_text(encoding="utf-8"))[_build()]
    everything = sorted(["a", "b"] + [f"t{i:03d}" for i in range(300)])
    assert kept == everything[-256:]  # the newest-sorting 256, computed here
    assert compat._disk_knows("t299") and not compat._disk_knows("a")


def test_an_unwritable_place_only_loses_the_shortcut(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"  # a file where the cache folder should be: makedirs fails
    blocker.write_text("x", encoding="utf-8")
    monkeypatch.setenv(compat.ENV_RUNTIME_CACHE, str(blocker / "accepts.json"))
    compat._disk_remember("ir8 ai.onnx:13")  # no error
    assert compat._accepts_versions(8, {"": 13}) is True
    assert blocker.read_text(encoding="utf-8") == "x"


def test_a_bare_file_name_is_written_in_the_working_folder(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(compat.ENV_RUNTIME_CACHE, "accepts.json")
    compat._disk_remember("ir8 ai.onnx:13")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accepts.json"]  # no other folder made
    assert compat._disk_knows("ir8 ai.onnx:13")
