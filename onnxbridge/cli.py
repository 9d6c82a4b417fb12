"""The ``onnxbridge`` command.

    onnxbridge demo | convert | info | check | run | bench | view | providers | converters

Exit codes: 0 success, 1 failure (one readable line; ``--debug`` shows the traceback), 2 usage.
Long steps report progress on a terminal and stay quiet when output is redirected or ``--quiet``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from onnxbridge.errors import OnnxBridgeError

__all__ = ["main"]

MAX_METADATA_SHOWN = 200  # metadata entries info prints (a file may hold millions)
PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib"}  # kept for callers; onnxbridge._sources decides


class Progress:
    """Step lines on stderr when it is a terminal (and not --quiet); silent otherwise."""

    def __init__(self, quiet: bool = False) -> None:
        self.enabled = not quiet and sys.stderr.isatty()

    @contextmanager
    def step(self, text: str) -> Iterator[None]:
        start = time.perf_counter()
        if self.enabled:
            print(f"{text} ...", end="", file=sys.stderr, flush=True)
        try:
            yield
        except BaseException:
            if self.enabled:
                print(" failed", file=sys.stderr, flush=True)
            raise
        if self.enabled:
            print(f" done ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)


# -- demo ------------------------------------------------------------------------------------
def _cmd_demo(args: argparse.Namespace) -> int:
    """Train a small scikit-learn pipeline, convert, verify, save, load and run it."""
    import tempfile

    try:
        import numpy as np
        from sklearn.datasets import make_classification
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as exc:
        raise OnnxBridgeError(
            f"the demo needs scikit-learn ({exc.name} is missing):"
            ' pip install "onnxbridge[cpu,sklearn]"'
        ) from exc
    import onnxbridge

    def step(n: int, text: str, since: float) -> None:
        print(f"{n}. {text}  ({(time.perf_counter() - since) * 1000:.0f} ms)")

    t = time.perf_counter()
    X, y = make_classification(n_samples=600, n_features=8, n_informative=5, n_classes=3,
                               random_state=0)
    X = X.astype(np.float32)
    X_train, X_test, y_train, y_test = X[:500], X[500:], y[:500], y[500:]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X_train, y_train)
    print("onnxbridge demo: a scikit-learn Pipeline(StandardScaler, LogisticRegression),"
          " 3 classes, 8 features")
    step(1, f"trained on {len(X_train)} rows", t)

    t = time.perf_counter()
    m = onnxbridge.to_onnx(model, X_train[:20])
    meta = m.metadata
    step(2, f"converted by the {meta['onnxbridge.converter']!r} converter"
            f" ({m.producer}, opset {m.opset})", t)
    assert m.parity is not None
    print(f"3. verified against scikit-learn: {m.parity.summary()}")

    with tempfile.TemporaryDirectory(prefix="onnxbridge-demo-") as tmp:
        path = Path(args.out) if args.out else Path(tmp) / "demo.onnx"
        t = time.perf_counter()
        m.save(path)
        step(4, f"saved to {path} ({path.stat().st_size:,} bytes)", t)
        t = time.perf_counter()
        loaded = onnxbridge.load(path)
        step(5, f"loaded back: inputs {', '.join(map(str, loaded.inputs))};"
                f" outputs {', '.join(map(str, loaded.outputs))}", t)
    t = time.perf_counter()
    labels, probabilities = loaded.run(X_test)
    step(6, f"ran {len(X_test)} held-out rows on {', '.join(loaded.providers)}", t)
    native = model.predict(X_test)
    agree = float(np.mean(labels == native))
    print(f"   accuracy: ONNX {np.mean(labels == y_test):.3f}, scikit-learn"
          f" {np.mean(native == y_test):.3f}; labels agree on {agree:.1%} of rows;"
          f" probabilities shape {list(probabilities.shape)}")
    if args.out:
        print(f"Inspect it with: onnxbridge info {args.out}")
    return 0 if agree == 1.0 else 1


# -- reading files ---------------------------------------------------------------------------
def read_inputs(path: str) -> Any:
    """A sample or inputs from .npy, .npz (arrays by name), .csv or .parquet (a DataFrame)."""
    import numpy as np

    p = Path(path)
    suffix = p.suffix.lower()
    if not p.is_file():
        raise OnnxBridgeError(f"no such input file: {path!r}")
    if suffix == ".npy":
        return np.load(p, allow_pickle=False)
    if suffix == ".npz":
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        return next(iter(arrays.values())) if len(arrays) == 1 else arrays
    if suffix in (".csv", ".parquet"):
        try:
            import pandas as pd
        except ImportError:
            if suffix == ".csv":
                return np.loadtxt(p, delimiter=",", dtype=np.float64, ndmin=2, skiprows=0)
            raise OnnxBridgeError("reading .parquet needs pandas and pyarrow") from None
        return pd.read_csv(p) if suffix == ".csv" else pd.read_parquet(p)
    raise OnnxBridgeError(f"cannot read inputs from {path!r}: use .npy, .npz, .csv or .parquet")


def load_source_model(path: str, *, trust: bool = False, sample: Any = None) -> Any:
    """A trained model from a file, by its kind (see onnxbridge._sources: no code runs without
    ``trust``; tree-model files are parsed first in a child process)."""
    from onnxbridge._sources import load_source_model as load

    return load(path, trust=trust, sample=sample)


# -- commands --------------------------------------------------------------------------------
def _cmd_convert(args: argparse.Namespace) -> int:
    import onnxbridge

    progress = Progress(args.quiet)
    with progress.step(f"loading {args.source}"), _quiet_torch_deprecations():
        sample = read_inputs(args.sample)
        model = load_source_model(args.source, trust=args.trust, sample=sample)
    verify: Any = {"on": True, "warn": "warn", "off": False}[args.verify]
    with progress.step("converting and verifying" if verify else "converting"):
        try:
            m = onnxbridge.to_onnx(model, sample, opset=args.opset, verify=verify,
                                   converter=args.converter, name=args.name,
                                   dynamic_batch=not args.fixed_batch)
        except onnxbridge.ConversionError as exc:
            hint = _static_program_hint(args.source, exc, args.fixed_batch)
            if hint:
                raise onnxbridge.ConversionError(f"{exc} -- {hint}") from exc
            raise
    with progress.step(f"saving {args.output}"):
        path = m.save(args.output)
    if not args.quiet:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
        if m.parity is not None:
            print(f"parity {m.parity.summary()}")
    return 0


@contextmanager
def _quiet_torch_deprecations() -> Iterator[None]:
    """torch.jit.load's FutureWarning is about torch, not about what the user asked for."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated",
                                category=FutureWarning)
        yield


