"""Fast CPU kernel set: Numba ``@njit(parallel=True)`` kernels, Numba matrix loops, BLAS.

[NumbaKernels][tinymbv2.kernels.numba.NumbaKernels] subclasses
[ReferenceKernels][tinymbv2.kernels.reference.ReferenceKernels] and overrides every simple
kernel and most fused ones, with the same signatures and answers, organised for speed
instead of for reading. The package is grouped by op:

* ``.dilated`` (atrous convolution, dense and depthwise, any dilation other than 1:
  direct loops, so that the kernels below stay as they are for dilation 1),
  ``.tap_regions`` (dense atrous convolution at stride 1: ASPP's; one chain of register
  block products per region of outputs that read the same taps),
  ``.subgrids`` (depthwise atrous convolution at stride 1 as the undilated kernels on the
  interleaved sub-grids: DeepLab's case, fast),
  ``.depthwise`` (direct loops; its modules hold the 3x3 planes, the channels-last
  kernels in vector registers and those for small planes), ``.pointwise`` (a matrix
  product per image, or one over the batch on channels-last planes:
  ``.pointwise.channels_last``), ``.dense`` (im2col + GEMM per image; on channels-last
  planes with many channels the weight gradient as one product over the batch:
  ``.dense.channels_last``; a many-channel 3x3 at stride 1 by Winograd's minimal
  filtering: ``.dense.winograd``; inference into channels-last pixels straight from
  bands of input rows: ``.dense.direct``), ``.batchnorm``,
  ``.matmul`` (the Linear layer's GEMM), ``.global_pool`` (global average pooling of a
  channels-last map), ``.interpolate`` (bilinear and nearest
  resizing), ``.int8`` (int8 inference: QLinearConv and QGemm; its depthwise 3x3 in
  ``.int8_filter`` (AVX-512) or ``.int8_depthwise``, a whole inverted residual block in
  ``.int8_block``, the image's quantization and QLinearAdd in ``.int8_quantize``, the
  last map's dequantized global average pool in ``.int8_pool``), and
  the fused kernels
  ``.block`` (a whole inverted residual block for inference; ``.stem_block``: a frozen
  model's stem and first block in one pass), ``.stage`` (the depthwise stage
  in training), ``.optim`` (the RMSprop and SGD steps) and ``.cross_entropy`` (the per-pixel
  loss);
* their shared machinery: ``.pool`` (Numba's one thread pool, and the BLAS its
  ``np.dot`` calls pinned to one thread: why, and the pool's passive wait policy),
  ``.llvm`` (loops written in LLVM's own terms: vector registers, masked loads, FMAs),
  ``.tile`` (the register block of a matrix product), ``.gemm`` (the matrix loops
  built on it), ``.transpose`` (transposes in registers), ``.layout`` (channels-last
  small planes, aligned allocation), ``.padding`` and ``.chunks`` (what the jitted
  loops share: the runs of outputs a tap reads inside the image, and work cut into
  chunks with scratch of their own).

Everything runs in Numba's one thread pool: the BLAS GEMMs are ``np.dot`` inside
parallel loops, on a BLAS pinned to one thread.

All kernels are deterministic: the same inputs give bit-identical outputs on
every run and whatever the number of threads (parallel loops only ever split
work whose outputs are disjoint; every sum runs in a fixed order in one
thread, or in partial sums fixed by the shapes and added in order).

**Where arrays are allocated.** Every output a kernel returns is allocated
by NumPy in the Python wrapper (``np.empty``) and filled by the jitted core,
and scratch used inside a ``prange`` loop is allocated before the loop, one
slice per task. Both rules were measured (figures: docs/kernels.md, "Allocation"):

* glibc serves allocations above 32 MiB with a fresh ``mmap`` each time, and
  NumPy asks for transparent huge pages on them (``madvise``) while Numba's
  allocator does not. A 40 MiB output (8x96x112x112 float32, MobileNetV2's
  largest at 224 px batch 8) filled in parallel took several times longer
  allocated inside ``@njit`` (10,000 page faults, threads contending on them)
  than allocated by NumPy.
* An array allocated inside a ``prange`` body made a depthwise loop several times
  slower than the same loop on slices of one array allocated before it.

Kernels are compiled on first use for each dtype (float32, float64) and
cached on disk, so only the first process pays the compile (``.cache``: where, and
what happens when no folder is writable; ``.compiling``: the line a terminal shows
while kernels compile; ``tinymbv2 warmup`` compiles ahead of time what the default
models need). Numba checks a cached function against its own source file only: after editing a
helper that a kernel in *another* module calls (say ``depthwise/planes3x3.py``, which
``depthwise/__init__.py`` calls), that kernel still runs the old helper until its cache
goes. Clear it with ``find tinymbv2 -name '*.nbi' -delete`` (or run with
``NUMBA_CACHE_DIR`` set to an empty folder).
"""
from __future__ import annotations

