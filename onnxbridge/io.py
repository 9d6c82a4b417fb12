"""Turning what users pass (numpy, pandas, torch, lists, dicts) into onnxruntime feeds.

Nothing here imports pandas or torch: objects are recognised by their type's module, so a
DataFrame or a tensor is handled only when the user already has that library loaded.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from onnxbridge._frames import frame_feeds
from onnxbridge.errors import InputError
from onnxbridge.signature import TensorSpec, format_shape

__all__ = [
    "CAST_MODES",
    "InputCheck",
    "as_array",
    "batch_size",
    "bind_torch_inputs",
    "check_shared_dims",
    "format_shape",
    "input_checks",
    "is_dataframe",
    "plain_feeds",
    "random_inputs",
    "resize_batch",
    "shared_dims",
    "to_feeds",
]


def _module_of(obj: object) -> str:
    return type(obj).__module__.split(".")[0]


def is_dataframe(obj: object) -> bool:
    return _module_of(obj) == "pandas" and type(obj).__name__ == "DataFrame"


def _is_series(obj: object) -> bool:
    return _module_of(obj) == "pandas" and type(obj).__name__ == "Series"


def is_torch_tensor(obj: object) -> bool:
    return _module_of(obj) == "torch" and hasattr(obj, "detach") and hasattr(obj, "numpy")


# How run() may change an input's dtype: "safe" only when every value is kept (int64 -> int32
# when all values fit, float64 -> float32 when nothing overflows to inf, integers -> floats when
# each is exact), "unsafe" as numpy's astype does (wrap-around, inf, truncation: the caller's
# choice).
CAST_MODES = ("safe", "unsafe")


def as_array(value: Any, name: str = "input") -> np.ndarray:
    """One input as a numpy array (torch tensors are moved to the host, without grad)."""
    if isinstance(value, np.ma.MaskedArray):
        if np.ma.getmask(value) is np.ma.nomask or not np.ma.getmaskarray(value).any():
            return np.ma.getdata(value)  # nothing masked: the values are the data
        raise InputError(
            f"input {name!r} is a masked array with {int(np.ma.getmaskarray(value).sum())} masked"
            " value(s); onnxruntime has no mask, and dropping it would feed the hidden values."
            " Fill them explicitly: x.filled(np.nan) for a model that treats NaN as missing,"
            " or x.filled(value)"
        )
    if isinstance(value, np.ndarray):
        return value
    if is_torch_tensor(value):
        return value.detach().cpu().numpy()
    if _is_series(value) or is_dataframe(value):
        return np.asarray(value.to_numpy())
    if isinstance(value, (str, bytes)):
        return np.asarray([value], dtype=object)
    if value is None:
        raise InputError(f"input {name!r} is None; pass an array (or a DataFrame, list, tensor)")
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise InputError(
            f"input {name!r}: cannot turn a {type(value).__name__} into an array ({exc});"
            " pass a numpy array, a list of numbers, a pandas DataFrame or a torch tensor"
        ) from exc
    if arr.dtype == object and arr.size and not all(isinstance(v, str) for v in arr.flat):
        raise InputError(
            f"input {name!r}: a {type(value).__name__} of mixed or ragged values cannot be a tensor;"
            " pass a rectangular array of one type"
        )
    if arr.dtype.kind == "U":
        arr = arr.astype(object)
    return arr


def _lost(arr: np.ndarray, out: np.ndarray) -> str | None:
    """What a cast from ``arr`` to ``out`` (same values, another dtype) changed, or None."""
    if not arr.size:
        return None
    src, want = arr.dtype, out.dtype
    with np.errstate(all="ignore"):
        if src.kind in "iu" and want.kind in "iu":
            info = np.iinfo(want)
            lo, hi = arr.min(), arr.max()
            if int(lo) < info.min or int(hi) > info.max:
                return (f"values from {lo} to {hi} do not fit {want} ({info.min} to {info.max})"
                        " and would wrap around")
        elif src.kind in "iu" and want.kind == "f":
            bad = ~np.isfinite(out) | (out.astype(src) != arr)
            if bad.any():
                return (f"{int(bad.sum())} value(s) such as {arr[bad].flat[0]} are not exact in"
                        f" {want} and would change")
        elif src.kind == "f" and want.kind == "f":
            bad = np.isinf(out) & np.isfinite(arr)
            if bad.any():
                return (f"{int(bad.sum())} finite value(s) such as {arr[bad].flat[0]:.6g} are"
                        f" beyond {want}'s range (max {np.finfo(want).max:.6g}) and would become"
                        " inf")
    return None


def _cast(arr: np.ndarray, spec: TensorSpec, cast: str = "safe") -> np.ndarray:
    want = spec.dtype
    if want is None or arr.dtype == want:
        return arr
    if want == np.dtype(object):  # ONNX string tensor
        if arr.dtype.kind in "OUS":
            return arr.astype(object)
        raise InputError(
            f"input {spec.name!r} expects strings, got {arr.dtype}; pass str values"
        )
    if arr.dtype.kind in "OUS":
        raise InputError(
            f"input {spec.name!r} expects {want}, got strings ({arr.dtype});"
            " convert the values to numbers first" + _path_hint(arr)
        )
    if cast == "unsafe":
        try:
            with np.errstate(all="ignore"):
                return arr.astype(want)  # the caller asked for numpy's cast, whatever it loses
        except (TypeError, ValueError) as exc:
            raise InputError(f"input {spec.name!r}: cannot cast {arr.dtype} to {want}: {exc}") from exc
    if np.can_cast(arr.dtype, want, casting="same_kind") or (
        arr.dtype.kind in "biu" and want.kind in "fc"
    ):
        with np.errstate(all="ignore"):  # an overflow is reported below, as an InputError
            out = arr.astype(want)
        if arr.dtype.kind != "b" and not (np.can_cast(arr.dtype, want, casting="safe")
                                          and not (arr.dtype.kind in "iu" and want.kind == "f")):
            problem = _lost(arr, out)
            if problem is not None:
                raise InputError(
                    f"input {spec.name!r} expects {want}, got {arr.dtype}: {problem}. Pass values"
                    f" that fit, or run(..., cast=\"unsafe\") to cast as numpy does anyway"
                )
        return out
    raise InputError(
        f"input {spec.name!r} expects dtype {want}, got {arr.dtype}; this cast could lose values,"
        f" so do it explicitly (x.astype(np.{want})) or pass run(..., cast=\"unsafe\")"
    )


def _path_hint(arr: np.ndarray) -> str:
    """When the one string given looks like a file name: read the file first."""
    if arr.size == 1 and str(arr.flat[0]).lower().endswith((".npy", ".npz", ".csv", ".parquet")):
        return ("; it looks like a file path: read it first (np.load, pd.read_csv), or use"
                " onnxbridge run MODEL -i FILE")
    return ""


def _check_shape(shape: tuple[int, ...], spec: TensorSpec) -> None:
    if spec.shape is None:
        return
    if len(shape) != len(spec.shape):
        raise InputError(
            f"input {spec.name!r} expects {len(spec.shape)} dimensions {format_shape(spec.shape)},"
            f" got {len(shape)} {list(shape)}"
            + ("; for one sample add a batch axis (x[None])" if len(shape) + 1 == len(spec.shape)
               else "")
        )
    for axis, want in enumerate(spec.shape):
        if type(want) is int and want >= 0 and want != shape[axis]:
            raise InputError(
                f"input {spec.name!r} expects shape {format_shape(spec.shape)}, got"
                f" {list(shape)} (axis {axis} must be {want})"
            )


def _prepare(value: Any, spec: TensorSpec, cast: str = "safe") -> np.ndarray:
    arr = _cast(as_array(value, spec.name), spec, cast)
    _check_shape(arr.shape, spec)
    return arr


def to_feeds(
    inputs: Sequence[TensorSpec], args: Sequence[Any], kwargs: Mapping[str, Any],
    *, cast: str = "safe", columns: Sequence[str] | None = None,
    shared: Sequence[SharedDim] | None = None, optional: Sequence[TensorSpec] = (),
) -> dict[str, np.ndarray]:
    """Match positional and keyword inputs to the model's inputs and check dtype and shape.

    ``cast`` is one of ``CAST_MODES``: "safe" (default) casts only when every value survives,
    "unsafe" casts as numpy does.

    A single DataFrame is matched by column name (``onnxbridge._frames.frame_feeds``; ``columns``
    are the names recorded at conversion); a single dict is read as keyword inputs; a single
    tuple fills a many-input model. ``shared`` is ``shared_dims(inputs)`` when the caller has it.
    ``optional`` are inputs with a default in the model, taken only by name.
    """
    if cast not in CAST_MODES:
        raise InputError(f"cast must be one of {CAST_MODES}, got {cast!r}")
    # An optional-type input (opset 18's optional(...)) may be left out or given as None:
    # onnxruntime runs the model with it empty.
    may_skip = {s.name for s in inputs if s.type.startswith("optional(")}
    if len(args) == 1 and not kwargs and len(inputs) == 1:  # one value for a one-input model
        only = args[0]
        spec = inputs[0]
        if only is None and spec.name in may_skip:
            return {}
        if is_dataframe(only):  # matched by name, then checked like any array
            only = frame_feeds(only, inputs, columns)[spec.name]
            return {spec.name: _prepare(only, spec, cast)}
        if type(only) is not dict and not isinstance(only, Mapping):
            return {spec.name: _prepare(only, spec, cast)}
    names = [s.name for s in inputs]
    given: dict[str, Any] = {}
    if len(args) == 1 and not kwargs:
        only = args[0]
        if isinstance(only, Mapping):
            kwargs, args = only, ()
        elif is_dataframe(only):
            kwargs, args = frame_feeds(only, inputs, columns), ()
        elif isinstance(only, tuple) and len(inputs) > 1:
            args = only
    if len(args) > len(inputs):
        raise InputError(
            f"the model takes {len(inputs)} input(s) {names}, but {len(args)} were given"
        )
    for spec, value in zip(inputs, args, strict=False):
        given[spec.name] = value
    overrides: dict[str, np.ndarray] = {}
    by_name = {s.name: s for s in optional}
    for key, value in kwargs.items():
        if key in by_name and key not in names:  # replaces the default stored in the model
            overrides[key] = _prepare(value, by_name[key], cast)
            continue
        if key not in names:
            raise InputError(f"the model has no input named {key!r}; its inputs are {names}"
                             + (f" (and, with defaults, {list(by_name)})" if by_name else ""))
        if key in given:
            raise InputError(f"input {key!r} was given both by position and by name")
        given[key] = value
    missing = [n for n in names if n not in given and n not in may_skip]
    if missing:
        raise InputError(f"missing input(s) {missing}; the model's inputs are {names}")
    feeds = {spec.name: _prepare(given[spec.name], spec, cast) for spec in inputs
             if given.get(spec.name) is not None or spec.name not in may_skip}
    check_shared_dims(shared_dims(inputs) if shared is None else shared, feeds)
    feeds.update(overrides)
    return feeds


# A symbolic dimension used in more than one place: its name and each (input, axis) using it.
SharedDim = tuple[str, tuple[tuple[str, int], ...]]


def shared_dims(specs: Sequence[TensorSpec]) -> list[SharedDim]:
    """The named symbolic dimensions the signature uses more than once (the same size, by
    ONNX's rules: two inputs with a ``batch`` axis take the same number of rows)."""
    places: dict[str, list[tuple[str, int]]] = {}
    for spec in specs:
        for axis, dim in enumerate(spec.shape or ()):
            if isinstance(dim, str) and dim and dim != "?":
                places.setdefault(dim, []).append((spec.name, axis))
    return [(dim, tuple(where)) for dim, where in places.items() if len(where) > 1]


def check_shared_dims(groups: Sequence[SharedDim], feeds: Mapping[str, Any]) -> None:
    """InputError when inputs that share a symbolic dimension are given different sizes for it,
    before onnxruntime fails somewhere inside the graph (a broadcast, a concatenation)."""
    for dim, where in groups:
        sizes: dict[int, list[str]] = {}
        for name, axis in where:
            shape = getattr(feeds.get(name), "shape", None)
            if shape is not None and axis < len(shape):
                sizes.setdefault(int(shape[axis]), []).append(f"{name!r}" + (
                    f" axis {axis}" if axis else ""))
        if len(sizes) > 1:
            given = "; ".join(f"{size} for {', '.join(names)}" for size, names in sizes.items())
            raise InputError(
                f"the model's inputs share the axis {dim!r}, so they must have the same size"
                f" there, but got {given}; give every input the same number of"
                f" {'rows' if dim == 'batch' else 'entries along ' + repr(dim)}"
            )


def _given_by_name(
    inputs: Sequence[TensorSpec], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Positional, tuple or dict inputs by input name; None when they do not line up."""
    if len(args) == 1 and not kwargs:
        if isinstance(args[0], Mapping):
            kwargs, args = args[0], ()
        elif isinstance(args[0], tuple) and len(inputs) > 1:
            args = args[0]
    if len(args) > len(inputs):
        return None
    given = {spec.name: value for spec, value in zip(inputs, args, strict=False)}
    given.update(kwargs)
    return given if set(given) == {s.name for s in inputs} else None


def bind_torch_inputs(
    session: Any, inputs: Sequence[TensorSpec], args: Sequence[Any], kwargs: Mapping[str, Any],
    *, force: bool = False,
) -> tuple[Any, list[Any]] | None:
    """An onnxruntime IOBinding over torch tensors' own memory (with the tensors, which must
    outlive the run), or None to use plain feeds.

    Used when every input is a torch tensor and either they sit on a CUDA device the session
    runs on (so nothing is copied to the host) or ``force`` is set. Dtypes are cast on the
    tensor's device when the model asks for another one; shapes are checked as usual.
    """
    import torch  # a tensor was given, so torch is imported already

    given = _given_by_name(inputs, args, kwargs)
    if given is None or not all(is_torch_tensor(v) for v in given.values()):
        return None
    on_cuda = all(v.is_cuda for v in given.values())
    if not force and not (on_cuda and "CUDAExecutionProvider" in session.get_providers()):
        return None
    binding = session.io_binding()
    keep = []
    session_device = _cuda_device_id(session) if on_cuda else None
    for spec in inputs:
        tensor = given[spec.name].detach()
        if session_device is not None and tensor.device.index != session_device:
            # onnxruntime reads the pointer on its own device: bring the tensor there first.
            tensor = tensor.to(f"cuda:{session_device}")
        host_dtype = torch.empty(0, dtype=tensor.dtype).numpy().dtype
        if spec.dtype is not None and host_dtype != spec.dtype:
            _cast(np.empty(0, host_dtype), spec)  # raises InputError for a cast never allowed
            if not np.can_cast(host_dtype, spec.dtype, casting="safe") or (
                    host_dtype.kind in "iu" and spec.dtype.kind == "f"):
                return None  # values may not survive: the host path checks them
            tensor = tensor.to(torch.from_numpy(np.empty(0, spec.dtype)).dtype)
            host_dtype = spec.dtype
        tensor = tensor.contiguous()
        _check_shape(tuple(tensor.shape), spec)
        keep.append(tensor)
        device = "cuda" if tensor.is_cuda else "cpu"
        binding.bind_input(spec.name, device, tensor.device.index or 0, host_dtype,
                           list(tensor.shape), tensor.data_ptr())
    if on_cuda:
        # torch queues its kernels (the tensor's producer, our casts and copies) on its own CUDA
        # stream; onnxruntime reads the memory from another. Wait for torch's work to finish.
        for device in {t.device for t in keep}:
            torch.cuda.current_stream(device).synchronize()
    for out in session.get_outputs():
        binding.bind_output(out.name)
    return binding, keep


def _cuda_device_id(session: Any) -> int:
    """The CUDA device a session runs on (its provider options' device_id; 0 by default)."""
    try:
        options = session.get_provider_options().get("CUDAExecutionProvider", {})
        return int(options.get("device_id", 0))
    except (AttributeError, TypeError, ValueError):
        return 0


def random_inputs(
    inputs: Sequence[TensorSpec], batch: int = 1, dims: Mapping[str, int] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random feeds that fit the signature: the first symbolic axis is ``batch``, other symbolic
    axes come from ``dims`` (by name) or are 16; integers are small (valid token ids, indices).
    Optional-type inputs are left out."""
    rng = np.random.default_rng(seed)
    dims = dict(dims or {})
    feeds = {}
    for spec in inputs:
        if spec.type.startswith("optional("):
            continue  # left out: the model runs with it empty, as onnxruntime allows
        if spec.dtype is None:
            raise InputError(f"input {spec.name!r} is of type {spec.type}; only tensors can be"
                             " generated")
        shape = []
        for axis, d in enumerate(spec.shape or ()):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif isinstance(d, str) and d in dims:
                shape.append(int(dims[d]))
            else:
                shape.append(batch if axis == 0 else 16)
        kind = spec.dtype.kind
        if kind == "f":
            value = rng.standard_normal(shape).astype(spec.dtype)
        elif kind in "iu":
            value = rng.integers(0, 10, size=shape).astype(spec.dtype)
        elif kind == "b":
            value = rng.integers(0, 2, size=shape).astype(bool)
        else:
            value = np.full(shape, "a", dtype=object)
        feeds[spec.name] = value
    return feeds


# What a numpy array must match to be fed as it is: name, exact dtype, rank (None: any), and the
# fixed dimensions as (axis, size).
InputCheck = tuple[str, "np.dtype | None", "int | None", tuple[tuple[int, int], ...]]


def input_checks(specs: Sequence[TensorSpec]) -> list[InputCheck]:
    """The checks ``plain_feeds`` makes, worked out once per model from its inputs."""
    return [
        (s.name, s.dtype, None if s.shape is None else len(s.shape),
         tuple((i, d) for i, d in enumerate(s.shape or ()) if isinstance(d, int)))
        for s in specs
    ]


def plain_feeds(
    checks: Sequence[InputCheck], args: tuple[Any, ...], inputs: Mapping[str, Any]
) -> dict[str, np.ndarray] | None:
    """Feeds for numpy arrays that already have the exact dtype and shape, else None (then
    ``to_feeds`` does the full work: casts, DataFrames, clear errors). The hot path of run()."""
    if not inputs and len(args) == 1 and type(args[0]) is dict:  # m.run({"x": x})
        inputs = args[0]
        args = ()
    if inputs:
        if args or len(inputs) != len(checks):
            return None
        try:
            args = tuple(inputs[c[0]] for c in checks)
        except KeyError:
            return None
    elif len(args) != len(checks):
        return None
    feeds = {}
    for (name, dtype, rank, fixed), value in zip(checks, args, strict=True):
        if type(value) is not np.ndarray or value.dtype != dtype:
            return None
        if rank is not None:
            shape = value.shape
            if len(shape) != rank or any(shape[i] != d for i, d in fixed):
                return None
        feeds[name] = value
    return feeds


def batch_size(feeds: Mapping[str, np.ndarray]) -> int | None:
    sizes = {a.shape[0] for a in feeds.values() if a.ndim > 0}
    return sizes.pop() if len(sizes) == 1 else None


def resize_batch(sample: Any, n: int) -> Any:
    """The same kind of sample with ``n`` rows, built by repeating rows of the given one.

    Used to check a dynamic batch axis on a second batch size. Returns None when the sample's
    kind is not known here.
    """
    if isinstance(sample, np.ndarray):
        if sample.ndim == 0 or sample.shape[0] == 0:
            return None
        idx = np.arange(n) % sample.shape[0]
        return sample[idx]
    if is_torch_tensor(sample):
        if sample.ndim == 0 or sample.shape[0] == 0:
            return None
        idx = np.arange(n) % sample.shape[0]
        return sample[idx.tolist()]
    if is_dataframe(sample):
        if len(sample) == 0:
            return None
        idx = np.arange(n) % len(sample)
        return sample.iloc[idx].reset_index(drop=True)
    if isinstance(sample, Mapping):
        resized = {k: resize_batch(v, n) for k, v in sample.items()}
        if any(v is None for v in resized.values()):
            return None
        return _same_mapping(sample, resized)
    if isinstance(sample, tuple):
        items = [resize_batch(v, n) for v in sample]
        return None if any(v is None for v in items) else tuple(items)
    return None


def _same_mapping(sample: Mapping[Any, Any], values: dict[Any, Any]) -> Mapping[Any, Any]:
    """``values`` in a mapping of the sample's own kind where one can be made (a copy updated:
    defaultdict, OrderedDict, BatchEncoding keep their type and extras), else a plain dict."""
    if isinstance(sample, MutableMapping):
        try:
            out = copy.copy(sample)
            out.clear()
            out.update(values)
            return out
        except Exception:  # a mapping that cannot be copied or changed: a plain dict will do
            pass
    return values
