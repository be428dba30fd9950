"""Checks for the exercises of chapter 2. Convolution: dense, depthwise, pointwise.

* ``check_conv_output_size``: the output-size formula;
* ``check_im2col``: a convolution turned into one matrix product;
* ``check_depthwise_weight_grad``: the weight gradient of a depthwise convolution.

Each case is compared with the library's readable kernels (``tinymbv2.kernels.reference``).
"""
from __future__ import annotations

import numpy as np

from ..kernels import kernel_set
from .checking import Hint, exercise, expect_close

__all__ = ["check_conv_output_size", "check_im2col", "check_depthwise_weight_grad"]


def _library_output_size(h: int, k: int, s: int, p: int) -> int:
    """The output height the library's dense convolution gives for an h x h input."""
    x, w = np.zeros((1, 1, h, h)), np.zeros((1, 1, k, k))
    return kernel_set("reference").conv2d_forward(x, w, (s, s), (p, p)).shape[2]


@exercise
def check_conv_output_size(conv_output_size) -> int:
    """``conv_output_size(h, k, s, p)`` must be the output height of a k x k convolution
    with stride s and zero padding p on h rows, as an int. Checked on nine cases (MobileNetV2's
    3x3 layers, strides that do not divide evenly, 1x1 and 5x5 kernels, a one-pixel input)
    against the height of the library's convolution output; the usual slips (padding
    forgotten or counted once, no +1, rounding up, a float) get their own hint.

    Args:
        conv_output_size: your function, ``conv_output_size(h, k, s, p)`` -> an int.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    cases = [(7, 3, 1, 1), (7, 3, 2, 1), (224, 3, 2, 1), (8, 3, 2, 1), (5, 5, 1, 0),
             (6, 1, 2, 0), (10, 3, 3, 0), (1, 3, 1, 1), (9, 5, 2, 2)]
    slips = {  # a usual wrong formula, and what it gets wrong
        "the padding is missing: the padded input has h + 2p rows": lambda h, k, s, p: (h - k) // s + 1,
        "the padding is on both sides: h + 2p, not h + p": lambda h, k, s, p: (h + p - k) // s + 1,
        "count the first window too: ... + 1": lambda h, k, s, p: (h + 2 * p - k) // s,
        "round down: a window that would run past the padded input is not computed":
            lambda h, k, s, p: -(-(h + 2 * p - k) // s) + 1,
    }
    answers = []
    for h, k, s, p in cases:
        got = conv_output_size(h, k, s, p)
        if isinstance(got, float) or not isinstance(got, (int, np.integer)):
            raise Hint(f"h={h}, k={k}, s={s}, p={p}: you gave {got!r}, a {type(got).__name__}; a "
                       "size is an int (use floor division //)")
        answers.append(int(got))
    for (h, k, s, p), got in zip(cases, answers):
        expected = _library_output_size(h, k, s, p)
        if got != expected:
            # name a slip only if it gives every one of the learner's answers
            hint = next((hint for hint, slip in slips.items()
                         if all(slip(*case) == a for case, a in zip(cases, answers))), "")
            raise Hint(f"h={h}, k={k}, s={s}, p={p}: you gave {got}, expected {expected}"
                       + (f"; {hint}" if hint else ""))
    return len(cases)


def _im2col_expected(x, k, s, p):
    """im2col from the library: a convolution whose filter ``r = c*k*k + a*k + b`` is one-hot
    at ``(c, a, b)`` copies exactly ``xp[n, c, i*s + a, j*s + b]`` into output channel r."""
    c = x.shape[1]
    eye = np.eye(c * k * k).reshape(c * k * k, c, k, k)
    y = kernel_set("reference").conv2d_forward(x, eye, (s, s), (p, p))
    return y.reshape(y.shape[0], y.shape[1], -1), y.shape[2:]


@exercise
def check_im2col(im2col) -> int:
    """``im2col(x, k, s, p)`` for x (N, C, H, W) must return cols ``(N, C*k*k, Ho*Wo)`` with
    ``cols[n, c*k*k + a*k + b, i*Wo + j] = xp[n, c, i*s + a, j*s + b]`` (xp: x zero-padded
    by p), so that ``w.reshape(Co, -1) @ cols`` is the convolution. Checked against the
    library's convolution on five inputs (no padding, padding, stride 2 on a non-square
    image, a 1x1 kernel, a 5x5 kernel); the hint names a wrong axis or a wrong order of the
    rows or columns.

    Args:
        im2col: your function, ``im2col(x, k, s, p)`` -> ``cols``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(21)
    cases = [((1, 1, 4, 4), 3, 1, 0), ((2, 3, 5, 5), 3, 1, 1), ((1, 2, 7, 6), 3, 2, 1),
             ((2, 4, 3, 3), 1, 1, 0), ((1, 2, 6, 6), 5, 1, 2)]
    for shape, k, s, p in cases:
        x = rng.standard_normal(shape)
        what = f"x {shape}, k={k}, s={s}, p={p}"
        expected, (ho, wo) = _im2col_expected(x, k, s, p)
        got = np.asarray(im2col(x.copy(), k, s, p), dtype=np.float64)
        n, c = shape[:2]
        if got.shape != expected.shape:
            why = ""
            if got.ndim == 3 and got.shape[1] != c * k * k:
                why = f"; axis 1 holds one row per (channel, tap): C*k*k = {c * k * k}"
            elif got.ndim == 3 and got.shape[2] != ho * wo:
                why = f"; axis 2 holds one column per output pixel: Ho*Wo = {ho}*{wo} = {ho * wo}"
                if p and got.shape[2] == ((shape[2] - k) // s + 1) * ((shape[3] - k) // s + 1):
                    why += " (did you pad x by p?)"
            raise Hint(f"{what}: shape {got.shape}, expected {expected.shape}{why}")
        taps_first = expected.reshape(n, c, k * k, -1).transpose(0, 2, 1, 3).reshape(expected.shape)
        if c > 1 and k > 1 and np.allclose(got, taps_first):
            raise Hint(f"{what}: your rows run over the taps first, then the channels; number them "
                       "c*k*k + a*k + b, the order of w.reshape(Co, -1)")
        columns_swapped = expected.reshape(n, -1, ho, wo).transpose(0, 1, 3, 2).reshape(expected.shape)
        if ho * wo > 1 and ho == wo and np.allclose(got, columns_swapped):
            raise Hint(f"{what}: your columns run down the output's columns; number output pixel "
                       "(i, j) as i*Wo + j, row by row")
        expect_close(got, expected, what)
    return len(cases)


@exercise
def check_depthwise_weight_grad(depthwise_weight_grad) -> int:
    """``depthwise_weight_grad(x, gy, k, s, p)`` must return dL/dw, shape (C, 1, k, k), for a
    depthwise convolution with stride s and padding p:
    ``gw[c, 0, a, b] = sum_{n, i, j} gy[n, c, i, j] * xp[n, c, i*s + a, j*s + b]``.
    Checked against the library's reference kernel; each case adds one thing to the one
    before (padding, then stride 2, then a 5x5 kernel and a batch of 3), and the hint says
    which.

    Args:
        depthwise_weight_grad: your function, ``depthwise_weight_grad(x, gy, k, s, p)`` -> ``gw``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    rng = np.random.default_rng(22)
    reference = kernel_set("reference")
    cases = [((2, 3, 5, 5), 3, 1, 0, "no padding, stride 1"),
             ((2, 3, 6, 6), 3, 1, 1, "the first case with padding: pad x by p before taking windows"),
             ((1, 4, 7, 7), 3, 2, 1, "the first case with stride 2: output pixel (i, j) reads "
                                     "from row i*s + a, column j*s + b"),
             ((3, 2, 8, 8), 5, 1, 2, "a 5x5 kernel and 3 images: sum over every image")]
    for shape, k, s, p, new in cases:
        x = rng.standard_normal(shape)
        w_shape = (shape[1], 1, k, k)
        gy = rng.standard_normal(reference.depthwise_conv2d_forward(x, np.zeros(w_shape), (s, s), (p, p)).shape)
        expected = reference.depthwise_conv2d_backward_weight(gy, x, w_shape, (s, s), (p, p))
        what = f"x {shape}, k={k}, s={s}, p={p} ({new})"
        try:
            got = np.asarray(depthwise_weight_grad(x.copy(), gy.copy(), k, s, p), dtype=np.float64)
        except (ValueError, IndexError) as exc:  # usually a window of the wrong size
            raise Hint(f"{what}: your code raised {type(exc).__name__}: {exc}") from None
        if got.shape == (shape[0], shape[1], k, k):
            raise Hint(f"{what}: shape {got.shape}: one gradient per image; the weights are shared "
                       "by every image, so sum over the batch")
        if got.shape == (shape[1], k, k):
            raise Hint(f"{what}: shape {got.shape}, expected {w_shape}: keep the weight's axis of size 1")
        expect_close(got, expected, what)
    return len(cases)
