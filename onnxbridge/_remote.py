"""``onnxbridge.load("https://...")`` and ``load("hf://org/repo/file.onnx")``.

Downloads go to a local cache (``ONNXBRIDGE_CACHE``, else ``~/.cache/onnxbridge/remote``), resume
from where an interrupted one stopped (an HTTP Range request), stop at a size cap whatever the
server claims, and are checked against a sha256 the caller gives: without one nothing is fetched
unless ``trust=True``. External data files named by the model are fetched beside it under the same
rules, then the files are loaded with the same checks as any local model.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from onnxbridge.errors import LoadError

if TYPE_CHECKING:
    import onnx


__all__ = ["ENV_CACHE", "ENV_HF_ENDPOINT", "fetch_remote", "is_remote", "resolve_url"]

ENV_CACHE = "ONNXBRIDGE_CACHE"
ENV_HF_ENDPOINT = "ONNXBRIDGE_HF_ENDPOINT"  # the Hugging Face Hub's base URL (a mirror, a test server)
HF_DEFAULT = "https://huggingface.co"
DEFAULT_MAX_BYTES = 16 * 2**30
CHUNK = 2**20
MAX_REDIRECTS = 5


def is_remote(source: Any) -> bool:
    return isinstance(source, str) and source.startswith(("https://", "http://", "hf://"))


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url: str, what: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and _loopback(parts.hostname)):
        return parts
    raise LoadError(
        f"{what}: {url!r} is not an https:// URL (plain http is allowed only to this machine);"
        " models are fetched over https only"
    )


def resolve_url(source: str) -> str:
    """The download URL of ``source``: ``hf://org/repo[@revision]/path/file.onnx`` becomes the
    Hub's ``<endpoint>/org/repo/resolve/<revision>/path/file.onnx`` (endpoint from
    ONNXBRIDGE_HF_ENDPOINT, else https://huggingface.co); https URLs stay as they are."""
    if not source.startswith("hf://"):
        _check_url(source, "model URL")
        return source
    parts = source[len("hf://"):].split("/")
    if len(parts) < 3 or any(p in ("", ".", "..") for p in parts):
        raise LoadError(
            f"{source!r} is not a Hub file: write hf://org/repo/path/to/model.onnx"
            " (hf://org/repo@revision/... for a branch, tag or commit)"
        )
    org, repo, path = parts[0], parts[1], parts[2:]
    revision = "main"
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    endpoint = os.environ.get(ENV_HF_ENDPOINT, HF_DEFAULT).rstrip("/")
    q = urllib.parse.quote
    quoted = "/".join(q(p) for p in path)
    url = f"{endpoint}/{q(org)}/{q(repo)}/resolve/{q(revision, safe='')}/{quoted}"
    _check_url(url, f"{source!r} (endpoint {endpoint!r} from {ENV_HF_ENDPOINT})")
    return url


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to https (or to this machine from this machine); to another host
    only when a checksum vouches for what comes back."""

    def __init__(self, origin: urllib.parse.SplitResult, cross_host: bool) -> None:
        self.origin = origin
        self.cross_host = cross_host

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        new = urllib.parse.urlsplit(newurl)
        if new.scheme != "https" and not (new.scheme == "http" and _loopback(new.hostname)
                                          and _loopback(self.origin.hostname)):
            raise LoadError(f"{req.full_url!r} redirected to {newurl!r}, which is not https; refused")
        if new.netloc != self.origin.netloc and not self.cross_host:
            raise LoadError(
                f"{req.full_url!r} redirected to another host ({new.netloc}); with trust=True and"
                " no sha256 nothing vouches for that host's file, so pass sha256= to follow it"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download(url: str, dest: Path, *, sha256: str | None, max_bytes: int, timeout: float) -> None:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``), capped at ``max_bytes``, then check it."""
    if dest.is_file() and sha256 and _sha256_file(dest) == sha256:
        return  # cached and intact
    origin = _check_url(url, "download")
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "onnxbridge", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    opener = urllib.request.build_opener(_Redirects(origin, cross_host=sha256 is not None))
    opener.addheaders = []
    try:
        response = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the partial file is not a prefix of this one: start over
            part.unlink()
            return _download(url, dest, sha256=sha256, max_bytes=max_bytes, timeout=timeout)
        raise LoadError(f"downloading {url!r}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise LoadError(f"downloading {url!r}: {getattr(exc, 'reason', exc)}") from exc
    with response:
        if response.status == 206 and offset:
            content_range = response.headers.get("Content-Range", "")
            if not re.match(rf"bytes {offset}-\d+/", content_range):
                raise LoadError(
                    f"downloading {url!r}: asked to resume at byte {offset}, the server answered"
                    f" {content_range!r}; delete {str(part)!r} to start over"
                )
            mode = "ab"
        else:
            offset, mode = 0, "wb"
        length_header = response.headers.get("Content-Length")
        expected = offset + int(length_header) if length_header and length_header.isdigit() else None
        if expected is not None and expected > max_bytes:
            raise LoadError(
                f"{url!r} is {expected:,} bytes, over the size cap of {max_bytes:,} (max_bytes=)"
            )
        got = offset
        try:
            with open(part, mode) as f:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    got += len(block)
                    if got > max_bytes:
                        f.close()
                        part.unlink()
                        raise LoadError(
                            f"{url!r} sent more than the size cap of {max_bytes:,} bytes (max_bytes=);"
                            " the download was stopped and removed"
                        )
                    f.write(block)
        except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
            have = part.stat().st_size if part.is_file() else 0
            raise LoadError(
                f"downloading {url!r} was interrupted at {have:,} of {expected or '?'} bytes ({exc!r});"
                " load again to resume from there"
            ) from exc
    if expected is not None and got < expected:
        raise LoadError(
            f"downloading {url!r} stopped at {got:,} of the {expected:,} bytes announced;"
            " load again to resume from there"
        )
    if sha256:
        actual = _sha256_file(part)
        if actual != sha256:
            part.unlink()
            raise LoadError(
                f"{url!r} does not match its checksum: expected sha256 {sha256}, got {actual}"
                f" ({got:,} bytes); the file was discarded"
            )
    os.replace(part, dest)


def _iter_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _iter_tensors(attr.g)
            for g in attr.graphs:
                yield from _iter_tensors(g)


def _external_locations(path: Path) -> list[str]:
    import onnx

    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:
        raise LoadError(f"the downloaded file {str(path)!r} is not an ONNX model: {exc}") from exc
    locations = []
    for t in _iter_tensors(proto.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            loc = info.get("location", "")
            if loc and loc not in locations:
                locations.append(loc)
    return locations


def _safe_relative(location: str) -> bool:
    if not location or "\0" in location or "\\" in location or location.startswith("/"):
        return False
    if len(location) > 1 and location[1] == ":":
        return False
    return all(p not in ("", ".", "..") for p in location.split("/"))


def cache_root() -> Path:
    env = os.environ.get(ENV_CACHE)
    return Path(env) if env else Path.home() / ".cache" / "onnxbridge" / "remote"


def fetch_remote(
    source: str, *, sha256: str | Mapping[str, str] | None = None, trust: bool = False,
    max_bytes: int | None = None, timeout: float = 60.0,
) -> Path:
    """Download (or reuse from the cache) a model and its external data from an https or hf://
    URL; returns the local model path, which ``onnxbridge.load`` then reads like any other.

    ``sha256`` is the model file's hash, or a mapping of file name -> hash that also covers its
    external data files. Without it the download is refused unless ``trust=True``.
    """
    url = resolve_url(source)
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if not _safe_relative(name):
        raise LoadError(f"{source!r} does not name a file (the URL must end with the model's file name)")
    if isinstance(sha256, str):
        hashes = {name: sha256.lower()}
    elif sha256 is not None:
        hashes = {str(k): str(v).lower() for k, v in sha256.items()}
    else:
        hashes = {}
    bad = [k for k, v in hashes.items() if not re.fullmatch(r"[0-9a-f]{64}", v)]
    if bad:
        raise LoadError(f"sha256 for {bad} is not 64 hexadecimal digits")
    if name not in hashes and not trust:
        raise LoadError(
            f"loading {source!r} needs the file's checksum: pass sha256='<64 hex digits>' (what"
            " `sha256sum` prints for the file you expect), or trust=True to load it unchecked"
        )
    cap = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    folder = cache_root() / hashlib.sha256(url.encode()).hexdigest()[:24]
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / name
    _download(url, model_path, sha256=hashes.get(name), max_bytes=cap, timeout=timeout)
    for location in _external_locations(model_path):
        if not _safe_relative(location):
            raise LoadError(
                f"{source!r}: external data location {location!r} is not a plain relative path;"
                " refused before downloading it"
            )
        if location not in hashes and not trust:
            raise LoadError(
                f"{source!r} keeps its weights in {location!r}: pass sha256={{{name!r}: ...,"
                f" {location!r}: ...}} with a checksum for each file, or trust=True"
            )
        target = folder / location
        target.parent.mkdir(parents=True, exist_ok=True)
        data_url = urllib.parse.urljoin(url, urllib.parse.quote(location))
        _download(data_url, target, sha256=hashes.get(location), max_bytes=cap, timeout=timeout)
    return model_path
