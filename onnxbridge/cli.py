"""The ``onnxbridge`` command: ``demo``, ``info``, ``run``, ``providers``, ``converters``.

Exit codes: 0 success, 1 failure (one readable line; ``--debug`` shows the traceback), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onnxbridge.errors import OnnxBridgeError

__all__ = ["main"]


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
            ' pip install "onnxbridge[sklearn]"'
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


def _cmd_info(args: argparse.Namespace) -> int:
    import onnxbridge
    from onnxbridge.runtime import compatibility_problems, runtime_support

    m = onnxbridge.load(args.model, check_runtime=False)  # inspecting needs no runtime support
    print(repr(m))
    problems = compatibility_problems(m.proto)
    version = runtime_support().version
    print(f"  onnxruntime {version}: " + ("can load it" if not problems else
                                          "CANNOT load it: " + "; ".join(problems)))
    hist = m.operator_histogram()
    print("  operators: " + ", ".join(f"{op} x{n}" for op, n in hist.most_common()))
    meta = m.metadata
    if meta:
        print("  metadata:")
        for key, value in sorted(meta.items()):
            print(f"    {key}: {value}")
    return 0


def _read_array_file(path: str) -> Any:
    import numpy as np

    p = Path(path)
    if p.suffix == ".npy":
        return np.load(p, allow_pickle=False)
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    if p.suffix == ".csv":
        return np.loadtxt(p, delimiter=",", dtype=np.float64, ndmin=2)
    raise OnnxBridgeError(f"cannot read inputs from {path!r}: use a .npy, .npz or .csv file")


def _cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    import onnxbridge

    m = onnxbridge.load(args.model)
    data = _read_array_file(args.input)
    outputs = m.run(data, as_dict=True)
    if args.output:
        np.savez(args.output, **outputs)
        print(f"wrote {len(outputs)} output(s) to {args.output}")
    else:
        for name, value in outputs.items():
            print(f"{name}: shape {list(np.shape(value))}")
            print(np.array2string(np.asarray(value), threshold=50))
    return 0


def _cmd_converters(args: argparse.Namespace) -> int:
    import onnxbridge

    rows = onnxbridge.converters()
    if not rows:
        print("no converters installed")
    for row in rows:
        print(row)
    return 0 if all(r.status == "ok" for r in rows) else 1


def _cmd_providers(args: argparse.Namespace) -> int:
    from onnxbridge.runtime import auto_plan, resolve_providers

    plan = auto_plan()
    print(plan)
    wanted, explicit = resolve_providers()
    if explicit:
        names = [p if isinstance(p, str) else p[0] for p in wanted]
        print("overridden (set_default_providers or ONNXBRIDGE_PROVIDERS): " + " > ".join(names))
    return 0


def _parser() -> argparse.ArgumentParser:
    from onnxbridge._version import __version__

    p = argparse.ArgumentParser(
        prog="onnxbridge",
        description="Convert trained models to verified ONNX and run them.",
        epilog="Example: onnxbridge demo",
    )
    p.add_argument("--version", action="version", version=f"onnxbridge {__version__}")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="train, convert, verify, save, load and run a small model",
                          epilog="Example: onnxbridge demo --out demo.onnx")
    demo.add_argument("--out", help="keep the converted model at this path")
    demo.set_defaults(func=_cmd_demo)

    info = sub.add_parser("info", help="signature, opsets, size, operators and metadata",
                          epilog="Example: onnxbridge info model.onnx")
    info.add_argument("model", help="path of an .onnx file")
    info.set_defaults(func=_cmd_info)

    run = sub.add_parser("run", help="run a model on inputs from a file",
                         epilog="Example: onnxbridge run model.onnx --input x.npy -o y.npz")
    run.add_argument("model", help="path of an .onnx file")
    run.add_argument("--input", "-i", required=True,
                     help=".npy (one input), .npz (inputs by name) or .csv (one 2-D input)")
    run.add_argument("--output", "-o", help="write outputs to this .npz instead of printing")
    run.set_defaults(func=_cmd_run)

    prov = sub.add_parser("providers",
                          help="hardware found, each execution provider's probe, the order run() uses",
                          epilog="Example: ONNXBRIDGE_PROVIDERS=cpu onnxbridge providers")
    prov.set_defaults(func=_cmd_providers)

    conv = sub.add_parser("converters", help="list installed converters and failed plugins",
                          epilog="Example: onnxbridge converters")
    conv.set_defaults(func=_cmd_converters)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``onnxbridge`` console script."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (OnnxBridgeError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"onnxbridge {args.command}: error: {exc}".splitlines()[0]
              if not isinstance(exc, OnnxBridgeError) or "\n" not in str(exc)
              else f"onnxbridge {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
