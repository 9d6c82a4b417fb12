"""torchvision detection models (SSD, RetinaNet, FCOS, Faster/Mask/Keypoint R-CNN).

Imported only when a torch model is converted. What is special about them:

- They take a list of images ``[image_0, image_1, ...]`` (each ``[3, H, W]``, any size): one
  ONNX input per image, ``images_0``, ``images_1`` ..., whose height and width are dynamic.
- They return one dict per image; the outputs are ``boxes_0, scores_0, labels_0`` (+
  ``masks_0``, ``keypoints_0``, ``keypoints_scores_0``), then ``boxes_1`` ..., the first axis of
  each ``detections_0`` (how many boxes survived: it depends on the values).
- Their post-processing (score threshold, top-k, batched NMS) keeps a number of boxes that
  depends on the values, and picks one of boxes whose scores tie in whatever order the runtime
  sorts them. :func:`compare_detections` therefore matches detections, not rows.
"""

from __future__ import annotations

import linecache
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxbridge.registry import mro_paths
from onnxbridge.verify import OutputParity, Tolerance

__all__ = ["compare_detections", "detection_names", "is_detection_model", "name_detection_axes"]

_FAMILY = "torchvision.models.detection."
# Per-detection outputs besides boxes/scores/labels: compared on matched detections.
_PER_DETECTION = ("masks", "keypoints", "keypoints_scores")
# float32 boxes are pixel coordinates decoded through exp() and rescaled to the image: a few
# thousandths of a pixel is rounding. Scores are probabilities.
_SCORE_TOL = (1e-4, 1e-3)
_BOX_TOL = (1e-4, 1e-3)  # atol: a fraction of the image's largest coordinate
_EXTRA_TOL = (1e-3, 1e-3)  # masks (interpolated, pasted) and keypoints


def is_detection_model(model: object) -> bool:
    """A torchvision detection model (GeneralizedRCNN, SSD, RetinaNet, FCOS and subclasses)."""
    return any(p.startswith(_FAMILY) for p in mro_paths(model))


def detection_names(outputs: Any) -> list[str] | None:
    """``boxes_0, scores_0, labels_0, ...`` for a list of per-image dicts, else None."""
    if not isinstance(outputs, (list, tuple)) or not outputs:
        return None
    names: list[str] = []
    for i, item in enumerate(outputs):
        if not isinstance(item, Mapping) or not {"boxes", "scores", "labels"} <= set(item):
            return None
        names += [f"{key}_{i}" for key in item]
    return names


def name_detection_axes(proto: Any, names: Sequence[str],
                        shapes: Sequence[Sequence[int]]) -> None:
    """Call the first axis of each image's outputs ``detections_i`` and a mask's last two the
    image's height and width; other axes keep the sample's size (the exporter's names are
    generated ones like ``Concatoutput_0.boxes_dim_0``, matched by size only)."""
    inputs = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in proto.graph.input]
    by_name = dict(zip(names, shapes, strict=True))
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        if output.name not in by_name or not dims:
            continue
        key, _, index = output.name.rpartition("_")
        image = inputs[int(index)] if int(index) < len(inputs) else []
        for axis, dim in enumerate(dims):
            if axis == 0:
                dim.dim_param = f"detections_{index}"
            elif key == "masks" and axis >= 2 and len(image) == 3 and len(dims) == 4:
                size = image[axis - 1]
                if isinstance(size, str):
                    dim.dim_param = size
                else:
                    dim.dim_value = int(size)
            elif axis < len(by_name[output.name]):
                dim.dim_value = int(by_name[output.name][axis])


def score_threshold(model: Any) -> float | None:
    """The score below which the model drops detections (None when it has none)."""
    for owner in (model, getattr(model, "roi_heads", None)):
        value = getattr(owner, "score_thresh", None)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def tracing_aware(filename: str, lineno: int) -> bool:
    """A branch in torchvision's detection code written for the tracer (it checks is_tracing,
    or a count that is positive whenever there is anything to decode)."""
    if f"{os.sep}torchvision{os.sep}" not in filename:
        return False
    line = linecache.getline(filename, lineno)
    return "_is_tracing" in line or "is_tracing()" in line or bool(
        re.search(r"\bbox_sum > 0\b", line))


def _close(e: np.ndarray, a: np.ndarray, tol: tuple[float, float]) -> tuple[bool, float]:
    diff = np.abs(e.astype(np.float64) - a.astype(np.float64))
    if not diff.size:
        return True, 0.0
    return bool((diff <= tol[0] + tol[1] * np.abs(e)).all()), float(diff.max())


def _line(name: str, batch: int, shape: tuple[int, ...], dtype: str, passed: bool,
          max_abs: float | None, tol: tuple[float, float], problem: str | None) -> OutputParity:
    return OutputParity(
        name=name, kind="detections", batch=batch, shape=shape, dtype=dtype, max_abs=max_abs,
        max_rel=None if max_abs is None else 0.0, atol=tol[0], rtol=tol[1],
        tolerance_reason="detections matched by label, score and box", worst_row=None,
        label_agreement=None, passed=passed, problem=problem)


