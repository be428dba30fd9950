r"""CUDA kernels for BatchNorm2d: per-channel block reductions and one elementwise pass.

Same names, signatures and answers as [tinymbv2.kernels.reference][];
[CupyKernels][tinymbv2.kernels.cupy.CupyKernels] takes them as its kernels. x is
(N, C, H, W), so channel c's $M = N H W$ values lie in N runs of $HW$; value
$m = n \cdot HW + r$ of channel c is ``x[(n*C + c)*HW + r]``.

* forward-train: the statistics are sums of $d = x - K$ and $d^2$ with $K$ the
  channel's first value ("shifted data", as the numba set's BatchNorm), in double
  precision even for float32, so $\text{var} = E[d^2] - E[d]^2$ does not cancel
  catastrophically. Grid (C, S): block (c, s) sums its slice of channel c (fixed order,
  then a fixed tree, see ``common``); a second kernel, one thread per channel,
  adds the S partials in order and writes $\text{mean} = K + E[d]$ and
  $\text{invstd} = 1 / \sqrt{\max(\text{var}, 0) + \epsilon}$. Then one elementwise pass
  ``y = (x - mean) * invstd * weight + bias``.
* backward-train: the same reduction for $\sum g_y$ and $\sum g_y (x - \text{mean})$,
  giving $g_\beta = \sum g_y$, $g_\gamma = \text{invstd} \sum g_y (x - \text{mean})$ and, per
  channel, the coefficients of
  $g_x = \gamma\,\text{invstd}\,(g_y - g_\beta/M - \hat{x}\,g_\gamma/M)$; then one
  elementwise pass for gx.
* forward-eval: one elementwise pass, ``y = (x - mean) * (weight / sqrt(var + eps)) + bias``.
* ``relu6=True`` (BatchNorm fused with the ReLU6 after it, as in the numba set):
  here composed of whole-array passes: y clamped in place; in the backward, the
  BatchNorm output recomputed by the forward's own kernel (so bit-identical) and
  gy zeroed where it is outside (0, 6). ``relu=True`` (the heads' ReLU) is the same
  clamp with the upper bound at infinity.

No floating-point atomics anywhere: every run gives bit-identical results.
"""
from __future__ import annotations

import cupy as cp
import numpy as np

from ..checks import batch_norm_args, clamp_bound, relu6_bias
from .common import BLOCK, Kernels, device_arrays, i32, splits

_SRC = r"""
// part[(c*S + s)*2 + {0, 1}] = slice s of channel c: sums of d = x - K and d^2.
template <typename T>
__global__ void bn_stats(const T* x, double* part, int C, int HW, int M, int chunk) {
    __shared__ double buf[BLOCK];
    int c = blockIdx.x, s = blockIdx.y, S = gridDim.y;
    double k = (double)x[(long long)c * HW];        // n = 0, r = 0: the channel's first value
    long long m0 = (long long)s * chunk;            // 64-bit: s * chunk may pass M
    int m1 = (int)(m0 + chunk < M ? m0 + chunk : M);
    double s1 = 0.0, s2 = 0.0;
    for (int m = (int)(m0 < M ? m0 : M) + threadIdx.x; m < m1; m += BLOCK) {
        int n = m / HW, r = m - n * HW;
        double d = (double)x[((long long)n * C + c) * HW + r] - k;
        s1 += d;
        s2 += d * d;
    }
    s1 = block_sum(s1, buf);
    s2 = block_sum(s2, buf);
    if (threadIdx.x == 0) {
        part[((long long)c * S + s) * 2] = s1;
        part[((long long)c * S + s) * 2 + 1] = s2;
    }
}

// One thread per channel: mean and invstd from the S partial sums, added in order.
template <typename T>
__global__ void bn_stats_finish(const T* x, const double* part, T* mean, T* invstd, int C,
                                int HW, int M, int S, double eps) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double s1 = 0.0, s2 = 0.0;
    for (int s = 0; s < S; ++s) {
        s1 += part[((long long)c * S + s) * 2];
        s2 += part[((long long)c * S + s) * 2 + 1];
    }
    double d = s1 / (double)M;
    double var = s2 / (double)M - d * d;
    if (var < 0.0) var = 0.0;
    mean[c] = (T)((double)x[(long long)c * HW] + d);
    invstd[c] = (T)(1.0 / sqrt(var + eps));
}

// part[(c*S + s)*2 + {0, 1}] = slice s of channel c: sums of gy and gy * (x - mean).
template <typename T>
__global__ void bn_grad(const T* gy, const T* x, const T* mean, double* part, int C,
                        int HW, int M, int chunk) {
    __shared__ double buf[BLOCK];
    int c = blockIdx.x, s = blockIdx.y, S = gridDim.y;
    double mu = (double)mean[c];
    long long m0 = (long long)s * chunk;
    int m1 = (int)(m0 + chunk < M ? m0 + chunk : M);
    double s1 = 0.0, s2 = 0.0;
    for (int m = (int)(m0 < M ? m0 : M) + threadIdx.x; m < m1; m += BLOCK) {
        int n = m / HW, r = m - n * HW;
        long long at = ((long long)n * C + c) * HW + r;
        double g = (double)gy[at];
        s1 += g;
        s2 += g * ((double)x[at] - mu);
    }
    s1 = block_sum(s1, buf);
    s2 = block_sum(s2, buf);
    if (threadIdx.x == 0) {
        part[((long long)c * S + s) * 2] = s1;
        part[((long long)c * S + s) * 2 + 1] = s2;
    }
}

// One thread per channel: gweight, gbias and coef (3, C) = (weight*invstd, gbias/M, gweight/M).
template <typename T>
__global__ void bn_grad_finish(const double* part, const T* invstd, const T* weight, T* gweight,
                               T* gbias, T* coef, int C, int M, int S) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double sg = 0.0, sgx = 0.0;
    for (int s = 0; s < S; ++s) {
        sg += part[((long long)c * S + s) * 2];
        sgx += part[((long long)c * S + s) * 2 + 1];
    }
    double istd = (double)invstd[c];
    double gw = sgx * istd;                       // sum gy * xhat
    gbias[c] = (T)sg;
    gweight[c] = (T)gw;
    coef[c] = (T)((double)weight[c] * istd);
    coef[C + c] = (T)(sg / (double)M);
    coef[2 * C + c] = (T)(gw / (double)M);
}
"""

