"""Reading models from paths, bytes and file objects; checking and saving them; writing files.

Large models: protobuf cannot size or serialise a message of 2 GB or more, and every copy of a
proto costs its weights again. So a model over the limit never lives in one proto with its
weights inline: its weights stay in external data files (checked, then read by onnxruntime
itself), the checker sees a weight-less copy, and saving streams tensor by tensor.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import socket
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from onnxbridge.errors import LoadError, OnnxBridgeWarning

if TYPE_CHECKING:
    import onnx

__all__ = [
    "EXTERNAL_THRESHOLD",
    "PROTOBUF_LIMIT",
    "atomic_write",
    "check_external_data",
    "check_graph",
    "checker_findings",
    "external_bytes",
    "external_locations",
    "external_range",
    "has_external_data",
    "is_large",
    "iter_tensors",
    "load_proto",
    "model_size",
    "open_atomic",
    "save_proto",
    "session_config",
]

# The one limit: protobuf cannot serialise or parse a message of 2 GiB or more
# (PROTOBUF_MAX_MESSAGE bytes at most); when saving, keep 16 MiB of that for the graph.
PROTOBUF_MAX_MESSAGE = 2**31 - 1
PROTOBUF_LIMIT = PROTOBUF_MAX_MESSAGE + 1 - 2**24

# Refuse to read more than this from one model file unless the caller raises the cap.
DEFAULT_MAX_BYTES = 64 * 2**30

# A tensor of at least this many bytes goes to the data file when saving with external data.
EXTERNAL_THRESHOLD = 1024

# A loaded model whose external data is larger than this keeps it in its files: onnxruntime
# reads (or maps) them when a session is made, and the weights are never held in the proto.
# Smaller external data is read into the proto (new sessions cannot see later edits of the file).
KEEP_EXTERNAL_ABOVE = 2**28

# onnxruntime's session option naming the folder of external data for a model given as bytes.
ORT_EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path"


def _describe_source(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    name = getattr(source, "name", None)
    return f"<file {name!r}>" if isinstance(name, str) else f"<{type(source).__name__}>"


def _read_path(path: Path, max_bytes: int) -> bytes:
    label = repr(str(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise LoadError(f"no such model file: {label}", path) from None
    except OSError as exc:
        raise LoadError(f"cannot read model file {label}: {exc.strerror or exc}", path) from exc
    if stat.S_ISDIR(st.st_mode):
        raise LoadError(
            f"{label} is a directory, not an ONNX file; pass the path of the .onnx file in it",
            path,
        )
    if not stat.S_ISREG(st.st_mode):
        raise LoadError(f"{label} is not a regular file (a device, FIFO or socket)", path)
    if st.st_size > max_bytes:
        raise LoadError(
            f"{label} is {st.st_size} bytes, over the {max_bytes}-byte cap;"
            " pass max_bytes= to load() to raise it",
            path,
        )
    try:
        with open(path, "rb") as f:
            data = _read_bounded(f, max_bytes)
    except OSError as exc:
        raise LoadError(f"cannot read model file {label}: {exc.strerror or exc}", path) from exc
    if len(data) > max_bytes:
        raise LoadError(f"{label} grew past the {max_bytes}-byte cap while being read", path)
    return data


def _read_bounded(stream: IO[bytes], limit: int) -> bytes:
    """Read at most ``limit + 1`` bytes in chunks (so an endless stream cannot exhaust memory)."""
    chunks = []
    total = 0
    while total <= limit:
        chunk = stream.read(min(1 << 24, limit + 1 - total))
        if not chunk:
            break
        if not isinstance(chunk, (bytes, bytearray)):
            raise TypeError("text stream")
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _read_stream(stream: IO[bytes], max_bytes: int, label: str) -> bytes:
    # A stream holds one serialized ModelProto (external data comes from files), which protobuf
    # cannot parse past 2 GiB: reading further only fills memory. Its top-level fields are
    # checked as they arrive, so an endless stream of zeros, text or one field repeated fails
    # after its first bytes, with the reason.
    limit = min(max_bytes, PROTOBUF_MAX_MESSAGE)
    data = bytearray()
    scan = _TopLevelScan()
    try:
        while len(data) <= limit:
            chunk = stream.read(min(1 << 16 if not data else 1 << 24, limit + 1 - len(data)))
            if not chunk:
                break
            if not isinstance(chunk, (bytes, bytearray)):
                raise TypeError("text stream")
            data += chunk
            problem = scan.feed(data)
            if problem is not None:
                raise LoadError(f"{label} is not an ONNX model: {problem}")
    except TypeError:
        raise LoadError(f"{label} is a text stream; open the file in binary mode ('rb')") from None
    except LoadError:
        raise
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise LoadError(f"cannot read the model from {label}: {reason}") from exc
    if len(data) > limit:
        raise LoadError(
            f"{label} gave more than {limit:,} bytes"
            + (" (protobuf's 2 GiB limit for one model: a larger model keeps its weights in"
               " external data files, loaded from a path or with base_dir=)"
               if limit < max_bytes else "; pass max_bytes= to raise the cap"))
    return bytes(data)


# ModelProto's fields: number -> (wire type, may repeat). onnx writes each field once except
# the repeated messages, so anything else at the top level is not a model onnx wrote.
_MODEL_FIELDS = {1: (0, False), 2: (2, False), 3: (2, False), 4: (2, False), 5: (0, False),
                 6: (2, False), 7: (2, False), 8: (2, True), 14: (2, True), 20: (2, True),
                 25: (2, True), 26: (2, True)}


class _TopLevelScan:
    """Walks a ModelProto's top-level fields as bytes arrive (without parsing their contents)."""

    def __init__(self) -> None:
        self.pos = 0
        self.seen: set[int] = set()

    @staticmethod
    def _varint(data: bytearray, pos: int) -> tuple[int, int] | None:
        value = shift = 0
        while pos < len(data):
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, pos
            shift += 7
            if shift > 63:
                raise ValueError("a varint longer than 10 bytes")
        return None  # more bytes needed

    def feed(self, data: bytearray) -> str | None:
        while self.pos < len(data):
            where = f"at byte {self.pos}"
            try:
                tag = self._varint(data, self.pos)
                if tag is None:
                    return None
                field, wire = tag[0] >> 3, tag[0] & 7
                known = _MODEL_FIELDS.get(field)
                if known is None or known[0] != wire:
                    return (f"{where}, field {field} (wire type {wire}) is not a ModelProto field"
                            f" (bytes {bytes(data[self.pos:self.pos + 8]).hex()})")
                if field in self.seen and not known[1]:
                    return f"{where}, field {field} appears twice"
                value = self._varint(data, tag[1])
                if value is None:
                    return None
            except ValueError as exc:
                return f"{where}, {exc}"
            self.seen.add(field)
            self.pos = value[1] + (value[0] if wire == 2 else 0)
        return None


