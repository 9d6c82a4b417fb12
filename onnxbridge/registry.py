"""Converter registry: plugin discovery through entry points and resolution by class name.

A converter plugin declares ``ConverterSpec`` objects under the entry-point group
``onnxbridge.converters``. A spec names the model classes it handles as fully qualified class-name
strings and its convert function as ``"module:function"``, so dispatch never imports a framework:
the model's own ``type(model).__mro__`` is turned into the same strings and compared.

Discovery (reading entry-point metadata) and loading (importing the small module that holds the
specs) are separate steps; the convert function itself is imported only when a model matches.
A plugin that fails to load becomes one warning and a recorded ``PluginLoadError``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata as importlib_metadata
import os
import pickle
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from onnxbridge.errors import (
    AmbiguousConverterError,
    ConversionError,
    ConverterNotFoundError,
    OnnxBridgeWarning,
    PluginLoadError,
)

if TYPE_CHECKING:
    import onnx

__all__ = [
    "ENTRY_POINT_GROUP",
    "ConversionResult",
    "ConvertOptions",
    "ConverterInfo",
    "ConverterSpec",
    "Registry",
    "class_path",
    "default_registry",
    "mro_paths",
]

ENTRY_POINT_GROUP = "onnxbridge.converters"

# Which onnxbridge extra brings the converter for a model from this top-level package.
EXTRA_FOR_PACKAGE = {
    "torch": "torch",
    "torchvision": "torch",
    "transformers": "torch",
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "catboost": "catboost",
    "keras": "keras",
    "tensorflow": "tensorflow",
    "jax": "jax",
    "jaxlib": "jax",
    "flax": "jax",
}

_CONVERTER_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")


def class_path(cls: type) -> str:
    """The fully qualified name a spec uses for ``cls``: ``"sklearn.base.BaseEstimator"``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def mro_paths(model: object) -> list[str]:
    """Class-name strings of ``type(model).__mro__``, nearest first."""
    return [class_path(c) for c in type(model).__mro__]


@dataclass(frozen=True)
class ConverterSpec:
    """Declares one converter: which model classes it handles and where its function lives.

    Example (in a plugin's light ``specs`` module, imported at discovery):

        SPECS = [ConverterSpec(name="numpy-poly",
                               classes=("numpy.polynomial.polynomial.Polynomial",),
                               converter="onnxbridge_numpy_poly.convert:convert",
                               framework="numpy")]
    """

    name: str
    classes: tuple[str, ...]
    converter: str
    priority: int = 0
    framework: str | None = None
    extra: str | None = None
    description: str = ""
    package: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.classes, str):
            object.__setattr__(self, "classes", (self.classes,))
        else:
            object.__setattr__(self, "classes", tuple(self.classes))
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"ConverterSpec name {self.name!r} is not valid: use letters, digits, '_', '-', '.'"
            )
        if not self.classes:
            raise ValueError(f"ConverterSpec {self.name!r} handles no classes: list at least one")
        for c in self.classes:
            if not isinstance(c, str) or "." not in c:
                raise ValueError(
                    f"ConverterSpec {self.name!r}: class {c!r} must be a fully qualified class-name"
                    " string such as 'sklearn.base.BaseEstimator'"
                )
        if not isinstance(self.converter, str) or not _CONVERTER_REF.match(self.converter):
            raise ValueError(
                f"ConverterSpec {self.name!r}: converter {self.converter!r} must be"
                " 'package.module:function'"
            )
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise ValueError(f"ConverterSpec {self.name!r}: priority must be an int")

    def load(self) -> Callable[..., Any]:
        """Import and return the convert function (this is where the plugin's module loads)."""
        module_name, _, attr = self.converter.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        if not callable(obj):
            raise TypeError(f"{self.converter} is a {type(obj).__name__}, not a function")
        return obj