def _static_program_hint(source: str, exc: BaseException, fixed_batch: bool) -> str:
    """What to do when a torch.export program with fixed sizes meets another sample or axis."""
    if not source.lower().endswith(".pt2"):
        return ""
    text = str(exc)
    if "Guard failed" in text:  # the sample's sizes differ from those the program was made for
        return ("this torch.export program was exported for fixed input sizes and the sample"
                " has others: give a sample of the sizes it was exported with"
                + ("" if fixed_batch else " and pass --fixed-batch")
                + ", or export it again with dynamic_shapes")
    if "static shape" in text and not fixed_batch:
        return ("this torch.export program was exported with a fixed batch size:"
                " pass --fixed-batch, or export it again with dynamic_shapes")
    return ""


def _cmd_info(args: argparse.Namespace) -> int:
    import warnings

    import onnxbridge
    from onnxbridge.errors import OnnxBridgeWarning
    from onnxbridge.runtime import compatibility_problems, runtime_installed, runtime_support

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OnnxBridgeWarning)  # checker findings: shown below
        m = onnxbridge.load(args.model, check_runtime=False)  # inspecting needs no runtime
    from onnxbridge._text import shown

    print(repr(m))
    findings = m.checker_findings  # load runs no checker: info does
    refused: Exception | None = None
    if findings and runtime_installed():
        # Whether onnxruntime runs the model anyway (an IR 3 initializer outside the inputs) or
        # refuses it too (an unknown operator): only a session says, so one is made.
        try:
            m.session("cpu")
        except OnnxBridgeError as exc:
            refused = exc
    for finding in findings:
        verdict = "" if not runtime_installed() else (
            " (onnxruntime cannot load it either)" if refused else
            " (onnxruntime loads the model anyway)")
        print(f"  onnx.checker warns: {shown(finding, 300)}{verdict}")
    if runtime_installed():
        problems = compatibility_problems(m.proto)
        version = runtime_support().version
        # Only the IR version and opsets are compared here; whether every operator is implemented
        # shows when a session is made, which `check` does.
        if refused is not None:
            print(f"  onnxruntime {version}: CANNOT load it: {shown(str(refused), 600)}")
        else:
            print(f"  onnxruntime {version}: " + (
                "supports its IR version and opsets (operators not checked: onnxbridge check)"
                if not problems else "CANNOT load it: " + "; ".join(problems)))
    else:
        print("  onnxruntime: not installed (pip install 'onnxbridge[cpu]' or 'onnxbridge[gpu]')")
    hist = m.operator_histogram()
    print("  operators: " + shown(", ".join(f"{op} x{n}" for op, n in hist.most_common()), 2000))
    meta = m.metadata
    if meta:
        print("  metadata:")
        keys = [k for k in sorted(meta) if k != "onnxbridge.parity"]  # the JSON is for tools
        for key in keys[:MAX_METADATA_SHOWN]:
            print(f"    {shown(key, 80)}: {shown(meta[key])}")  # text from the file is data
        if len(keys) > MAX_METADATA_SHOWN:
            print(f"    ... and {len(keys) - MAX_METADATA_SHOWN:,} more entries")
    return 1 if refused is not None else 0