def _parse(data: bytes, label: str, source: Any) -> onnx.ModelProto:
    import onnx
    from google.protobuf.message import DecodeError

    if not data:
        raise LoadError(f"{label} is empty (0 bytes): not an ONNX model", source)
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError, UnicodeDecodeError, MemoryError) as exc:
        raise LoadError(
            f"{label} is not an ONNX model, or it is truncated or corrupted ({exc})", source
        ) from exc
    if proto.ir_version <= 0 or not proto.HasField("graph") or not proto.opset_import:
        raise LoadError(
            f"{label} is not an ONNX model: it has no IR version, graph or opset", source
        )
    bad = _first_non_utf8_name(proto)
    if bad is not None:
        raise LoadError(
            f"{label} is not a valid ONNX model: {bad} is not UTF-8 text (ONNX requires every"
            " name to be UTF-8); the file is corrupted or was written by a broken tool", source
        )
    return proto


def _first_non_utf8_name(proto: onnx.ModelProto) -> str | None:
    """Where a name field holds bytes that are not UTF-8 (protobuf then hands back bytes, and
    every reader of names would fail on them), or None."""
    def graph_problem(g: onnx.GraphProto, where: str) -> str | None:
        values = [*g.input, *g.output, *g.value_info]
        for kind, texts in (
            ("a graph name", [g.name]),
            ("a value name", [v.name for v in values]),
            ("an initializer name", [t.name for t in g.initializer]),
        ):
            if any(isinstance(t, bytes) for t in texts):
                return f"{kind} in {where}"
        for node in g.node:
            texts = [node.name, node.op_type, node.domain, *node.input, *node.output,
                     *(a.name for a in node.attribute)]
            if any(isinstance(t, bytes) for t in texts):
                return f"a name of a {node.op_type!r} node in {where}" if isinstance(
                    node.op_type, str) else f"a node's operator name in {where}"
            for a in node.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    found = graph_problem(sub, "a subgraph")
                    if found:
                        return found
        return None

    found = graph_problem(proto.graph, "the main graph")
    if found:
        return found
    for f in proto.functions:
        texts = [f.name, f.domain, *f.input, *f.output]
        texts += [t for n in f.node for t in (n.name, n.op_type, n.domain, *n.input, *n.output)]
        if any(isinstance(t, bytes) for t in texts):
            return "a name in a model-local function"
    return None


# -- sizes -------------------------------------------------------------------------------------
def model_size(proto: onnx.ModelProto) -> int:
    """The serialized size of ``proto``, summed piece by piece (so it works above 2 GB, where
    protobuf cannot size the whole message). External data is not counted."""
    total = 0
    for field, value in proto.ListFields():
        if field.name == "graph":
            total += _graph_size(value) + 8
        elif _repeated(field):
            total += sum(_message_size(v) for v in value) if field.message_type else 16 * len(value)
        elif field.message_type is not None:
            total += _message_size(value)
        else:
            total += len(value) + 8 if isinstance(value, (str, bytes)) else 12
    return total