@dataclass(frozen=True)
class ConverterInfo:
    """One row of ``onnxbridge.converters``: a converter or a plugin that failed to load."""

    name: str
    package: str | None
    classes: tuple[str, ...]
    priority: int
    status: str  # "ok" or "failed"
    error: str | None = None

    def __str__(self) -> str:
        src = self.package or "in-process"
        if self.status != "ok":
            return f"{self.name} [{src}] FAILED: {self.error}"
        return f"{self.name} [{src}] priority={self.priority}: {', '.join(self.classes)}"


@dataclass
class ConvertOptions:
    """What ``to_onnx`` passes to every convert function, besides the model and the sample."""

    opset: int | None = None
    dynamic_batch: bool = True
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # The newest default-domain opset the installed onnxruntime loads: with opset=None, a
    # converter picks min(its own newest well-tested opset, max_opset).
    max_opset: int | None = None

    def target_opset(self, converter_newest: int) -> int:
        """The opset to emit: the user's, else the newest both the converter and onnxruntime take."""
        if self.opset is not None:
            return self.opset
        return min(converter_newest, self.max_opset or converter_newest)

    def pop(self, key: str, default: Any = None) -> Any:
        """Take a converter-specific option; the ones left over are reported as unknown."""
        return self.options.pop(key, default)


@dataclass
class ConversionResult:
    """What a convert function returns (a bare ``onnx.ModelProto`` is accepted too).

    ``reference`` runs the *source* model on a sample in the user's format and returns its
    outputs in the ONNX graph's output order; ``to_onnx`` uses it to verify parity.
    ``output_kinds`` maps output names to ``"label"``, ``"probabilities"`` or ``"value"``.
    """

    proto: onnx.ModelProto
    reference: Callable[[Any], Sequence[Any]] | None = None
    output_kinds: Mapping[str, str] = field(default_factory=dict)
    framework: str | None = None
    framework_version: str | None = None
    tolerances: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Extra samples to verify on (another batch size, say), in the user's sample format.
    extra_samples: Sequence[Any] = ()
    notes: list[str] = field(default_factory=list)
    # The folder holding the external data of ``proto``'s tensors, when a large model's weights
    # stay in files (the proto then holds the graph only); None when every weight is inline.
    data_dir: str | os.PathLike[str] | None = None
    # What keeps ``data_dir`` alive (a TemporaryDirectory, say); the OnnxModel holds it.
    data_owner: Any = None


def _plugins_disabled() -> tuple[bool, set[str]]:
    flag = os.environ.get("ONNXBRIDGE_DISABLE_PLUGINS", "").strip()
    block = os.environ.get("ONNXBRIDGE_BLOCK_PLUGINS", "")
    blocked = {b.strip() for b in block.split(",") if b.strip()}
    return flag.lower() in {"1", "true", "yes", "on"}, blocked


