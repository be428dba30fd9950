"""CUDA kernels for convolution: depthwise (hand-written), dense and pointwise (cuBLAS).

Same names, signatures and answers as [tinymbv2.kernels.reference][] (the
interface is in [tinymbv2.kernels][]); [CupyKernels][tinymbv2.kernels.cupy.CupyKernels]
takes them as its kernels.
Shapes NCHW, C-contiguous; ``Ho = (H + 2ph - dh*(kh - 1) - 1) // sh + 1``. Output pixel
(oh, ow) with tap (i, j) reads input pixel ``(oh*sh + i*dh - ph, ow*sw + j*dw - pw)``, with
(dh, dw) the dilation (1 but in an atrous convolution); outside the input that is the zero
padding, which no kernel materialises.

Depthwise, ``w`` (C, 1, kh, kw):

* forward: one thread per output element,
  ``y[n,c,oh,ow] = sum_{i,j} w[c,i,j] * x[n,c,oh*sh+i*dh-ph, ow*sw+j*dw-pw]``;
* backward-input: one thread per *input* element gathers every output that read
  it -- tap i reached row h from output row ``oh = (h + ph - i*dh) / sh`` when that is a
  whole number in [0, Ho) -- so each thread writes only its own gx (no atomics);
* backward-weight: ``gw[c,i,j] = sum_{n,oh,ow} gy[n,c,oh,ow] * x[n,c,oh*sh+i*dh-ph, ...]``,
  a sum of ``M = N*Ho*Wo`` products per (channel, tap): blocks of threads sum slices
  of it in double precision in a fixed order (see ``common``), then the
  slices' partial sums are added in order. Deterministic, no float atomics.

Dense (groups 1, the 3x3 stem) is im2col + GEMM, as in the numba set's:
``cols[n, (c,i,j), (oh,ow)]`` = the input pixel tap (i, j) of channel c reads for
output (oh, ow) (a hand-written kernel, one thread per element), then
``y[n] = W (Co, K) @ cols[n]``, ``gw = sum_n gy[n] @ cols[n].T`` and
``gcols[n] = W.T @ gy[n]`` folded back by col2im (again one thread per input
pixel, gathering). The GEMMs are cuBLAS through ``gemm``.

Pointwise (1x1) needs no im2col: x[n] seen as ``(Ci, H*W)`` *is* the column matrix,
so forward, backward-input and backward-weight are one strided-batched cuBLAS
GEMM each on the arrays as they lie (the weight shared with batch stride 0, the
transposes done by cuBLAS, not by copies); the weight gradient then sums the N
per-image (Co, Ci) products in a fixed order.
"""
from __future__ import annotations

import cupy as cp

from ..checks import conv_geometry, dilation_pair, grad_out_shape, pointwise_args, pointwise_weight_args
from .common import BLOCK, Kernels, device_arrays, i32, launch, splits
from .gemm import batched_matmul

