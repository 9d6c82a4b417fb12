"""Reading trained framework model files (``onnxbridge convert``'s sources) as untrusted data.

Without ``trust`` no loader here may unpickle or import code, or let a malformed file crash the
caller:

- pickle / joblib and TorchScript (.pt/.pth/.ts) need ``trust``: both run code from the file
  (TorchScript runs a module's ``__setstate__`` at load, and TorchScript can write files).
- torch.export (.pt2) archives are checked before torch sees them: every member torch would
  unpickle is scanned with an unpickler that only knows the names of tensors and storages
  (torch's loader falls back to a full pickle load for weights, constants, custom objects and
  sample inputs); symbolic-shape expressions (parsed with ``sympy.sympify``, which evaluates
  Python) and guard code (run with ``exec``) must be plain arithmetic; graph targets must be
  torch operators (no ``torch.save``, no ``os.system`` reached through ``torch.os``); compiled
  AOTInductor members (shared libraries) are refused.
- skops files load only with the types skops trusts by default.
- a TensorFlow SavedModel folder needs ``trust``: ``tf.saved_model.load`` restores graph
  functions that can read and write files when they run.
- XGBoost (.json/.ubj), LightGBM (.txt) and CatBoost (.cbm) files are parsed first in a child
  process, checked (tree children and features in range) and run once on the sample there, so
  a file that crashes the native parser becomes a ``LoadError`` naming it.

Every file is read once into memory and the bytes checked are the bytes loaded.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from onnxbridge.errors import LoadError

__all__ = ["GBDT_SUFFIXES", "PICKLE_SUFFIXES", "TORCHSCRIPT_SUFFIXES", "check_pt2_archive",
           "load_source_model"]

PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib"}
TORCHSCRIPT_SUFFIXES = {".pt", ".pth", ".ts"}
GBDT_SUFFIXES = {".json": "xgboost", ".ubj": "xgboost", ".txt": "lightgbm", ".lgb": "lightgbm",
                 ".cbm": "catboost"}
# A framework file larger than this is refused (they are read into memory whole).
MAX_SOURCE_BYTES = 8 * 2**30
# How long the child process may take to parse and check a tree-model file.
PROBE_TIMEOUT_S = 300.0


def load_source_model(path: str | os.PathLike[str], *, trust: bool = False,
                      sample: Any = None) -> Any:
    """A trained model from a file, by its suffix; code-running formats only with ``trust``.

    ``sample`` (array-like, optional) is what the tree-model check predicts on in the child.
    """
    p = Path(path)
    label = repr(str(path))
    if p.is_dir():
        return _load_saved_model(p, label, trust)
    suffix = p.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        if not trust:
            raise LoadError(
                f"{label} is a pickle/joblib file, and loading one runs any code it contains;"
                " pass --trust if you trust its origin, or save the model with skops (.skops)"
                " or the framework's own format instead", str(path))
        _read(p)  # a clear error for a missing or odd file
        if suffix == ".joblib":
            import joblib

            return joblib.load(p)
        with open(p, "rb") as f:
            return pickle.load(f)  # the user passed --trust
    if suffix in TORCHSCRIPT_SUFFIXES:
        if not trust:
            raise LoadError(
                f"{label} is a TorchScript archive; loading one runs code from it (a module's"
                " __setstate__ runs at load and TorchScript can write files), so it needs"
                " --trust; or save the model with torch.export.save (.pt2), which onnxbridge"
                " checks before loading", str(path))
        data = _read(p)
        import torch

        try:
            return torch.jit.load(io.BytesIO(data), map_location="cpu")
        except RuntimeError as exc:
            raise LoadError(
                f"{label} is not a TorchScript archive ({str(exc).splitlines()[0]}); a plain"
                " state_dict or pickled module needs its Python class: export it with"
                " torch.export.save (.pt2) first", str(path)) from exc
    if suffix == ".skops":
        return _load_skops(_read(p), label, trust)
    if suffix == ".pt2":
        data = _read(p)
        if not trust:
            check_pt2_archive(data, label)
        import torch

        try:
            return torch.export.load(io.BytesIO(data)).module()
        except Exception as exc:
            raise LoadError(f"cannot load the torch.export archive {label}:"
                            f" {type(exc).__name__}: {exc}", str(path)) from exc
    if suffix in GBDT_SUFFIXES:
        kind = GBDT_SUFFIXES[suffix]
        data = _read(p)
        probe_in_child(kind, data, label, sample)
        return _load_gbdt(kind, data, label)
    raise LoadError(
        f"cannot tell what kind of model {label} is from its suffix; use .pt2 (torch.export),"
        " .skops, .json/.ubj (XGBoost), .txt (LightGBM), .cbm (CatBoost), or with --trust"
        " .pt/.pth (TorchScript) and .pkl/.joblib", str(path))


def is_saved_model(p: Path) -> bool:
    """A TensorFlow SavedModel folder (saved_model.pb or .pbtxt at its top)."""
    return p.is_dir() and any((p / name).is_file()
                              for name in ("saved_model.pb", "saved_model.pbtxt"))


def _load_saved_model(p: Path, label: str, trust: bool) -> Any:
    """A TensorFlow SavedModel folder, through tf.saved_model.load, only with ``trust``."""
    if not is_saved_model(p):
        raise LoadError(
            f"{label} is a folder, not a model file; the folders onnxbridge converts are"
            " TensorFlow SavedModels (saved_model.pb at the top), and this one has none", str(p))
    if not trust:
        raise LoadError(
            f"{label} is a TensorFlow SavedModel: loading it restores its TensorFlow graph"
            " functions, which can read and write files when they run; pass --trust if you"
            " trust its origin", str(p))
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise LoadError(f"{label} is a TensorFlow SavedModel and TensorFlow is not installed:"
                        " pip install 'onnxbridge[tensorflow]'", str(p)) from exc
    try:
        return tf.saved_model.load(str(p))
    except Exception as exc:  # TensorFlow's own reasons (a corrupt or partial folder)
        raise LoadError(f"cannot load the TensorFlow SavedModel {label}:"
                        f" {type(exc).__name__}: {exc}", str(p)) from exc


def _read(p: Path) -> bytes:
    label = repr(str(p))
    try:
        if not p.is_file():
            raise LoadError(f"no such model file: {label}", str(p))
        size = p.stat().st_size
        if size > MAX_SOURCE_BYTES:
            raise LoadError(f"{label} is {size} bytes, over the {MAX_SOURCE_BYTES}-byte cap"
                            " for framework files", str(p))
        with open(p, "rb") as f:
            data = f.read(MAX_SOURCE_BYTES + 1)
    except OSError as exc:
        raise LoadError(f"cannot read {label}: {exc.strerror or exc}", str(p)) from exc
    if len(data) > MAX_SOURCE_BYTES:
        raise LoadError(f"{label} grew past the {MAX_SOURCE_BYTES}-byte cap while being read",
                        str(p))
    return data


# -- skops ----------------------------------------------------------------------------------
def _load_skops(data: bytes, label: str, trust: bool) -> Any:
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:
        raise LoadError(f"{label} is not a readable skops file: {exc}", label) from exc
    if untrusted and not trust:
        raise LoadError(
            f"{label} contains types skops does not trust by default: {untrusted};"
            " check them and pass --trust to load anyway", label)
    return skops.io.loads(data, trusted=untrusted or None)


# -- torch.export archives ------------------------------------------------------------------
# What a tensor or a state dict pickles to (torch.save's zip format): nothing here runs code.
_TORCH_GLOBALS = {
    ("collections", "OrderedDict"), ("torch", "Size"), ("torch", "device"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._utils", "_rebuild_qtensor"), ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Tensor"), ("torch.nn.parameter", "Parameter"), ("torch", "strided"),
    ("torch.serialization", "_get_layout"), ("torch.storage", "UntypedStorage"),
    ("torch", "UntypedStorage"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "slice"), ("builtins", "complex"),
}
_STORAGE_OR_DTYPE = re.compile(r"(torch\.cuda\.)?[A-Z][A-Za-z0-9]*Storage|"
                               r"(u?int(8|16|32|64)|float(8_e[0-9a-z]+|16|32|64)|bfloat16|"
                               r"complex(32|64|128)|bool|half|double|long|short|int|float|cfloat|"
                               r"cdouble|chalf|qint8|quint8|qint32)")
# Members of a .pt2 that torch reads as text or JSON, never unpickles.
_TEXT_MEMBERS = {"archive_format", "archive_version", "byteorder", "version", "serialization_id",
                 ".format_version", ".storage_alignment"}
# Targets a graph node may call besides torch.ops.{aten,prims,higher_order}.*.
_OPERATOR_TARGETS = {"getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg",
                     "pos", "abs", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor",
                     "not_", "invert", "lshift", "rshift", "matmul", "truth"}
_ATEN_FILE_OPS = {"save", "from_file", "_save", "load"}  # these read or write files by name
_TARGET = re.compile(r"torch\.ops\.(aten|prims|higher_order)\.([A-Za-z0-9_]+)(\.[A-Za-z0-9_]+)?"
                     r"|_operator\.([a-z_]+)|math\.[a-z0-9_]+|torch\.(_?sym_[a-z_]+|_assert|"
                     r"_assert_async|_check|_check_is_size|_check_with)")
# Functions a symbolic-shape expression may call (sympy's and torch.utils._sympy.functions').
_SYMPY_FUNCTIONS = {
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
    "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "Max", "Min", "Eq", "Ne", "Lt", "Le",
    "Gt", "Ge", "And", "Or", "Not", "Abs", "floor", "ceiling", "sqrt", "Piecewise", "ITE",
    "OpaqueUnaryFn_sqrt", "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "Integer",
    "Rational", "Float", "sym_sum",
}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_MAX_EXPR = 10_000  # characters in one expression or guard


class _Stub:
    """What the scanning unpickler builds instead of any real object."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return _Stub()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _ScanUnpickler(pickle.Unpickler):
    """Walks a pickle through every opcode, allowing only the names of tensors and storages;
    it builds stubs, never a real object, so scanning runs no code even for allowed names."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _TORCH_GLOBALS or (
                module in ("torch", "torch.cuda") and _STORAGE_OR_DTYPE.fullmatch(name)):
            return _Stub
        raise pickle.UnpicklingError(f"it imports {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        return _Stub()


def _scan_pickles(data: bytes) -> None:
    """Every pickle in ``data`` (back to back, as torch's legacy format has them) is harmless."""
    stream = io.BytesIO(data)
    while True:
        _ScanUnpickler(stream).load()
        if stream.tell() >= len(data):
            return


def _scan_member(data: bytes, where: str) -> None:
    try:
        if data[:4] == b"PK\x03\x04":  # torch.save's zip format: its pickles are the *.pkl
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                for info in inner.infolist():
                    base = info.filename.rsplit("/", 1)[-1]
                    if info.filename.endswith(".pkl"):
                        _scan_pickles(inner.read(info))
                    elif base not in _TEXT_MEMBERS and "/data/" not in f"/{info.filename}":
                        raise pickle.UnpicklingError(f"unexpected member {info.filename!r}")
        else:
            _scan_pickles(data)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError,
            AttributeError, IndexError, KeyError, OverflowError, MemoryError,
            RecursionError) as exc:
        raise _Refused(f"member {where!r} would be unpickled by torch and {exc}") from None


