"""Checks for the exercises of chapter 17. Semantic segmentation: Mobile DeepLabv3.

* ``check_receptive_field``: the receptive field of stacked (atrous, strided) convolutions;
* ``check_bilinear_matrix``: the weights of bilinear resizing along one axis, as a matrix;
* ``check_iou_from_confusion``: each class's IoU from a pixel confusion matrix.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from ..evaluation import segmentation_scores
from .checking import Hint, exercise, expect_close, expect_equal

__all__ = ["check_receptive_field", "check_bilinear_matrix", "check_iou_from_confusion"]


def receptive_field(layers) -> int:
    r"""The side of the input window one output pixel of a stack of convolutions reads.

    Each layer $l$ (kernel $k_l$, stride $s_l$, dilation $d_l$) widens the window by
    $(k_l - 1)\,d_l$ of its own input's pixels, which are $\prod_{m<l} s_m$ input pixels
    apart: $R = 1 + \sum_l (k_l - 1)\, d_l \prod_{m<l} s_m$.

    Args:
        layers: ``[(kernel, stride, dilation), ...]`` from the input up.

    Returns:
        $R$, in input pixels.
    """
    field, jump = 1, 1
    for kernel, stride, dilation in layers:
        field += (kernel - 1) * dilation * jump
        jump *= stride
    return field


@exercise
def check_receptive_field(answer) -> int:
    """``receptive_field(layers)`` must give the receptive field (in input pixels) of a stack
    of convolutions given as ``[(kernel, stride, dilation), ...]``, input first.

    Cases: one layer, stacked 3x3s at rates 1, 2, 4, a strided stem under dilated layers,
    and MobileNetV2-like stacks. Hints for: the dilation left out, the strides of the layers
    below left out, and a layer's own stride applied to its own taps.

    Args:
        answer: your function, ``receptive_field(layers)`` -> an int.

    Returns:
        The number of cases run.
    """
    cases = [[(3, 1, 1)], [(3, 1, 2)], [(3, 1, 1), (3, 1, 2), (3, 1, 4)], [(1, 1, 1)],
             [(3, 2, 1), (3, 1, 1), (3, 1, 2)], [(3, 2, 1), (3, 2, 1), (3, 1, 2), (3, 1, 2)],
             [(5, 1, 1), (3, 2, 3), (1, 1, 1), (3, 1, 6)],
             [(3, 2, 1)] + [(3, 1, 1), (3, 2, 1)] * 3 + [(3, 1, 2)] * 3]
    for layers in cases:
        expected = receptive_field(layers)
        got = answer(list(layers))
        case = f"receptive_field({layers})"
        if got == expected:
            continue
        if got == receptive_field([(k, s, 1) for k, s, _ in layers]):
            raise Hint(f"{case}: you gave {got}, expected {expected}: a dilated layer's taps are "
                       f"`dilation` pixels of its input apart, so it widens the field by (k - 1) * d")
        if got == receptive_field([(k, 1, d) for k, _, d in layers]):
            raise Hint(f"{case}: you gave {got}, expected {expected}: after a stride-2 layer, one "
                       f"pixel of the map is 2 input pixels; multiply by the strides below")
        shifted, jump = 1, 1
        for k, s, d in layers:
            jump *= s
            shifted += (k - 1) * d * jump
        if got == shifted:
            raise Hint(f"{case}: you gave {got}, expected {expected}: a layer's own stride spaces "
                       f"its outputs, not its taps; multiply by the strides of the layers below it")
        expect_equal(got, expected, case)
    return len(cases)


def bilinear_matrix(n_in: int, n_out: int, align_corners: bool) -> np.ndarray:
    """The (n_out, n_in) weights of bilinear resizing along one axis, read off ``F.interpolate``.

    Args:
        n_in: The input length.
        n_out: The output length.
        align_corners: As ``F.interpolate``'s.

    Returns:
        W, float64 (n_out, n_in): output $o$ is $\\sum_i W_{oi} x_i$.
    """
    eye = Tensor(np.eye(n_in)[:, None, None, :])
    y = F.interpolate(eye, size=(1, n_out), mode="bilinear", align_corners=align_corners)
    return y.numpy()[:, 0, 0, :].T


def _formula(n_in, n_out, align_corners, clamp=True):
    """The matrix from the source positions, optionally without the clamp at 0 (a usual slip)."""
    o = np.arange(n_out)
    if align_corners:
        s = o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
    else:
        s = (o + 0.5) * n_in / n_out - 0.5
        if clamp:
            s = np.maximum(s, 0)
    lo = np.clip(np.floor(s).astype(int), 0, n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = s - lo
    W = np.zeros((n_out, n_in))
    np.add.at(W, (o, lo), 1 - frac)
    np.add.at(W, (o, hi), frac)
    return W


@exercise
def check_bilinear_matrix(answer) -> int:
    """``resize_weights(n_in, n_out, align_corners)`` must give the (n_out, n_in) matrix of
    bilinear resizing along one axis, as ``F.interpolate`` (and PyTorch) compute it.

    Cases: upsampling by whole and other factors, downsampling, both ``align_corners``.
    Hints for: the two conventions swapped, and ``align_corners=False`` without the clamp of
    negative source positions at 0.

    Args:
        answer: your function, ``resize_weights(n_in, n_out, align_corners)`` -> (n_out, n_in).

    Returns:
        The number of cases run.
    """
    cases = [(n_in, n_out, corners) for n_in, n_out in ((2, 4), (4, 16), (3, 7), (5, 3), (8, 8), (4, 10))
             for corners in (False, True)]
    for n_in, n_out, corners in cases:
        expected = bilinear_matrix(n_in, n_out, corners)
        got = np.asarray(answer(n_in, n_out, corners), dtype=float)
        case = f"resize_weights({n_in}, {n_out}, align_corners={corners})"
        if got.shape != expected.shape:
            raise Hint(f"{case}: expected shape (n_out, n_in) = {expected.shape}, got {got.shape}")
        if np.allclose(got, expected, atol=1e-9):
            continue
        if np.allclose(got, bilinear_matrix(n_in, n_out, not corners), atol=1e-9):
            raise Hint(f"{case}: that is the other convention: align_corners=True puts output o at "
                       f"o (n_in - 1) / (n_out - 1), False at (o + 0.5) n_in / n_out - 0.5")
        if not corners and np.allclose(got, _formula(n_in, n_out, False, clamp=False), atol=1e-9):
            raise Hint(f"{case}: the first outputs' source position is below 0: clamp it at 0 "
                       f"(the edge pixel's value), as PyTorch does")
        expect_close(got, expected, case, rtol=1e-9, atol=1e-9)
    return len(cases)


@exercise
def check_iou_from_confusion(answer) -> int:
    """``iou_from_confusion(c)`` must give each class's IoU from a (K, K) confusion matrix
    (rows: true class, columns: predicted), NaN for a class neither true nor predicted
    anywhere, as `tinymbv2.evaluation.segmentation_scores`.

    Hints for: the recall (the diagonal over the rows) or the precision (over the columns)
    instead of the IoU, and the diagonal counted twice in the union.

    Args:
        answer: your function, ``iou_from_confusion(c)`` -> a (K,) array.

    Returns:
        The number of cases run.
    """
    rng = np.random.default_rng(17)
    cases = [np.array([[5, 1], [2, 3]]), np.array([[10, 0, 0], [0, 4, 0], [0, 0, 0]]),
             np.diag([3, 2, 1])]
    for k in (2, 4, 11):
        c = rng.integers(0, 20, (k, k)) + np.diag(rng.integers(10, 200, k))
        cases.append(c)
    for c in cases:
        expected = segmentation_scores(c)["per_class_iou"]
        with np.errstate(invalid="ignore", divide="ignore"):
            got = np.asarray(answer(c.copy()), dtype=float)
            case = f"iou_from_confusion({c.tolist()})" if len(c) <= 3 else f"a {len(c)}x{len(c)} matrix"
            if got.shape != expected.shape:
                raise Hint(f"{case}: expected one IoU per class, shape {expected.shape}, got {got.shape}")
            if np.allclose(got, expected, equal_nan=True):
                continue
            d = np.diag(c).astype(float)
            if np.allclose(got, d / c.sum(1), equal_nan=True):
                raise Hint(f"{case}: that is each class's recall (the diagonal over the row); "
                           f"the union also counts the pixels wrongly predicted as the class")
            if np.allclose(got, d / c.sum(0), equal_nan=True):
                raise Hint(f"{case}: that is each class's precision (the diagonal over the "
                           f"column); the union also counts the class's pixels predicted as another")
            if np.allclose(got, d / (c.sum(0) + c.sum(1)), equal_nan=True):
                raise Hint(f"{case}: the row and the column both hold the diagonal: subtract it "
                           f"once from their sum")
        expect_close(got, expected, case, rtol=1e-9, atol=1e-12)
    return len(cases)
