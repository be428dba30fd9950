"""segmentation_confusion and segmentation_scores: hand-computed values, an independent
formula (IoU of the boolean regions), classes absent from both, ignore_index, errors."""
import numpy as np
import pytest

from tinymbv2.evaluation import confusion_matrix, segmentation_confusion, segmentation_scores

# a 2x4 image with classes 0..3; class 3 is in neither mask
TRUTH = np.array([[0, 0, 1, 1],
                  [0, 2, 2, 1]])
PRED = np.array([[0, 1, 1, 1],
                 [0, 2, 0, 0]])


def test_the_confusion_counts_pixels_truth_on_rows():
    cm = segmentation_confusion(PRED, TRUTH, 4)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[2, 1, 0, 0],     # truth 0: two right, one called 1
                                       [1, 2, 0, 0],     # truth 1: one called 0
                                       [1, 0, 1, 0],     # truth 2: one called 0
                                       [0, 0, 0, 0]])
    # the same counts as the classifier's confusion matrix over the flattened pixels
    np.testing.assert_array_equal(cm, confusion_matrix(PRED.ravel(), TRUTH.ravel(), 4))


def test_scores_by_hand():
    s = segmentation_scores(segmentation_confusion(PRED, TRUTH, 4))
    # IoU_0 = 2 / (3 + 4 - 2) = 2/5; IoU_1 = 2 / (3 + 3 - 2) = 1/2; IoU_2 = 1 / (2 + 1 - 1) = 1/2
    np.testing.assert_allclose(s["per_class_iou"][:3], [0.4, 0.5, 0.5])
    assert np.isnan(s["per_class_iou"][3])                       # in neither: no IoU
    assert s["miou"] == pytest.approx((0.4 + 0.5 + 0.5) / 3)     # left out of the mean
    assert s["pixel_accuracy"] == pytest.approx(5 / 8)
    np.testing.assert_allclose(s["per_class_accuracy"][:3], [2 / 3, 2 / 3, 1 / 2])
    assert s["mean_class_accuracy"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)


def test_a_class_predicted_but_never_true_counts_with_iou_zero():
    s = segmentation_scores(segmentation_confusion(np.array([[0, 3]]), np.array([[0, 0]]), 4))
    assert s["per_class_iou"][3] == 0.0 and s["per_class_iou"][0] == 0.5
    assert s["miou"] == pytest.approx(0.25)                      # over classes 0 and 3
    assert np.isnan(s["per_class_accuracy"][3]) and s["mean_class_accuracy"] == 0.5


def test_against_the_regions_intersection_over_union():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 6, (3, 17, 13))
    pred = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, 6, truth.shape))
    pred[pred == 5] = 4                                          # class 5 never predicted
    s = segmentation_scores(segmentation_confusion(pred.astype(np.uint8), truth, 6))
    for c in range(6):
        inter = np.logical_and(pred == c, truth == c).sum()
        union = np.logical_or(pred == c, truth == c).sum()
        assert s["per_class_iou"][c] == pytest.approx(inter / union)
    assert s["miou"] == pytest.approx(np.mean([np.logical_and(pred == c, truth == c).sum()
                                               / np.logical_or(pred == c, truth == c).sum()
                                               for c in range(6)]))
    assert s["pixel_accuracy"] == pytest.approx(np.mean(pred == truth))


def test_ignore_index_pixels_count_nowhere():
    truth = np.array([[0, 255, 1], [1, 255, 0]])
    pred = np.array([[0, 1, 1], [0, 0, 0]])
    cm = segmentation_confusion(pred, truth, 2, ignore_index=255)
    np.testing.assert_array_equal(cm, [[2, 0], [1, 1]])
    assert cm.sum() == 4


@pytest.mark.parametrize("pred,truth,k,ignore,message", [
    (np.zeros((2, 3), int), np.zeros((3, 2), int), 2, None, r"of one shape, got \(2, 3\) and \(3, 2\)"),
    (np.array([[0, 2]]), np.array([[0, 1]]), 2, None, r"expected pred classes in \[0, 2\), got 2"),
    (np.array([[0, 1]]), np.array([[0, 255]]), 2, None, r"expected truth classes in \[0, 2\), got 255"),
    (np.array([[0, 1]]), np.array([[0, 7]]), 2, 255, r"in \[0, 2\) or ignore_index, got 7"),
    (np.array([[0.0, 1.0]]), np.array([[0, 1]]), 2, None, "expected pred of integer classes, got dtype float64"),
    (np.array([[0, 1]]), np.array([[0, 1]]), 0, None, "expected num_classes an integer >= 1, got 0"),
])
def test_confusion_errors_name_what_was_expected(pred, truth, k, ignore, message):
    with pytest.raises(ValueError, match=message):
        segmentation_confusion(pred, truth, k, ignore_index=ignore)


def test_scores_refuse_a_matrix_that_is_not_one():
    with pytest.raises(ValueError, match=r"square \(K, K\) confusion matrix, got shape \(2, 3\)"):
        segmentation_scores(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="counts >= 0"):
        segmentation_scores(-np.eye(2))
    empty = segmentation_scores(np.zeros((3, 3), np.int64))
    assert np.isnan(empty["miou"]) and np.isnan(empty["pixel_accuracy"])