_SRC = r"""
// Geometry shared by every kernel: input (H, W), output (Ho, Wo), kernel (kh, kw),
// stride (sh, sw), padding (ph, pw), dilation (dh, dw): tap (i, j) sits i*dh rows and
// j*dw columns from the window's corner.
#define GEOM int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw, \
             int dh, int dw
#define GRID_STRIDE(idx, total) \
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < (total); \
         idx += (long long)gridDim.x * blockDim.x)

// y (N, C, Ho, Wo): one thread per output element.
template <typename T>
__global__ void dw_forward(const T* x, const T* w, T* y, int total, int C, GEOM) {
    GRID_STRIDE(idx, total) {
        int e = (int)idx;
        int ow = e % Wo, t = e / Wo;
        int oh = t % Ho;
        t /= Ho;                                   // t = n*C + c
        int c = t % C;
        const T* xc = x + (long long)t * H * W;
        const T* wc = w + (long long)c * kh * kw;
        int h0 = oh * sh - ph, w0 = ow * sw - pw;
        T acc = 0;
        for (int i = 0; i < kh; ++i) {
            int h = h0 + i * dh;
            if (h < 0 || h >= H) continue;
            for (int j = 0; j < kw; ++j) {
                int v = w0 + j * dw;
                if (v < 0 || v >= W) continue;
                acc += wc[i * kw + j] * xc[h * W + v];
            }
        }
        y[idx] = acc;
    }
}

// gx (N, C, H, W): one thread per input element, gathering the outputs that read it.
template <typename T>
__global__ void dw_backward_input(const T* gy, const T* w, T* gx, int total, int C, GEOM) {
    GRID_STRIDE(idx, total) {
        int e = (int)idx;
        int v = e % W, t = e / W;
        int h = t % H;
        t /= H;                                    // t = n*C + c
        int c = t % C;
        const T* gc = gy + (long long)t * Ho * Wo;
        const T* wc = w + (long long)c * kh * kw;
        T acc = 0;
        for (int i = 0; i < kh; ++i) {
            int th = h + ph - i * dh;              // = oh * sh for the output row that used tap i
            if (th < 0) break;                     // th only decreases with i
            if (th % sh) continue;
            int oh = th / sh;
            if (oh >= Ho) continue;
            for (int j = 0; j < kw; ++j) {
                int tw = v + pw - j * dw;
                if (tw < 0) break;
                if (tw % sw) continue;
                int ow = tw / sw;
                if (ow >= Wo) continue;
                acc += wc[i * kw + j] * gc[oh * Wo + ow];
            }
        }
        gx[idx] = acc;
    }
}

// partial[row * S + s] = the part s of sum_{n,oh,ow} gy * x for row = c*kh*kw + i*kw + j.
// grid (C*kh*kw, S); block s covers m = n*Ho*Wo + oh*Wo + ow in [s*chunk, (s+1)*chunk).
template <typename T>
__global__ void dw_backward_weight(const T* gy, const T* x, double* partial, int C, GEOM,
                                   int M, int chunk) {
    __shared__ double buf[BLOCK];
    int row = blockIdx.x, s = blockIdx.y, S = gridDim.y;
    int c = row / (kh * kw), tap = row % (kh * kw);
    int i = tap / kw, j = tap % kw;
    int P = Ho * Wo;
    long long m0 = (long long)s * chunk;           // 64-bit: s * chunk may pass M
    int m1 = (int)(m0 + chunk < M ? m0 + chunk : M);
    double acc = 0.0;
    for (int m = (int)(m0 < M ? m0 : M) + threadIdx.x; m < m1; m += BLOCK) {
        int n = m / P, p = m - n * P;
        int oh = p / Wo, ow = p - oh * Wo;
        int h = oh * sh + i * dh - ph, v = ow * sw + j * dw - pw;
        if (h >= 0 && h < H && v >= 0 && v < W) {
            long long plane = (long long)n * C + c;
            acc += (double)gy[plane * P + p] * (double)x[(plane * H + h) * W + v];
        }
    }
    double total = block_sum(acc, buf);
    if (threadIdx.x == 0) partial[(long long)row * S + s] = total;
}

// cols (N, C*kh*kw, Ho*Wo): one thread per element; 0 where the tap reads padding.
template <typename T>
__global__ void im2col(const T* x, T* cols, int total, int C, GEOM) {
    int P = Ho * Wo, K = C * kh * kw;
    GRID_STRIDE(idx, total) {
        int e = (int)idx;
        int p = e % P, t = e / P;
        int k = t % K;
        long long n = t / K;
        int j = k % kw, i = (k / kw) % kh, c = k / (kh * kw);
        int oh = p / Wo, ow = p % Wo;
        int h = oh * sh + i * dh - ph, v = ow * sw + j * dw - pw;
        cols[idx] = (h >= 0 && h < H && v >= 0 && v < W) ? x[((n * C + c) * H + h) * W + v] : T(0);
    }
}

// gx (N, C, H, W) from gcols (N, C*kh*kw, Ho*Wo): one thread per input pixel, gathering.
template <typename T>
__global__ void col2im(const T* gcols, T* gx, int total, int C, GEOM) {
    long long P = (long long)Ho * Wo;
    int K = C * kh * kw;
    GRID_STRIDE(idx, total) {
        int e = (int)idx;
        int v = e % W, t = e / W;
        int h = t % H;
        t /= H;
        int c = t % C;
        long long n = t / C;
        const T* g = gcols + n * K * P;
        T acc = 0;
        for (int i = 0; i < kh; ++i) {
            int th = h + ph - i * dh;
            if (th < 0) break;
            if (th % sh) continue;
            int oh = th / sh;
            if (oh >= Ho) continue;
            for (int j = 0; j < kw; ++j) {
                int tw = v + pw - j * dw;
                if (tw < 0) break;
                if (tw % sw) continue;
                int ow = tw / sw;
                if (ow >= Wo) continue;
                acc += g[((c * kh + i) * kw + j) * P + oh * Wo + ow];
            }
        }
        gx[idx] = acc;
    }
}
"""