def _cmd_check(args: argparse.Namespace) -> int:
    import warnings

    import onnxbridge
    from onnxbridge.errors import OnnxBridgeWarning
    from onnxbridge.io import random_inputs
    from onnxbridge.runtime import compatibility_problems, runtime_support

    ok = True

    def report(name: str, passed: bool | None, detail: str) -> None:
        """passed None: could not be checked (said, not counted as a failure)."""
        from onnxbridge._text import shown

        nonlocal ok
        ok = ok and passed is not False
        mark = {True: "ok  ", False: "FAIL", None: "??  "}[passed]
        print(f"{mark} {name}: {shown(detail, 2000)}")  # names come from the file

    from onnxbridge._files import checker_findings
    from onnxbridge._text import shown

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OnnxBridgeWarning)  # its findings are reported below
        m = onnxbridge.load(args.model, check_runtime=False)
    real = read_inputs(args.input) if args.input else None
    findings = checker_findings(m.proto, full_check=True)  # on a weight-less copy when the model is large
    if findings:  # a warning, not a failure: the session below says whether onnxruntime runs it
        print(f"warn onnx.checker: {shown(findings[0], 300)}")
    else:
        report("onnx.checker (full)", True, "the graph is valid")
    problems = compatibility_problems(m.proto)
    report(f"onnxruntime {runtime_support().version}", not problems,
           "supports its IR version and opsets" if not problems else "; ".join(problems))
    if problems:
        if args.verify_recorded:
            report("recorded parity report", False,
                   "cannot re-run: onnxruntime cannot load the model")
        return 0 if ok else 1
    try:
        session = m.session(args.providers)
    except Exception as exc:
        report("onnxruntime session", False, _one_line(exc))
        return 1
    report("onnxruntime session", True, f"created on {', '.join(session.get_providers())}"
           " (every operator is implemented)")
    if real is not None:
        try:
            outputs = m.run(real, as_dict=True, providers=args.providers)
            report(f"run on {args.input}", True, _shapes(outputs))
        except Exception as exc:
            report(f"run on {args.input}", False, _one_line(exc))
    else:
        try:
            feeds = random_inputs(m.inputs, batch=args.batch)
            outputs = m.run(feeds, as_dict=True, providers=args.providers)
            report("run on a generated input", True, _shapes(outputs))
        except Exception as exc:
            # Random values need not fit the model (indices out of range, shapes that must
            # agree): that says nothing about the model, so it is not a failure.
            report("run on a generated input", None,
                   f"could not exercise the model with generated data ({_one_line(exc, 200)});"
                   f" check it on real inputs: onnxbridge check {args.model} -i inputs.npz")
    if args.verify_recorded:
        _verify_recorded(m, args.providers, report)
    return 0 if ok else 1


