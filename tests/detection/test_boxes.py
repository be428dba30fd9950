"""Box geometry and NMS against torchvision.ops: the same values, the same kept indices in the
same order (ties included)."""
import numpy as np
import pytest
import torch
import torchvision.ops as tvops

from tinymbv2.detection import (batched_nms, box_area, box_cxcywh_to_xyxy, box_iou,
                                box_xyxy_to_cxcywh, nms)


def random_boxes(rng, n, size=100.0, dtype=np.float64):
    xy = rng.random((n, 2)) * size
    wh = rng.random((n, 2)) * size / 3 + 1e-3
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype)


@pytest.mark.parametrize("seed", range(3))
def test_area_and_iou_equal_torchvision(seed):
    rng = np.random.default_rng(seed)
    a, b = random_boxes(rng, 7), random_boxes(rng, 11)
    b[0] = a[0]                                        # one identical pair: IoU exactly 1
    np.testing.assert_array_equal(box_area(a), tvops.box_area(torch.tensor(a)).numpy())
    iou = box_iou(a, b)
    np.testing.assert_array_equal(iou, tvops.box_iou(torch.tensor(a), torch.tensor(b)).numpy())
    assert iou.shape == (7, 11) and iou[0, 0] == 1.0 and (iou >= 0).all() and (iou <= 1).all()


def test_box_conversions_equal_torchvision_and_invert_each_other():
    rng = np.random.default_rng(3)
    a = random_boxes(rng, 9)
    c = box_xyxy_to_cxcywh(a)
    np.testing.assert_allclose(c, tvops.box_convert(torch.tensor(a), "xyxy", "cxcywh").numpy(), rtol=1e-15)
    np.testing.assert_allclose(box_cxcywh_to_xyxy(c), a, rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.45])
@pytest.mark.parametrize("seed", range(4))
def test_nms_keeps_what_torchvision_keeps(seed, threshold, dtype):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    boxes = random_boxes(rng, n, dtype=dtype)
    scores = rng.random(n).astype(dtype)
    ours = nms(boxes, scores, threshold)
    ref = tvops.nms(torch.tensor(boxes), torch.tensor(scores), threshold).numpy()
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, ref)
    assert 0 < len(ours) < n or n == 1


@pytest.mark.parametrize("seed", range(3))
def test_nms_ties_keep_the_lower_index_first(seed):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 200, size=40.0)
    scores = rng.integers(0, 5, 200).astype(np.float64) / 4      # many equal scores
    ours = nms(boxes, scores, 0.5)
    np.testing.assert_array_equal(ours, tvops.nms(torch.tensor(boxes), torch.tensor(scores), 0.5).numpy())
    # a box and its exact copy with the same score: the first is kept, the copy suppressed
    twin = nms(np.array([[0, 0, 10, 10], [0, 0, 10, 10.0]]), np.array([0.5, 0.5]), 0.5)
    np.testing.assert_array_equal(twin, [0])


@pytest.mark.parametrize("n", [50, 1200])            # torchvision's two code paths (<= and > 4000 numbers)
@pytest.mark.parametrize("seed", range(3))
def test_batched_nms_equals_torchvision(seed, n):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, n)
    scores = rng.random(n)
    idxs = rng.integers(0, 4, n)
    ours = batched_nms(boxes, scores, idxs, 0.5)
    ref = tvops.batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.tensor(idxs), 0.5).numpy()
    np.testing.assert_array_equal(ours, ref)
    # no two kept boxes of one class overlap above the threshold
    for c in range(4):
        kept = ours[idxs[ours] == c]
        iou = box_iou(boxes[kept], boxes[kept]) - np.eye(len(kept))
        assert (iou <= 0.5).all()


def test_empty_inputs():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), 0.5).shape == (0,)
    assert box_iou(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)


@pytest.mark.parametrize("call,match", [
    (lambda: box_iou(np.zeros((3, 5)), np.zeros((2, 4))), r"boxes1 as an \(N, 4\) array .* got shape \(3, 5\)"),
    (lambda: nms(np.zeros((3, 4)), np.zeros(2), 0.5), r"scores of shape \(3,\), one per box, got \(2,\)"),
    (lambda: nms(np.zeros((3, 4)), np.zeros(3), float("nan")), "iou_threshold must be a finite number"),
    (lambda: batched_nms(np.zeros((3, 4)), np.zeros(3), np.zeros(3), 0.5), r"idxs as \(3,\) integers"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_zero_area_boxes_suppress_nothing_as_in_torchvision():
    boxes = np.array([[0, 0, 0, 10.0], [0, 0, 0, 10], [5, 5, 9, 9]])   # two flat boxes at the edge
    scores = np.array([0.9, 0.8, 0.7])
    with np.errstate(all="raise"):
        ours = nms(boxes, scores, 0.5)
    np.testing.assert_array_equal(ours, tvops.nms(torch.tensor(boxes), torch.tensor(scores), 0.5).numpy())
    np.testing.assert_array_equal(ours, [0, 1, 2])