def _entry_point_package(ep: importlib_metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    name = getattr(dist, "name", None) if dist is not None else None
    if name is None and dist is not None:
        name = dist.metadata.get("Name") if getattr(dist, "metadata", None) else None
    return name


def _specs_from_object(obj: Any, plugin: str) -> list[ConverterSpec]:
    """Accept a spec, a list/tuple of specs, or a zero-argument callable returning one of those."""
    if callable(obj) and not isinstance(obj, ConverterSpec):
        obj = obj()
    if isinstance(obj, ConverterSpec):
        obj = [obj]
    if not isinstance(obj, (list, tuple)) or not obj:
        raise TypeError(
            f"entry point must name a non-empty list of ConverterSpec, got {type(obj).__name__}"
        )
    bad = [type(s).__name__ for s in obj if not isinstance(s, ConverterSpec)]
    if bad:
        raise TypeError(f"entry point list holds non-ConverterSpec items: {', '.join(bad)}")
    return list(obj)


class Registry:
    """Holds converter specs, discovers plugins lazily and resolves models to converters."""

    def __init__(
        self,
        entry_points: Iterable[importlib_metadata.EntryPoint] | None = None,
        *,
        discover: bool = True,
    ) -> None:
        self._given_entry_points = list(entry_points) if entry_points is not None else None
        self._discover = discover
        self._specs: dict[str, ConverterSpec] = {}
        self._failures: list[PluginLoadError] = []
        self._loaded = False
        self._lock = threading.RLock()

    # -- discovery -----------------------------------------------------------------------------
    def _entry_points(self) -> list[importlib_metadata.EntryPoint]:
        if self._given_entry_points is not None:
            return self._given_entry_points
        if not self._discover:
            return []
        return list(importlib_metadata.entry_points(group=ENTRY_POINT_GROUP))

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            disabled, blocked = _plugins_disabled()
            # onnxbridge's own converters load first, so no plugin can take a built-in's name.
            eps = sorted(self._entry_points(), key=lambda e: _entry_point_package(e) != "onnxbridge")
            for ep in eps:
                package = _entry_point_package(ep)
                third_party = package != "onnxbridge"
                if third_party and (disabled or ep.name in blocked or package in blocked):
                    continue
                self._load_entry_point(ep, package)
            self._loaded = True

    def _load_entry_point(self, ep: importlib_metadata.EntryPoint, package: str | None) -> None:
        try:
            specs = _specs_from_object(ep.load(), ep.name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a plugin's SystemExit must not take the host down
            self._record_failure(PluginLoadError(ep.name, _describe(exc), package), exc)
            return
        for spec in specs:
            spec = dataclasses.replace(spec, package=package)
            try:
                self._add(spec)
            except ValueError as exc:
                self._record_failure(PluginLoadError(ep.name, str(exc), package), exc)

    def _record_failure(self, error: PluginLoadError, cause: BaseException) -> None:
        error.__cause__ = cause
        self._failures.append(error)
        warnings.warn(
            f"{error}. The other converters still work; `onnxbridge converters` lists them.",
            OnnxBridgeWarning,
            stacklevel=4,
        )

    def _add(self, spec: ConverterSpec, *, replace: bool = False) -> None:
        existing = self._specs.get(spec.name)
        if existing is not None and not replace:
            raise ValueError(
                f"a converter named {spec.name!r} is already registered"
                f" (from {existing.package or 'in-process'}); choose another name"
            )
        self._specs[spec.name] = spec

    # -- public --------------------------------------------------------------------------------
    def register(self, spec: ConverterSpec, *, replace: bool = False) -> ConverterSpec:
        """Add a converter in this process (handy in notebooks); returns the spec."""
        if not isinstance(spec, ConverterSpec):
            raise TypeError(f"register() takes a ConverterSpec, got {type(spec).__name__}")
        self._ensure_loaded()
        with self._lock:
            self._add(spec, replace=replace)
        return spec

    def unregister(self, name: str) -> None:
        """Remove a converter by name (KeyError when absent)."""
        self._ensure_loaded()
        with self._lock:
            del self._specs[name]

    def specs(self) -> list[ConverterSpec]:
        self._ensure_loaded()
        return list(self._specs.values())

    def failures(self) -> list[PluginLoadError]:
        self._ensure_loaded()
        return list(self._failures)

    def get(self, name: str) -> ConverterSpec:
        self._ensure_loaded()
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs)) or "none"
            raise ConverterNotFoundError(
                f"no converter named {name!r}; installed converters: {known}"
            ) from None

    def converters(self) -> list[ConverterInfo]:
        """Every converter with its package and status, then every plugin that failed."""
        self._ensure_loaded()
        rows = [
            ConverterInfo(s.name, s.package, s.classes, s.priority, "ok")
            for s in sorted(self._specs.values(), key=lambda s: s.name)
        ]
        rows += [
            ConverterInfo(f.plugin, f.package, (), 0, "failed", f.reason) for f in self._failures
        ]
        return rows

    def resolve(self, model: object, converter: str | ConverterSpec | None = None) -> ConverterSpec:
        """Pick the converter for ``model``: forced, then nearest in the MRO, then priority."""
        if isinstance(converter, ConverterSpec):
            return converter
        if converter is not None:
            return self.get(converter)
        self._ensure_loaded()
        paths = mro_paths(model)
        ranked: list[tuple[int, int, ConverterSpec]] = []
        for spec in self._specs.values():
            hits = [paths.index(c) for c in spec.classes if c in paths]
            if hits:
                ranked.append((min(hits), -spec.priority, spec))
        if not ranked:
            raise ConverterNotFoundError(self._not_found_message(model, paths))
        ranked.sort(key=lambda r: (r[0], r[1]))
        best = [r for r in ranked if r[:2] == ranked[0][:2]]
        if len(best) > 1:
            names = [r[2].name for r in best]
            raise AmbiguousConverterError(
                f"{len(best)} converters match {paths[0]} equally well"
                f" (same class distance and priority {-best[0][1]}): {', '.join(names)}."
                " Pass converter=NAME to to_onnx() to choose one, or give one spec a higher"
                " priority.",
                candidates=names,
            )
        return best[0][2]

    def _not_found_message(self, model: object, paths: list[str]) -> str:
        # the nearest class from a known framework: a user's subclass lives in its own module
        tops = [p.split(".")[0] for p in paths]
        top = next((t for t in tops if t in EXTRA_FOR_PACKAGE), type(model).__module__.split(".")[0])
        installed = ", ".join(sorted(self._specs)) or "none"
        lines = [f"no converter handles a model of type {paths[0]}."]
        lines.append(f"Installed converters: {installed}.")
        if self._failures:
            failed = "; ".join(f"{f.plugin} ({f.reason})" for f in self._failures)
            lines.append(f"Plugins that failed to load: {failed}.")
        extra = EXTRA_FOR_PACKAGE.get(top)
        if extra:
            lines.append(f'Install its converter with: pip install "onnxbridge[{extra}]"')
        else:
            lines.append(
                "Install a plugin that handles it, or register one with"
                " onnxbridge.register(ConverterSpec(...)) (see docs/writing-a-plugin.md)."
            )
        return "\n".join(lines)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_default: Registry | None = None