_K = Kernels(_SRC, ["dw_forward", "dw_backward_input", "dw_backward_weight", "im2col", "col2im"])


def _geom(x_shape, w_shape, stride, padding, out_hw, dilation):
    """The GEOM arguments of every kernel, as 32-bit ints."""
    (sh, sw), (ph, pw), (ho, wo), (dh, dw) = stride, padding, out_hw, dilation
    return tuple(i32(v) for v in (x_shape[2], x_shape[3], ho, wo, w_shape[2], w_shape[3], sh, sw,
                                  ph, pw, dh, dw))


# -------------------------------------------------------- depthwise convolution
def depthwise_conv2d_forward(x, w, stride, padding, dilation=1):
    """Depthwise convolution, one thread per output.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        x: The input (N, C, H, W).
        w: The weight (C, 1, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.
        dilation: (dh, dw), the spacing of the taps.

    Returns:
        y (N, C, Ho, Wo).
    """
    fn = "depthwise_conv2d_forward"
    dtype, x, w = device_arrays(fn, x=x, w=w)
    stride, padding, (ho, wo) = conv_geometry(fn, x.shape, w.shape, stride, padding, depthwise=True,
                                               dilation=dilation)
    dilation = dilation_pair(fn, dilation)
    n, c = x.shape[:2]
    y = cp.empty((n, c, ho, wo), dtype)
    geom = _geom(x.shape, w.shape, stride, padding, (ho, wo), dilation)
    launch(_K["dw_forward", dtype], y.size, (x, w, y, i32(y.size), i32(c)) + geom)
    return y


def depthwise_conv2d_backward_input(gy, w, x_shape, stride, padding, dilation=1):
    r"""The depthwise convolution's input gradient, one thread per input pixel.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        gy: $\partial L / \partial y$ (N, C, Ho, Wo).
        w: The weight (C, 1, kh, kw).
        x_shape: The input's shape (N, C, H, W).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.
        dilation: (dh, dw), the spacing of the taps.

    Returns:
        gx, of ``x_shape``.
    """
    fn = "depthwise_conv2d_backward_input"
    dtype, gy, w = device_arrays(fn, gy=gy, w=w)
    x_shape = tuple(int(s) for s in x_shape)
    stride, padding, (ho, wo) = conv_geometry(fn, x_shape, w.shape, stride, padding, depthwise=True,
                                               dilation=dilation)
    dilation = dilation_pair(fn, dilation)
    grad_out_shape(fn, gy.shape, (x_shape[0], x_shape[1], ho, wo))
    gx = cp.empty(x_shape, dtype)
    geom = _geom(x_shape, w.shape, stride, padding, (ho, wo), dilation)
    launch(_K["dw_backward_input", dtype], gx.size, (gy, w, gx, i32(gx.size), i32(x_shape[1])) + geom)
    return gx


