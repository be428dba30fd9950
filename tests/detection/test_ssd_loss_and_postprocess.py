"""SSD's loss and post-processing against torchvision's SSD.compute_loss and
SSD.postprocess_detections, given the same head outputs, default boxes and targets: the same
loss values and gradients (float64), the same detections."""
import numpy as np
import pytest
import torch
from benchmarks.torch_ssdlite import torchvision_loss, torchvision_postprocess

from tinymbv2 import Tensor
from tinymbv2.detection import DefaultBoxGenerator, postprocess_detections, ssd_loss

IMAGE = (96, 96)
GRIDS = [(6, 6), (3, 3), (2, 2), (1, 1), (1, 1), (1, 1)]


def default_boxes():
    return DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)(IMAGE, GRIDS)


def random_targets(rng, n, k, empty_image=None):
    targets = []
    for i in range(n):
        m = 0 if i == empty_image else int(rng.integers(1, 5))
        xy = rng.random((m, 2)) * 70
        boxes = np.concatenate([xy, xy + rng.random((m, 2)) * 40 + 6], axis=1)
        targets.append({"boxes": boxes, "labels": rng.integers(1, k, m)})
    return targets


@pytest.mark.parametrize("seed,empty_image", [(0, None), (1, None), (2, 1), (3, None)])
def test_loss_and_gradients_equal_torchvisions(seed, empty_image):
    rng = np.random.default_rng(seed)
    anchors = default_boxes()
    n, k = 3, 11
    cls = rng.standard_normal((n, len(anchors), k)) * 2
    box = rng.standard_normal((n, len(anchors), 4))
    targets = random_targets(rng, n, k, empty_image)
    c, b = Tensor(cls.copy(), requires_grad=True), Tensor(box.copy(), requires_grad=True)
    ours = ssd_loss(c, b, anchors, targets)
    tc, tb = torch.tensor(cls, requires_grad=True), torch.tensor(box, requires_grad=True)
    ref = torchvision_loss(tc, tb, torch.tensor(anchors),
                           [{"boxes": torch.tensor(t["boxes"]), "labels": torch.tensor(t["labels"])} for t in targets])
    for name in ("bbox_regression", "classification"):
        np.testing.assert_allclose(ours[name].data, ref[name].item(), rtol=1e-12)
    w = rng.standard_normal(2)                    # a random upstream gradient for each part
    (ours["bbox_regression"] * float(w[0]) + ours["classification"] * float(w[1])).backward()
    (ref["bbox_regression"] * float(w[0]) + ref["classification"] * float(w[1])).backward()
    np.testing.assert_allclose(c.grad, tc.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(b.grad, tb.grad.numpy(), rtol=1e-10, atol=1e-14)
    # hard-negative mining: gradients reach the matched boxes and 3x as many background ones per image
    touched = (np.abs(c.grad).sum(axis=2) > 0).sum(axis=1)
    assert touched.sum() > 0 and (touched % 4 == 0).all()


def test_loss_refuses_targets_that_do_not_fit():
    anchors = default_boxes()
    c, b = Tensor(np.zeros((1, len(anchors), 3))), Tensor(np.zeros((1, len(anchors), 4)))
    with pytest.raises(ValueError, match=r"labels'\] in \[1, 3\) \(0 is the background\), got \[0\]"):
        ssd_loss(c, b, anchors, [{"boxes": np.array([[0, 0, 10, 10.0]]), "labels": np.array([0])}])
    with pytest.raises(ValueError, match="one target per image, 1, got 2"):
        ssd_loss(c, b, anchors, [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}] * 2)
    with pytest.raises(ValueError, match=r"expected 10 default boxes"):
        ssd_loss(Tensor(np.zeros((1, 10, 3))), Tensor(np.zeros((1, 10, 4))), anchors, [])


@pytest.mark.parametrize("seed", range(3))
def test_postprocess_equals_torchvisions(seed):
    rng = np.random.default_rng(seed)
    anchors = default_boxes()
    n, k = 2, 6
    cls = rng.standard_normal((n, len(anchors), k)) * 3
    box = rng.standard_normal((n, len(anchors), 4)) * 0.5
    settings = dict(score_thresh=0.05, nms_thresh=0.45, topk_candidates=50, detections_per_img=60)
    ours = postprocess_detections(cls, box, anchors, IMAGE, **settings)
    ref = torchvision_postprocess(torch.tensor(cls), torch.tensor(box), torch.tensor(anchors), IMAGE, **settings)
    for mine, theirs in zip(ours, ref):
        assert 0 < len(mine["scores"]) <= 60
        np.testing.assert_array_equal(mine["labels"], theirs["labels"].numpy())
        np.testing.assert_allclose(mine["scores"], theirs["scores"].numpy(), rtol=1e-13)
        np.testing.assert_allclose(mine["boxes"], theirs["boxes"].numpy(), rtol=1e-13, atol=1e-12)
        assert (np.diff(mine["scores"]) <= 0).all()
        assert (mine["boxes"] >= 0).all() and (mine["boxes"] <= 96).all()
