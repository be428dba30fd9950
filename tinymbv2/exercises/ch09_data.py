"""Checks for the exercises of chapter 9. Data, splits and augmentation.

* ``check_channel_stats``: per-channel mean and population std of an ``(N, C, H, W)`` batch,
  against [channel_stats][tinymbv2.data.transforms.channel_stats];
* ``check_shift``: move every image by ``(dy, dx)`` pixels, uncovered pixels 0, against
  torchvision's ``affine`` (a pure translation, nearest-neighbour, fill 0);
* ``check_stratified_split``: disjoint train/validation/test indices covering every sample,
  each class in proportion, the counts of [stratified_split][tinymbv2.data.splits.stratified_split].
"""
from __future__ import annotations

import numpy as np

from ..data import channel_stats, stratified_split
from .checking import Hint, exercise, expect_close, expect_equal

__all__ = ["check_channel_stats", "check_shift", "check_stratified_split"]


@exercise
def check_channel_stats(answer) -> int:
    """``answer(images) -> (mean, std)``, each of shape ``(C,)``: the mean and the population
    standard deviation (``ddof=0``) of every channel over the batch and both image axes.

    Cases: one and three channels, channels with different means and spreads (so statistics
    over the wrong axes show), and a tiny batch where the sample std (``ddof=1``) is far from
    the population std.

    Args:
        answer: your function, ``per_channel_stats(images)`` -> ``(mean, std)``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(9)
    shapes = [(2, 1, 3, 3), (5, 3, 4, 6), (16, 1, 28, 28), (7, 3, 8, 8)]
    for shape in shapes:
        c = shape[1]
        images = (rng.normal(size=shape) * rng.uniform(0.5, 3.0, size=(1, c, 1, 1))
                  + rng.uniform(-2.0, 2.0, size=(1, c, 1, 1))).astype(np.float32)
        what = f"images of shape {shape}"
        result = answer(images.copy())
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise Hint(f"{what}: return a pair (mean, std), got {type(result).__name__}")
        mean, std = (np.asarray(getattr(v, "data", v), dtype=np.float64) for v in result)
        want_mean, want_std = channel_stats(images)
        for name, got in (("mean", mean), ("std", std)):
            if got.shape != (c,):
                raise Hint(f"{what}: your {name} has shape {got.shape}, expected ({c},), one value "
                           "per channel: reduce over the batch and both image axes, (0, 2, 3)")
        expect_close(mean, want_mean, f"{what}: mean", rtol=1e-5, atol=1e-6)
        n = images.size // c
        sample_std = want_std * np.sqrt(n / (n - 1))
        if np.allclose(std, sample_std, rtol=1e-5) and not np.allclose(std, want_std, rtol=1e-5):
            raise Hint(f"{what}: your std is the sample std (divides by n - 1, ddof=1); "
                       "normalisation uses the population std (divides by n, ddof=0)")
        expect_close(std, want_std, f"{what}: std", rtol=1e-5, atol=1e-6)
    return len(shapes)


def _shift_reference(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """torchvision's ``affine`` with a translation only, nearest-neighbour, fill 0."""
    import torch
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    moved = TF.affine(torch.from_numpy(images), angle=0.0, translate=[dx, dy], scale=1.0,
                      shear=[0.0, 0.0], interpolation=InterpolationMode.NEAREST, fill=0.0)
    return moved.numpy()


