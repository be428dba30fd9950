"""MNIST scenes: deterministic, tight boxes, masks that agree with them, bounded overlap, and
each split drawn from its own digits."""
import numpy as np
import pytest

import tinymbv2.data.scenes as scenes
from tinymbv2.data import load_dataset
from tinymbv2.data.scenes import INK, make_scenes, overlap_of_smaller


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("mnist5k")
    pick = np.linspace(0, len(ds.train) - 1, 300).astype(int)     # the split is ordered by class
    return ds.train.images[pick], ds.train.labels[pick]


def test_scenes_are_a_pure_function_of_the_seed(digits):
    a = make_scenes(*digits, 12, size=96, seed=5)
    b = make_scenes(*digits, 12, size=96, seed=5)
    c = make_scenes(*digits, 12, size=96, seed=6)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert all((x == y).all() for x, y in zip(a.boxes, b.boxes))
    assert not np.array_equal(a.images, c.images)


def test_a_lone_digit_has_a_tight_box_its_mask_and_its_label(digits):
    images, labels = digits
    s = make_scenes(images, labels, 30, size=80, max_digits=1, scale=(14, 40), seed=1)
    for i in range(len(s)):
        assert s.boxes[i].shape == (1, 4) and s.labels[i].shape == (1,)
        x1, y1, x2, y2 = s.boxes[i][0].astype(int)
        ink = s.images[i, 0] > INK
        inside = np.zeros_like(ink)
        inside[y1:y2, x1:x2] = True
        assert ink[inside].any() and not ink[~inside].any()             # no ink outside
        assert ink[y1].any() and ink[y2 - 1].any()                       # tight: ink on every edge
        assert ink[:, x1].any() and ink[:, x2 - 1].any()
        np.testing.assert_array_equal(s.masks[i] > 0, ink)              # the mask is the ink
        assert set(np.unique(s.masks[i])) == {0, int(s.labels[i][0])}
        assert 1 <= s.labels[i][0] <= 10


def test_scenes_hold_1_to_max_digits_with_bounded_overlap(digits):
    s = make_scenes(*digits, 60, size=128, max_digits=6, scale=(14, 64), max_overlap=0.2, seed=2)
    counts = np.array([len(b) for b in s.boxes])
    assert counts.min() >= 1 and counts.max() <= 6 and len(set(counts)) >= 4
    for boxes, labels, mask in zip(s.boxes, s.labels, s.masks):
        for j in range(len(boxes)):
            others = np.delete(boxes, j, axis=0)
            if len(others):
                assert overlap_of_smaller(boxes[j], others).max() <= 0.2 + 1e-6
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        assert (sides <= 64).all() and (boxes >= 0).all() and (boxes <= 128).all()
        assert set(np.unique(mask)) <= {0, *labels.tolist()}            # only the scene's classes
    assert s.images.dtype == np.float32 and 0 <= s.images.min() and s.images.max() <= 1


def test_each_split_draws_only_its_own_digits(monkeypatch):
    seen = []
    real = scenes.make_scenes
    monkeypatch.setattr(scenes, "make_scenes", lambda d, lab, n, *a, **k: seen.append(d) or real(d, lab, n, *a, **k))
    ds = scenes.load_mnist_scenes.__wrapped__(size=64, n_train=4, n_val=3, n_test=5, scale=(14, 30))
    digits = load_dataset("mnist5k")
    for used, split in zip(seen, (digits.train, digits.val, digits.test)):
        np.testing.assert_array_equal(used, split.images)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (4, 3, 5) and ds.num_classes == 11
    assert ds.class_names[0] == "background" and ds.class_names[1:] == tuple("0123456789")
    targets = ds.test.targets([0, 2])
    assert len(targets) == 2 and targets[1]["boxes"] is ds.test.boxes[2]


def test_a_digit_from_a_one_class_pool_gets_that_class(digits):
    images, labels = digits
    threes = labels == 3
    s = make_scenes(images[threes], labels[threes], 10, size=96, seed=3)
    assert all((lab == 4).all() for lab in s.labels)                  # digit 3 is class 4


@pytest.mark.parametrize("kwargs,match", [
    (dict(scale=(14, 200)), r"scale\[1\] <= size \(128\), got \(14, 200\)"),
    (dict(max_digits=0), "max_digits >= 1"),
])
def test_bad_arguments_are_named(digits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_scenes(*digits, 2, **kwargs)
