"""Reading models from paths, bytes and file objects, and saving them atomically."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import stat
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from onnxbridge.errors import LoadError, OnnxBridgeWarning

if TYPE_CHECKING:
    import onnx

__all__ = [
    "PROTOBUF_LIMIT",
    "check_external_data",
    "check_graph",
    "iter_tensors",
    "load_proto",
    "save_proto",
]

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
    # A stream holds one serialized ModelProto (external data comes from files), which protobuf
    # cannot parse past 2 GiB: reading further only fills memory. Its top-level fields are
    # checked as they arrive, so an endless stream of zeros, text or one field repeated fails
    # after its first bytes, with the reason.
    limit = min(max_bytes, 2**31 - 1)
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
    return proto


def check_graph(proto: onnx.ModelProto, label: str, source: Any = None) -> None:
    """onnx.checker's verdict as a LoadError: unknown ops, cycles, duplicate names, bad types.

    Its messages name the node. Models over 2 GB are checked by onnxruntime when a session is
    made instead (the in-memory checker cannot take them).
    """
    import onnx

    if proto.ByteSize() > PROTOBUF_LIMIT or proto.ir_version > onnx.IR_VERSION:
        return  # newer than this onnx package knows: onnxruntime judges it at session creation
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # ValidationError, and anything a corrupted proto provokes
        text = " ".join(str(exc).split())
        raise LoadError(f"{label} is not a valid ONNX graph: {text}", source) from exc


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
    check_external_data(proto, folder, label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unknown keys were reported by our own check
            onnx.load_external_data_for_model(proto, str(folder))
    except Exception as exc:
        raise LoadError(f"cannot read the external data of {label}: {exc}", source) from exc
    return proto, folder


_EXTERNAL_KEYS = {"location", "offset", "length", "checksum", "basepath"}


def check_external_data(proto: onnx.ModelProto, folder: Path, label: str) -> None:
    """Refuse external data that could read outside the model's folder or past a file's end.

    Checked before a byte is read: the location must be a plain relative path inside
    ``folder``; no part of the way may be a symlink; the file must be a regular file with a
    single hard link (a hard link can expose any file on the same disk); offset and length must
    be whole numbers that stay inside the file. Unknown keys are ignored with a warning.
    """
    from onnx import TensorProto

    root = Path(os.path.abspath(folder))
    for tensor in iter_tensors(proto):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        name = tensor.name or "<unnamed>"
        info = {e.key: e.value for e in tensor.external_data}
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
        if "\0" in location or os.path.isabs(location) or location.startswith(("/", "\\")) or (
            len(location) > 1 and location[1] == ":"
        ):
            raise refuse(f"location {location!r} is absolute; it must be relative to the model")
        if ".." in re.split(r"[\\/]", location):
            raise refuse(f"location {location!r} climbs out of the model's folder")
        parts = Path(location).parts
        current = root
        for part in parts:
            current = current / part
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                raise refuse(f"{location!r} does not exist in {str(root)!r}") from None
            if stat.S_ISLNK(st.st_mode):
                raise refuse(f"{location!r} goes through a symbolic link ({part!r})")
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"{location!r} is not a regular file")
        if st.st_nlink > 1:
            raise refuse(f"{location!r} has {st.st_nlink} hard links; copy the file instead")
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
                f"offset {offset} + length {length or 0} reaches past the end of {location!r}"
                f" ({st.st_size} bytes)"
            )


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


def _remove_stale_work_dirs(parent: Path, name: str) -> None:
    """Remove the temporary folders of saves of ``name`` whose process died (killed mid-write)."""
    prefix = f".{name}.onnxbridge-"
    for entry in parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid_text = entry.name[len(prefix):].split("-", 1)[0]
        if not pid_text.isdigit() or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(pid_text)
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass  # alive under another user: not ours to touch


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
    _remove_stale_work_dirs(parent, target.name)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.onnxbridge-{os.getpid()}-", suffix=".tmp",
                                 dir=parent))
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