def depthwise_conv2d_backward_weight(gy, x, w_shape, stride, padding, dilation=1):
    r"""The depthwise convolution's weight gradient, by block reductions.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        gy: $\partial L / \partial y$ (N, C, Ho, Wo).
        x: The input (N, C, H, W).
        w_shape: (C, 1, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.
        dilation: (dh, dw), the spacing of the taps.

    Returns:
        gw, of ``w_shape``.
    """
    fn = "depthwise_conv2d_backward_weight"
    dtype, gy, x = device_arrays(fn, gy=gy, x=x)
    w_shape = tuple(int(s) for s in w_shape)
    stride, padding, (ho, wo) = conv_geometry(fn, x.shape, w_shape, stride, padding, depthwise=True,
                                               dilation=dilation)
    dilation = dilation_pair(fn, dilation)
    grad_out_shape(fn, gy.shape, (x.shape[0], x.shape[1], ho, wo))
    n, c = x.shape[:2]
    rows, m = c * w_shape[2] * w_shape[3], n * ho * wo
    if m == 0:
        return cp.zeros(w_shape, dtype)
    s, chunk = splits(rows, m)
    partial = cp.empty((rows, s), cp.float64)
    geom = _geom(x.shape, w_shape, stride, padding, (ho, wo), dilation)
    _K["dw_backward_weight", dtype](
        (rows, s), (BLOCK,), (gy, x, partial, i32(c)) + geom + (i32(m), i32(chunk))
    )
    # the S partial sums of each row, added in a fixed order (no atomics anywhere)
    return partial.sum(axis=1).astype(dtype).reshape(w_shape)


# ------------------------------------------------------------ dense convolution
def _im2col(x, w_shape, stride, padding, out_hw, dilation):
    """x (N, C, H, W) -> cols ``(N, C*kh*kw, Ho*Wo)``."""
    n, c = x.shape[:2]
    k, p = c * w_shape[2] * w_shape[3], out_hw[0] * out_hw[1]
    cols = cp.empty((n, k, p), x.dtype)
    geom = _geom(x.shape, w_shape, stride, padding, out_hw, dilation)
    launch(_K["im2col", x.dtype], cols.size, (x, cols, i32(cols.size), i32(c)) + geom)
    return cols


def conv2d_forward(x, w, stride, padding, dilation=1):
    """Dense convolution: im2col, then ``y[n] = W @ cols[n]``.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        x: The input (N, Ci, H, W).
        w: The weight (Co, Ci, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.
        dilation: (dh, dw), the spacing of the taps.

    Returns:
        y (N, Co, Ho, Wo).
    """
    fn = "conv2d_forward"
    dtype, x, w = device_arrays(fn, x=x, w=w)
    stride, padding, (ho, wo) = conv_geometry(fn, x.shape, w.shape, stride, padding,
                                               dilation=dilation)
    dilation = dilation_pair(fn, dilation)
    co = w.shape[0]
    cols = _im2col(x, w.shape, stride, padding, (ho, wo), dilation)
    y = batched_matmul(w.reshape(co, -1), cols)  # (Co, K) @ (N, K, P) -> (N, Co, P)
    return y.reshape(x.shape[0], co, ho, wo)


def conv2d_backward_input(gy, w, x_shape, stride, padding, dilation=1):
    r"""Dense convolution's input gradient: ``gcols[n] = W.T @ gy[n]``, then col2im.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        gy: $\partial L / \partial y$ (N, Co, Ho, Wo).
        w: The weight (Co, Ci, kh, kw).
        x_shape: The input's shape (N, C, H, W).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.
        dilation: (dh, dw), the spacing of the taps.

    Returns:
        gx, of ``x_shape``.
    """
    fn = "conv2d_backward_input"
    dtype, gy, w = device_arrays(fn, gy=gy, w=w)
    x_shape = tuple(int(s) for s in x_shape)
    stride, padding, (ho, wo) = conv_geometry(fn, x_shape, w.shape, stride, padding,
                                               dilation=dilation)
    dilation = dilation_pair(fn, dilation)
    n, ci = x_shape[:2]
    co = w.shape[0]
    grad_out_shape(fn, gy.shape, (n, co, ho, wo))
    gcols = batched_matmul(w.reshape(co, -1), gy.reshape(n, co, ho * wo), trans_a=True)
    gx = cp.empty(x_shape, dtype)
    geom = _geom(x_shape, w.shape, stride, padding, (ho, wo), dilation)
    launch(_K["col2im", dtype], gx.size, (gcols, gx, i32(gx.size), i32(ci)) + geom)
    return gx