def _repeated(field: Any) -> bool:
    is_repeated = getattr(field, "is_repeated", None)  # protobuf >= 6 (label is gone in 7)
    return bool(is_repeated) if is_repeated is not None else field.label == field.LABEL_REPEATED


def _message_size(message: Any) -> int:
    return int(message.ByteSize()) + 8


def _graph_size(graph: onnx.GraphProto) -> int:
    total = 0
    for field, value in graph.ListFields():
        if _repeated(field) and field.message_type is not None:
            if field.name == "node":
                total += sum(_node_size(n) for n in value)
            else:
                total += sum(_message_size(v) for v in value)
        elif field.message_type is not None:
            total += _message_size(value)
        else:
            total += len(value) + 8 if isinstance(value, (str, bytes)) else 12
    return total


def _node_size(node: onnx.NodeProto) -> int:
    from onnx import AttributeProto

    if not any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute):
        return _message_size(node)
    total = 64
    for field, value in node.ListFields():  # every field but the attributes (doc_string too)
        if field.name == "attribute":
            continue
        items = value if _repeated(field) else [value]
        total += sum(_message_size(v) if field.message_type is not None
                     else len(v) + 4 if isinstance(v, (str, bytes)) else 12 for v in items)
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            total += _graph_size(attr.g) + 16
        elif attr.type == AttributeProto.GRAPHS:
            total += sum(_graph_size(g) + 16 for g in attr.graphs)
        else:
            total += _message_size(attr)
    return total


def is_large(proto: onnx.ModelProto, limit: int = PROTOBUF_LIMIT) -> bool:
    """Whether ``proto`` (without its external data) is too big to be one protobuf message."""
    return model_size(proto) > limit


def has_external_data(proto: onnx.ModelProto) -> bool:
    """Whether any tensor of the model keeps its bytes in an external file."""
    from onnx import TensorProto

    return any(t.data_location == TensorProto.EXTERNAL for t in iter_tensors(proto))


def external_bytes(proto: onnx.ModelProto) -> int:
    """The bytes the model's external tensors name (their stated lengths; no file is read)."""
    from onnx import TensorProto

    total = 0
    for t in iter_tensors(proto):
        if t.data_location == TensorProto.EXTERNAL:
            with contextlib.suppress(ValueError):
                total += int(_external_info(t).get("length", "0"))
    return total


def external_locations(proto: onnx.ModelProto) -> set[str]:
    """The data files the model's external tensors name."""
    from onnx import TensorProto

    return {e.value for t in iter_tensors(proto) if t.data_location == TensorProto.EXTERNAL
            for e in t.external_data if e.key == "location"}


# -- checking ----------------------------------------------------------------------------------
def checker_findings(proto: onnx.ModelProto, *, full_check: bool = False) -> list[str]:
    """What onnx.checker says about the model (an empty list when it has nothing to say).

    The checker runs on the proto itself only when it is small and holds all its weights;
    otherwise on a weight-less copy (tensors become references to an empty file) checked
    through a path, so no proto over 2 GB is ever serialised and no external file is read.
    """
    import onnx

    if proto.ir_version > onnx.IR_VERSION:
        return []  # newer than this onnx package knows: onnxruntime judges it
    try:
        if not has_external_data(proto) and not is_large(proto):
            onnx.checker.check_model(proto, full_check=full_check)
        else:
            with tempfile.TemporaryDirectory(prefix="onnxbridge-check-") as tmp:
                stub = Path(tmp) / "model.onnx"
                stub.write_bytes(_weightless_copy(proto, "stub.data").SerializeToString())
                (Path(tmp) / "stub.data").write_bytes(b"")
                onnx.checker.check_model(str(stub), full_check=full_check)
    except Exception as exc:  # ValidationError, and anything a corrupted proto provokes
        return [" ".join(str(exc).split())]
    return []


def check_graph(proto: onnx.ModelProto, label: str, source: Any = None) -> list[str]:
    """onnx.checker's findings on the model, each also given as an OnnxBridgeWarning.

    A finding is not a refusal: onnxruntime runs models the checker complains about (an IR 3
    model whose initializer is not among the graph inputs, say); whether a session can be
    made is onnxruntime's call, when one is made.
    """
    findings = checker_findings(proto)
    for finding in findings:
        warnings.warn(f"{label}: onnx.checker: {finding}", OnnxBridgeWarning, stacklevel=3)
    return findings


def _weightless_copy(proto: onnx.ModelProto, stub_location: str) -> onnx.ModelProto:
    """A copy of ``proto`` whose tensors over 1 KiB are empty external references (their bytes
    are never copied: the copy is built field by field around them)."""
    import onnx

    out = onnx.ModelProto()
    for field, value in proto.ListFields():
        if field.name != "graph":
            _copy_field(out, field, value)
    copy_graph_mapped(proto.graph, out.graph,
                      lambda src, dst: _stub_tensor(src, dst, stub_location))
    return out