class _Refused(Exception):
    pass


def _check_expr(text: Any, where: str, *, guard: bool = False) -> None:
    """A symbolic-shape expression or guard: arithmetic, comparisons, known functions only."""
    if not isinstance(text, str) or len(text) > _MAX_EXPR:
        raise _Refused(f"{where} is not a short expression")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _Refused(f"{where} {text[:80]!r} is not a plain expression") from None
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Call):
            func = node.func
            symbol = (isinstance(func, ast.Name) and func.id == "Symbol" and node.args
                      and isinstance(node.args[0], ast.Constant)
                      and isinstance(node.args[0].value, str) and _NAME.match(node.args[0].value)
                      and "__" not in node.args[0].value
                      and all(isinstance(a, ast.Constant) for a in node.args[1:])
                      and all(isinstance(k.value, ast.Constant) and k.arg is not None
                              and not k.arg.startswith("_") for k in node.keywords))
            ok = symbol or (isinstance(func, ast.Name) and func.id in _SYMPY_FUNCTIONS
                            and not node.keywords) or (
                guard and isinstance(func, ast.Attribute)
                and func.attr in ("size", "stride", "storage_offset", "dim", "numel")
                and not node.args and not node.keywords)
            if not ok:
                raise _Refused(f"{where} {text[:80]!r} calls something that is not arithmetic")
            if symbol:
                continue  # Symbol('s0', positive=True): its arguments were checked above
        elif isinstance(node, ast.Name):
            if not _NAME.match(node.id) or "__" in node.id:
                raise _Refused(f"{where} {text[:80]!r} names {node.id!r}")
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, bool)) and not (
                    isinstance(node.value, str) and _NAME.match(node.value)
                    and "__" not in node.value and text.count("'") + text.count('"') <= 16):
                raise _Refused(f"{where} {text[:80]!r} holds a non-numeric constant")
        elif isinstance(node, ast.Attribute):
            if not guard or node.attr not in ("size", "stride", "storage_offset", "dim", "numel"):
                raise _Refused(f"{where} {text[:80]!r} reads attribute {node.attr!r}")
        elif isinstance(node, ast.Subscript):
            if not guard:
                raise _Refused(f"{where} {text[:80]!r} indexes something")
        elif not isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp,
                                   ast.Compare, ast.operator, ast.unaryop, ast.boolop,
                                   ast.cmpop, ast.expr_context)):
            raise _Refused(f"{where} {text[:80]!r} uses {type(node).__name__}")
        todo.extend(ast.iter_child_nodes(node))