def _one_line(exc: BaseException, limit: int = 300) -> str:
    return " ".join(str(exc).split())[:limit]


def _shapes(outputs: dict[str, Any]) -> str:
    return ", ".join(f"{k} {list(v.shape)}" if hasattr(v, "shape") else f"{k}: {_describe(v)}"
                     for k, v in outputs.items())


def _verify_recorded(m: Any, providers: str | None, report: Any) -> None:
    """Re-check what a stored parity report claims, as far as the file alone allows.

    The source model is not in the file, so the comparison with it cannot be redone. What is
    checked: the report is well-formed; every output it names exists; at every batch size it
    lists, the model runs on generated inputs and each output has the recorded dtype, rank and
    batch size (and the recorded shape when no other axis is symbolic); outputs the report
    recorded as numbers within tolerance are finite here.
    """
    import numpy as np

    from onnxbridge._text import shown
    from onnxbridge.io import random_inputs
    from onnxbridge.verify import ParityReport

    text = m.metadata.get("onnxbridge.parity")
    if text is None:
        report("recorded parity report", False, "the model carries none (it was not converted by"
               " onnxbridge, or without verification): nothing to re-check")
        return
    recorded = ParityReport.from_record(text)
    if recorded is None:
        report("recorded parity report", False, "onnxbridge.parity is not a well-formed report")
        return
    report("recorded parity report", True, shown(recorded.summary()))
    names = set(m.output_names)
    missing = sorted({o.name for o in recorded.outputs} - names)
    report("recorded outputs exist", not missing,
           "all present" if not missing else "missing: " + shown(", ".join(missing)))
    other_symbolic = any(isinstance(d, str) or d is None
                         for s in m.inputs for d in (s.shape or ())[1:])
    for batch in recorded.batch_sizes or [1]:
        try:
            outputs = m.run(random_inputs(m.inputs, batch=batch), as_dict=True,
                            providers=providers)
        except Exception as exc:
            report(f"re-run at batch {batch}", False, " ".join(str(exc).split())[:300])
            continue
        problems = []
        for o in recorded.outputs:
            if o.batch != batch or o.name not in outputs:
                continue
            value = np.asarray(outputs[o.name])
            dtype = "object" if value.dtype == object else value.dtype.name
            if dtype != o.dtype and not (o.dtype == "object" and value.dtype.kind in "OU"):
                problems.append(f"{o.name}: dtype {dtype}, recorded {o.dtype}")
            shape = tuple(value.shape)
            if len(shape) != len(o.shape) or (shape[:1] != tuple(o.shape[:1])) or (
                    not other_symbolic and shape != tuple(o.shape)):
                problems.append(f"{o.name}: shape {list(shape)}, recorded {list(o.shape)}")
            if (o.passed and o.max_abs is not None and value.dtype.kind == "f"
                    and not np.isfinite(value).all()):
                problems.append(f"{o.name}: not finite on generated inputs")
        report(f"re-run at batch {batch}", not problems,
               "dtypes and shapes as recorded" if not problems else shown("; ".join(problems)))
    print("note: the comparison with the source framework's model cannot be re-run from the"
          " .onnx file alone; convert again (onnxbridge.to_onnx or onnxbridge convert) to"
          " re-verify it")


def _cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    import onnxbridge

    m = onnxbridge.load(args.model)
    m.session(args.providers)  # a model onnxruntime refuses is said before its inputs are read
    if args.input:
        outputs = m.run(read_inputs(args.input), as_dict=True, providers=args.providers)
    elif m.inputs:
        names = ", ".join(s.name for s in m.inputs)
        raise OnnxBridgeError(f"the model takes input(s) {names}: give them with --input FILE"
                              " (.npy for one input, .npz by name, .csv or .parquet)")
    else:  # a model without inputs (constants, generators) runs as it is
        outputs = m.run(as_dict=True, providers=args.providers)
    if args.output:
        from onnxbridge._files import open_atomic

        arrays, notes = _storable(outputs)
        out = args.output if str(args.output).endswith(".npz") else f"{args.output}.npz"
        with open_atomic(out) as f:
            np.savez(f, allow_pickle=False, **arrays)  # readable with np.load's defaults
        print(f"wrote {len(outputs)} output(s) to {out}" + "".join(f"; {n}" for n in notes))
    else:
        for name, value in outputs.items():
            print(f"{name}: {_describe(value)}")
            print(np.array2string(np.asarray(value), threshold=50))
    return 0