def _copy_field(out: Any, field: Any, value: Any) -> None:
    if _repeated(field):
        getattr(out, field.name).extend(value)
    elif field.message_type is not None:
        getattr(out, field.name).CopyFrom(value)
    else:
        setattr(out, field.name, value)


def _stub_tensor(src: onnx.TensorProto, dst: onnx.TensorProto, location: str) -> None:
    from onnx import TensorProto

    if src.data_location != TensorProto.EXTERNAL and src.ByteSize() < EXTERNAL_THRESHOLD:
        dst.CopyFrom(src)
        return
    for field, value in src.ListFields():
        if field.name in _DATA_FIELDS or field.name in ("external_data", "data_location"):
            continue
        _copy_field(dst, field, value)
    dst.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "0")):
        entry = dst.external_data.add()
        entry.key, entry.value = key, value


TensorCopy = Callable[[Any, Any], None]


def copy_graph_mapped(src: onnx.GraphProto, dst: onnx.GraphProto, tensor: TensorCopy,
                      sparse: TensorCopy | None = None) -> None:
    """Copy a graph field by field, with every tensor (initializers, node attributes, subgraphs)
    written by ``tensor(src, dst)`` and every sparse tensor by ``sparse`` (plain copy if None)."""
    for field, value in src.ListFields():
        if field.name == "initializer":
            for t in value:
                tensor(t, dst.initializer.add())
        elif field.name == "sparse_initializer" and sparse is not None:
            for t in value:
                sparse(t, dst.sparse_initializer.add())
        elif field.name == "node":
            for node in value:
                copy_node_mapped(node, dst.node.add(), tensor, sparse)
        else:
            _copy_field(dst, field, value)


def copy_node_mapped(src: onnx.NodeProto, dst: onnx.NodeProto, tensor: TensorCopy,
                     sparse: TensorCopy | None = None) -> None:
    """One node of :func:`copy_graph_mapped`."""
    from onnx import AttributeProto as A

    for field, value in src.ListFields():
        if field.name != "attribute":
            _copy_field(dst, field, value)
    mapped = {"t", "tensors", "g", "graphs"} | ({"sparse_tensor", "sparse_tensors"}
                                                 if sparse is not None else set())
    for attr in src.attribute:
        new = dst.attribute.add()
        for field, value in attr.ListFields():
            if field.name not in mapped:
                _copy_field(new, field, value)
        if attr.type == A.TENSOR:
            tensor(attr.t, new.t)
        elif attr.type == A.TENSORS:
            for t in attr.tensors:
                tensor(t, new.tensors.add())
        elif attr.type == A.SPARSE_TENSOR and sparse is not None:
            sparse(attr.sparse_tensor, new.sparse_tensor)
        elif attr.type == A.SPARSE_TENSORS and sparse is not None:
            for t in attr.sparse_tensors:
                sparse(t, new.sparse_tensors.add())
        elif attr.type == A.GRAPH:
            copy_graph_mapped(attr.g, new.g, tensor, sparse)
        elif attr.type == A.GRAPHS:
            for g in attr.graphs:
                copy_graph_mapped(g, new.graphs.add(), tensor, sparse)


# -- loading -----------------------------------------------------------------------------------
def _stamp(path: Any) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def load_proto(
    source: Any,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    max_bytes: int | None = None,
    keep_external_above: int | None = None,
) -> tuple[onnx.ModelProto, Path | None]:
    """:func:`_load_once`, again when a path's model file was replaced while it was read (a
    concurrent save removes the data file the old model named: read the new model instead)."""
    if not isinstance(source, (str, os.PathLike)):
        return _load_once(source, base_dir=base_dir, max_bytes=max_bytes,
                          keep_external_above=keep_external_above)
    for attempt in range(3):
        before = _stamp(source)
        try:
            return _load_once(source, base_dir=base_dir, max_bytes=max_bytes,
                              keep_external_above=keep_external_above)
        except LoadError:
            if attempt == 2 or before is None or _stamp(source) == before:
                raise
    raise AssertionError("unreachable")


