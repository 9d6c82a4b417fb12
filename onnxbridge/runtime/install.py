"""Which onnxruntime packages are installed, whether they clash, and ``ort()`` to import it."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxbridge.errors import ProviderError

# onnxruntime reports races when sessions are created concurrently: create them one at a time.
_SESSION_LOCK = threading.Lock()


# -- the onnxruntime package itself ------------------------------------------------------------
# onnxruntime ships as one package per flavour (onnxruntime, onnxruntime-gpu, -directml, -openvino
# ...), all installing the same `onnxruntime` folder. Two of them in one environment overwrite each
# other's files: the last installed wins, and uninstalling either breaks the other (onnxruntime
# issue #26996). That is why onnxbridge does not depend on any one of them (extras `cpu`, `gpu`).
@dataclass(frozen=True)
class RuntimePackage:
    """An installed distribution that provides the ``onnxruntime`` module."""

    name: str
    version: str
    folder: str  # where its ``onnxruntime`` folder is


INSTALL_HINT = (
    "install exactly one onnxruntime package: pip install 'onnxbridge[cpu]' (CPU only) or"
    " 'onnxbridge[gpu]' (NVIDIA CUDA and TensorRT); onnxruntime-directml, onnxruntime-openvino and"
    " the other flavours work too"
)


def _onnxruntime_folders() -> list[str]:
    """Where ``import onnxruntime`` would look, found without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return []
    return [os.path.realpath(p) for p in (spec.submodule_search_locations or [])] if spec else []


def runtime_packages(*, importable_only: bool = False) -> list[RuntimePackage]:
    """The installed distributions that put files in an ``onnxruntime`` folder.

    ``importable_only`` looks only beside the folder ``import onnxruntime`` uses (one directory
    listing, for the check made on every first run), instead of every package on sys.path.
    """
    if importable_only:
        # Read straight from the .dist-info folders (name and version are in the folder's
        # name): parsing their METADATA through importlib.metadata cost ~10 ms of a first run.
        quick = {
            package
            for folder in _onnxruntime_folders()
            for entry in _listdir(os.path.dirname(folder))
            if entry.lower().startswith(("onnxruntime", "ort_", "ort-"))
            and entry.endswith(".dist-info")
            and (package := _dist_info_package(Path(os.path.dirname(folder)) / entry)) is not None
        }
        return sorted(quick, key=lambda p: (p.folder, p.name))
    from importlib import metadata

    dists: Iterable[Any] = metadata.distributions()
    found: dict[tuple[str, str], RuntimePackage] = {}
    for dist in dists:
        # The folder's name (onnxruntime_gpu-1.31.1.dist-info) says enough to skip the others
        # without parsing their metadata: reading every package's metadata costs ~100 ms.
        folder_name = os.path.basename(str(getattr(dist, "_path", ""))).lower()
        if folder_name and not folder_name.startswith(("onnxruntime", "ort_", "ort-")):
            continue
        try:
            name = str(dist.name or "").lower().replace("_", "-")
        except (KeyError, AttributeError):  # a distribution without a name: not ours to judge
            continue
        if not (name.startswith("onnxruntime") or name.startswith("ort-")):
            continue
        top = (dist.read_text("top_level.txt") or "").split()
        if "onnxruntime" not in top and not any(  # RECORD only when top_level.txt is silent
            f.parts[:2] == ("onnxruntime", "__init__.py") for f in dist.files or []
        ):
            continue  # onnxruntime-extensions, onnxruntime-genai: other modules
        folder = os.path.realpath(str(dist.locate_file("onnxruntime")))
        found[(name, folder)] = RuntimePackage(name, dist.version or "?", folder)
    return sorted(found.values(), key=lambda p: (p.folder, p.name))


def _dist_info_package(info: Path) -> RuntimePackage | None:
    """The package a ``<name>-<version>.dist-info`` folder installed, if it holds an
    ``onnxruntime`` module (onnxruntime-extensions and onnxruntime-genai hold others)."""
    name, _, version = info.name[: -len(".dist-info")].partition("-")
    name = name.lower().replace("_", "-").replace(".", "-")
    if not (name.startswith("onnxruntime") or name.startswith("ort-")):
        return None
    try:
        top = (info / "top_level.txt").read_text("utf-8", "replace").split()
    except OSError:
        top = []
    if "onnxruntime" not in top:
        try:  # RECORD only when top_level.txt is silent
            record = (info / "RECORD").read_text("utf-8", "replace")
        except OSError:
            return None
        if not any(line.startswith("onnxruntime/__init__.py,") for line in record.splitlines()):
            return None
    folder = os.path.realpath(info.parent / "onnxruntime")
    return RuntimePackage(name, version or "?", folder)


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _build_info(key: str) -> str:
    """A field of the loaded onnxruntime's build_and_package_info ("" when unknown)."""
    try:
        from onnxruntime.capi import build_and_package_info
    except Exception:
        return ""
    return str(getattr(build_and_package_info, key, "") or "")


def loaded_package() -> str | None:
    """Which flavour's files ``import onnxruntime`` loads (``onnxruntime-gpu``, say), if known."""
    return _build_info("package_name") or None


def install_problems() -> list[str]:
    """Two onnxruntime packages in one folder: what is wrong and the command that fixes it."""
    by_folder: dict[str, list[RuntimePackage]] = {}
    for package in runtime_packages(importable_only=True):
        by_folder.setdefault(package.folder, []).append(package)
    problems = []
    for folder, packages in by_folder.items():
        if len(packages) < 2:
            continue
        names = [p.name for p in packages]
        keep = next((n for n in names if n != "onnxruntime"), names[0])
        loaded = loaded_package()
        problems.append(
            f"{' and '.join(f'{p.name} {p.version}' for p in packages)} are installed in the same"
            f" folder ({folder}) and overwrite each other's files"
            + (f"; the files loaded now are {loaded}'s" if loaded else "")
            + f". Keep one: pip uninstall -y {' '.join(names)} && pip install {keep}"
        )
    return problems


def _repair_hint() -> str:
    problems = install_problems()
    if problems:
        return " ".join(problems)
    packages = runtime_packages()
    if packages:
        pins = " ".join(f"{p.name}=={p.version}" for p in packages)
        return f"Reinstall it: pip install --force-reinstall --no-deps {pins}"
    return f"Reinstall it: {INSTALL_HINT}"


def ort() -> Any:
    """The onnxruntime module, or ProviderError saying what to install (or how to repair it)."""
    try:
        import onnxruntime
    except ImportError as exc:
        if runtime_packages():
            raise ProviderError(
                f"onnxruntime is installed but cannot be imported ({exc}). {_repair_hint()}"
            ) from exc
        raise ProviderError(
            f"onnxruntime is not installed; onnxbridge needs it to verify and run models: {INSTALL_HINT}"
        ) from exc
    if not hasattr(onnxruntime, "InferenceSession"):  # a half-removed install: a bare folder
        raise ProviderError(
            "the onnxruntime package is broken: its folder has no InferenceSession (this happens"
            f" when one of two onnxruntime packages in one folder is uninstalled). {_repair_hint()}"
        )
    return onnxruntime


def runtime_installed() -> bool:
    """Whether some onnxruntime package can be imported (without importing it)."""
    return bool(_onnxruntime_folders())