_default_lock = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry that ``to_onnx`` uses (discovered on first use)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Registry()
    return _default


def reset_default_registry() -> None:
    """Forget discovered plugins so the next call discovers again (tests, after pip install)."""
    global _default
    with _default_lock:
        _default = None


def wrap_converter_failure(spec: ConverterSpec, exc: BaseException) -> ConversionError:
    """Wrap any exception from a converter in ConversionError naming the converter."""
    if isinstance(exc, ConversionError):
        if exc.converter is None:
            exc.converter = spec.name
        return exc
    err = ConversionError(
        f"converter {spec.name!r} ({spec.package or 'in-process'}) failed: {_describe(exc)}",
        converter=spec.name,
    )
    err.__cause__ = exc
    return err


# Tensors up to this size are hashed byte by byte; larger ones by their version counter.
FULL_HASH_BYTES = 2**20


class _DigestWriter:
    """A file-like object that feeds what is written into a hash (pickle streams into it)."""

    def __init__(self, digest: Any) -> None:
        self.digest = digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)


def model_fingerprint(model: object) -> str | None:
    """A digest of the model's state, to prove a converter did not change it (None: unknown).

    Costs little memory, whatever the model's size. PyTorch modules: every parameter and
    buffer's name, dtype, shape, strides, device and storage address, with its bytes when it is
    at most 1 MiB and its autograd version counter (bumped by every in-place operation) when
    larger; plus the train/eval flags. What it can miss: a large tensor written without
    bumping the counter (through ``.data``, ``.numpy()`` or a raw pointer), and plain Python
    attributes of modules. Keras models: their weights (a pickled Keras model holds the time
    it was saved). Anything else is pickled straight into a streaming hash (no copy of
    the pickle is held); objects that cannot be pickled are not checked.
    """
    import hashlib  # here, not at import: loading OpenSSL cost `import onnxbridge` ~7 ms

    digest = hashlib.blake2b(digest_size=16)
    state_dict = getattr(model, "state_dict", None)
    modules = getattr(model, "modules", None)
    if callable(state_dict) and callable(modules):
        try:
            import torch  # only reached for a torch-like model, so torch is already imported

            for key, value in state_dict(keep_vars=True).items():
                tensor = value.detach() if isinstance(value, torch.Tensor) else value
                if not isinstance(tensor, torch.Tensor):
                    digest.update(f"{key}={value!r}".encode())
                    continue
                size = tensor.numel() * tensor.element_size()
                facts = (key, str(tensor.dtype), tuple(tensor.shape), tuple(tensor.stride()),
                         str(tensor.device), tensor.data_ptr() if size else 0,
                         int(getattr(value, "_version", 0)) if size > FULL_HASH_BYTES else 0)
                digest.update(repr(facts).encode())
                if 0 < size <= FULL_HASH_BYTES:
                    flat = tensor.cpu().contiguous().view(-1)
                    digest.update(flat.view(dtype=torch.uint8).numpy().tobytes())
            digest.update(bytes(int(bool(m.training)) for m in modules()))
            return digest.hexdigest()
        except Exception:
            return None
    if any(p.startswith("keras.") for p in mro_paths(model)):
        # A pickled Keras model holds the time it was saved: hash its weights instead. One not
        # built yet gets its weights from the converter's first call, which is not a change.
        try:
            if not getattr(model, "built", True):
                return None
            for weight in model.weights:  # type: ignore[attr-defined]
                digest.update(weight.path.encode())
                digest.update(memoryview(weight.numpy()).cast("B"))
            return digest.hexdigest()
        except Exception:
            return None
    try:
        pickle.dump(model, _DigestWriter(digest), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None
    return digest.hexdigest()


def check_model_proto(proto: Any, spec: ConverterSpec) -> None:
    """The converter contract: a ModelProto that onnx.checker accepts (checked without its
    weights when they are in external files or over protobuf's limit)."""
    import onnx

    from onnxbridge._files import checker_findings

    if not isinstance(proto, onnx.ModelProto):
        raise ConversionError(
            f"converter {spec.name!r} returned {type(proto).__name__}, not an onnx.ModelProto"
            " or ConversionResult; this is a bug in the converter",
            converter=spec.name,
        )
    findings = checker_findings(proto)
    if findings:
        raise ConversionError(
            f"converter {spec.name!r} produced a model that onnx.checker rejects: {findings[0]}",
            converter=spec.name,
        )


def call_converter(
    spec: ConverterSpec, model: object, sample: Any, options: ConvertOptions
) -> ConversionResult:
    """Run ``spec``'s convert function under the contract every converter must keep."""
    try:
        function = spec.load()
    except Exception as exc:
        err = ConversionError(
            f"converter {spec.name!r} ({spec.package or 'in-process'}) could not be imported"
            f" from {spec.converter}: {_describe(exc)}."
            + (f' Try: pip install "onnxbridge[{spec.extra}]"' if spec.extra else ""),
            converter=spec.name,
        )
        raise err from exc
    before = model_fingerprint(model)
    try:
        out = function(model, sample, options)
    except Exception as exc:  # SystemExit and KeyboardInterrupt from a converter call propagate
        raise wrap_converter_failure(spec, exc) from exc
    result = out if isinstance(out, ConversionResult) else ConversionResult(proto=out)
    check_model_proto(result.proto, spec)
    if before is not None and model_fingerprint(model) != before:
        raise ConversionError(
            f"converter {spec.name!r} modified the model it was given; a converter must leave"
            " the user's model untouched. Report this to the plugin's authors.",
            converter=spec.name,
        )
    if options.options:
        unknown = ", ".join(sorted(options.options))
        raise ConversionError(
            f"converter {spec.name!r} does not know the option(s): {unknown}",
            converter=spec.name,
        )
    return result