def _compare_image(
    index: int, exp: Mapping[str, np.ndarray], act: Mapping[str, np.ndarray], batch: int,
    threshold: float | None, cap: int | None,
) -> list[OutputParity]:
    es, as_ = exp["scores"].astype(np.float64), act["scores"].astype(np.float64)
    eb, ab = exp["boxes"], act["boxes"]
    el, al = exp["labels"], act["labels"]
    n, m = len(es), len(as_)
    box_tol = (_BOX_TOL[0] * max(1.0, float(np.abs(eb).max()) if eb.size else 1.0), _BOX_TOL[1])
    taken = np.zeros(m, dtype=bool)
    pairs: list[tuple[int, int]] = []
    unmatched_e: list[int] = []
    for i in np.argsort(-es, kind="stable"):
        near = np.abs(as_ - es[i]) <= _SCORE_TOL[0] + _SCORE_TOL[1] * abs(es[i])
        candidates = np.flatnonzero(near & ~taken & (al == el[i]))
        best, best_diff = -1, np.inf
        for j in candidates:
            ok, diff = _close(eb[i], ab[j], box_tol)
            if ok and diff < best_diff:
                best, best_diff = int(j), diff
        if best < 0:
            unmatched_e.append(int(i))
        else:
            taken[best] = True
            pairs.append((int(i), best))
    unmatched_a = [int(j) for j in np.flatnonzero(~taken)]
    problem: str | None = None
    passed = True
    if unmatched_e or unmatched_a:
        lost = [es[i] for i in unmatched_e] + [as_[j] for j in unmatched_a]
        first = max(lost)
        # Scores closer than a few times the runtimes' own difference may swap places.
        seen = max((abs(es[i] - as_[j]) for i, j in pairs), default=0.0)
        tol = min(_SCORE_TOL[0] + _SCORE_TOL[1] * abs(first), max(8 * seen, 1e-7))
        above = sum(1 for i, _ in pairs if es[i] > first + tol)
        ties = int((np.abs(es - first) <= tol).sum() + (np.abs(as_ - first) <= tol).sum())
        near_threshold = threshold is not None and first <= threshold + tol
        lowest = min((es[i] for i, _ in pairs), default=np.inf)
        at_cut = (cap is not None and n == m == cap and len(unmatched_e) == len(unmatched_a)
                  and all(score <= lowest + tol for score in lost))
        where = (f"{len(unmatched_e)} of the source's {n} and {len(unmatched_a)} of the ONNX"
                 f" model's {m} detections of image {index} have no match, the first at score"
                 f" {first:.6g}")
        if (ties > 2 or near_threshold or at_cut) and above > 0:
            problem = (f"the {above} detection(s) scored above {first:.6g} match; {where}, where"
                       + (f" {ties} detections tie in score (NMS keeps one of tied boxes in the"
                          " order each runtime sorts them, and what it suppresses next follows"
                          " from that)" if ties > 2 else
                          f" the score is at the threshold {threshold:g}" if near_threshold
                          else f" the lowest scores meet the model's cut of {cap} detections"
                          " (which of nearly equal scores make it follows each runtime's"
                          " rounding)")
                       + ", so the rest may differ legitimately")
        else:
            passed = False
            why = (" Every detection from the first on ties in score (random weights?): the"
                   " comparison cannot tell the runtimes apart; verify with trained weights or"
                   " a model whose scores differ." if ties > 2 and above == 0 else
                   " The post-processing (score threshold, top-k, NMS) or the network differs;"
                   " export the network without it (docs/guide-pytorch.md, Detection models).")
            problem = f"{where}.{why}"
    e_idx = np.array([i for i, _ in pairs], dtype=np.int64)
    a_idx = np.array([j for _, j in pairs], dtype=np.int64)
    out: list[OutputParity] = []
    for key, tol in (("boxes", box_tol), ("scores", _SCORE_TOL), ("labels", (0.0, 0.0)),
                     *((k, _EXTRA_TOL) for k in _PER_DETECTION if k in exp)):
        e, a = exp[key], act.get(key)
        name = f"{key}_{index}"
        if a is None:
            out.append(_line(name, batch, (), str(e.dtype), False, None, tol,
                             "missing from the ONNX model's outputs"))
            continue
        if e.shape[1:] != a.shape[1:]:
            out.append(_line(name, batch, tuple(a.shape), str(a.dtype), False, None, tol,
                             f"shape {list(a.shape)} but the source gives {list(e.shape)}"))
            continue
        ok, diff = _close(e[e_idx], a[a_idx], tol)
        line_problem = problem if key == "boxes" or not passed else None
        if not passed and key != "boxes":
            line_problem = f"see boxes_{index}"
        if not ok:
            line_problem = (f"{len(pairs)} matched detections differ by up to {diff:.3g}"
                            + (f"; {problem}" if problem else ""))
        out.append(_line(name, batch, tuple(a.shape), str(a.dtype), ok and passed, diff, tol,
                         line_problem))
    return out


