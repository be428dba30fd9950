"""mAP against pycocotools' COCOeval on the same detections: the same mAP@[.5:.95], mAP@0.5
and mAP@0.75; and hand-checked cases."""
import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tinymbv2.evaluation.detection_metrics import mean_average_precision


def scenes(seed, n_images=12, num_classes=4):
    """Ground truth, and detections that find most objects with some error, some twice, plus
    false positives."""
    rng = np.random.default_rng(seed)
    targets, detections = [], []
    for _ in range(n_images):
        m = int(rng.integers(0, 6))
        xy = rng.random((m, 2)) * 100
        gt = np.concatenate([xy, xy + rng.random((m, 2)) * 40 + 5], axis=1)
        labels = rng.integers(1, num_classes, m)
        found = rng.random(m) < 0.8
        boxes = gt[found] + rng.normal(0, 3, (found.sum(), 4))
        det_labels = labels[found].copy()
        det_labels[rng.random(len(det_labels)) < 0.1] = rng.integers(1, num_classes)  # wrong class
        twice = boxes[: int(rng.integers(0, len(boxes) + 1))] + rng.normal(0, 2, (1, 4))
        k = int(rng.integers(0, 4))
        xy = rng.random((k, 2)) * 100
        junk = np.concatenate([xy, xy + rng.random((k, 2)) * 30 + 5], axis=1)
        all_boxes = np.concatenate([boxes, twice, junk])
        all_boxes[:, 2:] = np.maximum(all_boxes[:, 2:], all_boxes[:, :2] + 1)
        all_labels = np.concatenate([det_labels, det_labels[: len(twice)], rng.integers(1, num_classes, k)])
        targets.append({"boxes": gt, "labels": labels})
        detections.append({"boxes": all_boxes, "scores": rng.random(len(all_boxes)), "labels": all_labels})
    return detections, targets


def pycocotools_stats(detections, targets, num_classes):
    images, annotations, results = [], [], []
    for i, (det, tgt) in enumerate(zip(detections, targets), start=1):
        images.append({"id": i, "width": 200, "height": 200})
        for box, label in zip(tgt["boxes"], tgt["labels"]):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append({"image_id": i, "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):          # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c} for c in range(1, num_classes)]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev.stats


@pytest.mark.parametrize("seed", range(6))
def test_map_equals_pycocotools(seed):
    detections, targets = scenes(seed)
    ours = mean_average_precision(detections, targets, num_classes=4)
    stats = pycocotools_stats(detections, targets, 4)
    assert 0.05 < ours["map"] < ours["map_50"] < 1
    assert ours["map"] == pytest.approx(stats[0], abs=1e-12)
    assert ours["map_50"] == pytest.approx(stats[1], abs=1e-12)
    assert ours["map_75"] == pytest.approx(stats[2], abs=1e-12)


def test_max_dets_keeps_the_best_of_each_image():
    detections, targets = scenes(7)
    few = mean_average_precision(detections, targets, 4, max_dets=2)
    assert few["map_50"] < mean_average_precision(detections, targets, 4)["map_50"]


def test_hand_checked_cases():
    gt = [{"boxes": np.array([[0, 0, 10, 10.0], [20, 20, 30, 30]]), "labels": np.array([1, 1])}]
    perfect = [{"boxes": gt[0]["boxes"], "scores": np.array([0.9, 0.8]), "labels": np.array([1, 1])}]
    assert mean_average_precision(perfect, gt, 2)["map"] == 1.0
    # one object found (rank 1), a false positive (rank 2): AP = 1 up to recall 0.5, then 0
    half = [{"boxes": np.array([[0, 0, 10, 10.0], [50, 50, 60, 60]]), "scores": np.array([0.9, 0.8]),
             "labels": np.array([1, 1])}]
    assert mean_average_precision(half, gt, 2)["map_50"] == pytest.approx(51 / 101)
    # the false positive ranked first: precision 1/2 at recall 0.5
    flipped = [{**half[0], "scores": np.array([0.8, 0.9])}]
    assert mean_average_precision(flipped, gt, 2)["map_50"] == pytest.approx(0.5 * 51 / 101)
    # a class without ground truth is left out; detections of it do not lower the mean
    other = [{"boxes": np.vstack([gt[0]["boxes"], [[5, 5, 9, 9]]]), "scores": np.array([0.9, 0.8, 0.99]),
              "labels": np.array([1, 1, 2])}]
    result = mean_average_precision(other, gt, 3)
    assert result["map"] == 1.0 and set(result["per_class_ap"]) == {1}


def test_mismatched_lengths_are_named():
    with pytest.raises(ValueError, match="2 detections for 1 images"):
        mean_average_precision([{}, {}], [{}], 3)