def _load_once(
    source: Any,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    max_bytes: int | None = None,
    keep_external_above: int | None = None,
) -> tuple[onnx.ModelProto, Path | None]:
    """Parse ``source`` into a ModelProto; check its external data, and read it in when small.

    Returns the proto and the folder its external data lives in (None when it has none, or
    when all of it was read in). External data totalling more than ``keep_external_above``
    bytes (default ``KEEP_EXTERNAL_ABOVE``) stays in its files, which are checked here and
    read by onnxruntime when a session is made; sparse tensors and tensor attributes are always
    read in, so onnxruntime only ever opens files for dense initializers.
    """
    import onnx
    from onnx import TensorProto

    cap = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    keep_above = KEEP_EXTERNAL_ABOVE if keep_external_above is None else keep_external_above
    label = _describe_source(source)
    folder: Path | None = Path(base_dir) if base_dir is not None else None
    if isinstance(source, onnx.ModelProto):
        proto = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        proto = _parse(_read_path(path, cap), label, source)
        folder = folder if folder is not None else path.resolve().parent
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > cap:
            raise LoadError(f"{label} is over the {cap}-byte cap; pass max_bytes= to raise it")
        proto = _parse(data, label, source)
    elif hasattr(source, "read"):
        data = _read_stream(source, cap, label)
        if len(data) > cap:
            raise LoadError(f"{label} is over the {cap}-byte cap; pass max_bytes= to raise it")
        proto = _parse(data, label, source)
    else:
        raise LoadError(
            f"cannot load a model from a {type(source).__name__}; pass a path, bytes,"
            " a binary file object or an onnx.ModelProto",
            source,
        )
    if not has_external_data(proto):
        if isinstance(source, onnx.ModelProto) and is_large(proto):
            raise LoadError(
                f"this ModelProto holds {model_size(proto) / 2**30:.1f} GB of weights inline,"
                " over protobuf's 2 GB limit, so it cannot be checked or given to onnxruntime;"
                " save it with onnx.save_model(proto, 'model.onnx', save_as_external_data=True)"
                " and load the path",
                source,
            )
        return proto, None
    if folder is None:
        raise LoadError(
            f"{label} refers to external data files, and bytes or streams carry no folder to"
            " find them in; pass base_dir= (the folder that holds the data files) to load(),"
            " or load the model's path",
            source,
        )
    total = check_external_data(proto, folder, label, max_bytes=cap)
    keep = total > keep_above
    if proto is source and not keep:  # never fill in the caller's own ModelProto behind their back
        proto = onnx.ModelProto()
        proto.CopyFrom(source)
    for tensor in iter_tensors(proto, initializers=not keep):
        if tensor.data_location == TensorProto.EXTERNAL:
            if proto is source:
                raise LoadError(
                    f"{label}: its sparse or attribute tensors keep their bytes in external"
                    " files; load the model's path instead of the ModelProto", source)
            _read_external_into(tensor, folder, label)
    return proto, folder if keep else None


_EXTERNAL_KEYS = {"location", "offset", "length", "checksum", "basepath"}
_DATA_FIELDS = {"raw_data", "float_data", "int32_data", "string_data", "int64_data",
                "double_data", "uint64_data"}


def _external_info(tensor: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def external_range(tensor: onnx.TensorProto) -> tuple[str, int, int | None]:
    info = _external_info(tensor)
    length = info.get("length")
    return info.get("location", ""), int(info.get("offset", "0")), (
        int(length) if length is not None else None)


def check_external_data(
    proto: onnx.ModelProto, folder: Path, label: str, *, max_bytes: int | None = None
) -> int:
    """Refuse external data that could read outside the model's folder or past a file's end.

    Checked before a byte is read, for every tensor (initializers, sparse values and indices,
    attributes, subgraphs, functions): the location must be a plain relative path inside
    ``folder``; no part of the way may be a symlink; the file must be a regular file with a
    single hard link (a hard link can expose any file on the same disk); offset and length must
    be whole numbers that stay inside the file; all ranges together stay under ``max_bytes``
    (tensors that share bytes count each time). Unknown keys are ignored with a warning.
    Returns the total number of bytes the external tensors name.
    """
    from onnx import TensorProto

    cap = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    root = Path(os.path.abspath(folder))
    total = 0
    for tensor in iter_tensors(proto):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        name = tensor.name or "<unnamed>"
        info = _external_info(tensor)
        unknown = sorted(set(info) - _EXTERNAL_KEYS)
        if unknown:
            warnings.warn(
                f"{label}: tensor {name!r} has unknown external-data keys {unknown}; ignored",
                OnnxBridgeWarning, stacklevel=4,
            )

        def refuse(why: str, tensor_name: str = name) -> LoadError:
            return LoadError(f"{label}: external data of tensor {tensor_name!r} refused: {why}")

        location = info.get("location", "")
        if not location:
            raise refuse("it has no location")
        shown = location if len(location) <= 80 else location[:77] + "..."
        if "\0" in location or os.path.isabs(location) or location.startswith(("/", "\\")) or (
            len(location) > 1 and location[1] == ":"
        ):
            raise refuse(f"location {shown!r} is absolute; it must be relative to the model")
        pieces = re.split(r"[\\/]", location)
        if ".." in pieces:
            raise refuse(f"location {shown!r} climbs out of the model's folder")
        parts = [p for p in pieces if p not in ("", ".")]
        if not parts:
            raise refuse(f"location {shown!r} names the folder, not a data file")
        if len(location) > 1024 or any(len(p.encode()) > 255 for p in parts):
            raise refuse(f"location {shown!r} is too long to be a file name")
        current = root
        st = None
        for part in parts:
            current = current / part
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                raise refuse(f"{shown!r} does not exist in {str(root)!r}") from None
            except OSError as exc:  # a path through a regular file, a name too long, ...
                raise refuse(f"{shown!r} cannot be opened: {exc.strerror or exc}") from None
            if stat.S_ISLNK(st.st_mode):
                raise refuse(f"{shown!r} goes through a symbolic link ({part!r})")
        assert st is not None
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"{shown!r} is not a regular file")
        if st.st_nlink > 1:
            raise refuse(f"{shown!r} has {st.st_nlink} hard links; copy the file instead")
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise refuse(
                f"offset {info.get('offset')!r} or length {info.get('length')!r} is not a number"
            ) from None
        if offset < 0 or (length is not None and length < 0):
            raise refuse("offset and length must not be negative")
        end = offset + (length if length is not None else 0)
        if offset > st.st_size or end > st.st_size:
            raise refuse(
                f"offset {offset} + length {length or 0} reaches past the end of {shown!r}"
                f" ({st.st_size} bytes)"
            )
        total += (length if length is not None else st.st_size - offset)
        if total > cap:
            raise LoadError(
                f"{label}: its external data adds up to more than the {cap}-byte cap (tensors"
                " that share bytes count each time); pass max_bytes= to load() to raise it"
            )
    return total


