"""Reading a model (_files.py's read path: paths, bytes, streams, the top-level scan, parsing):
each refusal with its text, boundaries counted by hand, and what loads equal to onnx's own
parse. Found by mutation testing."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxbridge import LoadError, _files
from onnxbridge._files import _describe_source, _TopLevelScan, load_proto


def small_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"], name="add")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        initializer=[numpy_helper.from_array(np.float32([1, 2]), "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.onnx.ml", 3)])
    proto.ir_version = 8
    return proto.SerializeToString()


class Recording(io.RawIOBase):
    """A binary stream that gives at most ``step`` bytes a read and records what was asked."""

    def __init__(self, data: bytes, step: int | None = None, endless: bytes | None = None) -> None:
        self.data, self.step, self.endless = data, step, endless
        self.asked: list[int] = []
        self.given = 0

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        self.asked.append(size)
        if self.endless is not None:
            out = (self.endless * (size // len(self.endless) + 1))[:size]
        else:
            n = size if self.step is None else min(size, self.step)
            out = self.data[self.given:self.given + n]
        self.given += len(out)
        return out


def test_a_stream_in_one_byte_pieces_loads_as_onnx_parses_it() -> None:
    data = small_model()
    proto, folder = load_proto(Recording(data, step=1))
    assert folder is None
    assert proto == onnx.load_model_from_string(data)  # onnx's own parse is the reference
    stream = Recording(data)
    load_proto(stream)
    # first 64 KiB, then up to 16 MiB, never past cap + 1 (DEFAULT_MAX_BYTES = 64 GiB here)
    assert stream.asked == [65536, 2**24]


def test_a_stream_is_read_in_bounded_pieces_up_to_the_cap() -> None:
    data = small_model()
    n = len(data)
    stream = Recording(data)
    assert load_proto(stream, max_bytes=n)[0] == onnx.load_model_from_string(data)
    assert stream.asked == [n + 1, 1]  # limit + 1 - len(data) each time (by hand)
    with pytest.raises(LoadError) as err:
        load_proto(Recording(data), max_bytes=n - 1)
    assert str(err.value) == (f"<Recording> gave more than {n - 1:,} bytes; pass max_bytes= to"
                              " raise the cap")
    big = 10**6
    with pytest.raises(LoadError, match="gave more than 1,000,000 bytes"):
        load_proto(Recording(data + b"\x42\x00" * big), max_bytes=big)  # empty opset_imports


def test_the_protobuf_limit_is_named_when_it_is_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    data = small_model()
    monkeypatch.setattr(_files, "PROTOBUF_MAX_MESSAGE", 50)  # instead of 2 GiB
    with pytest.raises(LoadError) as err:
        load_proto(Recording(data), max_bytes=10**6)
    assert str(err.value) == (
        "<Recording> gave more than 50 bytes (protobuf's 2 GiB limit for one model: a larger"
        " model keeps its weights in external data files, loaded from a path or with base_dir=)")


def test_an_endless_stream_of_garbage_stops_after_the_first_read() -> None:
    for garbage, why in [
        (b"\x00", "at byte 0, field 0 (wire type 0) is not a ModelProto field (bytes 0000000000000000)"),
        (b"hello ", "at byte 0, field 13 (wire type 0) is not a ModelProto field (bytes 68656c6c6f206865)"),
        (b"\x08\x07", "at byte 2, field 1 appears twice"),  # ir_version = 7, again and again
    ]:
        stream = Recording(b"", endless=garbage)
        with pytest.raises(LoadError) as err:
            load_proto(stream)
        assert str(err.value) == f"<Recording> is not an ONNX model: {why}"
        assert stream.asked == [65536]


def test_scan_by_hand() -> None:
    scan = _TopLevelScan()
    # 0x3a = field 7 (graph), wire 2; a length varint split over two feeds; repeated opset (8).
    data = bytearray(b"\x08\x08\x3a")
    assert scan.feed(data) is None and scan.pos == 2
    data += b"\x83"
    assert scan.feed(data) is None and scan.pos == 2  # the length is not complete yet
    data += b"\x01" + b"\x00" * 131  # length 3 + 128 = 131
    assert scan.feed(data) is None and scan.pos == 2 + 1 + 2 + 131
    data += b"\x42\x00\x42\x00"  # opset_import twice: repeated field, fine
    assert scan.feed(data) is None and scan.pos == len(data)
    assert scan.seen == {1, 7, 8}
    data += b"\x3a\x00"  # graph again
    assert scan.feed(data) == f"at byte {len(data) - 2}, field 7 appears twice"
    wrong_wire = _TopLevelScan()
    assert wrong_wire.feed(bytearray(b"\x0a\x00")) == (
        "at byte 0, field 1 (wire type 2) is not a ModelProto field (bytes 0a00)")
    too_long = _TopLevelScan()
    assert too_long.feed(bytearray(b"\x08" + b"\xff" * 10 + b"\x01")) == (
        "at byte 0, a varint longer than 10 bytes")
    ten = _TopLevelScan()  # 10 bytes is the longest varint: 2**63 fits
    assert ten.feed(bytearray(b"\x08" + b"\x80" * 9 + b"\x01")) is None and ten.pos == 11


def test_stream_failures_in_full() -> None:
    with pytest.raises(LoadError) as err:
        load_proto(io.StringIO("text"))
    assert str(err.value) == ("<StringIO> is a text stream; open the file in binary mode ('rb')")

    class Broken(io.RawIOBase):
        name = "net.onnx"

        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def read(self, size: int = -1) -> bytes:  # type: ignore[override]
            raise self.exc

    with pytest.raises(LoadError) as err:
        load_proto(Broken(OSError("connection reset")))
    assert str(err.value) == "cannot read the model from <file 'net.onnx'>: connection reset"
    with pytest.raises(LoadError) as err:
        load_proto(Broken(RuntimeError()))
    assert str(err.value) == "cannot read the model from <file 'net.onnx'>: RuntimeError"
    with pytest.raises(LoadError) as err:
        load_proto(io.BytesIO(b""))
    assert str(err.value) == "<BytesIO> is empty (0 bytes): not an ONNX model"


def test_sources_described() -> None:
    assert _describe_source("m.onnx") == "'m.onnx'"
    assert _describe_source(Path("a") / "m.onnx") == repr(os.path.join("a", "m.onnx"))
    assert _describe_source(b"abc") == "<3 bytes>"
    assert _describe_source(bytearray(5)) == "<5 bytes>"
    assert _describe_source(memoryview(b"ab")) == "<2 bytes>"
    assert _describe_source(io.BytesIO()) == "<BytesIO>"

    class Named:
        name = 3  # not a str: the type's name

    assert _describe_source(Named()) == "<Named>"
    with pytest.raises(LoadError) as err:
        load_proto(12)
    assert str(err.value) == ("cannot load a model from a int; pass a path, bytes, a binary file"
                              " object or an onnx.ModelProto")


def test_paths_refused_with_their_reason(tmp_path: Path) -> None:
    data = small_model()
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    assert load_proto(path, max_bytes=len(data))[0] == onnx.load(str(path))  # exactly the cap
    with pytest.raises(LoadError) as err:
        load_proto(path, max_bytes=len(data) - 1)
    assert str(err.value) == (f"{str(path)!r} is {len(data)} bytes, over the {len(data) - 1}-byte"
                              " cap; pass max_bytes= to load() to raise it")
    assert err.value.source == path  # LoadError names the source it refused
    with pytest.raises(LoadError) as err:
        load_proto(tmp_path / "none.onnx")
    assert str(err.value) == f"no such model file: {str(tmp_path / 'none.onnx')!r}"
    assert err.value.source == tmp_path / "none.onnx"
    with pytest.raises(LoadError) as err:
        load_proto(tmp_path)
    assert str(err.value) == (f"{str(tmp_path)!r} is a directory, not an ONNX file; pass the path"
                              " of the .onnx file in it")
    assert err.value.source == tmp_path
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(LoadError) as err:
        load_proto(fifo)
    assert str(err.value) == f"{str(fifo)!r} is not a regular file (a device, FIFO or socket)"
    assert err.value.source == fifo
    with pytest.raises(LoadError) as err:
        load_proto(tmp_path / "m.onnx" / "x")  # a file as a folder: ENOTDIR
    assert str(err.value).startswith(f"cannot read model file {str(tmp_path / 'm.onnx' / 'x')!r}:"
                                     " Not a directory")
    assert err.value.source == tmp_path / "m.onnx" / "x"


def test_bytes_over_the_cap_and_not_a_model() -> None:
    data = small_model()
    assert load_proto(data, max_bytes=len(data))[0] == onnx.load_model_from_string(data)
    with pytest.raises(LoadError) as err:
        load_proto(data, max_bytes=len(data) - 1)
    assert str(err.value) == (f"<{len(data)} bytes> is over the {len(data) - 1}-byte cap; pass"
                              " max_bytes= to raise it")
    with pytest.raises(LoadError, match=r"^<3 bytes> is not an ONNX model, or it is truncated or corrupted"):
        load_proto(b"\x0a\xff\xff")
    empty_graph = onnx.ModelProto(ir_version=8)
    empty_graph.opset_import.add().version = 17
    no_ir = onnx.load_model_from_string(data)
    no_ir.ir_version = 0
    for proto in (empty_graph, onnx.ModelProto(ir_version=8, graph=onnx.GraphProto(name="g")), no_ir):
        raw = proto.SerializeToString()
        with pytest.raises(LoadError) as err:
            load_proto(raw)
        assert str(err.value) == (f"<{len(raw)} bytes> is not an ONNX model: it has no IR version,"
                                  " graph or opset")
        assert err.value.source == raw
    oldest = onnx.load_model_from_string(data)
    oldest.ir_version = 1  # IR version 1 is a version: parsed (onnxruntime judges it later)
    assert load_proto(oldest.SerializeToString())[0] == oldest
    for raw in (b"", b"\x0a\xff\xff"):
        with pytest.raises(LoadError) as err:
            load_proto(raw)
        assert err.value.source == raw
    bad_name = data.replace(b"add", b"\xff\xfe\xfd", 1)
    with pytest.raises(LoadError, match="not UTF-8") as err:
        load_proto(bad_name)
    assert err.value.source == bad_name


@pytest.mark.parametrize(("name", "where"), [
    ("g", "a graph name in the main graph"),
    ("x", "a value name in the main graph"),
    ("w", "an initializer name in the main graph"),
    ("add", "a name of a 'Add' node in the main graph"),
])
def test_a_name_that_is_not_utf8_is_refused_with_its_place(name: str, where: str) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["xxxxqq", "wwwwqq"], ["yyyyqq"], name="addaqq")], "ggggqq",
        [helper.make_tensor_value_info("xxxxqq", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("yyyyqq", TensorProto.FLOAT, [2])],
        initializer=[numpy_helper.from_array(np.float32([1, 2]), "wwwwqq")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # Each name is 6 bytes and unique; replace only the field meant (graph name: tag 0x12 in
    # GraphProto; the others by their first occurrence's field in its own message).
    token = {"g": b"ggggqq", "x": b"xxxxqq", "w": b"wwwwqq", "add": b"addaqq"}[name]
    raw = proto.SerializeToString()
    if name == "x":  # replace the value_info's name only (tag 0x0a, length 6), keep node inputs
        at = raw.rindex(b"\x0a\x06" + token) + 2  # the graph input, after the node's input
        raw = raw[:at] + b"\xff\xfe" + raw[at + 2:]
    elif name == "w":  # the initializer's name: TensorProto field 8 (tag 0x42)
        raw = raw.replace(b"\x42\x06" + token, b"\x42\x06\xff\xfe" + token[2:], 1)
    else:
        raw = raw.replace(token, b"\xff\xfe" + token[2:], 1)
    with pytest.raises(LoadError) as err:
        load_proto(raw)
    assert str(err.value) == (f"<{len(raw)} bytes> is not a valid ONNX model: {where} is not UTF-8"
                              " text (ONNX requires every name to be UTF-8); the file is corrupted"
                              " or was written by a broken tool")


class Pieces(io.RawIOBase):
    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.asked, self.given = data, step, [], 0

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        self.asked.append(size)
        out = self.data[self.given:self.given + min(size, self.step)]
        self.given += len(out)
        return out


def test_bounded_reads_by_hand() -> None:
    from onnxbridge._files import _read_bounded

    data = bytes(range(20))
    stream = Pieces(data, 3)
    assert _read_bounded(stream, 10) == data[:11]  # limit + 1 bytes at most, joined in order
    assert stream.asked == [11, 8, 5, 2]  # limit + 1 - total, 3 bytes given each time
    short = Pieces(data[:4], 3)
    assert _read_bounded(short, 10) == data[:4] and short.asked == [11, 8, 7]
    huge = Pieces(b"", 1)
    assert _read_bounded(huge, 2**30) == b"" and huge.asked == [2**24]  # 16 MiB pieces at most


def _if_model(then_name: str) -> onnx.ModelProto:
    branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], [then_name])], "then",
        [], [helper.make_tensor_value_info(then_name, TensorProto.FLOAT, [2])])
    other = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e_out"])], "else",
        [], [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


def test_names_that_are_not_utf8_in_subgraphs_functions_and_op_types() -> None:
    def broken(proto: onnx.ModelProto, token: bytes) -> bytes:
        raw = proto.SerializeToString()
        assert raw.count(token) >= 1
        return raw.replace(token, b"\xff\xfe" + token[2:])

    ok = _if_model("thenqq")
    assert load_proto(ok.SerializeToString())[0] == ok  # loads when every name is text
    for where, token in [("a value name in a subgraph", b"thenqq")]:
        with pytest.raises(LoadError, match=f"not a valid ONNX model: {where} is not UTF-8"):
            load_proto(broken(ok, token))
    graph = helper.make_graph(
        [helper.make_node("Opqqqq", ["x"], ["y"], domain="my.ops")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    custom = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                     helper.make_opsetid("my.ops", 1)])
    with pytest.raises(LoadError, match="not a valid ONNX model: a node's operator name in the"
                                        " main graph is not UTF-8"):
        load_proto(broken(custom, b"Opqqqq"))
    function = helper.make_function("my.ops", "Fnqqqq", ["a"], ["b"],
                                    [helper.make_node("Neg", ["a"], ["b"])],
                                    [helper.make_opsetid("", 17)])
    custom.functions.append(function)
    with pytest.raises(LoadError, match="not a valid ONNX model: a name in a model-local function"
                                        " is not UTF-8"):
        load_proto(broken(custom, b"Fnqqqq"))


def _external_model(folder: Path) -> Path:
    proto = onnx.load_model_from_string(small_model())
    path = folder / "m.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="w.bin", size_threshold=0)
    return path


def test_sources_named_in_parse_errors_and_proto_sources_kept(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x0a\xff\xff")
    with pytest.raises(LoadError) as err:
        load_proto(path)
    assert str(err.value).startswith(f"{str(path)!r} is not an ONNX model, or it is truncated")
    assert err.value.source == path
    stream = io.BytesIO(b"\x3a\x02\xff\xff")  # a graph field (passes the scan) of garbage
    with pytest.raises(LoadError, match="truncated or corrupted") as err:
        load_proto(stream)
    assert err.value.source is stream
    with pytest.raises(LoadError) as err:
        load_proto(12)
    assert err.value.source == 12
    proto = onnx.load_model_from_string(small_model())
    got, folder = load_proto(proto)
    assert got is proto and folder is None  # a ModelProto without external data: as it is


def test_base_dir_wins_over_the_paths_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    path = _external_model(tmp_path / "a")
    moved = tmp_path / "b" / "m.onnx"
    moved.write_bytes(path.read_bytes())  # the model file alone; its data stays in a/
    with pytest.raises(LoadError):
        load_proto(moved)
    proto, _ = load_proto(moved, base_dir=tmp_path / "a")
    assert proto == onnx.load(str(path))  # onnx reads the same weights in (its own loader)


def test_bytes_with_external_data_need_a_folder(tmp_path: Path) -> None:
    raw = _external_model(tmp_path).read_bytes()
    with pytest.raises(LoadError) as err:
        load_proto(raw)
    assert str(err.value) == (
        f"<{len(raw)} bytes> refers to external data files, and bytes or streams carry no folder"
        " to find them in; pass base_dir= (the folder that holds the data files) to load(), or"
        " load the model's path")
    assert err.value.source == raw
    assert load_proto(raw, base_dir=tmp_path)[0] == onnx.load(str(tmp_path / "m.onnx"))


def test_external_data_kept_only_above_the_threshold(tmp_path: Path) -> None:
    from onnx.external_data_helper import uses_external_data

    path = _external_model(tmp_path)  # one tensor w: 2 float32 = 8 bytes of external data
    reference = onnx.load(str(path))  # onnx reads the data in itself
    proto, folder = load_proto(path, keep_external_above=8)  # 8 is not above 8: read in
    assert folder is None and proto == reference
    assert not uses_external_data(proto.graph.initializer[0])
    kept, folder = load_proto(path, keep_external_above=7)
    assert folder == tmp_path and uses_external_data(kept.graph.initializer[0])
    (tmp_path / "w.bin").unlink()
    with pytest.raises(LoadError) as err:
        load_proto(path)
    assert str(err.value) == (f"{str(path)!r}: external data of tensor 'w' refused: 'w.bin' does"
                              f" not exist in {str(tmp_path)!r}")


def test_a_proto_whose_attribute_tensors_are_external_must_come_by_path(tmp_path: Path) -> None:
    from onnx.external_data_helper import uses_external_data

    value = numpy_helper.from_array(np.float32([5, 6]), "c")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["k"], value=value),
         helper.make_node("Add", ["x", "k"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="w.bin", size_threshold=0, convert_attribute=True)
    refs = onnx.load(str(path), load_external_data=False)
    assert uses_external_data(refs.graph.node[0].attribute[0].t)
    with pytest.raises(LoadError) as err:
        load_proto(refs, base_dir=tmp_path, keep_external_above=0)
    assert str(err.value) == ("<ModelProto>: its sparse or attribute tensors keep their bytes in"
                              " external files; load the model's path instead of the ModelProto")
    assert err.value.source is refs
    got, folder = load_proto(refs, base_dir=tmp_path)  # small: read into a copy
    assert got == onnx.load(str(path)) and got is not refs and folder is None
    assert uses_external_data(refs.graph.node[0].attribute[0].t)  # the caller's proto untouched


# -- helpers of the save path not covered elsewhere ------------------------------------------------
def test_stale_temps_of_dead_writers_go_and_live_ones_are_left_alone(tmp_path: Path) -> None:
    import subprocess
    import sys

    from onnxbridge._files import _HOST, _TEMP_SUFFIX, _remove_stale_temps

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        names = {
            "live": f".m.onnx.{_HOST}.{live.pid}.x{_TEMP_SUFFIX}",
            "dead": f".m.onnx.{_HOST}.{dead.pid}.x{_TEMP_SUFFIX}",
            "mine": f".m.onnx.{_HOST}.{os.getpid()}.x{_TEMP_SUFFIX}",
            "odd": f".m.onnx.{_HOST}.abc.x{_TEMP_SUFFIX}",
            "other": f".m.onnx.otherhost.{dead.pid}.x{_TEMP_SUFFIX}",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"partial")
        _remove_stale_temps(tmp_path, "m.onnx")
        left = {p.name for p in tmp_path.iterdir()}
        assert left == {names[k] for k in ("live", "mine", "odd", "other")}
        with pytest.raises(subprocess.TimeoutExpired):  # only asked whether it lives (signal 0)
            live.wait(timeout=0.5)
    finally:
        live.kill()
        live.wait()


def test_umask_read_is_the_process_umask() -> None:
    from onnxbridge._files import _umask

    old = os.umask(0o027)
    try:
        assert _umask() == 0o027
    finally:
        os.umask(old)
    assert _umask() == old


def test_check_parent_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxbridge._files import _check_parent

    monkeypatch.chdir(tmp_path)
    assert _check_parent(Path("m.onnx")) == Path(".")
    assert _check_parent(tmp_path / "m.onnx") == tmp_path
    with pytest.raises(FileNotFoundError) as err:
        _check_parent(tmp_path / "no" / "m.onnx")
    assert str(err.value) == f"folder {str(tmp_path / 'no')!r} does not exist; create it first"
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError) as verr:
        _check_parent(tmp_path / "d")
    assert str(verr.value) == (f"{str(tmp_path / 'd')!r} is a directory; give a file name such as"
                               " model.onnx")


def test_model_size_is_never_below_protobufs_own_size() -> None:
    """model_size decides whether a proto is over 2 GB: it must not undercount any part."""
    from onnxbridge._files import is_large, model_size

    base = onnx.load_model_from_string(small_model())
    base.doc_string = "d" * 5000
    base.graph.doc_string = "g" * 7000
    base.graph.node[0].doc_string = "n" * 3000
    base.metadata_props.add(key="k", value="v" * 4000)
    base.graph.initializer.append(numpy_helper.from_array(np.zeros(4000, np.float32), "big"))
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["t"], doc_string="b" * 6000)],
                               "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    with_if = onnx.load_model_from_string(small_model())
    with_if.graph.node.append(helper.make_node("If", ["c"], ["z"], then_branch=branch,
                                               else_branch=branch, doc_string="i" * 2000))
    loop = onnx.load_model_from_string(small_model())
    loop.graph.node.append(helper.make_node("Scan", ["x"], ["z"], body=branch, num_scan_inputs=1))
    many = helper.make_node("Custom", ["x"], ["z"], domain="my.ops")
    many.attribute.append(helper.make_attribute("gs", [branch, branch]))
    graphs = onnx.load_model_from_string(small_model())
    graphs.graph.node.append(many)
    for proto in (with_if, loop, graphs):  # every other part of a node holding subgraphs, big
        node = proto.graph.node[-1]
        node.doc_string = "m" * 3000
        node.input.append("long" * 750)
        node.attribute.append(helper.make_attribute("text", "s" * 3000))
        node.metadata_props.add(key="k", value="v" * 3000)
    for proto in (base, with_if, loop, graphs):
        true = proto.ByteSize()  # protobuf's own count
        assert true <= model_size(proto) <= true + 1024
        assert not is_large(proto)
        assert is_large(proto, limit=true - 1) and not is_large(proto, limit=model_size(proto))


def test_checker_findings_follow_onnx_checker(tmp_path: Path) -> None:
    from onnxbridge._files import checker_findings

    graph = helper.make_graph(  # declared int64 output of a float Add: only full_check sees it
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [2])],
        initializer=[numpy_helper.from_array(np.float32([1, 2]), "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = onnx.IR_VERSION  # the newest this onnx knows: still checked
    onnx.checker.check_model(proto)  # the reference: plain check passes ...
    with pytest.raises(Exception, match="Inferred elem type differs"):
        onnx.checker.check_model(proto, full_check=True)  # ... the full one does not
    assert checker_findings(proto) == []
    assert checker_findings(proto, full_check=True)
    path = tmp_path / "m.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="w.bin", size_threshold=0)
    refs = onnx.load(str(path), load_external_data=False)  # checked through the weightless stub
    assert checker_findings(refs) == []
    assert checker_findings(refs, full_check=True)
    proto.graph.node[0].op_type = "NoSuchOp"
    assert checker_findings(proto)  # a broken model at the newest IR version is reported
