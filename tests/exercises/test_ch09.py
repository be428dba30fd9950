"""Chapter 9's checks answer common wrong answers with the hint meant for them."""
import numpy as np

from tinymbv2.exercises import check_channel_stats, check_shift, check_stratified_split


def shift(images, dy, dx):
    h, w = images.shape[2:]
    out = np.zeros_like(images)
    out[:, :, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        images[:, :, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def largest_remainder_split(labels, n_val, n_test, seed=0):
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)

    def allocate(total):
        exact = total * counts / counts.sum()
        share = np.floor(exact).astype(int)
        share[np.argsort(share - exact)[:total - share.sum()]] += 1
        return share

    parts = ([], [], [])
    for c, n_t, n_v in zip(classes, allocate(n_test), allocate(n_val)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        parts[2].append(idx[:n_t]); parts[1].append(idx[n_t:n_t + n_v]); parts[0].append(idx[n_t + n_v:])
    return tuple(np.concatenate(p) for p in parts)


def test_channel_stats_hints():
    assert check_channel_stats(lambda x: (x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3)))).passed
    one_number = check_channel_stats(lambda x: (x.mean(), x.std())).message
    assert "your mean has shape (), expected (1,)" in one_number and "(0, 2, 3)" in one_number
    per_image = check_channel_stats(lambda x: (x.mean(axis=(2, 3)), x.std(axis=(2, 3)))).message
    assert "your mean has shape (2, 1), expected (1,)" in per_image
    unbiased = check_channel_stats(lambda x: (x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3), ddof=1)))
    assert "sample std (divides by n - 1, ddof=1)" in unbiased.message
    std_of_means = check_channel_stats(lambda x: (x.mean(axis=(0, 2, 3)), x.mean(axis=(2, 3)).std(axis=0)))
    assert std_of_means.message.startswith("not yet: images of shape (2, 1, 3, 3): std at index (0,)")


def test_shift_hints():
    assert check_shift(shift).message == "correct (6 cases)"
    wraps = check_shift(lambda x, dy, dx: np.roll(x, (dy, dx), axis=(2, 3))).message
    assert "np.roll wraps around" in wraps and "dy=2, dx=0" in wraps
    assert "moved the wrong way" in check_shift(lambda x, dy, dx: shift(x, -dy, -dx)).message
    assert "dy and dx are swapped" in check_shift(lambda x, dy, dx: shift(x, dx, dy)).message

    def in_place(x, dy, dx):
        x[...] = shift(x, dy, dx)
        return x
    assert "changed its input" in check_shift(in_place).message
    cropped = check_shift(lambda x, dy, dx: shift(x, dy, dx)[:, :, 1:])
    assert "shape (2, 1, 5, 6), expected (2, 1, 6, 6)" in cropped.message


def test_stratified_split_hints():
    assert check_stratified_split(largest_remainder_split).message == "correct (5 cases)"

    def first_indices(labels, n_val, n_test, seed=0):     # labels sorted by class: not stratified
        idx = np.arange(len(labels))
        return idx[n_val + n_test:], idx[:n_val], idx[n_val:n_val + n_test]
    sorted_cut = check_stratified_split(first_indices).message
    assert "class 0 is 50% of the labels but has 10 of the 10 val indices" in sorted_cut
    assert "cut each class on its own" in sorted_cut

    def rounded(labels, n_val, n_test, seed=0):     # each class rounded alone: 3 x 3.33 -> 9
        parts = ([], [], [])
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            n_t, n_v = (round(n * len(idx) / len(labels)) for n in (n_test, n_val))
            parts[2].append(idx[:n_t]); parts[1].append(idx[n_t:n_t + n_v]); parts[0].append(idx[n_t + n_v:])
        return tuple(np.concatenate(p) for p in parts)
    assert "val has 9 indices, expected 10" in check_stratified_split(rounded).message

    def overlapping(labels, n_val, n_test, seed=0):
        train, val, test = largest_remainder_split(labels, n_val, n_test, seed)
        return np.concatenate([train, val[:1]]), val, test
    assert "is in two splits" in check_stratified_split(overlapping).message

    def dropped(labels, n_val, n_test, seed=0):
        train, val, test = largest_remainder_split(labels, n_val, n_test, seed)
        return train[1:], val, test
    assert "is in no split" in check_stratified_split(dropped).message
