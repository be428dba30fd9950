"""SSD's default boxes, box coder and matcher against torchvision's DefaultBoxGenerator,
BoxCoder and SSDMatcher: the same boxes in the same order, the same offsets, the same matches."""
import math

import numpy as np
import pytest
import torch
import torchvision.ops as tvops
from torchvision.models.detection._utils import BoxCoder as TvBoxCoder
from torchvision.models.detection._utils import SSDMatcher as TvSSDMatcher
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator as TvDefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from tinymbv2.detection import BoxCoder, DefaultBoxGenerator, SSDMatcher, box_iou

SSDLITE = dict(aspect_ratios=[[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)


def torchvision_boxes(kwargs, image_size, grids):
    gen = TvDefaultBoxGenerator(**kwargs)
    images = ImageList(torch.zeros(1, 3, *image_size, dtype=torch.float64), [tuple(image_size)])
    maps = [torch.zeros(1, 1, *g, dtype=torch.float64) for g in grids]
    return gen(images, maps)[0].numpy()


@pytest.mark.parametrize("image_size,grids", [
    ((320, 320), [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]),     # SSDLite at 320 px
    ((160, 128), [(10, 8), (5, 4), (3, 2), (2, 1), (1, 1), (1, 1)]),        # not square
])
def test_ssdlite_default_boxes_equal_torchvision(image_size, grids):
    ours = DefaultBoxGenerator(**SSDLITE)(image_size, grids)
    ref = torchvision_boxes(SSDLITE, image_size, grids)
    assert ours.shape == ref.shape == (6 * sum(h * w for h, w in grids), 4)
    # torchvision rounds the box sizes to float32 whatever the maps' dtype; the order is exact
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-4)


def test_default_boxes_with_steps_scales_and_no_clip_equal_torchvision():
    kwargs = dict(aspect_ratios=[[2], [2, 3], [2]], scales=[0.1, 0.3, 0.7, 1.2], steps=[8, 16, 32], clip=False)
    grids = [(8, 8), (4, 4), (2, 2)]
    ours = DefaultBoxGenerator(**kwargs)((64, 64), grids)
    np.testing.assert_allclose(ours, torchvision_boxes(kwargs, (64, 64), grids), rtol=1e-6, atol=1e-4)
    assert DefaultBoxGenerator(**kwargs).num_anchors_per_location() == [4, 6, 4]


def test_default_box_scales_follow_the_ssd_formula():
    gen = DefaultBoxGenerator(**SSDLITE)
    np.testing.assert_allclose(gen.scales, [0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0])
    sizes = gen.box_sizes(0)                              # the first map: s = 0.2, s' = sqrt(0.2 * 0.35)
    np.testing.assert_allclose(sizes[:2], [[0.2, 0.2], [math.sqrt(0.07)] * 2])
    np.testing.assert_allclose(sizes[2], [0.2 * math.sqrt(2), 0.2 / math.sqrt(2)])
    np.testing.assert_allclose(sizes[2:, 0] * sizes[2:, 1], 0.04)   # the ratios keep the area s^2


@pytest.mark.parametrize("seed", range(3))
def test_box_coder_equals_torchvision_and_round_trips(seed):
    rng = np.random.default_rng(seed)
    xy = rng.random((50, 2)) * 200
    anchors = np.concatenate([xy, xy + rng.random((50, 2)) * 80 + 1], axis=1)
    xy = rng.random((50, 2)) * 200
    gt = np.concatenate([xy, xy + rng.random((50, 2)) * 80 + 1], axis=1)
    coder, tv = BoxCoder((10, 10, 5, 5)), TvBoxCoder((10.0, 10.0, 5.0, 5.0))
    offsets = coder.encode(gt, anchors)
    np.testing.assert_array_equal(offsets, tv.encode_single(torch.tensor(gt), torch.tensor(anchors)).numpy())
    decoded = coder.decode(offsets, anchors)
    np.testing.assert_array_equal(decoded, tv.decode_single(torch.tensor(offsets), torch.tensor(anchors)).numpy())
    np.testing.assert_allclose(decoded, gt, rtol=1e-12, atol=1e-10)
    # a huge predicted log-size is clipped before exp: finite boxes
    assert np.isfinite(coder.decode(np.full((1, 4), 1e4), anchors[:1])).all()


@pytest.mark.parametrize("seed", range(5))
def test_matcher_equals_torchvision(seed):
    rng = np.random.default_rng(seed)
    anchors = DefaultBoxGenerator(**SSDLITE)((160, 160), [(10, 10), (5, 5), (3, 3), (2, 2), (1, 1), (1, 1)])
    m = int(rng.integers(1, 7))
    xy = rng.random((m, 2)) * 130
    gt = np.concatenate([xy, xy + rng.random((m, 2)) * 50 + 8], axis=1)
    iou = box_iou(gt, anchors)
    ours = SSDMatcher(0.5)(iou)
    ref = TvSSDMatcher(0.5)(tvops.box_iou(torch.tensor(gt), torch.tensor(anchors))).numpy()
    np.testing.assert_array_equal(ours, ref)
    # every ground-truth box gets its best default box, unless a later box has the same best one
    best = iou.argmax(axis=1)
    for j in range(m):
        assert ours[best[j]] == j or (best[j + 1:] == best[j]).any()
    # and a match holds IoU >= 0.5 unless it was forced
    forced = set(best.tolist())
    for n in np.flatnonzero(ours >= 0):
        assert iou[ours[n], n] >= 0.5 or n in forced


def test_matcher_and_coder_errors_are_named():
    with pytest.raises(ValueError, match=r"M >= 1 ground-truth .* got shape \(0, 5\)"):
        SSDMatcher()(np.zeros((0, 5)))
    with pytest.raises(ValueError, match="threshold must be in"):
        SSDMatcher(1.5)
    with pytest.raises(ValueError, match="four positive numbers"):
        BoxCoder((10, 10, 5))
    with pytest.raises(ValueError, match="must pair row for row"):
        BoxCoder().encode(np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="expected 2 feature-map sizes, got 1"):
        DefaultBoxGenerator([[2], [2]])((64, 64), [(4, 4)])