_K = Kernels(_SRC, ["bn_stats", "bn_stats_finish", "bn_grad", "bn_grad_finish"])

# Elementwise passes: ``i`` is the C-order index of the output, so the channel of
# element i of an (N, C, H, W) array is (i / (H*W)) % C (32-bit: sizes are checked
# to fit by ``device_arrays``).
_apply_train = cp.ElementwiseKernel(
    "T x, raw T mean, raw T invstd, raw T weight, raw T bias, int32 plane, int32 channels",
    "T y",
    "const int c = ((int)i / plane) % channels; y = (x - mean[c]) * invstd[c] * weight[c] + bias[c];",
    "tinymbv2_bn_apply_train",
)
_apply_backward = cp.ElementwiseKernel(
    "T gy, T x, raw T mean, raw T invstd, raw T coef, int32 plane, int32 channels",
    "T gx",
    "const int c = ((int)i / plane) % channels;"
    "const T xhat = (x - mean[c]) * invstd[c];"
    "gx = coef[c] * (gy - coef[channels + c] - xhat * coef[2 * channels + c]);",
    "tinymbv2_bn_apply_backward",
)
_apply_eval = cp.ElementwiseKernel(
    "T x, raw T mean, raw T var, raw T weight, raw T bias, float64 eps, int32 plane, int32 channels",
    "T y",
    "const int c = ((int)i / plane) % channels;"
    "const T scale = weight[c] / sqrt(var[c] + (T)eps);"
    "y = (x - mean[c]) * scale + bias[c];",
    "tinymbv2_bn_apply_eval",
)