# first: where Numba may cache is settled, and its compiles listened to, before any kernel
# module is imported (the cache folder is chosen as a kernel is decorated)
from . import cache, compiling  # noqa: F401
import numpy as np

from ..reference import ReferenceKernels
from ..checks import undilated
from . import (batchnorm, cross_entropy, dense, depthwise, dilated, global_pool,
               int8, int8_block, int8_pool, int8_quantize, interpolate, matmul, optim,
               pointwise, stage, stage_channels_last, subgrids, tap_regions)
from .dense import winograd
from .block_prepared import PreparedBlock
from .stem_block import PreparedStemBlock


class NumbaKernels(ReferenceKernels):
    """The numba set: every simple kernel, and the fused ones it computes in one pass."""

    name = "numba"

    # the dense convolutions: a many-channel 3x3 at stride 1 and padding 1 on a small
    # plane (DeepLabHead's) to Winograd's .dense.winograd; dilated at stride 1 (ASPP's
    # atrous ones) to .tap_regions; dilation 1 (the stem) to the fast kernels of .dense,
    # untouched, and any other dilation (strided) to .dilated
    @staticmethod
    def conv2d_forward(x, w, stride, padding, dilation=1):
        if winograd.fits(np.shape(x), np.shape(w), stride, padding, dilation):
            return winograd.conv2d_forward(x, w, padding)
        if tap_regions.fits(stride, np.shape(w), dilation):
            return tap_regions.conv2d_forward(x, w, padding, dilation)
        if undilated(dilation):
            return dense.conv2d_forward(x, w, stride, padding)
        return dilated.conv2d_forward(x, w, stride, padding, dilation)

    @staticmethod
    def conv2d_backward_input(gy, w, x_shape, stride, padding, dilation=1):
        if winograd.fits(x_shape, np.shape(w), stride, padding, dilation):
            return winograd.conv2d_backward_input(gy, w, x_shape, padding)
        if tap_regions.fits(stride, np.shape(w), dilation):
            return tap_regions.conv2d_backward_input(gy, w, x_shape, padding, dilation)
        if undilated(dilation):
            return dense.conv2d_backward_input(gy, w, x_shape, stride, padding)
        return dilated.conv2d_backward_input(gy, w, x_shape, stride, padding, dilation)

    @staticmethod
    def conv2d_backward_weight(gy, x, w_shape, stride, padding, dilation=1):
        if winograd.fits(np.shape(x), w_shape, stride, padding, dilation):
            return winograd.conv2d_backward_weight(gy, x, w_shape, padding)
        if tap_regions.fits(stride, w_shape, dilation):
            return tap_regions.conv2d_backward_weight(gy, x, w_shape, padding, dilation)
        if undilated(dilation):
            return dense.conv2d_backward_weight(gy, x, w_shape, stride, padding)
        return dilated.conv2d_backward_weight(gy, x, w_shape, stride, padding, dilation)

    # depthwise at stride 1 with the padding a multiple of the dilation (DeepLab's atrous
    # blocks): the undilated kernels on the interleaved sub-grids (.subgrids), exact
    @staticmethod
    def depthwise_conv2d_forward(x, w, stride, padding, dilation=1):
        if undilated(dilation):
            return depthwise.depthwise_conv2d_forward(x, w, stride, padding)
        if subgrids.fits(stride, padding, dilation):
            return subgrids.depthwise_conv2d_forward(x, w, padding, dilation)
        return dilated.depthwise_conv2d_forward(x, w, stride, padding, dilation)

    @staticmethod
    def depthwise_conv2d_backward_input(gy, w, x_shape, stride, padding, dilation=1):
        if undilated(dilation):
            return depthwise.depthwise_conv2d_backward_input(gy, w, x_shape, stride, padding)
        if subgrids.fits(stride, padding, dilation):
            return subgrids.depthwise_conv2d_backward_input(gy, w, x_shape, padding, dilation)
        return dilated.depthwise_conv2d_backward_input(gy, w, x_shape, stride, padding, dilation)

    @staticmethod
    def depthwise_conv2d_backward_weight(gy, x, w_shape, stride, padding, dilation=1):
        if undilated(dilation):
            return depthwise.depthwise_conv2d_backward_weight(gy, x, w_shape, stride, padding)
        if subgrids.fits(stride, padding, dilation):
            return subgrids.depthwise_conv2d_backward_weight(gy, x, w_shape, padding, dilation)
        return dilated.depthwise_conv2d_backward_weight(gy, x, w_shape, stride, padding,
                                                        dilation)

    pointwise_conv2d_forward = staticmethod(pointwise.pointwise_conv2d_forward)
    pointwise_conv2d_backward_input = staticmethod(pointwise.pointwise_conv2d_backward_input)
    pointwise_conv2d_backward_weight = staticmethod(pointwise.pointwise_conv2d_backward_weight)
    batch_norm_forward_train = staticmethod(batchnorm.batch_norm_forward_train)
    batch_norm_backward_train = staticmethod(batchnorm.batch_norm_backward_train)
    batch_norm_forward_eval = staticmethod(batchnorm.batch_norm_forward_eval)
    matmul = staticmethod(matmul.matmul)
    global_average_pool = staticmethod(global_pool.global_average_pool)
    interpolate_forward = staticmethod(interpolate.interpolate_forward)
    interpolate_backward = staticmethod(interpolate.interpolate_backward)

    # int8 inference (ONNX QLinearConv, onnxruntime's QGemm): the same integers as the reference
    qlinear_conv2d = staticmethod(int8.qlinear_conv2d)
    prepare_qlinear_conv2d = staticmethod(int8.prepare_qlinear_conv2d)
    prepare_qlinear_block = staticmethod(int8_block.prepare_qlinear_block)
    qgemm = staticmethod(int8.qgemm)
    quantize_uint8 = staticmethod(int8_quantize.quantize_uint8)
    qlinear_add = staticmethod(int8_quantize.qlinear_add)
    dequantize_global_average_pool = staticmethod(int8_pool.dequantize_global_average_pool)

    conv2d_bn_eval = staticmethod(dense.conv2d_bn_eval)
    depthwise_conv2d_bn_eval = staticmethod(depthwise.depthwise_conv2d_bn_eval)
    pointwise_conv2d_bn_eval = staticmethod(pointwise.pointwise_conv2d_bn_eval)
    pointwise_conv2d_backward = staticmethod(pointwise.pointwise_conv2d_backward)

    def inverted_residual_eval(self, x, expand, depthwise, project, stride, residual):
        # by output plane: large ones NCHW band by band (block), from 8x8 to 56x56
        # channels-last band by band (block_channels_last), smaller ones in whole-batch
        # passes (block_small); the weights prepared for this one call
        return PreparedBlock(self, expand, depthwise, project, stride, residual)(x)

    def prepare_inverted_residual_eval(self, expand, depthwise, project, stride, residual):
        return PreparedBlock(self, expand, depthwise, project, stride, residual)

    def prepare_pointwise_conv2d_bn_eval(self, w, bn):
        return pointwise.PreparedPointwise(w, bn)

    def prepare_stem_block_eval(self, stem, block, w, stride, padding, bn):
        # the stem's map made band by band inside the block's pass (.stem_block), where the
        # block has neither expansion nor residual; else the two steps
        if (isinstance(block, PreparedBlock) and block.layers[0] is None and not block.residual
                and np.shape(w)[0] == block.ci):
            return PreparedStemBlock(stem, w, stride, padding, bn, block)
        return super().prepare_stem_block_eval(stem, block, w, stride, padding, bn)

    def depthwise_stage_forward_train(self, e, bn1, w_dw, stride, bn2, dilation=1):
        if stage_channels_last.supported(e, w_dw, stride, dilation):  # small planes
            h, d, mean1, invstd1, mean2, invstd2 = stage_channels_last.stage_forward_train(
                e, bn1, w_dw, dilation, bn2)
        elif dilation == 1 and stage.stage_supported(e, w_dw, stride):  # NCHW planes
            h, d, mean1, invstd1, mean2, invstd2 = stage.stage_forward_train(e, bn1, w_dw, stride,
                                                                             bn2)
        else:
            return super().depthwise_stage_forward_train(e, bn1, w_dw, stride, bn2, dilation)
        return h, None, d, mean1, invstd1, mean2, invstd2  # a: recomputed from e in the backward

    def depthwise_stage_backward_train(self, gh, e, a, d, bn1, w_dw, stride, bn2, dilation=1):
        if a is not None:  # the forward ran the three simple kernels
            return super().depthwise_stage_backward_train(gh, e, a, d, bn1, w_dw, stride, bn2,
                                                          dilation)
        if stage_channels_last.supported(e, w_dw, stride, dilation):
            return stage_channels_last.stage_backward_train(gh, e, d, bn1, w_dw, dilation, bn2)
        return stage.stage_backward_train(gh, e, d, bn1, w_dw, stride, bn2)

    def sgd_update(self, p, grad, momentum_buffer, lr, momentum, dampening, weight_decay,
                   nesterov, first=False):
        if not optim.sgd_update(p, grad, momentum_buffer, lr, momentum, dampening, weight_decay,
                                nesterov, first):
            super().sgd_update(p, grad, momentum_buffer, lr, momentum, dampening, weight_decay,
                               nesterov, first)

    def rmsprop_update(self, p, grad, square_avg, momentum_buffer, lr, alpha, eps,
                       weight_decay, momentum, grad_avg=None):
        if grad_avg is not None or not optim.rmsprop_update(
                p, grad, square_avg, momentum_buffer, lr, alpha, eps, weight_decay, momentum):
            super().rmsprop_update(p, grad, square_avg, momentum_buffer, lr, alpha, eps,
                                   weight_decay, momentum, grad_avg)

    # per-pixel cross-entropy ((N, K, H, W) logits) in a few passes; per-sample (N, K) stays
    # with the reference, small next to the network that made the logits
    def cross_entropy_forward(self, z, target, weight, label_smoothing, ignore_index):
        if not cross_entropy.supported(z):
            return super().cross_entropy_forward(z, target, weight, label_smoothing, ignore_index)
        return cross_entropy.cross_entropy_forward(z, target, weight, label_smoothing,
                                                   ignore_index)

    def cross_entropy_backward(self, p, target, weight, label_smoothing, ignore_index, scale):
        if not cross_entropy.supported(p):
            return super().cross_entropy_backward(p, target, weight, label_smoothing, ignore_index,
                                                  scale)
        return cross_entropy.cross_entropy_backward(p, target, weight, label_smoothing,
                                                    ignore_index, scale)
