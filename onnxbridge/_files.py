"""Reading models from paths, bytes and file objects, and saving them atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from onnxbridge.errors import LoadError

if TYPE_CHECKING:
    import onnx

__all__ = ["PROTOBUF_LIMIT", "iter_tensors", "load_proto", "save_proto"]

# protobuf cannot serialise a message of 2 GiB or more; keep a margin for the graph itself.
PROTOBUF_LIMIT = 2**31 - 2**24

# Refuse to read more than this from one model file unless the caller raises the cap.
DEFAULT_MAX_BYTES = 64 * 2**30


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
    try:
        return _read_bounded(stream, max_bytes)
    except TypeError:
        raise LoadError(f"{label} is a text stream; open the file in binary mode ('rb')") from None
    except Exception as exc:
        raise LoadError(f"cannot read the model from {label}: {exc}") from exc


def _parse(data: bytes, label: str, source: Any) -> onnx.ModelProto:
    import onnx
    from google.protobuf.message import DecodeError

    if not data:
        raise LoadError(f"{label} is empty (0 bytes): not an ONNX model", source)
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise LoadError(
            f"{label} is not an ONNX model, or it is truncated or corrupted ({exc})", source
        ) from exc
    if proto.ir_version <= 0 or not proto.HasField("graph") or not proto.opset_import:
        raise LoadError(
            f"{label} is not an ONNX model: it has no IR version, graph or opset", source
        )
    return proto


def load_proto(
    source: Any, *, base_dir: str | os.PathLike[str] | None = None, max_bytes: int | None = None
) -> tuple[onnx.ModelProto, Path | None]:
    """Parse ``source`` into a ModelProto with its external data read in.

    Returns the proto and the folder its external data was read from (None when it has none).
    """
    import onnx
    from onnx import external_data_helper

    cap = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
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
    if not any(external_data_helper.uses_external_data(t) for t in iter_tensors(proto)):
        return proto, None
    if folder is None:
        raise LoadError(
            f"{label} refers to external data files, and bytes or streams carry no folder to"
            " find them in; pass base_dir= (the folder that holds the data files) to load()",
            source,
        )
    if proto is source:  # never fill in the caller's own ModelProto behind their back
        proto = onnx.ModelProto()
        proto.CopyFrom(source)
    try:
        onnx.load_external_data_for_model(proto, str(folder))
    except Exception as exc:
        raise LoadError(f"cannot read the external data of {label}: {exc}", source) from exc
    return proto, folder


def iter_tensors(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto in the model: initializers and tensor attributes, subgraphs included."""
    from onnx import AttributeProto

    def graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        yield from graph.initializer
        for node in graph.node:
            yield from node_tensors(node)

    def node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == AttributeProto.GRAPH:
                yield from graph_tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from graph_tensors(g)

    yield from graph_tensors(proto.graph)
    for function in proto.functions:
        for node in function.node:
            yield from node_tensors(node)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_proto(proto: onnx.ModelProto, path: str | os.PathLike[str], *,
               external_data: bool | None = None) -> list[Path]:
    """Write ``proto`` atomically; returns the files written.

    One self-contained file while the model fits protobuf's 2 GB limit, else (or with
    ``external_data=True``) the model plus ``<name>.data`` beside it. Files are written in a
    temporary folder next to the target and moved into place with ``os.replace``, so a failure
    leaves any previous file untouched. The caller's proto is never modified.
    """
    from onnx import ModelProto, external_data_helper

    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{str(target)!r} is a directory; give a file name such as model.onnx")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"folder {str(parent)!r} does not exist; create it first")
    if external_data is None:
        external_data = proto.ByteSize() > PROTOBUF_LIMIT
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    try:
        written = []
        if external_data:
            data_name = target.name + ".data"
            copy = ModelProto()
            copy.CopyFrom(proto)
            external_data_helper.convert_model_to_external_data(
                copy, all_tensors_to_one_file=True, location=data_name, size_threshold=1024,
                convert_attribute=True,
            )
            external_data_helper.write_external_data_tensors(copy, str(work))
            data_tmp = work / data_name
            if not data_tmp.exists():  # no tensor was large enough to move out
                _write_file(data_tmp, b"")
            with open(data_tmp, "rb+") as f:
                os.fsync(f.fileno())
            _write_file(work / target.name, copy.SerializeToString())
            os.replace(data_tmp, parent / data_name)
            written.append(parent / data_name)
        else:
            _write_file(work / target.name, proto.SerializeToString())
        os.replace(work / target.name, target)
        written.insert(0, target)
        _fsync_dir(parent)
        return written
    finally:
        shutil.rmtree(work, ignore_errors=True)