def _per_channel_launch(kernel, c, args):
    """One thread per channel."""
    kernel((-(-c // BLOCK),), (BLOCK,), args)


def batch_norm_forward_train(x, weight, bias, eps, relu6=False, relu=False):
    r"""BatchNorm in training mode, with the biased batch variance.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        x: The input (N, C, H, W).
        weight: $\gamma$ (C,).
        bias: $\beta$ (C,).
        eps: $\epsilon$, added to the variance.
        relu6: Clamp y to [0, 6].
        relu: Clamp y to [0, inf).

    Returns:
        ``(y, mean, invstd)``: y like x, the others (C,).
    """
    fn = "batch_norm_forward_train"
    clamp, top = clamp_bound(fn, relu6, relu)
    dtype, x, weight, bias = device_arrays(fn, x=x, weight=weight, bias=bias)
    batch_norm_args(fn, x, train=True, weight=weight, bias=bias)
    n, c, h, wd = x.shape
    hw, m = h * wd, n * h * wd
    if c == 0:
        return cp.empty_like(x), cp.empty(0, dtype), cp.empty(0, dtype)
    s, chunk = splits(c, m)
    part = cp.empty((c, s, 2), cp.float64)
    mean, invstd = cp.empty(c, dtype), cp.empty(c, dtype)
    _K["bn_stats", dtype]((c, s), (BLOCK,), (x, part, i32(c), i32(hw), i32(m), i32(chunk)))
    _per_channel_launch(
        _K["bn_stats_finish", dtype], c,
        (x, part, mean, invstd, i32(c), i32(hw), i32(m), i32(s), np.float64(eps)),
    )
    y = _apply_train(x, mean, invstd, weight, bias, hw, c)
    if clamp:
        cp.clip(y, 0, top, out=y)
    return y, mean, invstd


def batch_norm_backward_train(gy, x, mean, invstd, weight, bias=None, relu6=False, relu=False):
    r"""BatchNorm's gradients in training mode.

    $g_x = \gamma\,\text{invstd}\,(g_y - g_\beta/M - \hat{x}\,g_\gamma/M)$. The contract is
    ``ReferenceKernels``' kernel of the same name.

    Args:
        gy: $\partial L / \partial y$ (N, C, H, W).
        x: The input (N, C, H, W).
        mean: The per-channel mean (C,).
        invstd: $1/\sqrt{\sigma^2 + \epsilon}$ per channel (C,).
        weight: $\gamma$ (C,).
        bias: $\beta$ (C,); needed with ``relu6`` or ``relu``.
        relu6: The forward applied ReLU6: gy is first zeroed where it was flat.
        relu: The forward applied ReLU: the same, with no upper bound.

    Returns:
        ``(gx, gweight, gbias)``.
    """
    fn = "batch_norm_backward_train"
    clamp, top = clamp_bound(fn, relu6, relu)
    if clamp and bias is None:
        relu6_bias(fn, relu6, bias, weight, relu)  # raises: the mask needs the bias
    extra = dict(bias=bias) if clamp else {}
    dtype, gy, x, mean, invstd, weight, *rest = device_arrays(
        fn, gy=gy, x=x, mean=mean, invstd=invstd, weight=weight, **extra
    )
    batch_norm_args(fn, x, train=True, mean=mean, invstd=invstd, weight=weight)
    if gy.shape != x.shape:
        raise ValueError(f"{fn}: gy must have the shape of x {x.shape}, got {gy.shape}")
    n, c, h, wd = x.shape
    hw, m = h * wd, n * h * wd
    if c == 0:
        return cp.empty_like(x), cp.empty(0, dtype), cp.empty(0, dtype)
    if clamp:
        z = _apply_train(x, mean, invstd, weight, rest[0], hw, c)  # the forward's BatchNorm output
        gy = cp.where((z > 0) & (z < top), gy, gy.dtype.type(0))
    s, chunk = splits(c, m)
    part = cp.empty((c, s, 2), cp.float64)
    gweight, gbias, coef = cp.empty(c, dtype), cp.empty(c, dtype), cp.empty(3 * c, dtype)
    _K["bn_grad", dtype]((c, s), (BLOCK,), (gy, x, mean, part, i32(c), i32(hw), i32(m), i32(chunk)))
    _per_channel_launch(
        _K["bn_grad_finish", dtype], c,
        (part, invstd, weight, gweight, gbias, coef, i32(c), i32(m), i32(s)),
    )
    gx = _apply_backward(gy, x, mean, invstd, coef, hw, c)
    return gx, gweight, gbias


def batch_norm_forward_eval(x, mean, var, weight, bias, eps, relu6=False):
    r"""BatchNorm in eval mode, one elementwise pass.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``. The contract is
    ``ReferenceKernels``' kernel of the same name.

    Args:
        x: The input (N, C, H, W).
        mean: The per-channel mean (C,).
        var: The per-channel variance (C,).
        weight: $\gamma$ (C,).
        bias: $\beta$ (C,).
        eps: $\epsilon$, added to the variance.
        relu6: Clamp y to [0, 6].

    Returns:
        y, like x.
    """
    fn = "batch_norm_forward_eval"
    dtype, x, mean, var, weight, bias = device_arrays(
        fn, x=x, mean=mean, var=var, weight=weight, bias=bias
    )
    batch_norm_args(fn, x, mean=mean, var=var, weight=weight, bias=bias)
    n, c, h, wd = x.shape
    y = _apply_eval(x, mean, var, weight, bias, float(eps), h * wd, c)
    if relu6:
        cp.clip(y, 0, 6, out=y)
    return y