def conv2d_backward_weight(gy, x, w_shape, stride, padding, dilation=1):
    r"""Dense convolution's weight gradient: the sum over n of ``gy[n] @ cols[n].T``.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        gy: $\partial L / \partial y$ (N, Co, Ho, Wo).
        x: The input (N, Ci, H, W).
        w_shape: (Co, Ci, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw), zeros on each side.
        dilation: (dh, dw), the spacing of the taps.

    Returns:
        gw, of ``w_shape``.
    """
    fn = "conv2d_backward_weight"
    dtype, gy, x = device_arrays(fn, gy=gy, x=x)
    w_shape = tuple(int(s) for s in w_shape)
    stride, padding, (ho, wo) = conv_geometry(fn, x.shape, w_shape, stride, padding,
                                               dilation=dilation)
    dilation = dilation_pair(fn, dilation)
    n, co = x.shape[0], w_shape[0]
    grad_out_shape(fn, gy.shape, (n, co, ho, wo))
    cols = _im2col(x, w_shape, stride, padding, (ho, wo), dilation)
    per_image = batched_matmul(gy.reshape(n, co, ho * wo), cols, trans_b=True)  # (N, Co, K)
    return per_image.sum(axis=0).reshape(w_shape)


# -------------------------------------------------------- pointwise convolution
def pointwise_conv2d_forward(x, w):
    """1x1 convolution: ``y[n] = W @ x[n]``, one cuBLAS call.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        x: The input (N, Ci, H, W).
        w: The weight (Co, Ci, 1, 1).

    Returns:
        y (N, Co, H, W).
    """
    fn = "pointwise_conv2d_forward"
    dtype, x, w = device_arrays(fn, x=x, w=w)
    pointwise_args(fn, x, "x", w, axis=1)
    n, ci, h, wd = x.shape
    co = w.shape[0]
    return batched_matmul(w.reshape(co, ci), x.reshape(n, ci, h * wd)).reshape(n, co, h, wd)


def pointwise_conv2d_backward_input(gy, w):
    r"""1x1 convolution's input gradient: ``gx[n] = W.T @ gy[n]``.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        gy: $\partial L / \partial y$ (N, Co, H, W).
        w: The weight (Co, Ci, 1, 1).

    Returns:
        gx (N, Ci, H, W).
    """
    fn = "pointwise_conv2d_backward_input"
    dtype, gy, w = device_arrays(fn, gy=gy, w=w)
    pointwise_args(fn, gy, "gy", w, axis=0)
    n, co, h, wd = gy.shape
    ci = w.shape[1]
    gx = batched_matmul(w.reshape(co, ci), gy.reshape(n, co, h * wd), trans_a=True)
    return gx.reshape(n, ci, h, wd)


def pointwise_conv2d_backward_weight(gy, x):
    r"""1x1 convolution's weight gradient: the sum over n of ``gy[n] @ x[n].T``.

    The contract is ``ReferenceKernels``' kernel of the same name.

    Args:
        gy: $\partial L / \partial y$ (N, Co, H, W).
        x: The input (N, Ci, H, W).

    Returns:
        gw (Co, Ci, 1, 1).
    """
    fn = "pointwise_conv2d_backward_weight"
    dtype, gy, x = device_arrays(fn, gy=gy, x=x)
    pointwise_weight_args(fn, gy, x)
    n, co, h, wd = gy.shape
    ci = x.shape[1]
    per_image = batched_matmul(gy.reshape(n, co, h * wd), x.reshape(n, ci, h * wd), trans_b=True)
    return per_image.sum(axis=0).reshape(co, ci, 1, 1)
