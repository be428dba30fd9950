"""Checks for the exercises of chapter 16. Object detection: SSDLite on MobileNetV2.

* ``check_box_iou``: the intersection over union of two boxes;
* ``check_encode_box``: SSD's offsets of a box from its default box;
* ``check_hard_negatives``: which background boxes the loss keeps.
"""
from __future__ import annotations

import numpy as np

from ..detection import BoxCoder, box_iou
from .checking import Hint, exercise, expect_close, expect_equal

__all__ = ["check_box_iou", "check_encode_box", "check_hard_negatives"]


@exercise
def check_box_iou(answer) -> int:
    """``iou(a, b)`` must give the IoU of two boxes ``(x1, y1, x2, y2)`` as
    `tinymbv2.detection.box_iou` does.

    Cases: overlapping, nested, equal, touching (IoU 0), disjoint, and random boxes. Hints for
    the usual slips: a negative overlap not clipped to 0, the union counted as the sum of the
    areas (the intersection counted twice), and the intersection over the smaller box.

    Args:
        answer: your function, ``iou(a, b)`` -> a float.

    Returns:
        The number of cases run.
    """
    rng = np.random.default_rng(16)
    cases = [((0, 0, 10, 10), (5, 5, 15, 15)), ((0, 0, 10, 10), (2, 2, 6, 6)),
             ((1, 2, 3, 4), (1, 2, 3, 4)), ((0, 0, 4, 4), (4, 0, 8, 4)), ((0, 0, 2, 2), (5, 5, 9, 9)),
             ((0, 0, 10, 4), (3, -2, 6, 8))]
    for _ in range(20):
        xy = rng.random((2, 2)) * 20
        wh = rng.random((2, 2)) * 15 + 1
        boxes = np.concatenate([xy, xy + wh], axis=1)
        cases.append((tuple(boxes[0]), tuple(boxes[1])))
    for a, b in cases:
        expected = float(box_iou(np.array([a], float), np.array([b], float))[0, 0])
        got = float(answer(a, b))
        if abs(got - expected) <= 1e-9:
            continue
        case = f"iou({a}, {b})"
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
        if expected == 0 and got != 0 and (w < 0 or h < 0):
            raise Hint(f"{case}: you gave {got:.4g}, expected 0: the boxes do not overlap, so "
                       f"clip the overlap's width and height at 0")
        if w > 0 and h > 0 and abs(got - w * h / (area_a + area_b)) < 1e-9:
            raise Hint(f"{case}: you gave {got:.4g}, expected {expected:.4g}: the union is the two "
                       f"areas minus the intersection, which both areas count")
        if w > 0 and h > 0 and abs(got - w * h / min(area_a, area_b)) < 1e-9:
            raise Hint(f"{case}: you gave {got:.4g}, expected {expected:.4g}: divide by the union, "
                       f"not by the smaller box")
        expect_close(got, expected, case, rtol=1e-9, atol=1e-12)
    return len(cases)


