"""save_proto keeps every field of a model, wherever its tensors sit (initializers, node
attributes, subgraphs, functions, sparse tensors), and moves a converter's temporary data file
instead of copying it only when that is safe. The reference is onnx's own loader
(`onnx.load` with its external-data reader) and the file system's inode numbers, never onnxbridge's
reader. Written against surviving mutants of `_files.py` (issue 12; docs/testing.md)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from onnxbridge._files import save_proto

BIG = 512  # float32 values: 2 KiB, over the 1 KiB external-data threshold


def _big(name: str, seed: int) -> TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(BIG).astype(np.float32),
                                   name)


def _sparse(name: str, seed: int) -> onnx.SparseTensorProto:
    values = numpy_helper.from_array(np.arange(seed, seed + 300, dtype=np.float32), name)
    indices = numpy_helper.from_array(np.arange(0, 600, 2, dtype=np.int64), name + "_i")
    return helper.make_sparse_tensor(values, indices, [600])


def _tensors(proto: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every dense tensor of the model, sparse parts included (written here, not onnxbridge's)."""
    def graph(g: onnx.GraphProto) -> Iterator[TensorProto]:
        yield from g.initializer
        for s in g.sparse_initializer:
            yield from (s.values, s.indices)
        for n in g.node:
            yield from node(n)

    def node(n: onnx.NodeProto) -> Iterator[TensorProto]:
        for a in n.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("sparse_tensor"):
                yield from (a.sparse_tensor.values, a.sparse_tensor.indices)
            for s in a.sparse_tensors:
                yield from (s.values, s.indices)
            if a.HasField("g"):
                yield from graph(a.g)
            for g in a.graphs:
                yield from graph(g)

    yield from graph(proto.graph)
    for fn in proto.functions:
        for n in fn.node:
            yield from node(n)


def every_place_model() -> onnx.ModelProto:
    """A model with a big tensor in every place a tensor can be, plus small and string ones, and
    a value in every other kind of field. Checked by onnx's reader only (the custom-domain node
    is not meant to run)."""
    small = numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "small")
    words = numpy_helper.from_array(np.array(["a" * 700, "b" * 700], dtype=object), "words")
    as_floats = helper.make_tensor("as_floats", TensorProto.FLOAT, [BIG],
                                   np.linspace(-1, 1, BIG, dtype=np.float32).tolist())  # float_data
    as_ints = helper.make_tensor("as_ints", TensorProto.INT64, [BIG], list(range(-BIG, 0)))
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c_then"], value=_big("then_const", 3), doc_string="then")],
        "then", [], [helper.make_tensor_value_info("c_then", TensorProto.FLOAT, [BIG])],
        initializer=[_big("then_init", 4)], doc_string="then-graph")
    other = helper.make_graph(
        [helper.make_node("Constant", [], ["c_else"], value=_big("else_const", 5))],
        "else", [], [helper.make_tensor_value_info("c_else", TensorProto.FLOAT, [BIG])])
    exotic = helper.make_node("Everything", ["x"], ["z"], domain="test.domain", name="exotic",
                              doc_string="every attribute kind")
    exotic.attribute.extend([
        helper.make_attribute("one", _big("attr_t", 6), attr_type=AttributeProto.TENSOR),
        helper.make_attribute("many", [_big("attr_t1", 7), small, _big("attr_t2", 8)],
                              attr_type=AttributeProto.TENSORS),
        helper.make_attribute("sp", _sparse("attr_sp", 9), attr_type=AttributeProto.SPARSE_TENSOR),
        helper.make_attribute("sps", [_sparse("attr_sp1", 10), _sparse("attr_sp2", 11)],
                              attr_type=AttributeProto.SPARSE_TENSORS),
        helper.make_attribute("gs", [branch, other], attr_type=AttributeProto.GRAPHS),
        helper.make_attribute("f", 0.25), helper.make_attribute("s", "text"),
        helper.make_attribute("ints", [1, 2, 3]),
    ])
    exotic.attribute[0].doc_string = "attribute doc"
    fn_node = helper.make_node("Constant", [], ["k"], value=_big("fn_const", 12))
    fn_ref = helper.make_node("Scale", ["k"], ["out"], domain="test.domain")
    ref = fn_ref.attribute.add()
    ref.name, ref.ref_attr_name, ref.type = "factor", "factor", AttributeProto.FLOAT
    function = helper.make_function("test.domain", "Fn", ["a"], ["out"], [fn_node, fn_ref],
                                    [helper.make_opsetid("", 17)], attributes=["factor"])
    iff = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other)
    graph = helper.make_graph(
        [iff, exotic], "main",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [BIG])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [BIG])],
        initializer=[_big("w", 1), small, words, as_floats, as_ints, _big("w2", 2)],
        value_info=[helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        doc_string="main graph", sparse_initializer=[_sparse("sp_init", 13)])
    model = helper.make_model(graph, functions=[function], producer_name="fields-test",
                              opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid("test.domain", 1)],
                              doc_string="model doc", domain="org.test", model_version=7)
    helper.set_model_props(model, {"a": "1", "b": "2"})
    model.ir_version = 9
    return model


