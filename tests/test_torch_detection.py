"""torchvision detection models: a list of images in, boxes/scores/labels per image out.

Tiny random backbones (the post-processing under test is torchvision's own, whatever the
backbone), 160 px images, 2-3 classes, a score threshold of 0 so that every image has
detections. The ONNX outputs are compared with the torch model's own, on the sample and on
images of other sizes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
detection = pytest.importorskip("torchvision.models.detection")

import onnxbridge  # noqa: E402
from onnxbridge.plugins._torch_detection import compare_detections  # noqa: E402


def tiny_backbone(channels: int | list[int] = 16) -> Any:
    class Backbone(torch.nn.Sequential):  # type: ignore[name-defined]
        def forward(self, x: Any) -> Any:  # SSD wants a dict of feature maps
            return OrderedDict([("0", super().forward(x))])

    backbone = Backbone(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU())
    backbone.out_channels = channels  # SSD wants one per feature map
    return backbone


def anchors() -> Any:
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    return AnchorGenerator(sizes=((16, 32, 64),), aspect_ratios=((0.5, 1.0, 2.0),))


def faster_rcnn(**extra: Any) -> Any:
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(0)
    cls = detection.MaskRCNN if "mask_roi_pool" in extra else detection.FasterRCNN
    return cls(tiny_backbone(), num_classes=3, rpn_anchor_generator=anchors(),
               box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), min_size=160, max_size=320,
               box_score_thresh=0.0, box_detections_per_img=12, **extra).eval()


def eager(model: Any, images: list[Any]) -> list[dict[str, Any]]:
    with torch.no_grad():
        return model(images)


def assert_same_detections(m: Any, images: list[Any], expected: list[dict[str, Any]]) -> None:
    """The ONNX model's detections are the torch model's, image by image, by score order."""
    got = m.run(*[im.numpy() for im in images], as_dict=True)
    for i, want in enumerate(expected):
        assert_image_matches(got, i, want)


def assert_image_matches(got: dict[str, Any], i: int, want: dict[str, Any]) -> None:
    """Image ``i``'s outputs (``boxes_i`` ...) are the torch model's ``want``, by score order."""
    scores = want["scores"].numpy()
    assert len(scores) > 0 and len(np.unique(scores)) == len(scores)  # no ties to excuse
    assert got[f"scores_{i}"].shape == scores.shape
    mine, theirs = np.argsort(-got[f"scores_{i}"]), np.argsort(-scores)
    for key, value in want.items():
        np.testing.assert_allclose(got[f"{key}_{i}"][mine], value.numpy()[theirs],
                                   atol=1e-3, rtol=1e-3, err_msg=f"{key}_{i}")


@pytest.mark.slow
def test_faster_rcnn_two_images_match_torch_at_the_sample_and_other_sizes() -> None:
    model = faster_rcnn()
    images = [torch.rand(3, 160, 160), torch.rand(3, 128, 192)]
    m = onnxbridge.to_onnx(model, images)
    assert m.parity is not None and m.parity.passed
    assert m.input_names == ["images_0", "images_1"]
    assert m.output_names == ["boxes_0", "labels_0", "scores_0", "boxes_1", "labels_1",
                              "scores_1"]
    shapes = {s.name: s.shape for s in [*m.inputs, *m.outputs]}
    assert shapes["images_0"] == (3, "images_0_height", "images_0_width")
    assert shapes["boxes_1"] == ("detections_1", 4)
    assert_same_detections(m, images, eager(model, images))
    # Other sizes, among them one that float32 resize arithmetic rounds to 159 px (100 -> 160).
    other = [torch.rand(3, 100, 100), torch.rand(3, 200, 150)]
    assert_same_detections(m, other, eager(model, other))


def test_ssd_one_image_matches_torch_on_another_size() -> None:
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD

    torch.manual_seed(0)
    model = SSD(tiny_backbone([16]), DefaultBoxGenerator([[2]]), (160, 160), num_classes=3,
                detections_per_img=15).eval()
    images = [torch.rand(3, 160, 160)]
    m = onnxbridge.to_onnx(model, images)
    assert m.output_names == ["boxes_0", "scores_0", "labels_0"]
    assert_same_detections(m, images, eager(model, images))
    other = [torch.rand(3, 120, 200)]
    assert_same_detections(m, other, eager(model, other))


def tiny_ssd(**extra: Any) -> Any:
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD

    torch.manual_seed(0)
    return SSD(tiny_backbone([16]), DefaultBoxGenerator([[2]]), (160, 160), num_classes=3,
               detections_per_img=15, **extra).eval()


def test_one_image_export_runs_any_number_of_images(tmp_path: Any) -> None:
    model = tiny_ssd()
    m = onnxbridge.to_onnx(model, [torch.rand(3, 160, 160)])
    assert m.input_names == ["images_0"]
    images = [torch.rand(3, 160, 160), torch.rand(3, 120, 200), torch.rand(3, 96, 96)]
    # SSD resizes every image to one size, so torch's own batched call is the reference.
    expected = eager(model, images)
    assert_same_detections(m, images, expected)  # m.run(*images): three image arguments
    arrays = [im.numpy() for im in images]
    as_list = m.run(arrays, as_dict=True)
    assert list(as_list) == [f"{k}_{i}" for i in range(3) for k in ("boxes", "scores",
                                                                       "labels")]
    loaded = onnxbridge.load(m.save(tmp_path / "ssd.onnx"))
    stacked = loaded.run(np.stack([arrays[0], np.random.rand(3, 160, 160).astype(np.float32)]))
    assert len(stacked) == 6
    np.testing.assert_array_equal(stacked[0], as_list["boxes_0"])
    assert m.parity is not None
    assert any("any number of images" in note for note in m.parity.notes)


@pytest.mark.slow
def test_an_export_of_several_images_names_its_count_and_the_fix() -> None:
    model = tiny_ssd()
    images = [torch.rand(3, 160, 160), torch.rand(3, 128, 192)]
    m = onnxbridge.to_onnx(model, images)
    assert_same_detections(m, images, eager(model, images))
    got = m.run([im.numpy() for im in images])  # a list of exactly its count works too
    assert len(got) == 6
    with pytest.raises(onnxbridge.InputError, match=r"converted with 2 images .* given 3.*"
                       r"to_onnx\(model, \[image\]\)"):
        m.run([im.numpy() for im in [*images, images[0]]])


@pytest.mark.slow
def test_faster_rcnn_one_image_export_gives_each_image_its_own_detections() -> None:
    model = faster_rcnn()
    m = onnxbridge.to_onnx(model, [torch.rand(3, 160, 160)])
    images = [torch.rand(3, 160, 160), torch.rand(3, 128, 192), torch.rand(3, 100, 140)]
    # Each image's detections are the torch model's on that image alone (a batched torch
    # call pads the smaller images, which moves R-CNN boxes near their borders).
    got = m.run([im.numpy() for im in images], as_dict=True)
    for i, image in enumerate(images):
        assert_image_matches(got, i, eager(model, [image])[0])


@pytest.mark.slow
def test_torch_export_alone_names_the_stage_and_the_fix() -> None:
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD

    model = SSD(tiny_backbone([16]), DefaultBoxGenerator([[2]]), (160, 160), num_classes=3)
    with pytest.raises(onnxbridge.ConversionError, match=r"(?s)boxes\.py.*batched_nms.*"
                       r"exporter='torchscript'.*without it"):
        onnxbridge.to_onnx(model.eval(), [torch.rand(3, 160, 160)], exporter="dynamo")


@pytest.mark.slow
def test_mask_rcnn_masks_follow_the_image_size() -> None:
    from torchvision.ops import MultiScaleRoIAlign

    model = faster_rcnn(mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2))
    images = [torch.rand(3, 160, 160)]
    m = onnxbridge.to_onnx(model, images)
    assert {s.name: s.shape for s in m.outputs}["masks_0"] == (
        "detections_0", 1, "images_0_height", "images_0_width")
    other = [torch.rand(3, 144, 176)]
    assert_same_detections(m, other, eager(model, other))


# -- the comparison on its own: hand-made detections ----------------------------------------
def detections(boxes: list[list[float]], scores: list[float], labels: list[int]) -> list[Any]:
    return [np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
            np.array(labels, np.int64)]


NAMES = ["boxes_0", "scores_0", "labels_0"]
BOXES = [[0.0, 0, 10, 10], [20.0, 20, 40, 40], [5.0, 5, 50, 60]]


def test_same_detections_in_another_order_pass() -> None:
    source = detections(BOXES, [0.9, 0.8, 0.7], [1, 2, 1])
    onnx_side = detections(BOXES[::-1], [0.7, 0.8, 0.9], [1, 2, 1][::-1])
    lines = compare_detections(0.05)(NAMES, source, onnx_side)
    assert all(line.passed for line in lines) and lines[0].batch == 1


@pytest.mark.parametrize("change", ["box", "label", "score", "extra"])
def test_a_different_detection_fails_and_says_which(change: str) -> None:
    source = detections(BOXES, [0.9, 0.8, 0.7], [1, 2, 1])
    boxes, scores, labels = [list(b) for b in BOXES], [0.9, 0.8, 0.7], [1, 2, 1]
    if change == "box":
        boxes[1][2] += 1.0
    elif change == "label":
        labels[1] = 1
    elif change == "score":
        scores[1] = 0.81
    else:
        boxes.append([1.0, 1, 2, 2])
        scores.append(0.6)
        labels.append(2)
    lines = compare_detections(0.05)(NAMES, source, detections(boxes, scores, labels))
    assert not any(line.passed for line in lines)
    problem = lines[0].problem or ""
    assert "have no match" in problem and "export the network without it" in problem


def test_tied_scores_excuse_only_what_comes_after_them() -> None:
    # Both keep the top detection; below it three boxes tie and NMS kept different ones.
    source = detections([BOXES[0], BOXES[1], [60.0, 60, 70, 70]], [0.9, 0.5, 0.5], [1, 1, 1])
    onnx_side = detections([BOXES[0], BOXES[2], [80.0, 80, 90, 90]], [0.9, 0.5, 0.5], [1, 1, 1])
    lines = compare_detections(0.05)(NAMES, source, onnx_side)
    assert all(line.passed for line in lines)
    assert "tie in score" in (lines[0].problem or "")
    # Ties from the first detection on (random weights): nothing was compared, so it fails.
    flat = compare_detections(0.05)(NAMES, detections(BOXES[:2], [0.5, 0.5], [1, 1]),
                                    detections([BOXES[2], BOXES[0]], [0.5, 0.5], [1, 1]))
    assert not flat[0].passed and "random weights" in (flat[0].problem or "")


@pytest.mark.slow
def test_a_sample_with_no_detection_is_not_called_verified() -> None:
    model = faster_rcnn()
    model.roi_heads.score_thresh = 0.99  # random weights score about 1/3
    images = [torch.rand(3, 160, 160)]
    assert len(eager(model, images)[0]["boxes"]) == 0
    with pytest.raises(onnxbridge.ParityError, match="detects nothing on the sample"
                       r" \(score threshold 0.99\).*roi_heads.score_thresh = 0.0"):
        onnxbridge.to_onnx(model, images)


def test_the_lowest_scores_may_differ_only_at_the_models_cut() -> None:
    # 3 kept of more candidates: the last place went to a nearly equal score on each side.
    source = detections(BOXES, [0.9, 0.8, 0.7], [1, 2, 1])
    onnx_side = detections([BOXES[0], BOXES[1], [70.0, 70, 90, 90]], [0.9, 0.8, 0.7], [1, 2, 2])
    lines = compare_detections(0.05, cap=3)(NAMES, source, onnx_side)
    assert all(line.passed for line in lines) and "cut of 3" in (lines[0].problem or "")
    # Without a cut (fewer than the model keeps) the same difference fails.
    assert not compare_detections(0.05, cap=100)(NAMES, source, onnx_side)[0].passed


def test_a_detection_head_on_a_list_of_feature_maps_is_a_plain_export() -> None:
    from torchvision.models.detection.ssd import SSDHead

    torch.manual_seed(0)
    head = SSDHead([16], [4], 3).eval()
    features = [torch.rand(1, 16, 10, 10)]
    m = onnxbridge.to_onnx(head, features)
    assert m.output_names == ["bbox_regression", "cls_logits"]
    with torch.no_grad():
        expected = head(features)
    for name, got in zip(m.output_names, m.run(features[0].numpy()), strict=True):
        np.testing.assert_allclose(got, expected[name].numpy(), atol=1e-5)


def test_renamed_outputs_are_still_compared_as_detections() -> None:
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD

    torch.manual_seed(0)
    model = SSD(tiny_backbone([16]), DefaultBoxGenerator([[2]]), (160, 160), num_classes=3,
                detections_per_img=10).eval()
    images = [torch.rand(3, 160, 160)]
    m = onnxbridge.to_onnx(model, images, output_names=["b", "s", "l"])
    assert m.output_names == ["b", "s", "l"] and m.parity is not None and m.parity.passed
    want = eager(model, images)[0]
    b, s, labels = m.run(images[0].numpy())
    order, theirs = np.argsort(-s), np.argsort(-want["scores"].numpy())
    np.testing.assert_allclose(b[order], want["boxes"].numpy()[theirs], atol=1e-3, rtol=1e-3)
    np.testing.assert_array_equal(labels[order], want["labels"].numpy()[theirs])
