"""Per-op speed of the kernels against this machine's limits and against PyTorch.

For each MobileNetV2 kernel at a typical 224 px / batch 8 shape: median time of
forward and backward for tinymbv2-numba and PyTorch, and what the numba kernel
achieves: GFLOP/s for the matrix-like ops (pointwise, stem) against the measured
float32 GEMM rate (the faster of BLAS and the numba set's own), GB/s for the memory-bound ones (depthwise, BatchNorm, the fused
BatchNorm-depthwise-BatchNorm stage of a block) against the measured copy bandwidth.
``python -m benchmarks.ops``.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

import benchmarks.openmp_wait  # noqa: F401  (first: the same OpenMP wait for both contestants)
import torch

from tinymbv2.kernels import kernel_set

K = kernel_set("numba")


def median_time(fn, repeats=7, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_limits():
    """(GEMM GFLOP/s, copy GB/s) measured now, float32. The GEMM rate is the faster of
    NumPy's BLAS and the numba set's own product (``kernels/numba/tile.py``'s register blocks, on
    Numba's threads), on a 1024 x 1024 product that stays in cache."""
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    time.sleep(0.5)  # let threads that PyTorch or BLAS left spinning go to sleep first
    # before BLAS, whose threads spin after it; the best of three medians, since a thread
    # of another pool can still take a core from one of them
    ours = min(median_time(lambda: K.matmul(a, a)) for _ in range(3))
    fastest = min(ours, median_time(lambda: a @ a))
    gemm = 2 * 1024 ** 3 / fastest
    src = np.ones(64 * 2 ** 20 // 4, np.float32)
    dst = np.empty_like(src)
    copy = 2 * src.nbytes / median_time(lambda: np.copyto(dst, src))
    return gemm / 1e9, copy / 1e9


def _cases(quick):
    n = 4 if quick else 8
    r = np.random.default_rng(0)

    def arr(*shape):
        return r.standard_normal(shape).astype(np.float32)

    x_dw, w_dw = arr(n, 96, 112, 112), arr(96, 1, 3, 3)
    x_pw, w_pw = arr(n, 144, 56, 56), arr(24, 144, 1, 1)
    x_st, w_st = arr(n, 3, 224, 224), arr(32, 3, 3, 3)
    x_bn, g_bn, b_bn = arr(n, 96, 112, 112), arr(96), arr(96)
    bn_stats = K.batch_norm_forward_train(x_bn, g_bn, b_bn, 1e-5)[1:]
    saved = {}

    def stage_forward():  # BN + ReLU6, depthwise 3x3 s2, BN + ReLU6 as one kernel
        saved["out"] = K.depthwise_stage_forward_train(x_bn, (g_bn, b_bn, 1e-5), w_dw, 2,
                                                       (g_bn, b_bn, 1e-5))
        return saved["out"][0]

    def stage_backward(y):
        _, a, d, m1, i1, m2, i2 = saved["out"]  # a: None, the fused backward recomputes it
        return K.depthwise_stage_backward_train(y, x_bn, a, d, (g_bn, b_bn, m1, i1), w_dw, 2,
                                                (g_bn, b_bn, m2, i2))

    return [
        ("depthwise 3x3 s2", "GB/s", (x_dw, w_dw), dict(stride=2, padding=1, groups=96),
         lambda: K.depthwise_conv2d_forward(x_dw, w_dw, (2, 2), (1, 1)),
         lambda y: (K.depthwise_conv2d_backward_input(y, w_dw, x_dw.shape, (2, 2), (1, 1)),
                    K.depthwise_conv2d_backward_weight(y, x_dw, w_dw.shape, (2, 2), (1, 1))),
         lambda y: (x_dw.nbytes + y.nbytes)),
        ("pointwise 144->24", "GFLOP/s", (x_pw, w_pw), {},
         lambda: K.pointwise_conv2d_forward(x_pw, w_pw),
         lambda y: (K.pointwise_conv2d_backward_input(y, w_pw),
                    K.pointwise_conv2d_backward_weight(y, x_pw)),
         lambda y: 2 * x_pw.size * w_pw.shape[0]),
        ("stem 3x3 s2", "GFLOP/s", (x_st, w_st), dict(stride=2, padding=1),
         lambda: K.conv2d_forward(x_st, w_st, (2, 2), (1, 1)),
         lambda y: (K.conv2d_backward_input(y, w_st, x_st.shape, (2, 2), (1, 1)),
                    K.conv2d_backward_weight(y, x_st, w_st.shape, (2, 2), (1, 1))),
         lambda y: 2 * y.size * 27),
        ("batch norm (train)", "GB/s", (x_bn, g_bn, b_bn), "bn",
         lambda: K.batch_norm_forward_train(x_bn, g_bn, b_bn, 1e-5)[0],
         None, lambda y: 2 * x_bn.nbytes),
        ("bn + relu6 (train)", "GB/s", (x_bn, g_bn, b_bn), "bn_relu6",
         lambda: K.batch_norm_forward_train(x_bn, g_bn, b_bn, 1e-5, relu6=True)[0],
         lambda y: K.batch_norm_backward_train(y, x_bn, *bn_stats, g_bn, b_bn, relu6=True),
         lambda y: 2 * x_bn.nbytes),
        ("bn+dw s2+bn, fused", "GB/s", (x_bn, w_dw, g_bn, b_bn), "stage",
         stage_forward, stage_backward,
         lambda y: x_bn.nbytes + 2 * y.nbytes),  # reads e, writes d and h
    ]


def _torch_stage(x, w, gamma, beta):
    f = torch.nn.functional
    a = f.relu6(f.batch_norm(x, None, None, gamma, beta, True))
    d = f.conv2d(a, w, None, stride=2, padding=1, groups=x.shape[1])
    return f.relu6(f.batch_norm(d, None, None, gamma, beta, True))


def print_op_table(quick=False):
    gemm, copy = machine_limits()
    print(f"\nper-op (numba kernels, float32); this machine: GEMM {gemm:.0f} GFLOP/s, "
          f"copy {copy:.1f} GB/s")
    print(f"{'op':<20}{'pass':<10}{'numba ms':>10}{'torch ms':>10}{'x torch':>9}{'achieved':>16}")
    for name, unit, arrays, conv_kw, fwd, bwd, work in _cases(quick):
        y = fwd()
        t_fwd = median_time(fwd)
        tx = [torch.from_numpy(a).requires_grad_(True) for a in arrays]
        if conv_kw == "bn":
            tf = lambda: torch.nn.functional.batch_norm(tx[0], None, None, tx[1], tx[2], True)  # noqa: E731
        elif conv_kw == "bn_relu6":
            tf = lambda: torch.nn.functional.relu6(  # noqa: E731
                torch.nn.functional.batch_norm(tx[0], None, None, tx[1], tx[2], True))
        elif conv_kw == "stage":  # PyTorch's three ops
            tf = lambda: _torch_stage(*tx)  # noqa: E731
        else:
            tf = lambda: torch.nn.functional.conv2d(tx[0], tx[1], None, **conv_kw)  # noqa: E731
        with torch.no_grad():
            t_torch = median_time(tf)
        amount = work(y)
        rate = amount / t_fwd / 1e9
        limit = gemm if unit == "GFLOP/s" else copy
        print(f"{name:<20}{'forward':<10}{1e3 * t_fwd:>10.2f}{1e3 * t_torch:>10.2f}"
              f"{t_fwd / t_torch:>9.2f}{rate:>8.1f} {unit} ({rate / limit:.0%})")
        if bwd is not None:
            t_bwd = median_time(lambda: bwd(y))
            ty = tf()
            g = torch.from_numpy(y)
            t_torch_b = median_time(lambda: torch.autograd.grad(ty, tx, g, retain_graph=True))
            print(f"{'':<20}{'backward':<10}{1e3 * t_bwd:>10.2f}{1e3 * t_torch_b:>10.2f}"
                  f"{t_bwd / t_torch_b:>9.2f}")


if __name__ == "__main__":
    import tinymbv2

    tinymbv2.backend.keep_freed_memory()  # as benchmarks.train_step does, for both sides
    print_op_table()
