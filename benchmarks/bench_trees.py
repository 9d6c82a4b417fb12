"""Tree ensembles: each graph form (strategy=) against the library's own predict, side by side.

For every (model, rows, strategy) cell it reports the onnxbridge time (``m.run``), the native
time (``predict_proba``, ``predict`` for regressors), their ratio (< 1: onnxbridge is faster),
and the peak memory growth of each side during the cell. Native libraries get the same thread
count as onnxruntime's intra-op pool (``--threads``). Native and ONNX calls alternate round by
round, so load from other processes on a shared machine hits both alike; the ratio is the
median of the per-round ratios. Rows come from a generator in chunks of at most 100,000, so a
1,000,000-row cell never holds more than one chunk.

    python benchmarks/bench_trees.py --quick --out bench.md
    python benchmarks/bench_trees.py --rows 1,100,10000,1000000 --models xgb1000
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from _common import report

N_FEATURES = 20
CHUNK = 50_000
FORMS = ["tree_ensemble", "tree_ensemble_chunked", "perfect_tree_traversal", "tree_traversal",
         "gemm", "oblivious"]
MEMORY_CAP = 1.5 * 2**30  # skip a form whose intermediates would pass this (shared machine)


def _intermediate_bytes(form: str, n_trees: int, depth: int, rows: int) -> float:
    """Rough size of a tensor form's largest intermediates for one chunk of ``rows``."""
    rows = min(rows, CHUNK)
    per_tree = {"gemm": 3 * 2 ** depth, "oblivious": 2 * depth, "tree_traversal": 6,
                "perfect_tree_traversal": 4}.get(form, 0)
    return float(rows) * n_trees * per_tree * 8


def _train(name: str, threads: int, quick: bool) -> Any:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, N_FEATURES)).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = np.nan
    z = np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * np.nan_to_num(X[:, 2]) \
        + np.sin(np.nan_to_num(X[:, 3]))
    y = (z > 0).astype(np.int64)
    trees = {"xgb100": 100, "xgb1000": 1000, "lgb500": 500, "cb500": 500, "rf100": 100,
             "hgb200": 200}[name]
    if quick:
        trees = max(10, trees // 10)
    if name.startswith("xgb"):
        import xgboost

        return xgboost.XGBClassifier(n_estimators=trees, max_depth=6, n_jobs=threads).fit(X, y)
    if name.startswith("lgb"):
        import lightgbm

        return lightgbm.LGBMClassifier(n_estimators=trees, num_leaves=31, n_jobs=threads,
                                       verbose=-1).fit(X, y)
    if name.startswith("cb"):
        import catboost

        return catboost.CatBoostClassifier(iterations=trees, depth=6, thread_count=threads,
                                           verbose=0, allow_writing_files=False).fit(X, y)
    if name.startswith("rf"):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=trees, max_depth=10, n_jobs=threads,
                                      random_state=0).fit(np.nan_to_num(X), y)
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=trees, max_depth=6,
                                          early_stopping=False).fit(X, y)


def _native(name: str, model: Any, threads: int) -> Callable[[np.ndarray], Any]:
    if name.startswith("cb"):
        return lambda x: model.predict_proba(x, thread_count=threads)
    if name.startswith("lgb"):
        return lambda x: model.predict_proba(x, num_threads=threads)
    if name.startswith("rf"):
        return lambda x: model.predict_proba(np.nan_to_num(x))
    return lambda x: model.predict_proba(x)