@exercise
def check_encode_box(answer) -> int:
    """``encode(box, default_box)`` must give SSD's four offsets of ``box`` from
    ``default_box`` (both ``(x1, y1, x2, y2)``), weights (10, 10, 5, 5), as
    `tinymbv2.detection.BoxCoder` encodes them.

    Hints for: centre offsets not divided by the default box's size, the weights left out,
    and the sizes' ratio without the logarithm.

    Args:
        answer: your function, ``encode(box, default_box)`` -> 4 numbers.

    Returns:
        The number of cases run.
    """
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    rng = np.random.default_rng(6)
    cases = [((10, 10, 30, 30), (10, 10, 30, 30)), ((12, 8, 34, 40), (10, 10, 30, 30))]
    for _ in range(10):
        xy = rng.random((2, 2)) * 50
        wh = rng.random((2, 2)) * 40 + 4
        boxes = np.concatenate([xy, xy + wh], axis=1)
        cases.append((tuple(boxes[0]), tuple(boxes[1])))
    for box, default in cases:
        g, d = np.array([box], float), np.array([default], float)
        expected = coder.encode(g, d)[0]
        got = np.asarray(answer(box, default), dtype=float).ravel()
        case = f"encode({box}, {default})"
        if got.shape != (4,):
            raise Hint(f"{case}: expected 4 offsets (tx, ty, tw, th), got shape {got.shape}")
        if np.allclose(got, expected, rtol=1e-9, atol=1e-12):
            continue
        unscaled = BoxCoder((1.0, 1.0, 1.0, 1.0)).encode(g, d)[0]
        if np.allclose(got, unscaled, rtol=1e-9, atol=1e-12):
            raise Hint(f"{case}: you gave {got.round(4).tolist()}, expected "
                       f"{expected.round(4).tolist()}: multiply by SSD's weights (10, 10, 5, 5)")
        gw, dw = g[0, 2] - g[0, 0], d[0, 2] - d[0, 0]
        if not np.isclose(got[2], expected[2]) and np.isclose(got[2], 5 * gw / dw):
            raise Hint(f"{case}: tw is {got[2]:.4g}, expected {expected[2]:.4g}: the size offsets "
                       f"are the logarithm of the ratio, 5 * log(w / w_default)")
        gx, dx = (g[0, 0] + g[0, 2]) / 2, (d[0, 0] + d[0, 2]) / 2
        if not np.isclose(got[0], expected[0]) and np.isclose(got[0], 10 * (gx - dx)):
            raise Hint(f"{case}: tx is {got[0]:.4g}, expected {expected[0]:.4g}: divide the centre's "
                       f"shift by the default box's width")
        expect_close(got, expected, case, rtol=1e-9, atol=1e-12)
    return len(cases)


def _expected_negatives(losses, positive, ratio):
    negative_loss = np.where(positive, -np.inf, losses)
    rank = np.argsort(np.argsort(-negative_loss, kind="stable"), kind="stable")
    return rank < ratio * positive.sum()


@exercise
def check_hard_negatives(answer) -> int:
    """``hard_negatives(losses, positive, ratio=3)`` must give the background boxes SSD's loss
    keeps for one image: the ``ratio`` times the positives' count with the highest loss among
    the boxes that are not positive, as a boolean mask like ``positive``.

    Hints for: keeping positives among the "negatives", keeping the lowest losses, and a
    count that is not ``ratio`` times the positives.

    Args:
        answer: your function, ``hard_negatives(losses, positive, ratio)`` -> an (A,) bool mask.

    Returns:
        The number of cases run.
    """
    rng = np.random.default_rng(3)
    cases = []
    for a, p, ratio in ((20, 2, 3), (50, 5, 3), (30, 1, 2), (40, 0, 3), (12, 3, 3)):
        losses = rng.random(a) * 4
        positive = np.zeros(a, dtype=bool)
        positive[rng.choice(a, p, replace=False)] = True
        losses[positive] += 2.0          # positives often have the highest losses: skip them
        cases.append((losses, positive, ratio))
    for losses, positive, ratio in cases:
        expected = _expected_negatives(losses, positive, ratio)
        got = np.asarray(answer(losses.copy(), positive.copy(), ratio), dtype=bool)
        case = f"{len(losses)} boxes, {positive.sum()} positive, ratio {ratio}"
        if got.shape != expected.shape:
            raise Hint(f"{case}: expected a mask of shape {expected.shape}, got {got.shape}")
        if (got == expected).all():
            continue
        if (got & positive).any():
            raise Hint(f"{case}: your mask keeps positive boxes; the negatives are chosen among "
                       f"the boxes that are not positive")
        if got.sum() != expected.sum():
            expect_equal(int(got.sum()), int(expected.sum()), f"{case}: the number of negatives kept")
        raise Hint(f"{case}: you kept the right number but not the highest-loss background boxes")
    return len(cases)
