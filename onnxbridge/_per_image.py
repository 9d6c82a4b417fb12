"""Running a torchvision detection model's ONNX export on any number of images.

A detection model converted from one image (``to_onnx(model, [image])``) has one input
``images_0`` ``[3, height, width]``; :meth:`OnnxModel.run` given a list of images (or several
image arguments, or one ``[N, 3, H, W]`` array) runs that graph once per image on the one
session and returns ``boxes_0, scores_0, labels_0, boxes_1, ...`` as a model exported with that
many images would. The result for each image is the torch model's for that image alone.

A model converted from ``k > 1`` images takes exactly ``k``: torchvision pads the images of one
call to a common size, so that graph's images are not independent; another count is an
InputError naming the count and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from onnxbridge.errors import InputError

if TYPE_CHECKING:
    from onnxbridge.model import OnnxModel

__all__ = ["IMAGES_KEY", "image_count", "images_call", "run_images"]

IMAGES_KEY = "onnxbridge.detection.images"  # metadata: how many image inputs the graph has


def image_count(metadata: Mapping[str, str]) -> int:
    """How many images a detection export takes (0: not a detection export)."""
    value = metadata.get(IMAGES_KEY, "")
    return int(value) if value.isdigit() else 0


def _rank(value: Any) -> int:
    ndim = getattr(value, "ndim", None)
    if isinstance(ndim, int):
        return ndim
    import numpy as np

    try:
        return int(np.ndim(value))
    except Exception:
        return -1


def images_call(count: int, args: Sequence[Any]) -> list[Any] | None:
    """The images of a ``run`` call that is not the graph's own call, else None."""
    if len(args) == 1 and isinstance(args[0], (list, tuple)) and args[0] and all(
            _rank(a) == 3 for a in args[0]):
        return list(args[0])
    if len(args) == 1 and count == 1 and _rank(args[0]) == 4:
        return list(args[0])  # a stacked batch [N, 3, H, W]
    if args and len(args) != count and all(_rank(a) == 3 for a in args):
        return list(args)
    return None


def _numbered(name: str, image: int) -> str:
    """``boxes_0`` -> ``boxes_3``; a renamed output ``b`` -> ``b_3``."""
    if re.search(r"_0$", name):
        return f"{name[:-2]}_{image}"
    return f"{name}_{image}"


def run_images(model: OnnxModel, count: int, images: list[Any], *, as_dict: bool,
               **options: Any) -> Any:
    """Run ``images`` through a detection export that takes ``count`` images (see module)."""
    if count != 1:
        if len(images) == count:
            return model.run(*images, as_dict=as_dict, **options)
        raise InputError(
            f"this detection model was converted with {count} images (inputs"
            f" {', '.join(model.input_names)}) and takes exactly {count}; it was given"
            f" {len(images)}. torchvision pads the images of one call to a common size, so"
            f" such an export's images are not independent. Pass {count} images, or convert"
            " with one image (onnxbridge.to_onnx(model, [image])): that model takes any number"
            " of images, run one by one on one session")
    names: list[str] = []
    values: list[Any] = []
    for i, image in enumerate(images):
        result = model.run(image, as_dict=True, **options)
        for name, value in result.items():
            names.append(_numbered(name, i))
            values.append(value)
    if as_dict:
        return dict(zip(names, values, strict=True))
    return values[0] if len(values) == 1 else tuple(values)