def detection_cap(model: Any) -> int | None:
    """The most detections the model keeps per image (``detections_per_img``)."""
    for owner in (model, getattr(model, "roi_heads", None)):
        value = getattr(owner, "detections_per_img", None)
        if isinstance(value, int):
            return value
    return None


def compare_detections(
    threshold: float | None, cap: int | None = None, layout: Sequence[str] | None = None,
) -> Any:
    """A ``compare_outputs`` for per-image detection outputs (``boxes_0, scores_0, ...``).

    Detections are matched one to one by label, score and box, whatever their order. Every
    detection must match, except below a score where several detections tie (NMS may keep a
    different one of tied boxes, and the suppression after it follows), at the model's score
    threshold, or among the lowest scores at its cut of ``cap`` detections; then at least one
    detection above must match, and the line says so. ``layout`` gives each output's
    ``key_image`` (``boxes_0``) when the outputs were renamed; by default their names.
    """

    def compare(
        names: Sequence[str], expected: Sequence[Any], actual: Sequence[Any], *,
        kinds: Mapping[str, str] | None = None, batch: int | None = None,
        tolerance: Tolerance | None = None,
        converter_tolerances: Mapping[str, tuple[float, float]] | None = None,
    ) -> list[OutputParity]:
        images: dict[int, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {}
        for name, e, a in zip(layout or names, expected, actual, strict=True):
            key, _, number = name.rpartition("_")
            exp, act = images.setdefault(int(number), ({}, {}))
            exp[key], act[key] = np.asarray(e), np.asarray(a)
        count = len(images)
        out: list[OutputParity] = []
        for image, (exp, act) in sorted(images.items()):
            out += _compare_image(image, exp, act, count, threshold, cap)
        return out

    return compare


def resize_sizes_in_double(proto: Any) -> int:
    """Compute each Resize's output size in float64, as torchvision does in Python.

    GeneralizedRCNNTransform resizes by ``scale = min_size / shorter side``; traced, that is
    float32 ``Reciprocal(side) * min_size`` and ``Floor(side * scale)``, which gives 159 where
    PyTorch's float64 gives 160 (a 100 px side scaled to 160), and every box then differs. The
    float casts and constants that only feed a Resize's ``sizes`` input become float64.
    Returns how many Resize nodes were changed (one that shares its arithmetic is left alone).
    """
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    numeric = {"Cast", "Mul", "Div", "Min", "Max", "Reciprocal", "Floor", "Constant", "Add",
               "Sub", "Unsqueeze", "Concat", "Gather", "Shape", "Slice", "Squeeze", "ReduceMin",
               "ReduceMax"}
    changed = 0
    for resize in [n for n in graph.node if n.op_type == "Resize" and len(n.input) > 3
                   and n.input[3]]:
        ancestors: dict[int, Any] = {}
        stack = [resize.input[3]]
        ok = True
        while stack:
            node = producer.get(stack.pop())
            if node is None or id(node) in ancestors:
                continue
            if node.op_type not in numeric:
                ok = False
                break
            ancestors[id(node)] = node
            if node.op_type not in ("Shape",):
                stack += [i for i in node.input if i]
        floats = [n for n in ancestors.values() if _float_typed(n)]
        if not ok or not floats:
            continue
        # Every node computing a float value from those (up to a Cast to another type).
        valued = {id(n) for n in floats}
        grew = True
        while grew:
            grew = False
            for n in ancestors.values():
                if id(n) not in valued and n.op_type != "Cast" and any(
                        id(producer[i]) in valued for i in n.input if i in producer):
                    valued.add(id(n))
                    grew = True
        inside = set(ancestors) | {id(resize)}
        if any(id(c) not in inside for n in ancestors.values() if id(n) in valued
               for o in n.output for c in consumers.get(o, [])):
            continue  # the float32 value is used elsewhere too
        for n in floats:
            if n.op_type == "Cast":
                for a in n.attribute:
                    if a.name == "to":
                        a.i = onnx.TensorProto.DOUBLE
            else:
                for a in n.attribute:
                    if a.name == "value":
                        value = numpy_helper.to_array(a.t).astype(np.float64)
                        a.t.CopyFrom(numpy_helper.from_array(value, a.t.name))
        changed += 1
    return changed


def _float_typed(node: Any) -> bool:
    import onnx

    for a in node.attribute:
        if node.op_type == "Cast" and a.name == "to":
            return bool(a.i == onnx.TensorProto.FLOAT)
        if node.op_type == "Constant" and a.name == "value":
            return bool(a.t.data_type == onnx.TensorProto.FLOAT)
    return False