def _describe(value: Any) -> str:
    """An output in words: a tensor's shape, or what a sequence or map output holds."""
    if hasattr(value, "shape"):
        return f"shape {list(value.shape)}"
    def count(n: int, noun: str) -> str:
        return f"{n} {noun}" + ("" if n == 1 else "s")

    if isinstance(value, dict):
        return f"a map of {count(len(value), 'entry')}".replace("entrys", "entries")
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return f"a sequence of {count(len(value), 'map')} (one per row)"
        return f"a sequence of {count(len(value), 'tensor')}"
    return type(value).__name__


def _storable(outputs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Outputs as plain arrays an .npz holds without pickling (np.load reads pickles only with
    allow_pickle=True, and `run -i` never does): strings as str arrays, a sequence of maps
    (ZipMap's probabilities) as a [rows, keys] array plus ``<name>.keys``, a map as keys and
    values, a sequence of tensors stacked or one entry each."""
    import numpy as np

    arrays: dict[str, Any] = {}
    notes: list[str] = []

    def plain(name: str, value: Any) -> None:
        arr = np.asarray(value)
        if arr.dtype == object:
            if not all(isinstance(v, (str, bytes)) for v in arr.flat):
                raise OnnxBridgeError(f"output {name!r} holds {type(value).__name__} values that"
                                      " an .npz cannot hold without pickling; print it instead")
            arr = arr.astype(str)
        arrays[name] = arr

    for name, value in outputs.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            keys = list(value[0])
            if any(list(v) != keys for v in value):
                raise OnnxBridgeError(f"output {name!r}: its maps do not all have the same keys")
            plain(name, [[v[k] for k in keys] for v in value])
            plain(f"{name}.keys", keys)
            notes.append(f"{name} (a map per row) as a [{len(value)}, {len(keys)}] array, its"
                         f" keys in {name}.keys")
        elif isinstance(value, dict):
            plain(f"{name}.keys", list(value))
            plain(f"{name}.values", list(value.values()))
            notes.append(f"{name} (a map) as {name}.keys and {name}.values")
        elif isinstance(value, list):
            shapes = {np.shape(v) for v in value}
            if len(shapes) == 1:
                plain(name, np.stack([np.asarray(v) for v in value]) if value else np.empty(0))
                notes.append(f"{name} (a sequence of {len(value)}) stacked on a new first axis")
            else:
                for i, item in enumerate(value):
                    plain(f"{name}.{i}", item)
                notes.append(f"{name} (a sequence of {len(value)}) as {name}.0, {name}.1, ...")
        else:
            plain(name, value)
    return arrays, notes


def _parse_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise OnnxBridgeError(f"{what} must be whole numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise OnnxBridgeError(f"{what} must be positive, got {text!r}")
    return values


def _cmd_bench(args: argparse.Namespace) -> int:
    import numpy as np

    import onnxbridge
    from onnxbridge.io import random_inputs
    from onnxbridge.runtime import auto_plan

    m = onnxbridge.load(args.model)
    batches = _parse_ints(args.batch, "--batch")
    providers = [p.strip() for p in args.providers.split(";")] if args.providers else [
        name for name in auto_plan().order]
    dims = {}
    for item in args.dim or []:
        name, _, value = item.partition("=")
        dims[name] = _parse_ints(value, f"--dim {name}")[0]
    progress = Progress(args.quiet)
    real = None
    if not m.inputs:  # nothing to batch: one row per run
        batches = [1]
    if args.input:  # the user's inputs, at their own batch size
        from onnxbridge.io import batch_size, to_feeds

        real = to_feeds(m.inputs, (read_inputs(args.input),), {})
        batches = [batch_size(real) or 1]
    rows = []
    for provider in providers:
        for batch in batches:
            with progress.step(f"{provider} batch {batch}"):
                feeds = real if real is not None else random_inputs(m.inputs, batch=batch,
                                                                    dims=dims)
                session = m.session(provider)
                _first_bench_run(session, feeds, args.model, real is None)
                for _ in range(args.warmup):
                    session.run(None, feeds)
                times: list[float] = []
                deadline = time.perf_counter() + args.seconds
                while len(times) < args.min_runs or time.perf_counter() < deadline:
                    start = time.perf_counter()
                    session.run(None, feeds)
                    times.append(time.perf_counter() - start)
                    if len(times) >= args.max_runs:
                        break
            ms = np.array(times) * 1000
            p50, p90, p99 = np.percentile(ms, [50, 90, 99])
            rows.append({"provider": session.get_providers()[0], "batch": batch, "runs": len(ms),
                         "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
                         "throughput_per_s": batch / (p50 / 1000)})
    header = "| provider | batch | runs | p50 ms | p90 ms | p99 ms | samples/s |"
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['provider']} | {r['batch']} | {r['runs']} | {r['p50_ms']:.3f} |"
              f" {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['throughput_per_s']:,.0f} |")
    if args.csv:
        import csv

        from onnxbridge._files import open_atomic

        with open_atomic(args.csv, text=True) as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")
    if args.plot:
        _plot(rows, args.plot, Path(args.model).name)
        print(f"wrote {args.plot}")
    return 0


def _first_bench_run(session: Any, feeds: dict[str, Any], model: str, generated: bool) -> None:
    """One run before timing: generated values that do not fit the model get the fix."""
    try:
        session.run(None, feeds)
    except Exception as exc:
        if not generated:
            raise
        raise OnnxBridgeError(
            f"could not run the model on generated data ({_one_line(exc, 200)}); time it on"
            f" inputs that fit: onnxbridge bench {model} -i inputs.npz"
        ) from exc


def _plot(rows: list[dict[str, Any]], path: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise OnnxBridgeError("--plot needs matplotlib: pip install matplotlib") from exc
    fig, ax = plt.subplots(figsize=(6, 4))
    for provider in dict.fromkeys(r["provider"] for r in rows):
        mine = [r for r in rows if r["provider"] == provider]
        ax.plot([r["batch"] for r in mine], [r["p50_ms"] for r in mine], marker="o", label=provider)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title(f"onnxbridge bench: {title}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from onnxbridge._files import open_atomic

    with open_atomic(path) as f:
        fig.savefig(f, dpi=120, format="png")
    plt.close(fig)


def _cmd_view(args: argparse.Namespace) -> int:
    import onnxbridge

    path = Path(args.model)
    # Netron is a server that runs until Ctrl-C: used when a browser is to show it, or when asked
    # for with --serve. --no-browser alone writes the page and returns.
    if not args.html and (args.serve or not args.no_browser):
        try:
            import netron
        except ImportError:
            if args.serve:
                raise OnnxBridgeError("--serve needs Netron: pip install netron") from None
            netron = None
        if netron is not None:
            onnxbridge.load(path, check_runtime=False)  # refuse unsafe files before serving them
            address = netron.start(str(path), address=("localhost", args.port),
                                   browse=not args.serve)
            print(f"Netron serves {path} at http://{address[0]}:{address[1]} (Ctrl-C stops it)",
                  flush=True)
            try:
                netron.wait()
            except KeyboardInterrupt:
                netron.stop()
            return 0
    from onnxbridge.viz import to_html

    m = onnxbridge.load(path, check_runtime=False)
    out = Path(args.out) if args.out else path.with_suffix(".html")
    from onnxbridge._files import atomic_write

    atomic_write(out, to_html(m))
    print(f"wrote {out} (a self-contained picture of the graph; open it in a browser)"
          + ("" if args.html or args.no_browser else
             "; pip install netron for the interactive viewer"))
    if not args.no_browser and sys.stdout.isatty():
        import webbrowser

        webbrowser.open(out.resolve().as_uri())
    return 0


def _cmd_providers(args: argparse.Namespace) -> int:
    import dataclasses
    import warnings

    from onnxbridge.runtime import (
        CPU,
        auto_plan,
        loaded_package,
        probe_provider,
        resolve_providers,
        runtime_packages,
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the plan prints its own warnings
        plan = auto_plan()
    if not any(p.provider == CPU for p in plan.probes):  # run() needs no CPU probe; shown here
        plan = dataclasses.replace(plan, probes=[*plan.probes, probe_provider(CPU)])
    packages = ", ".join(f"{p.name} {p.version}" for p in runtime_packages())
    print(f"onnxruntime packages installed: {packages or '?'} (loaded: {loaded_package() or '?'})")
    print(plan)
    if args.verbose:
        for probe in plan.probes:
            if probe.log.strip():
                print(f"--- what onnxruntime printed while probing {probe.provider}:")
                print(probe.log.rstrip())
    wanted, explicit = resolve_providers()
    if explicit:
        names = [p if isinstance(p, str) else p[0] for p in wanted]
        print("overridden (set_default_providers or ONNXBRIDGE_PROVIDERS): " + " > ".join(names))
    return 0


def _cmd_converters(args: argparse.Namespace) -> int:
    import onnxbridge

    rows = onnxbridge.converters()
    if not rows:
        print("no converters installed")
    for row in rows:
        print(row)
    return 0 if all(r.status == "ok" for r in rows) else 1


# -- parser ----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    from onnxbridge._version import __version__

    formatter = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="onnxbridge",
        description="Convert trained models to verified ONNX and run them anywhere.",
        epilog="Example: onnxbridge demo\nEvery command has --help with an example.",
        formatter_class=formatter,
    )
    p.add_argument("--version", action="version", version=f"onnxbridge {__version__}")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, epilog=f"Example:\n  {example}",
                              formatter_class=formatter)

    demo = add("demo", "train, convert, verify, save, load and run a small model",
               "onnxbridge demo --out demo.onnx")
    demo.add_argument("--out", help="keep the converted model at this path")
    demo.set_defaults(func=_cmd_demo)

    convert = add(
        "convert",
        "convert a saved model to a verified ONNX file",
        "onnxbridge convert model.pt2 --sample x.npy -o model.onnx\n\n"
        "Sources: torch.export (.pt2, checked before loading), scikit-learn saved with skops\n"
        "(.skops, default-trusted types only), XGBoost (.json/.ubj), LightGBM (.txt), CatBoost\n"
        "(.cbm); tree-model files are parsed first in a child process, so a malformed file is an\n"
        "error, not a crash. TorchScript (.pt/.pth) and pickle/joblib (.pkl/.joblib) files run\n"
        "code when loaded, so they need --trust (see docs/security.md).\n"
        "Samples: .npy, .npz (several named inputs), .csv or .parquet (a DataFrame).",
    )
    convert.add_argument("source", help="the trained model file (or a TensorFlow SavedModel"
                         " folder, with --trust)")
    convert.add_argument("--sample", "-s", required=True, help="inputs the model predicts on")
    convert.add_argument("--output", "-o", required=True, help="where to write the .onnx file")
    convert.add_argument("--opset", type=int, help="ONNX opset (default: newest both sides support)")
    convert.add_argument("--verify", choices=["on", "warn", "off"], default="on",
                         help="compare ONNX with the source on the sample (default: on)")
    convert.add_argument("--converter", help="force a converter by name (see: onnxbridge converters)")
    convert.add_argument("--name", help="graph name")
    convert.add_argument("--fixed-batch", action="store_true",
                         help="keep the sample's batch size fixed instead of a dynamic batch axis")
    convert.add_argument("--trust", action="store_true",
                         help="allow pickle/joblib, TorchScript, unchecked .pt2 and untrusted skops"
                             " types: runs code from the file")
    convert.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    convert.set_defaults(func=_cmd_convert)

    info = add("info", "inputs, outputs, opsets, IR version, size, operators, metadata, parity",
               "onnxbridge info model.onnx")
    info.add_argument("model", help="path of an .onnx file")
    info.set_defaults(func=_cmd_info)

    check = add("check", "onnx.checker, onnxruntime compatibility, a session, and a run on"
                " generated (or your own) inputs",
                "onnxbridge check model.onnx -i inputs.npz")
    check.add_argument("model", help="path of an .onnx file")
    check.add_argument("--input", "-i",
                       help="run on these inputs (.npy, .npz by name, .csv, .parquet) instead of"
                            " generated ones")
    check.add_argument("--batch", type=int, default=2, help="batch size of the generated input")
    check.add_argument("--providers", help="run on these providers, e.g. cpu")
    check.add_argument("--verify-recorded", action="store_true",
                       help="re-check the parity report stored at conversion: outputs, dtypes and"
                            " shapes at its batch sizes (the source model is not in the file, so"
                            " the comparison with it cannot be redone)")
    check.set_defaults(func=_cmd_check)

    run = add("run", "run a model on inputs from a file",
              "onnxbridge run model.onnx --input x.npy -o y.npz")
    run.add_argument("model", help="path of an .onnx file")
    run.add_argument("--input", "-i",
                     help=".npy (one input), .npz (inputs by name), .csv or .parquet"
                          " (a model without inputs needs none)")
    run.add_argument("--output", "-o", help="write outputs to this .npz instead of printing")
    run.add_argument("--providers", help="e.g. cpu, or cuda,cpu")
    run.set_defaults(func=_cmd_run)

    bench = add("bench", "latency p50/p90/p99 and throughput per batch size and provider",
                "onnxbridge bench model.onnx --batch 1,8,32 --csv bench.csv --plot bench.png")
    bench.add_argument("model", help="path of an .onnx file")
    bench.add_argument("--batch", default="1,8", help="batch sizes, comma-separated (default 1,8)")
    bench.add_argument("--input", "-i",
                       help="time on these inputs (.npy, .npz, .csv, .parquet) at their batch size"
                            " instead of generated ones")
    bench.add_argument("--providers", help="providers to compare, ';'-separated (default: all usable)")
    bench.add_argument("--dim", action="append", metavar="NAME=N",
                       help="size of a named symbolic axis, e.g. --dim sequence=128 (default 16)")
    bench.add_argument("--seconds", type=float, default=1.0, help="time per configuration")
    bench.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    bench.add_argument("--min-runs", type=int, default=10)
    bench.add_argument("--max-runs", type=int, default=100_000)
    bench.add_argument("--csv", help="also write the table as CSV")
    bench.add_argument("--plot", help="also write a PNG plot (needs matplotlib)")
    bench.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    bench.set_defaults(func=_cmd_bench)

    view = add("view", "open the model in Netron, or write a self-contained HTML picture",
               "onnxbridge view model.onnx --html --out model.html")
    view.add_argument("model", help="path of an .onnx file")
    view.add_argument("--html", action="store_true",
                      help="write the HTML picture even if Netron is installed")
    view.add_argument("--out", help="HTML file to write (default: next to the model)")
    view.add_argument("--port", type=int, default=8080, help="Netron's port on localhost")
    view.add_argument("--no-browser", action="store_true",
                      help="write the HTML picture and open nothing (returns at once)")
    view.add_argument("--serve", action="store_true",
                      help="serve the model with Netron without opening a browser, until Ctrl-C")
    view.set_defaults(func=_cmd_view)

    prov = add("providers", "hardware found, each execution provider's probe, the order run() uses",
               "ONNXBRIDGE_PROVIDERS=cpu onnxbridge providers")
    prov.add_argument("-v", "--verbose", action="store_true",
                      help="also print what onnxruntime logged while probing each provider")
    prov.set_defaults(func=_cmd_providers)

    conv = add("converters", "list installed converters and plugins that failed to load",
               "onnxbridge converters")
    conv.set_defaults(func=_cmd_converters)

    from onnxbridge._zoo_cli import add_zoo_parser

    add_zoo_parser(add)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``onnxbridge`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `onnxbridge`: what it can do, not a usage error
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader went away (`onnxbridge run ... | head`): end quietly, as cat does.
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        if isinstance(exc, (OnnxBridgeError, OSError)):
            text = str(exc)
        elif isinstance(exc, ImportError):
            text = f"{exc}; install the extra for this kind of model (see onnxbridge {args.command} --help)"
        else:  # not one of ours: say what it was, still on one line
            text = f"{type(exc).__name__}: {exc}"
        from onnxbridge._text import shown

        hint = "" if args.debug else " (--debug shows the traceback)"
        # Messages quote names from the file: one inert line, never terminal control.
        print(f"onnxbridge {args.command}: error: {shown(' '.join(text.split()), 4000)}{hint}",
              file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """Point stdout at the null device, so the flush at exit does not fail on the closed pipe."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (a test's capture)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