def normalized(proto: onnx.ModelProto) -> bytes:
    """The model with every tensor in one form (values as little-endian raw bytes, no location
    fields), so that a file read back by onnx compares equal to the model it was written from."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for t in _tensors(out):
        values = numpy_helper.to_array(t)
        for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                     "uint64_data", "string_data", "external_data", "data_location"):
            t.ClearField(name)
        if t.data_type == TensorProto.STRING:
            t.string_data.extend(v.encode() if isinstance(v, str) else v for v in values.ravel())
        else:
            t.raw_data = values.astype(values.dtype.newbyteorder("<")).tobytes()
    return out.SerializeToString(deterministic=True)


def test_an_external_save_keeps_every_field_and_tensor_place(tmp_path: Path) -> None:
    model = every_place_model()
    before = model.SerializeToString()
    written = save_proto(model, tmp_path / "m.onnx", external_data=True)
    assert model.SerializeToString() == before  # the caller's proto is untouched
    assert written[0].name == "m.onnx" and len(written) == 2
    assert written[1].name.startswith("m.onnx.") and written[1].suffix == ".data"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)

    read_back = onnx.load(str(tmp_path / "m.onnx"))  # onnx's own external-data reader
    assert normalized(read_back) == normalized(model)

    stored = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    external = {t.name for t in _tensors(stored) if t.data_location == TensorProto.EXTERNAL}
    inline = {t.name for t in _tensors(stored) if t.data_location != TensorProto.EXTERNAL}
    # Every dense tensor of 1 KiB or more goes to the data file; sparse ones, strings and small
    # ones stay in the model file.
    assert external == {"w", "w2", "as_floats", "as_ints", "then_const", "then_init", "else_const",
                        "attr_t", "attr_t1", "attr_t2", "fn_const"}
    assert {"small", "words", "sp_init", "attr_sp", "attr_sp1", "attr_sp2"} <= inline
    for t in _tensors(stored):
        if t.data_location == TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            assert set(info) == {"location", "offset", "length"}
            assert info["location"] == written[1].name
            assert int(info["offset"]) % 64 == 0  # each tensor starts aligned
            assert int(info["length"]) == numpy_helper.to_array(read_back_tensor(read_back, t.name)).nbytes


def read_back_tensor(proto: onnx.ModelProto, name: str) -> TensorProto:
    return next(t for t in _tensors(proto) if t.name == name)  # the same subgraph may be used twice


def test_a_resave_copies_external_tensors_from_their_file(tmp_path: Path) -> None:
    model = every_place_model()
    (tmp_path / "a").mkdir()
    first = save_proto(model, tmp_path / "a" / "m.onnx", external_data=True)
    stored = onnx.load(str(first[0]), load_external_data=False)
    save_proto(stored, tmp_path / "b.onnx", data_dir=tmp_path / "a")  # external: stays external
    assert normalized(onnx.load(str(tmp_path / "b.onnx"))) == normalized(model)
    assert first[1].exists()  # copied, not moved (move_data was not asked for)
    save_proto(stored, tmp_path / "c.onnx", data_dir=tmp_path / "a", external_data=False)
    whole = onnx.load(str(tmp_path / "c.onnx"), load_external_data=False)
    assert all(t.data_location != TensorProto.EXTERNAL for t in _tensors(whole))
    assert normalized(whole) == normalized(model)


# -- move_data: a converter's temporary data file is moved, not copied, only when that is safe ----
def scale_model(weights: np.ndarray, extra: list[TensorProto] | None = None,
                sparse: list[onnx.SparseTensorProto] | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"])], "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [weights.size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [weights.size])],
        initializer=[numpy_helper.from_array(weights, "w"), *(extra or [])],
        sparse_initializer=sparse or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def externalized(folder: Path, model: onnx.ModelProto, one_file: bool = True,
                 location: str = "weights.bin") -> onnx.ModelProto:
    """``model`` with its big tensors written by onnx into ``folder`` (the proto refers to them)."""
    from onnx.external_data_helper import convert_model_to_external_data, write_external_data_tensors

    folder.mkdir(exist_ok=True)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    convert_model_to_external_data(out, all_tensors_to_one_file=one_file, location=location,
                                   size_threshold=1024)
    return write_external_data_tensors(out, str(folder))


W = np.random.default_rng(0).standard_normal(1024).astype(np.float32)  # 4 KiB


def test_move_data_moves_the_one_data_file_and_keeps_its_offsets(tmp_path: Path) -> None:
    src = tmp_path / "tmp"
    model = scale_model(W, extra=[numpy_helper.from_array(W[::-1].copy(), "w_rev")])
    proto = externalized(src, model)
    inode = os.stat(src / "weights.bin").st_ino
    offsets_before = [[(e.key, e.value) for e in t.external_data if e.key != "location"]
                      for t in proto.graph.initializer]
    out = tmp_path / "out"
    out.mkdir()
    written = save_proto(proto, out / "m.onnx", data_dir=src, move_data=True)
    assert not (src / "weights.bin").exists()  # moved away
    assert os.stat(written[1]).st_ino == inode  # the same file, not a copy
    assert os.stat(written[1]).st_nlink == 1
    assert os.stat(written[1]).st_mode & 0o777 == 0o666 & ~_current_umask()
    stored = onnx.load(str(written[0]), load_external_data=False)
    assert [[(e.key, e.value) for e in t.external_data if e.key != "location"]
            for t in stored.graph.initializer] == offsets_before
    assert normalized(onnx.load(str(written[0]))) == normalized(model)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _declines(tmp_path: Path, proto: onnx.ModelProto, src: Path, model: onnx.ModelProto) -> None:
    """save_proto(move_data=True) copies instead of moving: every source file is kept, and the
    saved model reads back equal to ``model``."""
    files = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    out.mkdir()
    written = save_proto(proto, out / "m.onnx", data_dir=src, move_data=True)
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == files
    assert normalized(onnx.load(str(written[0]))) == normalized(model)


def test_move_data_copies_when_two_files_hold_the_tensors(tmp_path: Path) -> None:
    model = scale_model(W, extra=[numpy_helper.from_array(W * 2, "w2")])
    _declines(tmp_path, externalized(tmp_path / "tmp", model, one_file=False), tmp_path / "tmp", model)


def test_move_data_copies_when_a_big_tensor_is_inline(tmp_path: Path) -> None:
    model = scale_model(W)
    proto = externalized(tmp_path / "tmp", model)
    proto.graph.initializer.append(numpy_helper.from_array(W + 1, "inline_big"))
    model.graph.initializer.append(numpy_helper.from_array(W + 1, "inline_big"))
    _declines(tmp_path, proto, tmp_path / "tmp", model)


def test_move_data_copies_when_a_sparse_tensor_is_external(tmp_path: Path) -> None:
    model = scale_model(W, sparse=[_sparse("sp", 1)])
    proto = externalized(tmp_path / "tmp", model)
    values = proto.graph.sparse_initializer[0].values  # onnx leaves it inline: move it by hand
    with open(tmp_path / "tmp" / "weights.bin", "ab") as f:
        offset = f.tell()
        f.write(values.raw_data)
    values.ClearField("raw_data")
    values.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", str(offset)),
                       ("length", str(300 * 4))):
        entry = values.external_data.add()
        entry.key, entry.value = key, value
    _declines(tmp_path, proto, tmp_path / "tmp", model)


def test_move_data_moves_when_small_and_string_tensors_are_inline(tmp_path: Path) -> None:
    small = numpy_helper.from_array(np.ones(4, np.float32), "small")
    words = numpy_helper.from_array(np.array(["x" * 2000], dtype=object), "words")
    model = scale_model(W, extra=[small])
    proto = externalized(tmp_path / "tmp", model)
    proto.graph.initializer.append(words)  # big, but a string tensor stays inline anyway
    model.graph.initializer.append(words)
    inode = os.stat(tmp_path / "tmp" / "weights.bin").st_ino
    (tmp_path / "out").mkdir()
    written = save_proto(proto, tmp_path / "out" / "m.onnx", data_dir=tmp_path / "tmp", move_data=True)
    assert os.stat(written[1]).st_ino == inode
    assert normalized(onnx.load(str(written[0]))) == normalized(model)


def test_move_data_neither_moves_nor_reads_through_a_symlinked_data_file(tmp_path: Path) -> None:
    model = scale_model(W)
    proto = externalized(tmp_path / "real", model)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "weights.bin").symlink_to(tmp_path / "real" / "weights.bin")
    (tmp_path / "out").mkdir()
    with pytest.raises(OSError, match="symbolic link"):
        save_proto(proto, tmp_path / "out" / "m.onnx", data_dir=tmp_path / "tmp", move_data=True)
    assert (tmp_path / "tmp" / "weights.bin").is_symlink()
    assert (tmp_path / "real" / "weights.bin").read_bytes() == W.tobytes()
    assert list((tmp_path / "out").iterdir()) == []  # no model, no half-written data file


@pytest.mark.parametrize("location", ["sub/weights.bin", "."])
def test_move_data_never_moves_a_location_outside_the_folder_itself(tmp_path: Path,
                                                                  location: str) -> None:
    model = scale_model(W)
    if location == ".":
        proto = externalized(tmp_path / "tmp", model)
        for e in proto.graph.initializer[0].external_data:
            if e.key == "location":
                e.value = "."
        (tmp_path / "out").mkdir()
        with pytest.raises(IsADirectoryError):  # "." is the folder: never moved, never read
            save_proto(proto, tmp_path / "out" / "m.onnx", data_dir=tmp_path / "tmp", move_data=True)
        assert (tmp_path / "tmp" / "weights.bin").exists()
        return
    (tmp_path / "tmp" / "sub").mkdir(parents=True)
    proto = externalized(tmp_path / "tmp", model, location=location)
    _declines(tmp_path, proto, tmp_path / "tmp", model)


# -- check_external_data: every refusal, and the boundaries that still load ----------------------
SIZE = 4096  # bytes of w.data: 1024 float32 weights


def weights_model(folder: Path, entries: dict[str, str], *, inline_first: bool = False,
                  name: str = "w") -> Path:
    """y = x * w with w external as ``entries`` say (w.data holds W); optionally an inline
    tensor before it. Written by hand: onnx's writer would refuse most of these entries."""
    folder.mkdir(exist_ok=True)
    (folder / "w.data").write_bytes(W.tobytes())
    w = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[W.size])
    w.data_location = TensorProto.EXTERNAL
    for key, value in entries.items():
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    inits = [numpy_helper.from_array(np.ones(2, np.float32), "first")] if inline_first else []
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", name], ["y"])], "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [W.size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [W.size])],
        initializer=[*inits, w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def refused(path: Path, max_bytes: int | None = None) -> str:
    import onnxbridge

    with pytest.raises(onnxbridge.LoadError) as caught:
        onnxbridge.load(path, max_bytes=max_bytes)
    return str(caught.value)


LONG_OK = "./" * 509 + "w.data"  # 1024 characters, names w.data


@pytest.mark.parametrize(("location", "why"), [
    ("/etc/w.data", "location '/etc/w.data' is absolute; it must be relative to the model"),
    ("\\\\server\\w.data", "is absolute"),
    ("C:", "is absolute"),  # a drive, two characters
    ("C:w.data", "is absolute"),
    ("w\0.data", "is absolute"),  # a NUL byte: refused before the file system sees it
    ("sub/../w.data", "location 'sub/../w.data' climbs out of the model's folder"),
    ("sub\\..\\w.data", "climbs out"),
    ("./", "names the folder, not a data file"),
    (LONG_OK + "x", "is too long to be a file name"),  # 1025 characters
    ("a" * 256, "is too long to be a file name"),  # one part of 256 bytes
    ("nothere.data", "does not exist in"),
    ("sub", "'sub' is not a regular file"),
])
def test_each_bad_location_is_refused_with_its_reason(tmp_path: Path, location: str, why: str) -> None:
    path = weights_model(tmp_path / "m", {"location": location, "offset": "0", "length": str(SIZE)})
    (tmp_path / "m" / "sub").mkdir()
    message = refused(path)
    assert why in message and "external data of tensor 'w' refused: " in message
    if len(location) > 80:  # long locations are shortened in the message
        assert repr(location[:77] + "...") in message


def test_long_names_up_to_the_limits_load(tmp_path: Path) -> None:
    import onnxbridge

    x = np.ones(W.size, np.float32)
    m = onnxbridge.load(weights_model(tmp_path / "a", {"location": LONG_OK, "length": str(SIZE)}))
    np.testing.assert_array_equal(m.run(x), W)
    name = "w" * 251 + ".bin"  # 255 bytes: the longest file name Linux allows
    path = weights_model(tmp_path / "b", {"location": name, "length": str(SIZE)})
    (tmp_path / "b" / "w.data").rename(tmp_path / "b" / name)
    np.testing.assert_array_equal(onnxbridge.load(path).run(x), W)


def test_an_unnamed_tensor_and_a_tensor_after_an_inline_one_are_checked(tmp_path: Path) -> None:
    path = weights_model(tmp_path / "a", {"location": "../w.data"}, inline_first=True)
    assert "climbs out" in refused(path)  # the inline tensor first does not end the checks
    proto = onnx.load(str(path), load_external_data=False)
    proto.graph.initializer[1].name = ""
    path.write_bytes(proto.SerializeToString())
    assert "external data of tensor '<unnamed>' refused" in refused(path)


def test_symlinks_hard_links_and_a_missing_location_are_refused(tmp_path: Path) -> None:
    path = weights_model(tmp_path / "a", {"length": str(SIZE)})
    assert refused(path).endswith("external data of tensor 'w' refused: it has no location")
    path = weights_model(tmp_path / "b", {"location": "link/w.data"})
    (tmp_path / "b" / "link").symlink_to(tmp_path / "b")
    assert refused(path).endswith("'link/w.data' goes through a symbolic link ('link')")
    path = weights_model(tmp_path / "c", {"location": "w.data"})
    os.link(tmp_path / "c" / "w.data", tmp_path / "other.data")
    assert refused(path).endswith("'w.data' has 2 hard links; copy the file instead")


@pytest.mark.parametrize(("offset", "length", "why"), [
    ("abc", str(SIZE), "offset 'abc' or length '4096' is not a number"),
    ("0", "1.5", "offset '0' or length '1.5' is not a number"),
    ("-1", str(SIZE), "offset and length must not be negative"),
    ("0", "-1", "offset and length must not be negative"),
    ("4", str(SIZE), "offset 4 + length 4096 reaches past the end of 'w.data' (4096 bytes)"),
    (str(SIZE + 1), None, "offset 4097 + length 0 reaches past the end of 'w.data' (4096 bytes)"),
])
def test_offsets_and_lengths_outside_the_file_are_refused(tmp_path: Path, offset: str,
                                                          length: str | None, why: str) -> None:
    entries = {"location": "w.data", "offset": offset} | ({"length": length} if length else {})
    assert refused(weights_model(tmp_path / "m", entries)).endswith(why)


def test_the_total_counts_each_range_and_the_cap_is_inclusive(tmp_path: Path) -> None:
    import onnxbridge
    from onnxbridge._files import check_external_data

    def total(entries: dict[str, str], **kwargs: int) -> int:
        path = weights_model(tmp_path / "m", entries)
        return check_external_data(onnx.load(str(path), load_external_data=False), tmp_path / "m",
                                   "m", **kwargs)

    assert total({"location": "w.data", "length": str(SIZE)}) == SIZE  # default cap (64 GiB)
    assert total({"location": "w.data", "offset": "1024"}) == SIZE - 1024  # to the file's end
    assert total({"location": "w.data", "offset": str(SIZE)}) == 0  # at the end: nothing left
    assert total({"location": "w.data", "offset": "64", "length": "0"}) == 0  # an empty range
    assert total({"location": "w.data", "length": str(SIZE)}, max_bytes=SIZE) == SIZE
    path = weights_model(tmp_path / "m", {"location": "w.data", "length": str(SIZE)})
    np.testing.assert_array_equal(onnxbridge.load(path, max_bytes=SIZE).run(np.ones(W.size, np.float32)), W)
    assert refused(path, max_bytes=SIZE - 1).endswith(
        f"its external data adds up to more than the {SIZE - 1}-byte cap (tensors that share"
        " bytes count each time); pass max_bytes= to load() to raise it")


def test_a_self_contained_save_counts_the_external_bytes_against_the_limit(tmp_path: Path) -> None:
    from onnxbridge._files import model_size

    model = scale_model(W, extra=[numpy_helper.from_array(W[:512].copy(), "half")])
    proto = externalized(tmp_path / "tmp", model)
    outside = W.nbytes + W[:512].nbytes  # what the data file holds, counted by hand
    fits = model_size(proto) + outside
    save_proto(proto, tmp_path / "ok.onnx", data_dir=tmp_path / "tmp", external_data=False, limit=fits)
    assert normalized(onnx.load(str(tmp_path / "ok.onnx"))) == normalized(model)
    with pytest.raises(ValueError, match="over protobuf's 2 GB limit"):
        save_proto(proto, tmp_path / "no.onnx", data_dir=tmp_path / "tmp", external_data=False,
                   limit=fits - 1)
    assert not (tmp_path / "no.onnx").exists()


def test_reading_external_bytes_never_follows_a_symlink(tmp_path: Path) -> None:
    from onnxbridge import LoadError
    from onnxbridge._files import _read_external_into

    proto = externalized(tmp_path / "real", scale_model(W))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "weights.bin").symlink_to(tmp_path / "real" / "weights.bin")
    tensor = TensorProto()
    tensor.CopyFrom(proto.graph.initializer[0])
    with pytest.raises(LoadError, match="cannot read the external data of m"):
        _read_external_into(tensor, tmp_path / "tmp", "m")  # a link swapped in after the checks
    _read_external_into(tensor, tmp_path / "real", "m")
    np.testing.assert_array_equal(numpy_helper.to_array(tensor), W)
    assert tensor.data_location == TensorProto.DEFAULT and not tensor.external_data
    short = TensorProto()
    short.CopyFrom(proto.graph.initializer[0])
    for e in short.external_data:
        if e.key == "length":
            e.value = str(W.nbytes + 4)
    with pytest.raises(LoadError, match="m: the external data of 'w' is shorter than stated"):
        _read_external_into(short, tmp_path / "real", "m")