def _read_external_into(tensor: onnx.TensorProto, folder: Path, label: str) -> None:
    """Read a checked tensor's external bytes into ``raw_data``; it is no longer external."""
    from onnx import TensorProto

    location, offset, length = external_range(tensor)
    try:
        fd = os.open(Path(folder) / location, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            f.seek(offset)
            data = f.read() if length is None else f.read(length)
    except OSError as exc:
        raise LoadError(f"cannot read the external data of {label}: {exc}") from exc
    if length is not None and len(data) != length:
        raise LoadError(f"{label}: the external data of {tensor.name!r} is shorter than stated")
    tensor.raw_data = data
    tensor.data_location = TensorProto.DEFAULT
    del tensor.external_data[:]


def session_config(proto: onnx.ModelProto, folder: Path | None) -> dict[str, str]:
    """onnxruntime session config entries that let a model given as bytes find its external
    data (already checked) in ``folder``: onnxruntime reads it without it passing through us."""
    if folder is None or not has_external_data(proto):
        return {}
    return {ORT_EXTERNAL_FOLDER_KEY: str(Path(folder).resolve())}


def iter_tensors(
    proto: onnx.ModelProto, *, initializers: bool = True
) -> Iterator[onnx.TensorProto]:
    """Every TensorProto in the model: initializers, sparse initializers (values and indices),
    tensor and sparse-tensor attributes, in subgraphs and functions too (dense initializers
    left out with ``initializers=False``)."""
    from onnx import AttributeProto

    def sparse(s: onnx.SparseTensorProto) -> Iterator[onnx.TensorProto]:
        yield s.values
        yield s.indices

    def graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        if initializers:
            yield from graph.initializer
        for s in graph.sparse_initializer:
            yield from sparse(s)
        for node in graph.node:
            yield from node_tensors(node)

    def node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == AttributeProto.SPARSE_TENSOR:
                yield from sparse(attr.sparse_tensor)
            elif attr.type == AttributeProto.SPARSE_TENSORS:
                for s in attr.sparse_tensors:
                    yield from sparse(s)
            elif attr.type == AttributeProto.GRAPH:
                yield from graph_tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from graph_tensors(g)

    yield from graph_tensors(proto.graph)
    for function in proto.functions:
        for node in function.node:
            yield from node_tensors(node)


# -- writing -----------------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
_TEMP_SUFFIX = ".onnxbridge-tmp"


def _temp_prefix(name: str) -> str:
    return f".{name}.{_HOST}.{os.getpid()}."


def _remove_stale_temps(parent: Path, name: str) -> None:
    """Remove temporary files of writes of ``name`` whose process died (killed mid-write) on
    this host; another host's temporary files in a shared folder are never touched."""
    prefix = f".{name}.{_HOST}."
    for entry in parent.glob(f"{glob.escape(prefix)}*{_TEMP_SUFFIX}"):
        pid_text = entry.name[len(prefix):].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(entry).st_mode):
                    os.unlink(entry)
        except OSError:
            pass  # alive under another user: not ours to touch


def _check_parent(target: Path) -> Path:
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"folder {str(parent)!r} does not exist; create it first")
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(target).st_mode):
            raise ValueError(
                f"{str(target)!r} is a directory; give a file name such as model.onnx")
    return parent


