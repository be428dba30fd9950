"""Chapter 17's checks pass the solutions and answer common wrong answers with their hints."""
import numpy as np

from tinymbv2.exercises import check_bilinear_matrix, check_iou_from_confusion, check_receptive_field


def _field(layers, dilation=True, strides=True, own_stride=False):
    field, jump = 1, 1
    for k, s, d in layers:
        if own_stride:
            jump *= s
        field += (k - 1) * (d if dilation else 1) * jump
        if strides and not own_stride:
            jump *= s
    return field


def test_receptive_field_hints():
    assert check_receptive_field(_field).passed
    assert check_receptive_field(lambda layers: 1 + sum(2 * d for _, _, d in layers)).message.startswith("not yet: ")
    assert "(k - 1) * d" in check_receptive_field(lambda l: _field(l, dilation=False)).message
    assert "multiply by the strides below" in check_receptive_field(lambda l: _field(l, strides=False)).message
    assert "spaces its outputs, not its taps" in check_receptive_field(lambda l: _field(l, own_stride=True)).message


def _weights(n_in, n_out, align_corners, clamp=True, swap=False):
    if swap:
        align_corners = not align_corners
    o = np.arange(n_out)
    if align_corners:
        s = o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
    else:
        s = (o + 0.5) * n_in / n_out - 0.5
        s = np.maximum(s, 0) if clamp else s
    lo = np.clip(np.floor(s).astype(int), 0, n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    W = np.zeros((n_out, n_in))
    np.add.at(W, (o, lo), 1 - (s - lo))
    np.add.at(W, (o, hi), s - lo)
    return W


def test_bilinear_matrix_hints():
    assert check_bilinear_matrix(_weights).passed
    assert "the other convention" in check_bilinear_matrix(lambda a, b, c: _weights(a, b, c, swap=True)).message
    assert "clamp it at 0" in check_bilinear_matrix(lambda a, b, c: _weights(a, b, c, clamp=False)).message
    assert "shape (n_out, n_in)" in check_bilinear_matrix(lambda a, b, c: _weights(a, b, c).T).message


def _iou(c, kind="iou"):
    d = np.diag(c).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "recall":
            return d / c.sum(1)
        if kind == "precision":
            return d / c.sum(0)
        if kind == "twice":
            return d / (c.sum(0) + c.sum(1))
        return d / (c.sum(0) + c.sum(1) - d)


def test_iou_from_confusion_hints():
    assert check_iou_from_confusion(_iou).passed
    assert "recall" in check_iou_from_confusion(lambda c: _iou(c, "recall")).message
    assert "precision" in check_iou_from_confusion(lambda c: _iou(c, "precision")).message
    assert "subtract it once" in check_iou_from_confusion(lambda c: _iou(c, "twice")).message
    assert "one IoU per class" in check_iou_from_confusion(lambda c: _iou(c)[:-1]).message
