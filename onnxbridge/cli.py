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

PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib"}


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


def load_source_model(path: str, *, trust: bool = False) -> Any:
    """A trained model from a file, by its kind; pickles only with ``trust``."""
    p = Path(path)
    suffix = p.suffix.lower()
    if not p.is_file():
        raise OnnxBridgeError(f"no such model file: {path!r}")
    if suffix in PICKLE_SUFFIXES:
        if not trust:
            raise OnnxBridgeError(
                f"{path!r} is a pickle/joblib file, and loading one runs any code it contains;"
                " pass --trust if you trust its origin, or save the model with skops (.skops)"
                " or the framework's own format instead"
            )
        import pickle

        if suffix == ".joblib":
            import joblib

            return joblib.load(p)
        with open(p, "rb") as f:
            return pickle.load(f)  # the user passed --trust
    if suffix == ".skops":
        import skops.io

        untrusted = skops.io.get_untrusted_types(file=p)
        if untrusted and not trust:
            raise OnnxBridgeError(
                f"{path!r} contains types skops does not trust by default: {untrusted};"
                " check them and pass --trust to load anyway"
            )
        return skops.io.load(p, trusted=untrusted or None)
    if suffix == ".pt2":
        import torch

        return torch.export.load(str(p)).module()
    if suffix in (".pt", ".pth", ".ts"):
        import torch

        try:
            return torch.jit.load(str(p), map_location="cpu")
        except RuntimeError as exc:
            raise OnnxBridgeError(
                f"{path!r} is not a TorchScript archive ({str(exc).splitlines()[0]}); a plain"
                " state_dict or pickled module needs its Python class: export it with"
                " torch.jit.save or torch.export.save (.pt2) first"
            ) from exc
    if suffix == ".cbm":
        import catboost

        # Load into the estimator class its loss belongs to, so predict_proba exists.
        loss = str(catboost.CatBoost().load_model(str(p)).get_all_params().get("loss_function", ""))
        classify = loss.split(":")[0] in {"Logloss", "CrossEntropy", "MultiClass", "MultiClassOneVsAll"}
        cls = catboost.CatBoostClassifier if classify else catboost.CatBoostRegressor
        return cls().load_model(str(p))
    if suffix in (".ubj", ".json"):
        import xgboost

        return xgboost.Booster(model_file=str(p))
    if suffix in (".txt", ".lgb"):
        import lightgbm

        return lightgbm.Booster(model_file=str(p))
    raise OnnxBridgeError(
        f"cannot tell what kind of model {path!r} is from its suffix; use .pt/.pth (TorchScript),"
        " .pt2 (torch.export), .skops, .json/.ubj (XGBoost), .txt (LightGBM), .cbm (CatBoost),"
        " or .pkl/.joblib with --trust"
    )