@contextlib.contextmanager
def open_atomic(
    path: str | os.PathLike[str], *, text: bool = False, owner: str | None = None
) -> Iterator[IO[Any]]:
    """Open a new file that replaces ``path`` atomically when the block ends without error.

    The data goes to a fresh temporary file beside ``path`` (created with O_EXCL, so never
    through a planted link), is fsync'ed, gets the permission bits of the regular file it
    replaces (or the umask's for a new one), and is renamed over ``path``: a symlink at
    ``path`` is replaced, not followed. On error the temporary file is removed and ``path`` is
    as it was. Temporary files are named after ``owner`` (default: the file's name), so the
    next write of it removes those a killed writer on this host left.
    """
    target = Path(path)
    parent = _check_parent(target)
    owner = owner or target.name
    _remove_stale_temps(parent, owner)
    try:
        st = os.lstat(target)
        mode = stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else 0o666 & ~_umask()
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(owner), suffix=_TEMP_SUFFIX, dir=parent)
    try:
        f: IO[Any] = (os.fdopen(fd, "w", encoding="utf-8", newline="") if text
                      else os.fdopen(fd, "wb"))
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(parent)


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through :func:`open_atomic`; returns the path."""
    with open_atomic(path, text=isinstance(data, str)) as f:
        f.write(data)
    return Path(path)


def _ours(name: str, location: str) -> bool:
    """Whether ``location`` is a data file a save of ``name`` wrote (so a later save may remove
    it): ``<name>.data`` or ``<name>.<hex>.data``, in the same folder."""
    return re.fullmatch(re.escape(name) + r"(\.[0-9a-f]{8,32})?\.data", location) is not None


def _old_locations(target: Path) -> set[str]:
    """The data files the model now at ``target`` names (empty if none or unreadable)."""
    import onnx

    try:
        if not stat.S_ISREG(os.lstat(target).st_mode):
            return set()
        proto = onnx.ModelProto()
        proto.ParseFromString(target.read_bytes())
        return external_locations(proto)
    except Exception:
        return set()


def save_proto(
    proto: onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    external_data: bool | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    size_threshold: int = EXTERNAL_THRESHOLD,
    limit: int = PROTOBUF_LIMIT,
    move_data: bool = False,
) -> list[Path]:
    """Write ``proto`` atomically; returns the files written.

    One self-contained file while the model fits ``limit`` (protobuf's 2 GB) and holds its
    weights; else (or with ``external_data=True``) the model plus a data file beside it with a
    name of its own, ``<name>.<random>.data``, that the new model names. The data file is
    complete before the model file is switched with one ``os.replace``; data files of the
    model it replaced are removed after. A reader sees the old model with its data or the new
    one with its data, never a mix. Tensors already external (in ``data_dir``) are copied
    from file to file; the caller's proto is never modified, and weights are not copied in
    memory: the new proto is built field by field, tensor by tensor. ``move_data=True`` says
    the files in ``data_dir`` are the caller's own temporary ones: when one of them holds every
    external tensor, it is moved to the new name (and fsync'ed) instead of copied, if both are
    on one file system; the caller's proto then names a file that is gone (OnnxModel.save
    switches the model to the saved files).
    """
    target = Path(path)
    parent = _check_parent(target)
    if external_data is None:
        external_data = has_external_data(proto) or is_large(proto, limit)
    if has_external_data(proto) and data_dir is None:
        raise ValueError("the model's tensors are in external files: pass data_dir= (their folder)")
    old = _old_locations(target)
    written: list[Path] = []
    if external_data:
        data_name = f"{target.name}.{secrets.token_hex(8)}.data"
        try:
            moved = _moved_copy(proto, Path(data_dir), parent, data_name) \
                if move_data and data_dir is not None else None
            if moved is not None:
                out = moved
            else:
                with open_atomic(parent / data_name, owner=target.name) as data:
                    out = _externalized_copy(proto, data, data_name, Path(data_dir or parent),
                                             size_threshold)
            written.append(parent / data_name)
            with open_atomic(target) as f:
                _write_model(f, out)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(parent / data_name)
            raise
    else:
        outside = external_bytes(proto) if has_external_data(proto) else 0
        if is_large(proto, limit) or model_size(proto) + outside > limit:
            raise ValueError("this model is over protobuf's 2 GB limit: save it with"
                             " external_data=True (or leave external_data unset)")
        if has_external_data(proto):  # one self-contained file: read the weights in (a copy)
            proto, _ = load_proto(proto, base_dir=data_dir, keep_external_above=2**62)
        with open_atomic(target) as f:
            _write_model(f, proto)
    written.insert(0, target)
    for location in old:
        if _ours(target.name, location) and (parent / location) not in written:
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(parent / location).st_mode):
                    os.unlink(parent / location)
    return written


def _write_model(f: IO[bytes], proto: onnx.ModelProto) -> None:
    f.write(proto.SerializeToString())


def _tensor_bytes(tensor: onnx.TensorProto) -> bytes | None:
    """The little-endian bytes of an inline tensor (None for strings, which stay inline)."""
    from onnx import TensorProto, numpy_helper

    if tensor.data_type == TensorProto.STRING:
        return None
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return numpy_helper.to_array(tensor).astype(
        numpy_helper.to_array(tensor).dtype.newbyteorder("<")).tobytes()


def _externalized_copy(
    proto: onnx.ModelProto, data: IO[bytes], location: str, source_dir: Path, threshold: int
) -> onnx.ModelProto:
    """A copy of ``proto`` whose dense tensors of at least ``threshold`` bytes are written to
    ``data`` (named ``location`` in the copy); external tensors are copied from their files."""
    import onnx

    def place(src: onnx.TensorProto, dst: onnx.TensorProto) -> None:
        if src.data_location == onnx.TensorProto.EXTERNAL:
            name, offset, length = external_range(src)
            payload = None
        else:
            if src.ByteSize() < threshold:
                dst.CopyFrom(src)
                return
            payload = _tensor_bytes(src)
            if payload is None:
                dst.CopyFrom(src)
                return
            length = len(payload)
        for field, value in src.ListFields():
            if field.name not in _DATA_FIELDS and field.name not in ("external_data",
                                                                      "data_location"):
                _copy_field(dst, field, value)
        pad = -data.tell() % (4096 if (length or 0) >= 2**20 else 64)
        data.write(b"\0" * pad)
        start = data.tell()
        if payload is not None:
            data.write(payload)
        else:
            _copy_range(source_dir / name, offset, length, data)
        dst.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(start)),
                           ("length", str(data.tell() - start))):
            entry = dst.external_data.add()
            entry.key, entry.value = key, value

    def sparse(src: onnx.SparseTensorProto, dst: onnx.SparseTensorProto) -> None:
        dst.dims.extend(src.dims)
        for part in ("values", "indices"):
            tensor = getattr(src, part)
            if tensor.data_location == onnx.TensorProto.EXTERNAL:  # sparse tensors stay inline
                copy = onnx.TensorProto()
                copy.CopyFrom(tensor)
                _read_external_into(copy, source_dir, "the model")
                getattr(dst, part).CopyFrom(copy)
            else:
                getattr(dst, part).CopyFrom(tensor)

    return _mapped_model(proto, place, sparse)


def _mapped_model(proto: onnx.ModelProto, place: TensorCopy, sparse: TensorCopy) -> onnx.ModelProto:
    """A copy of ``proto`` built field by field, every tensor written by ``place``/``sparse``."""
    import onnx

    out = onnx.ModelProto()
    for field, value in proto.ListFields():
        if field.name == "graph":
            copy_graph_mapped(value, out.graph, place, sparse)
        elif field.name == "functions":
            for fn in value:
                new_fn = out.functions.add()
                for f2, v2 in fn.ListFields():
                    if f2.name != "node":
                        _copy_field(new_fn, f2, v2)
                for n in fn.node:
                    copy_node_mapped(n, new_fn.node.add(), place, sparse)
        else:
            _copy_field(out, field, value)
    return out


def _moved_copy(proto: onnx.ModelProto, source_dir: Path, parent: Path,
                data_name: str) -> onnx.ModelProto | None:
    """When one regular file of ``source_dir``, on ``parent``'s file system, holds every
    external tensor, and no sparse or inline tensor needs a place in a data file: move it to
    ``parent / data_name`` (a hard link, then the old name removed: never over an existing
    file), fsync it, and return a copy of ``proto`` naming it (same offsets). Else None, with
    nothing moved."""
    import onnx

    external = onnx.TensorProto.EXTERNAL
    locations = {external_range(t)[0] for t in iter_tensors(proto) if t.data_location == external}
    name = next(iter(locations)) if len(locations) == 1 else ""
    if not name or os.path.basename(name) != name or name in (".", ".."):
        return None
    source = source_dir / name
    try:
        st = os.lstat(source)
        if not stat.S_ISREG(st.st_mode) or st.st_dev != os.stat(parent).st_dev:
            return None
    except OSError:
        return None
    declined: list[str] = []

    def place(src: onnx.TensorProto, dst: onnx.TensorProto) -> None:
        if src.data_location != external and src.data_type != onnx.TensorProto.STRING \
                and src.ByteSize() >= EXTERNAL_THRESHOLD:
            declined.append(src.name)  # the copying writer moves it to the data file
        dst.CopyFrom(src)  # an external tensor's proto holds no data: a few fields
        for entry in dst.external_data:
            if entry.key == "location":
                entry.value = data_name

    def sparse(src: onnx.SparseTensorProto, dst: onnx.SparseTensorProto) -> None:
        if external in (src.values.data_location, src.indices.data_location):
            declined.append(src.values.name)  # saved inline: the copying writer reads it in
        dst.CopyFrom(src)

    out = _mapped_model(proto, place, sparse)
    if declined:
        return None
    target = parent / data_name
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:  # another file system, no hard links here, or the name is taken
        return None
    try:
        os.unlink(source)  # one link left: load refuses data files with more
    except OSError:
        os.unlink(target)
        return None
    try:
        os.chmod(target, 0o666 & ~_umask())
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise
    return out


def _copy_range(path: Path, offset: int, length: int | None, out: IO[bytes]) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        f.seek(offset)
        left = length
        while left is None or left > 0:
            chunk = f.read(1 << 24 if left is None else min(1 << 24, left))
            if not chunk:
                break
            out.write(chunk)
            if left is not None:
                left -= len(chunk)
    if left:
        raise LoadError(f"external data file {path.name!r} is shorter than its model states")