@exercise
def check_shift(answer) -> int:
    """``answer(images, dy, dx)``: the batch ``(N, C, H, W)`` with every image's content moved
    ``dy`` pixels down and ``dx`` pixels right (negative: up, left); pixels nothing moved onto
    are 0; the shape is kept; the input is not modified.

    Cases: shifts of each sign on each axis, zero, non-square images; compared with
    torchvision. A wrap-around (``np.roll``), a shift the wrong way or along the wrong axis
    gets a hint saying so.

    Args:
        answer: your function, ``shift(images, dy, dx)`` -> the shifted batch.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(90)
    cases = [((2, 1, 6, 6), 2, 0), ((2, 1, 6, 6), 0, -2), ((3, 2, 5, 7), 1, 3),
             ((3, 2, 5, 7), -2, -1), ((1, 1, 28, 28), 0, 0), ((4, 1, 8, 8), -3, 2)]
    for shape, dy, dx in cases:
        images = rng.uniform(0.1, 1.0, size=shape).astype(np.float32)  # no zero pixel
        original = images.copy()
        what = f"shift by dy={dy}, dx={dx} of images {shape}"
        got = np.asarray(answer(images, dy, dx))
        if not np.array_equal(images, original):
            raise Hint(f"{what}: your function changed its input; build a new array")
        if got.shape != shape:
            raise Hint(f"{what}: shape {got.shape}, expected {shape} (a shift keeps the size)")
        want = _shift_reference(original, dy, dx)
        if np.allclose(got, want):
            continue
        if np.allclose(got, np.roll(original, (dy, dx), axis=(2, 3))):
            raise Hint(f"{what}: pixels that leave one edge come back at the other (np.roll wraps "
                       "around); the uncovered pixels must be 0")
        if np.allclose(got, _shift_reference(original, -dy, -dx)):
            raise Hint(f"{what}: the content moved the wrong way; dy > 0 moves it down, "
                       "dx > 0 to the right")
        if np.allclose(got, _shift_reference(original, dx, dy)):
            raise Hint(f"{what}: dy and dx are swapped; dy moves rows (axis 2), dx columns (axis 3)")
        expect_close(got, want, what)
    return len(cases)


@exercise
def check_stratified_split(answer) -> int:
    """``answer(labels, n_val, n_test, seed) -> (train, val, test)``: integer index arrays,
    disjoint, together covering ``range(len(labels))``, ``n_val`` and ``n_test`` long, in which
    every class has its share: ``n_val * count_c / N`` rounded down or up.

    Cases: balanced and unbalanced classes, labels sorted by class (a cut of the first indices
    is not stratified) and shuffled, a class too small to appear in every split.

    Args:
        answer: your function, ``split_indices(labels, n_val, n_test, seed)`` ->
            ``(train, val, test)``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(99)
    cases = [
        (np.repeat(np.arange(3), [50, 30, 20]), 10, 20),
        (np.repeat(np.arange(10), 30), 50, 60),
        (rng.permutation(np.repeat(np.arange(4), [7, 13, 25, 55])), 15, 25),
        (np.repeat(np.arange(5), [2, 40, 40, 9, 9]), 12, 18),
        (np.repeat(np.arange(3), 20), 10, 5),  # shares of 3.33 and 1.67: rounding misses
    ]
    for k, (labels, n_val, n_test) in enumerate(cases, 1):
        n = len(labels)
        what = f"case {k} ({n} labels, n_val={n_val}, n_test={n_test})"
        result = answer(labels.copy(), n_val, n_test, seed=k)
        if not isinstance(result, (tuple, list)) or len(result) != 3:
            raise Hint(f"{what}: return three index arrays (train, val, test), "
                       f"got {type(result).__name__}")
        parts = {name: np.asarray(p) for name, p in zip(("train", "val", "test"), result)}
        for name, part in parts.items():
            if part.ndim != 1 or (part.size and part.dtype.kind not in "iu"):
                raise Hint(f"{what}: {name} must be a 1-D array of integer indices, got "
                           f"shape {part.shape} dtype {part.dtype}")
        seen = np.zeros(n, dtype=np.int64)
        for part in parts.values():
            np.add.at(seen, part, 1)
        if (seen > 1).any():
            raise Hint(f"{what}: index {int(np.flatnonzero(seen > 1)[0])} is in two splits (or "
                       "twice in one); the splits must be disjoint")
        if (seen == 0).any():
            raise Hint(f"{what}: index {int(np.flatnonzero(seen == 0)[0])} is in no split; "
                       "together they must cover every sample")
        library = dict(zip(("train", "val", "test"), stratified_split(labels, n_val, n_test)))
        counts = np.bincount(labels)
        for name, size in (("val", n_val), ("test", n_test)):
            share = size * counts / n
            got = np.bincount(labels[parts[name]], minlength=len(counts))
            for c in range(len(counts)):
                if not np.floor(share[c]) <= got[c] <= np.ceil(share[c]):
                    want = int(np.bincount(labels[library[name]], minlength=len(counts))[c])
                    raise Hint(f"{what}: class {c} is {counts[c] / n:.0%} of the labels but has "
                               f"{got[c]} of the {len(parts[name])} {name} indices; a stratified "
                               f"split gives it {share[c]:.3g}, rounded down or up "
                               f"(tinymbv2.data.stratified_split gives {want}): cut each class "
                               "on its own")
            if len(parts[name]) != size:
                raise Hint(f"{what}: {name} has {len(parts[name])} indices, expected {size}; "
                           "rounding each class's share on its own need not add up: give the "
                           "leftover places to the classes with the largest remainders")
        expect_equal(len(parts["train"]), n - n_val - n_test, f"{what}: size of train")
    return len(cases)
