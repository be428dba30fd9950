"""Chapter 16's checks pass the solutions and answer common wrong answers with their hints."""
import numpy as np

from tinymbv2.exercises import check_box_iou, check_encode_box, check_hard_negatives


def _iou(a, b, union=True, smaller=False, clip=True):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if clip:
        w, h = max(0, w), max(0, h)
    inter = w * h
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    if smaller:
        return inter / min(area_a, area_b)
    return inter / (area_a + area_b - inter if union else area_a + area_b)


def test_box_iou_hints():
    assert check_box_iou(_iou).passed
    assert "clip the overlap's width and height at 0" in check_box_iou(lambda a, b: _iou(a, b, clip=False)).message
    assert "both areas count" in check_box_iou(lambda a, b: _iou(a, b, union=False)).message
    assert "not by the smaller box" in check_box_iou(lambda a, b: _iou(a, b, smaller=True)).message


def _encode(box, default, weights=(10, 10, 5, 5), log=True, scale=True):
    gw, gh = box[2] - box[0], box[3] - box[1]
    dw, dh = default[2] - default[0], default[3] - default[1]
    gx, gy = box[0] + gw / 2, box[1] + gh / 2
    dx, dy = default[0] + dw / 2, default[1] + dh / 2
    wx, wy, ww, wh = weights
    size = (np.log(gw / dw), np.log(gh / dh)) if log else (gw / dw, gh / dh)
    shift = ((gx - dx) / dw, (gy - dy) / dh) if scale else (gx - dx, gy - dy)
    return [wx * shift[0], wy * shift[1], ww * size[0], wh * size[1]]


def test_encode_box_hints():
    assert check_encode_box(_encode).passed
    assert "multiply by SSD's weights" in check_encode_box(lambda b, d: _encode(b, d, (1, 1, 1, 1))).message
    assert "logarithm of the ratio" in check_encode_box(lambda b, d: _encode(b, d, log=False)).message
    assert "divide the centre's shift" in check_encode_box(lambda b, d: _encode(b, d, scale=False)).message


def _negatives(losses, positive, ratio=3):
    candidates = np.where(positive, -np.inf, losses)
    keep = np.zeros_like(positive)
    keep[np.argsort(-candidates, kind="stable")[: ratio * positive.sum()]] = True
    return keep


def test_hard_negatives_hints():
    assert check_hard_negatives(_negatives).passed

    def with_positives(losses, positive, ratio=3):
        keep = np.zeros_like(positive)
        keep[np.argsort(-losses, kind="stable")[: ratio * positive.sum()]] = True
        return keep
    assert "keeps positive boxes" in check_hard_negatives(with_positives).message

    def lowest(losses, positive, ratio=3):
        keep = np.zeros_like(positive)
        keep[np.argsort(np.where(positive, np.inf, losses), kind="stable")[: ratio * positive.sum()]] = True
        return keep
    assert "not the highest-loss background boxes" in check_hard_negatives(lowest).message

    def fixed_count(losses, positive, ratio=3):
        keep = np.zeros_like(positive)
        keep[np.argsort(-np.where(positive, -np.inf, losses), kind="stable")[:5]] = True
        return keep
    assert "the number of negatives kept" in check_hard_negatives(fixed_count).message
