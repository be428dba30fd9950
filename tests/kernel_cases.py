"""One call of every kernel on one random problem, shared by the kernel tests (CPU and GPU).

NumPy only, so the GPU test file can use it on a machine without hypothesis.
"""
from __future__ import annotations

import contextlib

import numpy as np

EPS = 1e-5


def all_kernel_calls(x, w, wd, wp, stride, padding, rng):
    """{kernel name: (args...)} exercising all thirteen kernels on one input."""
    n, c, h, wdt = x.shape
    ho = (h + 2 * padding[0] - w.shape[2]) // stride[0] + 1
    wo = (wdt + 2 * padding[1] - w.shape[3]) // stride[1] + 1
    f = x.dtype.type
    gy = rng.standard_normal((n, w.shape[0], ho, wo)).astype(x.dtype)
    gyd = rng.standard_normal((n, c, ho, wo)).astype(x.dtype)
    gyp = rng.standard_normal((n, wp.shape[0], h, wdt)).astype(x.dtype)
    gx = rng.standard_normal(x.shape).astype(x.dtype)
    g, b = rng.standard_normal(c).astype(x.dtype), rng.standard_normal(c).astype(x.dtype)
    mean, invstd = x.mean(axis=(0, 2, 3)), (1 / np.sqrt(x.var(axis=(0, 2, 3)) + f(EPS))).astype(x.dtype)
    var = rng.uniform(0.1, 2.0, c).astype(x.dtype)
    flat = x.reshape(n, -1)
    linear_w = rng.standard_normal((5, flat.shape[1])).astype(x.dtype)
    return {
        "matmul": (flat, linear_w.T),  # x W^T, with W^T a transposed (Fortran-order) view
        "conv2d_forward": (x, w, stride, padding),
        "conv2d_backward_input": (gy, w, x.shape, stride, padding),
        "conv2d_backward_weight": (gy, x, w.shape, stride, padding),
        "depthwise_conv2d_forward": (x, wd, stride, padding),
        "depthwise_conv2d_backward_input": (gyd, wd, x.shape, stride, padding),
        "depthwise_conv2d_backward_weight": (gyd, x, wd.shape, stride, padding),
        "pointwise_conv2d_forward": (x, wp),
        "pointwise_conv2d_backward_input": (gyp, wp),
        "pointwise_conv2d_backward_weight": (gyp, x),
        "batch_norm_forward_train": (x, g, b, EPS),
        "batch_norm_backward_train": (gx, x, mean, invstd, g),
        "batch_norm_forward_eval": (x, mean, var, g, b, EPS),
    }


def fused_kernel_calls(x, rng):
    """The BatchNorm kernels with the ReLU6 fused: {label: (kernel name, args, kwargs)}.

    gamma and beta are drawn wide (outputs land below 0, inside (0, 6) and above 6)
    so that the clamp and the backward's mask both matter."""
    c = x.shape[1]
    f = x.dtype.type
    g = (rng.standard_normal(c) * 4).astype(x.dtype)
    b = (rng.standard_normal(c) + 3).astype(x.dtype)
    gy = rng.standard_normal(x.shape).astype(x.dtype)
    mean, invstd = x.mean(axis=(0, 2, 3)), (1 / np.sqrt(x.var(axis=(0, 2, 3)) + f(EPS))).astype(x.dtype)
    var = rng.uniform(0.1, 2.0, c).astype(x.dtype)
    fused = {"relu6": True}
    return {
        "batch_norm_forward_train[relu6]": ("batch_norm_forward_train", (x, g, b, EPS), fused),
        "batch_norm_backward_train[relu6]": ("batch_norm_backward_train",
                                             (gy, x, mean, invstd, g, b), fused),
        "batch_norm_forward_eval[relu6]": ("batch_norm_forward_eval", (x, mean, var, g, b, EPS), fused),
    }


@contextlib.contextmanager
def channels_last_max(pixels):
    """Run the numba set with ``numba_layout.CHANNELS_LAST_MAX`` set to ``pixels``: 0 sends
    every plane through the NCHW kernels, 10**9 every plane through the channels-last ones."""
    from tinymbv2.kernels import numba_layout

    saved = numba_layout.CHANNELS_LAST_MAX
    numba_layout.CHANNELS_LAST_MAX = pixels
    try:
        yield
    finally:
        numba_layout.CHANNELS_LAST_MAX = saved


def three_runs(run):
    """(run(), run() again, run() on one Numba thread): what a determinism test compares,
    for the same bits on every run and whatever the thread count."""
    import numba  # here, not at the top: the GPU tests import this module too

    first, again = run(), run()
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        single = run()
    finally:
        numba.set_num_threads(threads)
    return first, again, single
