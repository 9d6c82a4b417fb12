"""A local, verified catalog of models: ``onnxbridge.zoo.Zoo(path)``.

Each entry is a folder ``<root>/<name>/<version>/`` with the ONNX model (and its external data),
optionally the source model file it was converted from, and ``manifest.json``: the sha256 and size
of every file, provenance, the parity report, the signature and the framework versions. Models that
could not be converted are entries too, with the reason, the onnxbridge version and the fallback
the team chose, so ``list()`` is the whole inventory. Loading checks every file's hash first; a
changed, missing or extra file is refused with its name.

Examples:
    >>> from onnxbridge.zoo import Zoo                                      # doctest: +SKIP
    >>> zoo = Zoo("models/")                                                # doctest: +SKIP
    >>> zoo.add(m, "churn", tags=["tabular"])                               # doctest: +SKIP
    >>> zoo.load("churn")                                                   # doctest: +SKIP
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxbridge.errors import LoadError, OnnxBridgeError

if TYPE_CHECKING:
    from onnxbridge.model import OnnxModel

__all__ = ["Zoo", "ZooEntry", "ZooError", "sha256_file"]

MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ZooError(OnnxBridgeError):
    """A zoo operation was refused: an entry that exists already, a name that is not allowed, an
    entry that is not there."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
        raise ZooError(
            f"{kind} {value!r} is not allowed: use letters, digits, '.', '_' and '-' (starting with a"
            " letter or digit, at most 128 characters)"
        )
    return value


