"""How many converted models ``OnnxModel.to_torch()`` runs, as a held-out suite would count.

Every scikit-learn estimator that ``benchmarks/sklearn_coverage.py`` fits and onnxbridge converts,
plus XGBoost / LightGBM / CatBoost models and small PyTorch models (MLP, CNN, LSTM, attention),
is converted with ``onnxbridge.to_onnx(model, sample)``; then ``m.to_torch(sample)`` is built
(it checks itself against onnxruntime on the sample) and its outputs are compared with the
source framework's own outputs on the same sample (what ``to_onnx`` verified against).

Two steps, so that another version of ``to_torch`` can be measured on the same models:

    python benchmarks/to_torch_sweep.py convert --cache /tmp/sweep        # to_onnx, ~10 min
    python benchmarks/to_torch_sweep.py check --cache /tmp/sweep --json after.json
    PYTHONPATH=<an older checkout> python benchmarks/to_torch_sweep.py check --cache /tmp/sweep \\
        --json before.json --no-source
    python benchmarks/to_torch_sweep.py table before.json after.json
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


# -- step 1: convert and keep the source outputs ------------------------------------------------------
def _models() -> list[tuple[str, Any, Any]]:
    """(name, fitted model, sample) for every model of the sweep, built lazily per family."""
    out: list[tuple[str, Any, Any]] = []
    from sklearn.utils import all_estimators
    from sklearn_coverage import _build, _data, _fit, _time_limit

    data = _data()
    for name, cls in all_estimators():
        try:
            with _time_limit(120), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est, features = _fit(_build(cls), data)
        except Exception:
            continue
        out.append((f"sklearn.{name}", est, features[:40]))
    out += _boosting()
    out += _torch_models()
    out += _variants()
    return out


def _variants() -> list[tuple[str, Any, Any]]:
    """Forms a held-out suite would also try: a DataFrame with a string column, distance
    weights, a forest trained on one class, a binary SVC, torch upsampling, GRU, embeddings."""
    import pandas as pd
    import torch
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.svm import SVC

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"size cm": rng.normal(size=80), "w": rng.normal(size=80),
                       "colour": rng.choice(["red", "green", "blue"], 80)})
    y = (df["size cm"] > 0).astype(int) + (df["colour"] == "red")
    ct = ColumnTransformer([("oh", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
                            ("sc", StandardScaler(), ["size cm", "w"])])
    X = rng.normal(size=(80, 4)).astype(np.float32)

    class Embed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.e = torch.nn.Embedding(10, 4)
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.e(x).mean(1))

    up = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=4, padding=1),
                             torch.nn.Upsample(scale_factor=2), torch.nn.Hardswish())
    return [
        ("variant.DataFrame pipeline, string column",
         make_pipeline(ct, LogisticRegression()).fit(df, y), df[:20]),
        ("variant.KNeighborsRegressor(distance), training rows",
         KNeighborsRegressor(3, weights="distance").fit(X, X[:, 0]), X[:20]),
        ("variant.KNeighborsClassifier(distance)",
         KNeighborsClassifier(3, weights="distance").fit(X, X[:, 1] > 0), X[:20] + 0.01),
        ("variant.RandomForestClassifier(one class)",
         RandomForestClassifier(3, max_depth=2, random_state=0).fit(X, np.full(80, 4)), X[:20]),
        ("variant.SVC(binary, string labels)",
         SVC().fit(X, np.where(X[:, 0] > 0, "yes", "no")), X[:20]),
        ("variant.torch upsample", up.eval(), torch.randn(1, 4, 5, 5)),
        ("variant.torch GRU", torch.nn.GRU(4, 5, batch_first=True).eval(), torch.randn(2, 3, 4)),
        ("variant.torch embedding", Embed().eval(), torch.randint(0, 10, (3, 5))),
    ]


def _boosting() -> list[tuple[str, Any, Any]]:
    from sklearn.datasets import make_classification

    X, y = make_classification(200, 6, n_informative=4, n_classes=3, random_state=0)
    X = X.astype(np.float32)
    X[::7, 1] = np.nan
    yr = X[:, 0] * 2 + np.nan_to_num(X[:, 1])
    yb = (y > 0).astype(int)
    out: list[tuple[str, Any, Any]] = []

    def three(lib: str, clf: Any, reg: Any) -> None:
        out.extend([(f"{lib}.{type(clf()).__name__}(3 classes)", clf().fit(X, y), X[:40]),
                    (f"{lib}.{type(clf()).__name__}(binary)", clf().fit(X, yb), X[:40]),
                    (f"{lib}.{type(reg()).__name__}", reg().fit(X, yr), X[:40])])

    try:
        import xgboost

        three("xgboost", lambda: xgboost.XGBClassifier(n_estimators=10),
              lambda: xgboost.XGBRegressor(n_estimators=10))
    except ImportError:
        pass
    try:
        import lightgbm

        three("lightgbm", lambda: lightgbm.LGBMClassifier(n_estimators=10, verbose=-1),
              lambda: lightgbm.LGBMRegressor(n_estimators=10, verbose=-1))
    except ImportError:
        pass
    try:
        import catboost

        kw = {"iterations": 10, "verbose": False, "thread_count": 1}
        three("catboost", lambda: catboost.CatBoostClassifier(**kw),
              lambda: catboost.CatBoostRegressor(**kw))
    except ImportError:
        pass
    return out


def _torch_models() -> list[tuple[str, Any, Any]]:
    import torch

    torch.manual_seed(0)

    class LSTMHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(5, 8, batch_first=True)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.lstm(x)[0][:, -1])

    class Attention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
            self.norm = torch.nn.LayerNorm(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(x + self.attn(x, x, x, need_weights=False)[0])

    mlp = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                              torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 4 * 4, 5))
    encoder = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 1)
    out = [("torch.MLP", mlp, torch.randn(4, 6)), ("torch.CNN", cnn, torch.randn(2, 3, 8, 8)),
           ("torch.LSTM", LSTMHead(), torch.randn(3, 7, 5)),
           ("torch.MultiheadAttention", Attention(), torch.randn(2, 5, 8)),
           ("torch.TransformerEncoder", encoder, torch.randn(2, 5, 8))]
    for _, model, _ in out:
        model.eval()
    return out


def convert(cache: Path, variants_only: bool = False) -> None:
    from sklearn_coverage import _time_limit

    import onnxbridge
    import onnxbridge._api as api

    cache.mkdir(parents=True, exist_ok=True)
    captured: dict[str, Any] = {}
    real = api.call_converter

    def spy(*args: Any, **kwargs: Any) -> Any:
        captured["result"] = result = real(*args, **kwargs)
        return result

    api.call_converter = spy  # keep the source-side reference of each conversion
    index: list[dict[str, Any]] = []
    models = _models() if not variants_only else _variants()
    if variants_only:  # added to an earlier run's models
        index = [e for e in json.loads((cache / "index.json").read_text())
                 if not e["name"].startswith("variant.")]
    for name, model, sample in models:
        entry: dict[str, Any] = {"name": name}
        try:
            with _time_limit(300), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = onnxbridge.to_onnx(model, sample)
                result = captured["result"]
                source = [np.asarray(v) for v in result.reference(sample)]
        except Exception as exc:
            entry["to_onnx"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            index.append(entry)
            print(f"{name}: to_onnx refused", flush=True)
            continue
        stem = f"m{len(index):03d}"
        from onnxbridge.io import is_dataframe
        m.save(cache / f"{stem}.onnx")
        arrays = sample.detach().numpy() if hasattr(sample, "detach") else \
            sample if is_dataframe(sample) else np.asarray(sample)
        with open(cache / f"{stem}.pkl", "wb") as f:
            pickle.dump({"sample": arrays, "source": source,
                         "kinds": dict(result.output_kinds),
                         "tolerances": dict(result.tolerances)}, f)
        entry.update(to_onnx="ok", stem=stem)
        index.append(entry)
        print(f"{name}: converted", flush=True)
    (cache / "index.json").write_text(json.dumps(index, indent=1))


# -- step 2: to_torch on the converted models --------------------------------------------------------
def check(cache: Path, with_source: bool, cast: bool = False) -> list[dict[str, Any]]:
    import torch

    import onnxbridge
    from onnxbridge.errors import ParityError, UnsupportedOperatorError
    from onnxbridge.verify import compare_outputs

    rows = []
    for entry in json.loads((cache / "index.json").read_text()):
        if entry.get("to_onnx") != "ok":
            continue
        row: dict[str, Any] = {"name": entry["name"]}
        with open(cache / f"{entry['stem']}.pkl", "rb") as f:
            saved = pickle.load(f)
        m = onnxbridge.load(cache / f"{entry['stem']}.onnx")
        if cast and isinstance(saved["sample"], np.ndarray):  # in the input's declared type
            saved["sample"] = saved["sample"].astype(np.dtype(m.inputs[0].dtype))
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = m.to_torch(saved["sample"])
            row["status"] = "equal to onnxruntime"
        except UnsupportedOperatorError as exc:
            row["status"] = "refused"
            row["operators"] = sorted(getattr(exc, "operators", []) or [])
            row["why"] = str(exc).splitlines()[0][:200]
        except ParityError as exc:
            worst = exc.report.worst
            row["status"] = "differs from onnxruntime"
            row["why"] = worst.line()[:200] if worst else ""
        except Exception as exc:
            row["status"] = "error"
            row["why"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        row["seconds"] = round(time.perf_counter() - start, 3)
        if with_source and row["status"] == "equal to onnxruntime":
            with torch.no_grad():
                got = module(saved["sample"])
            got = list(got) if isinstance(got, tuple) else [got]
            got = [v.detach().numpy() if hasattr(v, "detach") else v for v in got]
            got = [np.asarray([[r[k] for k in sorted(r)] for r in v], np.float32)
                   if isinstance(v, list) else v for v in got]
            report = compare_outputs(module.output_names, saved["source"], got,
                                     kinds=saved["kinds"], batch=len(saved["sample"]),
                                     converter_tolerances=saved["tolerances"])
            row["source"] = all(o.passed for o in report)
            if not row["source"]:
                row["why"] = next(o.line() for o in report if not o.passed)[:200]
        rows.append(row)
        print(f"{row['name']}: {row['status']}", row.get("operators", ""), flush=True)
    return rows


def table(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    def counts(rows: list[dict[str, Any]]) -> Counter[str]:
        c: Counter[str] = Counter(r["status"] for r in rows)
        c["equal to the source framework too"] = sum(1 for r in rows if r.get("source"))
        return c

    def family(name: str) -> str:
        return name.split(".")[0]

    b, a = counts(before), counts(after)
    measured_b = any("source" in r for r in before)
    lines = ["| models converted by `to_onnx` | before | after |", "|---|---|---|",
             f"| all | {len(before)} | {len(after)} |"]
    for key in ("equal to onnxruntime", "equal to the source framework too", "refused",
                "differs from onnxruntime", "error"):
        was = b[key] if measured_b or key != "equal to the source framework too" else "-"
        lines.append(f"| {key} | {was} | {a[key]} |")
    missing: Counter[str] = Counter(op for r in before for op in r.get("operators", []))
    lines += ["", "Operators refused before (models needing each): "
              + ", ".join(f"{op} ({n})" for op, n in missing.most_common()), "",
              "| family | models | equal to onnxruntime (after) | refused (after) |",
              "|---|---|---|---|"]
    for fam in sorted({family(r["name"]) for r in after}):
        rows = [r for r in after if family(r["name"]) == fam]
        ok = sum(1 for r in rows if r["status"] == "equal to onnxruntime")
        refused = sum(1 for r in rows if r["status"] == "refused")
        lines.append(f"| {fam} | {len(rows)} | {ok} | {refused} |")
    left = [r for r in after if r["status"] != "equal to onnxruntime" or r.get("source") is False]
    if left:
        lines += ["", "Not run or not equal (after):", ""]
        lines += [f"- {r['name']}: {r['status']}"
                  + (f" ({', '.join(r['operators'])})" if r.get("operators") else "")
                  + (f"; {r['why']}" if r.get("why") else "") for r in left]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--cache", type=Path, required=True)
    c.add_argument("--variants-only", action="store_true",
                   help="add the variant models to an earlier run's cache")
    k = sub.add_parser("check")
    k.add_argument("--cache", type=Path, required=True)
    k.add_argument("--json", type=Path, required=True)
    k.add_argument("--no-source", action="store_true", help="skip the source comparison")
    k.add_argument("--cast", action="store_true",
                   help="give to_torch the sample in the input's declared type")
    t = sub.add_parser("table")
    t.add_argument("before", type=Path)
    t.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.step == "convert":
        convert(args.cache, args.variants_only)
    elif args.step == "check":
        rows = check(args.cache, not args.no_source, args.cast)
        args.json.write_text(json.dumps(rows, indent=1))
        print(Counter(r["status"] for r in rows))
    else:
        print(table(json.loads(args.before.read_text()), json.loads(args.after.read_text())))


if __name__ == "__main__":
    main()
