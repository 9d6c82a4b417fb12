"""onnxbridge.load from https:// and hf:// URLs, against HTTP servers on 127.0.0.1 started here."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from conftest import make_scale_model

import onnxbridge
from onnxbridge import LoadError


class Handler(http.server.BaseHTTPRequestHandler):
    """/files/NAME serves a file (with Range); other prefixes misbehave on purpose."""

    files: ClassVar[dict[str, bytes]] = {}
    log: ClassVar[list[tuple[str, str | None]]] = []
    redirect_to: ClassVar[str] = ""
    truncated_once: ClassVar[set[str]] = set()

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass

    def _send(self, data: bytes, length: int | None = None, status: int = 200,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)

    def do_GET(self) -> None:
        self.log.append((self.path, self.headers.get("Range")))
        kind, _, name = self.path.lstrip("/").partition("/")
        if kind == "hub":  # /hub/org/repo/resolve/main/NAME, as the Hugging Face Hub lays it out
            name = name.split("/resolve/main/", 1)[-1]
            kind = "files"
        data = self.files.get(name)
        if data is None:
            self.send_error(404)
            return
        if kind == "files":
            start = 0
            rng = self.headers.get("Range")
            if rng:
                start = int(rng.split("=")[1].split("-")[0])
                self._send(data[start:], len(data) - start, 206,
                           {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
            else:
                self._send(data, len(data))
        elif kind == "lie-long":  # announces more than it sends, then hangs up
            self._send(data, len(data) + 1000)
            self.close_connection = True
        elif kind == "lie-short":  # announces less than the file
            self._send(data, len(data) - 100)
        elif kind == "no-length":  # no Content-Length at all: read until the server hangs up
            self._send(data)
            self.close_connection = True
        elif kind == "truncate":  # the first answer stops halfway; later ones honour Range
            if name not in self.truncated_once and not self.headers.get("Range"):
                self.truncated_once.add(name)
                self._send(data[: len(data) // 2], len(data))
                self.close_connection = True
            else:
                self.path = f"/files/{name}"
                self.log.pop()
                self.do_GET()
        elif kind == "redirect":
            self.send_response(302)
            self.send_header("Location", f"{self.redirect_to}/files/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif kind in ("redirect-file", "redirect-http"):
            self.send_response(302)
            target = "file:///etc/passwd" if kind == "redirect-file" else "http://example.invalid/m.onnx"
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)


def _serve() -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    monkeypatch.setenv("ONNXBRIDGE_CACHE", str(tmp_path / "cache"))
    Handler.files, Handler.log, Handler.truncated_once = {}, [], set()
    main, main_url = _serve()
    other, other_url = _serve()  # "elsewhere": another host:port
    Handler.redirect_to = other_url
    yield main_url, other_url
    main.shutdown()
    other.shutdown()


def _model_bytes(features: int = 300) -> tuple[bytes, onnxbridge.OnnxModel]:
    m = onnxbridge.load(make_scale_model(np.arange(features, dtype=np.float32), features=features))
    return m.to_bytes(), m


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_https_needs_a_checksum_and_uses_the_cache(servers: tuple[str, str]) -> None:
    url, _ = servers
    data, m = _model_bytes()
    Handler.files["m.onnx"] = data
    with pytest.raises(LoadError, match="needs the file's checksum"):
        onnxbridge.load(f"{url}/files/m.onnx")
    assert Handler.log == []  # refused before any request
    loaded = onnxbridge.load(f"{url}/files/m.onnx", sha256=sha(data))
    x = np.ones((2, 300), np.float32)
    np.testing.assert_array_equal(loaded.run(x), m.run(x))
    onnxbridge.load(f"{url}/files/m.onnx", sha256=sha(data))
    assert len(Handler.log) == 1  # the second load came from the cache
    assert onnxbridge.load(f"{url}/files/m.onnx", trust=True).output_names == ["y"]
    with pytest.raises(LoadError, match="not an https"):
        onnxbridge.load("http://example.com/m.onnx", trust=True)


def test_wrong_file_for_the_checksum_is_refused(servers: tuple[str, str], tmp_path: Path) -> None:
    url, _ = servers
    data, _m = _model_bytes()
    other, _ = _model_bytes(301)
    Handler.files["m.onnx"] = other
    with pytest.raises(LoadError, match=r"does not match its checksum: expected sha256 " + sha(data)):
        onnxbridge.load(f"{url}/files/m.onnx", sha256=sha(data))
    assert not list((tmp_path / "cache").rglob("m.onnx*"))  # nothing kept


def test_lying_sizes_and_size_cap(servers: tuple[str, str]) -> None:
    url, _ = servers
    data, _m = _model_bytes()
    Handler.files["m.onnx"] = data
    with pytest.raises(LoadError, match="interrupted|stopped at"):
        onnxbridge.load(f"{url}/lie-long/m.onnx", sha256=sha(data))
    with pytest.raises(LoadError, match="does not match its checksum"):
        onnxbridge.load(f"{url}/lie-short/m.onnx", sha256=sha(data))
    with pytest.raises(LoadError, match="over the size cap"):
        onnxbridge.load(f"{url}/files/m.onnx", sha256=sha(data), max_bytes=len(data) - 1)
    with pytest.raises(LoadError, match="sent more than the size cap"):
        onnxbridge.load(f"{url}/no-length/m.onnx", sha256=sha(data), max_bytes=len(data) - 1)
    assert onnxbridge.load(f"{url}/no-length/m.onnx", sha256=sha(data)).output_names == ["y"]


def test_truncated_download_resumes_with_a_range_request(servers: tuple[str, str]) -> None:
    url, _ = servers
    data, _m = _model_bytes()
    Handler.files["m.onnx"] = data
    with pytest.raises(LoadError, match="load again to resume"):
        onnxbridge.load(f"{url}/truncate/m.onnx", sha256=sha(data))
    loaded = onnxbridge.load(f"{url}/truncate/m.onnx", sha256=sha(data))
    assert loaded.output_names == ["y"]
    assert Handler.log[-1][1] == f"bytes={len(data) // 2}-"  # only the missing half was asked for


def test_redirects(servers: tuple[str, str]) -> None:
    url, _other = servers
    data, _m = _model_bytes()
    Handler.files["m.onnx"] = data
    with pytest.raises(LoadError, match="redirected to another host"):
        onnxbridge.load(f"{url}/redirect/m.onnx", trust=True)
    loaded = onnxbridge.load(f"{url}/redirect/m.onnx", sha256=sha(data))  # the checksum vouches
    assert loaded.output_names == ["y"]
    assert Handler.log[-1][0] == "/files/m.onnx"
    with pytest.raises(LoadError, match="example.invalid/m.onnx', which is not https; refused"):
        onnxbridge.load(f"{url}/redirect-http/m.onnx", sha256=sha(data))
    with pytest.raises(LoadError, match="file:///etc/passwd"):
        onnxbridge.load(f"{url}/redirect-file/m.onnx", sha256=sha(data))


def test_hf_scheme_and_external_data(servers: tuple[str, str], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = servers
    monkeypatch.setenv("ONNXBRIDGE_HF_ENDPOINT", f"{url}/hub")
    _data, m = _model_bytes(4096)
    (tmp_path / "src").mkdir()
    path = m.save(tmp_path / "src" / "model.onnx", external_data=True)
    files = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    assert len(files) == 2
    data_name = next(n for n in files if n != "model.onnx")
    Handler.files.update(files)
    source = "hf://org/repo/model.onnx"
    with pytest.raises(LoadError, match=f"keeps its weights in '{data_name}'"):
        onnxbridge.load(source, sha256=sha(files["model.onnx"]))
    hashes = {n: sha(b) for n, b in files.items()}
    loaded = onnxbridge.load(source, sha256=hashes)
    x = np.ones((1, 4096), np.float32)
    np.testing.assert_array_equal(loaded.run(x), m.run(x))
    assert ("/hub/org/repo/resolve/main/model.onnx", None) in Handler.log
    Handler.files[data_name] = files[data_name][:-4] + b"\0\0\0\1"
    assert onnxbridge.load("hf://org/repo@main/model.onnx", sha256=hashes)  # intact in the cache
    monkeypatch.setenv("ONNXBRIDGE_CACHE", str(tmp_path / "fresh-cache"))
    with pytest.raises(LoadError, match=rf"{data_name}' does not match its checksum"):
        onnxbridge.load("hf://org/repo@main/model.onnx", sha256=hashes)
    with pytest.raises(LoadError, match="not a Hub file"):
        onnxbridge.load("hf://org/model.onnx", trust=True)