def _check_target(target: str, where: str) -> None:
    m = _TARGET.fullmatch(target)
    if m is None or (m.group(1) == "aten" and m.group(2) in _ATEN_FILE_OPS) or (
            m.group(4) is not None and m.group(4) not in _OPERATOR_TARGETS):
        raise _Refused(f"{where} calls {target[:120]!r}, which is not a torch operator"
                       " onnxbridge accepts from an untrusted file")


def _walk_json(value: Any, where: str) -> Iterator[tuple[str, Any, str]]:
    stack = [(value, where)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                yield str(k), v, path
                stack.append((v, f"{path}.{k}"))
        elif isinstance(node, list):
            stack.extend((v, path) for v in node)


def _check_program_json(text: bytes, where: str) -> None:
    try:
        program = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _Refused(f"member {where!r} is not valid JSON ({exc})") from None
    for key, value, path in _walk_json(program, where):
        if key == "expr_str":
            _check_expr(value, f"a symbolic expression in {where!r}")
        elif key == "guards_code":
            for guard in value if isinstance(value, list) else [value]:
                _check_expr(guard, f"guard code in {where!r}", guard=True)
        elif key == "range_constraints" and isinstance(value, dict):
            for name in value:
                _check_expr(name, f"a range constraint in {where!r}")
        elif key == "target" and path.endswith(".nodes"):
            if not isinstance(value, str):
                raise _Refused(f"a node target in {where!r} is not a string")
            _check_target(value, f"a node in {where!r}")


def _payload_paths(config: Any, folder: str) -> tuple[set[str], set[str]]:
    """(raw tensor members, members torch unpickles) named by a weights/constants config."""
    raw: set[str] = set()
    pickled: set[str] = set()
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise _Refused(f"the payload config in {folder!r} is malformed")
    for meta in entries.values():
        if not isinstance(meta, dict) or not isinstance(meta.get("path_name"), str):
            raise _Refused(f"the payload config in {folder!r} is malformed")
        name = f"{folder}{meta['path_name']}"
        plain_tensor = meta["path_name"].startswith(("weight_", "tensor_"))
        (raw if plain_tensor and meta.get("use_pickle") is False else pickled).add(name)
    return raw, pickled


def check_pt2_archive(data: bytes, label: str) -> None:
    """Refuse a torch.export archive whose loading could run code (see the module docstring)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise LoadError(f"{label} is not a torch.export archive (not a zip file: {exc})",
                        label) from None
    try:
        raw: set[str] = set()
        pickled: set[str] = set()
        for info in infos:
            name = info.filename
            base = name.rsplit("/", 1)[-1]
            if "/aotinductor/" in f"/{name}" or base.endswith((".so", ".dll", ".dylib", ".pyd")):
                raise _Refused(f"it holds compiled code ({name!r}), which loading would run")
            if base.endswith(("_weights_config.json", "_constants_config.json")):
                folder = name[: len(name) - len(base)]
                try:
                    config = json.loads(archive.read(info))
                except (ValueError, RecursionError) as exc:
                    raise _Refused(f"member {name!r} is not valid JSON ({exc})") from None
                r, pk = _payload_paths(config, folder)
                raw |= r
                pickled |= pk
        for info in infos:
            name = info.filename
            base = name.rsplit("/", 1)[-1]
            if info.is_dir() or (name in raw and name not in pickled):
                continue
            if name not in pickled and (base in _TEXT_MEMBERS or "/extra/" in f"/{name}"):
                continue
            folder = name[: len(name) - len(base)]
            if folder.endswith(("data/weights/", "data/constants/")) and name not in pickled \
                    and not base.endswith(".pt"):
                continue  # torch reads these only as raw bytes named by a config, or not at all
            member = archive.read(info)
            if name not in pickled and base.endswith(".json"):
                _check_program_json(member, name)
                continue
            _scan_member(member, name)
    except _Refused as exc:
        raise LoadError(
            f"{label} is refused: {exc}. Loading a .pt2 that does this can run code from the"
            " file; if you trust its origin, pass --trust", label) from None
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
        raise LoadError(f"{label} is not a readable torch.export archive: {exc}", label) from None


# -- tree models in a child process ---------------------------------------------------------
def _sample_array(sample: Any) -> Any:
    """The sample as a 2-D float32 array for the child's check, or None if it is not numeric."""
    if sample is None:
        return None
    import numpy as np

    try:
        values = sample.to_numpy() if hasattr(sample, "to_numpy") else sample
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        return None
    return array if array.ndim == 2 and array.size else None


def probe_in_child(kind: str, data: bytes, label: str, sample: Any = None) -> None:
    """Parse, check and run a tree-model file in a child process; a crash there is a LoadError."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="onnxbridge-probe-") as tmp:
        model = Path(tmp) / "model.bin"
        model.write_bytes(data)
        # -I: no PYTHONPATH, user site or current folder; onnxbridge from where this copy lives.
        root = str(Path(__file__).resolve().parents[1])
        argv = [sys.executable, "-I", "-c", _CHILD, root, kind, str(model), label]
        array = _sample_array(sample)
        if array is not None:
            np.save(Path(tmp) / "sample.npy", array, allow_pickle=False)
            argv.append(str(Path(tmp) / "sample.npy"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                                  env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise LoadError(f"parsing the {kind} model {label} did not finish in"
                            f" {PROBE_TIMEOUT_S:.0f} s; the file may be malformed", label) from None
    framework = {"xgboost": "XGBoost", "lightgbm": "LightGBM", "catboost": "CatBoost"}[kind]
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        raise LoadError(
            f"{label} is a malformed {framework} model: parsing it crashed {framework}'s native"
            f" code ({name}) in a child process. Save the model again with {framework}, or"
            " check where the file came from", label)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        if reason.startswith("onnxbridge-probe: "):
            reason = reason[len("onnxbridge-probe: "):]
            reason = reason.removeprefix("LoadError: ")
        raise LoadError(f"{label} is not a usable {framework} model: {reason[:500]}", label)


def _load_gbdt(kind: str, data: bytes, label: str) -> Any:
    try:
        if kind == "xgboost":
            import xgboost

            booster = xgboost.Booster()
            booster.load_model(bytearray(data))
            return booster
        if kind == "lightgbm":
            import lightgbm

            return lightgbm.Booster(model_str=data.decode("utf-8"))
        import catboost

        # Load into the estimator class its loss belongs to, so predict_proba exists.
        params = catboost.CatBoost().load_model(blob=data).get_all_params()
        loss = str(params.get("loss_function", ""))
        classify = loss.split(":")[0] in {"Logloss", "CrossEntropy", "MultiClass",
                                          "MultiClassOneVsAll"}
        cls = catboost.CatBoostClassifier if classify else catboost.CatBoostRegressor
        return cls().load_model(blob=data)
    except ImportError:
        raise
    except Exception as exc:
        text = " ".join(str(exc).split())[:300]
        raise LoadError(f"cannot load the {kind} model {label}: {text}", label) from exc


def _check_xgboost(booster: Any) -> int:
    model = json.loads(booster.save_raw("json"))
    learner = model["learner"]
    n_features = int(learner["learner_model_param"]["num_feature"])
    booster = learner["gradient_booster"]
    booster = booster.get("gbtree", booster)  # dart keeps its trees one level down
    trees = booster.get("model", {}).get("trees", [])  # gblinear has none
    for t, tree in enumerate(trees):
        n = int(tree["tree_param"]["num_nodes"])
        left, right, feature = tree["left_children"], tree["right_children"], tree["split_indices"]
        if not (len(left) == len(right) == len(feature) == n) or n < 1:
            raise ValueError(f"tree {t} says {n} nodes but its arrays disagree")
        seen = {0}
        for i in range(n):
            children = (left[i], right[i])
            if children == (-1, -1):
                continue
            if not all(i < c < n for c in children) or children[0] == children[1]:
                raise ValueError(f"tree {t} node {i} has children {children} out of range")
            if not 0 <= feature[i] < max(n_features, 1):
                raise ValueError(f"tree {t} node {i} splits on feature {feature[i]}, but the"
                                 f" model has {n_features}")
            if seen & set(children):
                raise ValueError(f"tree {t} node {i} shares a child with another node")
            seen |= set(children)
    return n_features


def _check_lightgbm(booster: Any) -> int:
    model = booster.dump_model()
    n_features = int(model["max_feature_idx"]) + 1
    for t, info in enumerate(model["tree_info"]):
        stack = [(info["tree_structure"], 0)]
        while stack:
            node, depth = stack.pop()
            if depth > 1000:
                raise ValueError(f"tree {t} is deeper than 1000 levels")
            if "split_feature" in node:
                if not 0 <= int(node["split_feature"]) < n_features:
                    raise ValueError(f"tree {t} splits on feature {node['split_feature']}, but"
                                     f" the model has {n_features}")
                stack += [(node["left_child"], depth + 1), (node["right_child"], depth + 1)]
    return n_features


def _child_main(argv: list[str]) -> int:
    """``python -m onnxbridge._sources KIND MODEL LABEL [SAMPLE.npy]``: parse, check, predict."""
    import numpy as np

    kind, model_path, label = argv[0], argv[1], argv[2]
    data = Path(model_path).read_bytes()
    sample = np.load(argv[3], allow_pickle=False) if len(argv) > 3 else None
    booster = _load_gbdt(kind, data, label)
    if kind == "xgboost":
        import xgboost

        n_features = _check_xgboost(booster)
        names = booster.feature_names

        def predict(x: Any) -> Any:
            return booster.predict(xgboost.DMatrix(x, feature_names=names))
    elif kind == "lightgbm":
        n_features = _check_lightgbm(booster)
        predict = booster.predict
    else:
        n_features = len(booster.feature_names_ or [])
        predict = booster.predict
    probes = [np.random.default_rng(0).normal(size=(64, max(n_features, 1))).astype(np.float32)]
    if sample is not None and sample.shape[1] == n_features:
        probes.append(sample)
    for x in probes:
        predict(x)
    return 0


def _child(argv: list[str]) -> int:
    try:
        return _child_main(argv)
    except Exception as exc:  # one line the parent shows
        print(f"onnxbridge-probe: {type(exc).__name__}: {' '.join(str(exc).split())[:400]}",
              file=sys.stderr)
        return 1


_CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); from onnxbridge._sources import _child;"
          " sys.exit(_child(sys.argv[2:]))")

if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
