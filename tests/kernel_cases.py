"""One call of every kernel on one random problem, shared by the kernel tests (CPU and GPU).

NumPy only, so the GPU test file can use it on a machine without hypothesis.
"""
from __future__ import annotations

import contextlib

import numpy as np

EPS = 1e-5


def all_kernel_calls(x, w, wd, wp, stride, padding, rng):
    """{kernel name: (args...)} exercising all fifteen kernels on one input."""
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
    size = (2 * h + 1, max(1, wdt - 1))  # up along H, down along W (not a whole ratio)
    gyi = rng.standard_normal((n, c) + size).astype(x.dtype)
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
        "interpolate_forward": (x, size, "bilinear", False, None),
        "interpolate_backward": (gyi, x.shape, "bilinear", False, None),
    }


def fused_kernel_calls(x, rng):
    """The BatchNorm kernels with the ReLU6 (or ReLU) fused: {label: (kernel name, args, kwargs)}.

    gamma and beta are drawn wide (outputs land below 0, inside (0, 6) and above 6)
    so that the clamp and the backward's mask both matter."""
    c = x.shape[1]
    f = x.dtype.type
    g = (rng.standard_normal(c) * 4).astype(x.dtype)
    b = (rng.standard_normal(c) + 3).astype(x.dtype)
    gy = rng.standard_normal(x.shape).astype(x.dtype)
    mean, invstd = x.mean(axis=(0, 2, 3)), (1 / np.sqrt(x.var(axis=(0, 2, 3)) + f(EPS))).astype(x.dtype)
    var = rng.uniform(0.1, 2.0, c).astype(x.dtype)
    fused, relu = {"relu6": True}, {"relu": True}
    return {
        "batch_norm_forward_train[relu6]": ("batch_norm_forward_train", (x, g, b, EPS), fused),
        "batch_norm_backward_train[relu6]": ("batch_norm_backward_train",
                                             (gy, x, mean, invstd, g, b), fused),
        "batch_norm_forward_train[relu]": ("batch_norm_forward_train", (x, g, b - 3, EPS), relu),
        "batch_norm_backward_train[relu]": ("batch_norm_backward_train",
                                            (gy, x, mean, invstd, g, b - 3), relu),
        "batch_norm_forward_eval[relu6]": ("batch_norm_forward_eval", (x, mean, var, g, b, EPS), fused),
    }


def bn_eval_params(rng, c, dtype, relu6):
    """BatchNorm in eval mode as the fused inference kernels take it: (mean, var, weight, bias,
    eps, relu6), with gamma and beta wide enough that ReLU6 both clamps and passes."""
    return ((rng.standard_normal(c) * 0.5).astype(dtype), rng.uniform(0.5, 2.0, c).astype(dtype),
            (rng.standard_normal(c) * 2).astype(dtype), (rng.standard_normal(c) + 2).astype(dtype),
            EPS, relu6)


def fused_inference_calls(x, rng, stride=1, expansion=3, co=5):
    """{label: (kernel name, args)}: the fused kernels of inference (a convolution with its
    BatchNorm, both gradients of a 1x1 convolution, a whole inverted residual block with and
    without expansion) on input x (N, C, H, W), 3x3 filters with padding 1."""
    n, c, h, w = x.shape
    dtype, s, ch = x.dtype, (stride, stride), c * expansion

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    wp = r(co, c, 1, 1)
    return {
        "conv2d_bn_eval": ("conv2d_bn_eval", (x, r(co, c, 3, 3), s, (1, 1),
                                              bn_eval_params(rng, co, dtype, True))),
        "depthwise_conv2d_bn_eval": ("depthwise_conv2d_bn_eval", (
            x, r(c, 1, 3, 3), s, (1, 1), bn_eval_params(rng, c, dtype, True))),
        "pointwise_conv2d_bn_eval": ("pointwise_conv2d_bn_eval", (
            x, wp, bn_eval_params(rng, co, dtype, False))),
        "pointwise_conv2d_backward": ("pointwise_conv2d_backward", (r(n, co, h, w), x, wp)),
        "inverted_residual_eval": ("inverted_residual_eval", (
            x, (r(ch, c, 1, 1), bn_eval_params(rng, ch, dtype, True)),
            (r(ch, 1, 3, 3), bn_eval_params(rng, ch, dtype, True)),
            (r(c, ch, 1, 1), bn_eval_params(rng, c, dtype, False)), stride, stride == 1)),
        "inverted_residual_eval without expansion": ("inverted_residual_eval", (
            x, None, (r(c, 1, 3, 3), bn_eval_params(rng, c, dtype, True)),
            (r(co, c, 1, 1), bn_eval_params(rng, co, dtype, False)), stride, False)),
    } if ho * wo else {}


def stage_problem(shape, stride, rng, dtype=np.float64):
    """(e, bn1, w_dw, bn2, gh): a depthwise stage in training on e (N, C, H, W): BatchNorm
    (weight, bias, eps) of the expansion and of the depthwise output, the 3x3 filter, and a
    random upstream gradient of the stage's output."""
    n, c, h, w = shape
    e = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    bn1 = (rng.uniform(0.5, 2.0, c).astype(dtype), rng.standard_normal(c).astype(dtype), 1e-5)
    w_dw = rng.standard_normal((c, 1, 3, 3)).astype(dtype)
    bn2 = (rng.uniform(0.5, 2.0, c).astype(dtype), rng.uniform(0.0, 2.0, c).astype(dtype), 1e-3)
    gh = rng.standard_normal((n, c, (h - 1) // stride + 1, (w - 1) // stride + 1)).astype(dtype)
    return e, bn1, w_dw, bn2, gh


def run_stage(kset, e, bn1, w_dw, stride, bn2, gh):
    """The stage's forward, then its backward, with the kernel set ``kset``:
    ((h, d, mean1, invstd1, mean2, invstd2), (dL/de, dL/dweight1, dL/dbias1, dL/dw_dw,
    dL/dweight2, dL/dbias2)). ``a`` goes from the forward to the backward as given."""
    h, a, d, mean1, invstd1, mean2, invstd2 = kset.depthwise_stage_forward_train(
        e, bn1, w_dw, stride, bn2)
    grads = kset.depthwise_stage_backward_train(
        gh, e, a, d, (bn1[0], bn1[1], mean1, invstd1), w_dw, stride,
        (bn2[0], bn2[1], mean2, invstd2))
    return (h, d, mean1, invstd1, mean2, invstd2), grads


@contextlib.contextmanager
def channels_last_max(pixels):
    """Run the numba set with ``CHANNELS_LAST_MAX`` of kernels/numba/layout.py set to
    ``pixels``: 0 sends every plane through the NCHW kernels, 10**9 every plane through the
    channels-last ones."""
    from tinymbv2.kernels.numba import layout

    saved = layout.CHANNELS_LAST_MAX
    layout.CHANNELS_LAST_MAX = pixels
    try:
        yield
    finally:
        layout.CHANNELS_LAST_MAX = saved


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
