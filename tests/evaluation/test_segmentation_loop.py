"""evaluate_segmenter and segment on a small segmenter (modes restored, the loss and scores
those of a hand run), and the masks drawn in colour (colour_mask, overlay_mask)."""
import numpy as np
import pytest

import tinymbv2
from tinymbv2 import Tensor
from tinymbv2 import functional as F
from tinymbv2.evaluation import (PALETTE, colour_mask, evaluate_segmenter, overlay_mask, segment,
                                 segmentation_confusion, segmentation_scores)
from tinymbv2.models import deeplabv3_mobilenet_v2


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    model = deeplabv3_mobilenet_v2(5, head="aspp", width_mult=0.25, in_channels=1, seed=0)
    images = rng.standard_normal((5, 1, 32, 32)).astype(np.float32)
    masks = rng.integers(0, 5, (5, 32, 32)).astype(np.uint8)
    return model, images, masks


def test_evaluate_segmenter_matches_a_hand_run_and_keeps_modes(setup):
    model, images, masks = setup
    model.train()
    result = evaluate_segmenter(model, images, masks, batch_size=2, fuse=False)
    assert model.training and all(m.training for m in model.modules())   # modes restored
    model.eval()
    with tinymbv2.no_grad():
        logits = model(Tensor(images))
        loss = float(F.cross_entropy(logits, masks.astype(np.int64)).item())
    model.train()
    predicted = logits.numpy().argmax(axis=1)
    assert result["predictions"].dtype == np.uint8 and result["predictions"].shape == (5, 32, 32)
    np.testing.assert_array_equal(result["predictions"], predicted)
    assert result["loss"] == pytest.approx(loss, rel=1e-5)   # batches of 2, 2, 1: weighted by size
    scores = segmentation_scores(segmentation_confusion(predicted, masks, 5))
    np.testing.assert_array_equal(result["confusion"], segmentation_confusion(predicted, masks, 5))
    assert result["miou"] == pytest.approx(scores["miou"])
    assert result["pixel_accuracy"] == pytest.approx(np.mean(predicted == masks))
    np.testing.assert_allclose(result["per_class_iou"], scores["per_class_iou"])


def test_the_fused_view_segments_the_same(setup):
    model, images, masks = setup
    plain = segment(model, images, fuse=False)
    fused = evaluate_segmenter(model, images, masks, fuse=True)
    assert np.mean(plain == fused["predictions"]) > 0.999   # rounding may flip a tie


def test_masks_of_another_shape_are_refused(setup):
    model, images, masks = setup
    with pytest.raises(ValueError, match=r"expected masks \(N, H, W\) = \(5, 32, 32\).*got \(5, 16, 16\)"):
        evaluate_segmenter(model, images, masks[:, :16, :16])


def test_colour_mask_uses_the_fixed_palette():
    mask = np.array([[0, 1, 10], [11, 12, 3]])
    rgb = colour_mask(mask)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert tuple(rgb[0, 0]) == (0, 0, 0)                    # the background black
    assert tuple(rgb[0, 1]) == PALETTE[1] and tuple(rgb[0, 2]) == PALETTE[10]
    assert tuple(rgb[1, 0]) == PALETTE[1] and tuple(rgb[1, 1]) == PALETTE[2]   # past 10: again
    assert len(set(PALETTE)) == 11                            # 11 distinct colours


def test_overlay_mask_blends_the_colours_and_leaves_the_background():
    image = np.array([[[0.0, 0.5], [1.0, 0.2]]])             # (1, 2, 2) grey
    mask = np.array([[0, 2], [1, 0]])
    out = overlay_mask(image, mask, alpha=0.25)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(out[1, 1], [51, 51, 51])                # round(0.2 * 255)
    np.testing.assert_array_equal(out[0, 1], np.round(0.75 * 127.5 + 0.25 * np.array(PALETTE[2])))
    np.testing.assert_array_equal(out[1, 0], np.round(0.75 * 255 + 0.25 * np.array(PALETTE[1])))


@pytest.mark.parametrize("call,message", [
    (lambda: colour_mask(np.zeros((2, 2, 2), int)), r"expected a mask \(H, W\) of integer classes"),
    (lambda: colour_mask(np.array([[-1]])), "expected classes >= 0, got -1"),
    (lambda: overlay_mask(np.zeros((2, 2)), np.zeros((3, 3), int)), r"mask of the image's size \(2, 2\)"),
    (lambda: overlay_mask(np.zeros((2, 2)), np.zeros((2, 2), int), alpha=2), r"alpha in \[0, 1\], got 2"),
    (lambda: overlay_mask(np.zeros((2, 2, 2)), np.zeros((2, 2), int)), r"expected an image \(H, W\)"),
])
def test_drawing_errors_name_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