# -- commands --------------------------------------------------------------------------------
def _cmd_convert(args: argparse.Namespace) -> int:
    import onnxbridge

    progress = Progress(args.quiet)
    with progress.step(f"loading {args.source}"):
        model = load_source_model(args.source, trust=args.trust)
        sample = read_inputs(args.sample)
    verify: Any = {"on": True, "warn": "warn", "off": False}[args.verify]
    with progress.step("converting and verifying" if verify else "converting"):
        try:
            m = onnxbridge.to_onnx(model, sample, opset=args.opset, verify=verify,
                                   converter=args.converter, name=args.name,
                                   dynamic_batch=not args.fixed_batch)
        except onnxbridge.ConversionError as exc:
            if args.source.endswith(".pt2") and "static shape" in str(exc):
                raise onnxbridge.ConversionError(
                    f"{exc} -- this torch.export program was exported with a fixed batch size:"
                    " pass --fixed-batch, or export it again with dynamic_shapes"
                ) from exc
            raise
    with progress.step(f"saving {args.output}"):
        path = m.save(args.output)
    if not args.quiet:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
        if m.parity is not None:
            print(f"parity {m.parity.summary()}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import onnxbridge
    from onnxbridge.runtime import compatibility_problems, runtime_installed, runtime_support

    m = onnxbridge.load(args.model, check_runtime=False)  # inspecting needs no runtime support
    print(repr(m))
    if runtime_installed():
        problems = compatibility_problems(m.proto)
        version = runtime_support().version
        print(f"  onnxruntime {version}: " + ("can load it" if not problems else
                                              "CANNOT load it: " + "; ".join(problems)))
    else:
        print("  onnxruntime: not installed (pip install 'onnxbridge[cpu]' or 'onnxbridge[gpu]')")
    hist = m.operator_histogram()
    print("  operators: " + ", ".join(f"{op} x{n}" for op, n in hist.most_common()))
    meta = m.metadata
    if meta:
        print("  metadata:")
        for key, value in sorted(meta.items()):
            if key != "onnxbridge.parity":  # the summary line says it; the JSON is for tools
                print(f"    {key}: {value}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    import onnx

    import onnxbridge
    from onnxbridge.io import random_inputs
    from onnxbridge.runtime import compatibility_problems, runtime_support

    ok = True

    def report(name: str, passed: bool, detail: str) -> None:
        nonlocal ok
        ok = ok and passed
        print(f"{'ok  ' if passed else 'FAIL'} {name}: {detail}")

    m = onnxbridge.load(args.model, check_runtime=False)
    try:
        if m.proto.ByteSize() < 2**31 - 1:
            onnx.checker.check_model(m.proto, full_check=True)
        else:
            onnx.checker.check_model(args.model, full_check=True)
        report("onnx.checker (full)", True, "the graph is valid")
    except Exception as exc:
        report("onnx.checker (full)", False, " ".join(str(exc).split())[:300])
    problems = compatibility_problems(m.proto)
    report(f"onnxruntime {runtime_support().version}", not problems,
           "supports its IR version and opsets" if not problems else "; ".join(problems))
    if not problems:
        try:
            feeds = random_inputs(m.inputs, batch=args.batch)
            outputs = m.run(feeds, as_dict=True, providers=args.providers)
            shapes = ", ".join(f"{k} {list(getattr(v, 'shape', []))}" for k, v in outputs.items())
            report("run on a generated input", True, f"{shapes} on {', '.join(m.providers)}")
        except Exception as exc:
            report("run on a generated input", False, " ".join(str(exc).split())[:300])
    return 0 if ok else 1


def _cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    import onnxbridge

    m = onnxbridge.load(args.model)
    data = read_inputs(args.input)
    outputs = m.run(data, as_dict=True, providers=args.providers)
    if args.output:
        np.savez(args.output, **outputs)
        print(f"wrote {len(outputs)} output(s) to {args.output}")
    else:
        for name, value in outputs.items():
            print(f"{name}: shape {list(np.shape(value))}")
            print(np.array2string(np.asarray(value), threshold=50))
    return 0


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
    rows = []
    for provider in providers:
        for batch in batches:
            with progress.step(f"{provider} batch {batch}"):
                feeds = random_inputs(m.inputs, batch=batch, dims=dims)
                session = m.session(provider)
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

        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")
    if args.plot:
        _plot(rows, args.plot, Path(args.model).name)
        print(f"wrote {args.plot}")
    return 0


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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cmd_view(args: argparse.Namespace) -> int:
    import onnxbridge

    path = Path(args.model)
    if not args.html:
        try:
            import netron
        except ImportError:
            netron = None
        if netron is not None:
            onnxbridge.load(path, check_runtime=False)  # refuse unsafe files before serving them
            address = netron.start(str(path), address=("localhost", args.port), browse=not args.no_browser)
            print(f"Netron serves {path} at http://{address[0]}:{address[1]} (Ctrl-C stops it)")
            try:
                netron.wait()
            except KeyboardInterrupt:
                netron.stop()
            return 0
    from onnxbridge.viz import to_html

    m = onnxbridge.load(path, check_runtime=False)
    out = Path(args.out) if args.out else path.with_suffix(".html")
    out.write_text(to_html(m), encoding="utf-8")
    print(f"wrote {out} (a self-contained picture of the graph; open it in a browser)"
          + ("" if args.html else "; pip install netron for the interactive viewer"))
    if not args.no_browser and sys.stdout.isatty():
        import webbrowser

        webbrowser.open(out.resolve().as_uri())
    return 0


def _cmd_providers(args: argparse.Namespace) -> int:
    import warnings

    from onnxbridge.runtime import auto_plan, loaded_package, resolve_providers, runtime_packages

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the plan prints its own warnings
        plan = auto_plan()
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
    sub.required = True

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
        "Sources: TorchScript (.pt/.pth), torch.export (.pt2), scikit-learn saved with skops\n"
        "(.skops), XGBoost (.json/.ubj), LightGBM (.txt), CatBoost (.cbm). Pickle and joblib\n"
        "files (.pkl/.joblib) run code when loaded, so they need --trust.\n"
        "Samples: .npy, .npz (several named inputs), .csv or .parquet (a DataFrame).",
    )
    convert.add_argument("source", help="the trained model file")
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
                         help="allow pickle/joblib (and untrusted skops types): runs code from the file")
    convert.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    convert.set_defaults(func=_cmd_convert)

    info = add("info", "inputs, outputs, opsets, IR version, size, operators, metadata, parity",
               "onnxbridge info model.onnx")
    info.add_argument("model", help="path of an .onnx file")
    info.set_defaults(func=_cmd_info)

    check = add("check", "onnx.checker, onnxruntime compatibility, and a run on a generated input",
                "onnxbridge check model.onnx")
    check.add_argument("model", help="path of an .onnx file")
    check.add_argument("--batch", type=int, default=2, help="batch size of the generated input")
    check.add_argument("--providers", help="run on these providers, e.g. cpu")
    check.set_defaults(func=_cmd_check)

    run = add("run", "run a model on inputs from a file",
              "onnxbridge run model.onnx --input x.npy -o y.npz")
    run.add_argument("model", help="path of an .onnx file")
    run.add_argument("--input", "-i", required=True,
                     help=".npy (one input), .npz (inputs by name), .csv or .parquet")
    run.add_argument("--output", "-o", help="write outputs to this .npz instead of printing")
    run.add_argument("--providers", help="e.g. cpu, or cuda,cpu")
    run.set_defaults(func=_cmd_run)

    bench = add("bench", "latency p50/p90/p99 and throughput per batch size and provider",
                "onnxbridge bench model.onnx --batch 1,8,32 --csv bench.csv --plot bench.png")
    bench.add_argument("model", help="path of an .onnx file")
    bench.add_argument("--batch", default="1,8", help="batch sizes, comma-separated (default 1,8)")
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
    view.add_argument("--no-browser", action="store_true", help="do not open a browser")
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
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
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
        hint = "" if args.debug else " (--debug shows the traceback)"
        print(f"onnxbridge {args.command}: error: {' '.join(text.split())}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
