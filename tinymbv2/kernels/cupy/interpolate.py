r"""CUDA resizing, bilinear and nearest: a gather kernel forward, cuBLAS backward.

Same names, signatures and answers as [tinymbv2.kernels.reference][];
[CupyKernels][tinymbv2.kernels.cupy.CupyKernels] takes them as its kernels. The taps and
weights of each axis are [interpolation_taps][tinymbv2.kernels.reference.interpolation_taps]
computed on the GPU (the same formulas, float32 for nearest as PyTorch).

* forward: one thread per output element reads its (up to) four input pixels,
  $y_{o,q} = l^h_0 (l^w_0 x_{h_0 w_0} + l^w_1 x_{h_0 w_1}) + l^h_1 (\dots)$, the order of
  the numba loop;
* backward: the scatter of the gradient to those pixels would need atomic additions
  (several outputs read one input), whose order changes from run to run. Written
  instead as the reference writes it, $g_x = A_h^T\, g_y\, A_w$, two matrix products
  on cuBLAS, deterministic.
"""
from __future__ import annotations

import cupy as cp

from ..checks import interpolate_args
from ..reference import interpolation_matrices, interpolation_taps
from .common import Kernels, device_arrays, i32, launch

_SRC = r"""
template <typename T>
__global__ void resize_gather(const T* x, T* y, int P, int H, int W, int Ho, int Wo,
                              const int* h0, const int* h1, const T* lh0, const T* lh1,
                              const int* w0, const int* w1, const T* lw0, const T* lw1) {
    int total = P * Ho * Wo;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += blockDim.x * gridDim.x) {
        int q = e % Wo, o = (e / Wo) % Ho, p = e / (Wo * Ho);
        const T* xp = x + (long long)p * H * W;
        int a = h0[o], b = h1[o], c = w0[q], d = w1[q];
        y[e] = lh0[o] * (lw0[q] * xp[a * W + c] + lw1[q] * xp[a * W + d])
             + lh1[o] * (lw0[q] * xp[b * W + c] + lw1[q] * xp[b * W + d]);
    }
}
"""
_KERNELS = Kernels(_SRC, ["resize_gather"])


def interpolate_forward(x, size, mode, align_corners, scales):
    """Resize the planes of x (N, C, H, W) to ``size``; see ``ReferenceKernels.interpolate_forward``.

    Args:
        x: The input (N, C, H, W), a CuPy array.
        size: (Ho, Wo).
        mode: ``"bilinear"`` or ``"nearest"``.
        align_corners: Bilinear's source formula.
        scales: The caller's (scale_h, scale_w), or None.

    Returns:
        y (N, C, Ho, Wo).
    """
    fn = "interpolate_forward"
    dtype, x = device_arrays(fn, x=x)
    interpolate_args(fn, x, size)
    n, c, h, w = x.shape
    ho, wo = (int(s) for s in size)
    y = cp.empty((n, c, ho, wo), dtype)
    taps = []
    for n_in, n_out, s in ((h, ho, scales[0] if scales else None), (w, wo, scales[1] if scales else None)):
        i0, i1, l0, l1 = interpolation_taps(cp, n_in, n_out, mode, align_corners, s, dtype)
        taps += [i0.astype(cp.int32), i1.astype(cp.int32), l0, l1]
    launch(_KERNELS[("resize_gather", dtype)], y.size,
           (x, y, i32(n * c), i32(h), i32(w), i32(ho), i32(wo), *taps))
    return y


def interpolate_backward(gy, x_shape, mode, align_corners, scales):
    """The gradient of ``interpolate_forward`` with respect to x: $A_h^T g_y A_w$ on cuBLAS.

    Args:
        gy: The output's gradient (N, C, Ho, Wo), a CuPy array.
        x_shape: The input's shape (N, C, H, W).
        mode: As in the forward.
        align_corners: As in the forward.
        scales: As in the forward.

    Returns:
        gx (N, C, H, W).
    """
    fn = "interpolate_backward"
    dtype, gy = device_arrays(fn, gy=gy)
    interpolate_args(fn, gy, gy.shape[2:], x_shape)
    a_h, a_w = interpolation_matrices(cp, x_shape[2:], gy.shape[2:], mode, align_corners, scales,
                                      dtype)
    return cp.ascontiguousarray(cp.matmul(cp.matmul(a_h.T, gy), a_w))