def _version_key(version: str) -> tuple[Any, ...]:
    """Natural order: 2 < 10, 1.2 < 1.10."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-_]", version))


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("onnxbridge", "onnx", "onnxruntime", "onnxruntime-gpu"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


@dataclass
class ZooEntry:
    """One entry of a zoo: its folder and its manifest."""

    name: str
    version: str
    path: Path
    manifest: dict[str, Any]

    @property
    def status(self) -> str:
        """``"converted"`` or ``"unconverted"`` (recorded with its reason and fallback)."""
        return str(self.manifest.get("status", "converted"))

    @property
    def tags(self) -> list[str]:
        return list(self.manifest.get("tags", []))

    @property
    def framework(self) -> str:
        return str(self.manifest.get("framework") or "")

    @property
    def model_path(self) -> Path | None:
        model = self.manifest.get("model")
        return self.path / model if model else None

    @property
    def source_path(self) -> Path | None:
        source = self.manifest.get("source")
        return self.path / source if source else None

    def summary(self) -> str:
        """One line for ``zoo ls``."""
        if self.status == "unconverted":
            m = self.manifest
            what = f"NOT CONVERTED ({m.get('reason', '?')}); fallback: {m.get('fallback')}"
        else:
            size = self.manifest.get("size", 0)
            parity = self.manifest.get("parity_summary") or "parity not recorded"
            what = f"{self.framework or 'onnx'} {size:,} bytes; {parity}"
        tags = f" [{', '.join(self.tags)}]" if self.tags else ""
        return f"{self.name}:{self.version}{tags}  {what}"


class Zoo:
    """A folder of verified models. Nothing is overwritten unless ``overwrite=True`` is passed."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)

    # -- adding -------------------------------------------------------------------------------
    def _next_version(self, name: str) -> str:
        existing = [e.version for e in self.list() if e.name == name]
        numbers = [int(v) for v in existing if v.isdigit()]
        return str(max(numbers, default=0) + 1)

    def _target(self, name: str, version: str | None, overwrite: bool) -> tuple[str, Path]:
        _check_name("name", name)
        version = self._next_version(name) if version is None else _check_name("version", str(version))
        target = self.root / name / version
        if target.exists() and not overwrite:
            raise ZooError(
                f"{name}:{version} is already in the zoo at {str(target)!r}; pick another version, or"
                " pass overwrite=True to replace it"
            )
        return version, target

    def _commit(self, staging: Path, target: Path) -> None:
        """Move a finished entry into place (one rename; an old entry is replaced only after)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    @contextlib.contextmanager
    def _staged(self, target: Path) -> Iterator[Path]:
        """A staging folder in the zoo that becomes ``target`` when the block ends without an
        error, and is removed when it does not (a failed add leaves nothing behind)."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            yield staging
            self._commit(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _files(self, folder: Path) -> dict[str, dict[str, Any]]:
        files = {}
        for p in sorted(folder.rglob("*")):
            if p.is_file() and p.name != MANIFEST:
                rel = p.relative_to(folder).as_posix()
                files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
        return files

    def _write_manifest(self, folder: Path, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        (folder / MANIFEST).write_text(text, encoding="utf-8")

    def _copy_source(self, source: str | os.PathLike[str] | None, staging: Path) -> str | None:
        if source is None:
            return None
        src = Path(source)
        if not src.is_file():
            raise ZooError(f"source file {str(src)!r} does not exist (give the file the model was saved to)")
        (staging / "source").mkdir()
        shutil.copyfile(src, staging / "source" / src.name)
        return f"source/{src.name}"

    def add(
        self, model: Any, name: str, version: str | None = None, *, tags: Iterable[str] = (),
        sample: Any = None, source: str | os.PathLike[str] | None = None, description: str = "",
        fallback: str | None = None, overwrite: bool = False, external_data: bool | None = None,
        **to_onnx_options: Any,
    ) -> ZooEntry:
        """Store a model and its manifest; returns the entry.

        ``model`` is an OnnxModel, a path to an .onnx file, or a trained framework model (then
        ``sample`` is required and it is converted and verified with ``onnxbridge.to_onnx``).
        ``source`` copies the file the source model was saved to (a .skops, .pt2, .json ...) into
        the entry. ``external_data=True`` keeps the weights in a file beside the model (automatic
        above 2 GB); every file is hashed either way. With ``fallback=`` a conversion that fails
        is recorded as an unconverted entry (the error as its reason) instead of raising.
        ``version=None`` takes the next number.
        """
        from onnxbridge import _api

        version, target = self._target(name, version, overwrite)
        if isinstance(model, _api.OnnxModel):
            m = model
        elif isinstance(model, (str, os.PathLike)) and str(model).endswith(".onnx"):
            m = _api.load(model)
        else:
            if sample is None:
                raise ZooError(
                    f"{type(model).__name__} is not an OnnxModel: pass sample= so it can be converted"
                    " and verified, or convert it first with onnxbridge.to_onnx"
                )
            try:
                m = _api.to_onnx(model, sample, **to_onnx_options)
            except OnnxBridgeError as exc:
                if fallback is None:
                    raise
                return self.record_unconverted(
                    name, reason=f"{type(exc).__name__}: {str(exc).splitlines()[0]}", fallback=fallback,
                    version=version, tags=tags, source=source, description=description,
                    framework=type(model).__module__.split(".")[0], overwrite=overwrite,
                )
        with self._staged(target) as staging:
            m.save(staging / MODEL_FILE, external_data=external_data)
            source_rel = self._copy_source(source, staging)
            files = self._files(staging)
            meta = m.metadata
            parity = meta.get("onnxbridge.parity")
            manifest = {
                "format": FORMAT, "name": name, "version": version, "status": "converted",
                "created": _now(), "tags": sorted(set(tags)), "description": description,
                "model": MODEL_FILE, "source": source_rel, "files": files,
                "size": sum(f["size"] for f in files.values() ),
                "signature": {
                    "inputs": [{"name": s.name, "type": s.type,
                                "shape": None if s.shape is None else list(s.shape)} for s in m.inputs],
                    "outputs": [{"name": s.name, "type": s.type,
                                 "shape": None if s.shape is None else list(s.shape)} for s in m.outputs],
                },
                "framework": meta.get("onnxbridge.framework", ""),
                "framework_version": meta.get("onnxbridge.framework_version", ""),
                "converter": meta.get("onnxbridge.converter", ""),
                "opset": m.opset,
                "provenance": {k: v for k, v in meta.items()
                               if k not in ("onnxbridge.parity", "onnxbridge.inputs", "onnxbridge.outputs")},
                "parity": json.loads(parity) if parity else None,
                "parity_summary": meta.get("onnxbridge.parity_summary"),
                "versions": _versions(),
            }
            self._write_manifest(staging, manifest)
        return self.get(name, version)

    def record_unconverted(
        self, name: str, *, reason: str, fallback: str, version: str | None = None,
        tags: Iterable[str] = (), source: str | os.PathLike[str] | None = None, description: str = "",
        framework: str = "", overwrite: bool = False,
    ) -> ZooEntry:
        """Record a model that could not be converted: why, with which onnxbridge, and what the
        team does instead (``fallback``: "served by the PyTorch service", "kept as skops" ...)."""
        if not reason or not fallback:
            raise ZooError("an unconverted model needs both reason= and fallback=")
        version, target = self._target(name, version, overwrite)
        with self._staged(target) as staging:
            source_rel = self._copy_source(source, staging)
            files = self._files(staging)
            manifest = {
                "format": FORMAT, "name": name, "version": version, "status": "unconverted",
                "created": _now(), "tags": sorted(set(tags)), "description": description,
                "model": None, "source": source_rel, "files": files,
                "size": sum(f["size"] for f in files.values()), "framework": framework,
                "reason": reason, "fallback": fallback, "versions": _versions(),
            }
            self._write_manifest(staging, manifest)
        return self.get(name, version)

    # -- reading ------------------------------------------------------------------------------
    def list(self) -> builtins.list[ZooEntry]:
        """Every entry, converted or not, by name then version."""
        entries: builtins.list[ZooEntry] = []
        if not self.root.is_dir():
            return entries
        for manifest in self.root.glob(f"*/*/{MANIFEST}"):
            folder = manifest.parent
            if folder.parent.name.startswith("."):
                continue
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise LoadError(f"zoo manifest {str(manifest)!r} cannot be read: {exc}") from exc
            entries.append(ZooEntry(folder.parent.name, folder.name, folder, data))
        return sorted(entries, key=lambda e: (e.name, _version_key(e.version)))

    def search(
        self, text: str | None = None, *, tag: str | None = None, framework: str | None = None,
        input: str | None = None, status: str | None = None,
    ) -> builtins.list[ZooEntry]:
        """Entries whose name or description contains ``text``, with ``tag``, from ``framework``,
        with an input whose name or type contains ``input`` (``"float"``, ``"X"``), in ``status``."""
        found = []
        for e in self.list():
            m = e.manifest
            if text and text.lower() not in f"{e.name} {m.get('description', '')}".lower():
                continue
            if tag and tag not in e.tags:
                continue
            if framework and framework.lower() not in e.framework.lower():
                continue
            if status and e.status != status:
                continue
            if input:
                ins = (m.get("signature") or {}).get("inputs", [])
                if not any(input in s["name"] or input in s["type"] for s in ins):
                    continue
            found.append(e)
        return found

    def get(self, name: str, version: str | None = None) -> ZooEntry:
        """The entry ``name:version`` (the newest version when None)."""
        entries = [e for e in self.list() if e.name == name]
        if version is not None:
            entries = [e for e in entries if e.version == str(version)]
        if not entries:
            known = sorted({f"{e.name}:{e.version}" for e in self.list()})
            want = name if version is None else f"{name}:{version}"
            raise ZooError(f"{want} is not in the zoo at {str(self.root)!r} (it has {known})")
        return entries[-1]

    def check(self, entry: ZooEntry) -> builtins.list[str]:
        """Every problem with an entry's files: changed, missing or unlisted (empty when intact)."""
        problems = []
        listed = entry.manifest.get("files", {})
        for rel, info in listed.items():
            p = entry.path / rel
            if not p.is_file():
                problems.append(f"{rel}: missing")
            elif p.stat().st_size != info["size"] or sha256_file(p) != info["sha256"]:
                problems.append(f"{rel}: sha256 differs from the manifest (changed since it was added)")
        for p in sorted(entry.path.rglob("*")):
            rel = p.relative_to(entry.path).as_posix()
            if p.is_file() and rel != MANIFEST and rel not in listed:
                problems.append(f"{rel}: not listed in the manifest")
        return problems

    def verify(self, name: str | None = None, version: str | None = None) -> dict[str, builtins.list[str]]:
        """``"name:version" -> problems`` for every entry (or one); all empty when intact."""
        entries = [self.get(name, version)] if name else self.list()
        return {f"{e.name}:{e.version}": self.check(e) for e in entries}

    def load(self, name: str, version: str | None = None) -> OnnxModel:
        """The model ``name:version`` after checking every file against the manifest."""
        from onnxbridge import _api

        entry = self.get(name, version)
        if entry.status != "converted" or entry.model_path is None:
            raise ZooError(
                f"{entry.name}:{entry.version} was not converted ({entry.manifest.get('reason')});"
                f" the team's fallback: {entry.manifest.get('fallback')}"
            )
        problems = self.check(entry)
        if problems:
            raise LoadError(
                f"zoo entry {entry.name}:{entry.version} refused, its files do not match the manifest: "
                + "; ".join(problems), source=str(entry.path),
            )
        return _api.load(entry.model_path)

    # -- removing and exporting -------------------------------------------------------------------
    def remove(self, name: str, version: str) -> None:
        """Delete one entry (a version must be named: nothing is removed by default)."""
        entry = self.get(name, version)
        shutil.rmtree(entry.path)
        if entry.path.parent.is_dir() and not any(entry.path.parent.iterdir()):
            entry.path.parent.rmdir()

    def export(self, name: str, version: str | None, dest: str | os.PathLike[str]) -> Path:
        """Copy one verified entry (model, data, source, manifest) to a new folder ``dest``."""
        entry = self.get(name, version)
        problems = self.check(entry)
        if problems:
            raise LoadError(f"zoo entry {entry.name}:{entry.version} not exported: " + "; ".join(problems))
        out = Path(dest)
        if out.exists():
            raise ZooError(f"{str(out)!r} exists already; export into a new folder")
        shutil.copytree(entry.path, out)
        return out


def _format_signature(specs: Sequence[dict[str, Any]]) -> str:
    return ", ".join(f"{s['name']}: {s['type']} {s['shape']}" for s in specs)