def _external_sparse(folder: Path, name: str, seed: int) -> onnx.SparseTensorProto:
    """A sparse tensor whose values are in ``folder``/sparse.bin (appended)."""
    sp = _sparse(name, seed)
    with open(folder / "sparse.bin", "ab") as f:
        offset = f.tell()
        f.write(sp.values.raw_data)
    sp.values.ClearField("raw_data")
    sp.values.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "sparse.bin"), ("offset", str(offset)), ("length", str(300 * 4))):
        entry = sp.values.external_data.add()
        entry.key, entry.value = key, value
    return sp


def test_external_sparse_tensors_in_subgraphs_and_functions_are_read_in(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    inline_model = every_place_model()
    proto = every_place_model()
    # A sparse attribute in a subgraph's node and in a function's node, values in src/sparse.bin.
    for model, external in ((inline_model, False), (proto, True)):
        make = (lambda n, s: _external_sparse(src, n, s)) if external else _sparse
        then_branch = model.graph.node[0].attribute[0].g
        then_branch.node.append(helper.make_node("Constant", [], ["sp_then"],
                                                 sparse_value=make("sub_sp", 20)))
        model.functions[0].node.append(helper.make_node("Constant", [], ["sp_fn"],
                                                        sparse_value=make("fn_sp", 21)))
    (tmp_path / "out").mkdir()
    written = save_proto(proto, tmp_path / "out" / "m.onnx", data_dir=src)
    stored = onnx.load(str(written[0]), load_external_data=False)
    sparse_parts = [t for t in _tensors(stored) if t.name in ("sub_sp", "fn_sp")]
    assert len(sparse_parts) == 2  # both read in: sparse tensors stay inline in the new model
    assert all(t.data_location != TensorProto.EXTERNAL for t in sparse_parts)
    assert normalized(onnx.load(str(written[0]))) == normalized(inline_model)


def test_a_tensor_of_exactly_the_threshold_goes_to_the_data_file(tmp_path: Path) -> None:
    model = scale_model(W)
    size = model.graph.initializer[0].ByteSize()
    for threshold, where in ((size, TensorProto.EXTERNAL), (size + 1, TensorProto.DEFAULT)):
        save_proto(model, tmp_path / f"{threshold}.onnx", external_data=True, size_threshold=threshold)
        stored = onnx.load(str(tmp_path / f"{threshold}.onnx"), load_external_data=False)
        assert stored.graph.initializer[0].data_location == where
        assert normalized(onnx.load(str(tmp_path / f"{threshold}.onnx"))) == normalized(model)


def test_a_resave_copies_a_range_without_length_and_refuses_a_short_file(tmp_path: Path) -> None:
    from onnxbridge import LoadError

    model = scale_model(W)
    proto = externalized(tmp_path / "src", model)
    entries = proto.graph.initializer[0].external_data
    (length,) = [e for e in entries if e.key == "length"]
    entries.remove(length)  # no length: the range runs to the end of the file (ONNX allows it)
    save_proto(proto, tmp_path / "a.onnx", data_dir=tmp_path / "src")
    assert normalized(onnx.load(str(tmp_path / "a.onnx"))) == normalized(model)
    entry = entries.add()
    entry.key, entry.value = "length", str(W.nbytes + 4)  # 4 bytes more than the file holds
    (tmp_path / "b").mkdir()
    with pytest.raises(LoadError, match="external data file 'weights.bin' is shorter than its"
                                        " model states"):
        save_proto(proto, tmp_path / "b" / "m.onnx", data_dir=tmp_path / "src")
    assert list((tmp_path / "b").iterdir()) == []  # neither the model nor a partial data file


def test_saving_over_a_model_keeps_data_files_another_tool_named(tmp_path: Path) -> None:
    model = scale_model(W)
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True,
                    location="weights.bin", size_threshold=1024)  # written by onnx, not by us
    save_proto(scale_model(W * 2), tmp_path / "m.onnx", external_data=True)
    assert (tmp_path / "weights.bin").read_bytes() == W.tobytes()  # not ours: left alone
    assert normalized(onnx.load(str(tmp_path / "m.onnx"))) == normalized(scale_model(W * 2))
    save_proto(scale_model(W * 3), tmp_path / "m.onnx")  # ours (the previous save's) is removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "weights.bin"]