def _chunks(rows: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    done = 0
    while done < rows:
        n = min(CHUNK, rows - done)
        x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
        x[rng.random(x.shape) < 0.05] = np.nan
        done += n
        yield x


class _PeakRSS:
    """Peak growth of this process's resident memory while the block runs (sampled)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> _PeakRSS:
        self._base = self._rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss() - self._base)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss() - self._base)


def _time(fn: Callable[[np.ndarray], Any], chunks: list[np.ndarray] | None, rows: int,
          seed: int, inner: int) -> float:
    start = time.perf_counter()
    for x in chunks if chunks is not None else _chunks(rows, seed):
        for _ in range(inner):
            fn(x)
    return (time.perf_counter() - start) / inner


def _cell(runners: dict[str, Callable[[np.ndarray], Any]], rows: int,
          rounds: int) -> dict[str, tuple[float, float, float]]:
    """{side: (median seconds, median ratio to native, peak MiB)} with sides interleaved."""
    small = rows <= CHUNK
    chunks = list(_chunks(rows, 1)) if small else None  # large cells: regenerated per side
    inner = max(1, min(200, 2000 // max(rows, 1)))
    for fn in runners.values():  # warm up (sessions, caches)
        fn(next(_chunks(min(rows, 1000), 2)))
    times: dict[str, list[float]] = {k: [] for k in runners}
    peaks = dict.fromkeys(runners, 0.0)
    for r in range(rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        for side in order:
            with _PeakRSS() as mem:
                times[side].append(_time(runners[side], chunks, rows, 1, inner))
            peaks[side] = max(peaks[side], mem.peak / 2**20)
    native = times["native"]
    return {side: (statistics.median(ts),
                   statistics.median([t / n for t, n in zip(ts, native, strict=True)]),
                   peaks[side])
            for side, ts in times.items()}


def _fmt_time(s: float) -> str:
    return f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.2f} s"


def main() -> None:
    global CHUNK
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="models with a tenth of the trees; rows 1, 100, 10,000")
    parser.add_argument("--models", default="xgb100,xgb1000,lgb500,cb500,rf100,hgb200")
    parser.add_argument("--rows", default=None, help="comma-separated batch sizes")
    parser.add_argument("--strategies", default=",".join(FORMS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--spin-off", action="store_true",
                        help="also time each form with onnxruntime's thread spinning off (a"
                             " session hook), as 'FORM, spin off'")
    parser.add_argument("--auto", action="store_true",
                        help="also time the model strategy='auto' makes for each batch size"
                             " (with the session settings it records) as 'auto -> FORM'")
    parser.add_argument("--experiments", action="store_true",
                        help="also time tree_ensemble and tree_ensemble_chunked as ai.onnx.ml"
                             " opset-5 TreeEnsemble nodes ('FORM, opset 5') and as row chunks"
                             " run concurrently over one 1-thread session per thread ('FORM,"
                             " N x 1-thread runs')")
    parser.add_argument("--chunk", type=int, default=CHUNK,
                        help="rows per call on both sides for batches above it (default 50,000)")
    parser.add_argument("--provider", default="cpu",
                        help="'cuda': the GPU check (tensor forms on onnxruntime's CUDA provider"
                             " against xgboost device='cuda')")
    args = parser.parse_args()
    if args.provider != "cpu":
        gpu_main(args)
        return
    CHUNK = args.chunk
    warnings.filterwarnings("ignore")
    os.environ["ONNXBRIDGE_THREADS"] = str(args.threads)  # m.run's intra-op threads
    import onnxbridge

    rows_list = [int(r) for r in (args.rows or ("1,100,10000" if args.quick else
                                                "1,100,10000,1000000")).split(",")]
    lines = [f"### Tree ensembles by graph form ({args.threads} threads each side"
             f"{', quick: a tenth of the trees' if args.quick else ''})", "",
             "onnxbridge `m.run` against the library's `predict_proba`, interleaved; ratio < 1:"
             " onnxbridge is faster. **auto's form** is the form `strategy=\"auto\"` picks for"
             " that batch size on the CPU; `auto -> FORM` (--auto) is the model auto makes,"
             " with the session settings it records (', spin off': intra-op spinning off)."
             " Memory: peak RSS growth during the cell. Batches above"
             f" {CHUNK:,} rows run as calls of {CHUNK:,} rows on both sides.", "",
             "| model | rows | strategy | onnxbridge | native | ratio | peak MiB (onnx / native) |",
             "|---|---:|---|---:|---:|---:|---:|"]
    conv_lines = ["", "| model | trees | max depth | to_onnx (s) | rewrite (s) |",
                  "|---|---:|---:|---:|---:|"]
    for name in args.models.split(","):
        model = _train(name, args.threads, args.quick)
        sample = np.nan_to_num(next(_chunks(200, 3))) if name.startswith("rf") else \
            next(_chunks(200, 3))
        converted: dict[str, Any] = {}
        shape = (0, 0)
        for form in args.strategies.split(","):
            start = time.perf_counter()
            try:
                m = onnxbridge.to_onnx(model, sample, strategy=form, verify=False)
            except onnxbridge.UnsupportedModelError:
                continue
            if form == "tree_ensemble":
                shape = (_n_trees(model), _depth(m))
                conv_lines.append(f"| {name} | {shape[0]} | {shape[1]} |"
                                  f" {time.perf_counter() - start:.2f} |"
                                  f" {_rewrite_seconds(m):.2f} |")
            converted[form] = m
            if args.spin_off:
                quiet = onnxbridge.to_onnx(model, sample, strategy=form, verify=False)
                quiet.add_session_hook(_spin_off)
                converted[f"{form}, spin off"] = quiet
            if args.experiments and form in ("tree_ensemble", "tree_ensemble_chunked"):
                converted[f"{form}, opset 5"] = onnxbridge.load(
                    _opset5(m.proto, 2 if form == "tree_ensemble_chunked" else 0))
                converted[f"{form}, {args.threads} x 1-thread runs"] = m
        for rows in rows_list:
            auto_m = onnxbridge.to_onnx(model, sample, strategy="auto", batch_size_hint=rows,
                                        verify=False)
            autos = auto_m.metadata["onnxbridge.trees.strategy"]
            runners: dict[str, Callable[[np.ndarray], Any]] = {
                "native": _native(name, model, args.threads)}
            if args.auto:  # the model auto makes, its recorded session settings included
                quiet = ", spin off" if "onnxbridge.session_config" in auto_m.metadata else ""
                runners[f"auto -> {autos}{quiet}"] = \
                    (lambda mm: lambda x: mm.run(x, providers="cpu"))(auto_m)
            for form, m in converted.items():
                base = form.split(",")[0]
                if _intermediate_bytes(base, *shape, rows) > MEMORY_CAP or (
                        rows > CHUNK and base not in ("tree_ensemble", "tree_ensemble_chunked",
                                                      autos, "oblivious")):
                    continue
                if "1-thread runs" in form:
                    runners[form] = _concurrent(m, args.threads)
                else:
                    runners[form] = (lambda mm: lambda x: mm.run(x, providers="cpu"))(m)
            rounds = args.rounds or (5 if rows <= 10_000 else 1)
            cell = _cell(runners, rows, rounds)
            nat_t, _, nat_mem = cell.pop("native")
            best = min(cell, key=lambda k: cell[k][1])
            for form, (t, ratio, mem) in cell.items():
                tag = " (auto's form)" if form == autos else ""
                mark = "**" if form == best else ""
                lines.append(f"| {name} | {rows:,} | {form}{tag} | {_fmt_time(t)} |"
                             f" {_fmt_time(nat_t)} | {mark}{ratio:.2f}{mark} |"
                             f" {mem:.0f} / {nat_mem:.0f} |")
                print(lines[-1], flush=True)
    report("\n".join(lines + conv_lines), args.out)


def gpu_main(args: argparse.Namespace) -> None:
    """Tensor forms on a GPU provider: equal to the CPU TreeEnsemble, timed against XGBoost on
    the GPU. Writes one table; a library that is not installed is skipped and said so."""
    warnings.filterwarnings("ignore")
    lines = [f"### Tree forms on {args.provider}", "",
             "Anchor: xgboost `device='cuda'` predict_proba for XGBoost; CatBoost's own"
             f" predict_proba on the CPU with {args.threads} threads for CatBoost."
             " ratio = onnxbridge / anchor"
             " (< 1: onnxbridge faster); max abs diff: probabilities against the CPU"
             " TreeEnsemble graph.", "",
             "| model | rows | strategy | onnxbridge | anchor | ratio | max abs diff vs CPU |",
             "|---|---:|---|---:|---:|---:|---:|"]
    notes = []
    for name in ("xgb100", "cb500"):
        try:
            model = _train(name, args.threads, args.quick)
        except ImportError as exc:
            notes.append(f"{name} skipped: {exc}")
            continue
        try:
            _gpu_cells(name, model, args, lines, notes)
        except Exception as exc:  # one model failing leaves the other's figures
            import traceback

            traceback.print_exc()
            notes.append(f"{name} failed: {type(exc).__name__}: {exc}")
    report("\n".join([*lines, "", *notes]), args.out)


def _gpu_cells(name: str, model: Any, args: argparse.Namespace, lines: list[str],
               notes: list[str]) -> None:
    import onnxbridge

    rows_list = [int(r) for r in (args.rows or "1,100,1000,3000,10000,100000").split(",")]
    sample = next(_chunks(200, 3))
    cpu = onnxbridge.to_onnx(model, sample, verify=False)
    if name.startswith("xgb"):
        gpu_model = _train(name, args.threads, args.quick)
        gpu_model.set_params(device="cuda")
        anchor: Callable[[np.ndarray], Any] = gpu_model.predict_proba
    else:
        anchor = _native(name, model, args.threads)
    forms = ["gemm", "tree_traversal", "perfect_tree_traversal", "auto"]
    forms += ["oblivious"] if name.startswith("cb") else []
    for rows in rows_list:
        x = next(_chunks(rows, 5))
        want = cpu.run(x, providers="cpu")[1]
        runners: dict[str, Callable[[np.ndarray], Any]] = {"native": anchor}
        diffs = {}
        for form in forms:
            m = onnxbridge.to_onnx(model, sample, strategy=form, verify=False,
                                   provider_hint=args.provider, batch_size_hint=rows)
            if form != "auto" or "cpu" not in args.provider.lower():  # (a CPU dry run)
                assert not any(n.domain == "ai.onnx.ml" for n in m.proto.graph.node), form
            used = m.session(args.provider).get_providers()
            if not used or ("CPU" in used[0] and "cpu" not in args.provider.lower()):
                notes.append(f"{name} {form}: no GPU provider ({used})")
                continue
            label = f"{form} -> {m.metadata['onnxbridge.trees.strategy']}" \
                if form == "auto" else form
            diffs[label] = float(np.abs(m.run(x, providers=args.provider)[1] - want).max())
            runners[label] = (lambda mm: lambda v: mm.run(v, providers=args.provider))(m)
        cell = _cell(runners, rows, args.rounds or 5)
        nat_t = cell.pop("native")[0]
        for label, (t, ratio, _) in cell.items():
            lines.append(f"| {name} | {rows:,} | {label} | {_fmt_time(t)} |"
                         f" {_fmt_time(nat_t)} | {ratio:.2f} | {diffs[label]:.1e} |")
            print(lines[-1], flush=True)


def _concurrent(m: Any, threads: int) -> Callable[[np.ndarray], Any]:
    """The rows cut into ``threads`` slices run at once on one session of 1 intra-op thread
    (onnxruntime releases the GIL in run; a session may run from several threads)."""
    from concurrent.futures import ThreadPoolExecutor

    session = m.session("cpu", threads=1)
    pool = ThreadPoolExecutor(threads)
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> Any:
        if len(x) < 2 * threads:
            return session.run(None, {name: x})
        parts = list(pool.map(lambda p: session.run(None, {name: p}),
                              np.array_split(x, threads)))
        return [np.concatenate(o) for o in zip(*parts, strict=True)]

    return run


def _opset5(proto: Any, chunk_trees: int) -> Any:
    """A copy of ``proto`` whose TreeEnsembleRegressor/Classifier nodes are ai.onnx.ml opset-5
    ``TreeEnsemble`` nodes summing the same leaves (one node, or nodes of ``chunk_trees``
    trees added up), with the classifier's outputs made as the tensor forms make them."""
    import copy

    from onnx import helper, numpy_helper

    from onnxbridge.plugins import _trees

    def node5(ens: Any, x: str, out: str) -> Any:
        cols = _trees._columns(ens)
        ints: dict[str, list[int]] = {k: [] for k in (
            "feat", "tn", "tl", "fn", "fl", "miss", "roots", "lt")}
        splits: list[float] = []
        weights: list[float] = []
        for t in range(ens.n_trees):
            vals = ens.values[t][:, cols]
            for k in range(len(cols)):
                if len(cols) > 1 and not vals[:, k].any():
                    continue  # one copy of the tree per target it adds to
                f = ens.feature[t]
                inner, leaves = np.flatnonzero(f >= 0), np.flatnonzero(f < 0)
                first, first_leaf = len(ints["feat"]), len(ints["lt"])
                at = {int(n): first + i for i, n in enumerate(inner)}
                at_leaf = {int(n): first_leaf + j for j, n in enumerate(leaves)}
                ints["lt"] += [k] * len(leaves)
                weights += vals[leaves, k].tolist()
                ints["roots"].append(first)
                if not len(inner):  # a lone leaf: one node whose both branches reach it
                    ints["feat"].append(0)
                    splits.append(0.0)
                    ints["tn"].append(first_leaf)
                    ints["fn"].append(first_leaf)
                    ints["tl"].append(1)
                    ints["fl"].append(1)
                    ints["miss"].append(0)
                    continue
                for n in inner:
                    ints["feat"].append(int(f[n]))
                    splits.append(float(ens.threshold[t][n]))
                    ints["miss"].append(int(ens.nan_left[t][n]))
                    for child, ids, leafs in ((ens.left[t][n], "tn", "tl"),
                                              (ens.right[t][n], "fn", "fl")):
                        leaf = bool(f[child] < 0)
                        ints[ids].append(at_leaf[int(child)] if leaf else at[int(child)])
                        ints[leafs].append(int(leaf))
        return helper.make_node(
            "TreeEnsemble", [x], [out], domain="ai.onnx.ml", n_targets=len(cols),
            nodes_featureids=ints["feat"],
            nodes_splits=numpy_helper.from_array(np.asarray(splits, ens.dtype)),
            nodes_modes=numpy_helper.from_array(np.zeros(len(splits), np.uint8)),  # x <= t
            nodes_truenodeids=ints["tn"], nodes_trueleafs=ints["tl"],
            nodes_falsenodeids=ints["fn"], nodes_falseleafs=ints["fl"],
            nodes_missing_value_tracks_true=ints["miss"], tree_roots=ints["roots"],
            leaf_targetids=ints["lt"],
            leaf_weights=numpy_helper.from_array(np.asarray(weights, ens.dtype)),
            aggregate_function=1, post_transform=0)  # SUM, NONE

    proto = copy.deepcopy(proto)
    graph = proto.graph
    nodes = []
    for node in graph.node:
        if node.op_type not in ("TreeEnsembleRegressor", "TreeEnsembleClassifier"):
            nodes.append(node)
            continue
        ens = _trees.read_ensemble(node, np.dtype(np.float32))
        b = _trees._Builder(f"{node.name}_v5_")
        step = chunk_trees or ens.n_trees
        parts = []
        for i in range(0, ens.n_trees, step):
            sub = copy.copy(ens)
            for key in ("feature", "threshold", "left", "right", "nan_left", "values"):
                setattr(sub, key, getattr(ens, key)[i: i + step])
            parts.append(b.name("part"))
            b.nodes.append(node5(sub, node.input[0], parts[-1]))
        sums = parts[0] if len(parts) == 1 else b.op("Sum", parts)
        _trees._finish(b, _trees._unmirror(b, sums, ens), ens, node)
        nodes.extend(b.nodes)
        graph.initializer.extend(b.inits)
    del graph.node[:]
    graph.node.extend(nodes)
    for o in proto.opset_import:
        if o.domain == "ai.onnx.ml":
            o.version = 5
        elif o.domain in ("", "ai.onnx"):
            o.version = max(o.version, 13)
    proto.ir_version = max(proto.ir_version, 8)
    return proto


def _spin_off(options: Any) -> None:
    """Session hook: onnxruntime's pool threads sleep instead of spinning between tasks."""
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")


def _n_trees(model: Any) -> int:
    for attr in ("n_estimators", "max_iter"):
        if hasattr(model, attr):
            return int(getattr(model, attr))
    return int(model.tree_count_)


def _depth(m: Any) -> int:
    from onnxbridge.plugins._trees import read_ensemble

    node = next(n for n in m.proto.graph.node if n.op_type.startswith("TreeEnsemble"))
    return int(read_ensemble(node, np.dtype(np.float32)).depths().max())


def _rewrite_seconds(m: Any) -> float:
    """Seconds to rewrite the TreeEnsemble graph as the perfect-traversal form."""
    import copy

    from onnxbridge.plugins._trees import TreeForm, apply_strategy

    proto = copy.deepcopy(m.proto)
    start = time.perf_counter()
    try:
        apply_strategy(proto, "perfect_tree_traversal")
    except TreeForm:  # too deep to pad: the unpadded traversal form
        start = time.perf_counter()
        apply_strategy(copy.deepcopy(m.proto), "tree_traversal")
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
